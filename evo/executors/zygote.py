"""The warm-start server (a zygote): one Python process that imports a target's heavy modules once
and forks a run from itself for each request. Started by evo.executors.warm as a script,
`python zygote.py FD PRELOAD_JSON`, with the runs' scrubbed environment; it imports nothing of
evo and only the standard library besides the preloaded modules.

Protocol (an AF_UNIX SOCK_SEQPACKET socket on FD, one JSON document per message):
- the zygote sends one hello: {"ok": true, "capacity": ..., "added": {...}, ...} once the
  preload is imported, or {"ok": false, "error": "..."} and exits;
- evo sends one message per run, {"argv", "cwd", "env", "memory_limit_mb", "no_network"}, with
  two file descriptors: the write end of the pipe evo reads the run's output from, and a
  socket of the run's own on which the zygote sends {"pid": n} once it has forked, then
  {"exit": returncode, "cpu": seconds} (Popen's convention: -N for signal N) when the run ends;
- EOF on FD (evo closed it or died): the zygote exits. Runs it forked are not its to stop:
  evo kills them by process group and by token, as it does cold runs.

A forked run: a new session, fds 0/1/2 on /dev/null and the output pipe, the network namespace
and the address-space limit a cold run would get, the cold run's working folder and
environment (the scrubbed one evo sent, plus what `bash -c` and the interpreter add when they
start a script), written both into os.environ and over the process's original environment
block (so /proc/PID/environ, which evo's token scan reads, shows the run's own variables), then
sys.argv and sys.path[0] as `python script.py args` sets them, and the script runs as
__main__. At its end: threads joined and atexit handlers run as the interpreter does, open files
flushed, os._exit (the teardown of every object the preloaded libraries made is skipped: ~1 s
after `import torch`).
"""

import ctypes
import gc
import io
import json
import os
import select
import signal
import socket
import sys
import time
import traceback

PAD = "EVO_ZYGOTE_PAD"  # the variable that reserves room in the environment block
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
PR_SET_DUMPABLE = 4


def _dumpable(on):
    """Off in the zygote: a run (same user) cannot ptrace it or write its memory to reach later runs.
    Back on in each run, as a cold run has it (evo's token scan reads /proc/PID/environ)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 1 if on else 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _env_area():
    """(start, end) addresses of this process's original environment block, from /proc/self/stat."""
    with open("/proc/self/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return int(fields[47]), int(fields[48])  # fields 50 and 51 (env_start, env_end), Linux >= 3.5


def _original_environ():
    with open("/proc/self/environ", "rb") as f:
        items = [item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item]
    return {os.fsdecode(k): os.fsdecode(v) for k, v in items}


def _send(sock, doc):
    sock.send(json.dumps(doc).encode())


def main():
    ctrl = socket.socket(fileno=int(sys.argv[1]))
    preload = json.loads(sys.argv[2])
    del sys.path[0]  # this file's folder: a run's path starts with its script's folder instead
    original = _original_environ()
    # what the interpreter set in its own environment at start (PEP 538 locale coercion): a cold run's does the same
    added = {k: v for k, v in os.environ.items() if original.get(k) != v}
    try:
        start, end = _env_area()
        if not 0 < start < end:
            raise OSError("no environment block in /proc/self/stat")
    except (OSError, IndexError, ValueError) as e:
        _send(ctrl, {"ok": False, "error": f"cannot find this process's environment block: {e}"})
        return
    t0 = time.monotonic()
    for name in preload:
        try:
            __import__(name)
        except BaseException as e:  # noqa: BLE001 - any failure of the import is the zygote's answer
            _send(ctrl, {"ok": False, "error": f"`import {name}` failed: {type(e).__name__}: {e}"})
            return
    seconds = time.monotonic() - t0
    # Forking a process with other threads copies their locks held: a child can deadlock. Fork once
    # here: libraries with at-fork handlers (OpenBLAS) stop their pools in the parent; any thread
    # still running after that (a thread pool the imports started) makes warm starts unsafe.
    probe = os.fork()
    if probe == 0:
        os._exit(0)
    os.waitpid(probe, 0)
    threads = sorted(os.listdir("/proc/self/task"))
    if len(threads) > 1:
        _send(ctrl, {"ok": False, "error": f"the preloaded modules left {len(threads) - 1} thread(s) running "
                     "(forking would copy their locks)"})
        return
    gc.freeze()  # the preloaded objects: never scanned by a run's collections, never copied by them
    _dumpable(False)
    sys.stdout.flush()
    sys.stderr.flush()
    _send(ctrl, {"ok": True, "pid": os.getpid(), "capacity": end - start, "added": added,
                 "preload_seconds": round(seconds, 3), "modules": len(sys.modules)})
    serve(ctrl, added, (start, end))


def serve(ctrl, added, area):
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    runs = {}  # pid -> the run's status socket
    while True:
        try:
            ready = select.select([ctrl, wake_r], [], [], 1.0)[0]
        except InterruptedError:  # pragma: no cover - PEP 475 retries
            ready = []
        if wake_r in ready:
            try:
                while os.read(wake_r, 512):
                    pass
            except BlockingIOError:
                pass
        _reap(runs)
        if ctrl not in ready:
            continue
        try:
            msg, fds, _flags, _addr = socket.recv_fds(ctrl, 1 << 20, 2)
        except OSError:
            msg, fds = b"", []
        if not msg:
            return  # evo closed the socket or died
        if len(fds) != 2:
            for fd in fds:
                os.close(fd)
            continue
        out_fd, status_fd = fds
        status = socket.socket(fileno=status_fd)
        try:
            req = json.loads(msg)
        except ValueError:
            os.close(out_fd)
            status.close()
            continue
        threads = len(os.listdir("/proc/self/task"))
        if threads > 1:  # a thread appeared since the start: no run is forked next to it
            try:
                _send(status, {"error": f"the zygote has {threads} threads (forking would copy their locks)"})
            except OSError:
                pass
            os.close(out_fd)
            status.close()
            continue
        own = [ctrl, status, *runs.values()]
        pid = os.fork()
        if pid == 0:
            _child(req, out_fd, own, (wake_r, wake_w), added, area)  # never returns
        os.close(out_fd)
        try:
            _send(status, {"pid": pid})
        except OSError:
            pass
        runs[pid] = status


def _reap(runs):
    while True:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        sock = runs.pop(pid, None)
        if sock is not None:
            try:  # cpu: the run's CPU seconds, with those of the children it waited for
                _send(sock, {"exit": os.waitstatus_to_exitcode(status), "cpu": round(usage.ru_utime + usage.ru_stime, 4)})
            except (OSError, ValueError):
                pass
            sock.close()


# -- the forked run ------------------------------------------------------------------------------------


def _child(req, out_fd, sockets, pipe, added, area):
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for s in sockets:  # the zygote's own channels: a run must not hold or write them
            os.close(s.detach())
        for fd in pipe:
            os.close(fd)
        os.setsid()
        _dumpable(True)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        for fd in {null, out_fd} - {0, 1, 2}:
            os.close(fd)
    except BaseException:  # noqa: BLE001 - nowhere to say it yet
        os._exit(70)
    try:
        step = "network isolation"
        if req.get("no_network"):
            _isolate_network()
        step = "memory limit"
        if req.get("memory_limit_mb"):
            import resource

            limit = int(req["memory_limit_mb"]) * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        step = "working folder"
        os.chdir(req["cwd"])
        step = "environment"
        _set_environ(req["env"], req["argv"][0], added, area)
    except BaseException as e:  # noqa: BLE001 - a run that cannot be set up as a cold one is not run
        os.write(2, f"[evo] warm start: could not set up the run's {step}: {type(e).__name__}: {e}\n".encode(errors="replace"))
        os._exit(97)
    _run_script(req["argv"])


def _isolate_network():
    """What `unshare --net` (as root) or `unshare --net --map-root-user` does, for this process."""
    libc = ctypes.CDLL(None, use_errno=True)
    root = os.geteuid() == 0
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(CLONE_NEWNET if root else CLONE_NEWUSER | CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare: {os.strerror(err)}")
    if not root:
        for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)


def _shlvl(value):
    """SHLVL as a script started by `bash -c` sees it (bash adds one, then takes it back when it execs the command)."""
    try:
        level = int(value.strip()) if value is not None else 0
    except ValueError:
        level = 0
    level = max(0, level + 1)
    if level >= 1000:
        level = 1
    return str(max(0, level - 1))


def _set_environ(env, program, added, area):
    env = dict(env)
    pwd = env.get("PWD")
    try:
        keep = bool(pwd) and os.path.isabs(pwd) and os.path.samefile(pwd, ".")
    except OSError:
        keep = False
    if not keep:
        env["PWD"] = os.getcwd()
    env["SHLVL"] = _shlvl(env.get("SHLVL"))
    env["_"] = program
    block = b"".join(os.fsencode(k) + b"=" + os.fsencode(v) + b"\0" for k, v in env.items())
    start, end = area
    if len(block) >= end - start:
        raise OSError(f"the environment ({len(block)} bytes) does not fit the zygote's block ({end - start} bytes)")
    os.environ.clear()  # unsetenv: nothing in the C environment points into the original block any more
    os.environ.update(env)
    ctypes.memmove(start, block.ljust(end - start, b"\0"), end - start)
    os.environ.update(added)  # as the interpreter adds them at start, after the block was made


def _run_script(argv):
    script = argv[1]
    path = os.path.abspath(script)
    sys.argv = list(argv[1:])
    sys.path.insert(0, os.path.dirname(os.path.realpath(path)))
    np_random = sys.modules.get("numpy.random")
    if np_random is not None:  # a cold run's legacy global RandomState is freshly seeded; `random` reseeds itself at fork
        try:
            np_random.seed()
        except Exception:  # noqa: BLE001
            pass
    code, interrupted = 0, False
    if not os.path.exists(path):
        sys.stderr.write(f"{sys.executable}: can't open file {path!r}: [Errno 2] No such file or directory\n")
        _finish(2, False)
    try:
        _run_main(path)
    except SystemExit as e:
        code = _exit_code(e.code)
    except BaseException as e:  # noqa: BLE001 - printed as the interpreter prints an uncaught exception
        tb = e.__traceback__
        while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename) != path:
            tb = tb.tb_next
        if tb is not None:  # the traceback starts at the script, as a cold run's does
            e.__traceback__ = tb
        try:
            sys.excepthook(type(e), e, e.__traceback__)
        except BaseException:  # noqa: BLE001
            traceback.print_exception(type(e), e, tb)
        code, interrupted = 1, isinstance(e, KeyboardInterrupt)
    _finish(code, interrupted)


def _run_main(path):
    """Run the file at `path` as `python path` runs it: a fresh __main__ module with __file__ (absolute),
    __cached__ None and a SourceFileLoader, sys.argv left as given (runpy.run_path would set argv[0]
    to the absolute path). A folder or a zip file goes to runpy, which runs its __main__.py."""
    if not os.path.isfile(path) or path.endswith(".zip"):
        import runpy

        runpy.run_path(path, run_name="__main__")
        return
    import builtins
    import importlib.machinery
    import types

    main = types.ModuleType("__main__")
    main.__dict__.update(__file__=path, __cached__=None, __loader__=importlib.machinery.SourceFileLoader("__main__", path),
                         __spec__=None, __package__=None, __builtins__=builtins)
    sys.modules["__main__"] = main
    with io.open_code(path) as f:
        source = f.read()
    exec(compile(source, path, "exec", dont_inherit=True), main.__dict__)


def _exit_code(value):
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    try:
        sys.stderr.write(f"{value}\n")
    except Exception:  # noqa: BLE001
        pass
    return 1


def _finish(code, interrupted):
    """The interpreter's exit, up to the teardown: non-daemon threads joined, atexit handlers run,
    open files flushed; then os._exit."""
    threading = sys.modules.get("threading")
    try:
        if threading is not None:
            threading._shutdown()
    except BaseException:  # noqa: BLE001
        pass
    try:
        import atexit

        atexit._run_exitfuncs()
    except SystemExit as e:
        code = _exit_code(e.code)
    except BaseException:  # noqa: BLE001
        pass
    std = {id(sys.stdout), id(sys.stderr), id(sys.__stdout__), id(sys.__stderr__)}
    for obj in gc.get_objects():  # the run's own objects (the preloaded ones are frozen)
        if isinstance(obj, io.IOBase) and id(obj) not in std:
            try:
                if not obj.closed:
                    obj.flush()
            except Exception:  # noqa: BLE001
                pass
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:  # noqa: BLE001
            if stream is sys.stdout:
                code = 120  # as the interpreter exits when it cannot flush stdout
    if interrupted:  # an uncaught KeyboardInterrupt ends the interpreter by SIGINT
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code & 0xFF if code >= 0 else 1)


if __name__ == "__main__":
    main()
