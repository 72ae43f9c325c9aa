"""What a running search prints: a line per finished run, a line per generation, a closing summary.

Plain lines, so a log file or a pipe reads the same as a terminal; on a terminal a status
line (running workers, best so far, time left) is redrawn in place between them.
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable
from typing import Any

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
        s = study
        out(f"study {s.name}: {s.strategy.name}, {s.strategy.planned} children planned, {executor.workers} worker(s); "
            f"{s.made} made so far; storage {s.archive.url.split('://')[0]}; mainline {s.mainline.branch}")

    def _line(self, text: str) -> None:
        if self.tty:
            sys.stdout.write("\r\033[K")
        self.out(text)

    def run_finished(self, done: Done, ind: Individual) -> None:
        s, r = self.study, done.result
        self.done_runs += 1
        inc = s.incumbent
        val = fmt(r.value) if r.outcome == "complete" else r.outcome.upper()
        role = "" if done.job.role == "candidate" else f" {done.job.role} seed {done.job.seed}"
        self._line(
            f"[{s.made:>4}/{s.strategy.planned}] #{ind.index:<4} g{ind.generation:<3} {ind.operator:<12}{role:<18} "
            f"{s.cfg.target.metric} {val:<10} mainline {fmt(inc.value if inc else None):<10} {r.seconds:5.1f}s  "
            f"{ind.description[:70] if done.job.role == 'candidate' else ''}"
            + (f"  ({r.reason})" if r.outcome not in ("complete",) and r.reason else "")
        )

    def recorded(self) -> None:
        for row in self.logbook.update():
            self._line(
                f"-- generation {row['gen']}: {row['evals']} evaluated, best run {fmt(row['best'])}, median {fmt(row['median'])}, "
                f"{row['failed']} failed, {row['pruned']} pruned, {row['seconds']:.0f}s"
            )

    def tick(self) -> None:
        if not self.tty:
            return
        s = self.study
        elapsed = time.time() - self.t0
        rate = s.made / elapsed if elapsed > 0 and s.made else 0
        left = (s.strategy.planned - s.made) / rate if rate else float("nan")
        sys.stdout.write(
            f"\r\033[K  running {self.executor.busy()}/{self.executor.workers}  made {s.made}/{s.strategy.planned}  "
            f"best {fmt(s.incumbent.value if s.incumbent else None)}  elapsed {elapsed:.0f}s"
            + (f"  ~{left:.0f}s left" if left == left else "")
        )
        sys.stdout.flush()

    def close(self, summary: dict[str, Any]) -> None:
        s = summary
        self._line(
            f"done: {s['candidates']} candidates ({s['evaluated']} evaluated, {s['failed']} failed, {s['pruned']} pruned, "
            f"{s['duplicates']} duplicates), {s['runs']} runs, {s['promotions']} promotion(s); "
            f"baseline {fmt(s['baseline'])} -> mainline {fmt(s['incumbent_value'])}; worker utilisation {s['utilisation']:.0%}"
        )
        name = self.study.name
        url = self.study.archive.url
        flag = "" if url == default_storage(None) else f" --storage {shlex.quote(url)}"
        self.out(f"inspect: evo best {name}{flag} | evo trials {name}{flag} | evo mainline {name}{flag} | evo lineage {name}{flag}")
