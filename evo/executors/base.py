"""What an executor is given and gives back.

The controller owns the archive; executors only run. A Job names a commit and a seed; the
executor materialises the commit's files in a fresh folder outside the repository, runs the
command there with a scrubbed environment, deletes the folder, and hands back a Done.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from evo.config import TargetConfig

from evo.runner import RunResult


def python_command(cmd: str) -> str:
    """`{python}` in a command means the interpreter evo runs under (the venv's python)."""
    return cmd.replace("{python}", shlex.quote(sys.executable))


@dataclass(frozen=True)
class RunTemplate:
    """The parts of a run that are the same for every job of a study."""

    command: str
    timeout: float
    time_budget: float
    metric: str
    metric_regex: str = ""
    progress_regex: str = ""
    env_allow: tuple[str, ...] = ()
    max_log_bytes: int = 20_000_000
    memory_limit_mb: int = 0
    no_network: bool = False
    cache_dir: str = ""  # exported as EVO_CACHE (prepared data lives here, outside checkouts)
    preload: tuple[str, ...] = ()  # modules a zygote imports once; runs fork from it (evo.executors.warm)

    @classmethod
    def from_target(cls, t: TargetConfig, cache_dir: str) -> RunTemplate:
        """The one place a target's config becomes run settings."""
        return cls(command=python_command(t.run), timeout=t.timeout, time_budget=t.time_budget, metric=t.metric,
                   metric_regex=t.metric_regex, progress_regex=t.progress_regex, env_allow=t.env_allow,
                   max_log_bytes=t.max_log_bytes, memory_limit_mb=t.memory_limit_mb, no_network=t.no_network,
                   cache_dir=cache_dir, preload=t.preload)


class Monitor(Protocol):
    """A live test of a run's progress: called with each progress point, True stops the run."""

    trace: list[tuple[float, float]]

    def __call__(self, fraction: float, value: float) -> bool: ...


@dataclass
class Job:
    index: int  # the individual
    commit: str
    seed: int
    role: str  # baseline | replicate | candidate | confirm
    log_path: Path
    monitor: Monitor | None = None  # callable(fraction, value) -> stop?; keeps a .trace


@dataclass
class Done:
    job: Job
    result: RunResult
    worker: int
    monitor_trace: list[tuple[float, float]] = field(default_factory=list)


class Slots:
    """Worker slots, numbered from 0; a job takes the lowest free one (GPU binding follows the number)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._free = list(range(workers))

    def free(self) -> int:
        return len(self._free)

    def busy(self) -> int:
        return self.workers - len(self._free)

    def _take(self) -> int:
        return self._free.pop(0)

    def _release(self, slots: list[int]) -> None:
        self._free.extend(slots)
        self._free.sort()


class Executor(Protocol):
    workers: int

    def submit(self, job: Job) -> None: ...
    def free(self) -> int: ...
    def busy(self) -> int: ...
    def wait(self, timeout: float) -> list[Done]: ...
    def cancel_all(self) -> None: ...
    def shutdown(self) -> None: ...
    def utilisation(self) -> float: ...
