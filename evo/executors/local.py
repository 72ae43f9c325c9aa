"""Local slots: one thread per running job, each bound to one GPU when there are GPUs."""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from evo.executors.base import Done, Job, RunTemplate
from evo.gitrepo import GitRepo
from evo.runner import RunResult, RunSpec, run, run_env


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


def run_job(template: RunTemplate, job: Job, workdir: Path, extra_env: dict[str, str], cancel: threading.Event) -> RunResult:
    spec = RunSpec(
        command=template.command, cwd=workdir, env=job_env(template, job, extra_env), timeout=template.timeout,
        log_path=job.log_path, metric=template.metric, metric_regex=template.metric_regex,
        progress_regex=template.progress_regex, max_log_bytes=template.max_log_bytes,
        memory_limit_mb=template.memory_limit_mb, no_network=template.no_network,
    )
    return run(spec, monitor=job.monitor, cancel=cancel)


class LocalExecutor:
    def __init__(self, repo: GitRepo, template: RunTemplate, workers: int = 1) -> None:
        self.repo = repo
        self.template = template
        self.workers = workers
        self.gpus = visible_gpus()
        self._free = list(range(workers))
        self._done: queue.Queue[Done] = queue.Queue()
        self._threads: dict[int, threading.Thread] = {}
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._busy_seconds = 0.0
        self._started = time.monotonic()

    def free(self) -> int:
        return len(self._free)

    def busy(self) -> int:
        return self.workers - len(self._free)

    def submit(self, job: Job) -> None:
        slot = self._free.pop(0)
        t = threading.Thread(target=self._work, args=(slot, job), name=f"evo-slot-{slot}", daemon=True)
        self._threads[slot] = t
        t.start()

    def _work(self, slot: int, job: Job) -> None:
        t0 = time.monotonic()
        extra = {"CUDA_VISIBLE_DEVICES": self.gpus[slot % len(self.gpus)]} if self.gpus else {}
        workdir = Path(tempfile.mkdtemp(prefix=f"evo-run-{job.index}-{job.seed}-"))
        try:
            try:
                self.repo.export(job.commit, workdir)
            except Exception as e:  # noqa: BLE001 - becomes the trial's reason
                result = RunResult("crashed", reason=f"could not export {job.commit[:8]}: {e}")
            else:
                result = run_job(self.template, job, workdir, extra, self._cancel)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        with self._lock:
            self._busy_seconds += time.monotonic() - t0
        trace = list(getattr(job.monitor, "trace", []) or [])
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
            self._free.append(d.worker)
            self._free.sort()
        return out

    def cancel_all(self) -> None:
        self._cancel.set()
        for t in list(self._threads.values()):
            t.join(timeout=15)

    def shutdown(self) -> None:
        self.cancel_all()

    def utilisation(self) -> float:
        wall = time.monotonic() - self._started
        with self._lock:
            busy = self._busy_seconds + 0.0
        return busy / (wall * self.workers) if wall > 0 else 0.0
