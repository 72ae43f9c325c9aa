"""`evo bench` with tiny sizes, in-process: the JSON it writes has the documented shape and sane numbers.

Nothing here asserts a timing: the machine may be shared and slow.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from evo.bench import run as bench_run
from evo.bench.targets import TARGETS, check

TINY = {
    "overhead": {"candidates": 6, "population_candidates": 0, "scale": [40], "scale_candidates": 2, "bare": 2, "resumes": 1},
    "utilisation": {"population": 2, "generations": 1, "reps": 1, "dmin": 0.05, "dmax": 0.2},
    "quality": {"targets": ["crossover"], "seeds": 2, "mu": 2, "generations": 1},
}


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_targets_have_their_optimum_inside_the_search_space(name: str) -> None:
    check(TARGETS[name])


def test_target_script_prints_what_the_formula_says(tmp_path: Path) -> None:
    import subprocess
    import sys

    t = TARGETS["noisy"]
    repo = t.make_repo(tmp_path / "noisy")
    out = subprocess.run([sys.executable, "run.py"], cwd=repo, capture_output=True, text=True, env={"EVO_SEED": "7", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert sum(line.startswith("progress: ") for line in lines) == 10
    assert float(lines[-1].split()[1]) == pytest.approx(t.observed(t.constants(), 7), abs=1e-5)
    assert t.constants_at(repo, "HEAD") == t.constants()


def test_parts_and_sizes() -> None:
    assert bench_run.parts_of(None) == ["overhead", "utilisation", "quality", "statistics"]
    assert bench_run.parts_of(["model"]) == ["model"]
    assert bench_run.parts_of(["quality,overhead"]) == ["overhead", "quality"]
    with pytest.raises(SystemExit):
        bench_run.parts_of(["nope"])


def test_bench_tiny_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    lines: list[str] = []
    results = bench_run.bench(True, out, ["overhead", "utilisation", "quality"], sizes=TINY, log=lines.append, n_jobs=1)
    data = json.loads((out / "bench.json").read_text())
    assert {"overhead", "utilisation", "quality", "meta", "runs"} <= set(data)
    for part in ("overhead", "utilisation", "quality"):
        assert (out / f"{part}.json").is_file()
        assert (out / f"{part}.png").is_file()
    assert not (out / "work").exists()  # scratch repos are removed

    oh = data["overhead"]
    g = oh["greedy"]
    assert g["runs"] >= 2 and g["overhead_ms"]["median"] > 0 and g["overhead_ms"]["p95"] >= g["overhead_ms"]["median"]
    assert g["run_ms"]["median"] > 0
    assert set(g["parts_ms"]) >= {"propose", "export", "run", "record", "cleanup"}
    assert [s["trials_added"] for s in oh["scale"]] == [0, 40]
    big = oh["scale"][-1]
    assert big["trials"] >= 46 and big["refs"] >= 46 and big["individuals"] == big["trials"]
    assert big["resume_s"]["median"] > 0
    assert big["candidates"]["overhead_ms"]["median"] > 0

    ut = data["utilisation"]
    for key in ("steady", "barrier"):
        assert 0 < ut[key]["utilisation_median"] <= 1
        assert 0 < ut[key]["run_utilisation_median"] <= 1
    assert len(ut["runs"]) == 2 and all(r["runs"] > 0 for r in ut["runs"])

    q = data["quality"]
    assert q["params"]["budget"] == 3
    recs = q["searches"]
    assert {r["strategy"] for r in recs} == {"greedy", "population", "random", "tpe"}
    assert len(recs) == 8
    for r in recs:
        assert r["regret_best_seen"] >= 0
        assert r["regret_best_seen"] <= r["baseline_regret"] + 1e-9
        if r["strategy"] != "tpe":
            assert r["regret_confirmed"] >= 0 and r["regret_confirmed"] <= r["baseline_regret"] + 1e-9
            assert r["screening_runs"] <= r["budget"] and r["total_runs"] >= r["screening_runs"]
            assert len(r["trajectory"]) == r["screening_runs"] + 1
        else:
            assert r["screening_runs"] == 3
    t = q["targets"]["crossover"]
    assert set(t["strategies"]) == {"greedy", "population", "random", "tpe"}
    lo, hi = t["strategies"]["greedy"]["best_seen"]["ci95"]
    assert lo <= t["strategies"]["greedy"]["best_seen"]["median"] <= hi
    assert "greedy vs population (best seen)" in t["tests"]
    assert all(0 < v["relative_best_seen_median"] <= 1 + 1e-9 for v in q["overall"].values())

    rows = bench_run.summary_rows(results)
    assert rows and all(isinstance(a, str) and isinstance(b, str) for a, b in rows)
    assert not any(isinstance(v, float) and math.isnan(v) for v in _floats(data))


def _floats(x: object) -> list[float]:
    if isinstance(x, dict):
        return [f for v in x.values() for f in _floats(v)]
    if isinstance(x, list):
        return [f for v in x for f in _floats(v)]
    return [x] if isinstance(x, float) else []
