"""The run seam: one candidate's command, time-boxed, streamed, parsed, and killed with all it started.

A run gets its own session and process group, a scrubbed environment and a log. Output is read
in raw chunks and split on both '\\r' and '\\n' (autoresearch prints progress with carriage
returns), decoded leniently (binary output must not crash the reader), and capped on disk.
A monitor (the futility test) sees each progress point and may stop the run at once.
"""

from __future__ import annotations

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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

NUMBER = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|nan|NaN|inf|Inf|infinity|Infinity)"

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
        """Parse one line; return a new progress point, if the line is one."""
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


def run(spec: RunSpec, monitor: Monitor | None = None, cancel: threading.Event | None = None) -> RunResult:
    """Run spec.command to completion, timeout, pruning or cancellation; never raises for the run's faults."""
    parser = OutputParser(spec.metric, spec.metric_regex, spec.progress_regex)
    token = f"{owner_key(spec.log_path.parent)}-{uuid.uuid4().hex}"
    env = {**spec.env, "EVO_RUN_TOKEN": token}
    spec.log_path.parent.mkdir(parents=True, exist_ok=True)
    if spec.no_network and not network_isolation_available():  # never run it with the network it must not have
        spec.log_path.write_text("[evo] not run: no_network is set and `unshare --net` does not work on this machine\n")
        return RunResult("crashed", reason="not run: [target] no_network = true but `unshare --net` does not work on this machine")
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            _wrap(spec), cwd=spec.cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
    except OSError as e:
        spec.log_path.write_text(f"[evo] could not start: {e}\n")
        return RunResult("crashed", reason=f"could not start the run command: {e}")
    stopped: str | None = None  # why we killed it
    tail: deque[bytes] = deque(maxlen=64)  # the last 64 chunks, for the log tail
    written = total = 0
    partial = b""
    sel = selectors.DefaultSelector()
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    sel.register(fd, selectors.EVENT_READ)
    exited: float | None = None
    with open(spec.log_path, "wb") as log:
        eof = False
        while True:
            if not eof:
                for _key, _ in sel.select(timeout=0.05):
                    try:
                        chunk = os.read(fd, 1 << 16)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        eof = True
                        break
                    total += len(chunk)
                    tail.append(chunk)
                    if written < spec.max_log_bytes:
                        piece = chunk[: spec.max_log_bytes - written]
                        log.write(piece)
                        log.flush()  # `tail -f` and the Ray executor's log streaming see it now
                        written += len(piece)
                        if written >= spec.max_log_bytes:
                            log.write(b"\n[evo] log truncated here; output continued\n")
                    lines = (partial + chunk).replace(b"\r", b"\n").split(b"\n")  # = re.split(rb"[\r\n]"), 10x faster
                    partial = lines.pop()
                    if len(partial) > 1 << 20:  # a huge line without a newline: parse what we have
                        lines.append(partial)
                        partial = b""
                    for raw in lines:
                        point = parser.feed(raw.decode("utf-8", errors="replace"))
                        if point and monitor and stopped is None and monitor(*point):
                            stopped = "pruned"
            else:
                time.sleep(0.02)
            if stopped is None and cancel is not None and cancel.is_set():
                stopped = "interrupted"
            if stopped is None and time.monotonic() - start > spec.timeout:
                stopped = "timeout"
            if stopped is not None:
                kill_group(proc)
            if proc.poll() is not None:
                if eof or stopped is not None:
                    break
                # the command exited but something it started still holds the output open:
                # read what is buffered for a moment, then end the run (leftovers are killed below)
                exited = exited or time.monotonic()
                if time.monotonic() - exited > 2.0:
                    break
        if partial:
            parser.feed(partial.decode("utf-8", errors="replace"))
        if total > written:
            log.write(b"\n[evo] last output:\n" + b"".join(tail)[-8192:])
    sel.close()
    proc.stdout.close()
    seconds = time.monotonic() - start
    kill_group(proc)
    _kill_token(token)
    res = RunResult(
        outcome="complete", value=parser.value, metrics=parser.metrics, progress=parser.progress,
        returncode=proc.returncode, seconds=seconds, output_bytes=total,
        log_tail=b"".join(tail)[-4000:].decode("utf-8", errors="replace"), data_fingerprint=parser.data_fingerprint,
    )
    if stopped == "pruned":
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


def _kill_where(match: Callable[[list[bytes]], bool]) -> int:
    """SIGKILL every process whose environment (a list of NAME=value) matches; return how many."""
    killed: set[int] = set()
    for _ in range(3):
        found = False
        for pid_dir in Path("/proc").glob("[0-9]*"):
            try:
                if int(pid_dir.name) != os.getpid() and match((pid_dir / "environ").read_bytes().split(b"\0")):
                    os.kill(int(pid_dir.name), signal.SIGKILL)
                    killed.add(int(pid_dir.name))
                    found = True
            except (OSError, ValueError):
                continue
        if not found:
            break
        time.sleep(0.05)
    return len(killed)
