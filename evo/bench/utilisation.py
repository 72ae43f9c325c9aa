"""Worker utilisation with 4 slots when a share of runs crash or are pruned; the controller's throughput on many slots.

The target's runs sleep through 10 progress points (durations spread over [dmin, dmax], so runs
overlap unevenly); a candidate's fate is drawn from a hash of (individual, seed): a share
crash part-way (exit 1), a share are clearly worse (+1.0, which the futility test prunes after
a checkpoint or two), the rest are near the baseline (sd 0.05 seed noise; 30% of them better by
up to 0.1, so some go to a promotion test). The population strategy runs with SPRT on, once with
steady_state = true (refill a slot as soon as it frees) and once false (a generation barrier).

utilisation = the executor's figure (seconds a slot held a job: export + run + clean-up, over
wall x slots, what `evo search` stores as the study's `utilisation` attr); run_utilisation =
the runs' own seconds over the search's wall x slots; controller_busy = the share of the wall
the single controller thread spent proposing, recording and printing (evo.bench.probe).

No-op throughput (issue 18's controller figure): a random search whose runs only sleep
(`sleep 2; echo score: $RANDOM`) on 32 slots, statistics off: candidates per second, utilisation
and the controller's milliseconds per candidate, with the machine's load beside them. The same on
Ray (`noop_executor = "ray"`: evo's own local Ray instance, which declares as many CPUs as there
are workers; issue 18 asks for 64 slots and 5 s runs):

    EVO_BENCH_SIZES='{"utilisation": {"reps": 0, "noop_workers": 64, "noop_seconds": 5,
      "noop_candidates": 640, "noop_executor": "ray"}}' evo bench --only utilisation
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from evo.bench.common import Scratch, Timer, bootstrap_ci, fmt, make_config, make_repo, run_search, study_trials
from evo.bench.probe import Probe

EXTRA_ROLES = ("confirm", "replicate", "rerun")  # the statistics' runs beyond each candidate's screening run

RUN_PY = '''\
import hashlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import work

DMIN, DMAX, CRASH, BAD = {dmin!r}, {dmax!r}, {crash!r}, {bad!r}
idx = int(os.environ.get("EVO_INDIVIDUAL", "0"))
seed = int(os.environ.get("EVO_SEED", "0"))
role = os.environ.get("EVO_ROLE", "")
h = hashlib.sha256(f"{{idx}}:{{seed}}:{{work.A}}:{{work.B}}".encode()).digest()
u = [b / 255.0 for b in h[:6]]
duration = DMIN + (DMAX - DMIN) * u[0]
fate = "ok"
if role == "candidate" and idx > 0:
    fate = "crash" if u[1] < CRASH else ("bad" if u[1] < CRASH + BAD else "ok")
g = hashlib.sha256(f"gain:{{idx}}".encode()).digest()
gain = 0.1 * g[0] / 255.0 if idx > 0 and g[1] < 77 else 0.0  # 30% of candidates are better by up to 0.1
noise = 0.05 * (u[2] + u[3] + u[4] - 1.5) * 2.0
value = 1.0 - gain + noise + (1.0 if fate == "bad" else 0.0)
crash_at = 1 + int(u[5] * 9)
for k in range(1, 11):
    time.sleep(duration / 10)
    if fate == "crash" and k == crash_at:
        print("boom", flush=True)
        sys.exit(1)
    print(f"progress: {{k / 10:.1f}} score: {{value + 0.5 * (1 - k / 10):.5f}}", flush=True)
print(f"score: {{value:.5f}}")
'''

FULL = {"population": 8, "generations": 4, "reps": 2, "dmin": 0.5, "dmax": 2.5, "crash": 0.15, "bad": 0.25, "workers": 4,
        "noop_workers": 32, "noop_seconds": 2.0, "noop_candidates": 960, "noop_executor": "local"}
QUICK = {"population": 4, "generations": 2, "reps": 1, "dmin": 0.2, "dmax": 0.8, "crash": 0.15, "bad": 0.25, "workers": 4,
         "noop_workers": 8, "noop_seconds": 0.5, "noop_candidates": 40, "noop_executor": "local"}
# issue 18's controller figure: runs that do nothing but wait, on many slots, so the controller is the only limit
NOOP = 'sleep {seconds}; echo "score: $RANDOM"'


def run(quick: bool, out: Path, seed: int = 0, sizes: dict[str, Any] | None = None, log: Any = print) -> dict[str, Any]:
    p = dict(QUICK if quick else FULL, **(sizes or {}))
    files = {"work.py": "A = 1.0\nB = 3\nC = 0.5\nD = 2.0\n",
             "run.py": RUN_PY.format(dmin=p["dmin"], dmax=p["dmax"], crash=p["crash"], bad=p["bad"])}
    res: dict[str, Any] = {"params": p, "runs": []}
    with Scratch(out, "utilisation") as work:
        repo = make_repo(work / "repo", files)
        for rep in range(p["reps"]):
            for steady in (True, False):
                name = f"util-{'steady' if steady else 'barrier'}-{rep}"
                cfg = make_config(work, name, repo, run="{python} run.py", mutable=["work.py"], strategy="population",
                                  population=p["population"], generations=p["generations"], workers=p["workers"],
                                  seed=seed + rep, sprt=True, timeout=30.0, search={"steady_state": steady})
                with Probe() as probe:
                    t = Timer()
                    summary = run_search(cfg, work / f"{name}.log")
                    wall = t.seconds
                trials = study_trials(cfg)
                r = describe_search(trials, summary, wall, p["workers"]) | {"steady_state": steady, "rep": rep}
                # the one controller thread proposes, records and prints every run: its busy share bounds the slots' share
                busy = sum(e["s"] for k in ("propose", "record", "progress", "recorded") for e in probe.events[k])
                r["controller_busy"] = round(busy / wall, 4)
                res["runs"].append(r)
                log(f"  steady_state={str(steady).lower():5} rep {rep}: utilisation {r['utilisation']:.2f} (runs {r['run_utilisation']:.2f}), "
                    f"{r['runs']} runs, {r['pruned']} pruned, {r['crashed']} crashed, wall {r['wall_s']:.1f} s, controller busy {r['controller_busy']:.2f}")
        if p.get("noop_candidates"):
            res["noop"] = noop_throughput(work, repo, p, seed, log)
    for steady in (True, False):
        rows = [r for r in res["runs"] if r["steady_state"] == steady]
        if not rows:  # reps = 0: the no-op figure alone
            continue
        key = "steady" if steady else "barrier"
        u = [r["utilisation"] for r in rows]
        ru = [r["run_utilisation"] for r in rows]
        res[key] = {
            "utilisation_median": statistics.median(u), "utilisation_ci95": bootstrap_ci(u),
            "run_utilisation_median": statistics.median(ru),
            "controller_busy_median": statistics.median(r["controller_busy"] for r in rows), "wall_s_median": statistics.median(r["wall_s"] for r in rows),
            "pruned_share": sum(r["pruned"] for r in rows) / max(1, sum(r["screening_runs"] for r in rows)),
            "crashed_share": sum(r["crashed"] for r in rows) / max(1, sum(r["screening_runs"] for r in rows)),
        }
    return res


def noop_throughput(work: Path, repo: Path, p: dict[str, Any], seed: int, log: Any) -> dict[str, Any]:
    """A random search (every child a mutant of the baseline: the cheapest plan) of no-op runs on many
    slots, statistics off: candidates per second sustained, worker utilisation, the controller's busy share."""
    from evo.bench.common import loadavg

    name = "util-noop"
    kind = p["noop_executor"]
    cfg = make_config(work, name, repo, run=NOOP.format(seconds=p["noop_seconds"]), mutable=["work.py"], strategy="random",
                      population=p["noop_workers"], generations=-(-p["noop_candidates"] // p["noop_workers"]), workers=p["noop_workers"],
                      seed=seed, sprt=False, timeout=30.0, executor={"kind": kind})
    with Probe() as probe:
        t = Timer()
        summary = run_search(cfg, work / f"{name}.log")
        wall = t.seconds
    busy = sum(e["s"] for k in ("propose", "record", "progress", "recorded") for e in probe.events[k])
    runs = len(probe.events["run_job"])
    ends = sorted(e["end"] for e in probe.events["record"])
    lo, hi = len(ends) // 10, len(ends) - 1 - len(ends) // 10  # the middle 80% of the recorded runs: no start-up, no tail
    sustained = (hi - lo) / (ends[hi] - ends[lo]) if hi > lo and ends[hi] > ends[lo] else None
    steady = _window_utilisation(probe.events["work"], ends[lo], ends[hi], p["noop_workers"]) if hi > lo and probe.events["work"] else None  # local slots only
    out = {"executor": kind, "workers": p["noop_workers"], "run_seconds": p["noop_seconds"], "candidates": summary["candidates"], "runs": runs,
           "wall_s": round(wall, 2), "candidates_per_s": round(summary["candidates"] / wall, 2),
           "sustained_per_s": round(sustained, 2) if sustained else None, "slots_bound_per_s": round(p["noop_workers"] / p["noop_seconds"], 2), "utilisation": round(float(summary["utilisation"]), 4),
           "steady_utilisation": round(steady, 4) if steady is not None else None,
           "controller_busy": round(busy / wall, 4), "controller_ms_per_candidate": round(1000 * busy / max(1, summary["candidates"]), 1),
           "loadavg": loadavg()}
    log(f"  no-op runs of {p['noop_seconds']} s on {p['noop_workers']} {kind} slots (load {out['loadavg']}): {out['candidates']} candidates in "
        f"{out['wall_s']} s = {out['candidates_per_s']} per s ({out['sustained_per_s']} sustained; the slots allow {out['slots_bound_per_s']}), utilisation {out['utilisation']:.2f} "
        f"({out['steady_utilisation']} sustained), controller busy {out['controller_busy']:.2f} "
        f"({out['controller_ms_per_candidate']} ms per candidate)")
    return out


def _window_utilisation(work: list[dict[str, Any]], t0: float, t1: float, slots: int) -> float | None:
    """The share of slot-seconds between t0 and t1 that slots spent holding a job (export, run, clean-up):
    the search's utilisation without its start (the baseline runs alone before anything can be bred
    from it) and its end (the last runs finish one by one)."""
    if t1 <= t0:
        return None
    held = sum(max(0.0, min(e["end"], t1) - max(e["end"] - e["s"], t0)) for e in work)
    return held / ((t1 - t0) * slots)


def describe_search(trials: list[Any], summary: dict[str, Any], wall: float, workers: int) -> dict[str, Any]:
    ran = [t for t in trials if t.user_attrs.get("outcome") in ("complete", "crashed", "timeout", "invalid", "pruned")]
    screening = [t for t in ran if t.user_attrs.get("role") == "candidate"]
    run_s = sum(float(t.user_attrs.get("run_seconds", 0.0)) for t in ran)
    timeline = []
    t0 = min((t.datetime_start for t in ran if t.datetime_start), default=None)
    for t in ran:
        if t.datetime_start and t.datetime_complete and t0:
            timeline.append([t.user_attrs.get("worker", 0), round((t.datetime_start - t0).total_seconds(), 3),
                             round((t.datetime_complete - t0).total_seconds(), 3), t.user_attrs.get("outcome"), t.user_attrs.get("role")])
    return {
        "utilisation": round(float(summary["utilisation"]), 4), "run_utilisation": round(run_s / (wall * workers), 4),
        "wall_s": round(wall, 2), "runs": len(ran), "screening_runs": len(screening), "candidates": summary["candidates"],
        "pruned": sum(1 for t in screening if t.user_attrs.get("outcome") == "pruned"),
        "crashed": sum(1 for t in screening if t.user_attrs.get("outcome") == "crashed"),
        "confirm_runs": sum(1 for t in ran if t.user_attrs.get("role") in EXTRA_ROLES),
        "promotions": summary["promotions"], "run_seconds": round(run_s, 2), "timeline": timeline,
    }


def table(res: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for key, label in (("steady", "steady_state = true"), ("barrier", "steady_state = false (barrier)")):
        s = res.get(key)
        if s:
            rows.append((f"utilisation, 4 slots, {label}", f"{fmt(s['utilisation_median'])} (runs alone {fmt(s['run_utilisation_median'])}; controller busy {fmt(s['controller_busy_median'])}; "
                         f"{s['pruned_share']:.0%} pruned, {s['crashed_share']:.0%} crashed; wall {fmt(s['wall_s_median'])} s)"))
    n = res.get("noop")
    if n:
        rows.append((f"no-op {n['run_seconds']} s runs, {n['workers']} {n.get('executor', 'local')} slots (load {n['loadavg']}): candidates/s (sustained), utilisation (sustained), controller ms/candidate",
                     f"{fmt(n['candidates_per_s'])} ({fmt(n['sustained_per_s'])}), {fmt(n['utilisation'])} ({fmt(n.get('steady_utilisation'))}), {fmt(n['controller_ms_per_candidate'])}"))
    return rows


def plot(res: dict[str, Any], out: Path) -> list[str]:
    from evo.bench.common import pyplot

    plt = pyplot()
    first = {r["steady_state"]: r for r in reversed(res.get("runs", [])) if r["rep"] == 0}
    if not first:
        return []
    fig, axes = plt.subplots(len(first), 1, figsize=(12, 2.2 * len(first) + 1), sharex=True, squeeze=False)
    colors = {"complete": "tab:green", "pruned": "tab:orange", "crashed": "tab:red"}
    for ax, steady in zip(axes[:, 0], sorted(first, reverse=True)):
        r = first[steady]
        for w, a, b, outcome, role in r["timeline"]:
            ax.barh(w, b - a, left=a, color=colors.get(outcome, "tab:gray"), edgecolor="black", lw=0.3,
                    hatch="//" if role in EXTRA_ROLES else None)
        ax.set_yticks(range(res["params"]["workers"]))
        ax.set_ylabel("slot")
        ax.set_title(f"steady_state = {str(steady).lower()}: utilisation {r['utilisation']:.2f}, wall {r['wall_s']:.1f} s "
                     "(green complete, orange pruned, red crashed; hatched: replicate/confirm)", fontsize=9)
    axes[-1, 0].set_xlabel("seconds since the first run started")
    fig.tight_layout()
    path = out / "utilisation.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [str(path)]
