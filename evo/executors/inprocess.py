"""The in-process executor: the real engine, with runs replaced by a Python function on a virtual clock.

Everything else is what ships: the real `Study`, strategy, breeder, operators, judge, mainline,
git commits and the Optuna archive. Only the run is simulated: `evaluate` is called with the
candidate's files (read from its commit, no checkout) and the seed, and says what the run would
have printed and how long it would have taken. The futility test sees the progress points in
order, exactly as it would a live run's, and a stopped run is charged only the time it ran.
The clock is virtual: `wait` jumps to the next finish, so thousands of candidates take a minute,
and durations (e.g. lognormal) decide the order results come back in, as on a real cluster.

Used by the unit tests of scheduling and promotion and by `evo bench` quality and statistics.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from evo.config import Config

from evo.executors.base import Done, Job, RunTemplate, Slots
from evo.gitrepo import GitRepo
from evo.runner import RunResult


@dataclass
class Evaluation:
    """What one simulated run printed, and how long it took (virtual seconds)."""

    value: float | None  # the final metric; None = the run crashed
    seconds: float = 1.0
    progress: list[tuple[float, float]] = field(default_factory=list)  # (fraction 0..1, value), in order
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str = ""  # why it crashed
    log: str = ""  # what the run printed (its log's tail), where it matters


class Source:
    """A candidate's files, read from its commit on demand."""

    def __init__(self, repo: GitRepo, commit: str) -> None:
        self.repo, self.commit = repo, commit

    def read(self, path: str) -> str:
        return self.repo.read(self.commit, path).decode("utf-8")


Evaluate = Callable[[Source, Job], Evaluation]


class InProcessExecutor(Slots):
    def __init__(self, repo: GitRepo, template: RunTemplate, workers: int, evaluate: Evaluate) -> None:
        super().__init__(workers)
        self.repo, self.template, self.evaluate = repo, template, evaluate
        self.now = 0.0  # the virtual clock, in seconds
        self._heap: list[tuple[float, int, Done]] = []  # (finish time, submission order, result)
        self._order = 0
        self._busy_seconds = 0.0
        self._cancelled = False

    def submit(self, job: Job) -> None:
        slot = self._take()
        result = self._run(job)
        result.metrics = {**result.metrics, "virtual_end": round(self.now + result.seconds, 6)}  # when it ends on the virtual clock
        self._busy_seconds += result.seconds
        self._order += 1
        heapq.heappush(self._heap, (self.now + result.seconds, self._order, Done(job, result, slot, list(getattr(job.monitor, "trace", []) or []))))

    def _run(self, job: Job) -> RunResult:
        try:
            ev = self.evaluate(Source(self.repo, job.commit), job)
        except Exception as e:  # noqa: BLE001 - the evaluator is the candidate's code: its failure is the run's
            return RunResult("crashed", reason=f"{type(e).__name__}: {e}", seconds=0.0)
        seen: list[tuple[float, float]] = []
        for fraction, value in ev.progress:
            seen.append((fraction, value))
            if job.monitor is not None and job.monitor(fraction, value):
                return RunResult("pruned", progress=seen, seconds=ev.seconds * fraction, reason=f"futility test at {fraction:.0%}")
        if ev.value is None:
            return RunResult("crashed", progress=seen, seconds=ev.seconds, reason=ev.reason or "no metric printed", returncode=1)
        return RunResult("complete", value=ev.value, metrics={self.template.metric: ev.value, **ev.metrics}, progress=seen,
                         seconds=ev.seconds, returncode=0, log_tail=ev.log)

    def wait(self, timeout: float) -> list[Done]:
        """Advance the clock to the next finish; return every run that ends then."""
        out: list[Done] = []
        if not self._heap:
            return out
        t = float("inf") if self._cancelled else self._heap[0][0]
        while self._heap and self._heap[0][0] <= t:
            out.append(heapq.heappop(self._heap)[2])
        self._release([d.worker for d in out])
        if not self._cancelled:
            self.now = max(self.now, t)
        return out

    def cancel_all(self) -> None:
        """Every run still on the clock ends now, as interrupted (what Ctrl-C does to real runs)."""
        self._cancelled = True
        for _, _, done in self._heap:
            done.result = RunResult("interrupted", reason="evo stopped before the run finished; re-run on resume")

    def shutdown(self) -> None:
        self._heap.clear()

    def utilisation(self) -> float:
        return self._busy_seconds / (self.now * self.workers) if self.now > 0 else 0.0


def search(cfg: Config, evaluate: Evaluate, out: Callable[[str], None] = lambda line: None) -> tuple[dict[str, Any], InProcessExecutor]:
    """A whole `evo search` of `cfg` (its operators, strategy and statistics) with runs simulated by `evaluate`."""
    from evo.search import search as real_search
    from evo.wiring import build_operators

    made: list[InProcessExecutor] = []

    def make(repo: GitRepo, template: RunTemplate) -> InProcessExecutor:
        made.append(InProcessExecutor(repo, template, cfg.search.workers, evaluate))
        return made[-1]

    summary = real_search(cfg, *build_operators(cfg), make, out=out)
    return summary, made[0]
