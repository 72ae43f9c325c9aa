"""Individuals and their runs, and the one schema by which they are written to and read from trials.

An individual is a commit; each of its runs is one Optuna trial. `candidate_attrs` writes the
genealogy a trial carries, `rebuild` reads it back: the engine (on every start) and inspection
(evo.inspect) read trials through the same names, so the schema has one home. The search keeps no
state that the archive and the refs do not hold, so a resume after kill -9 sees exactly what a
fresh start would.
"""

from __future__ import annotations

import bisect
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
    RERUN = "rerun"  # a line's head run once more (its children kept losing to its one run), on a seed no test uses


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
    """Individuals from trials, in trial order. Interrupted runs leave their individual pending.

    Runs once per start over every trial (100,000 in a long study): the loop does nothing per trial
    that it can do once."""
    pop: dict[int, Individual] = {}
    status_of = {COMPLETE: Status.EVALUATED, DUPLICATE_OUTCOME: Status.DUPLICATE, PRUNED_OUTCOME: Status.PRUNED}
    running, complete = TrialState.RUNNING, TrialState.COMPLETE
    ordered = all(a.number < b.number for a, b in zip(trials, trials[1:]))  # read_trials' order: no sort
    for t in trials if ordered else sorted(trials, key=lambda t: t.number):
        a = t.user_attrs
        idx = a.get("index")
        if idx is None:
            continue  # not one of evo's trials
        idx = int(idx)
        ind = pop.get(idx)
        if ind is None:
            ind = pop[idx] = Individual(
                index=idx, commit=a.get("commit", ""), tree=a.get("tree", ""), parents=tuple(a.get("parents", ())),
                parent_indices=tuple(a.get("parent_indices", ())), operator=a.get("operator", ""),
                description=a.get("description", ""), generation=int(a.get("generation", 0)), screen_seed=screen_seed,
                artifacts=a.get("artifacts", "") or "", params=dict(t.params) if t.params else {}, planned=a.get("planned", ""),
            )
        outcome = a.get("outcome", "")
        if t.state == running or outcome == INTERRUPTED:
            continue
        seed = int(a.get("seed", screen_seed))
        iv = t.intermediate_values
        progress = [(step / 1000.0, v) for step, v in sorted(iv.items())] if iv else []
        value = t.value if t.state == complete else None
        if outcome == DUPLICATE_OUTCOME and value is not None and not math.isfinite(value):
            value = None
        metrics = a.get("metrics")
        ind.runs[seed] = Run(seed, t.number, value, outcome, progress, dict(metrics) if metrics else {}, float(a.get("run_seconds", 0.0)))
        if seed == screen_seed or not ind.commit:
            ind.status = status_of.get(outcome, Status.FAILED)
            ind.reason = a.get("reason", "")
            if outcome == DUPLICATE_OUTCOME:
                ind.reused_from = a.get("reused_from_index")
    return pop


class PopIndex:
    """What the per-candidate path asks of the population, kept up to date one individual at a time,
    so that no question scans it: at 100,000 individuals one scan of the population costs more than
    the rest of a candidate's engine time.

    The coordinator calls `note(ind)` after anything that may change an individual's status,
    decision, commit or screening value (a new child, a run started or recorded, a decision);
    `note` is idempotent and O(log n)."""

    def __init__(self, direction: Direction) -> None:
        self.direction = Direction(direction)
        self.pending: set[int] = set()  # PENDING with a commit: to run
        self.testing: set[int] = set()  # decision TESTING: a promotion test under way
        self.trees: dict[str, int] = {}  # tree -> the first individual with it that is no duplicate (has a run of its own)
        self.ranked: list[tuple[float, int]] = []  # (sort key of the screening value, index) of evaluated individuals, best first
        self.finished: set[int] = set()
        self.top = 0  # the largest index seen
        self._ranked_as: dict[int, tuple[float, int]] = {}

    def build(self, pop: dict[int, Individual]) -> None:
        """Index a whole population (once per start): what `note` does one individual at a time, done a
        question at a time over all of them (one comprehension each: a third of the time of a `note` each
        at 100,000 individuals) and one sort of the ranks."""
        self.__init__(self.direction)  # type: ignore[misc]
        inds = [pop[i] for i in sorted(pop)]
        pending, evaluated, testing = Status.PENDING, Status.EVALUATED, Decision.TESTING
        self.pending = {i.index for i in inds if i.status == pending and i.commit}
        self.testing = {i.index for i in inds if i.decision == testing}
        self.finished = {i.index for i in inds if i.status in FINISHED}
        for i in inds:  # ascending: the first individual with a tree keeps it
            if i.commit and i.reused_from is None and i.tree:
                self.trees.setdefault(i.tree, i.index)
        key = self.direction.sort_key
        self._ranked_as = {i.index: (key(v), i.index) for i in inds if i.status == evaluated and (v := i.value) is not None}
        self.ranked = sorted(self._ranked_as.values())
        self.top = inds[-1].index if inds else 0

    def note(self, ind: Individual) -> None:
        key = self._place(ind)
        i = ind.index
        old = self._ranked_as.get(i)
        if old == key:
            return
        if old is not None:
            del self.ranked[bisect.bisect_left(self.ranked, old)]
            del self._ranked_as[i]
        if key is not None:
            bisect.insort(self.ranked, key)
            self._ranked_as[i] = key

    def _place(self, ind: Individual) -> tuple[float, int] | None:
        """Put `ind` in or out of the sets; its rank key if it is evaluated."""
        i = ind.index
        if i > self.top:
            self.top = i
        _member(self.pending, i, ind.status == Status.PENDING and bool(ind.commit))
        _member(self.testing, i, ind.decision == Decision.TESTING)
        _member(self.finished, i, ind.status in FINISHED)
        if ind.commit and ind.reused_from is None and ind.tree:
            first = self.trees.setdefault(ind.tree, i)
            if i < first:
                self.trees[ind.tree] = i
        value = ind.value
        return (self.direction.sort_key(value), i) if ind.status == Status.EVALUATED and value is not None else None

    def best(self, pop: dict[int, Individual], k: int, skip: int | None = None) -> list[Individual]:
        """The k best evaluated individuals by screening value (ties to the earlier), `skip` left out."""
        out = []
        for _, i in self.ranked:
            if i != skip:
                out.append(pop[i])
                if len(out) == k:
                    break
        return out

    def recent(self, pop: dict[int, Individual], k: int) -> list[Individual]:
        """The k finished individuals with the largest indices, newest first (the baseline excluded)."""
        out = []
        i = self.top
        while i > 0 and len(out) < k:
            if i in self.finished and i in pop:
                out.append(pop[i])
            i -= 1
        return out


def _member(members: set[int], i: int, inside: bool) -> None:
    if inside:
        members.add(i)
    else:
        members.discard(i)
