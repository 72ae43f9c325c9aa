"""Search quality at equal evaluation budgets, on generated targets with known optima (evo.bench.targets).

Targets are *generated per seed* from five families (evo.bench.targets.generate): smooth (the
control), multimodal (deceptive basins at random places, rippled bowls), epistatic (switches in
different files that only help together, coupled constants across files), noisy (seed noise, SPRT
on) and large (20-50 constants over 3-5 files). Seed s draws instance s of every family, so no
strategy can be tuned to one instance, and every strategy meets the same instance (paired tests).
The fixed targets of earlier versions (separable, interacting, deceptive, noisy, crossover) can
still be named in `targets`; a name that is a family is generated.

For every (target, seed, workers, strategy) one search runs until max(budgets) screening
evaluations (children's first runs; the baseline, its replicates and confirmation runs not
counted), and is read at every budget in `budgets` (31, 100, 300 in the full run): the strategies
make the same decisions whatever the total budget, so a search of 300 read after 31 evaluations is
a search of 31 (except that SPRT tests still open at that moment have not promoted yet).

* evo `greedy`, `population`, `random` with the selection and operator settings of
  configs/default.toml (`shipped_defaults`): the real engine in-process (evo.executors.inprocess:
  real Study, strategy, breeder with its duplicate retries, operators, git, judge, Optuna in-memory
  storage); runs simulated from the target's formula with lognormal durations (sigma 0.5), so with
  8 workers results come back in a varying order. SPRT on where the target is noisy.
  Variants: `-gauss` (Gaussian instead of Cauchy constant steps), `-nox` (no crossover), `-nosprt`.
* Optuna's TPE (`TPESampler(seed=s)`) over the same constants in ranges around the baseline
  (Target.space); with w workers it asks w trials before it is told their values (batches).

Regret = the noise-free objective of a configuration (the optimum is 0).
* mainline (evo): the configuration on the study's mainline when the b-th screening evaluation
  finished: what a user would ship. TPE has no mainline: its best-seen trial stands in.
* best seen: the configuration whose screening run printed the lowest value by then.
Per cell (target, workers, budget): median regret per strategy; paired Wilcoxon signed-rank tests
(pairs: the same seed, so the same target instance) of population against each other strategy,
Holm-corrected over every test of the run. Crossover: how many crossover children differ from both
parents (new code); duplicates: share of children whose tree already existed.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Any

from evo.bench.common import (Scratch, bootstrap_ci, fmt, jobs, make_config, mann_whitney, pmap, study_attrs,
                              study_trials)
from evo.bench.targets import FAMILIES, TARGETS, Target, instance, tpe_params
from evo.executors import inprocess

EVO = ("greedy", "population", "random")
FULL = {"targets": list(FAMILIES), "seeds": 20, "mu": 8, "generations": 3, "budgets": [31, 100, 300], "workers": [1, 8],
        "strategies": list(EVO) + ["tpe"], "extra": {"multimodal": ["greedy-gauss", "population-gauss"]}}
QUICK = {"targets": ["epistatic", "multimodal"], "seeds": 2, "mu": 4, "generations": 2, "workers": [1],
         "strategies": list(EVO) + ["tpe"], "extra": {}}
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "gauss": {"operators": {"step_dist": "gauss"}},
    "nox": {"search": {"crossover_rate": 0.0}},
    "nosprt": {},
}


SHIPPED = {"search": ("crossover_rate", "mutation_rate", "exploit", "rank_power", "merge_side_lines", "elites", "islands",
                      "island_patience", "step_spread", "tpe_rate"),
           "operators": ("max_changes", "step", "step_dist", "duplicate_retries")}


def shipped_defaults() -> dict[str, dict[str, Any]]:
    """The selection and operator settings of configs/default.toml (what `evo search` ships), so the
    benchmark measures the settings users get; a strategy's modifiers override them."""
    import tomllib

    path = Path(__file__).resolve().parents[2] / "configs" / "default.toml"
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError:
        return {}
    return {sec: {k: raw[sec][k] for k in keys if k in raw.get(sec, {})} for sec, keys in SHIPPED.items()}


def variant(mod: str) -> dict[str, dict[str, Any]]:
    """A strategy-name modifier: a named variant, or KEY=VALUE of [search] or [operators] (e.g. exploit=0.9)."""
    if mod in VARIANTS:
        return VARIANTS[mod]
    key, _, val = mod.partition("=")
    from evo.config import OperatorsConfig, SearchConfig

    for sec, cls in (("search", SearchConfig), ("operators", OperatorsConfig)):
        if key in cls.__dataclass_fields__:
            typ = type(getattr(cls(), key))
            return {sec: {key: typ(val) if typ is not bool else val == "true"}}
    raise ValueError(f"unknown strategy modifier {mod!r}")


def budget(p: dict[str, Any]) -> int:
    return max(p["budgets"]) if p.get("budgets") else p["mu"] - 1 + p["generations"] * p["mu"]


def budgets(p: dict[str, Any]) -> list[int]:
    return sorted(p["budgets"]) if p.get("budgets") else [budget(p)]


def workers_of(p: dict[str, Any]) -> list[int]:
    w = p.get("workers", [1])
    return [w] if isinstance(w, int) else list(w)


def run(quick: bool, out: Path, seed: int = 0, sizes: dict[str, Any] | None = None, log: Any = print,
        n_jobs: int | None = None) -> dict[str, Any]:
    p = dict(QUICK if quick else FULL, **(sizes or {}))
    B = budget(p)
    res: dict[str, Any] = {"params": p | {"budget": B, "budgets": budgets(p), "workers": workers_of(p)}, "searches": [], "targets": {}}
    with Scratch(out, "quality") as work:
        tasks = []
        for tname in p["targets"]:
            names = list(p["strategies"]) + list(p.get("extra", {}).get(tname, []))
            for s in range(seed, seed + p["seeds"]):
                for w in workers_of(p):
                    for strat in names:
                        tasks.append({"target": tname, "strategy": strat, "seed": s, "budget": B, "budgets": budgets(p), "mu": p["mu"],
                                      "generations": p["generations"], "workers": w, "work": str(work)})
        t0 = time.time()
        n = n_jobs if n_jobs is not None else jobs()
        log(f"  {len(tasks)} searches ({len(p['targets'])} targets x {p['seeds']} seeds x workers {workers_of(p)}), "
            f"budget {B} evaluations each (read at {budgets(p)}), {n} at a time")
        res["searches"] = pmap(one, tasks, n)
        res["wall_s"] = round(time.time() - t0, 1)
    w0 = workers_of(p)[0]
    for tname in p["targets"]:
        res["targets"][tname] = summarise(tname, [r for r in res["searches"] if r["target"] == tname and r["workers"] == w0])
        for strat, s in res["targets"][tname]["strategies"].items():
            log(f"  {tname:11} {strat:16} regret median confirmed {fmt(s['confirmed']['median'])} best-seen {fmt(s['best_seen']['median'])}"
                f"  (screening runs {fmt(s['screening_runs_median'])}, total runs {fmt(s['total_runs_median'])})")
    res["cells"] = cells(res)
    res["cells_time"] = cells_time(res)
    for c in res["cells"]:
        med = "; ".join(f"{k} {fmt(v)}" for k, v in c["median"].items())
        log(f"  {c['target']:11} w={c['workers']} b={c['budget']:<4} median mainline regret: {med}")
    res["crossover"] = crossover_stats(res["searches"])
    res["overall"] = overall(res)
    return res


# -- one search ---------------------------------------------------------------------------------------------
def one(task: dict[str, Any]) -> dict[str, Any]:
    t = instance(task["target"], task["seed"])
    if task["strategy"] == "tpe":
        return tpe(t, task)
    return evo_search(t, task)


def evo_search(t: Target, task: dict[str, Any]) -> dict[str, Any]:
    work = Path(task["work"])
    strat = task["strategy"]
    base, *mods = strat.split("-")
    sprt = t.noisy and "nosprt" not in mods
    W = task.get("workers", 1)
    name = f"{t.name}-{strat}-{task['seed']}-w{W}".replace("=", "_")
    repo = t.make_repo(work / name)
    B, mu = task["budget"], task["mu"]
    gens = {"greedy": B, "population": max(task["generations"], -(-(B - mu + 1) // mu)), "random": 1}[base]
    pop = {"greedy": mu, "population": mu, "random": B}[base]
    sections: dict[str, dict[str, Any]] = {"study": {"storage": f"memory://{name}"}, **shipped_defaults()}
    for m in mods:
        for sec, kv in variant(m).items():
            sections.setdefault(sec, {}).update(kv)
    cfg = make_config(work, name, repo, run="{python} run.py", mutable=t.mutable, strategy=base, generations=gens, population=pop,
                      seed=task["seed"], sprt=sprt, timeout=30.0, workers=W, **sections)
    t0 = time.time()
    # the real engine (strategy, operators, git, judge, archive); only the run is in-process
    summary, ex = inprocess.search(cfg, t.evaluate)
    wall = time.time() - t0
    trials = study_trials(cfg)
    attrs = study_attrs(cfg)
    from evo.gitrepo import GitRepo

    grepo = GitRepo(repo)
    true_of = TrueValues(t, grepo)
    screening = sorted((x for x in trials if x.user_attrs.get("role") in ("baseline", "candidate") and _ran(x)), key=lambda x: x.number)
    complete = [x for x in screening if x.state.name == "COMPLETE" and x.value is not None]
    best = min(complete, key=lambda x: (x.value, x.number))
    tip = grepo.ref(attrs["mainline"])
    confirmed = true_of.commit(tip)
    # trajectories over screening evaluations: best seen so far, and the mainline at that moment
    promos = sorted(attrs.get("promotions", []), key=lambda p: p["time"])
    base_commit = attrs["base_commit"]
    commit_of = {int(x.user_attrs["index"]): x.user_attrs.get("commit") for x in trials if x.user_attrs.get("commit")}
    traj = []
    best_v, best_true = math.inf, None
    done = [x.datetime_complete.timestamp() if x.datetime_complete else 0.0 for x in screening]
    vend = [float((x.user_attrs.get("metrics") or {}).get("virtual_end", math.nan)) for x in screening]  # the in-process clock
    for k, x in enumerate(screening):
        if x.state.name == "COMPLETE" and x.value is not None and x.value < best_v:
            best_v, best_true = x.value, true_of.commit(x.user_attrs["commit"])
        # the mainline after evaluation k: every promotion recorded before the next screening run finished
        # (a promotion is written a few ms after the run that decided it, with its commit)
        until = done[k + 1] if k + 1 < len(done) else math.inf
        live = [p for p in promos if p["time"] < until]
        main = true_of.commit(commit_of.get(live[-1]["index"], base_commit)) if live else true_of.commit(base_commit)
        traj.append([k, best_true, main, vend[k]])
    ran = [x for x in trials if _ran(x)]
    cands = [x for x in trials if x.user_attrs.get("role") == "candidate" and x.user_attrs.get("commit")]
    tree_of = {int(x.user_attrs["index"]): x.user_attrs.get("tree") for x in trials if "index" in x.user_attrs}
    xo = [x for x in cands if str(x.user_attrs.get("operator", "")).startswith("crossover")]
    new_xo = [x for x in xo if x.user_attrs.get("outcome") != "duplicate"
              and all(tree_of.get(int(i)) != x.user_attrs.get("tree") for i in x.user_attrs.get("parent_indices", []))]
    pure = [x for x in new_xo if x.user_attrs.get("operator") == "crossover"]
    fell_back = [x for x in cands if x.user_attrs.get("planned") == "crossover"]  # planned crossovers the breeder mutated instead
    pairs = [tuple(sorted(int(i) for i in x.user_attrs.get("parent_indices", []))) for x in xo]
    rec = {
        "target": t.name, "strategy": strat, "seed": task["seed"], "workers": W, "sprt": sprt, "budget": B,
        "candidates": summary["candidates"], "screening_runs": len(screening) - 1, "total_runs": len(ran) - 1,
        "duplicates": summary["duplicates"], "failed": summary["failed"], "promotions": summary["promotions"],
        "wall_s": round(wall, 2), "virtual_s": round(ex.now, 2), "run_seconds": round(sum(float(x.user_attrs.get("run_seconds", 0)) for x in ran), 2),
        "regret_confirmed": confirmed - t.optimum, "regret_best_seen": true_of.commit(best.user_attrs["commit"]) - t.optimum,
        "observed_best": best.value, "baseline_regret": true_of.commit(base_commit) - t.optimum, "trajectory": traj,
        "crossovers": len(xo), "new_crossovers": len(new_xo), "pure_new_crossovers": len(pure), "planned_crossovers": len(xo) + len(fell_back),
        "repeated_merges": len(pairs) - len(set(pairs)),  # crossovers of a parent pair already merged before
        "at": at_budgets(traj, task.get("budgets", [B])),
    }
    rec["sprt_stats"] = sprt_stats(t, trials, attrs, true_of)
    return rec


def at_budgets(traj: list[list[Any]], bs: list[int]) -> dict[str, dict[str, Any]]:
    """Regrets after b screening evaluations (the trajectory's row b; its last row if the search made fewer)."""
    out = {}
    for b in bs:
        row = traj[min(b, len(traj) - 1)]
        out[str(b)] = {"best_seen": row[1], "mainline": row[2] if row[2] is not None else row[1], "evaluations": min(b, len(traj) - 1)}
    return out


def _ran(t: Any) -> bool:
    return t.user_attrs.get("outcome") in ("complete", "crashed", "timeout", "invalid", "pruned")


class TrueValues:
    """Noise-free objective of a commit's constants (cached by commit; files read without a process)."""

    def __init__(self, t: Target, repo: Any) -> None:
        self.t, self.repo, self.cache = t, repo, {}

    def commit(self, sha: str | None) -> float:
        if not sha:
            return math.nan
        if sha not in self.cache:
            from evo.bench.targets import constants_of

            files = {p: self.repo.read(sha, p).decode("utf-8") for p in self.t.mutable}
            self.cache[sha] = self.t.true_value(constants_of(files))
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
    """Optuna TPE; with w workers it asks w trials before it is told any of their values."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seed, B, W = task["seed"], task["budget"], task.get("workers", 1)
    space = t.space()
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial(t.constants())
    t0 = time.time()
    left = B + 1
    clock, ends = 0.0, {}
    while left > 0:
        batch = [study.ask() for _ in range(min(W, left))]
        secs = []
        for tr in batch:
            C = tpe_params(tr, space)
            study.tell(tr, t.observed(C, seed))
            secs.append(t.duration(C, seed))
        clock += max(secs)  # the next batch is asked when the whole batch is told
        ends.update({tr.number: clock for tr in batch})
        left -= len(batch)
    wall = time.time() - t0
    trials = sorted(study.trials, key=lambda x: x.number)
    traj, best_v, best_true = [], math.inf, None
    for k, x in enumerate(trials):
        if x.value is not None and x.value < best_v:
            best_v, best_true = x.value, t.true_value(x.params)
        traj.append([k, best_true, None, ends[x.number]])
    best = min(trials, key=lambda x: (x.value, x.number))
    return {
        "target": t.name, "strategy": "tpe", "seed": seed, "workers": W, "sprt": False, "budget": B, "candidates": B,
        "screening_runs": B, "total_runs": B, "wall_s": round(wall, 2), "regret_confirmed": None,
        "regret_best_seen": t.true_value(best.params) - t.optimum, "observed_best": best.value,
        "baseline_regret": t.true_value(t.constants()) - t.optimum, "trajectory": traj,
        "at": at_budgets(traj, task.get("budgets", [B])),
    }


# -- summaries ---------------------------------------------------------------------------------------------------
def summarise(tname: str, recs: list[dict[str, Any]]) -> dict[str, Any]:
    strategies = list(dict.fromkeys(r["strategy"] for r in recs))
    t0 = instance(tname, recs[0]["seed"]) if recs else TARGETS.get(tname)
    out: dict[str, Any] = {"about": t0.about if t0 else "", "noisy": bool(t0 and t0.noisy), "strategies": {}, "tests": {}}
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


def wilcoxon(a: list[float], b: list[float]) -> dict[str, Any]:
    """Paired two-sided Wilcoxon signed-rank test; `wins` = pairs where a's regret is lower."""
    from scipy import stats

    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]
    wins = sum(1 for x, y in pairs if x < y - 1e-12)
    losses = sum(1 for x, y in pairs if y < x - 1e-12)
    if len(pairs) < 2 or wins + losses == 0:
        return {"p": 1.0, "wins": wins, "losses": losses, "n": len(pairs)}
    r = stats.wilcoxon([x for x, _ in pairs], [y for _, y in pairs], zero_method="zsplit", alternative="two-sided")
    return {"p": float(r.pvalue), "wins": wins, "losses": losses, "n": len(pairs)}


def holm(ps: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given)."""
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    out = [1.0] * len(ps)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        out[i] = running
    return out


def cells(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Per (target, workers, budget): median mainline regret per strategy, and population against the others
    (paired by seed, Wilcoxon, Holm over every test of the run)."""
    recs = res["searches"]
    out = []
    for tname in dict.fromkeys(r["target"] for r in recs):
        for w in dict.fromkeys(r["workers"] for r in recs):
            sub = [r for r in recs if r["target"] == tname and r["workers"] == w]
            strategies = list(dict.fromkeys(r["strategy"] for r in sub))
            for b in res["params"]["budgets"]:
                vals = {s: {r["seed"]: r["at"][str(b)]["mainline"] for r in sub if r["strategy"] == s and str(b) in r["at"]} for s in strategies}
                vals = {s: v for s, v in vals.items() if v}
                if not vals:
                    continue
                seeds = sorted(set.intersection(*(set(v) for v in vals.values()))) if vals else []
                cell: dict[str, Any] = {"target": tname, "workers": w, "budget": b, "seeds": len(seeds),
                                        "median": {s: statistics.median(v[k] for k in seeds) if seeds else None for s, v in vals.items()},
                                        "tests": {}}
                pairs = [("population", o) for o in strategies if o != "population" and "-" not in o]
                pairs += [(v, v.split("-")[0]) for v in strategies if "-" in v and v.split("-")[0] in strategies]
                for x, y in pairs:
                    if x in vals and y in vals:
                        cell["tests"][f"{x} vs {y}"] = wilcoxon([vals[x][k] for k in seeds], [vals[y][k] for k in seeds])
                out.append(cell)
    tests = [(c, k) for c in out for k in c["tests"]]
    for (c, k), adj in zip(tests, holm([c["tests"][k]["p"] for c, k in tests])):
        c["tests"][k]["p_holm"] = adj
    return out


def mainline_at_time(traj: list[list[Any]], t: float) -> float | None:
    """The mainline regret (TPE: best seen) after the last screening evaluation that finished by virtual time t."""
    rows = [r for r in traj if len(r) > 3 and r[3] is not None and r[3] <= t + 1e-9]
    if not rows:
        return traj[0][2] if traj[0][2] is not None else traj[0][1]
    r = rows[-1]
    return r[2] if r[2] is not None else r[1]


def cells_time(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Equal wall time: per (target, workers, budget b), every search read at the same virtual time T, the median over
    the cell's searches of the time their b-th screening evaluation finished. Population against the others, paired
    by seed, Holm over these tests only (a family of its own: the equal-evaluation tests above are the ones that decide)."""
    recs = res["searches"]
    out = []
    for tname in dict.fromkeys(r["target"] for r in recs):
        for w in dict.fromkeys(r["workers"] for r in recs):
            sub = [r for r in recs if r["target"] == tname and r["workers"] == w and all(len(x) > 3 for x in r["trajectory"])]
            if not sub:
                continue
            for b in res["params"]["budgets"]:
                times = [r["trajectory"][min(b, len(r["trajectory"]) - 1)][3] for r in sub]
                times = [x for x in times if x is not None and math.isfinite(x)]
                if not times:
                    continue
                T = statistics.median(times)
                strategies = list(dict.fromkeys(r["strategy"] for r in sub))
                vals = {s: {r["seed"]: mainline_at_time(r["trajectory"], T) for r in sub if r["strategy"] == s} for s in strategies}
                seeds = sorted(set.intersection(*(set(v) for v in vals.values())))
                cell: dict[str, Any] = {"target": tname, "workers": w, "budget": b, "virtual_time": T, "seeds": len(seeds),
                                        "median": {s: statistics.median(v[k] for k in seeds) if seeds else None for s, v in vals.items()},
                                        "tests": {}}
                for o in strategies:
                    if o != "population" and "-" not in o and "population" in vals:
                        cell["tests"][f"population vs {o}"] = wilcoxon([vals["population"][k] for k in seeds], [vals[o][k] for k in seeds])
                out.append(cell)
    tests = [(c, k) for c in out for k in c["tests"]]
    for (c, k), adj in zip(tests, holm([c["tests"][k]["p"] for c, k in tests])):
        c["tests"][k]["p_holm"] = adj
    return out


def crossover_stats(recs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per target and workers: crossover children, those that differ from both parents, duplicates' share."""
    out: dict[str, Any] = {}
    for r in recs:
        if r["strategy"] == "tpe":
            continue
        key = f"{r['target']} w={r['workers']} {r['strategy']}"
        e = out.setdefault(key, {"crossovers": 0, "planned_crossovers": 0, "new_crossovers": 0, "pure_new_crossovers": 0,
                                 "duplicates": 0, "candidates": 0})
        for k in ("crossovers", "new_crossovers", "pure_new_crossovers", "duplicates", "candidates"):
            e[k] += r.get(k, 0)
        e["planned_crossovers"] += r.get("planned_crossovers", r.get("crossovers", 0))
    for e in out.values():
        e["new_share"] = e["new_crossovers"] / e["planned_crossovers"] if e["planned_crossovers"] else None
        e["duplicate_share"] = e["duplicates"] / e["candidates"] if e["candidates"] else None
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
    p = res["params"]
    rows = [("quality budget", f"{p['budget']} screening evaluations per search, read at {p.get('budgets', [p['budget']])}; "
                               f"workers {p.get('workers', [1])}; {p['seeds']} seeds (one generated instance per seed)")]
    for c in res.get("cells", []):
        med = "; ".join(f"{s} {fmt(v)}" for s, v in c["median"].items())
        tests = "; ".join(f"{k}: p_holm {fmt(t.get('p_holm'))} ({t['wins']}-{t['losses']})" for k, t in c["tests"].items())
        rows.append((f"median mainline regret {c['target']}, {c['workers']} worker(s), {c['budget']} evaluations", f"{med} | {tests}"))
    for c in res.get("cells_time", []):
        med = "; ".join(f"{s} {fmt(v)}" for s, v in c["median"].items())
        tests = "; ".join(f"{k}: p_holm {fmt(t.get('p_holm'))} ({t['wins']}-{t['losses']})" for k, t in c["tests"].items())
        rows.append((f"equal wall time {c['target']}, {c['workers']} worker(s), virtual {fmt(c['virtual_time'])} s "
                     f"(~{c['budget']} evaluations)", f"{med} | {tests}"))
    for key, e in res.get("crossover", {}).items():
        if e["crossovers"] or e["duplicates"]:
            rows.append((f"crossover {key}", f"{e['new_crossovers']}/{e['crossovers']} crossover children new code; "
                                             f"duplicates {e['duplicates']}/{e['candidates']} children"))
    ov = res.get("overall", {})
    if ov:
        rows.append(("relative regret, all targets (median best-seen)", "; ".join(f"{s} {fmt(v['relative_best_seen_median'])}" for s, v in ov.items())))
    return rows


FLOOR = 1e-3  # regrets below this are drawn at it (log axes)
COLORS = {"greedy": "tab:blue", "population": "tab:green", "random": "tab:gray", "tpe": "tab:red", "greedy-nosprt": "tab:purple",
          "greedy-gauss": "tab:cyan", "population-gauss": "tab:olive", "population-nox": "tab:brown"}


def plot(res: dict[str, Any], out: Path) -> list[str]:
    """Anytime curves: median mainline regret (TPE: best seen) against screening evaluations, one panel per
    target (columns) and worker count (rows), with the interquartile band."""
    from evo.bench.common import pyplot, quantile

    plt = pyplot()
    recs = res.get("searches", [])
    targets = list(dict.fromkeys(r["target"] for r in recs))
    ws = list(dict.fromkeys(r["workers"] for r in recs))
    if not targets:
        return []
    fig, axes = plt.subplots(len(ws), len(targets), figsize=(4.2 * len(targets), 3.6 * len(ws)), squeeze=False)
    for i, w in enumerate(ws):
        for j, tname in enumerate(targets):
            ax = axes[i, j]
            sub = [r for r in recs if r["target"] == tname and r["workers"] == w]
            for s in dict.fromkeys(r["strategy"] for r in sub):
                rs = [r for r in sub if r["strategy"] == s]
                n = max(len(r["trajectory"]) for r in rs)
                col = 1 if s == "tpe" else 2
                med, lo, hi = [], [], []
                for k in range(n):
                    v = [r["trajectory"][min(k, len(r["trajectory"]) - 1)][col] for r in rs]
                    v = sorted(max(x, FLOOR) for x in v if x is not None)
                    med.append(statistics.median(v) if v else math.nan)
                    lo.append(quantile(v, 0.25) if v else math.nan)
                    hi.append(quantile(v, 0.75) if v else math.nan)
                ax.plot(range(n), med, "-", color=COLORS.get(s), label=s, lw=1.5)
                ax.fill_between(range(n), lo, hi, color=COLORS.get(s), alpha=0.12)
            ax.set_yscale("log")
            ax.set_title(f"{tname}, {w} worker(s)", fontsize=10)
            ax.set_xlabel("screening evaluations")
            if j == 0:
                ax.set_ylabel("mainline regret (median, IQR)")
            if i == 0 and j == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "quality.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return [str(path)]


def merge(out: Path, dirs: list[Path]) -> dict[str, Any]:
    """Pool the quality searches of several `evo bench --only quality --out DIR` runs (e.g. one per family,
    run one after another) into one result: cells, Holm over every test of the pool, crossover counts, PNG.
    The same seeds give the same searches, so the pool equals one run of the union of their sizes."""
    import json

    searches: list[dict[str, Any]] = []
    params: dict[str, Any] = {}
    for d in dirs:
        q = json.loads((Path(d) / "bench.json").read_text())["quality"]
        searches += q["searches"]
        params = params or dict(q["params"])
    params["budgets"] = sorted({int(b) for r in searches for b in r["at"]})
    params["workers"] = sorted({r["workers"] for r in searches})
    res: dict[str, Any] = {"params": params, "searches": searches, "merged_from": [str(d) for d in dirs]}
    res["cells"] = cells(res)
    res["cells_time"] = cells_time(res)
    res["crossover"] = crossover_stats(searches)
    out.mkdir(parents=True, exist_ok=True)
    plot(res, out)
    (out / "quality-merged.json").write_text(json.dumps({k: v for k, v in res.items() if k != "searches"}, indent=1, default=str))
    return res


if __name__ == "__main__":  # python -m evo.bench.quality OUT DIR [DIR ...]
    import sys

    merged = merge(Path(sys.argv[1]), [Path(a) for a in sys.argv[2:]])
    for row in table(merged):
        print(" | ".join(row))
