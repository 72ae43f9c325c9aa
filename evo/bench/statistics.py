"""Promotion statistics on the product's own code path: simulated worlds, the real engine.

Each repetition is a whole greedy ratchet run by the code that ships: the real `Study`, breeder,
judge (noise model, futility test, gate, paired SPRT), mainline, git commits and an in-memory
Optuna archive. Only two things are simulated, both outside the engine:

* the proposer (`WorldMutation`, a real `Mutation`): each child adds one change to its parent's
  file, drawn from an LLM-like mix (mostly neutral, some worse, a few better, some that crash);
  a change's true effect is written in the file, which only the world reads;
* the run (`Oracle`, the in-process executor's `evaluate`): the final loss is the true
  loss plus a seed offset that a change keeps only partly (`keep`), plus run-to-run noise the
  seed does not fix (`run_sd`); the progress curve converges to it, and a change's gain either
  shifts the whole curve (constant) or grows during training (`growing`).

The rules compared spend the same compute (a budget of run-seconds, `max_run_hours`, so a run
the futility test stops early costs only the part it ran):

* `evo`: the shipped defaults (`[sprt] enabled`);
* `fixed-seed`: autoresearch's literal rule, every candidate on one seed, keep if better
  (`--no-sprt`: the same seed is the screening seed);
* `fresh-seed`: keep if better on a run with a new seed each time (`--no-sprt` in a world whose
  runs draw their own seed);
* `median-pruner`, `wilcoxon-pruner` (not in the default list): evo with Optuna's MedianPruner or
  WilcoxonPruner as the early stop (`[sprt] pruner`), the same confirmation stage after it.

Reported per rule, over repetitions (world parameters drawn per repetition from the seed):
true gain of the final mainline (sigma units), no-gain commits per ratchet, runs per candidate,
the gain a single screening run reports beside the true one, and for `evo` the futility test's
savings and its stop rate on runs truly better by delta, split by constant and growing effects.
"""

from __future__ import annotations

import math
import random
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from evo.bench.common import bootstrap_ci, fmt, make_repo, pmap
from evo.executors.base import Job
from evo.executors.inprocess import Evaluation, Source
from operators.base import Context, Parent, Proposal

FILE = "model.py"
# evo with Optuna's pruners in place of its futility test: the same gate and promotion test after them
PRUNER_RULES = {"median-pruner": {"pruner": "median"}, "wilcoxon-pruner": {"pruner": "wilcoxon"}}
FULL = {"reps": 200, "budget": 300, "rules": ["evo", "fixed-seed", "fresh-seed"], "jobs": 2}
QUICK = {"reps": 4, "budget": 60, "rules": ["evo", "fixed-seed", "fresh-seed"], "jobs": 1}


@dataclass(frozen=True)
class World:
    """One simulated project. Units: the seed-to-seed sd of the final loss is 1."""

    rep: int
    keep: float = 0.5  # correlation of a seed's offset between two different codes
    run_sd: float = 0.2  # noise a fixed seed does not remove (GPU nondeterminism, data order)
    growing: float = 0.5  # share of changes whose gain grows during training (0 at start, full at the end)
    p_neutral: float = 0.55
    p_worse: float = 0.30
    p_better: float = 0.10  # the rest crash
    better_mean: float = 0.8  # mean gain of a better change (exponential)
    worse_sd: float = 1.0  # a worse change loses |N(0, worse_sd)|
    fresh_seeds: bool = False  # every run draws its own seed (the fresh-seed rule's world)

    @staticmethod
    def draw(rep: int) -> World:
        r = random.Random(f"world:{rep}")
        return World(rep=rep, keep=r.choice((0.0, 0.5, 0.9)), run_sd=r.choice((0.0, 0.2, 0.5)), growing=r.choice((0.0, 0.5, 1.0)),
                     better_mean=r.choice((0.5, 0.8, 1.2)))



class Oracle:
    """The world's runs: what a run of a candidate prints (the in-process executor's `evaluate`)."""

    def __init__(self, world: World) -> None:
        self.w, self.runs = world, 0
        self.finals: dict[int, float] = {}  # candidate index -> the final its screening run had coming (pruned or not)

    def __call__(self, src: Source, job: Job) -> Evaluation:
        w = self.w
        changes = parse(src.read(FILE))
        if any(c["crash"] for c in changes):
            return Evaluation(value=None, reason="ModuleNotFoundError (simulated crash)")
        self.runs += 1
        seed = 10_000 + self.runs if w.fresh_seeds else job.seed
        code = ",".join(sorted(c["id"] for c in changes))
        u = random.Random(f"u:{w.rep}:{seed}").gauss(0.0, 1.0)
        v = random.Random(f"v:{w.rep}:{seed}:{code}").gauss(0.0, 1.0)
        eps = random.Random(f"e:{w.rep}:{self.runs}").gauss(0.0, 1.0) * w.run_sd
        offset = w.keep * u + math.sqrt(1.0 - w.keep ** 2) * v
        final = 10.0 - sum(c["effect"] for c in changes) + offset + eps
        grow = sum(c["effect"] for c in changes if c["grows"])
        wobble = random.Random(f"w:{w.rep}:{self.runs}")
        curve = [(k / 10, round(final + 3.0 * (1 - k / 10) + grow * (1 - k / 10) + 0.3 * math.sqrt(1 - k / 10) * wobble.gauss(0, 1), 6))
                 for k in range(1, 11)]
        if job.role == "candidate":
            self.finals[job.index] = round(final, 6)
        return Evaluation(value=round(final, 6), seconds=1.0, progress=curve)


def parse(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.startswith("# change "):
            f = dict(kv.split("=", 1) for kv in line[len("# change "):].split())
            out.append({"id": f["id"], "effect": float(f["effect"]), "grows": f["grows"] == "1", "crash": f["crash"] == "1"})
    return out


def true_gain(text: str) -> float:
    return sum(c["effect"] for c in parse(text))


class WorldMutation:
    """A simulated LLM: each child is its parent plus one change drawn from the world's mix."""

    name = "world"

    def __init__(self, world: World) -> None:
        self.world = world

    def mutate(self, parent: Parent, rng: random.Random, context: Context) -> Proposal:
        w, r = self.world, rng.random()
        crash = r >= w.p_neutral + w.p_worse + w.p_better
        if r < w.p_neutral or crash:
            effect = 0.0
        elif r < w.p_neutral + w.p_worse:
            effect = -abs(rng.gauss(0.0, w.worse_sd))
        else:
            effect = rng.expovariate(1.0 / w.better_mean)
        grows = rng.random() < w.growing
        cid = f"{rng.getrandbits(40):010x}"
        line = f"# change id={cid} effect={effect:.6f} grows={int(grows)} crash={int(crash)}\n"
        return Proposal(files={FILE: parent.files[FILE] + line}, description=f"change {cid}")


# -- one ratchet ---------------------------------------------------------------------------------------
def ratchet(task: dict[str, Any]) -> dict[str, Any]:
    from evo import config as config_mod
    from evo.archive import Archive
    from evo.executors.inprocess import InProcessExecutor
    from evo.gitrepo import GitRepo
    from evo.search import search
    from operators.crossover import FitterResolver

    rule, rep, budget = task["rule"], task["rep"], task["budget"]
    # sizes' "world" overrides the drawn world's fields (e.g. {"p_better": 0}: every test is of a no-gain line)
    world = replace(World.draw(rep), fresh_seeds=rule == "fresh-seed", **task.get("world", {}))
    with tempfile.TemporaryDirectory(prefix="evo-stat-") as tmp:
        repo = make_repo(Path(tmp) / "repo", {FILE: "# a simulated project: its changes are listed below\n", "run.py": "print('simulated')\n"})
        name = f"{rule}-{rep}"
        over = {
            "study": {"name": name, "storage": f"memory://stat-{name}-{time.time_ns()}", "results": str(Path(tmp) / "results"), "seed": rep},
            "target": {"repo": str(repo), "mutable": [FILE], "run": "python3 run.py", "metric": "loss", "direction": "minimize"},
            "search": {"strategy": "greedy", "forever": True, "max_run_hours": budget / 3600.0, "workers": 1},
            "sprt": {"enabled": rule in PRUNER_RULES or rule == "evo", **task.get("sprt", {}), **PRUNER_RULES.get(rule, {})},
        }
        cfg = config_mod.load(None, over)
        oracle = Oracle(world)

        def make(r: GitRepo, template: Any) -> InProcessExecutor:
            return InProcessExecutor(r, template, 1, oracle)

        summary = search(cfg, WorldMutation(world), FitterResolver(), make, out=lambda line: None)
        archive = Archive(cfg.study.storage, name)
        return measure(task, world, summary, archive, GitRepo(repo), oracle.finals)


def measure(task: dict[str, Any], world: World, summary: dict[str, Any], archive: Any, repo: Any, finals: dict[int, float]) -> dict[str, Any]:
    attrs = archive.attrs
    trials = archive.trials()
    by_index: dict[int, Any] = {}
    for t in trials:
        if t.user_attrs.get("role") in ("baseline", "candidate"):
            by_index.setdefault(int(t.user_attrs["index"]), t)
    text = lambda sha: repo.read(sha, FILE).decode()  # noqa: E731
    promos = attrs.get("promotions", [])
    prev, commits, no_gain = attrs["base_commit"], [], 0
    for p in promos:
        gain = true_gain(text(p["candidate"])) - true_gain(text(prev))
        commits.append(gain)
        no_gain += gain <= 0
        prev = p["candidate"]
    tip = repo.ref(attrs["mainline"])
    gain = true_gain(text(tip))
    # the search's own head at the end (the last child's parent): how far the confirmed mainline lags it
    last_child = max((t for t in trials if t.user_attrs.get("role") == "candidate" and t.user_attrs.get("parent_indices")),
                     key=lambda t: int(t.user_attrs["index"]), default=None)
    head_gain = gain
    if last_child is not None:
        p0 = int(last_child.user_attrs["parent_indices"][0])
        head_gain = true_gain(text(by_index[p0].user_attrs["commit"] if p0 else attrs["base_commit"]))
    base_value = by_index[0].value
    last = by_index.get(int(promos[-1]["index"])) if promos else by_index[0]
    screened = (base_value - last.value) if promos and last is not None and last.value is not None else 0.0
    # what evo reports (`evo best`'s fresh gain): each step's gain on the seeds that did not select it, summed
    fresh = [p.get("gain") for p in promos]
    reported = sum(float(g) for g in fresh) if all(g is not None for g in fresh) else screened
    # the futility test, judged by the truth: runs of children whose own change is better by delta;
    # [stopped, runs, stopped though the run would have ended better than its parent's screening run
    # (the comparison that decides whether a child becomes the head or is tested at all)]
    delta = (attrs.get("noise") or {}).get("sigma_final", 1.0) * 1.25
    stops = {"constant": [0, 0, 0], "growing": [0, 0, 0]}
    first_seconds, saved = 0.0, 0.0
    for t in trials:
        if t.user_attrs.get("role") != "candidate" or "run_seconds" not in t.user_attrs:
            continue
        first_seconds += float(t.user_attrs["run_seconds"])
        if t.user_attrs.get("outcome") == "pruned":
            saved += 1.0 - float(t.user_attrs["run_seconds"])
        own = parse(text(t.user_attrs["commit"]))[-1] if t.user_attrs.get("commit") else None
        if own and own["effect"] >= delta and not own["crash"]:
            k = "growing" if own["grows"] else "constant"
            stops[k][1] += 1
            stops[k][0] += t.user_attrs.get("outcome") == "pruned"
            parent = by_index.get(int(t.user_attrs["parent_indices"][0])) if t.user_attrs.get("parent_indices") else None
            would = finals.get(int(t.user_attrs["index"]))
            stops[k][2] += (t.user_attrs.get("outcome") == "pruned" and parent is not None and parent.value is not None
                            and would is not None and would < parent.value)
    tests = [d for d in (attrs.get("decisions") or {}).values() if d.get("pairs")]
    # a test is of the whole line against the incumbent it was tested against (with breeding from the
    # head, a candidate brings every change since the mainline): no-gain = that difference <= 0
    code = lambda i: text(by_index[int(i)].user_attrs["commit"] if int(i) else attrs["base_commit"])  # noqa: E731
    null_tests = [d for i, d in (attrs.get("decisions") or {}).items()
                  if d.get("pairs") and true_gain(code(i)) - true_gain(code(d.get("against", 0))) <= 0]
    return {
        "rule": task["rule"], "rep": task["rep"], "world": asdict(world), "budget": task["budget"],
        "gain": gain, "head_gain": head_gain, "commits": len(promos), "no_gain_commits": no_gain, "commit_gains": commits,
        "candidates": summary["candidates"], "runs": summary["spent_runs"], "run_seconds": summary["run_seconds"],
        "runs_per_candidate": summary["spent_runs"] / max(1, summary["candidates"]),
        "seconds_per_candidate": summary["run_seconds"] / max(1, summary["candidates"]),
        "reported_gain": reported, "screened_gain": screened, "tests": len(tests), "null_tests": len(null_tests),
        "null_accepts": sum(1 for d in null_tests if d.get("decision") == "accept"),
        "futility_stops": stops, "futility_saved_share": saved / (first_seconds + saved) if first_seconds + saved else 0.0,
        "delta": delta,
    }


# -- the part ------------------------------------------------------------------------------------------
def run(quick: bool, out: Path, seed: int = 0, sizes: dict[str, Any] | None = None, log: Any = print) -> dict[str, Any]:
    p = dict(QUICK if quick else FULL, **(sizes or {}))
    tasks = [{"rule": rule, "rep": seed + r, "budget": p["budget"], "sprt": p.get("sprt", {}), "world": p.get("world", {})}
             for r in range(p["reps"]) for rule in p["rules"]]
    t0 = time.time()
    log(f"  {len(tasks)} ratchets ({p['reps']} worlds x {len(p['rules'])} rules), {p['budget']} run-seconds each, {p['jobs']} at a time")
    recs = pmap(ratchet, tasks, p["jobs"])
    res: dict[str, Any] = {"params": p, "wall_s": round(time.time() - t0, 1), "records": recs, "rules": {}}
    for rule in p["rules"]:
        rs = [r for r in recs if r["rule"] == rule]
        res["rules"][rule] = summarise(rs)
    base = {r["rep"]: r["gain"] for r in recs if r["rule"] == "fixed-seed"}
    fresh = {r["rep"]: r["gain"] for r in recs if r["rule"] == "fresh-seed"}
    if "evo" in res["rules"]:
        evo = {r["rep"]: r["gain"] for r in recs if r["rule"] == "evo"}
        mean = lambda d: statistics.fmean(d.values()) if d else math.nan  # noqa: E731
        res["ratios"] = {"evo/fixed-seed": mean(evo) / mean(base) if base and mean(base) else math.nan,
                         "evo/fresh-seed": mean(evo) / mean(fresh) if fresh and mean(fresh) else math.nan}
    for rule, s in res["rules"].items():
        log(f"  {rule:10} true gain {fmt(s['gain']['mean'])} ± {fmt(s['gain']['se'])}  no-gain commits {fmt(s['no_gain_commits']['mean'])}"
            f"  runs/candidate {fmt(s['runs_per_candidate']['mean'])}  reported/true {fmt(s['reported_over_true'])}")
        fa = s["false_acceptance"]
        if fa["tests"]:
            log(f"  {'':10} no-gain lines' tests accepted {fa['accepted']} of {fa['tests']}"
                f" (95% interval {fmt(100 * fa['ci95'][0])}-{fmt(100 * fa['ci95'][1])}%)")
    return res


def summarise(rs: list[dict[str, Any]]) -> dict[str, Any]:
    def stat(key: str) -> dict[str, float]:
        xs = [float(r[key]) for r in rs]
        m = statistics.fmean(xs) if xs else math.nan
        se = statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else math.nan
        return {"mean": m, "se": se, "median": statistics.median(xs) if xs else math.nan,
                "ci95_median": list(bootstrap_ci(xs)) if len(xs) > 2 else [math.nan, math.nan]}

    stops = {k: [sum(r["futility_stops"][k][j] for r in rs) for j in range(3)] for k in ("constant", "growing")}
    tests, accepts = sum(r["null_tests"] for r in rs), sum(r["null_accepts"] for r in rs)
    true_total, reported_total = sum(r["gain"] for r in rs), sum(r["reported_gain"] for r in rs)
    screened_total = sum(r.get("screened_gain", r["reported_gain"]) for r in rs)
    return {
        "n": len(rs), "gain": stat("gain"), "no_gain_commits": stat("no_gain_commits"), "commits": stat("commits"),
        "runs_per_candidate": stat("runs_per_candidate"), "seconds_per_candidate": stat("seconds_per_candidate"),
        "candidates": stat("candidates"), "futility_saved_share": stat("futility_saved_share"),
        "reported_over_true": reported_total / true_total if true_total else math.nan,
        "screened_over_true": screened_total / true_total if true_total else math.nan,
        "false_acceptance": {"accepted": accepts, "tests": tests, "rate": accepts / tests if tests else math.nan,
                             "ci95": clopper_pearson(accepts, tests),
                             # by the world's run noise: worlds of one bench share their draws, so a split that
                             # looks telling in one set of worlds must be checked on another (seed=...)
                             "by_run_sd": {str(k): [sum(r["null_accepts"] for r in rs if r["world"]["run_sd"] == k),
                                                    sum(r["null_tests"] for r in rs if r["world"]["run_sd"] == k)]
                                           for k in sorted({r["world"]["run_sd"] for r in rs})}},
        "futility_stop_rate_delta_better": {k: {"stopped": v[0], "runs": v[1], "rate": v[0] / v[1] if v[1] else math.nan,
                                                "stopped_would_beat_parent": v[2], "rate_would_beat_parent": v[2] / v[1] if v[1] else math.nan}
                                            for k, v in stops.items()},
    }


def clopper_pearson(k: int, n: int, level: float = 0.95) -> list[float]:
    """The exact binomial interval of k successes in n (the false acceptance rate's Monte-Carlo error)."""
    if n == 0:
        return [math.nan, math.nan]
    from scipy.stats import beta

    a = (1.0 - level) / 2.0
    lo = float(beta.ppf(a, k, n - k + 1)) if k > 0 else 0.0
    hi = float(beta.ppf(1.0 - a, k + 1, n - k)) if k < n else 1.0
    return [lo, hi]


def table(res: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for rule, s in res.get("rules", {}).items():
        rows.append((f"statistics {rule}", f"gain {fmt(s['gain']['mean'])}±{fmt(s['gain']['se'])} sigma, "
                     f"{fmt(s['no_gain_commits']['mean'])} no-gain commits, {fmt(s['runs_per_candidate']['mean'])} runs/candidate"))
    return rows

