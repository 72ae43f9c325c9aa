"""Individuals: commits with their runs, rebuilt from the archive on every start.

The search keeps no state that the archive and the refs do not hold, so a resume after kill -9
sees exactly what a fresh start would: each individual's runs are its trials, and the next
proposal index follows the largest one recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from optuna.trial import FrozenTrial, TrialState

# statuses of an individual
PENDING, RUNNING, EVALUATED, FAILED, PRUNED, DUPLICATE = "pending", "running", "evaluated", "failed", "pruned", "duplicate"


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
    status: str = PENDING
    runs: dict[int, Run] = field(default_factory=dict)  # seed -> its finished run
    screen_seed: int = 0
    reason: str = ""
    decision: str = ""  # promotion test: testing | accept | reject | inconclusive | untested
    reused_from: int | None = None  # index of the individual whose result a duplicate reuses
    artifacts: str = ""  # folder of the proposal's prompt, response and diff
    usage: dict[str, int] = field(default_factory=dict)  # tokens the proposal cost (written on its screening trial)

    @property
    def value(self) -> float | None:
        """The screening value: the metric on the seed every individual runs first."""
        run = self.runs.get(self.screen_seed)
        return run.value if run and run.outcome == "complete" else None

    @property
    def finished(self) -> bool:
        return self.status in (EVALUATED, FAILED, PRUNED, DUPLICATE)

    def values(self) -> dict[int, float]:
        return {s: r.value for s, r in self.runs.items() if r.outcome == "complete" and r.value is not None}


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
                artifacts=a.get("artifacts", "") or "",
            )
        outcome = a.get("outcome", "")
        if t.state == TrialState.RUNNING or outcome == "interrupted":
            continue
        seed = int(a.get("seed", screen_seed))
        progress = [(step / 1000.0, v) for step, v in sorted(t.intermediate_values.items())]
        ind.runs[seed] = Run(
            seed=seed, trial=t.number, value=t.value if t.state == TrialState.COMPLETE else None, outcome=outcome,
            progress=progress, metrics=dict(a.get("metrics", {})), seconds=float(a.get("run_seconds", 0.0)),
        )
        if seed == screen_seed or not ind.commit:
            ind.status = {"complete": EVALUATED, "duplicate": DUPLICATE, "pruned": PRUNED}.get(outcome, FAILED)
            ind.reason = a.get("reason", "")
            if outcome == "duplicate":
                ind.reused_from = a.get("reused_from_index")
        if a.get("decision"):
            ind.decision = a["decision"]
    return pop
