"""The judge: which runs a promotion needs, and what the sequential tests say.

Every individual is screened on the same seed, so a child's screening run is paired with its
parent's and with the incumbent's (the seed offset cancels where a change keeps it). A child
whose screening difference promises at least `gate * delta` is re-run on further seeds, each
shared with the incumbent, until the paired SPRT accepts, rejects, or runs out of pairs
(inconclusive, never promoted). The screening pair chose the candidate, so it is not evidence:
the test uses only the pairs on later seeds. The maths lives in evo.sprt; this module only
decides what to ask it and what to run next.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evo import sprt
from evo.config import SprtConfig
from evo.individual import COMPLETE, Direction, Individual, Run

# 1.25 seed sigmas: the wanted gain when the config does not name one (docs/statistics.md)
DELTA_SIGMAS = 1.25


@dataclass
class Monitor:
    """The futility tests bound to a run (travels to remote workers; keeps its trace).

    A run stops only when every test says stop: each test keeps its error rate under its own
    shape of gain (a constant shift; a gain that grows during training), so their intersection
    keeps both. The trace is the first test's llr."""

    tests: tuple[sprt.FutilityTest, ...]
    direction: Direction
    trace: list[tuple[float, float]] = field(default_factory=list)

    def __call__(self, fraction: float, value: float) -> bool:
        decisions = [t.update(fraction, self.direction.loss(value)) for t in self.tests]
        self.trace.append((round(fraction, 4), round(float(self.tests[0].llr), 4)))
        return all(d == "stop" for d in decisions)


@dataclass
class PrunerMonitor:
    """Optuna's own pruner as the early stop (`[sprt] pruner`), to compare evo's futility test with.

    Each checkpoint of the noise model is one Optuna step; a checkpoint's value is read from the
    stream as the futility test reads it (`sprt.values_at`). `median`: Optuna's MedianPruner over
    `references`, every earlier complete run's curve (what it would see in the archive); `wilcoxon`:
    Optuna's WilcoxonPruner (p < futility_alpha) against `references[0]`, the parent's screening
    curve on the same seed (the comparison the futility test makes). Losses, so lower is better."""

    kind: str
    checkpoints: tuple[float, ...]
    references: list[list[float]]
    alpha: float
    trace: list[tuple[float, float]] = field(default_factory=list)
    points: list[tuple[float, float]] = field(default_factory=list)
    steps: dict[int, float] = field(default_factory=dict)
    direction: Direction = Direction.MINIMIZE

    def __call__(self, fraction: float, value: float) -> bool:
        import optuna

        self.points.append((fraction, self.direction.loss(value)))
        vals = sprt.values_at(self.points, self.checkpoints)
        for k in range(len(self.checkpoints)):
            if k in self.steps or not math.isfinite(vals[k]) or self.checkpoints[k] > fraction + 1e-9:
                continue
            self.steps[k] = float(vals[k])
            trial = optuna.trial.FrozenTrial(
                number=len(self.references), state=optuna.trial.TrialState.RUNNING, value=None, datetime_start=None,
                datetime_complete=None, params={}, distributions={}, user_attrs={}, system_attrs={},
                intermediate_values=dict(self.steps), trial_id=len(self.references))
            stop = self._pruner().prune(self._study(), trial)
            self.trace.append((round(self.checkpoints[k], 4), float(stop)))
            if stop:
                return True
        return False

    def _pruner(self) -> Any:
        import warnings

        import optuna

        if self.kind == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=5)
        with warnings.catch_warnings():  # "experimental": its interface may change; ours pins the arguments
            warnings.simplefilter("ignore")
            return optuna.pruners.WilcoxonPruner(p_threshold=self.alpha)

    def _study(self) -> Any:
        """The references as an in-memory study of complete trials, built once where the run is."""
        cached = self.__dict__.get("_cached")
        if cached is None:
            import optuna

            cached = optuna.create_study(direction="minimize", storage=optuna.storages.InMemoryStorage())
            cached.add_trials([optuna.trial.create_trial(value=ref[-1], intermediate_values={k: v for k, v in enumerate(ref) if math.isfinite(v)})
                               for ref in self.references if math.isfinite(ref[-1])])
            self.__dict__["_cached"] = cached
        return cached

    def __getstate__(self) -> dict[str, Any]:  # the study is rebuilt where the run is (e.g. a Ray worker)
        return {k: v for k, v in self.__dict__.items() if k != "_cached"}


@dataclass(frozen=True)
class Verdict:
    """A promotion test's state after the pairs that are in, with the evidence kept on record."""

    decision: str  # accept | reject | continue | inconclusive
    n: int
    llr: float
    info: dict[str, Any]


class Judge:
    def __init__(self, cfg: SprtConfig, direction: Direction, seed: int) -> None:
        self.cfg = cfg
        self.direction = direction
        n = max(cfg.replicates, cfg.max_pairs + 1)
        self.seeds = [seed + i for i in range(n)]  # EVO_SEED values; seeds[0] screens everyone
        self.noise: sprt.NoiseModel | None = None
        self.noiseless = False  # the replicates were identical: single-run promotion is exact
        # per individual: (n, mean, sum of squares about the mean) of its unselected final losses
        self._spread: dict[int, tuple[int, float, float]] = {}
        self._ss, self._df = 0.0, 0
        self._pairs_sd: tuple[float, int] = (0.0, 0)  # pooled sd of the study's confirmation pairs, data alone
        self._complete: list[list[tuple[float, float]]] = []  # every complete run's curve, for `pruner = "median"`
        self._curves: list[list[float]] = []  # the same at the checkpoints, read as far as `_complete` goes

    @property
    def screen_seed(self) -> int:
        return self.seeds[0]

    @property
    def replicate_seeds(self) -> list[int]:
        return self.seeds[: self.cfg.replicates] if self.cfg.enabled else self.seeds[:1]

    @property
    def confirm_seeds(self) -> list[int]:
        """The seeds of a promotion test: never the screening seed that selected the candidate."""
        return self.seeds[1: self.cfg.max_pairs + 1]

    @property
    def rerun_seed(self) -> int:
        """The seed of a head's second run: past every replicate and confirmation seed, because that run
        helps choose the head (by its mean), and a run that selected a candidate is no evidence in its test."""
        return self.seeds[-1] + 1

    @property
    def single_run_rule(self) -> str:
        return "single run (statistics off)" if not self.cfg.enabled else "single run (deterministic target)"

    @property
    def delta(self) -> float:
        if self.cfg.delta > 0:
            return self.cfg.delta
        return DELTA_SIGMAS * self.sigma if self.noise is not None else float("nan")

    @property
    def sigma(self) -> float:
        """The sd of one run's final metric: pooled over every individual run on several seeds.

        An individual's runs on different seeds are replicates of its code, so each one with two or
        more measures the noise; the baseline's replicates alone (2 degrees of freedom) made two
        studies of identical code pick deltas up to several times apart. A candidate's screening
        run is left out: the gate selected it for being good, so it would inflate the spread."""
        if self._df >= 1:
            return math.sqrt(self._ss / self._df)
        return self.noise.sigma_final if self.noise is not None else float("nan")

    def observe(self, ind: Individual, seed: int) -> None:
        """A finished run of `ind` on `seed`: add it to the pooled spread (Welford, O(1))."""
        run = ind.runs.get(seed)
        if self.cfg.pruner == "median" and run is not None and run.outcome == COMPLETE and run.progress:
            self._complete.append([(f, self.direction.loss(v)) for f, v in run.progress])
        if run is None or run.outcome != COMPLETE or run.value is None or (seed == self.screen_seed and ind.index != 0):
            return
        x = self.direction.loss(run.value)
        n, mean, m2 = self._spread.get(ind.index, (0, 0.0, 0.0))
        n1 = n + 1
        mean1 = mean + (x - mean) / n1
        m21 = m2 + (x - mean) * (x - mean1)
        self._spread[ind.index] = (n1, mean1, m21)
        self._ss += m21 - m2
        self._df += 1 if n >= 1 else 0

    def fit(self, baseline: Individual) -> sprt.NoiseModel | None:
        """The noise model from the baseline's replicate runs, once they are all in.

        Progress curves give the futility test its checkpoints; a target that prints only its
        final metric still gets a model (its final sd), so promotion works on any target."""
        if not self.cfg.enabled:
            return None
        runs = [baseline.runs.get(s) for s in self.replicate_seeds]
        if any(r is None for r in runs):
            return None
        good = [r for r in runs if r is not None and r.outcome == COMPLETE and r.value is not None]
        if len(good) < 2:
            return None
        loss = self.direction.loss
        finals = [loss(r.value) for r in good]  # type: ignore[arg-type]
        if max(finals) - min(finals) <= 1e-12 * max(1.0, abs(finals[0])):
            # identical replicates: a deterministic target has no noise to test against, so the
            # single-run rule is exact (no futility test, promote when strictly better)
            self.noiseless = True
            return None
        curves = [[(f, loss(v)) for f, v in r.progress] for r in good]
        common = set.intersection(*({round(f, 4) for f, _ in c} for c in curves)) if all(curves) else set()
        try:
            self.noise = sprt.fit_noise_model(curves, finals, checkpoints=sorted(common) or None)
        except ValueError:  # no checkpoint every replicate printed: the finals alone
            self.noise = final_only_model(finals)
        return self.noise

    def monitor(self, parent: Individual) -> Monitor | PrunerMonitor | None:
        """A futility test against the parent's curve: its screening run (same seed), or the mean of
        its runs when it has several and that is the tighter reference; None when there is none."""
        if not (self.cfg.enabled and self.cfg.futility and self.noise is not None and self.noise.checkpoints):
            return None
        curves = {seed: c for seed, run in parent.runs.items() if (c := self._curve(run)) is not None}
        ref = curves.get(self.screen_seed)
        if self.cfg.pruner != "sprt":
            if ref is None:
                return None
            for curve in self._complete[len(self._curves):]:
                self._curves.append([float(x) for x in sprt.values_at(curve, self.noise.checkpoints)])
            refs = list(self._curves) if self.cfg.pruner == "median" else [[float(x) for x in ref]]
            return PrunerMonitor(self.cfg.pruner, tuple(self.noise.checkpoints), refs, self.cfg.futility_alpha, direction=self.direction)
        # delta=None: the test's gain is one between-run sd of the progress curve (its own units);
        # two shapes of gain, a constant shift and one that grows from nothing to delta at the end:
        # under correlated checkpoints neither test protects the other's shape (measured: 16-25% of
        # delta-better runs of the other shape stopped at a nominal 10%), so a run stops only when both say so;
        # seed_corr: how much of the seed's effect a change is assumed to keep (0 assumes none: safe)
        rho = max(self.cfg.seed_corr, self.seed_corr())
        runs: int | None = None
        if len(curves) >= 2 and not self.noise.paired:
            # The mean of the parent's runs is the tighter reference while the seed's share is
            # unmeasured: pairing one run on the same seed with seed_corr 0 doubles the variance
            # (2 cov), a mean of m runs adds 1/m (cov (1 + 1/m)); the run that shares the child's
            # seed is among them, which only lowers the true variance. The mean is also less lucky
            # than the one screening run that made the parent a parent: a child truly better than
            # the parent looked worse than that run and was stopped more often than alpha.
            last = len(self.noise.checkpoints) - 1
            mean_var = self.noise.diff_cov(paired=False, runs=len(curves))[last, last]
            pair_var = self.noise.diff_cov(paired=True, seed_corr=rho)[last, last] if ref is not None else math.inf
            if mean_var < pair_var:
                ref, runs = np.mean(list(curves.values()), axis=0), len(curves)
        if ref is None:
            return None
        cps = np.asarray(self.noise.checkpoints, dtype=float)
        tests = tuple(sprt.FutilityTest(self.noise, reference=[float(x) for x in ref], delta=None, alpha=self.cfg.futility_alpha,
                                        paired=runs is None, seed_corr=rho, shape=shape, reference_runs=runs)
                      for shape in (None, cps / cps[-1]))
        return Monitor(tests, self.direction)

    def _curve(self, run: Run | None) -> np.ndarray | None:
        """A complete run's loss curve at the noise model's checkpoints, read exactly as the noise
        model and the live test read curves (sprt.values_at); None if it has none there."""
        if run is None or run.outcome != COMPLETE or not run.progress or self.noise is None:
            return None
        curve = sprt.values_at([(f, self.direction.loss(v)) for f, v in run.progress], self.noise.checkpoints)
        return curve if np.all(np.isfinite(curve)) else None

    def note_tests(self, tests: list[tuple[Individual, Individual]]) -> None:
        """Every promotion test of the study so far (after each run and on resume, so a resumed study
        monitors its runs exactly as one never stopped): the pairs' pooled sd, for `seed_corr`."""
        self._pairs_sd = sprt.pooled_sd([list(self.pairs(c, i).values()) for c, i in tests])

    def seed_corr(self) -> float:
        """How much of a seed's effect two different codes share, measured, at its 90% lower bound (0 until measured).

        Two codes on one seed differ by var 2 sigma^2 (1 - rho), so the confirmation pairs' pooled
        variance against the pooled within-individual one gives rho; the pairs' variance is taken at
        its chi-square upper bound, so a study that has few pairs assumes little and stops little."""
        sd, df = self._pairs_sd
        if df < 3 or not math.isfinite(self.sigma) or self.sigma <= 0:
            return 0.0
        from scipy.special import chdtri  # here, not at the top: scipy.stats would cost every evo command a second

        upper = sd ** 2 * df / float(chdtri(df, 0.9))  # the chi-square's 10% quantile
        return min(0.9, max(0.0, 1.0 - upper / (2.0 * self.sigma ** 2)))

    def screen(self, cand: Individual, incumbent: Individual, parents: tuple[Individual, ...] = ()) -> str:
        """After the screening run: 'promote' (no statistics), 'test', or 'untested'.

        `parents`: a candidate that did not beat its parents on the screening seed is not tested
        with statistics on: it brings nothing they lack that shows, and each parent that looked
        as good against the incumbent was screened for a test itself."""
        if cand.value is None or incumbent.value is None or cand.index == incumbent.index:
            return "untested"
        better = self.direction.better(cand.value, incumbent.value)
        if not self.cfg.enabled or self.noiseless:
            return "promote" if better else "untested"
        if any(p.value is not None and p.index != incumbent.index and not self.direction.better(cand.value, p.value) for p in parents):
            return "untested"
        if self.noise is None:
            return "test" if better else "untested"
        loss = self.direction.loss
        c = loss(cand.value)
        paired = c - loss(incumbent.value)
        # also against the incumbent's mean over all its seeds: when a change does not keep the
        # seed's effect, an unlucky screening run of the incumbent would wave everyone through
        unpaired = c - statistics.fmean(loss(v) for v in incumbent.values().values())
        gate = lambda d: sprt.promising(d, self.delta, self.cfg.gate)  # noqa: E731
        return "test" if gate(paired) and gate(unpaired) else "untested"

    def pairs(self, cand: Individual, incumbent: Individual) -> dict[int, float]:
        """Per confirmation seed, candidate minus incumbent in losses (negative = a gain)."""
        c, i = cand.values(), incumbent.values()
        loss = self.direction.loss
        return {s: loss(c[s]) - loss(i[s]) for s in self.confirm_seeds if s in c and s in i}

    def paired_sigma(self, pairs: list[list[float]]) -> tuple[float, float]:
        """The sd of one confirmation pair and its degrees of freedom, pooled over the study.

        `pairs`: every promotion test's pairs (`pairs(c, i)`'s values); each around its own mean, they
        measure the same noise, so the study learns it as it goes; the replicates' sd of an unpaired
        difference (sqrt 2 sigma, an upper bound when changes keep part of the seed's effect) starts it off."""
        assert self.noise is not None
        sd, df = sprt.pooled_sd(pairs)
        prior_var, prior_df = 2.0 * self.noise.sigma_final ** 2, float(self.noise.df)
        return math.sqrt((prior_df * prior_var + df * sd ** 2) / (prior_df + df)), prior_df + df

    def decide(self, cand: Individual, incumbent: Individual, tests: list[tuple[Individual, Individual]] = ()) -> Verdict | None:  # type: ignore[assignment]
        """The paired SPRT on the confirmation pairs; None while there is no noise model.

        `tests`: every (candidate, incumbent) pair tested in the study, for the pooled sigma."""
        if not math.isfinite(self.delta) or self.noise is None:
            return None
        pairs = self.pairs(cand, incumbent)
        others = [v for v in (list(self.pairs(c, i).values()) for c, i in tests if c.index != cand.index) if v]
        sigma, df = self.paired_sigma(others) if self.noise.sigma_final > 0 else (0.0, 0.0)
        # sigma is estimated from this test's pairs (GSPRT) with the pooled sigma as a prior worth
        # its degrees of freedom: with a well-measured sigma one or two pairs can decide
        d = sprt.paired_sprt(list(pairs.values()), delta=self.delta, alpha=self.cfg.alpha, beta=self.cfg.beta,
                             max_pairs=self.cfg.max_pairs, sigma=None, sigma_prior=sigma or None, prior_df=df if sigma else 0.0)
        used = [-x for x in list(pairs.values())[: d.n]]  # gains on seeds that played no part in selecting it
        info = {"llr": d.llr, "pairs": d.n, "mean_diff": d.mean_diff, "sd": d.sd, "trace": list(d.trace),
                "bounds": list(d.bounds), "delta": self.delta, "seeds": list(pairs)[: d.n], "sigma_pooled": sigma, "sigma_df": df}
        if used and sigma:
            # the mean of the pairs that decided it overstates an accepted gain (the test stopped when
            # they looked good): the reported gain is its empirical-Bayes posterior among the study's tests
            study = [(-statistics.fmean(v), sigma ** 2 / len(v)) for v in others]
            raw = statistics.fmean(used)
            gain, sd = sprt.shrink(raw, sigma ** 2 / len(used), study + [(raw, sigma ** 2 / len(used))])
            info |= {"gain": gain, "gain_ci": [gain - 1.96 * sd, gain + 1.96 * sd], "gain_raw": raw,
                     "gain_rule": f"empirical-Bayes posterior over {len(study) + 1} promotion tests"}
        elif used:
            info |= {"gain": statistics.fmean(used), "gain_ci": None}
        return Verdict(d.decision, d.n, d.llr, info)

    def needed(self, cand: Individual, incumbent: Individual) -> list[tuple[Individual, int]]:
        """The next seed both must have run for the test to go on (one pair at a time)."""
        for s in self.confirm_seeds:
            missing = [ind for ind in (cand, incumbent) if s not in ind.runs]
            if missing:
                return [(ind, s) for ind in missing]
        return []


def final_only_model(finals: list[float]) -> sprt.NoiseModel:
    """A noise model with no checkpoints: the between-seed sd of the final metric, nothing to monitor."""
    return sprt.NoiseModel(checkpoints=(), mean=(), cov=(), seed_share=0.0, ar_phi=0.0,
                           sigma_final=float(np.std(finals, ddof=1)), n=len(finals))
