"""Timers wrapped around the engine's phases, for the duration of one benchmark search.

The engine is not changed: for the length of a `with Probe():` block, a few methods are
replaced by timing wrappers that call the originals (propose = Study.breed, export =
GitRepo.export, the run = evo.executors.local.run_job, record = Study.record, ...), and put
back afterwards. Worker threads append to lists, which is atomic in CPython.
"""

from __future__ import annotations

import functools
import re
import time
from collections import defaultdict
from typing import Any

from evo.bench.common import describe

_RUNDIR = re.compile(r"evo-run-(\d+)-(-?\d+)-")


class Probe:
    def __init__(self) -> None:
        self.events: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._saved: list[tuple[Any, str, Any]] = []
        self.missing: list[str] = []

    # -- patching ------------------------------------------------------------------------------
    def _wrap(self, owner: Any, name: str, kind: str, key: Any = None, after: Any = None) -> None:
        original = getattr(owner, name, None)
        if original is None:  # the engine renamed it: time what is left
            self.missing.append(f"{getattr(owner, '__name__', owner)}.{name}")
            return
        events = self.events[kind]

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            out = original(*args, **kwargs)
            t1 = time.perf_counter()
            ev = {"s": t1 - t0, "end": t1}
            if key is not None:
                ev.update(key(*args, **kwargs))
            if after is not None:
                ev.update(after(out))
            events.append(ev)
            return out

        self._saved.append((owner, name, original))
        setattr(owner, name, timed)

    def __enter__(self) -> Probe:
        import evo.executors.local as local
        import evo.runner as runner
        from evo.archive import Archive
        from evo.breeder import Breeder
        from evo.gitrepo import GitRepo
        from evo.report import Progress
        from evo.study import Study

        def dest_key(self_: Any, commit: str, dest: Any) -> dict[str, Any]:
            m = _RUNDIR.match(getattr(dest, "name", ""))
            return {"index": int(m.group(1)), "seed": int(m.group(2))} if m else {}

        self._wrap(Breeder, "breed", "propose", key=lambda s, idx, *a, **k: {"index": idx})
        self._wrap(Study, "record", "record", key=lambda s, job, *a, **k: {"index": job.index, "seed": job.seed, "role": job.role})
        self._wrap(Study, "load", "load")
        self._wrap(GitRepo, "export", "export", key=dest_key)
        self._wrap(local, "run_job", "run_job", key=lambda tpl, job, *a, **k: {"index": job.index, "seed": job.seed},
                   after=lambda res: {"run_seconds": res.seconds, "outcome": res.outcome})
        self._wrap(local.LocalExecutor, "_work", "work", key=lambda s, slot, job: {"index": job.index, "seed": job.seed})
        self._wrap(runner, "_kill_token", "kill_token")
        self._wrap(Progress, "run_finished", "progress")
        if hasattr(Progress, "recorded"):
            self._wrap(Progress, "recorded", "recorded")  # the logbook's update (after the record)
        self._wrap(local.LocalExecutor, "wait", "wait", after=lambda done: {"keys": [(d.job.index, d.job.seed) for d in done]})
        self._wrap(Archive, "add", "archive_add")
        self._wrap(Archive, "set_attr", "set_attr", key=lambda s, k, v: {"key": k})
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved.clear()

    # -- analysis -------------------------------------------------------------------------------
    def runs(self, skip: int = 1) -> list[dict[str, Any]]:
        """Per run (one worker, so runs are sequential): the cycle between two successive moments the
        executor handed a finished run back (LocalExecutor.wait), and the parts of it. In a cycle the
        loop records the previous run, prints, proposes the next child, and the worker exports, runs
        and cleans up that child. overhead = cycle - the run's own seconds (RunResult.seconds, the
        trial's run_seconds). `skip` drops the first cycles (study setup is in them)."""
        waits = sorted((e for e in self.events["wait"] if e.get("keys")), key=lambda e: e["end"])
        by = lambda kind: {(e.get("index"), e.get("seed")): e for e in self.events[kind]}  # noqa: E731
        jobs, works, exports = by("run_job"), by("work"), by("export")

        def within(kind: str, a: float, b: float) -> float:
            return sum(e["s"] for e in self.events[kind] if a < e["end"] <= b)

        out = []
        for prev, w in zip(waits, waits[1:]):
            if len(w["keys"]) != 1:
                continue  # two runs handed back at once: not a sequential cycle
            key = w["keys"][0]
            job, work, exp = jobs.get(key), works.get(key), exports.get(key)
            if job is None or work is None:
                continue
            a, b = prev["end"], w["end"]
            cycle = b - a
            run_s = job["run_seconds"]
            out.append({
                "index": key[0], "seed": key[1], "cycle": cycle, "run": run_s, "overhead": cycle - run_s,
                "propose": within("propose", a, b), "export": exp["s"] if exp else 0.0,
                "after_run": job["s"] - run_s, "cleanup": work["s"] - job["s"] - (exp["s"] if exp else 0.0),
                "record": within("record", a, b), "progress": within("progress", a, b) + within("recorded", a, b),
            })
        return out[max(0, skip - 1):]

    def summary(self, candidates: int, wall: float, skip: int = 1) -> dict[str, Any]:
        runs = self.runs(skip)
        ms = 1000.0
        parts = ("propose", "export", "run", "after_run", "cleanup", "record", "progress")  # progress = printing + logbook
        loop = [r["overhead"] - sum(r[p] for p in parts if p != "run") for r in runs]
        sets = defaultdict(list)
        for e in self.events["set_attr"]:
            sets[e["key"]].append(e["s"])
        total_run = sum(e["run_seconds"] for e in self.events["run_job"])
        return {
            "runs": len(runs), "candidates": candidates, "wall_s": round(wall, 3),
            "overhead_ms": describe((r["overhead"] for r in runs), ms, 2),
            "cycle_ms": describe((r["cycle"] for r in runs), ms, 2),
            "run_ms": describe((r["run"] for r in runs), ms, 2),
            # everything outside the runs, spread over the candidates (duplicates/failed proposals included)
            "overhead_per_candidate_ms": round(ms * (wall - total_run) / max(1, candidates), 2),
            "parts_ms": {p: describe((r[p] for r in runs), ms, 2) for p in parts} | {"loop_other": describe(loop, ms, 2)},
            "archive_add_ms": describe((e["s"] for e in self.events["archive_add"]), ms, 2),
            "kill_token_ms": describe((e["s"] for e in self.events["kill_token"]), ms, 2),
            "set_attr_ms": {k: describe(v, ms, 2) for k, v in sorted(sets.items())},
            "load_ms": describe((e["s"] for e in self.events["load"]), ms, 2),
        }
