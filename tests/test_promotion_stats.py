"""Error rates of the shipped promotion rule, through the engine's own judge.

The judge (`evo.judge.Judge`: noise model from the baseline's replicates, the confirmation seeds,
the paired SPRT with the study-wide pooled sigma) is driven exactly as `evo.mainline.Mainline`
drives it, on simulated runs: each test asks `needed()` for the next seeds, gets runs on them,
and asks `decide()` again. Sizes are chosen to detect a violation of 1.5x the nominal alpha with
at least 90% power (about 800 tests of no-gain candidates at alpha = 0.05).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest

from evo.config import SprtConfig
from evo.individual import Direction, Individual, Run
from evo.judge import Judge


def world_run(rng: random.Random, true: float, seed: int, code: int, keep: float, run_sd: float, rep: int) -> float:
    """A final loss: the truth, the seed's offset (kept with correlation `keep` across codes), run noise."""
    u = random.Random(f"u:{rep}:{seed}").gauss(0, 1)
    v = random.Random(f"v:{rep}:{seed}:{code}").gauss(0, 1)
    return true + keep * u + math.sqrt(1 - keep ** 2) * v + run_sd * rng.gauss(0, 1)


def add(ind: Individual, seed: int, value: float) -> None:
    ind.runs[seed] = Run(seed=seed, trial=len(ind.runs), value=value, outcome="complete")


def run_tests(gain: float | Callable[[random.Random], float], studies: int, per_study: int, keep: float, run_sd: float, gate: bool,
              verdicts: list[tuple[float, dict]] | None = None) -> tuple[int, int, int]:
    """(accepted, decided tests, screened) for candidates of true gain `gain` (sigma units; a float, or
    drawn per candidate when callable); `verdicts` collects (true gain, evidence) of every test."""
    accepted = tested = screened = 0
    draw = gain if callable(gain) else (lambda rng: gain)
    for rep in range(studies):
        rng = random.Random(rep)
        judge = Judge(SprtConfig(), Direction.MINIMIZE, seed=0)
        base = Individual(index=0, commit="b", tree="b")
        for s in judge.replicate_seeds:
            add(base, s, world_run(rng, 10.0, s, 0, keep, run_sd, rep))
            judge.observe(base, s)  # as Study.record does after every run
        assert judge.fit(base) is not None
        tests: list[tuple[Individual, Individual]] = []
        for k in range(1, per_study + 1):
            cand = Individual(index=k, commit=f"c{k}", tree=f"c{k}", parent_indices=(0,))
            gain = draw(rng)
            add(cand, 0, world_run(rng, 10.0 - gain, 0, k, keep, run_sd, rep))
            judge.observe(cand, 0)
            screened += 1
            if gate and judge.screen(cand, base) != "test":
                continue
            while True:
                for who, seed in judge.needed(cand, base):
                    add(who, seed, world_run(rng, 10.0 - (gain if who is cand else 0.0), seed, who.index, keep, run_sd, rep))
                    judge.observe(who, seed)
                verdict = judge.decide(cand, base, tests)
                assert verdict is not None
                if verdict.decision != "continue":
                    break
                assert judge.needed(cand, base), "a test that can go on must ask for a run"
            tests.append((cand, base))
            if verdicts is not None:
                verdicts.append((gain, verdict.info | {"decision": verdict.decision}))
            tested += 1
            accepted += verdict.decision == "accept"
            assert judge.screen_seed not in verdict.info["seeds"]  # the pair that selected it is never evidence
    return accepted, tested, screened


def test_no_gain_candidates_are_accepted_at_most_alpha_of_the_time() -> None:
    alpha = SprtConfig().alpha
    for keep in (0.0, 0.9):  # changes that keep none or most of a seed's effect
        acc, n, _ = run_tests(gain=0.0, studies=40, per_study=20, keep=keep, run_sd=0.2, gate=False)
        assert n == 800
        # one-sided binomial: reject "rate <= alpha" only when the count is beyond its 99.9% quantile,
        # which a true rate of 1.5 alpha exceeds with power >= 0.9 at n = 800
        limit = n * alpha + 3.09 * math.sqrt(n * alpha * (1 - alpha))
        assert acc <= limit, (keep, acc, n)


def test_a_clear_gain_is_accepted_and_the_gate_spends_little_on_no_gain() -> None:
    acc, n, _ = run_tests(gain=2.5, studies=10, per_study=10, keep=0.5, run_sd=0.2, gate=False)
    assert acc / n >= 0.8, (acc, n)
    _, tested, screened = run_tests(gain=0.0, studies=20, per_study=20, keep=0.5, run_sd=0.2, gate=True)
    assert tested / screened <= 0.15, (tested, screened)  # most no-gain candidates cost one run


def test_delta_comes_from_every_unselected_replicate_in_the_study() -> None:
    """sigma pools the spread of every individual run on several seeds; a candidate's screening run
    (selected by the gate) is left out, the baseline's is not."""
    judge = Judge(SprtConfig(replicates=3), Direction.MAXIMIZE, seed=10)
    base, cand = Individual(index=0, commit="b", tree="b"), Individual(index=1, commit="c", tree="c")
    values = [(base, {10: 1.0, 11: 1.4, 12: 0.9}), (cand, {10: 9.0, 11: 2.0, 13: 2.6, 14: 1.7})]
    for ind, runs in values:
        for seed, v in runs.items():
            add(ind, seed, v)
            judge.observe(ind, seed)
    assert judge.fit(base) is not None
    kept = [[1.0, 1.4, 0.9], [2.0, 2.6, 1.7]]  # the candidate's screening run (seed 10, 9.0) is not evidence of noise
    ss = sum(sum((x - sum(k) / len(k)) ** 2 for x in k) for k in kept)
    assert judge.sigma == pytest.approx(math.sqrt(ss / 4))
    assert judge.delta == pytest.approx(1.25 * judge.sigma)
    assert judge.noise is not None and judge.sigma != pytest.approx(judge.noise.sigma_final)  # not the replicates' alone
    fresh = Judge(SprtConfig(replicates=3), Direction.MAXIMIZE, seed=10)  # nothing observed: the replicates' sd
    assert fresh.fit(base) is not None and fresh.sigma == pytest.approx(fresh.noise.sigma_final)



def test_the_reported_gain_of_accepted_candidates_is_not_inflated_by_the_tests_selection() -> None:
    """A test that accepted after few pairs is one whose pairs came out well: their raw mean overstates
    the gain; the reported (empirical-Bayes) gain does not, on average over the accepted tests."""
    verdicts: list[tuple[float, dict]] = []
    run_tests(gain=lambda rng: rng.choice((0.0, 0.5, 1.0, 2.0, 3.0)), studies=20, per_study=30, keep=0.5, run_sd=0.2,
              gate=False, verdicts=verdicts)
    acc = [(g, info) for g, info in verdicts if info["decision"] == "accept"]
    assert len(acc) > 50
    true = sum(g for g, _ in acc)
    raw = sum(info["gain_raw"] for _, info in acc)
    reported = sum(info["gain"] for _, info in acc)
    assert raw > 1.1 * true, (raw, true)  # the selection effect this corrects is there
    assert abs(reported / true - 1.0) < 0.06, (reported, true)
    assert all(info["gain_ci"][0] <= info["gain"] <= info["gain_ci"][1] for _, info in acc)


def test_a_candidate_no_better_than_its_parent_is_not_tested() -> None:
    judge = Judge(SprtConfig(replicates=6), Direction.MINIMIZE, seed=0)
    base = Individual(index=0, commit="b", tree="b")
    for s, v in zip(judge.replicate_seeds, (10.0, 10.5, 9.5, 10.2, 9.8, 10.1)):
        add(base, s, v)
        judge.observe(base, s)
    assert judge.fit(base) is not None
    parent = Individual(index=1, commit="p", tree="p", parent_indices=(0,))
    add(parent, 0, 5.0)
    child = Individual(index=2, commit="c", tree="c", parent_indices=(1,))
    add(child, 0, 6.0)  # far better than the incumbent, worse than its parent
    assert judge.screen(child, base) == "test"
    assert judge.screen(child, base, (parent,)) == "untested"
    assert judge.screen(parent, base, (base,)) == "test"  # the incumbent as parent: the usual gate
    add(child, 0, 4.0)
    assert judge.screen(child, base, (parent,)) == "test"


def test_the_futility_test_assumes_the_seed_correlation_the_study_has_measured() -> None:
    """Pairs of two codes on one seed that vary far less than one code across seeds: the seed's effect
    is shared, so the futility test may pair on it; before any pairs (or with unshared seeds) it assumes none."""
    for keep, expect_low, expect_high in ((0.95, 0.5, 0.9), (0.0, 0.0, 0.15)):
        rng = random.Random(1)
        judge = Judge(SprtConfig(), Direction.MINIMIZE, seed=0)
        base = Individual(index=0, commit="b", tree="b")
        for s in judge.replicate_seeds:
            add(base, s, world_run(rng, 10.0, s, 0, keep, 0.0, 0))
            judge.observe(base, s)
        assert judge.fit(base) is not None and judge.seed_corr() == 0.0
        tests = []
        for k in range(1, 9):
            cand = Individual(index=k, commit=f"c{k}", tree=f"c{k}", parent_indices=(0,))
            for s in judge.confirm_seeds[:4]:
                add(cand, s, world_run(rng, 9.0, s, k, keep, 0.0, 0))
                judge.observe(cand, s)
            tests.append((cand, base))
        judge.note_tests(tests)
        assert expect_low <= judge.seed_corr() <= expect_high, (keep, judge.seed_corr())


def test_the_futility_test_reads_a_parent_with_several_runs_by_their_mean() -> None:
    """Before the seed's share is measured, pairing a child with its parent's one run on the same seed
    doubles the variance; a parent with several runs (the baseline, a tested mainline) is read by their
    mean curve instead. A child truly better by the test's delta is then still stopped at most about
    alpha of the time (constant and growing gains), and a clearly worse one is stopped early."""
    import numpy as np

    from evo.judge import Monitor

    rng = random.Random(5)
    judge = Judge(SprtConfig(), Direction.MINIMIZE, seed=0)

    def curve(end: float, offset: float, gain: float = 0.0, grows: bool = False) -> list[tuple[float, float]]:
        return [(f / 10, end + offset + 3.0 * (1 - f / 10) - gain * ((f / 10) if grows else 1.0) + 0.05 * rng.gauss(0, 1))
                for f in range(1, 11)]

    base = Individual(index=0, commit="b", tree="b")
    for k, s in enumerate(judge.replicate_seeds):
        points = curve(10.0, 0.3 * rng.gauss(0, 1))
        base.runs[s] = Run(seed=s, trial=k, value=points[-1][1], outcome="complete", progress=points)
        judge.observe(base, s)
    noise = judge.fit(base)
    assert noise is not None and len(noise.checkpoints) >= 5 and judge.seed_corr() == 0.0
    mon = judge.monitor(base)
    assert isinstance(mon, Monitor) and not mon.tests[0].paired
    means = np.mean([[v for _, v in r.progress] for r in base.runs.values()], axis=0)
    assert np.allclose(mon.tests[0].reference, [means[round(c * 10) - 1] for c in noise.checkpoints], atol=1e-6)
    single = Individual(index=1, commit="p", tree="p", runs={0: base.runs[0]})
    one = judge.monitor(single)
    assert isinstance(one, Monitor) and one.tests[0].paired  # one run: paired on its seed, as before

    delta = mon.tests[0].delta
    for grows in (False, True):
        stopped = 0
        for _ in range(300):
            m = judge.monitor(base)
            assert m is not None
            stopped += any(m(f, v) for f, v in curve(10.0, 0.3 * rng.gauss(0, 1), gain=delta, grows=grows))
        assert stopped / 300 <= judge.cfg.futility_alpha + 0.055, (grows, stopped)  # alpha + 3 standard errors
    worse = judge.monitor(base)
    assert worse is not None
    assert next(f for f, v in curve(10.0, 0.0, gain=-4 * delta) if worse(f, v)) < 1.0


@pytest.mark.parametrize("pruner", ["median", "wilcoxon"])
def test_optunas_pruners_stop_a_clearly_worse_run_and_let_a_better_one_finish(pruner: str) -> None:
    """`[sprt] pruner`: Optuna's own MedianPruner / WilcoxonPruner read the run at the noise model's
    checkpoints (median: against every earlier complete run; wilcoxon: against the parent's curve)."""
    import pickle

    from evo.judge import PrunerMonitor

    rng = random.Random(2)
    judge = Judge(SprtConfig(pruner=pruner), Direction.MINIMIZE, seed=0)
    base = Individual(index=0, commit="b", tree="b")
    curve = lambda end, k: [(f / 10, end + 3.0 * (1 - f / 10) + 0.05 * rng.gauss(0, 1)) for f in range(1, 11)]  # noqa: E731
    for k, s in enumerate(judge.replicate_seeds):
        end = 10.0 + 0.2 * rng.gauss(0, 1)
        base.runs[s] = Run(seed=s, trial=k, value=end, outcome="complete", progress=curve(end, k))
        judge.observe(base, s)
    assert judge.fit(base) is not None and judge.noise is not None and len(judge.noise.checkpoints) >= 5

    def stopped_at(end: float) -> float | None:
        mon = judge.monitor(base)
        assert isinstance(mon, PrunerMonitor) and mon.kind == pruner
        mon = pickle.loads(pickle.dumps(mon))  # it travels to remote workers
        for f, v in curve(end, 99):
            if mon(f, v):
                return f
        return None

    assert stopped_at(8.0) is None  # better all the way: never stopped
    worse = stopped_at(13.0)
    assert worse is not None and worse < 1.0  # clearly worse: stopped before the end
