"""model/ runs cold and warm: where a run's wall time goes, and what a zygote (`[target] preload`) saves.

Not part of --quick or of the default parts (`evo bench --only warmstart`). model/ is copied into
a scratch repository and its data prepared once; then runs of configs/default.toml's command are
made through the product path (LocalExecutor: `git archive` export, the runner, clean-up), one at
a time, alternating a cold executor (no preload) and a warm one (preload torch and numpy), same
seeds on both, so both see the same machine load. Per run:

- wall: submit to Done (export + run + clean-up), and the runner's own seconds;
- from the run's summary (model/train.py prints them): startup (its first line to its training
  loop: imports, data, model), evaluation, and the training steps' wall time (total - startup -
  evaluation); what is left of the runner's seconds is the interpreter's start and exit;
- the training fraction: training steps' wall / wall (and the issue's figure, the budget's
  seconds / wall);
- the run's CPU seconds (a cold run: this process's reaped children; a warm one: what the zygote's
  wait4 reports) and the training steps' share of them: the wall fraction an idle core would
  show, measured on a loaded one;
- the load average beside each.

A probe splits a cold startup further: interpreter start, `import numpy`, `import torch`, the data
load, the model's construction, and the interpreter's exit after `import torch`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from evo.bench.common import Scratch, fmt, loadavg, make_repo

FULL = {"runs": 6, "time_budget": 4.0, "config": "configs/default.toml", "probes": 3}
QUICK = {"runs": 2, "time_budget": 1.0, "config": "configs/default.toml", "probes": 1}
SUMMARY = re.compile(r"^(\w+):\s+(\S+)$", re.M)

PROBE = r"""
import os, sys, time
t0 = time.monotonic()
import numpy
t1 = time.monotonic()
import torch, torch.nn, torch.nn.functional
t2 = time.monotonic()
sys.path.insert(0, os.path.join(os.getcwd(), "model"))
import prepare
data = prepare.Data()
t3 = time.monotonic()
import train
torch.manual_seed(0)
model = train.GPT(train.DEPTH, train.WIDTH)
t4 = time.monotonic()
print(f"{t0} {t1} {t2} {t3} {t4} {time.monotonic()}", flush=True)
"""


def run(quick: bool, out: Path, seed: int = 0, sizes: dict[str, Any] | None = None, log: Any = print, root: Path | None = None) -> dict[str, Any]:
    from evo.bench.modelcmp import available

    p = dict(QUICK if quick else FULL, **(sizes or {}))
    root = root or Path.cwd()
    why = available(root, p["config"])
    if why:
        log(f"  warmstart: skipped: {why}")
        return {"status": "skipped", "reason": why, "params": p}
    res: dict[str, Any] = {"status": "ok", "params": p, "loadavg_start": loadavg(), "runs": []}
    with Scratch(out, "warmstart") as work:
        files = {str(f.relative_to(root)): f.read_text(encoding="utf-8") for f in sorted((root / "model").rglob("*"))
                 if f.is_file() and "__pycache__" not in f.parts and f.suffix in (".py", ".md", ".txt")}
        repo = make_repo(work / "repo", files)
        cache = work / "cache"
        prep = subprocess.run([sys.executable, "model/prepare.py"], cwd=repo, env={**os.environ, "EVO_CACHE": str(cache)},
                              capture_output=True, text=True, timeout=600)
        if prep.returncode != 0:
            return {"status": "failed", "reason": f"model/prepare.py: {prep.stderr[-500:]}", "params": p}
        res["probe"] = probe(repo, cache, p["probes"])
        ph = res["probe"]
        log(f"  cold startup, measured apart (median of {p['probes']}): interpreter {fmt(ph['interpreter_s'])} s, import numpy "
            f"{fmt(ph['import_numpy_s'])} s, import torch {fmt(ph['import_torch_s'])} s, data {fmt(ph['data_s'])} s, "
            f"model {fmt(ph['model_s'])} s, exit after torch {fmt(ph['exit_s'])} s")
        res["runs"] = runs(root, repo, cache, work, p, seed, log)
    res |= summarise(res["runs"])
    res["loadavg_end"] = loadavg()
    for how in ("cold", "warm"):
        s = res.get(how)
        if s:
            log(f"  {how}: wall {fmt(s['wall_s'])} s per run (runner {fmt(s['runner_s'])} s), training {fmt(s['train_wall_s'])} s "
                f"= {fmt(100 * s['train_fraction'], 3)}% of wall (budget/wall {fmt(100 * s['budget_fraction'], 3)}%), not training "
                f"{fmt(s['not_training_s'])} s (startup {fmt(s['startup_s'])}, evaluation {fmt(s['eval_s'])}, outside the script "
                f"{fmt(s['outside_script_s'])}), CPU {fmt(s['cpu_s'])} s of which training {fmt(100 * (s['train_cpu_fraction'] or 0), 3)}%, "
                f"load {s['loadavg']}")
    return res


def probe(repo: Path, cache: Path, n: int) -> dict[str, Any]:
    """The cold startup split apart, in fresh interpreters (median of n)."""
    env = {**os.environ, "EVO_CACHE": str(cache), "EVO_THREADS": "1", "EVO_DEVICE": "cpu", "PYTHONUNBUFFERED": "1"}
    rows: dict[str, list[float]] = {k: [] for k in ("interpreter_s", "import_numpy_s", "import_torch_s", "data_s", "model_s", "exit_s")}
    for _ in range(n):
        t = time.monotonic()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        rows["interpreter_s"].append(time.monotonic() - t)
        proc = subprocess.Popen([sys.executable, "-c", PROBE], cwd=repo, env=env, stdout=subprocess.PIPE, text=True)
        text = proc.stdout.read() if proc.stdout else ""
        proc.wait()
        ended = time.monotonic()
        t0, t1, t2, t3, t4, t5 = map(float, text.split())
        rows["import_numpy_s"].append(t1 - t0)
        rows["import_torch_s"].append(t2 - t1)
        rows["data_s"].append(t3 - t2)
        rows["model_s"].append(t4 - t3)
        rows["exit_s"].append(ended - t5)
    return {k: round(statistics.median(v), 3) for k, v in rows.items()} | {"n": n, "loadavg": loadavg()}


def runs(root: Path, repo: Path, cache: Path, work: Path, p: dict[str, Any], seed: int, log: Any) -> list[dict[str, Any]]:
    from evo import config as config_mod
    from evo.executors.base import Job, RunTemplate
    from evo.executors.local import LocalExecutor
    from evo.gitrepo import GitRepo

    target = config_mod.load(root / p["config"]).target
    template = dataclasses.replace(RunTemplate.from_target(target, cache_dir=str(cache)), time_budget=float(p["time_budget"]),
                                   timeout=max(target.timeout, float(p["time_budget"]) * 10))
    gr = GitRepo(repo)
    head = gr.head()
    notes: list[str] = []
    executors = {"cold": LocalExecutor(gr, dataclasses.replace(template, preload=()), workers=1, log=notes.append),
                 "warm": LocalExecutor(gr, dataclasses.replace(template, preload=("torch", "numpy")), workers=1, log=notes.append)}
    out: list[dict[str, Any]] = []
    try:
        for i in range(int(p["runs"])):
            for how in (("cold", "warm") if i % 2 == 0 else ("warm", "cold")):  # alternate who goes first
                ex = executors[how]
                load = loadavg()
                job = Job(i, head, seed + i, "baseline", work / "logs" / f"{how}-{i}.log")
                cpu0 = _children_cpu() + (ex.zygote.run_cpu_seconds if ex.zygote else 0.0)
                t = time.monotonic()
                ex.submit(job)
                done: list[Any] = []
                while not done:
                    done = ex.wait(timeout=1.0)
                wall = time.monotonic() - t
                cpu = _children_cpu() + (ex.zygote.run_cpu_seconds if ex.zygote else 0.0) - cpu0
                r = done[0].result
                text = job.log_path.read_text(errors="replace") if job.log_path.exists() else ""
                s = {m[1]: m[2] for m in SUMMARY.finditer(text)}
                row = {"how": how, "i": i, "seed": seed + i, "outcome": r.outcome, "val_bpb": r.value, "wall_s": round(wall, 3),
                       "runner_s": round(r.seconds, 3), "cpu_s": round(cpu, 3), "loadavg": load}
                try:
                    total, startup, evals = float(s["total_seconds"]), float(s["startup_seconds"]), float(s["eval_seconds"])
                    budget = float(s["training_seconds"]) + float(s["warmup_seconds"])
                    row |= {"startup_s": startup, "eval_s": evals, "train_wall_s": round(total - startup - evals, 3),
                            "budget_s": round(budget, 3), "script_s": total, "outside_script_s": round(r.seconds - total, 3),
                            "steps": int(s["num_steps"])}
                except (KeyError, ValueError):
                    row["error"] = r.reason or "no summary"
                out.append(row)
                log(f"  {how} run {i}: {r.outcome} val_bpb {fmt(r.value, 6)}, wall {row['wall_s']:.2f} s, "
                    f"training {fmt(row.get('train_wall_s'))} s, load {load[0] if load else '-'}")
        counts = {how: ex.warm_counts() for how, ex in executors.items()}
    finally:
        for ex in executors.values():
            ex.shutdown()
    if counts["warm"]["warm"] != int(p["runs"]):
        out.append({"note": f"not every warm run forked: {counts['warm']}; {notes}"})
    return out


def _children_cpu() -> float:
    """CPU seconds of this process's reaped children: a cold run (bash and its python) and the export's git."""
    import resource

    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for how in ("cold", "warm"):
        ok = [r for r in rows if r.get("how") == how and "train_wall_s" in r]
        if not ok:
            continue
        med = lambda k: round(statistics.median(r[k] for r in ok), 3)  # noqa: E731
        res[how] = {"n": len(ok), "wall_s": med("wall_s"), "runner_s": med("runner_s"), "startup_s": med("startup_s"),
                    "eval_s": med("eval_s"), "train_wall_s": med("train_wall_s"), "outside_script_s": med("outside_script_s"),
                    "steps": med("steps"), "evo_s": round(statistics.median(r["wall_s"] - r["runner_s"] for r in ok), 3),
                    "not_training_s": round(statistics.median(r["wall_s"] - r["train_wall_s"] for r in ok), 3),
                    "train_fraction": round(statistics.median(r["train_wall_s"] / r["wall_s"] for r in ok), 4),
                    "budget_fraction": round(statistics.median(r["budget_s"] / r["wall_s"] for r in ok), 4),
                    # load-independent: the training steps' CPU seconds (the cpu-clock budget) over the run's whole CPU
                    # (what the wall fraction is on an idle core, where a single-threaded run's wall is its CPU time)
                    "cpu_s": round(statistics.median(r.get("cpu_s", 0.0) for r in ok), 3),
                    "train_cpu_fraction": round(statistics.median(r["budget_s"] / r["cpu_s"] for r in ok if r.get("cpu_s")), 4)
                    if any(r.get("cpu_s") for r in ok) else None,
                    "loadavg": round(statistics.median(r["loadavg"][0] for r in ok if r["loadavg"]), 2) if any(r["loadavg"] for r in ok) else None}
    if "cold" in res and "warm" in res:
        res["saved_s"] = round(res["cold"]["wall_s"] - res["warm"]["wall_s"], 3)
    return res


def table(res: dict[str, Any]) -> list[tuple[str, str]]:
    if res.get("status") != "ok":
        return [("model/ cold vs warm runs", f"{res.get('status')}: {res.get('reason', '')}")]
    rows = []
    budget = res["params"]["time_budget"]
    for how in ("cold", "warm"):
        s = res.get(how)
        if s:
            rows.append((f"model/ {how} run, {budget:g} s box (median of {s['n']})",
                         f"wall {fmt(s['wall_s'])} s, training {fmt(100 * s['train_fraction'], 3)}% of it, "
                         f"not training {fmt(s['not_training_s'])} s; CPU {fmt(s.get('cpu_s'))} s, training "
                         f"{fmt(100 * (s.get('train_cpu_fraction') or 0), 3)}% of it; load {s['loadavg']}"))
    ph = res.get("probe")
    if ph:
        rows.append(("model/ cold startup parts (s)", f"interpreter {fmt(ph['interpreter_s'])}, numpy {fmt(ph['import_numpy_s'])}, "
                                                     f"torch {fmt(ph['import_torch_s'])}, data {fmt(ph['data_s'])}, model {fmt(ph['model_s'])}, "
                                                     f"exit {fmt(ph['exit_s'])}"))
    return rows
