"""Simulation benchmark of evo's statistics against the rules it competes with.

    python -m evo.bench.sprt_sim [--candidates 5000] [--seed 0] [--json PATH] [--quick]

Synthetic candidates with KNOWN true effects, drawn like an LLM's proposals (default: 60%
neutral, exactly 0; 25% worse by 0.5-3 sigma; 10% better by 0.5-2 sigma; 5% crash), run as
progress curves from the replicate noise model (seed offset + AR(1) residual, variance
larger early; sigma = 0.054 bpb at the end as measured on the CPU GPT). Policies:

  evo          futility pruning on the first (seed-paired) run, then a paired GSPRT only for
               candidates whose first paired run showed >= gate * delta of gain
  evo-nogate   the same, testing every candidate that survives its first run
  autoresearch one run with the fixed seed, keep if strictly better than the parent's value
  median       optuna MedianPruner on the checkpoints, then keep-if-better
  wilcoxon     optuna WilcoxonPruner on the checkpoints, then keep-if-better

Single-run policies use one fixed seed for every run (as autoresearch's train.py does), so
their comparison is seed-paired too. Part 1 judges each policy on single candidates against
a fixed parent; part 2 runs whole greedy ratchets under one compute budget. The figures are
what the statistics are judged by: true gain of the mainline at equal compute, no-gain
promotions, and how honest each policy is about its own gain.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from scipy.signal import lfilter

from evo.sprt import (
    DEFAULT_CHECKPOINTS,
    FutilityTest,
    NoiseModel,
    fit_noise_model,
    paired_sprt,
    pooled_sd,
    promising,
)

POLICIES = ("evo", "evo-nogate", "autoresearch", "median", "wilcoxon")


@dataclass(frozen=True)
class SimConfig:
    # Truth: the noise of one run, per checkpoint sd(t) = sigma * early_var_ratio^((1-t)/2).
    sigma: float = 0.054  # seed-to-seed sd of the final val_bpb (CPU GPT)
    seed_share: float = 0.7  # share of the variance that is a seed offset persisting all run
    ar_phi: float = 0.7  # AR(1) correlation of the residual per 0.1 of progress
    early_var_ratio: float = 2.0  # variance at t=0 over variance at t=1
    seed_corr: float = 1.0  # how fully a child keeps its parent's seed offset (1: entirely)
    progress_step: float = 0.02  # a progress line every 2% of the budget
    # Candidate mix (an LLM's proposals); effects in units of sigma, positive = better.
    p_neutral: float = 0.60
    p_worse: float = 0.25
    p_better: float = 0.10
    p_crash: float = 0.05
    worse_range: tuple[float, float] = (0.5, 3.0)
    better_range: tuple[float, float] = (0.5, 2.0)
    # evo's settings.
    replicates: int = 5  # runs of the base that fit the noise model (they cost compute)
    delta_sigmas: float = 1.25  # wanted gain, in units of sigma (1.6 sd of a paired diff here)
    alpha_futility: float = 0.1  # P(prune | truly better by delta); 0.2 saved more (see report)
    alpha: float = 0.05
    beta: float = 0.1
    max_pairs: int = 8
    burn_in: int = 3
    gate: float = 0.5
    reuse_first: bool = True  # the first (futility-screened, gated) run is the test's first pair
    assumed_seed_corr: float = 1.0  # futility's assumption until difference curves are measured
    diff_model_df: int = 10  # df of difference curves before the futility test uses them
    # Ratchet.
    budget: float = 200.0  # run-equivalents, including the base runs
    chunk: int = 50  # part 1: candidates per simulated world (one base, one study)


# --------------------------------------------------------------------------------------
# The synthetic world
# --------------------------------------------------------------------------------------


class World:
    """One simulated project: shared seed offsets, a base config and a candidate stream.

    Every random number is drawn from a generator keyed by (seed, world, what), so each
    policy sees exactly the same candidates and the same run on the same seed (common
    random numbers: policy differences are not sampling noise)."""

    def __init__(self, cfg: SimConfig, seed: int, world: int) -> None:
        self.cfg, self.seed, self.world = cfg, seed, world
        n = int(round(1.0 / cfg.progress_step))
        self.grid = np.round(np.arange(1, n + 1) * cfg.progress_step, 10)
        self.cps = np.asarray(DEFAULT_CHECKPOINTS)
        self.cp_idx = np.searchsorted(self.grid, self.cps - 1e-9)
        t = self.grid
        self.mean = 0.95 + 1.6 * np.exp(-4.0 * t)  # a loss curve, bpb-like
        self.sd = cfg.sigma * np.power(cfg.early_var_ratio, (1.0 - t) / 2.0)
        self.phi_step = cfg.ar_phi ** (cfg.progress_step / 0.1)
        rng = np.random.default_rng([seed, world, 0])
        self.offsets = rng.normal(size=256)  # u_s, shared by every config on seed s

    def _rng(self, *key: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.world, *key])

    def candidate(self, idx: int) -> tuple[str, float, float]:
        """(kind, true gain in bpb (positive = better), crash fraction or inf)."""
        c, r = self.cfg, self._rng(1, idx)
        u = r.random()
        crash = math.inf
        if u < c.p_neutral:
            kind, gain = "neutral", 0.0
        elif u < c.p_neutral + c.p_worse:
            kind, gain = "worse", -r.uniform(*c.worse_range) * c.sigma
        elif u < c.p_neutral + c.p_worse + c.p_better:
            kind, gain = "better", r.uniform(*c.better_range) * c.sigma
        else:
            kind, gain, crash = "crash", 0.0, r.uniform(0.02, 1.0)
        return kind, gain, crash

    def run(self, config: int, level: float, seed: int) -> np.ndarray:
        """Progress values (on ``grid``) of config ``config`` whose true final improvement
        over the base is ``level``, run with ``seed``. Deterministic in (config, seed)."""
        c = self.cfg
        r = self._rng(2, config + 1, seed)
        own = r.normal()
        offset = c.seed_corr * self.offsets[seed] + math.sqrt(max(0.0, 1 - c.seed_corr**2)) * own
        eps = r.normal(size=len(self.grid))
        eps[0] *= 1.0 / math.sqrt(1 - self.phi_step**2)  # start in the stationary law
        e = lfilter([math.sqrt(1 - self.phi_step**2)], [1.0, -self.phi_step], eps)
        z = math.sqrt(c.seed_share) * offset + math.sqrt(1 - c.seed_share) * e
        return self.mean - level + self.sd * z

    def at_checkpoints(self, values: np.ndarray) -> np.ndarray:
        return values[self.cp_idx]


BASE = -1  # config id of the base


@dataclass
class Parent:
    config: int
    level: float  # true improvement over the base (what the ratchet really gained)
    runs: dict[int, np.ndarray] = field(default_factory=dict)  # seed -> progress values
    value: float = 0.0  # the value single-run policies compare against (seed 0's final)


@dataclass
class Outcome:
    cost: float  # run-equivalents spent on this candidate (incl. extra parent runs)
    promoted: bool
    pruned: bool = False
    tested: bool = False  # entered a promotion test
    decision: str = ""
    reported_gain: float = 0.0  # what the policy believes the gain is, when it promotes
    first_cost: float = 0.0  # compute of the first run alone (what futility pruning acts on)
    runs: dict[int, np.ndarray] = field(default_factory=dict)  # the candidate's runs

    def __post_init__(self) -> None:
        if self.first_cost == 0.0:
            self.first_cost = self.cost


# --------------------------------------------------------------------------------------
# Policies
# --------------------------------------------------------------------------------------


class EvoPolicy:
    """evo's statistics. The noise model starts from the base's replicates and, with
    ``pool``, is refitted on every configuration that has run several seeds (the
    candidates that entered a paired test and the parents), so its degrees of freedom,
    and with them the futility test's power, grow as the search goes."""

    def __init__(self, cfg: SimConfig, world: World, base: Parent, gate: bool, pool: bool = True) -> None:
        self.cfg, self.gate, self.pool_on = cfg, gate, pool
        self.delta = cfg.delta_sigmas * cfg.sigma
        self.grid = world.grid.tolist()
        self.pool: dict[tuple[int, int], np.ndarray] = {(base.config, s): v for s, v in base.runs.items()}
        self.diff_samples: list[list[float]] = []  # diffs of earlier paired tests -> sigma prior
        self.diff_curves: list[tuple[int, np.ndarray]] = []  # same-seed difference curves
        self.paired_noise: NoiseModel | None = None  # fitted on them, once there are enough
        self._refit(base)

    def _refit(self, parent: Parent) -> None:
        keys = sorted(self.pool, key=lambda k: (k[0] != parent.config, k))
        curves = [list(zip(self.grid, self.pool[k].tolist())) for k in keys]
        self.noise = fit_noise_model(curves, [float(self.pool[k][-1]) for k in keys], groups=[k[0] for k in keys])

    def _sprt(self, diffs: list[float]) -> Any:
        cfg = self.cfg
        sd, df = pooled_sd(self.diff_samples) if self.pool_on else (0.0, 0)
        prior = sd if df else self.noise.sigma_paired_final
        return paired_sprt(diffs, self.delta, cfg.alpha, cfg.beta, cfg.max_pairs, None, cfg.burn_in,
                           sigma_prior=prior, prior_df=float(df))

    def _add(self, parent: Parent, config: int, runs: dict[int, np.ndarray]) -> None:
        if not self.pool_on:
            return
        for s, v in parent.runs.items():
            self.pool[(parent.config, s)] = v
        for s, v in runs.items():
            self.pool[(config, s)] = v
            self.diff_curves.append((config, v - parent.runs[s]))
        self._refit(parent)
        # Once earlier paired tests give enough same-seed difference curves, the futility test
        # uses their measured covariance instead of assuming the seed offset cancels.
        n_groups = len({c for c, _ in self.diff_curves})
        if len(self.diff_curves) - n_groups >= self.cfg.diff_model_df:
            curves = [list(zip(self.grid, d.tolist())) for _, d in self.diff_curves]
            self.paired_noise = fit_noise_model(
                curves, [float(d[-1]) for _, d in self.diff_curves],
                groups=[c for c, _ in self.diff_curves], paired=True)

    def evaluate(self, world: World, parent: Parent, idx: int, kind: str, gain: float, crash: float) -> Outcome:
        cfg = self.cfg
        seeds = sorted(parent.runs)
        s0 = seeds[0]
        level = parent.level + gain
        ref = world.at_checkpoints(parent.runs[s0])
        noise = self.paired_noise or self.noise
        ft = FutilityTest(noise, reference=ref, delta=self.delta, alpha=cfg.alpha_futility, paired=True,
                          seed_corr=cfg.assumed_seed_corr)
        values = world.run(idx, level, s0)
        cost = 0.0
        for f, v in zip(world.grid, values):
            if f > crash:
                return Outcome(cost=crash, promoted=False, decision="crash")
            cost = float(f)
            if ft.update(float(f), float(v)) == "stop":
                return Outcome(cost=cost, promoted=False, pruned=True, decision="pruned")
        runs = {s0: values}
        diffs = [float(values[-1] - parent.runs[s0][-1])]
        if self.gate and not promising(diffs[0], self.delta, cfg.gate):
            return Outcome(cost=cost, promoted=False, decision="not promising", runs=runs)
        if not cfg.reuse_first:
            diffs = []
        dec = self._sprt(diffs) if diffs else None
        s = s0
        while dec is None or dec.decision == "continue":
            s += 1
            if s not in parent.runs:  # the parent needs this seed too (kept for later children)
                parent.runs[s] = world.run(parent.config, parent.level, s)
                cost += 1.0
            runs[s] = world.run(idx, level, s)
            cost += 1.0
            diffs.append(float(runs[s][-1] - parent.runs[s][-1]))
            dec = self._sprt(diffs)
        self.diff_samples.append(diffs)
        self._add(parent, idx, runs)
        return Outcome(
            cost=cost,
            first_cost=1.0,
            promoted=dec.decision == "accept",
            tested=True,
            decision=dec.decision,
            reported_gain=-dec.mean_diff,
            runs=runs,
        )


class SingleRunPolicy:
    """One run with seed 0, optional optuna pruner on the checkpoints, keep if strictly
    better than the parent's value. pruner=None is autoresearch's rule."""

    def __init__(self, pruner_factory: Callable[[], Any] | None) -> None:
        self.pruner_factory = pruner_factory
        self.study: Any = None

    def start(self, world: World, parent: Parent) -> None:
        if self.pruner_factory is None:
            return
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        self.study = optuna.create_study(direction="minimize", pruner=self.pruner_factory())
        cp = world.at_checkpoints(parent.runs[0])
        self.study.add_trial(
            optuna.trial.create_trial(
                value=float(parent.runs[0][-1]),
                intermediate_values={k: float(v) for k, v in enumerate(cp)},
            )
        )

    def evaluate(self, world: World, parent: Parent, idx: int, kind: str, gain: float, crash: float) -> Outcome:
        values = world.run(idx, parent.level + gain, 0)
        cps = world.cps
        if self.study is None:
            if crash <= 1.0:
                return Outcome(cost=crash, promoted=False, decision="crash")
            final = float(values[-1])
            keep = final < parent.value
            return Outcome(1.0, keep, decision="keep" if keep else "discard",
                           reported_gain=parent.value - final, runs={0: values})
        import optuna

        trial = self.study.ask()
        cpv = world.at_checkpoints(values)
        for k, (f, v) in enumerate(zip(cps, cpv)):
            if f > crash:
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
                return Outcome(cost=crash, promoted=False, decision="crash")
            trial.report(float(v), k)
            if f < 1.0 and trial.should_prune():
                self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                return Outcome(cost=float(f), promoted=False, pruned=True, decision="pruned")
        final = float(values[-1])
        self.study.tell(trial, final)
        keep = final < parent.value
        return Outcome(1.0, keep, decision="keep" if keep else "discard",
                       reported_gain=parent.value - final, runs={0: values})


def _pruner(name: str) -> Callable[[], Any] | None:
    import optuna

    if name == "median":
        return lambda: optuna.pruners.MedianPruner()
    if name == "wilcoxon":
        return lambda: optuna.pruners.WilcoxonPruner(p_threshold=0.1)
    return None


def _base(world: World, n_runs: int) -> Parent:
    p = Parent(config=BASE, level=0.0)
    for s in range(n_runs):
        p.runs[s] = world.run(BASE, 0.0, s)
    p.value = float(p.runs[0][-1])
    return p


def _make_policy(name: str, cfg: SimConfig, world: World, base: Parent) -> Any:
    if name.startswith("evo"):
        return EvoPolicy(cfg, world, base, gate=(name == "evo"))
    pol = SingleRunPolicy(_pruner(name))
    pol.start(world, base)
    return pol


# --------------------------------------------------------------------------------------
# Part 1: single candidates against a fixed parent
# --------------------------------------------------------------------------------------


def single_candidates(cfg: SimConfig, seed: int, n: int, policies: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    n_worlds = max(1, math.ceil(n / cfg.chunk))
    delta = cfg.delta_sigmas * cfg.sigma
    for name in policies:
        t0 = time.perf_counter()
        acc = dict.fromkeys(("cost", "first", "full"), 0.0) | dict.fromkeys(
            ("better", "better_lost", "big", "big_lost", "big_pruned", "nogain", "nogain_promoted",
             "pruned", "tested", "worse", "worse_pruned"), 0)
        done = 0
        for w in range(n_worlds):
            world = World(cfg, seed, 1000 + w)
            base = _base(world, cfg.replicates if name.startswith("evo") else 1)
            pol = _make_policy(name, cfg, world, base)
            for i in range(min(cfg.chunk, n - done)):
                kind, gain, crash = world.candidate(i)
                o = pol.evaluate(world, base, i, kind, gain, crash)
                acc["cost"] += o.cost
                acc["first"] += o.first_cost
                acc["full"] += min(1.0, crash)
                acc["pruned"] += o.pruned
                acc["tested"] += o.tested
                if kind == "crash":
                    continue
                if gain > 0:
                    acc["better"] += 1
                    acc["better_lost"] += not o.promoted
                    if gain >= delta:
                        acc["big"] += 1
                        acc["big_lost"] += not o.promoted
                        acc["big_pruned"] += o.pruned
                else:
                    acc["nogain"] += 1
                    acc["nogain_promoted"] += o.promoted
                    if gain < 0:
                        acc["worse"] += 1
                        acc["worse_pruned"] += o.pruned
            done += min(cfg.chunk, n - done)
        out[name] = {
            "candidates": n,
            "runs_per_candidate": acc["cost"] / n,
            "compute_saved": 1.0 - acc["cost"] / acc["full"],
            "first_run_saved": 1.0 - acc["first"] / acc["full"],
            "better_ge_delta_pruned": acc["big_pruned"] / max(1, acc["big"]),
            "better_lost": acc["better_lost"] / max(1, acc["better"]),
            "better_ge_delta_lost": acc["big_lost"] / max(1, acc["big"]),
            "nogain_promoted": acc["nogain_promoted"] / max(1, acc["nogain"]),
            "pruned": acc["pruned"] / n,
            "worse_pruned": acc["worse_pruned"] / max(1, acc["worse"]),
            "tested": acc["tested"] / n,
            "seconds": time.perf_counter() - t0,
        }
    return out


# --------------------------------------------------------------------------------------
# Part 2: greedy ratchets under one compute budget
# --------------------------------------------------------------------------------------


def ratchet(cfg: SimConfig, seed: int, rep: int, name: str) -> dict[str, float]:
    world = World(cfg, seed, rep)
    base = _base(world, cfg.replicates if name.startswith("evo") else 1)
    pol = _make_policy(name, cfg, world, base)
    spent = float(len(base.runs))
    parent = base
    true_gain = reported = 0.0
    promos = nogain = harmful = 0
    i = 0
    while spent < cfg.budget:
        kind, gain, crash = world.candidate(i)
        o = pol.evaluate(world, parent, i, kind, gain, crash)
        spent += o.cost
        if o.promoted:
            promos += 1
            nogain += gain <= 0
            harmful += gain < 0
            true_gain += gain
            reported += o.reported_gain
            new = Parent(config=i, level=parent.level + gain, runs=dict(o.runs))
            new.value = float(new.runs[0][-1]) if 0 in new.runs else parent.value
            parent = new
        i += 1
    # The mainline's gain measured directly: final parent against the base on the seeds both
    # ran (one comparison, so selection bias does not pile up over promotions).
    common = sorted(set(base.runs) & set(parent.runs))
    mainline = float(np.mean([base.runs[s][-1] - parent.runs[s][-1] for s in common])) if common else 0.0
    return {"true_gain": true_gain, "reported_gain": reported, "mainline_vs_base": mainline, "promotions": promos,
            "nogain_promotions": nogain, "harmful_promotions": harmful, "candidates": i}


def ratchets(cfg: SimConfig, seed: int, reps: dict[str, int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, n in reps.items():
        t0 = time.perf_counter()
        rows = [ratchet(cfg, seed, r, name) for r in range(n)]
        res: dict[str, Any] = {"reps": n}
        for key in rows[0]:
            x = np.array([r[key] for r in rows], dtype=float)
            res[key] = float(x.mean())
            res[key + "_se"] = float(x.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
        tg = np.array([r["true_gain"] for r in rows])
        res["true_gain_sd"] = float(tg.std(ddof=1)) if n > 1 else float("nan")
        res["true_gain_sigmas"] = res["true_gain"] / cfg.sigma
        res["overstatement"] = (res["reported_gain"] / res["true_gain"] - 1.0) if res["true_gain"] > 0 else float("nan")
        res["seconds"] = time.perf_counter() - t0
        out[name] = res
    return out


def perfect_info_gain(cfg: SimConfig, seed: int, reps: int) -> float:
    """Context, not a bound: one full run per candidate that reveals its true effect, promote
    iff truly better. Pruning policies can beat it: they look at more candidates."""
    tot = 0.0
    for r in range(reps):
        world = World(cfg, seed, r)
        spent, i = 1.0, 0
        while spent < cfg.budget:
            kind, gain, crash = world.candidate(i)
            spent += min(1.0, crash)
            tot += max(gain, 0.0)
            i += 1
    return tot / reps


# --------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------


def run(quick: bool = False, seed: int = 0, candidates: int | None = None,
        cfg: SimConfig | None = None) -> dict[str, Any]:
    """Run both parts; return a JSON-able dict (no printing)."""
    cfg = cfg or SimConfig()
    t0 = time.perf_counter()
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if quick:
        n = candidates or 200
        reps = {"evo": 6, "evo-nogate": 3, "autoresearch": 6, "median": 3, "wilcoxon": 2}
    else:
        n = candidates or 5000
        reps = {"evo": 300, "evo-nogate": 150, "autoresearch": 300, "median": 150, "wilcoxon": 60}
    single = single_candidates(cfg, seed, n, POLICIES)
    ratch = ratchets(cfg, seed, reps)
    return {
        "config": asdict(cfg),
        "seed": seed,
        "quick": quick,
        "single": single,
        "ratchet": ratch,
        "perfect_info_true_gain": perfect_info_gain(cfg, seed, 20 if quick else 300),
        "seconds": time.perf_counter() - t0,
    }


def format_table(res: dict[str, Any]) -> str:
    cfg = res["config"]
    sig = cfg["sigma"]
    lines = [
        f"sigma={sig} bpb, delta={cfg['delta_sigmas']} sigma, seed share={cfg['seed_share']}, "
        f"replicates={cfg['replicates']}, alpha_fut={cfg['alpha_futility']}, alpha={cfg['alpha']}, "
        f"beta={cfg['beta']}, gate={cfg['gate']}, max_pairs={cfg['max_pairs']}, burn_in={cfg['burn_in']}",
        "",
        f"Single candidates vs a fixed parent ({next(iter(res['single'].values()))['candidates']} candidates)",
        f"{'policy':<13}{'runs/cand':>10}{'saved':>8}{'1st run saved':>14}{'better lost':>12}{'>=delta lost':>13}"
        f"{'>=delta pruned':>15}{'no-gain promoted':>17}{'worse pruned':>13}",
    ]
    for name, r in res["single"].items():
        lines.append(
            f"{name:<13}{r['runs_per_candidate']:>10.3f}{r['compute_saved']:>8.1%}{r['first_run_saved']:>14.1%}"
            f"{r['better_lost']:>12.1%}{r['better_ge_delta_lost']:>13.1%}{r['better_ge_delta_pruned']:>15.1%}"
            f"{r['nogain_promoted']:>17.2%}{r['worse_pruned']:>13.1%}"
        )
    lines.append("saved: compute against running every candidate to its end (negative: the promotion "
                 "test's extra runs cost more than pruning saved); 1st run saved: pruning alone.")
    lines += [
        "",
        f"Greedy ratchets, budget {cfg['budget']:g} run-equivalents; true gain of the mainline in sigma "
        f"(perfect-information single runs: {res['perfect_info_true_gain'] / sig:.1f})",
        f"{'policy':<13}{'reps':>5}{'true gain':>15}{'sd':>6}{'reported':>9}{'over':>7}{'vs base':>8}"
        f"{'promos':>8}{'no-gain':>8}{'harmful':>8}{'cands':>7}",
    ]
    for name, r in res["ratchet"].items():
        lines.append(
            f"{name:<13}{r['reps']:>5}{r['true_gain'] / sig:>9.2f} ± {r['true_gain_se'] / sig:<4.2f}"
            f"{r['true_gain_sd'] / sig:>6.2f}{r['reported_gain'] / sig:>9.2f}{r['overstatement']:>7.0%}"
            f"{r['mainline_vs_base'] / sig:>8.2f}{r['promotions']:>8.2f}{r['nogain_promotions']:>8.2f}"
            f"{r['harmful_promotions']:>8.2f}{r['candidates']:>7.0f}"
        )
    lines += [
        "reported: the sum of the gains each policy claimed at its promotions; over: reported/true - 1;",
        "vs base: the final mainline against the base on the seeds both ran (one comparison).",
    ]
    lines.append(f"\n({res['seconds']:.0f} s)")
    return "\n".join(lines)


def _json_safe(x: Any) -> Any:
    """NaN/inf -> None, so the file is strict JSON."""
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m evo.bench.sprt_sim", description=__doc__.split("\n")[0])
    ap.add_argument("--candidates", type=int, default=None, help="part 1 candidates (default 5000; 200 with --quick)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=Path("results/sprt_sim.json"))
    ap.add_argument("--quick", action="store_true", help="a small run (about 30 s)")
    args = ap.parse_args(argv)
    res = run(quick=args.quick, seed=args.seed, candidates=args.candidates)
    print(format_table(res))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(_json_safe(res), indent=1, allow_nan=False))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
