"""Per-generation statistics (a DEAP Logbook), stored in the study as generations complete."""

from __future__ import annotations

import bisect
import statistics
import time
from typing import TYPE_CHECKING, Any

from deap import tools

from evo.individual import Status

if TYPE_CHECKING:
    from evo.study import Study


class Logbook:
    HEADER = ["gen", "evals", "best", "median", "failed", "pruned", "seconds"]

    def __init__(self, study: Study) -> None:
        self.study = study
        self.book = tools.Logbook()  # this session's rows (the study's earlier ones are in the archive: one row each)
        self.book.header = self.HEADER
        rows = study.archive.attrs.get("logbook", [])
        self.last = int(rows[-1]["gen"]) if rows else -1
        # the first index of generation last + 1 (generations are runs of consecutive indices, so a binary search)
        self.first = bisect.bisect_right(range(study.next_index), self.last, key=study.strategy.generation_of)
        # seconds count from the study's start, across resumes (the wall clock of its first run)
        self.t0 = float(study.archive.attrs.get("created", time.time()))

    def update(self) -> list[dict[str, Any]]:
        """Record every generation that has just completed; return the new rows.

        `best` is the best screening run of the study so far; `median` is over this generation's runs."""
        s = self.study
        new = []
        while True:
            g = self.last + 1
            end = self.first
            while end <= s.planned and s.strategy.generation_of(end) == g:
                end += 1
            members = range(self.first, end)
            if not members or end > s.next_index:
                break
            inds = [s.pop[i] for i in members if i in s.pop]
            if any(not i.finished for i in inds):
                break
            values = [i.value for i in inds if i.value is not None]
            best = s.index.best(s.pop, 1)  # the study's best screening run, from the index (a scan of the population was O(n) per generation)
            row = {
                "gen": g, "evals": len(inds), "best": best[0].value if best else None,
                "median": statistics.median(values) if values else None,
                "failed": sum(1 for i in inds if i.status == Status.FAILED),
                "pruned": sum(1 for i in inds if i.status == Status.PRUNED),
                "seconds": round(time.time() - self.t0, 1),
            }
            self.book.record(**row)
            self.last, self.first = g, end
            new.append(row)
        for row in new:  # one row each: the logbook is never rewritten whole
            s.archive.set_row("logbook", row["gen"], dict(row))
        return new
