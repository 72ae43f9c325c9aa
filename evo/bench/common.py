"""Shared helpers of the benchmarks: scratch git repos, in-process searches, statistics, output.

Every search the benchmarks run is a real `evo.search.search` call (the same code path as
`evo search`): a real git repository in a scratch folder, real subprocess runs, a real SQLite
Optuna storage. Only the numbers around it (timers, regret) are computed here.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

GIT_ENV = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost",
           "GIT_AUTHOR_DATE": "1700000000 +0000", "GIT_COMMITTER_DATE": "1700000000 +0000"}


# -- scratch repositories ------------------------------------------------------------------------
def git(repo: Path, *args: str, input: bytes | None = None) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *args], input=input, capture_output=True,
                          env={**os.environ, **GIT_ENV})
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args[:3])}: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout.decode().strip()


def make_repo(path: Path, files: dict[str, str]) -> Path:
    """A fresh repository at `path` with `files` committed on master."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "master")
    for rel, text in files.items():
        p = path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "baseline")
    return path


class Scratch:
    """A folder for the repos and storages of one benchmark part (removed unless EVO_BENCH_KEEP=1)."""

    def __init__(self, out: Path, part: str) -> None:
        base = out / "work"
        base.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=f"{part}-", dir=base))

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: object) -> None:
        if os.environ.get("EVO_BENCH_KEEP") != "1":
            shutil.rmtree(self.path, ignore_errors=True)
            try:
                self.path.parent.rmdir()  # only when empty
            except OSError:
                pass


# -- configs and searches ----------------------------------------------------------------------
def make_config(work: Path, name: str, repo: Path, *, run: str, mutable: Sequence[str], direction: str = "minimize",
                strategy: str = "greedy", generations: int = 10, population: int = 8, workers: int = 1,
                seed: int = 0, sprt: bool = False, timeout: float = 60.0, **sections: dict[str, Any]) -> Any:
    """A resolved evo Config (through `evo.config.load`, so it is validated like a file)."""
    from evo import config as config_mod

    over: dict[str, dict[str, Any]] = {
        "study": {"name": name, "storage": f"sqlite:///{work / (name + '.db')}", "results": str(work / "results"), "seed": seed},
        "target": {"repo": str(repo), "mutable": list(mutable), "run": run, "time_budget": 1.0, "timeout": timeout,
                   "metric": "score", "direction": direction},
        "search": {"strategy": strategy, "generations": generations, "population": population, "workers": workers},
        "sprt": {"enabled": sprt},
    }
    for sec, kv in sections.items():
        over.setdefault(sec, {}).update(kv)
    return config_mod.load(None, over)


def run_search(cfg: Any, log: Path | None = None) -> dict[str, Any]:
    """One `evo search`, in-process; its printed lines go to `log` (or nowhere)."""
    from evo.wiring import build_executor, build_operators
    from evo.search import search

    lines: list[str] = []
    try:
        summary = search(cfg, *build_operators(cfg), build_executor(cfg), out=lines.append)
    finally:
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return summary


def study_trials(cfg: Any) -> list[Any]:
    from evo.archive import Archive

    return Archive(cfg.study.storage, cfg.study.name).trials()


def study_attrs(cfg: Any) -> dict[str, Any]:
    from evo.archive import Archive

    return dict(Archive(cfg.study.storage, cfg.study.name).attrs)


RAN = ("complete", "crashed", "timeout", "invalid", "pruned")  # outcomes of trials that spent a run
SCREENING = ("baseline", "candidate")


def ran(t: Any) -> bool:
    return t.user_attrs.get("outcome") in RAN


# -- statistics ----------------------------------------------------------------------------------
def quantile(xs: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default); nan for no data."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    pos = (len(s) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def describe(xs: Iterable[float], scale: float = 1.0, digits: int = 4) -> dict[str, Any]:
    v = [float(x) * scale for x in xs if x is not None and math.isfinite(x)]
    if not v:
        return {"n": 0}
    r = lambda x: round(x, digits)  # noqa: E731
    return {"n": len(v), "median": r(statistics.median(v)), "p95": r(quantile(v, 0.95)), "mean": r(statistics.fmean(v)),
            "min": r(min(v)), "max": r(max(v))}


def bootstrap_ci(xs: Sequence[float], stat: Callable[[Sequence[float]], float] = statistics.median, n: int = 2000,
                 level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of `stat`."""
    v = [x for x in xs if x is not None and math.isfinite(x)]
    if not v:
        return (float("nan"), float("nan"))
    if len(v) == 1:
        return (v[0], v[0])
    rng = random.Random(seed)
    draws = sorted(stat([v[rng.randrange(len(v))] for _ in v]) for _ in range(n))
    a = (1 - level) / 2
    return (quantile(draws, a), quantile(draws, 1 - a))


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Two-sided Mann-Whitney U; `p_a_lower` is the one-sided p that a's values are lower (better)."""
    from scipy import stats

    a = [x for x in a if x is not None and math.isfinite(x)]
    b = [x for x in b if x is not None and math.isfinite(x)]
    if len(a) < 2 or len(b) < 2:
        return {"u": None, "p": None, "p_a_lower": None, "n": [len(a), len(b)]}
    if len(set(a) | set(b)) == 1:  # all equal: scipy warns and returns nan
        return {"u": len(a) * len(b) / 2, "p": 1.0, "p_a_lower": 0.5, "n": [len(a), len(b)]}
    two = stats.mannwhitneyu(a, b, alternative="two-sided")
    less = stats.mannwhitneyu(a, b, alternative="less")
    return {"u": float(two.statistic), "p": round(float(two.pvalue), 5), "p_a_lower": round(float(less.pvalue), 5), "n": [len(a), len(b)]}


# -- machine facts and output --------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    import optuna

    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {
        "python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
        "loadavg": load, "optuna": optuna.__version__, "git": git_version(), "executable": sys.executable,
    } | engine_version()


def engine_version() -> dict[str, Any]:
    """The evo checkout the benchmark ran: HEAD and the engine files that differ from it."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "evo", "operators"],
                               capture_output=True, text=True).stdout.split("\n")
    except OSError:
        return {}
    return {"evo_commit": head, "evo_changed_files": sorted(line[3:] for line in dirty if line.strip())}


def git_version() -> str:
    try:
        return subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def clean(obj: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN/inf to None, tuples to lists, keys to str."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        np = None  # type: ignore[assignment]
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [clean(v) for v in obj]
    if np is not None and isinstance(obj, np.generic):
        obj = obj.item()
    if np is not None and isinstance(obj, np.ndarray):
        return clean(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean(data), indent=2) + "\n", encoding="utf-8")


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        if not math.isfinite(x):
            return "-"
        return f"{x:.{digits}g}"
    return str(x)


class Timer:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.t0


def jobs() -> int:
    """Searches run side by side in the quality part (EVO_BENCH_JOBS; default: CPUs + 1, at most 4, since a
    search spends part of its time waiting on SQLite's fsync and on sleeping runs)."""
    env = os.environ.get("EVO_BENCH_JOBS")
    if env:
        return max(1, int(env))
    return max(1, min(4, (os.cpu_count() or 1) + 1))


def pmap(fn: Callable[[Any], Any], items: list[Any], n_jobs: int) -> list[Any]:
    """map in `n_jobs` forked processes (order kept); in-process when n_jobs is 1."""
    if n_jobs <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=n_jobs, mp_context=ctx) as pool:
        return list(pool.map(fn, items))


def warm_imports() -> None:
    """Import what a search imports, so the first timed search does not pay for it."""
    import evo.wiring  # noqa: F401
    import evo.search  # noqa: F401
    import evo.study  # noqa: F401
    import operators.constants  # noqa: F401
    import operators.crossover  # noqa: F401
    from evo import sprt  # noqa: F401
    from scipy import stats  # noqa: F401
