"""The judge: which runs a promotion needs, and what the sequential tests say.

Every individual is screened on the same seed, so a child's screening run is paired with its
parent's and with the incumbent's (the seed offset cancels). A child whose screening difference
promises at least `gate * delta` is re-run on further seeds, each shared with the incumbent,
until the paired SPRT accepts, rejects, or runs out of pairs (inconclusive, never promoted).
The maths lives in evo.sprt; this module only decides what to ask it and what to run next.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from evo import sprt
from evo.config import SprtConfig
from evo.population import Individual


def lower_better(value: float, direction: str) -> float:
    return value if direction == "minimize" else -value


@dataclass
class Monitor:
    """The futility test bound to a run (travels to remote workers; keeps its trace)."""

    test: sprt.FutilityTest
    direction: str
    trace: list[tuple[float, float]] = field(default_factory=list)

    def __call__(self, fraction: float, value: float) -> bool:
        decision = self.test.update(fraction, lower_better(value, self.direction))
        self.trace.append((round(fraction, 4), round(float(self.test.llr), 4)))
        return decision == "stop"


class Judge:
    def __init__(self, cfg: SprtConfig, direction: str, seed: int) -> None:
        self.cfg = cfg
        self.direction = direction
        n = max(cfg.replicates, cfg.max_pairs)
        self.seeds = [seed + i for i in range(n)]  # EVO_SEED values; seeds[0] screens everyone
        self.noise: sprt.NoiseModel | None = None
        self.noiseless = False  # the replicates were identical: single-run promotion is exact

    @property
    def screen_seed(self) -> int:
        return self.seeds[0]

    @property
    def replicate_seeds(self) -> list[int]:
        return self.seeds[: self.cfg.replicates] if self.cfg.enabled else self.seeds[:1]

    @property
    def delta(self) -> float:
        if self.cfg.delta > 0:
            return self.cfg.delta
        # 1.25 sigma: the simulation's best true gain per compute (docs/statistics.md)
        return 1.25 * self.noise.sigma_final if self.noise is not None else float("nan")

    def fit(self, baseline: Individual) -> sprt.NoiseModel | None:
        """The noise model from the baseline's replicate runs, once they are all in."""
        if not self.cfg.enabled:
            return None
        runs = [baseline.runs.get(s) for s in self.replicate_seeds]
        if any(r is None for r in runs):
            return None
        good = [r for r in runs if r is not None and r.outcome == "complete" and r.value is not None]
        if len(good) < 2:
            return None
        curves = [[(f, lower_better(v, self.direction)) for f, v in r.progress] for r in good]
        finals = [lower_better(r.value, self.direction) for r in good]  # type: ignore[arg-type]
        # the checkpoints are the fractions every replicate printed (the target's own schedule)
        common = set.intersection(*({round(f, 4) for f, _ in c} for c in curves)) if all(curves) else set()
        if max(finals) - min(finals) <= 1e-12 * max(1.0, abs(finals[0])):
            # identical replicates: a deterministic target has no noise to test against, so the
            # single-run rule is exact (no futility test, promote when strictly better)
            self.noiseless = True
            return None
        try:
            self.noise = sprt.fit_noise_model(curves, finals, checkpoints=sorted(common) or None)
        except ValueError:
            self.noise = None
        return self.noise

    def monitor(self, parent: Individual) -> Monitor | None:
        """A futility test against the parent's screening curve (same seed), when one is possible."""
        if not (self.cfg.enabled and self.cfg.futility and self.noise is not None and self.noise.checkpoints):
            return None
        run = parent.runs.get(self.screen_seed)
        if run is None or run.outcome != "complete" or not run.progress:
            return None
        reference = _at(run.progress, self.noise.checkpoints, self.direction)
        if reference is None:
            return None
        # delta=None: the test's gain is one between-run sd of the progress curve (its own units);
        # seed_corr: how much of the seed's effect a change is assumed to keep (0 assumes none: safe)
        test = sprt.FutilityTest(self.noise, reference=reference, delta=None, alpha=self.cfg.futility_alpha,
                                 paired=True, seed_corr=self.cfg.seed_corr)
        return Monitor(test, self.direction)

    def better(self, a: float, b: float) -> bool:
        return lower_better(a, self.direction) < lower_better(b, self.direction)

    def screen(self, cand: Individual, incumbent: Individual) -> str:
        """After the screening run: 'promote' (no SPRT), 'test', or 'untested'."""
        if cand.value is None or incumbent.value is None or cand.index == incumbent.index:
            return "untested"
        if not self.cfg.enabled or self.noiseless:
            return "promote" if self.better(cand.value, incumbent.value) else "untested"
        if self.noise is None:
            return "untested" if not self.better(cand.value, incumbent.value) else "test"
        c = lower_better(cand.value, self.direction)
        paired = c - lower_better(incumbent.value, self.direction)
        # also against the incumbent's mean over all its seeds: when a change does not keep the
        # seed's effect, an unlucky screening run of the incumbent would wave everyone through
        vals = [lower_better(v, self.direction) for v in incumbent.values().values()]
        unpaired = c - sum(vals) / len(vals)
        gate = lambda d: sprt.promising(d, self.delta, self.cfg.gate)  # noqa: E731
        return "test" if gate(paired) and gate(unpaired) else "untested"

    def pairs(self, cand: Individual, incumbent: Individual) -> list[float]:
        c, i = cand.values(), incumbent.values()
        return [
            lower_better(c[s], self.direction) - lower_better(i[s], self.direction)
            for s in self.seeds[: self.cfg.max_pairs] if s in c and s in i
        ]

    def decide(self, cand: Individual, incumbent: Individual) -> sprt.PairedDecision:
        # sigma is estimated from the pairs themselves (GSPRT); the replicates' sigma only floors it
        prior = self.noise.sigma_final if self.noise is not None and self.noise.sigma_final > 0 else None
        return sprt.paired_sprt(
            self.pairs(cand, incumbent), delta=self.delta, alpha=self.cfg.alpha, beta=self.cfg.beta,
            max_pairs=self.cfg.max_pairs, sigma=None, sigma_prior=prior,
        )

    def needed(self, cand: Individual, incumbent: Individual) -> list[tuple[Individual, int]]:
        """The next seed both must have run for the test to go on (one pair at a time)."""
        for s in self.seeds[: self.cfg.max_pairs]:
            missing = [ind for ind in (cand, incumbent) if s not in ind.runs]
            if missing:
                return [(ind, s) for ind in missing]
            if s not in cand.values() or s not in incumbent.values():
                continue  # a failed run on this seed: skip to the next seed
        return []


def _at(progress: list[tuple[float, float]], checkpoints: tuple[float, ...], direction: str) -> list[float] | None:
    """The curve's values at the noise model's checkpoints (nearest point within 0.02)."""
    out = []
    for c in checkpoints:
        best = min(progress, key=lambda p: abs(p[0] - c))
        if abs(best[0] - c) > 0.02:
            return None
        out.append(lower_better(best[1], direction))
    return out
