"""Local slots: one thread per running job, each bound to one GPU when there are GPUs.

With `[target] preload`, the executor keeps one zygote (evo.executors.warm): a Python process that
has imported those modules, from which each `{python} script.py` run is forked instead of
started cold (the runner falls back to a cold start whenever the zygote cannot be used).
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evo.executors import warm
from evo.executors.base import Done, Job, RunTemplate, Slots
from evo.gitrepo import GitRepo
from evo.runner import RunResult, RunSpec, kill_all_runs, run, run_env, safe_text


def visible_gpus() -> list[str]:
    """GPU ids to bind slots to: CUDA_VISIBLE_DEVICES if set, else what nvidia-smi lists."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def job_env(template: RunTemplate, job: Job, extra: dict[str, str] | None = None) -> dict[str, str]:
    return run_env(template.env_allow, {
        "EVO_SEED": str(job.seed),
        "EVO_TIME_BUDGET": f"{template.time_budget:g}",
        "EVO_INDIVIDUAL": str(job.index),
        "EVO_ROLE": job.role,
        "PYTHONUNBUFFERED": "1",
        **({"EVO_CACHE": template.cache_dir} if template.cache_dir else {}),
        **(extra or {}),
    })


def zygote_env(template: RunTemplate) -> dict[str, str]:
    """Every run's environment without its per-run values: what the zygote imports its modules under."""
    env = job_env(template, Job(0, "", 0, "", Path(os.devnull)))
    return {k: v for k, v in env.items() if k not in warm.PER_RUN}


def run_job(template: RunTemplate, job: Job, workdir: Path, extra_env: dict[str, str], cancel: threading.Event,
            zygote: warm.Zygote | None = None) -> RunResult:
    spec = RunSpec(
        command=template.command, cwd=workdir, env=job_env(template, job, extra_env), timeout=template.timeout,
        log_path=job.log_path, metric=template.metric, metric_regex=template.metric_regex,
        progress_regex=template.progress_regex, max_log_bytes=template.max_log_bytes,
        memory_limit_mb=template.memory_limit_mb, no_network=template.no_network,
    )
    return run(spec, monitor=job.monitor, cancel=cancel, warm=zygote)


class LocalExecutor(Slots):
    def __init__(self, repo: GitRepo, template: RunTemplate, workers: int = 1, log: Callable[[str], None] | None = None) -> None:
        super().__init__(workers)
        self.repo = repo
        self.template = template
        self.gpus = visible_gpus()
        # started now, so that its imports overlap the first export; None: every run starts cold
        self.zygote: warm.Zygote | None = warm.for_template(template, zygote_env(template), log)
        self._done: queue.Queue[Done] = queue.Queue()
        self._threads: dict[int, threading.Thread] = {}
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._busy_seconds = 0.0
        self._started = time.monotonic()

    def submit(self, job: Job) -> None:
        slot = self._take()
        t = threading.Thread(target=self._work, args=(slot, job), name=f"evo-slot-{slot}", daemon=True)
        self._threads[slot] = t
        t.start()

    def _work(self, slot: int, job: Job) -> None:
        """One job, start to end. Whatever fails here (an export, a log folder that cannot be
        made, a full disk, a bug) becomes the job's "crashed" result: a Done always comes back,
        so the slot frees and the search never waits forever; the runner has killed the run."""
        t0 = time.monotonic()
        result: RunResult | None = None
        try:
            extra = {"CUDA_VISIBLE_DEVICES": self.gpus[slot % len(self.gpus)]} if self.gpus else {}
            workdir = Path(tempfile.mkdtemp(prefix=f"evo-run-{job.index}-{job.seed}-"))
            try:
                try:
                    self.repo.export(job.commit, workdir)
                except Exception as e:  # noqa: BLE001 - becomes the trial's reason
                    result = RunResult("crashed", reason=safe_text(f"could not export {job.commit[:8]}: {e}"))
                else:
                    result = run_job(self.template, job, workdir, extra, self._cancel, self.zygote)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
        except BaseException as e:  # noqa: BLE001 - a worker thread must always report back
            result = RunResult("crashed", reason=safe_text(f"evo failed while running it: {type(e).__name__}: {e}"),
                               seconds=time.monotonic() - t0, evo_fault=True)
        finally:
            with self._lock:
                self._busy_seconds += time.monotonic() - t0
            try:
                trace = list(getattr(job.monitor, "trace", []) or [])
            except Exception:  # noqa: BLE001
                trace = []
            if result is None:  # pragma: no cover - only if the except clause itself failed
                result = RunResult("crashed", reason="evo failed while running it", evo_fault=True)
            self._done.put(Done(job, result, slot, trace))

    def wait(self, timeout: float) -> list[Done]:
        out = []
        try:
            out.append(self._done.get(timeout=timeout))
            while True:
                out.append(self._done.get_nowait())
        except queue.Empty:
            pass
        for d in out:
            self._threads.pop(d.worker, None)
        self._release([d.worker for d in out])
        return out

    def cancel_all(self) -> None:
        """Stop every run (SIGTERM, then SIGKILL after 1 s) and wait for the slots to report.

        A second Ctrl-C (or any exception) while waiting kills every run at once, with no grace,
        before it goes on: a run that ignores SIGTERM never outlives evo. The wait polls instead
        of Thread.join: an interrupt landing inside join() can leave a thread looking finished
        while it still runs (CPython < 3.13)."""
        self._cancel.set()
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and any(t.is_alive() for t in list(self._threads.values())):
                time.sleep(0.02)
        except BaseException:
            kill_all_runs()
            raise

    def shutdown(self) -> None:
        self.cancel_all()
        if self.zygote is not None:
            self.zygote.close()

    def warm_counts(self) -> dict[str, Any]:
        """How many runs were forked warm and how many started cold (the benchmark reads it)."""
        z = self.zygote
        return {"warm": z.warm_runs, "cold": z.cold_runs, "off": z.why_off} if z is not None else {"warm": 0, "cold": None, "off": "no preload"}

    def utilisation(self) -> float:
        wall = time.monotonic() - self._started
        with self._lock:
            busy = self._busy_seconds + 0.0
        return busy / (wall * self.workers) if wall > 0 else 0.0
