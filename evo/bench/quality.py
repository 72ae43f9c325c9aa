"""Search quality at equal evaluation budgets, on toy targets with known optima (evo.bench.targets).

For every target and seed s, four searches spend the same budget of B screening evaluations
(B children for evo, the baseline's screening run not counted; B + 1 trials for TPE, the first
being the baseline's constants):

* evo `greedy` (generations = B), `population` (mu + (generations x mu) children, mu - 1 of
  them in generation 0: B = mu - 1 + generations x mu), `random` (B mutants of the baseline);
  each a real `evo search` (git commits, subprocess runs, SQLite archive), one worker, study
  seed s, so every screening run uses EVO_SEED = s. SPRT is on where the target is noisy
  (evo's default: 3 baseline replicates, confirmation runs, futility pruning) and off where it
  is deterministic (a single run is then the exact value; see docs/bench.md for why).
* Optuna's TPE (`TPESampler(seed=s)`, default settings) over the same constants, in ranges
  around the baseline (evo.bench.targets.Target.space), evaluating the target's formula
  in-process: `objective(C) + noise(C, s)` from the same objective.py source the target's run
  script imports, so it sees exactly the value the script would print on EVO_SEED = s.

Regret of a configuration = its noise-free objective minus the known optimum (0), >= 0.
* confirmed (evo only): the configuration on the study's mainline when the search ends.
* best seen: the configuration whose screening run printed the lowest value (TPE: the best
  trial); on noisy targets its true value can be worse than what was printed.
Summaries: median over seeds with a 95% percentile-bootstrap interval; two-sided Mann-Whitney
U tests between strategies (per target), and `p_a_lower` for "a's regrets are lower".
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Any

from evo.bench.common import (Scratch, bootstrap_ci, fmt, jobs, make_config, mann_whitney, pmap, study_attrs,
                              study_trials)
from evo.bench.targets import TARGETS, Target, tpe_params
from evo.executors import inprocess

EVO = ("greedy", "population", "random")
FULL = {"targets": list(TARGETS), "seeds": 10, "mu": 8, "generations": 3, "strategies": list(EVO) + ["tpe"],
        "extra": {"noisy": ["greedy-nosprt"]}}
QUICK = {"targets": ["crossover"], "seeds": 2, "mu": 4, "generations": 2, "strategies": list(EVO) + ["tpe"],
         "extra": {}}


def budget(p: dict[str, Any]) -> int:
    return p["mu"] - 1 + p["generations"] * p["mu"]


def run(quick: bool, out: Path, seed: int = 0, sizes: dict[str, Any] | None = None, log: Any = print,
        n_jobs: int | None = None) -> dict[str, Any]:
    p = dict(QUICK if quick else FULL, **(sizes or {}))
    B = budget(p)
    res: dict[str, Any] = {"params": p | {"budget": B}, "searches": [], "targets": {}}
    with Scratch(out, "quality") as work:
        tasks = []
        for tname in p["targets"]:
            names = list(p["strategies"]) + list(p.get("extra", {}).get(tname, []))
            for s in range(seed, seed + p["seeds"]):
                for strat in names:
                    tasks.append({"target": tname, "strategy": strat, "seed": s, "budget": B, "mu": p["mu"],
                                  "generations": p["generations"], "work": str(work)})
        t0 = time.time()
        n = n_jobs if n_jobs is not None else jobs()
        log(f"  {len(tasks)} searches ({len(p['targets'])} targets x {p['seeds']} seeds), budget {B} evaluations each, {n} at a time")
        res["searches"] = pmap(one, tasks, n)
        res["wall_s"] = round(time.time() - t0, 1)
    for tname in p["targets"]:
        res["targets"][tname] = summarise(tname, [r for r in res["searches"] if r["target"] == tname])
        for strat, s in res["targets"][tname]["strategies"].items():
            log(f"  {tname:11} {strat:14} regret median confirmed {fmt(s['confirmed']['median'])} best-seen {fmt(s['best_seen']['median'])}"
                f"  (screening runs {fmt(s['screening_runs_median'])}, total runs {fmt(s['total_runs_median'])})")
    res["overall"] = overall(res)
    return res


# -- one search ---------------------------------------------------------------------------------------------
def one(task: dict[str, Any]) -> dict[str, Any]:
    t = TARGETS[task["target"]]
    if task["strategy"] == "tpe":
        return tpe(t, task)
    return evo_search(t, task)


def evo_search(t: Target, task: dict[str, Any]) -> dict[str, Any]:
    work = Path(task["work"])
    strat = task["strategy"]
    sprt = t.noisy and not strat.endswith("-nosprt")
    base = strat.split("-")[0]
    name = f"{t.name}-{strat}-{task['seed']}"
    repo = t.make_repo(work / name)
    B, mu = task["budget"], task["mu"]
    gens = {"greedy": B, "population": task["generations"], "random": 1}[base]
    pop = {"greedy": mu, "population": mu, "random": B}[base]
    cfg = make_config(work, name, repo, run="{python} run.py", mutable=t.mutable, strategy=base, generations=gens, population=pop,
                      seed=task["seed"], sprt=sprt, timeout=30.0, study={"storage": f"memory://{name}"})
    t0 = time.time()
    # the real engine (strategy, operators, git, judge, archive); only the run is in-process
    summary, _ = inprocess.search(cfg, t.evaluate)
    wall = time.time() - t0
    trials = study_trials(cfg)
    attrs = study_attrs(cfg)
    true_of = TrueValues(t, repo)
    screening = sorted((x for x in trials if x.user_attrs.get("role") in ("baseline", "candidate") and _ran(x)), key=lambda x: x.number)
    complete = [x for x in screening if x.state.name == "COMPLETE" and x.value is not None]
    best = min(complete, key=lambda x: (x.value, x.number))
    from evo.gitrepo import GitRepo

    tip = GitRepo(repo).ref(attrs["mainline"])
    confirmed = true_of.commit(tip)
    # trajectories over screening evaluations: best seen so far, and the mainline at that moment
    promos = sorted(attrs.get("promotions", []), key=lambda p: p["time"])
    base_commit = attrs["base_commit"]
    commit_of = {int(x.user_attrs["index"]): x.user_attrs.get("commit") for x in trials if x.user_attrs.get("commit")}
    traj = []
    best_v, best_true = math.inf, None
    for k, x in enumerate(screening):
        if x.state.name == "COMPLETE" and x.value is not None and x.value < best_v:
            best_v, best_true = x.value, true_of.commit(x.user_attrs["commit"])
        done_at = x.datetime_complete.timestamp() if x.datetime_complete else 0.0
        live = [p for p in promos if p["time"] <= done_at + 1e-3]
        main = true_of.commit(commit_of.get(live[-1]["index"], base_commit)) if live else true_of.commit(base_commit)
        traj.append([k, best_true, main])
    ran = [x for x in trials if _ran(x)]
    rec = {
        "target": t.name, "strategy": strat, "seed": task["seed"], "sprt": sprt, "budget": B,
        "candidates": summary["candidates"], "screening_runs": len(screening) - 1, "total_runs": len(ran) - 1,
        "duplicates": summary["duplicates"], "failed": summary["failed"], "promotions": summary["promotions"],
        "wall_s": round(wall, 2), "run_seconds": round(sum(float(x.user_attrs.get("run_seconds", 0)) for x in ran), 2),
        "regret_confirmed": confirmed - t.optimum, "regret_best_seen": true_of.commit(best.user_attrs["commit"]) - t.optimum,
        "observed_best": best.value, "baseline_regret": true_of.commit(base_commit) - t.optimum, "trajectory": traj,
        "crossovers": sum(1 for x in trials if str(x.user_attrs.get("operator", "")).startswith("crossover") and x.user_attrs.get("role") == "candidate"),
    }
    rec["sprt_stats"] = sprt_stats(t, trials, attrs, true_of)
    return rec


def _ran(t: Any) -> bool:
    return t.user_attrs.get("outcome") in ("complete", "crashed", "timeout", "invalid", "pruned")


class TrueValues:
    """Noise-free objective of a commit's constants (cached by commit)."""

    def __init__(self, t: Target, repo: Path) -> None:
        self.t, self.repo, self.cache = t, repo, {}

    def commit(self, sha: str | None) -> float:
        if not sha:
            return math.nan
        if sha not in self.cache:
            self.cache[sha] = self.t.true_value(self.t.constants_at(self.repo, sha))
        return self.cache[sha]


def sprt_stats(t: Target, trials: list[Any], attrs: dict[str, Any], true_of: TrueValues) -> dict[str, Any]:
    """What the sequential tests did in this search, judged against the noise-free truth."""
    by_index: dict[int, Any] = {}
    for x in trials:
        if x.user_attrs.get("role") in ("baseline", "candidate") and "index" in x.user_attrs:
            by_index.setdefault(int(x.user_attrs["index"]), x)
    cands = [x for x in trials if x.user_attrs.get("role") == "candidate" and _ran(x)]
    pruned = [x for x in cands if x.user_attrs.get("outcome") == "pruned"]
    full = [float(x.user_attrs.get("run_seconds", 0)) for x in cands if x.user_attrs.get("outcome") == "complete"]
    typical = statistics.median(full) if full else 0.0
    saved = sum(max(0.0, typical - float(x.user_attrs.get("run_seconds", 0))) for x in pruned)
    spent = sum(float(x.user_attrs.get("run_seconds", 0)) for x in trials if _ran(x))

    def true_index(i: int) -> float:
        x = by_index.get(i)
        return true_of.commit(x.user_attrs.get("commit")) if x is not None else math.nan

    wrong_prunes = 0
    for x in pruned:
        parents = x.user_attrs.get("parent_indices") or [0]
        if true_of.commit(x.user_attrs.get("commit")) < true_index(int(parents[0])):
            wrong_prunes += 1
    promos = attrs.get("promotions", [])
    truly, gains = 0, []
    prev = 0
    for p in promos:
        g = true_index(prev) - true_index(int(p["index"]))
        gains.append(g)
        truly += g > 0
        prev = int(p["index"])
    decisions: dict[str, int] = {}
    for d in (attrs.get("decisions") or {}).values():
        decisions[d.get("decision", "?")] = decisions.get(d.get("decision", "?"), 0) + 1
    roles: dict[str, int] = {}
    for x in trials:
        if _ran(x):
            r = x.user_attrs.get("role", "?")
            roles[r] = roles.get(r, 0) + 1
    return {
        "candidate_runs": len(cands), "pruned": len(pruned), "pruned_share": len(pruned) / max(1, len(cands)),
        "wrong_prunes": wrong_prunes, "seconds_saved": round(saved, 3), "seconds_spent": round(spent, 3),
        "saved_share": saved / (spent + saved) if spent + saved > 0 else 0.0,
        "promotions": len(promos), "true_promotions": truly, "promotion_true_gains": gains,
        "decisions": decisions, "runs_by_role": roles, "sigma_final": (attrs.get("noise") or {}).get("sigma_final"),
    }


def tpe(t: Target, task: dict[str, Any]) -> dict[str, Any]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seed, B = task["seed"], task["budget"]
    space = t.space()
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial(t.constants())
    t0 = time.time()
    study.optimize(lambda tr: t.observed(tpe_params(tr, space), seed), n_trials=B + 1)
    wall = time.time() - t0
    trials = sorted(study.trials, key=lambda x: x.number)
    traj, best_v, best_true = [], math.inf, None
    for k, x in enumerate(trials):
        if x.value is not None and x.value < best_v:
            best_v, best_true = x.value, t.true_value(x.params)
        traj.append([k, best_true, None])
    best = min(trials, key=lambda x: (x.value, x.number))
    return {
        "target": t.name, "strategy": "tpe", "seed": seed, "sprt": False, "budget": B, "candidates": B,
        "screening_runs": B, "total_runs": B, "wall_s": round(wall, 2), "regret_confirmed": None,
        "regret_best_seen": t.true_value(best.params) - t.optimum, "observed_best": best.value,
        "baseline_regret": t.true_value(t.constants()) - t.optimum, "trajectory": traj,
    }


# -- summaries ---------------------------------------------------------------------------------------------------
def summarise(tname: str, recs: list[dict[str, Any]]) -> dict[str, Any]:
    strategies = list(dict.fromkeys(r["strategy"] for r in recs))
    out: dict[str, Any] = {"about": TARGETS[tname].about, "noisy": TARGETS[tname].noisy, "strategies": {}, "tests": {}}
    for s in strategies:
        rs = [r for r in recs if r["strategy"] == s]
        entry: dict[str, Any] = {"seeds": len(rs)}
        for key, field in (("confirmed", "regret_confirmed"), ("best_seen", "regret_best_seen")):
            xs = [r[field] for r in rs if r.get(field) is not None]
            entry[key] = {"median": statistics.median(xs) if xs else None, "ci95": bootstrap_ci(xs) if xs else None,
                          "values": xs, "solved": sum(1 for x in xs if x < 0.05)}
        entry["screening_runs_median"] = statistics.median(r["screening_runs"] for r in rs)
        entry["total_runs_median"] = statistics.median(r["total_runs"] for r in rs)
        entry["wall_s_median"] = statistics.median(r["wall_s"] for r in rs)
        if s != "tpe":
            entry["promotions_median"] = statistics.median(r["promotions"] for r in rs)
            entry["crossovers_median"] = statistics.median(r.get("crossovers", 0) for r in rs)
        out["strategies"][s] = entry
    vals = {s: out["strategies"][s] for s in strategies}
    for i, a in enumerate(strategies):
        for b in strategies[i + 1:]:
            out["tests"][f"{a} vs {b} (best seen)"] = mann_whitney(vals[a]["best_seen"]["values"], vals[b]["best_seen"]["values"])
            if a != "tpe" and b != "tpe":
                out["tests"][f"{a} vs {b} (confirmed)"] = mann_whitney(vals[a]["confirmed"]["values"], vals[b]["confirmed"]["values"])
    if "tpe" in vals:
        for a in strategies:
            if a != "tpe":
                out["tests"][f"{a} (confirmed) vs tpe (best seen)"] = mann_whitney(vals[a]["confirmed"]["values"], vals["tpe"]["best_seen"]["values"])
    return out


def overall(res: dict[str, Any]) -> dict[str, Any]:
    """Across targets: regret as a share of the baseline's (1 = no progress), median per strategy."""
    out: dict[str, Any] = {}
    strategies = list(dict.fromkeys(r["strategy"] for r in res["searches"]))
    for s in strategies:
        rs = [r for r in res["searches"] if r["strategy"] == s]
        rel_c = [r["regret_confirmed"] / r["baseline_regret"] for r in rs if r.get("regret_confirmed") is not None and r["baseline_regret"]]
        rel_b = [r["regret_best_seen"] / r["baseline_regret"] for r in rs if r["baseline_regret"]]
        out[s] = {"relative_confirmed_median": statistics.median(rel_c) if rel_c else None,
                  "relative_best_seen_median": statistics.median(rel_b) if rel_b else None,
                  "relative_best_seen_ci95": bootstrap_ci(rel_b) if rel_b else None, "searches": len(rs)}
    return out


def table(res: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [("quality budget", f"{res['params']['budget']} screening evaluations per search, {res['params']['seeds']} seeds")]
    for tname, tr in res.get("targets", {}).items():
        parts = []
        for s, e in tr["strategies"].items():
            c, b = e["confirmed"], e["best_seen"]
            ci = b.get("ci95") or [None, None]
            parts.append(f"{s} {fmt(c['median']) + '/' if c['median'] is not None else ''}{fmt(b['median'])} [{fmt(ci[0])}, {fmt(ci[1])}]")
        rows.append((f"regret {tname} (confirmed/best-seen median [95% CI best-seen])", "; ".join(parts)))
    ov = res.get("overall", {})
    if ov:
        rows.append(("relative regret, all targets (median best-seen)", "; ".join(f"{s} {fmt(v['relative_best_seen_median'])}" for s, v in ov.items())))
    return rows


FLOOR = 1e-3  # regrets below this are drawn at it (log axes)


def plot(res: dict[str, Any], out: Path) -> list[str]:
    from evo.bench.common import pyplot

    plt = pyplot()
    targets = list(res.get("targets", {}))
    if not targets:
        return []
    fig, axes = plt.subplots(2, len(targets), figsize=(4.2 * len(targets), 7.5), squeeze=False)
    colors = {"greedy": "tab:blue", "population": "tab:green", "random": "tab:gray", "tpe": "tab:red", "greedy-nosprt": "tab:purple"}
    for j, tname in enumerate(targets):
        recs = [r for r in res["searches"] if r["target"] == tname]
        strategies = list(dict.fromkeys(r["strategy"] for r in recs))
        ax = axes[0, j]
        for s in strategies:
            rs = [r for r in recs if r["strategy"] == s]
            n = max(len(r["trajectory"]) for r in rs)
            for col, style in ((1, "-"), (2, "--")):
                ys = []
                for k in range(n):
                    v = [r["trajectory"][min(k, len(r["trajectory"]) - 1)][col] for r in rs]
                    v = [x for x in v if x is not None]
                    ys.append(statistics.median(v) if v else math.nan)
                if not all(math.isnan(y) for y in ys):
                    ax.plot(range(n), [max(y, FLOOR) for y in ys], style, color=colors.get(s), label=s if col == 1 else None)
        ax.set_yscale("log")
        ax.set_title(f"{tname}: median regret", fontsize=10)
        ax.set_xlabel("screening evaluations")
        if j == 0:
            ax.set_ylabel("regret (solid: best seen, dashed: mainline)")
            ax.legend(fontsize=8)
        ax = axes[1, j]
        for i, s in enumerate(strategies):
            e = res["targets"][tname]["strategies"][s]
            for key, dx, marker in (("best_seen", -0.12, "o"), ("confirmed", 0.12, "s")):
                vs = [max(v, FLOOR) for v in e[key]["values"]]
                if vs:
                    ax.plot([i + dx] * len(vs), vs, marker, color=colors.get(s), alpha=0.6, ms=4)
                    ax.plot([i + dx - 0.1, i + dx + 0.1], [statistics.median(vs)] * 2, "k-", lw=2)
        ax.set_xticks(range(len(strategies)))
        ax.set_xticklabels(strategies, rotation=30, fontsize=8)
        ax.set_yscale("log")
        ax.set_title(f"final regret per seed (o best seen, s mainline; floor {FLOOR:g})", fontsize=9)
    fig.tight_layout()
    path = out / "quality.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [str(path)]
