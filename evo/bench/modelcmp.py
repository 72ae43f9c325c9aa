"""model/: greedy against population at an equal budget on the default target (configs/default.toml).

Not part of --quick or of the default parts (`evo bench --only model`). The model folder is copied
into a scratch repository (so no refs are written into this one), configs/default.toml is loaded
with the study, storage and repository pointed there, and shorter runs (EVO_TIME_BUDGET 2 s by
default) so that it finishes on a CPU. Both strategies get the same number of children and the
same study seed; SPRT stays as the config sets it. There is no known optimum: the figures are
val_bpb of the baseline, of the final mainline (confirmed) and of the best screening run.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from evo.bench.common import Scratch, Timer, fmt, make_repo, run_search, study_attrs, study_trials

FULL = {"candidates": 15, "population": 4, "time_budget": 2.0, "seeds": 1, "config": "configs/default.toml"}


def available(root: Path, config: str) -> str:
    """'' when the part can run, else why not."""
    if not (root / config).is_file():
        return f"{config} not found"
    if not (root / "model" / "train.py").is_file():
        return "model/train.py not found"
    probe = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"torch is not importable by {sys.executable} (pip install -e '.[model]')"
    return ""


def run(quick: bool, out: Path, seed: int = 0, sizes: dict[str, Any] | None = None, log: Any = print, root: Path | None = None) -> dict[str, Any]:
    from evo import config as config_mod

    p = dict(FULL, **(sizes or {}))
    root = root or Path.cwd()
    why = available(root, p["config"])
    if why:
        log(f"  model: skipped: {why}")
        return {"status": "skipped", "reason": why, "params": p}
    mu = p["population"]
    gens = max(1, -(-(p["candidates"] - (mu - 1)) // mu))
    budget = mu - 1 + gens * mu
    res: dict[str, Any] = {"status": "ok", "params": p | {"budget": budget}, "searches": []}
    with Scratch(out, "model") as work:
        files = {str(f.relative_to(root)): f.read_text(encoding="utf-8") for f in sorted((root / "model").rglob("*"))
                 if f.is_file() and "__pycache__" not in f.parts and f.suffix in (".py", ".md", ".txt")}
        repo = make_repo(work / "repo", files)
        for s in range(seed, seed + p["seeds"]):
            for strat in ("greedy", "population"):
                name = f"model-{strat}-{s}"
                over = {
                    "study": {"name": name, "storage": f"sqlite:///{work / (name + '.db')}", "results": str(work / "results"), "seed": s},
                    "target": {"repo": str(repo), "time_budget": p["time_budget"]},
                    "search": {"strategy": strat, "generations": budget if strat == "greedy" else gens, "population": mu, "workers": 1},
                }
                cfg = config_mod.load(root / p["config"], over)
                if cfg.target.timeout < cfg.target.time_budget:
                    cfg = config_mod.with_overrides(cfg, target={"timeout": cfg.target.time_budget * 10})
                t = Timer()
                try:
                    summary = run_search(cfg, work / f"{name}.log")
                except Exception as e:  # noqa: BLE001 - report, keep the other strategy
                    log(f"  model {strat}: failed: {e}")
                    res["searches"].append({"strategy": strat, "seed": s, "error": f"{type(e).__name__}: {e}"[:500]})
                    continue
                wall = t.seconds
                trials = study_trials(cfg)
                attrs = study_attrs(cfg)
                screening = [x for x in trials if x.user_attrs.get("role") in ("baseline", "candidate") and x.state.name == "COMPLETE" and x.value is not None]
                ran = [x for x in trials if x.user_attrs.get("outcome") in ("complete", "crashed", "timeout", "invalid", "pruned")]
                rec = {
                    "strategy": strat, "seed": s, "wall_s": round(wall, 1), "candidates": summary["candidates"],
                    "baseline": summary["baseline"], "mainline": summary["incumbent_value"],
                    "best_seen": min((x.value for x in screening), default=None), "promotions": summary["promotions"],
                    "runs": len(ran), "failed": summary["failed"], "pruned": summary["pruned"], "duplicates": summary["duplicates"],
                    "run_seconds": summary["run_seconds"], "noise_sigma": (attrs.get("noise") or {}).get("sigma_final"),
                }
                res["searches"].append(rec)
                log(f"  model {strat:10} seed {s}: val_bpb baseline {fmt(rec['baseline'], 4)} -> mainline {fmt(rec['mainline'], 4)} "
                    f"(best seen {fmt(rec['best_seen'], 4)}), {rec['promotions']} promotions, {rec['runs']} runs, {rec['wall_s']} s")
        shutil.rmtree(work / "results" / "cache", ignore_errors=True)
    for strat in ("greedy", "population"):
        rs = [r for r in res["searches"] if r["strategy"] == strat and "error" not in r]
        if rs:
            res[strat] = {k: statistics.median(r[k] for r in rs if r[k] is not None) for k in ("baseline", "mainline", "best_seen", "runs", "wall_s")
                          if any(r[k] is not None for r in rs)}
    return res


def table(res: dict[str, Any]) -> list[tuple[str, str]]:
    if res.get("status") != "ok":
        return [("model/ greedy vs population", f"{res.get('status')}: {res.get('reason', '')}")]
    rows = []
    for strat in ("greedy", "population"):
        r = res.get(strat)
        if r:
            rows.append((f"model/ {strat}, {res['params']['budget']} children (val_bpb, median)",
                         f"baseline {fmt(r.get('baseline'), 4)} -> mainline {fmt(r.get('mainline'), 4)}, best seen {fmt(r.get('best_seen'), 4)}, "
                         f"{fmt(r.get('runs'))} runs, {fmt(r.get('wall_s'))} s"))
    return rows
