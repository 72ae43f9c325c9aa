"""Warm starts: runs forked from a pre-started interpreter that has already imported the target's
heavy modules (`[target] preload = ["torch", "numpy"]`).

`import torch` costs about a second of every model/ run, and the interpreter's teardown after
it about another; a run forked from a zygote (evo/executors/zygote.py) pays neither. Each forked
run is still a run as the runner knows it: its own session and process group, the scrubbed
environment with its kill token (in os.environ and in /proc/PID/environ), the network namespace
and memory limit a cold run gets, stdout and stderr on the pipe the runner reads, killed by
group and token, time-boxed by the runner's guard. See docs/warmstart.md.

Used only when it can be the same: the run command is `{python} script.py args` with nothing a
shell would expand (any other command starts cold), the zygote started and imported its
modules without leaving threads behind, and the run's environment is the zygote's apart from
the per-run values evo sets. Otherwise, or once the zygote has died, runs start cold as before;
the reason is said once.
"""

from __future__ import annotations

import json
import os
import select
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evo.runner import _running  # whether a pid is alive and not a zombie (/proc/PID/stat)

ZYGOTE = Path(__file__).with_name("zygote.py")
PAD = "EVO_ZYGOTE_PAD"
# Set per run after the fork; everything else in a run's environment must equal the zygote's
# (the preloaded modules were imported under it: thread counts, locale, PYTHON* variables).
PER_RUN = ("EVO_SEED", "EVO_INDIVIDUAL", "EVO_ROLE", "EVO_RUN_TOKEN", "CUDA_VISIBLE_DEVICES")
SHELL_CHARS = frozenset("$`\\;&|<>(){}[]*?~!#\n\r")
READY_TIMEOUT = 120.0  # seconds the first run waits for the zygote's imports before starting cold
FORK_TIMEOUT = 10.0  # seconds to wait for the zygote to say it forked
LOST = 255  # the returncode of a run whose zygote died before it could report the run's exit


def script_argv(command: str) -> list[str] | None:
    """The argv of `command` when it is evo's interpreter running a script (`{python} script.py args`)
    and bash would run exactly that (no expansion, redirection or second command); else None."""
    if not command or any(c in SHELL_CHARS for c in command):
        return None
    try:
        argv = shlex.split(command)
    except ValueError:
        return None
    if len(argv) < 2 or argv[0] != sys.executable or argv[1].startswith("-"):
        return None
    return argv


def env_block_size(env: dict[str, str]) -> int:
    return sum(len(os.fsencode(k)) + len(os.fsencode(v)) + 2 for k, v in env.items())


class WarmProcess:
    """A forked run, seen as the runner sees a subprocess.Popen: pid, stdout, poll(), wait(), returncode.
    Its exit status comes from the zygote (its parent) over the run's own socket."""

    def __init__(self, pid: int, args: list[str], out_fd: int, status: socket.socket,
                 on_exit: Callable[[WarmProcess], None] | None = None) -> None:
        self.pid, self.args = pid, args
        self.stdout = open(out_fd, "rb")
        self.returncode: int | None = None
        self.cpu_seconds: float | None = None  # user + system, from the zygote's wait4
        self.lost = False  # the zygote died before it reported this run's exit
        self._on_exit = on_exit
        self._status: socket.socket | None = status
        self._lock = threading.Lock()

    def poll(self) -> int | None:
        with self._lock:
            if self.returncode is None:
                self._read_status()
            return self.returncode

    def _read_status(self) -> None:
        if self._status is not None:
            try:
                data = self._status.recv(4096, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if data:
                try:
                    msg = json.loads(data)
                    self.returncode = int(msg["exit"])
                    self.cpu_seconds = float(msg.get("cpu", 0.0))
                except (ValueError, KeyError, TypeError):
                    self.returncode = LOST
                self._close_status()
                if self._on_exit is not None:
                    self._on_exit(self)
                return
            self._close_status()  # EOF without an exit: the zygote is gone
            self.lost = True
        if not _running(self.pid):  # orphaned when its zygote died: ended once it is gone
            self.returncode = LOST

    def _close_status(self) -> None:
        if self._status is not None:
            self._status.close()
            self._status = None

    def wait(self, timeout: float | None = None) -> int:
        end = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            status = self._status
            step = 0.05 if left is None else min(0.05, left)
            if status is not None:
                try:
                    select.select([status], [], [], step)
                except (OSError, ValueError):
                    time.sleep(step)
            else:
                time.sleep(step)
        assert self.returncode is not None
        return self.returncode


def _stderr_note(line: str) -> None:
    print(f"evo: {line}", file=sys.stderr, flush=True)


class Zygote:
    """One pre-started interpreter per executor; start() forks a run from it, or says None (start it cold)."""

    def __init__(self, preload: tuple[str, ...] | list[str], env: dict[str, str], log: Callable[[str], None] | None = None,
                 ready_timeout: float = READY_TIMEOUT) -> None:
        self.preload = tuple(preload)
        self.env = {k: v for k, v in env.items() if k not in PER_RUN}
        self.log = log or _stderr_note
        self.ready_timeout = ready_timeout
        self.info: dict[str, Any] = {}
        self.why_off = ""  # why runs start cold now ('' while the zygote is usable)
        self.warm_runs = 0
        self.cold_runs = 0
        self.run_cpu_seconds = 0.0  # summed over the forked runs that ended (the benchmark reads it)
        self._noted: set[str] = set()
        self._lock = threading.Lock()
        self._state = "starting"  # starting | ready | off
        self._errfile = tempfile.TemporaryFile()
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._sock = parent
        # room in the environment block for any run's variables: the zygote's own plus a margin
        pad = "x" * max(16384, env_block_size(self.env))
        try:
            self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                [sys.executable, str(ZYGOTE), str(child.fileno()), json.dumps(list(self.preload))],
                env={**self.env, PAD: pad}, pass_fds=[child.fileno()], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=self._errfile, cwd="/", start_new_session=True,
            )
        except OSError as e:
            self.proc = None
            self._off(f"could not start the zygote: {e}")
        finally:
            child.close()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    # -- state -----------------------------------------------------------------------------------------
    def _note(self, key: str, text: str) -> None:
        if key not in self._noted:
            self._noted.add(key)
            try:
                self.log(text)
            except Exception:  # noqa: BLE001 - a note must not fail a run
                pass

    def _off(self, why: str) -> None:
        if self._state != "off":
            self._state, self.why_off = "off", why
            self._note("off", f"warm start off: {why}; runs start cold")
            self._stop()

    def _died(self) -> str:
        rc = self.proc.poll() if self.proc is not None else None
        how = "it is gone" if rc is None else (f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}")
        try:
            self._errfile.seek(0)
            tail = self._errfile.read()[-300:].decode(errors="replace").strip().replace("\n", " | ")
        except (OSError, ValueError):
            tail = ""
        return f"the zygote died ({how}){': ' + tail if tail else ''}"

    def ready(self) -> bool:
        """Wait (the first time, up to ready_timeout) for the zygote's imports; whether runs can fork."""
        with self._lock:
            if self._state == "starting":
                self._handshake()
            if self._state == "ready" and self.proc is not None and self.proc.poll() is not None:
                self._off(self._died())
            return self._state == "ready"

    def _handshake(self) -> None:
        self._sock.settimeout(self.ready_timeout)
        try:
            data = self._sock.recv(1 << 20)
        except (TimeoutError, socket.timeout):
            self._off(f"the zygote did not finish `import {', '.join(self.preload)}` in {self.ready_timeout:g} s")
            return
        except OSError as e:
            self._off(f"the zygote did not answer: {e}")
            return
        finally:
            if self._state == "starting":
                self._sock.settimeout(None)
        if not data:
            self._off(self._died())
            return
        try:
            hello = json.loads(data)
        except ValueError:
            self._off("the zygote's answer is not JSON")
            return
        if not hello.get("ok"):
            self._off(f"preload {list(self.preload)}: {hello.get('error', 'failed')}")
            return
        self.info = hello
        self._state = "ready"

    # -- runs ------------------------------------------------------------------------------------------
    def start(self, spec: Any, env: dict[str, str]) -> WarmProcess | None:
        """Fork spec's run from the zygote (env: the run's full environment, token included); None: start it cold."""
        argv = script_argv(spec.command)
        proc = self._start(spec, env, argv) if argv is not None else None
        if argv is None:
            self._note("command", f"warm start not used for `{spec.command[:80]}`: not `{{python}} script.py ...`; it starts cold")
        with self._lock:
            if proc is None:
                self.cold_runs += 1
            else:
                self.warm_runs += 1
        return proc

    def _start(self, spec: Any, env: dict[str, str], argv: list[str]) -> WarmProcess | None:
        if not self.ready():
            return None
        shared = {k: v for k, v in env.items() if k not in PER_RUN}
        if shared != self.env:
            diff = sorted(set(shared.items()) ^ set(self.env.items()))
            self._note("env", f"warm start not used for a run whose environment differs from the zygote's "
                              f"({', '.join(sorted({k for k, _ in diff}))[:200]}); it starts cold")
            return None
        need = env_block_size(env) + len(os.fsencode(str(spec.cwd))) + len(sys.executable) + 64  # + PWD, SHLVL, _
        if need >= int(self.info.get("capacity", 0)):
            self._note("size", f"warm start not used for a run whose environment ({need} bytes) does not fit the zygote's "
                               f"({self.info.get('capacity')} bytes); it starts cold")
            return None
        request = json.dumps({"argv": argv, "cwd": str(spec.cwd), "env": env, "memory_limit_mb": int(spec.memory_limit_mb or 0),
                              "no_network": bool(spec.no_network)}).encode()
        out_r, out_w = os.pipe()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            with self._lock:
                socket.send_fds(self._sock, [request], [out_w, theirs.fileno()])
        except OSError as e:
            os.close(out_r)
            mine.close()
            with self._lock:
                self._off(self._died() if self.proc is not None and self.proc.poll() is not None else f"cannot reach the zygote: {e}")
            return None
        finally:
            os.close(out_w)
            theirs.close()
        mine.settimeout(FORK_TIMEOUT)
        error = "the zygote did not fork the run"
        try:
            data = mine.recv(4096)
            reply = json.loads(data) if data else {}
            error = str(reply.get("error") or error)
            pid = int(reply.get("pid", 0))
        except (OSError, ValueError, TypeError, AttributeError):
            pid = 0
        if pid <= 0:
            os.close(out_r)
            mine.close()
            if env.get("EVO_RUN_TOKEN"):  # it may have forked the run all the same: it must not run beside the cold start
                from evo.runner import _kill_token

                _kill_token(env["EVO_RUN_TOKEN"])
            with self._lock:
                self._off(self._died() if self.proc is not None and self.proc.poll() is not None else error)
            return None
        mine.settimeout(None)
        return WarmProcess(pid, argv, out_r, mine, on_exit=self._ended)

    def _ended(self, proc: WarmProcess) -> None:
        with self._lock:
            self.run_cpu_seconds += proc.cpu_seconds or 0.0

    # -- end -------------------------------------------------------------------------------------------
    def _stop(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                try:
                    self.proc.wait(timeout=5.0)
                except subprocess.TimeoutExpired:  # pragma: no cover - unkillable
                    pass

    def close(self) -> None:
        """Stop the zygote (runs it forked are not touched: the runner owns them)."""
        with self._lock:
            if self._state != "off":
                self._state, self.why_off = "off", "closed"
            self._stop()
            try:
                self._errfile.close()
            except OSError:
                pass


def for_template(template: Any, env: dict[str, str], log: Callable[[str], None] | None = None) -> Zygote | None:
    """The executor's zygote, or None when the target asks for none (empty preload) or cannot use one."""
    if not getattr(template, "preload", ()):
        return None
    if script_argv(template.command) is None:
        (log or _stderr_note)(f"warm start off: [target] preload is set but the run command `{template.command[:80]}` "
                              "is not `{python} script.py ...`; runs start cold")
        return None
    return Zygote(template.preload, env, log)
