"""What a running search prints: a line per finished run, a line per generation, a closing summary.

Plain lines, so a log file or a pipe reads the same as a terminal; on a terminal a status
line (running workers, best so far, time left) is redrawn in place between them.
"""

from __future__ import annotations

import shlex
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from evo.archive import mask_url
from evo.executors.base import Done, Executor
from evo.individual import Individual
from evo.logbook import Logbook
from evo.study import Study
from evo.wiring import default_storage


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.6g}"


class Progress:
    def __init__(self, study: Study, executor: Executor, out: Callable[[str], None] = print) -> None:
        self.study = study
        self.executor = executor
        self.out = out
        self.logbook = Logbook(study)
        self.t0 = time.time()
        self.tty = out is print and sys.stdout.isatty()
        self.done_runs = 0
        self.done_at: deque[float] = deque(maxlen=RATE_WINDOW + 1)  # when the latest runs ended
        self._last_plain = 0
        s, se = study, study.cfg.search
        self.of = "" if s.planned == sys.maxsize else f"/{s.planned}"
        limits = [f"{k} {v:g}" for k, v in (("max_runs", se.max_runs), ("max_hours", se.max_hours), ("max_run_hours", se.max_run_hours)) if v]
        out(f"study {s.name}: {s.strategy.name}, {'children until stopped' if s.planned == sys.maxsize else f'{s.planned} children planned'}"
            f"{', budget ' + ', '.join(limits) if limits else ''}, {executor.workers} worker(s); "
            f"{s.made} made and {s.spent_runs} runs so far; storage {s.archive.url.split('://')[0]}; mainline {s.mainline.branch}")

    def _line(self, text: str) -> None:
        if self.tty:
            sys.stdout.write("\r\033[K")
        self.out(text)

    def run_finished(self, done: Done, ind: Individual) -> None:
        s, r = self.study, done.result
        self.done_runs += 1
        self.done_at.append(time.time())
        inc = s.incumbent
        val = fmt(r.value) if r.outcome == "complete" else r.outcome.upper()
        role = "" if done.job.role == "candidate" else f" {done.job.role} seed {done.job.seed}"
        self._line(
            f"[{s.made:>4}{self.of}] #{ind.index:<4} g{ind.generation:<3} {ind.operator:<19} {role:<18} "
            f"{s.cfg.target.metric} {val:<10} mainline {fmt(inc.value if inc else None):<10} {r.seconds:5.1f}s  "
            f"{ind.description[:70] if done.job.role == 'candidate' else ''}"
            + (f"  ({r.reason})" if r.outcome not in ("complete",) and r.reason else "")
        )

    def recorded(self) -> None:
        for row in self.logbook.update():
            self._line(
                f"-- generation {row['gen']}: {row['evals']} children, median run {fmt(row['median'])}, "
                f"{row['failed']} failed, {row['pruned']} pruned; best run of the study so far {fmt(row['best'])}; "
                f"{row['seconds']:.0f}s since the study began"
            )

    def eta(self) -> tuple[int, float]:
        """(runs still expected, seconds left): from this session's measured run rate and the work left,
        expected confirmation runs included, under whichever limit binds first."""
        s = self.study
        se = s.cfg.search
        children = max(1, s.made)
        per_child = max(1.0, (s.spent_runs - len(s.judge.replicate_seeds)) / children)  # confirmations included
        recent = [s.pop[i] for i in range(max(1, s.made - RATE_WINDOW + 1), s.made + 1) if i in s.pop]
        if len(recent) >= RATE_WINDOW // 2:  # early children, tested while gains were large, ran more confirmations
            per_child = max(1.0, sum(1 for i in recent for r in i.runs.values() if r.trial >= 0) / len(recent))
        left = (s.planned - s.made) * per_child if s.planned < sys.maxsize else float("inf")
        left += len(s.index.testing) * 2  # open tests: a couple of pairs each
        if se.max_runs:
            left = min(left, max(0, se.max_runs - s.spent_runs))
        elapsed = time.time() - self.t0
        rate = self.done_runs / elapsed if elapsed > 0 and self.done_runs else 0.0
        if len(self.done_at) > RATE_WINDOW // 2:  # the recent rate: runs get shorter as futility stops more of them
            rate = (len(self.done_at) - 1) / max(time.time() - self.done_at[0], 1e-9)
        seconds = left / rate if rate else float("nan")
        if se.max_run_hours and rate:
            mean_run = s.spent_seconds / max(1, s.spent_runs)
            seconds = min(seconds, max(0.0, se.max_run_hours * 3600 - s.spent_seconds) / max(mean_run, 1e-9) / rate)
        if se.max_hours:
            seconds = min(seconds, max(0.0, se.max_hours * 3600 - s.wall_seconds())) if seconds == seconds else max(0.0, se.max_hours * 3600 - s.wall_seconds())
        return (int(left) if left != float("inf") else -1), seconds

    def status(self) -> str:
        s = self.study
        runs_left, seconds = self.eta()
        total = f"/~{s.spent_runs + runs_left}" if runs_left >= 0 else ""
        left = f", ~{_duration(seconds)} left" if seconds == seconds and seconds != float("inf") else ""
        return (f"{s.spent_runs}{total} runs{left}; made {s.made}{self.of} children; "
                f"mainline {fmt(s.incumbent.value if s.incumbent else None)} ({len(s.mainline.promotions)} promotions)")

    def tick(self) -> None:
        if self.tty:
            sys.stdout.write(f"\r\033[K  running {self.executor.busy()}/{self.executor.workers}: {self.status()}")
            sys.stdout.flush()
        elif self.done_runs and self.done_runs % 25 == 0 and self.done_runs != self._last_plain:
            self._last_plain = self.done_runs  # a plain line now and then for logs and pipes
            self.out(f"-- progress: {self.status()}")

    def close(self, summary: dict[str, Any]) -> None:
        s = summary
        self._line(
            f"done: {s['candidates']} candidates ({s['evaluated']} evaluated, {s['failed']} failed, {s['pruned']} pruned, "
            f"{s['duplicates']} duplicates), {s['runs']} runs, {s['promotions']} promotion(s); "
            f"baseline {fmt(s['baseline'])} -> mainline {fmt(s['incumbent_value'])}; worker utilisation {s['utilisation']:.0%}"
            + (f"; stopped by {s['stopped']}" if s.get("stopped") else "")
        )
        name = self.study.name
        url = self.study.archive.url
        flag = "" if url == default_storage(None) else f" --storage {shlex.quote(mask_url(url))}"
        self.out(f"inspect: evo best {name}{flag} | evo trials {name}{flag} | evo mainline {name}{flag} | evo lineage {name}{flag}")


RATE_WINDOW = 40  # the ETA's run rate over the session's latest runs, and its runs per child over the latest children


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 600:  # whole minutes would be 20-50% off here
        return f"{seconds // 60:.0f} min {seconds % 60:02.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
