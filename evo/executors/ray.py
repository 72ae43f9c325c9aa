"""Ray slots: each evaluation is a Ray task on whichever node has the CPUs/GPUs it asks for.

What travels to a worker: the RunTemplate, the Job (its futility monitor included) and the
candidate's `git archive` tarball, made here on the controller and put in Ray's object store
once per commit. Workers need no repository and no shared filesystem; the run's environment is
built on the worker from the worker's own environment (the same allow-list as local runs), so
nothing from the controller's environment, secrets included, is sent.

What comes back: the RunResult (parsed on the worker), the monitor's trace and the run's log
(capped by the runner at max_log_bytes), which is written to job.log_path here. While a run is
going, its log is also streamed: the task pushes new bytes every half second to a small actor
that the controller drains, so `tail -f` on the log works as it does for local runs.

Stopping a run: cancel_all() first asks each task to stop (a plain ray.cancel raises
KeyboardInterrupt in the task, which sets the runner's cancel event: the runner kills the run's
process group and returns "interrupted" with its log), then force-cancels what has not ended
after a grace period. A force-cancelled or crashed worker cannot clean up, and the runner puts
the run in its own session, so killing the worker would orphan it: each worker process therefore
keeps a tiny watchdog process (in its own session, started with its first task) holding the read
end of a pipe whose write end only the worker holds, told of each task as it starts and ends. When
the worker goes, however it goes, the pipe reads EOF and the watchdog SIGKILLs every process
carrying the EVO_RAY_RUN marker of a task that had not ended (and their process groups), then
deletes those tasks' temporary folders.

A worker or node lost mid-run (WorkerCrashedError, NodeDiedError, OOM kill, ...) is retried
up to executor.retries times; after that the job ends as a "crashed" run whose reason starts
with "ray worker died:". Each submitted job yields exactly one Done.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayError, RayTaskError, TaskCancelledError

from evo.config import ExecutorConfig
from evo.errors import EvoError
from evo.executors.base import Done, Job, RunTemplate, Slots
from evo.gitrepo import GitRepo, export_tree
from evo.runner import RunResult, safe_text

MARKER_ENV = "EVO_RAY_RUN"  # set in each run's environment; the watchdog kills what carries it
CACHE_ENV = "EVO_RAY_CACHE"  # set on a node (in `ray start`'s environment) to move EVO_CACHE there
PUSH_INTERVAL = 0.5  # seconds between log pushes from a task
PUSH_MAX = 1 << 20  # bytes per push
INTERRUPTED = "stopped by evo (interrupt or shutdown)"

# One watchdog per Ray worker process, started with the worker's first task and kept for its life
# (an interpreter a task cost ~50 ms of CPU: at 64 slots of 5 s runs, a third of a core). It runs in
# its own session with `python -I -S` and reads lines from a pipe whose write end only the worker
# holds: "+ MARKER FOLDER" before a task starts its run, "- MARKER" once the task has cleaned up
# after it. EOF means the worker is gone, however it went: every process whose environment carries a
# marker still open is killed (and its process group), and those tasks' folders are removed.
# It forks first and guards from the grandchild: when a worker dies, Ray's raylet SIGKILLs the
# worker's direct children (RAY_kill_child_processes_on_worker_exit), which would take a
# direct-child watchdog with it. The direct child only waits for the grandchild, so nothing is left
# as a zombie. The grandchild says "ready" on stdout once it exists, and the worker starts no run
# before that: a worker killed while the watchdog's interpreter was still starting would take the
# watchdog with it and leave the run's own-session children (found once in about 70 kills). A run
# whose process has not exec'd yet does not show the marker in its environment, so the scan goes
# on for a second instead of stopping at the first pass that finds nothing. A task's "+" line is in
# the pipe before its run starts, and a pipe's data outlives its writer, so no run escapes.
_WATCHDOG = r"""
import os, signal, sys, time
fd, name = int(sys.argv[2]), sys.argv[3]
child = os.fork()
if child:  # the worker's direct child: only waits (and is what Ray kills with a dead worker)
    os.close(1)
    try:
        os.waitpid(child, 0)
    finally:
        os._exit(0)
try:
    os.write(1, b"ready\n")
    os.close(1)
except OSError:
    pass
live, buf = {}, b""
try:
    while True:
        got = os.read(fd, 65536)
        if not got:
            break
        *lines, buf = (buf + got).split(b"\n")
        for line in lines:
            op, marker, folder = (line.split(b" ") + [b"", b""])[:3]
            if op == b"+":
                live[marker] = folder
            elif op == b"-":
                live.pop(marker, None)
except OSError:
    pass
if live:
    needles = {name.encode() + b"=" + m for m in live}
    me = os.getpid()
    for _ in range(20):
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me:
                continue
            try:
                with open("/proc/%s/environ" % entry, "rb") as f:
                    env = f.read().split(b"\0")
            except OSError:
                continue
            if needles.intersection(env):
                pid = int(entry)
                try:
                    if os.getpgid(pid) == pid:
                        os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        time.sleep(0.05)
    import shutil
    for folder in live.values():
        shutil.rmtree(bytes.fromhex(folder.decode()), ignore_errors=True)
"""
READY_TIMEOUT = 10.0  # seconds a task waits for a new watchdog to say it is ready (then runs unguarded, as before)


class _Watchdog:
    """The worker-side guard: cleans up after the worker's tasks even if the worker is SIGKILLed."""

    def __init__(self) -> None:
        r, self._w = os.pipe()  # both ends close-on-exec: only the watchdog gets the read end
        try:
            self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", "import sys; exec(sys.stdin.read())", "evo-ray-watchdog", str(r), MARKER_ENV],
                pass_fds=(r,), start_new_session=True, env={}, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            )
            assert self._proc.stdin is not None and self._proc.stdout is not None
            self._proc.stdin.write(_WATCHDOG.encode())
            self._proc.stdin.close()
            with self._proc.stdout as out:  # no run starts before the guard exists (see _WATCHDOG)
                select.select([out], [], [], READY_TIMEOUT)
        except OSError:  # pragma: no cover - no python to start: the runner's own cleanup still runs
            self._proc = None
        finally:
            os.close(r)

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None and self._w >= 0

    def guard(self, marker: str, folder: Path) -> bool:
        """Watch the processes that will carry `marker` and the task's `folder`; False: the watchdog is gone."""
        return self._say(f"+ {marker} {os.fsencode(folder).hex()}\n")

    def release(self, marker: str) -> None:
        """The task has cleaned up after itself: nothing of it is left to kill."""
        self._say(f"- {marker}\n")

    def _say(self, line: str) -> bool:
        try:
            os.write(self._w, line.encode())  # one short write: atomic on a pipe
            return True
        except OSError:
            return False

    def close(self) -> None:
        if self._w >= 0:
            os.close(self._w)
            self._w = -1
        if self._proc is not None:
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass
            self._proc = None


_watchdog: _Watchdog | None = None  # this worker process's, once it has run a task
_watchdog_lock = threading.Lock()


def _guard(marker: str, folder: Path) -> _Watchdog | None:
    """This worker's watchdog, now guarding `marker` and `folder` (started, or restarted if it died);
    None when none can be started (the run is then guarded by the runner's own cleanup alone)."""
    global _watchdog
    with _watchdog_lock:
        for _ in range(2):
            if _watchdog is None or not _watchdog.alive():
                if _watchdog is not None:
                    _watchdog.close()
                _watchdog = _Watchdog()
            if _watchdog.alive() and _watchdog.guard(marker, folder):
                return _watchdog
            _watchdog.close()
            _watchdog = None
    return None


def _evaluate(template: RunTemplate, job: Job, tar: bytes, key: str, channel: Any) -> dict[str, Any]:
    """The Ray task: unpack, run, parse; returns the result, the log bytes and the monitor trace."""
    from evo.executors.local import run_job  # the same run as a local slot

    t0 = time.monotonic()
    marker = uuid.uuid4().hex
    folder = Path(tempfile.mkdtemp(prefix=f"evo-ray-{job.index}-{job.seed}-"))
    workdir, log_path = folder / "tree", folder / "run.log"
    dog = _guard(marker, folder)
    cancel = threading.Event()
    box: dict[str, Any] = {}
    pushed = 0
    # Whoever is last of the task and its run thread removes the folder and releases the marker.
    # The task can leave while its run goes on: Ray turns the SIGTERM it sends a worker whose
    # driver died into SystemExit here. Released then, the marker would tell the watchdog the run
    # was over, and a SIGKILL following the SIGTERM would leave the run (and what it started in
    # sessions of its own) alive; left open, the watchdog kills them when the worker goes.
    left = {"task": False, "run": True}  # "run": whether the run thread is over (True until one starts)
    left_lock = threading.Lock()

    def last_out(who: str) -> None:
        with left_lock:
            left[who] = True
            if not all(left.values()):
                return
        shutil.rmtree(folder, ignore_errors=True)
        if dog is not None:
            dog.release(marker)

    try:
        try:
            workdir.mkdir()
            export_tree(tar, workdir)
        except Exception as e:  # noqa: BLE001 - becomes the trial's reason
            box["result"] = RunResult("crashed", reason=f"could not unpack {job.commit[:8]} on the ray worker: {e}")
        else:
            extra = {MARKER_ENV: marker}
            # the GPUs Ray gave this task, and none when it asked for none (so a run never uses
            # a GPU that Ray handed to another task)
            gpus = ray.get_runtime_context().get_accelerator_ids().get("GPU") or []
            extra["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
            local_template = template
            if os.environ.get(CACHE_ENV):
                local_template = dataclasses.replace(template, cache_dir=os.environ[CACHE_ENV])
            local_job = dataclasses.replace(job, log_path=log_path)

            def work() -> None:
                try:
                    box["result"] = run_job(local_template, local_job, workdir, extra, cancel)
                except BaseException as e:  # noqa: BLE001 - reported, never raised on the worker
                    box["result"] = RunResult("crashed", reason=f"evo failed on the ray worker: {e!r}")
                finally:
                    last_out("run")

            left["run"] = False
            threading.Thread(target=work, name="evo-ray-run", daemon=True).start()
            # Poll with sleep, not Thread.join: a KeyboardInterrupt landing inside join() can leave
            # the thread looking finished while it still runs (CPython < 3.13).
            last = time.monotonic()
            while "result" not in box:
                try:
                    time.sleep(0.05)
                    if channel is not None and time.monotonic() - last >= PUSH_INTERVAL:
                        last = time.monotonic()
                        pushed = _push(channel, key, log_path, pushed)
                except KeyboardInterrupt:  # ray.cancel(force=False): stop the run, keep its log
                    cancel.set()
        log = log_path.read_bytes() if log_path.exists() else b""
        return {
            "result": box.get("result") or RunResult("crashed", reason="evo failed on the ray worker: no result"),
            "log": log,
            "trace": list(getattr(job.monitor, "trace", []) or []),
            "busy": time.monotonic() - t0,
            "node": ray.util.get_node_ip_address(),
            "pid": os.getpid(),
        }
    finally:
        cancel.set()  # no-op once the run is over; else (the task leaving by an exception) stop it
        last_out("task")


def _push(channel: Any, key: str, log_path: Path, offset: int) -> int:
    """Send the log's new bytes to the channel (fire and forget); returns the new offset."""
    try:
        with open(log_path, "rb") as f:
            f.seek(offset)
            data = f.read(PUSH_MAX)
    except OSError:
        return offset
    if data:
        try:
            channel.push.remote(key, offset, data)
        except Exception:  # noqa: BLE001 - streaming is best effort; the log also comes back whole
            return offset
    return offset + len(data)


class _Channel:
    """Log chunks on their way from tasks to the controller (offsets make writes idempotent)."""

    def __init__(self) -> None:
        self.chunks: dict[str, list[tuple[int, bytes]]] = {}

    def push(self, key: str, offset: int, data: bytes) -> None:
        self.chunks.setdefault(key, []).append((offset, data))

    def drain(self) -> dict[str, list[tuple[int, bytes]]]:
        out, self.chunks = self.chunks, {}
        return out


@dataclass
class _Flight:
    job: Job
    slot: int
    key: str
    attempt: int
    started: float
    cancelled: bool = False
    lost: list[str] = dataclasses.field(default_factory=list)  # why earlier attempts were lost


class RayExecutor(Slots):
    """The Executor protocol on a Ray cluster (or a local Ray instance started for the search)."""

    def __init__(self, repo: GitRepo, template: RunTemplate, workers: int, cfg: ExecutorConfig | None = None) -> None:
        cfg = cfg or ExecutorConfig(kind="ray")
        Slots.__init__(self, workers)
        self.repo = repo
        self.template = template
        self.cfg = cfg
        self._owns = not ray.is_initialized()
        if self._owns:
            kwargs: dict[str, Any] = dict(
                include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
            )
            if not cfg.ray_address and not os.environ.get("RAY_ADDRESS"):
                # a local instance sized like the local executor: `workers` runs at once
                kwargs["num_cpus"] = max(os.cpu_count() or 1, math.ceil(workers * max(cfg.cpus_per_trial, 0.0)), 1)
            try:
                with _keep_signal_handlers():
                    ray.init(address=cfg.ray_address or None, **kwargs)
            except Exception as e:  # noqa: BLE001 - one clear line instead of Ray's traceback
                where = f"connect to the Ray cluster at {cfg.ray_address}" if cfg.ray_address else "start a local Ray instance"
                hint = ""
                if "auth" in str(e).lower() or "auth" in str(e.__cause__ or "").lower():
                    hint = " (the cluster wants a token: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN, or ~/.ray/auth_token)"
                raise EvoError(f"[executor] could not {where}: {_first_line(e)}{hint}") from e
        try:
            self._check_resources()
        except EvoError:
            if self._owns:
                ray.shutdown()
            raise
        self._remote = ray.remote(
            num_cpus=cfg.cpus_per_trial, num_gpus=cfg.gpus_per_trial, max_retries=0, retry_exceptions=False,
        )(_evaluate)
        try:
            self._channel: Any = ray.remote(num_cpus=0, max_restarts=0)(_Channel).remote()
        except Exception:  # noqa: BLE001 - no streaming; logs still come back with each result
            self._channel = None
        self._drain: Any = None  # the outstanding drain call
        self._flights: dict[Any, _Flight] = {}  # ObjectRef -> flight
        self._ready: list[Done] = []  # finished outside wait() (cancel_all, export failures)
        self._tars: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self._busy_seconds = 0.0
        self._started = time.monotonic()

    # -- the protocol ------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        slot = self._take()
        self._launch(_Flight(job, slot, "", 0, time.monotonic()))

    def wait(self, timeout: float) -> list[Done]:
        out, self._ready = self._ready, []
        if self._flights:
            refs = list(self._flights)
            ready, _ = ray.wait(refs, num_returns=1, timeout=0 if out else timeout)
            if ready:
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            for ref in ready:
                done = self._finish(ref)
                if done is not None:
                    out.append(done)
        elif not out:
            time.sleep(timeout)
        self._pump_logs()
        self._release([d.worker for d in out])
        return out

    def cancel_all(self, grace: float = 10.0) -> None:
        """Stop every run: ask (the run is killed and keeps its log), force after `grace` s (0: at once)."""
        for ref, fl in self._flights.items():
            fl.cancelled = True
            if grace > 0:
                _quiet(ray.cancel, ref, force=False)
        if grace > 0:
            self._collect(grace)
        if self._flights:
            for ref in self._flights:  # the watchdog kills what the force-killed worker started
                _quiet(ray.cancel, ref, force=True)
            self._collect(10.0)
        for ref in list(self._flights):  # never heard back: report them as interrupted anyway
            fl = self._flights.pop(ref)
            self._ready.append(self._lost_done(fl, INTERRUPTED))

    def shutdown(self) -> None:
        if not ray.is_initialized():
            return
        self.cancel_all()
        if self._channel is not None:
            _quiet(ray.kill, self._channel)
            self._channel = None
        self._tars.clear()
        if self._owns:
            ray.shutdown()

    def utilisation(self) -> float:
        wall = time.monotonic() - self._started
        return self._busy_seconds / (wall * self.workers) if wall > 0 and self.workers else 0.0

    # -- internals ---------------------------------------------------------------------------
    def _check_resources(self) -> None:
        total = ray.cluster_resources()
        for name, need in (("CPU", self.cfg.cpus_per_trial), ("GPU", self.cfg.gpus_per_trial)):
            if need > 0 and total.get(name, 0.0) < need:
                have = total.get(name, 0.0)
                raise EvoError(f"[executor] {name.lower()}s_per_trial = {need:g}, but the Ray cluster has {have:g} {name}s in all")
        if self.cfg.gpus_per_trial <= 0 and total.get("GPU", 0.0) > 0:
            print(f"evo: note: the Ray cluster has {total['GPU']:g} GPU(s) but [executor] gpus_per_trial = 0: "
                  "runs will not see any GPU", file=sys.stderr)

    def _tarball(self, commit: str) -> Any:
        ref = self._tars.get(commit)
        if ref is None:
            ref = ray.put(self.repo.archive(commit))
            self._tars[commit] = ref
            while len(self._tars) > 16:
                self._tars.popitem(last=False)
        else:
            self._tars.move_to_end(commit)
        return ref

    def _launch(self, fl: _Flight) -> None:
        job = fl.job
        fl.key = f"{job.index}:{job.seed}:{fl.attempt}:{uuid.uuid4().hex[:8]}"
        try:
            job.log_path.parent.mkdir(parents=True, exist_ok=True)
            job.log_path.write_bytes(b"")
        except OSError as e:  # as a local slot says it: never an exception out of submit() (the slot would be lost)
            res = RunResult("crashed", reason=safe_text(f"not run: evo cannot write its log {job.log_path}: {e.strerror or e}"),
                            evo_fault=True)
            self._ready.append(Done(job, res, fl.slot, []))
            return
        try:
            tar = self._tarball(job.commit)
        except Exception as e:  # noqa: BLE001 - becomes the trial's reason
            res = RunResult("crashed", reason=f"could not export {job.commit[:8]}: {e}")
            self._ready.append(Done(job, res, fl.slot, []))
            return
        ship = dataclasses.replace(job, log_path=Path(job.log_path.name))  # the controller's path stays here
        ref = self._remote.options(name=f"evo-{job.index}-seed{job.seed}").remote(self.template, ship, tar, fl.key, self._channel)
        self._flights[ref] = fl

    def _finish(self, ref: Any) -> Done | None:
        """A finished task: its Done, or None when the job was relaunched after losing its worker."""
        fl = self._flights.pop(ref)
        try:
            payload = ray.get(ref)
        except TaskCancelledError:
            return self._lost_done(fl, INTERRUPTED)
        except RayTaskError as e:  # our task raised: not a lost worker, not worth a retry
            if fl.cancelled:
                return self._lost_done(fl, INTERRUPTED)
            return self._lost_done(fl, f"ray task failed: {_first_line(e)}", "crashed")
        except RayError as e:  # the worker, its node or the object it needed is gone
            if fl.cancelled:
                return self._lost_done(fl, INTERRUPTED)
            why = f"ray worker died: {type(e).__name__}: {_first_line(e)}"
            if fl.attempt < self.cfg.retries:
                self._busy_seconds += time.monotonic() - fl.started
                fl.lost.append(why)
                fl.attempt += 1
                fl.started = time.monotonic()
                self._launch(fl)
                return None
            return self._lost_done(fl, why, "crashed")
        except Exception as e:  # noqa: BLE001 - anything else (a result that does not unpickle, ...): the job's outcome
            return self._lost_done(fl, safe_text(f"evo failed while collecting the run: {type(e).__name__}: {e}"), "crashed")
        self._busy_seconds += float(payload.get("busy", 0.0))
        result: RunResult = payload["result"]
        log: bytes = payload.get("log", b"")
        notes = [f"[evo] attempt {i + 1} lost ({why}); retried" for i, why in enumerate(fl.lost)]
        if notes:
            log += ("\n" + "\n".join(notes) + f"\n[evo] attempt {fl.attempt + 1} ran on {payload.get('node')}\n").encode()
        try:
            fl.job.log_path.parent.mkdir(parents=True, exist_ok=True)
            fl.job.log_path.write_bytes(log)
        except OSError as e:  # a full disk here: the run ended, but its evidence is lost; said, not raised
            result = dataclasses.replace(result, outcome="crashed", value=None, evo_fault=True, reason=safe_text(
                f"evo could not write the run's log {fl.job.log_path}: {e.strerror or e}"))
        trace = list(payload.get("trace") or [])
        if fl.job.monitor is not None and hasattr(fl.job.monitor, "trace"):
            try:
                fl.job.monitor.trace[:] = trace  # the controller's copy never ran; mirror the worker's
            except TypeError:
                pass
        return Done(fl.job, result, fl.slot, trace)

    def _lost_done(self, fl: _Flight, reason: str, outcome: str = "interrupted") -> Done:
        """A Done for a run whose task gave no result; keeps what the log stream delivered."""
        self._busy_seconds += time.monotonic() - fl.started
        self._pump_logs(wait=1.0, also=fl)
        notes = [f"[evo] attempt {i + 1} lost ({why}); retried" for i, why in enumerate(fl.lost)]
        try:
            with open(fl.job.log_path, "ab") as f:
                f.write(("\n" + "\n".join([*notes, f"[evo] {reason}"]) + "\n").encode())
        except OSError:
            pass
        return Done(fl.job, RunResult(outcome, reason=reason, seconds=time.monotonic() - fl.started), fl.slot, [])

    def _collect(self, timeout: float) -> None:
        """Wait up to `timeout` s for in-flight tasks to end; their Dones go to self._ready."""
        deadline = time.monotonic() + timeout
        while self._flights:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _ = ray.wait(list(self._flights), num_returns=1, timeout=min(left, 0.5))
            for ref in ready:
                fl = self._flights[ref]
                fl.cancelled = True  # nothing is retried while stopping
                done = self._finish(ref)
                if done is not None:
                    self._ready.append(done)

    def _pump_logs(self, wait: float = 0.0, also: _Flight | None = None) -> None:
        """Write streamed log chunks of runs still in flight (never blocks unless asked to)."""
        if self._channel is None:
            return
        if self._drain is None:
            self._drain = self._channel.drain.remote()
        ready, _ = ray.wait([self._drain], num_returns=1, timeout=wait)
        if not ready:
            return
        try:
            chunks = ray.get(self._drain)
        except RayError:  # the channel died: logs now only come back with each result
            self._channel = self._drain = None
            return
        self._drain = self._channel.drain.remote()
        live = {fl.key: fl for fl in self._flights.values()}
        if also is not None:
            live[also.key] = also
        for key, parts in chunks.items():
            fl = live.get(key)
            if fl is None:
                continue  # finished (its whole log was written) or a lost attempt
            try:
                with open(fl.job.log_path, "r+b") as f:
                    for offset, data in parts:
                        f.seek(offset)
                        f.write(data)
            except OSError:
                pass


class _keep_signal_handlers:
    """ray.init installs its own SIGTERM handler (it logs a stack and kills the process), which
    would turn a scheduler's stop into a hard exit that orphans the runs; keep the caller's."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __enter__(self) -> None:
        self._main = threading.current_thread() is threading.main_thread()
        self._old = {s: signal.getsignal(s) for s in self.SIGNALS} if self._main else {}

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            if handler is not None:
                signal.signal(sig, handler)


def _quiet(fn: Any, *args: Any, **kwargs: Any) -> None:
    try:
        fn(*args, **kwargs)
    except Exception:  # noqa: BLE001 - best effort while stopping
        pass


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    cause = getattr(e, "cause", None)
    if isinstance(e, RayTaskError) and cause is not None:
        text = f"{type(cause).__name__}: {cause}"
    return (text.splitlines() or [type(e).__name__])[0][:300]

