"""A model-based proposer over the constants: Optuna's TPE fitted on the study's own evaluated candidates.

Every candidate the study has evaluated is a point (its module-level constants) with a value (its
mean over the seeds it ran); candidates still running are told to TPE as running trials (the
constant liar), so several workers do not all get the same proposal. TPE (multivariate, seeded
from the plan's rng) proposes a full configuration in ranges around the baseline's values, the
ranges `evo bench`'s TPE uses (floats [v/10, 10 v] log, fractions in (0, 1) [v/10, 0.999], ints
[max(1, v // 8), 8 v] log, bools both); the child is its parent with every constant TPE moved
rewritten in place (three significant digits, as the constants operator writes them). Constants
the constants operator may not touch (excluded, marked inert) are left alone, as are zeros and
negative numbers (no log range around them).
"""

from __future__ import annotations

import random
import warnings
from typing import Any

from operators.base import OperatorError, Parent, Proposal
from operators.constants import ConstantsMutation, Constant, _format_float


def space(constants: list[Constant]) -> dict[str, Any]:
    """name -> an Optuna distribution around the constant's (baseline) value."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for c in constants:
        v = c.value
        if isinstance(v, bool):
            out[c.name] = CategoricalDistribution([False, True])
        elif isinstance(v, int):
            if v > 0:
                out[c.name] = IntDistribution(max(1, v // 8), max(2, 8 * v), log=True)
        elif 0.0 < v < 1.0:
            out[c.name] = FloatDistribution(v / 10, 0.999, log=True)
        elif v > 0.0:
            out[c.name] = FloatDistribution(v / 10, v * 10, log=True)
    return out


def _clamp(value: Any, dist: Any) -> Any:
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return bool(value)
    lo, hi = dist.low, dist.high
    x = min(hi, max(lo, value))
    return int(round(x)) if isinstance(dist, IntDistribution) else float(x)


class TPEProposer:
    """Proposes children from a TPE model of the study's evaluated candidates (see the module doc)."""

    name = "tpe"

    def __init__(self, constants: ConstantsMutation, n_startup: int = 8) -> None:
        self.constants = constants  # which constants may change (exclude, inert markers) and how literals are written
        self.n_startup = n_startup

    def propose(self, parent: Parent, base_files: dict[str, str], observed: list[tuple[dict[str, Any], float]],
                running: list[dict[str, Any]], direction: str, rng: random.Random) -> Proposal:
        import optuna
        from optuna.trial import TrialState, create_trial

        dists = space(self.constants.candidates(base_files))
        mine = {c.name: c for c in self.constants.candidates(parent.files)}
        dists = {k: d for k, d in dists.items() if k in mine}
        if not dists:
            raise OperatorError("tpe: no constant with a range to search (bools, positive ints or positive floats)")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # multivariate / constant_liar are marked experimental
            sampler = optuna.samplers.TPESampler(seed=rng.randrange(2**31), multivariate=True, constant_liar=True,
                                                 n_startup_trials=self.n_startup)
            study = optuna.create_study(direction=direction, sampler=sampler)
            for consts, value in observed:
                params = {k: _clamp(consts[k], d) for k, d in dists.items() if k in consts}
                if len(params) == len(dists):
                    study.add_trial(create_trial(params=params, distributions=dists, value=value))
            for consts in running:
                params = {k: _clamp(consts[k], d) for k, d in dists.items() if k in consts}
                if len(params) == len(dists):
                    study.add_trial(create_trial(params=params, distributions=dists, state=TrialState.RUNNING))
            trial = study.ask(dists)
        files = {p: parent.files[p].splitlines(keepends=True) for p in parent.files}
        changes = []
        for name, new in sorted(trial.params.items(), key=lambda kv: (mine[kv[0]].path, mine[kv[0]].line, -mine[kv[0]].start)):
            c = mine[name]
            text = ("True" if new else "False") if isinstance(c.value, bool) else str(int(new)) if isinstance(c.value, int) \
                else _format_float(float(new), c.text)
            if text == c.text or (not isinstance(c.value, bool) and float(text) == float(c.value)):
                continue
            line = files[c.path][c.line - 1]
            files[c.path][c.line - 1] = line[: c.start] + text + line[c.end:]
            changes.append(f"{c.name} {c.text} -> {text}")
        if not changes:
            raise OperatorError("tpe: the model proposed the parent's own values")
        paths = {mine[n].path for n in trial.params}
        desc = "tpe: " + "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6 else "")
        return Proposal(files={p: "".join(files[p]) for p in paths}, description=desc)
