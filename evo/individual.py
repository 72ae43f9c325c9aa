"""Individuals and their runs, and the one schema by which they are written to and read from trials.

An individual is a commit; each of its runs is one Optuna trial. `candidate_attrs` writes the
genealogy a trial carries, `rebuild` reads it back: the engine (on every start) and inspection
(evo.inspect) read trials through the same names, so the schema has one home. The search keeps no
state that the archive and the refs do not hold, so a resume after kill -9 sees exactly what a
fresh start would.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from optuna.trial import FrozenTrial, TrialState


class Direction(StrEnum):
    """Which way the metric improves. Every sign decision in evo goes through here."""

    MINIMIZE = "minimize"
    MAXIMIZE = "maximize"

    def oriented(self, value: float) -> float:
        """Higher is better, whatever the study's direction (selection and the SPRT's gains)."""
        return -value if self is Direction.MINIMIZE else value

    def loss(self, value: float) -> float:
        """Lower is better: the orientation of the statistics (evo.sprt's differences are losses)."""
        return -self.oriented(value)

    def better(self, a: float, b: float) -> bool:
        """a strictly better than b."""
        return self.oriented(a) > self.oriented(b)

    def gain(self, old: float, new: float) -> float:
        """How much new improves on old, in metric units (positive = better)."""
        return self.oriented(new) - self.oriented(old)

    def best(self, values: Iterable[float]) -> float:
        return max(values, key=self.oriented)

    def sort_key(self, value: float) -> float:
        """Sorts best first."""
        return -self.oriented(value)


class Status(StrEnum):
    """Where an individual's screening run stands."""

    PENDING = "pending"
    RUNNING = "running"
    EVALUATED = "evaluated"
    FAILED = "failed"
    PRUNED = "pruned"
    DUPLICATE = "duplicate"


class Decision(StrEnum):
    """The promotion decision about an evaluated candidate ('' = not screened yet)."""

    NONE = ""
    UNTESTED = "untested"  # not promising enough to test
    TESTING = "testing"  # confirmation runs under way
    ACCEPT = "accept"  # promoted to the mainline
    REJECT = "reject"
    INCONCLUSIVE = "inconclusive"  # undecided at the cap: never promoted


class Role(StrEnum):
    """Why a run was made."""

    BASELINE = "baseline"  # the baseline's screening run
    REPLICATE = "replicate"  # further baseline runs that measure the noise
    CANDIDATE = "candidate"  # a child's screening run
    CONFIRM = "confirm"  # a promotion test's run on a further seed


# Run outcomes (trial attr `outcome`); the runner's outcomes plus what the engine adds.
COMPLETE, DUPLICATE_OUTCOME, PRUNED_OUTCOME, INTERRUPTED = "complete", "duplicate", "pruned", "interrupted"
REJECTED, OPERATOR_FAILED = "rejected", "operator_failed"
FINISHED = (Status.EVALUATED, Status.FAILED, Status.PRUNED, Status.DUPLICATE)


@dataclass
class Run:
    seed: int
    trial: int
    value: float | None
    outcome: str
    progress: list[tuple[float, float]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class Individual:
    index: int  # proposal order; 0 is the baseline
    commit: str
    tree: str
    parents: tuple[str, ...] = ()
    parent_indices: tuple[int, ...] = ()
    operator: str = "baseline"
    description: str = ""
    generation: int = 0
    status: Status = Status.PENDING
    runs: dict[int, Run] = field(default_factory=dict)  # seed -> its finished run
    screen_seed: int = 0
    reason: str = ""
    decision: Decision = Decision.NONE
    reused_from: int | None = None  # index of the individual whose result a duplicate reuses
    artifacts: str = ""  # folder of the proposal's prompt, response and diff
    usage: dict[str, int] = field(default_factory=dict)  # tokens the proposal cost (written on its screening trial)
    params: dict[str, float] = field(default_factory=dict)  # numeric constants this child changed (Optuna params)
    planned: str = ""  # the operator the strategy planned, where the breeder made another (a crossover of nested lines mutates)

    @property
    def value(self) -> float | None:
        """The screening value: the metric on the seed every individual runs first."""
        run = self.runs.get(self.screen_seed)
        return run.value if run and run.outcome == COMPLETE else None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def values(self) -> dict[int, float]:
        return {s: r.value for s, r in self.runs.items() if r.outcome == COMPLETE and r.value is not None}

    def mean(self) -> float | None:
        """The mean over every seed it ran: what selection ranks once a candidate has several."""
        v = list(self.values().values())
        return sum(v) / len(v) if v else None


def candidate_attrs(ind: Individual, branch: str) -> dict[str, Any]:
    """The genealogy every trial of `ind` carries (docs/archive.md)."""
    return {
        "index": ind.index, "commit": ind.commit, "tree": ind.tree, "branch": branch if ind.commit else "",
        "parents": list(ind.parents), "parent_indices": list(ind.parent_indices), "operator": ind.operator,
        "description": ind.description, "generation": ind.generation, "artifacts": ind.artifacts,
    } | ({"planned": ind.planned} if ind.planned else {})


def rebuild(trials: list[FrozenTrial], screen_seed: int) -> dict[int, Individual]:
    """Individuals from trials, in trial order. Interrupted runs leave their individual pending."""
    pop: dict[int, Individual] = {}
    for t in sorted(trials, key=lambda t: t.number):
        a = t.user_attrs
        if "index" not in a:
            continue  # not one of evo's trials
        idx = int(a["index"])
        ind = pop.get(idx)
        if ind is None:
            ind = pop[idx] = Individual(
                index=idx, commit=a.get("commit", ""), tree=a.get("tree", ""), parents=tuple(a.get("parents", ())),
                parent_indices=tuple(a.get("parent_indices", ())), operator=a.get("operator", ""),
                description=a.get("description", ""), generation=int(a.get("generation", 0)), screen_seed=screen_seed,
                artifacts=a.get("artifacts", "") or "", params={k: v for k, v in t.params.items()}, planned=a.get("planned", ""),
            )
        outcome = a.get("outcome", "")
        if t.state == TrialState.RUNNING or outcome == INTERRUPTED:
            continue
        seed = int(a.get("seed", screen_seed))
        progress = [(step / 1000.0, v) for step, v in sorted(t.intermediate_values.items())]
        value = t.value if t.state == TrialState.COMPLETE else None
        if outcome == DUPLICATE_OUTCOME and value is not None and not math.isfinite(value):
            value = None
        ind.runs[seed] = Run(
            seed=seed, trial=t.number, value=value, outcome=outcome,
            progress=progress, metrics=dict(a.get("metrics", {})), seconds=float(a.get("run_seconds", 0.0)),
        )
        if seed == screen_seed or not ind.commit:
            ind.status = {COMPLETE: Status.EVALUATED, DUPLICATE_OUTCOME: Status.DUPLICATE, PRUNED_OUTCOME: Status.PRUNED}.get(outcome, Status.FAILED)
            ind.reason = a.get("reason", "")
            if outcome == DUPLICATE_OUTCOME:
                ind.reused_from = a.get("reused_from_index")
    return pop
