"""The run seam: one candidate's command, time-boxed, streamed, parsed, and killed with all it started.

A run gets its own session and process group, a scrubbed environment and a log. Output is read
in raw chunks and split on both '\\r' and '\\n' (autoresearch prints progress with carriage
returns), decoded leniently (binary output must not crash the reader), and capped on disk.
A monitor (the futility test) sees each progress point and may stop the run at once.
"""

from __future__ import annotations

import atexit
import fnmatch
import hashlib
import math
import os
import re
import selectors
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Unambiguous: one way to split any digit run (`\d+\.?\d*` had n of them, and a line of 25,000
# digits took the regex engine, which holds the GIL, 46 s to reject).
NUMBER = r"[-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|nan|NaN|inf|Inf|infinity|Infinity)"
MAX_LINE = 4096  # characters: a longer line is logged but never parsed (no metric line is that long)

# Variables every run sees; anything else must be allow-listed in [target] env_allow.
BASE_ENV = ("PATH", "HOME", "LANG", "LANGUAGE", "TERM", "TMPDIR", "TZ", "USER", "LOGNAME", "SHELL", "LC_*")
# Never passed by a pattern, only when named exactly: a run is untrusted code.
SECRET_LIKE = ("*_KEY", "*_API_KEY", "*TOKEN*", "*SECRET*", "*PASSWORD*", "*PASSWD*", "*CREDENTIAL*", "EVO_STORAGE")

Monitor = Callable[[float, float], bool]  # (fraction, value) -> True to stop the run (pruned)


def default_metric_regex(metric: str) -> str:
    return rf"^\s*{re.escape(metric)}\s*[:=]\s*({NUMBER})\s*$"


def default_progress_regex(metric: str) -> str:
    return rf"^\s*progress:\s*(?P<progress>{NUMBER})\s+{re.escape(metric)}:\s*(?P<value>{NUMBER})"


def run_env(allow: tuple[str, ...] | list[str] = (), extra: dict[str, str] | None = None, source: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of an untrusted run: the base set, the allow-list, and evo's own EVO_* values."""
    src = os.environ if source is None else source
    env: dict[str, str] = {}
    for name, value in src.items():
        base = any(fnmatch.fnmatchcase(name, p) for p in BASE_ENV)
        exact = name in allow
        pattern = any(fnmatch.fnmatchcase(name, p) for p in allow) and not any(
            fnmatch.fnmatchcase(name.upper(), s) for s in SECRET_LIKE
        )
        if base or exact or pattern:
            env[name] = value
    env.update(extra or {})
    return env


@dataclass
class RunResult:
    outcome: str  # complete | crashed | timeout | invalid | pruned | interrupted
    value: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    progress: list[tuple[float, float]] = field(default_factory=list)
    returncode: int | None = None
    seconds: float = 0.0
    reason: str = ""
    log_tail: str = ""
    output_bytes: int = 0
    data_fingerprint: str = ""  # the last `data_fingerprint: <hex>` line the run printed
    evo_fault: bool = False  # evo could not do its part (write the log, export, a worker's exception), not the run's fault


def safe_text(text: str) -> str:
    """`text` made writable anywhere: lone surrogates (from a model's JSON, a surrogateescape'd
    path) become U+FFFD, pairs are joined. Everything from a model or a run passes through here
    before it is written to a file, a terminal or the archive."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def cap_text(text: str, limit: int, what: str = "text") -> str:
    """`text` cut to at most `limit` characters, the cut said in a last line (nothing is cut silently)."""
    if len(text) <= limit:
        return text
    note = f"\n[evo] {what} cut here: {len(text) - limit} of {len(text)} characters left out\n"
    return text[: max(0, limit - len(note))] + note


ARTIFACT_LIMIT = 2_000_000  # characters of artifacts kept per proposal (prompts, answers, diffs together)


def cap_artifacts(artifacts: dict[str, str], limit: int = ARTIFACT_LIMIT) -> dict[str, str]:
    """Artifacts made safe to write (safe_text) and cut to `limit` characters in all, small ones
    kept whole and the large ones sharing the rest; each cut is said at the end of its text."""
    out = {name: safe_text(str(text)) for name, text in artifacts.items()}
    if sum(len(t) for t in out.values()) <= limit:
        return out
    room = limit
    names = sorted(out, key=lambda n: len(out[n]))
    for i, name in enumerate(names):
        share = room // (len(names) - i)
        out[name] = cap_text(out[name], max(share, 200), f"artifact '{name}'")
        room -= min(len(out[name]), room)
    return out


class OutputParser:
    """Finds the metric, the summary numbers and progress points in a stream of lines."""

    _KV = re.compile(rf"^\s*([A-Za-z_][\w.]*)\s*:\s+({NUMBER})\s*$")
    _FINGERPRINT = re.compile(r"^\s*data_fingerprint:\s*(\S+)\s*$")

    def __init__(self, metric: str, metric_regex: str = "", progress_regex: str = "") -> None:
        self.metric = metric
        self.metric_rx = re.compile(metric_regex or default_metric_regex(metric))
        self.progress_rx = re.compile(progress_regex or default_progress_regex(metric))
        self.value: float | None = None
        self.metrics: dict[str, float] = {}
        self.progress: list[tuple[float, float]] = []
        self.data_fingerprint = ""

    def feed(self, line: str) -> tuple[float, float] | None:
        """Parse one line; return a new progress point, if the line is one. A line longer than
        MAX_LINE is ignored: no regex ever sees more than MAX_LINE characters."""
        if len(line) > MAX_LINE:
            return None
        m = self.progress_rx.search(line)
        if m:
            try:
                point = (float(m.group("progress")), float(m.group("value")))
            except (TypeError, ValueError):
                return None
            self.progress.append(point)
            return point
        m = self.metric_rx.search(line)
        if m:
            try:
                self.value = float(m.group(1))
            except (TypeError, ValueError):
                pass  # a group that captured no number: treated as not printed
        if len(line) > 512 or ":" not in line:
            return None  # not a `key: value` line (and _KV backtracks for long ones: 100 MB of output took minutes)
        kv = self._KV.match(line)
        if kv:
            self.metrics[kv.group(1)] = float(kv.group(2))
        fp = self._FINGERPRINT.match(line)
        if fp:
            self.data_fingerprint = fp.group(1)[:128]
        return None


@dataclass
class RunSpec:
    command: str
    cwd: Path
    env: dict[str, str]
    timeout: float
    log_path: Path
    metric: str
    metric_regex: str = ""
    progress_regex: str = ""
    max_log_bytes: int = 20_000_000
    memory_limit_mb: int = 0
    no_network: bool = False


def run(spec: RunSpec, monitor: Monitor | None = None, cancel: threading.Event | None = None, warm: Any = None) -> RunResult:
    """Run spec.command to completion, timeout, pruning or cancellation; never raises for the run's faults.

    `warm` (an evo.executors.warm.Zygote) forks the run from a pre-started interpreter when it
    can (a Popen-like process in its own session, with the same environment, token, limits and
    output pipe); when it cannot, the run starts cold here as always.

    The timeout and the cancel event are watched by a thread of their own (`_Guard`), which kills
    the process group itself: however slow the reading of the output is, it cannot delay a kill.
    Whatever happens here (a log that cannot be written, an exception), the run's process group
    and everything carrying its token are killed before this returns.
    """
    parser = OutputParser(spec.metric, spec.metric_regex, spec.progress_regex)
    token = f"{owner_key(spec.log_path.parent)}-{uuid.uuid4().hex}"
    env = {**spec.env, "EVO_RUN_TOKEN": token}
    try:
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(spec.log_path, "wb")
    except OSError as e:
        return RunResult("crashed", reason=safe_text(f"not run: evo cannot write its log {spec.log_path}: {_why(e)}"), evo_fault=True)
    try:
        if spec.no_network and not network_isolation_available():  # never run it with the network it must not have
            _write_quietly(log, b"[evo] not run: no_network is set and `unshare --net` does not work on this machine\n")
            return RunResult("crashed", reason="not run: [target] no_network = true but `unshare --net` does not work on this machine")
        start = time.monotonic()
        proc: Any = _warm_start(warm, spec, env, token) if warm is not None else None
        if proc is None:
            try:
                proc = subprocess.Popen(
                    _wrap(spec), cwd=spec.cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, start_new_session=True,
                )
            except OSError as e:
                _write_quietly(log, f"[evo] could not start: {e}\n".encode(errors="replace"))
                return RunResult("crashed", reason=safe_text(f"could not start the run command: {e}"))
        guard = _Guard(proc, token, start + spec.timeout, cancel)
        try:
            total, written, tail, failure = _read(proc, spec, parser, monitor, guard, log)
        finally:
            guard.close()  # kills the group if the run is still going (an exception, a broken log)
            if proc.stdout is not None:
                proc.stdout.close()
            kill_group(proc)
            _kill_token(token)
            _LIVE.pop(proc.pid, None)
    finally:
        try:
            log.close()
        except OSError:  # the buffered rest of a log on a full disk
            pass
    seconds = time.monotonic() - start
    res = RunResult(
        outcome="complete", value=parser.value, metrics=parser.metrics, progress=parser.progress,
        returncode=proc.returncode, seconds=seconds, output_bytes=total,
        log_tail=b"".join(tail)[-4000:].decode("utf-8", errors="replace"), data_fingerprint=parser.data_fingerprint,
    )
    stopped = guard.why
    if failure:
        res.outcome, res.reason, res.evo_fault = "crashed", safe_text(failure), True
    elif stopped == "pruned":
        res.outcome, res.reason = "pruned", "stopped early: clearly worse than its reference (futility test)"
    elif stopped == "interrupted":
        res.outcome, res.reason = "interrupted", "stopped by evo (interrupt or shutdown)"
    elif stopped == "timeout":
        res.outcome, res.reason = "timeout", f"killed after the {spec.timeout:g} s timeout"
    elif proc.returncode != 0:
        rc = proc.returncode
        how = f"killed by signal {-rc}" if rc is not None and rc < 0 else f"exit code {rc}"
        res.outcome, res.reason = "crashed", f"the run failed ({how})"
    elif parser.value is None:
        res.outcome, res.reason = "crashed", f"metric '{spec.metric}' was never printed"
    elif not math.isfinite(parser.value):
        res.outcome, res.reason = "invalid", f"metric '{spec.metric}' is {parser.value}"
    if res.outcome != "complete":
        res.value = None
    return res


def _warm_start(warm: Any, spec: RunSpec, env: dict[str, str], token: str) -> Any:
    """The run forked from the zygote, or None (start it cold). A failure here is never the run's:
    whatever the zygote may have started under this token is killed before the cold start."""
    try:
        return warm.start(spec, env)
    except Exception as e:  # noqa: BLE001 - evo's own fault: the run still runs, cold
        _kill_token(token)
        try:
            warm.log(f"warm start failed ({type(e).__name__}: {e}); this run starts cold")
        except Exception:  # noqa: BLE001
            pass
        return None


def _read(proc: subprocess.Popen[bytes], spec: RunSpec, parser: OutputParser, monitor: Monitor | None,
          guard: _Guard, log: Any) -> tuple[int, int, deque[bytes], str]:
    """Read the run's output until it ends or is stopped: (bytes seen, bytes logged, last chunks, evo's failure)."""
    tail: deque[bytes] = deque(maxlen=64)  # the last 64 chunks, for the log tail
    written = total = 0
    partial = b""
    overlong = False  # inside a line longer than MAX_LINE: skipped up to its end
    failure = ""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    exited: float | None = None
    eof = False
    try:
        while True:
            if not eof:
                for _key, _ in sel.select(timeout=_Guard.CANCEL_POLL):  # output or EOF wakes it; a stop closes the pipe
                    try:
                        chunk = os.read(fd, 1 << 16)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        eof = True
                        break
                    total += len(chunk)
                    tail.append(chunk)
                    if written < spec.max_log_bytes and not failure:
                        piece = chunk[: spec.max_log_bytes - written]
                        try:
                            log.write(piece)
                            written += len(piece)
                            if written >= spec.max_log_bytes:
                                log.write(b"\n[evo] log truncated here; output continued\n")
                            log.flush()  # `tail -f` and the Ray executor's log streaming see it now
                        except OSError as e:  # a full disk, a vanished folder: stop the run, say why
                            failure = f"evo could not write the run's log {spec.log_path}: {_why(e)}"
                            guard.stop("failed")
                    lines = (partial + chunk).replace(b"\r", b"\n").split(b"\n")  # = re.split(rb"[\r\n]"), 10x faster
                    partial = lines.pop()
                    if overlong and lines:  # the end of a line too long to parse: dropped
                        lines, overlong = lines[1:], False
                    elif overlong:  # still inside it
                        partial = b""
                    if len(partial) > 4 * MAX_LINE:  # too long to be parsed whatever it holds: skip to its end
                        partial, overlong = b"", True
                    for raw in lines:
                        if len(raw) > 4 * MAX_LINE:
                            continue
                        point = parser.feed(raw.decode("utf-8", errors="replace"))
                        if point and monitor and guard.why is None and monitor(*point):
                            guard.stop("pruned")
            else:
                time.sleep(0.02)
            if proc.poll() is not None:
                if eof or guard.why is not None:
                    break
                # the command exited but something it started still holds the output open:
                # read what is buffered for a moment, then end the run (leftovers are killed below)
                exited = exited or time.monotonic()
                if time.monotonic() - exited > 2.0:
                    break
        if partial and not overlong:
            parser.feed(partial.decode("utf-8", errors="replace"))
        if total > written and not failure:
            try:
                log.write(b"\n[evo] last output:\n" + b"".join(tail)[-8192:])
            except OSError:
                pass
    except Exception as e:  # noqa: BLE001 - evo's own fault while reading: the run is stopped, the reason kept
        failure = failure or f"evo failed while reading the run's output: {type(e).__name__}: {e}"
        guard.stop("failed")
    finally:
        sel.close()
    return total, written, tail, failure


class _Guard:
    """Enforces a run's timeout and cancel event from a thread of its own, and kills the group
    on any stop (timeout, interrupt, futility, a failure): a busy or stuck reading loop cannot
    delay it. The first reason to stop wins.

    It sleeps until something happens (a stop, the end of the run, the deadline), looking at the
    shared cancel event every CANCEL_POLL s: a guard and a reader that both woke 20 times a second
    cost ~0.3 of a core at 64 idle runs, in the thread that breeds and records too."""

    CANCEL_POLL = 0.25

    def __init__(self, proc: subprocess.Popen[bytes], token: str, deadline: float, cancel: threading.Event | None) -> None:
        self.proc, self.deadline, self.cancel = proc, deadline, cancel
        self.why: str | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        _LIVE[proc.pid] = token
        self._thread = threading.Thread(target=self._watch, name=f"evo-guard-{proc.pid}", daemon=True)
        self._thread.start()

    def stop(self, why: str) -> None:
        with self._lock:
            if self.why is None:
                self.why = why
        self._wake.set()  # after `why`: the guard, woken, sees the reason

    def _watch(self) -> None:
        while True:
            self._wake.wait(min(self.CANCEL_POLL, max(0.0, self.deadline - time.monotonic())))
            self._wake.clear()  # before the checks: a stop landing after them wakes the next wait
            if self._closed:
                return
            if self.cancel is not None and self.cancel.is_set():
                self.stop("interrupted")
            elif time.monotonic() > self.deadline:
                self.stop("timeout")
            if self.why is not None:
                kill_group(self.proc)
                return
            if self.proc.poll() is not None:
                return  # the command ended; the reader kills what is left

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self.proc.poll() is None:  # still going: stopped by an exception or a failure
            self.stop("failed")
            kill_group(self.proc, grace=0.2)
        self._thread.join(timeout=10)


# Runs going now (pid -> token), so that an interpreter exit or a second Ctrl-C still kills them.
_LIVE: dict[int, str] = {}


def kill_all_runs() -> int:
    """SIGKILL every run this process has going, their groups and their token carriers, at once
    (no grace): for a second Ctrl-C and for interpreter exit. Returns how many runs were going."""
    live = list(_LIVE.items())
    for pid, _token in live:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for _pid, token in live:
        _kill_token(token)
    return len(live)


atexit.register(kill_all_runs)


def _why(e: OSError) -> str:
    return e.strerror or str(e)


def _write_quietly(log: Any, data: bytes) -> None:
    try:
        log.write(data)
    except OSError:
        pass


def _wrap(spec: RunSpec) -> list[str]:
    shell = shutil.which("bash") or "/bin/sh"
    cmd = spec.command
    if spec.memory_limit_mb > 0:
        cmd = f"ulimit -v {int(spec.memory_limit_mb) * 1024} || exit 97\n{cmd}"  # not `exec {cmd}`: cmd may be `cd x && ...`
    argv = [shell, "-c", cmd]
    if spec.no_network and network_isolation_available():
        argv = ["unshare", "--net", "--map-root-user", *argv] if os.geteuid() != 0 else ["unshare", "--net", *argv]
    return argv


_NETNS: bool | None = None


def network_isolation_available() -> bool:
    """Whether `unshare --net` works here (it needs user namespaces or root)."""
    global _NETNS
    if _NETNS is None:
        exe = shutil.which("unshare")
        if exe is None:
            _NETNS = False
        else:
            args = [exe, "--net", "true"] if os.geteuid() == 0 else [exe, "--net", "--map-root-user", "true"]
            _NETNS = subprocess.run(args, capture_output=True).returncode == 0
    return _NETNS


def kill_group(proc: subprocess.Popen[bytes], grace: float = 1.0) -> None:
    """SIGTERM the process group (a run's, an agent's), then SIGKILL what is left after `grace` s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5.0)
    except subprocess.TimeoutExpired:  # pragma: no cover - unkillable (D state)
        pass


def _kill_token(token: str) -> None:
    """Kill processes that left the group (setsid daemons) but still carry this run's token."""
    needle = f"EVO_RUN_TOKEN={token}".encode()
    _kill_where(lambda env: needle in env)


def owner_key(log_dir: Path) -> str:
    """The first part of a run's token: the same for every run whose log goes to this folder (one study)."""
    return hashlib.sha256(str(Path(log_dir).resolve()).encode()).hexdigest()[:12]


def kill_leftovers(log_dir: Path) -> int:
    """Kill runs a killed (kill -9) evo left behind for the study logging into log_dir; call under the study lock.

    A run has its own session, so it outlives an evo that dies without cleaning up, and would go
    on competing for the machine (and the GPU) with the runs of the resumed search.
    """
    prefix = f"EVO_RUN_TOKEN={owner_key(log_dir)}-".encode()
    return _kill_where(lambda env: any(v.startswith(prefix) for v in env))


def _kill_where(match: Callable[[list[bytes]], bool], limit: float = 10.0) -> int:
    """Kill every process whose environment (a list of NAME=value) matches; return how many.

    Stop-then-kill, so that a daemon which calls setsid() and re-forks every few milliseconds
    cannot stay ahead (it did of three SIGKILL passes 50 ms apart): every process found is first
    SIGSTOPped (a stopped process cannot fork), and all are SIGKILLed at the end. Finding is
    done two ways, over and over until a round finds nothing new (or `limit` seconds pass):
    a full pass over /proc, and quick probes of the pids allocated last (ns_last_pid): a
    generation that lives 2 ms is gone before a full listing of a busy /proc ends, but it is
    always among the newest pids.
    """
    me = os.getpid()
    stopped: set[int] = set()
    end = time.monotonic() + limit

    def visit(pids: Iterable[int]) -> bool:
        found = False
        for pid in pids:
            if pid == me or pid in stopped or not _environ_matches(pid, match):
                continue
            try:
                os.kill(pid, signal.SIGSTOP)
            except OSError:
                continue
            stopped.add(pid)
            found = True
        return found

    while time.monotonic() < end:
        mark = _last_pid()  # read before the listing: what is born after it has a pid above the mark
        try:
            found = visit(sorted((int(n) for n in os.listdir("/proc") if n.isdigit()), reverse=True))
        except OSError:
            break
        quiet = 0
        while quiet < 5 and time.monotonic() < end:  # ~10 ms of quick probes with nothing new
            if visit(_newest_pids(mark)):
                found, quiet = True, 0
            else:
                quiet += 1
                time.sleep(0.002)
        if not found:
            break
    for pid in stopped:
        if _environ_matches(pid, match):  # still the process we stopped (pids are not reused this fast, but check)
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    wait_until = time.monotonic() + 2.0  # SIGKILL is delivered asynchronously: return once they are gone
    while stopped and time.monotonic() < wait_until and any(_running(pid) for pid in stopped):
        time.sleep(0.005)
    return len(stopped)


def _running(pid: int) -> bool:
    """Whether pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return False


def _last_pid() -> int | None:
    try:
        with open("/proc/sys/kernel/ns_last_pid", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def _newest_pids(since: int | None, n: int = 64) -> list[int]:
    """The pids the kernel handed out after `since` (a `_last_pid()`), newest first, at most the last
    `n` ([] where ns_last_pid is unreadable). Probing only those, not always the last 64, cut the
    clean-up after a run from 12.6 to ~5 ms of CPU (at 32 slots it had been a quarter of evo's CPU)."""
    last = _last_pid()
    if since is None or last is None:
        return []
    try:
        with open("/proc/sys/kernel/pid_max", "rb") as f:
            top = int(f.read())
    except (OSError, ValueError):
        return []
    return [(last - i - 1) % top + 1 for i in range(min(n, (last - since) % top))]


def _environ_matches(pid: int, match: Callable[[list[bytes]], bool]) -> bool:
    try:
        fd = os.open(f"/proc/{pid}/environ", os.O_RDONLY)
    except OSError:
        return False
    try:
        data = b""
        while chunk := os.read(fd, 1 << 16):
            data += chunk
        return bool(match(data.split(b"\0")))
    except OSError:
        return False
    finally:
        os.close(fd)
