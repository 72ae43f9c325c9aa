"""Engine overhead: the time per candidate spent outside the run, and how it grows with the study.

1. A greedy search with a no-op run (`v=$RANDOM; echo "progress: 0.5 score: $v"; echo "score: $v"`,
   one worker, SPRT off): per run, cycle = time between the loop's successive "run recorded"
   moments; overhead = cycle - the run's own seconds (the trial's run_seconds). Median and p95,
   and a breakdown by phase (evo.bench.probe). A population search (crossover, SPRT on) is
   measured the same way, per run.
2. Scale: a real study grown synthetically to N trials and N candidate refs (bulk SQL insert of
   trials with evo's attrs, `git fast-import` commits, `git update-ref --stdin` refs, and the
   matching `decisions`/`logbook` study attrs), then: ref listing, resume (`Study(...)` +
   `Study.load()`), study listing, inspection (`evo.load_study` and its helpers), and a few more
   candidates of the same search, timed as in 1.
"""

from __future__ import annotations

import datetime
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from evo import lineage
from evo.bench.common import Scratch, Timer, describe, fmt, git, loadavg, make_config, make_repo, run_search, study_attrs, study_trials
from evo.bench.probe import Probe

FILES = {"target.py": (
    "# overhead benchmark target: the run command ignores these; the operator perturbs them\n"
    "X = 1.0\nY = 5\nZ = 0.5\nW = 100\nRATE = 0.001\nFLAG = False\n"
), "README.md": "overhead benchmark\n"}
NOOP = 'v=$RANDOM; echo "progress: 0.5 score: $v"; echo "score: $v"'

FULL = {"candidates": 1000, "population_candidates": 103, "scale": [1000, 10000, 100000], "scale_candidates": 20, "bare": 30, "resumes": 2}
QUICK = {"candidates": 100, "population_candidates": 0, "scale": [500], "scale_candidates": 5, "bare": 5, "resumes": 2}


def run(quick: bool, out: Path, seed: int = 0, sizes: dict[str, Any] | None = None, log: Any = print) -> dict[str, Any]:
    p = dict(QUICK if quick else FULL, **(sizes or {}))
    res: dict[str, Any] = {"params": p, "command": NOOP, "notes": [
        "one worker, so runs are sequential; overhead = cycle - run_seconds, where a cycle ends when the loop has recorded a run",
        "times are wall-clock on a shared machine: compare figures from the same run only",
    ]}
    with Scratch(out, "overhead") as work:
        res["bare"] = bare_command(work, p["bare"])
        log(f"  bare no-op: subprocess {res['bare']['subprocess_ms']['median']} ms, evo.runner.run {res['bare']['runner_ms']['median']} ms (median)")
        res["greedy"] = measure(work, "greedy", p["candidates"], seed=seed)
        g = res["greedy"]
        log(f"  greedy, {g['candidates']} candidates: overhead median {g['overhead_ms']['median']} ms, p95 {g['overhead_ms']['p95']} ms per run")
        if p["population_candidates"]:
            res["population_sprt"] = measure(work, "population", p["population_candidates"], seed=seed, sprt=True)
            q = res["population_sprt"]
            log(f"  population+SPRT, {q['candidates']} candidates / {q['runs']} runs: overhead median {q['overhead_ms']['median']} ms, p95 {q['overhead_ms']['p95']} ms per run")
        res["scale"] = [scale_point(work, 0, p["scale_candidates"], seed, p["resumes"])]
        for n in p["scale"]:
            res["scale"].append(scale_point(work, n, p["scale_candidates"], seed, p["resumes"]))
            s = res["scale"][-1]
            log(f"  scale {s['trials']} trials (load {s['loadavg']}): engine time per candidate {s['candidates']['overhead_ms'].get('median')} ms "
                f"(median), resume {s['resume_s']['median']} s, evo trials --format csv {s['cli_s'].get('trials_csv')} s, "
                f"evo best {s['cli_s'].get('best')} s, load_study().dataframe() {s['inspection'].get('load_and_dataframe_s')} s, "
                f"refs listing {s['refs_listing_s']} s")
        first, last = res["scale"][1:2], res["scale"][-1:]
        if first and last and first[0] is not last[0]:
            a, b = first[0]["candidates"]["overhead_ms"].get("median"), last[0]["candidates"]["overhead_ms"].get("median")
            if a and b:
                res["per_candidate_growth"] = round(b / a, 2)  # issue 18: <= 1.2 from 1,000 to 100,000 trials
                log(f"  engine time per candidate at {last[0]['trials']} trials / at {first[0]['trials']}: {res['per_candidate_growth']}x")
    return res


# -- 1. per-candidate overhead ---------------------------------------------------------------------------
def bare_command(work: Path, n: int) -> dict[str, Any]:
    """What the no-op command costs by itself, and through evo's runner (its polling included)."""
    from evo.runner import RunSpec
    from evo.runner import run as runner_run

    sub, via = [], []
    for i in range(n):
        t = Timer()
        subprocess.run(["bash", "-c", NOOP], capture_output=True)
        sub.append(t.seconds)
        spec = RunSpec(command=NOOP, cwd=work, env={"PATH": "/usr/bin:/bin"}, timeout=10, log_path=work / "bare" / f"{i}.log", metric="score")
        via.append(runner_run(spec).seconds)
    return {"subprocess_ms": describe(sub, 1000, 2), "runner_ms": describe(via, 1000, 2)}


def measure(work: Path, strategy: str, candidates: int, seed: int = 0, sprt: bool = False) -> dict[str, Any]:
    name = f"oh-{strategy}{'-sprt' if sprt else ''}"
    repo = make_repo(work / name, FILES)
    if strategy == "population":
        mu = 8
        gens = max(1, -(-(candidates - (mu - 1)) // mu))
        cfg = make_config(work, name, repo, run=NOOP, mutable=["target.py"], strategy="population", population=mu,
                          generations=gens, seed=seed, sprt=sprt)
    else:
        cfg = make_config(work, name, repo, run=NOOP, mutable=["target.py"], strategy=strategy, generations=candidates, seed=seed, sprt=sprt)
    with Probe() as probe:
        t = Timer()
        summary = run_search(cfg, work / f"{name}.log")
        wall = t.seconds
    out = probe.summary(summary["candidates"], wall)
    out |= {"strategy": strategy, "sprt": sprt, "study": {k: summary.get(k) for k in ("candidates", "evaluated", "failed", "pruned", "duplicates", "runs", "promotions")}}
    runs = probe.runs()
    out["trend_ms"] = trend([r["overhead"] * 1000 for r in runs])
    out["series_ms"] = [round(r["overhead"] * 1000, 2) for r in runs]
    return out


def trend(xs: list[float], bins: int = 10) -> list[dict[str, Any]]:
    """Median overhead per consecutive block of runs: does it grow with the study?"""
    if not xs:
        return []
    size = max(1, -(-len(xs) // bins))
    return [{"from": i, "to": min(len(xs), i + size), "median": round(statistics.median(xs[i:i + size]), 2)}
            for i in range(0, len(xs), size)]


# -- 2. scale -----------------------------------------------------------------------------------------------
def scale_point(work: Path, n: int, k: int, seed: int = 0, n_resumes: int = 3) -> dict[str, Any]:
    """A greedy study with n synthetic trials and refs on top of 5 real ones; then timings."""
    from evo.archive import list_studies
    from evo.wiring import build_operators
    from evo.gitrepo import GitRepo
    from evo.study import Study

    name = f"scale-{n}"
    repo = make_repo(work / name, FILES)
    cfg = make_config(work, name, repo, run=NOOP, mutable=["target.py"], strategy="greedy", generations=5, seed=seed)
    run_search(cfg)
    t = Timer()
    if n:
        grow(cfg, repo, n, seed)
    built = t.seconds
    url = cfg.study.storage
    gr = GitRepo(repo)
    ns = f"refs/evo/{name}"
    point: dict[str, Any] = {"trials_added": n, "build_s": round(built, 2), "loadavg": loadavg()}

    t = Timer()
    refs = gr.refs(f"{ns}/c/")
    point["refs_listing_s"] = round(t.seconds, 4)
    point["refs"] = len(refs)
    git(repo, "pack-refs", "--all")
    t = Timer()
    gr.refs(f"{ns}/c/")
    point["refs_listing_packed_s"] = round(t.seconds, 4)

    resumes, trials_read = [], []
    for _ in range(n_resumes):
        t = Timer()
        st = Study(cfg, *build_operators(cfg), log=lambda s: None)
        st.load()
        resumes.append(t.seconds)
        t = Timer()
        ts = st.archive.trials()
        trials_read.append(t.seconds)
    point["trials"] = len(ts)
    point["individuals"] = len(st.pop)
    point["resume_s"] = describe(resumes, 1, 3)
    point["archive_trials_s"] = describe(trials_read, 1, 3)
    t = Timer()
    list_studies(url)
    point["study_listing_s"] = round(t.seconds, 3)
    point["inspection"] = inspection(name, url)
    point["cli_s"] = cli_timings(name, url)

    made = st.made
    cfg2 = _with_generations(cfg, made + k)
    with Probe() as probe:
        t = Timer()
        summary = run_search(cfg2)
        wall = t.seconds
    point["candidates"] = probe.summary(summary["candidates"] - made, wall, skip=1)
    return point


def _with_generations(cfg: Any, generations: int) -> Any:
    from evo.config import with_overrides

    return with_overrides(cfg, search={"generations": generations})


def cli_timings(name: str, url: str) -> dict[str, Any]:
    """`evo trials --format csv` and `evo best` as a user runs them: a fresh interpreter each (its
    imports included), output thrown away; wall seconds."""
    out: dict[str, Any] = {}
    for key, args in (("trials_csv", ["trials", name, "--format", "csv"]), ("best", ["best", name])):
        t = Timer()
        proc = subprocess.run([sys.executable, "-m", "evo", *args, "--storage", url], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        out[key] = round(t.seconds, 3)
        if proc.returncode:
            out[f"{key}_error"] = proc.stderr.decode(errors="replace")[-300:]
    return out


def inspection(name: str, url: str) -> dict[str, Any]:
    """evo's Python API on the grown study (each call timed; an API that fails is reported, not fatal)."""
    out: dict[str, Any] = {}
    try:
        import evo

        t = Timer()
        s = evo.load_study(name, url)
        n = len(s.evo_trials)
        out["load_trials_s"] = round(t.seconds, 3)
        out["trials"] = n
        t = Timer()
        members = s.members()
        out["members_s"] = round(t.seconds, 3)
        out["members"] = len(members)
        out["load_and_members_s"] = round(out["load_trials_s"] + out["members_s"], 3)
        for what in ("best", "mainline", "history"):
            t = Timer()
            getattr(s, what)()
            out[f"{what}_s"] = round(t.seconds, 3)
        try:
            t = Timer()
            s.dataframe()
            out["dataframe_s"] = round(t.seconds, 3)
            t = Timer()
            evo.load_study(name, url).dataframe()  # from nothing read, as a notebook's first cell
            out["load_and_dataframe_s"] = round(t.seconds, 3)
        except Exception as e:  # noqa: BLE001 - pandas may be absent
            out["dataframe_error"] = str(e)[:200]
    except Exception as e:  # noqa: BLE001 - the inspection API is young; report what broke
        out["error"] = f"{type(e).__name__}: {e}"[:300]
    return out


def grow(cfg: Any, repo: Path, n: int, seed: int) -> None:
    """Add n candidates to a finished greedy study, as if it had run them: commits, refs, trials, attrs."""
    name = cfg.study.name
    attrs = study_attrs(cfg)
    trials = study_trials(cfg)
    base = attrs["base_commit"]
    template = next(t for t in trials if t.user_attrs.get("role") == "candidate" and t.user_attrs.get("outcome") == "complete")
    start = max(int(t.user_attrs["index"]) for t in trials) + 1
    text = git(repo, "show", f"{base}:target.py") + "\n"
    rng = random.Random(seed)

    # commits: one per candidate, each a child of the baseline with its own tree
    stream = []
    for i in range(n):
        idx = start + i
        content = text.replace("X = 1.0", f"X = {1.0 + (i + 1) * 1e-5:.6f}").encode()
        msg = lineage.child_message(f"X 1.0 -> {1.0 + (i + 1) * 1e-5:.6f}", name, idx, "constants", idx, (0,)).encode()
        stream += [b"commit refs/bench/synth\n", f"mark :{i + 1}\n".encode(), b"committer evo <evo@localhost> 1700000000 +0000\n",
                   f"data {len(msg)}\n".encode(), msg, f"from {base}\n".encode(), b"M 100644 inline target.py\n",
                   f"data {len(content)}\n".encode(), content, b"\n"]
    marks = repo / ".git" / "bench-marks"
    subprocess.run(["git", "-C", str(repo), "fast-import", "--quiet", "--force", f"--export-marks={marks}"],
                   input=b"".join(stream), check=True, capture_output=True)
    shas = {}
    for line in marks.read_text().splitlines():
        mark, sha = line.split()
        shas[int(mark[1:])] = sha
    marks.unlink()
    git(repo, "update-ref", "-d", "refs/bench/synth")
    commits = [shas[i + 1] for i in range(n)]
    trees = subprocess.run(["git", "-C", str(repo), "cat-file", "--batch-check=%(objectname)"], check=True, capture_output=True,
                           input="".join(f"{c}^{{tree}}\n" for c in commits).encode()).stdout.decode().split()
    refs = "".join(f"create refs/evo/{name}/c/{start + i:05d} {c}\n" for i, c in enumerate(commits))
    subprocess.run(["git", "-C", str(repo), "update-ref", "--stdin"], input=refs.encode(), check=True, capture_output=True)

    # trials: the template candidate's attrs with this candidate's facts
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    rows = []
    for i, (c, tree) in enumerate(zip(commits, trees)):
        idx = start + i
        v = float(rng.randrange(32768))
        a = dict(template.user_attrs)
        a.update({"index": idx, "commit": c, "tree": tree, "branch": f"refs/evo/{name}/c/{idx:05d}", "parents": [base], "parent_indices": [0],
                  "description": f"X 1.0 -> {1.0 + (i + 1) * 1e-5:.6f}", "generation": idx, "role": "candidate", "outcome": "complete",
                  "metrics": {"score": v}, "log": str(Path(a.get("log", "")).with_name(f"{idx:05d}-seed{a.get('seed', 0)}.log")), "run_seconds": 0.02})
        rows.append({"value": v, "attrs": a, "intermediate": {500: v}, "start": now, "end": now})
    bulk_add_trials(cfg.study.storage, name, rows)

    # study facts a greedy search with SPRT off would have: one decision and one logbook row per candidate
    best = min((r["value"] for r in rows), default=0.0)
    facts = {}
    for i, r in enumerate(rows):
        facts[f"evo:decisions:{start + i}"] = {"decision": "untested", "time": time.time()}
        facts[f"evo:logbook:{start + i}"] = {"gen": start + i, "evals": 1, "best": best, "median": r["value"], "failed": 0,
                                             "pruned": 0, "seconds": 1.0}
    bulk_add_system_attrs(cfg.study.storage, name, facts)


def bulk_add_trials(url: str, study_name: str, rows: list[dict[str, Any]]) -> None:
    """Insert COMPLETE trials in one transaction with the archive's own writer (`evo.archive.insert_trials`,
    plain SQL in Optuna's schema): `Study.add_trials` spends two SQL round trips per user attr."""
    import optuna

    from evo.archive import insert_trials

    storage = optuna.storages.RDBStorage(url)
    try:
        sid = storage.get_study_id_from_name(study_name)
        trials = [optuna.trial.FrozenTrial(number=-1, state=optuna.trial.TrialState.COMPLETE, value=r["value"], datetime_start=r["start"],
                                           datetime_complete=r["end"], params={}, distributions={}, user_attrs=r["attrs"], system_attrs={},
                                           intermediate_values=r["intermediate"], trial_id=-1) for r in rows]
        insert_trials(storage, sid, trials)
    finally:
        storage.engine.dispose()


def bulk_add_system_attrs(url: str, study_name: str, attrs: dict[str, Any]) -> None:
    """Study system attrs (evo's per-candidate facts) in one transaction, as `bulk_add_trials` does trials."""
    import optuna
    import sqlalchemy as sa
    from optuna.storages._rdb import models

    storage = optuna.storages.RDBStorage(url)
    try:
        with storage.engine.begin() as conn:
            sid = conn.execute(sa.select(models.StudyModel.study_id).where(models.StudyModel.study_name == study_name)).scalar_one()
            conn.execute(sa.insert(models.StudySystemAttributeModel.__table__),
                         [{"study_id": sid, "key": k, "value_json": json.dumps(v)} for k, v in attrs.items()])
    finally:
        storage.engine.dispose()


# -- output ---------------------------------------------------------------------------------------------------
def table(res: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    b = res.get("bare", {})
    if b:
        rows.append(("no-op command alone / through evo.runner (median)", f"{fmt(b['subprocess_ms']['median'])} ms / {fmt(b['runner_ms']['median'])} ms"))
    for key, label in (("greedy", "greedy"), ("population_sprt", "population+SPRT")):
        g = res.get(key)
        if g:
            rows.append((f"overhead per run, {label}, {g['runs']} runs: median / p95",
                         f"{fmt(g['overhead_ms']['median'])} / {fmt(g['overhead_ms']['p95'])} ms"))
            parts = g["parts_ms"]
            rows.append((f"  {label} parts (median ms)", ", ".join(f"{k} {fmt(v.get('median'))}" for k, v in parts.items() if k != "run")))
    for s in res.get("scale", []):
        c, cli = s["candidates"]["overhead_ms"], s.get("cli_s", {})
        rows.append((f"{s['trials']} trials (load {s.get('loadavg')}): engine ms/candidate, resume, trials csv, best, dataframe",
                     f"{fmt(c.get('median'))} ms, {fmt(s['resume_s']['median'])} s, {fmt(cli.get('trials_csv'))} s, {fmt(cli.get('best'))} s, "
                     f"{fmt(s['inspection'].get('load_and_dataframe_s'))} s"))
    if "per_candidate_growth" in res:
        rows.append(("engine time per candidate, largest / 1,000-trial study (issue 18: <= 1.2)", fmt(res["per_candidate_growth"])))
    return rows


def plot(res: dict[str, Any], out: Path) -> list[str]:
    from evo.bench.common import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    g = res.get("greedy", {})
    series = g.get("series_ms", [])
    if series:
        axes[0].plot(range(1, len(series) + 1), series, ".", ms=2, alpha=0.5, label="per run")
        tr = g.get("trend_ms", [])
        axes[0].plot([(t["from"] + t["to"]) / 2 for t in tr], [t["median"] for t in tr], "-", lw=2, label="block median")
        axes[0].set_xlabel("run (greedy, no-op command)")
        axes[0].set_ylabel("overhead per run (ms)")
        axes[0].set_title("engine overhead per run")
        axes[0].legend()
        parts = {k: v.get("median", 0) for k, v in g.get("parts_ms", {}).items() if k != "run"}
        axes[1].barh(list(parts), list(parts.values()))
        axes[1].set_xlabel("median ms per run")
        axes[1].set_title("where the overhead goes (greedy)")
    sc = res.get("scale", [])
    if sc:
        xs = [max(1, s["trials"]) for s in sc]
        axes[2].plot(xs, [s["resume_s"]["median"] for s in sc], "o-", label="resume (s)")
        axes[2].plot(xs, [s["inspection"].get("load_and_members_s") or 0 for s in sc], "s-", label="inspection (s)")
        axes[2].plot(xs, [s["refs_listing_s"] for s in sc], "^-", label="ref listing (s)")
        axes[2].plot(xs, [(s["candidates"]["overhead_ms"].get("median") or 0) / 1000 for s in sc], "d-", label="overhead per run (s)")
        axes[2].set_xscale("log")
        axes[2].set_yscale("log")
        axes[2].set_xlabel("trials in the study (= candidate refs)")
        axes[2].set_title("growth with the study")
        axes[2].legend(fontsize=8)
    fig.tight_layout()
    path = out / "overhead.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [str(path)]
