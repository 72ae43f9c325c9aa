"""`evo bench`: run the benchmark parts, write JSON and PNG under --out, print a summary table.

Parts: overhead, utilisation, quality, statistics (the default set, also with --quick), and model
and warmstart (only when named: `--only model`, `--only warmstart`). Each part writes
<out>/<part>.json and its PNG; <out>/bench.json holds every part's latest result (a later
`--only X` replaces X's section and keeps the others).

Sizes: --quick is the CI-sized run (under 2 minutes on a 2-core machine); without it, the full
run. EVO_BENCH_SIZES='{"quality": {"seeds": 5}}' overrides single sizes of a part (the keys of
each module's FULL/QUICK dict); EVO_BENCH_JOBS sets how many quality searches run side by side
(default 2); EVO_BENCH_SEED the base seed (default 0); EVO_BENCH_KEEP=1 keeps the scratch repos.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from evo.bench.common import clean, loadavg, machine, warm_imports, write_json

DEFAULT_PARTS = ("overhead", "utilisation", "quality", "statistics")
ALL_PARTS = DEFAULT_PARTS + ("model", "warmstart")


def parts_of(only: list[str] | None) -> list[str]:
    if not only:
        return list(DEFAULT_PARTS)
    names: list[str] = []
    for item in only:
        for name in str(item).split(","):
            name = name.strip()
            if name not in ALL_PARTS:
                raise SystemExit(f"evo bench: unknown part {name!r} (choose from {', '.join(ALL_PARTS)})")
            if name not in names:
                names.append(name)
    return [p for p in ALL_PARTS if p in names]


def sizes_from_env() -> dict[str, dict[str, Any]]:
    raw = os.environ.get("EVO_BENCH_SIZES", "").strip()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise SystemExit(f"evo bench: EVO_BENCH_SIZES is not JSON: {e}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise SystemExit('evo bench: EVO_BENCH_SIZES must look like {"quality": {"seeds": 5}}')
    return data


def bench(quick: bool, out: Path, parts: list[str], seed: int = 0, sizes: dict[str, dict[str, Any]] | None = None,
          log: Any = print, n_jobs: int | None = None) -> dict[str, Any]:
    """Run the parts; return {part: result} plus 'meta'. Writes JSON and PNG files under out."""
    from evo.bench import modelcmp, overhead, quality, statistics, utilisation, warmstart

    sizes = sizes or {}
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    warm_imports()
    meta = {"quick": quick, "parts": parts, "seed": seed, "sizes": sizes, "machine": machine(), "started": time.time(),
            "argv": sys.argv, "part_seconds": {}, "loadavg_after": {}, "files": []}
    results: dict[str, Any] = {}
    for part in parts:
        log(f"== {part}")
        t0 = time.time()
        kw = {"sizes": sizes.get(part), "log": log}
        if part == "overhead":
            res = overhead.run(quick, out, seed, **kw)
            files = overhead.plot(res, out)
        elif part == "utilisation":
            res = utilisation.run(quick, out, seed, **kw)
            files = utilisation.plot(res, out)
        elif part == "quality":
            res = quality.run(quick, out, seed, n_jobs=n_jobs, **kw)
            files = quality.plot(res, out)
        elif part == "statistics":
            res = statistics.run(quick, out, seed, **kw)
            files = []
        elif part == "warmstart":
            res = warmstart.run(quick, out, seed, **kw)
            files = []
        else:
            res = modelcmp.run(quick, out, seed, **kw)
            files = []
        meta["part_seconds"][part] = round(time.time() - t0, 1)
        meta["loadavg_after"][part] = loadavg()
        meta["files"] += files
        results[part] = res
        write_json(out / f"{part}.json", {"meta": meta, part: res})
    meta["seconds"] = round(time.time() - meta["started"], 1)
    results["meta"] = meta
    merged: dict[str, Any] = {}
    try:
        merged = json.loads((out / "bench.json").read_text())
    except (OSError, json.JSONDecodeError):
        merged = {}
    runs = merged.get("runs", {})
    for part in parts:
        merged[part] = clean(results[part])
        runs[part] = {k: meta[k] for k in ("quick", "seed", "sizes", "started")} | {"seconds": meta["part_seconds"][part], "machine": meta["machine"]}
    merged["runs"] = runs
    merged["meta"] = meta
    write_json(out / "bench.json", merged)
    return results


def summary_rows(results: dict[str, Any]) -> list[tuple[str, str]]:
    from evo.bench import modelcmp, overhead, quality, statistics, utilisation, warmstart

    tables = {"overhead": overhead.table, "utilisation": utilisation.table, "quality": quality.table, "statistics": statistics.table,
              "model": modelcmp.table, "warmstart": warmstart.table}
    rows: list[tuple[str, str]] = []
    for part, fn in tables.items():
        if part in results:
            rows += fn(results[part])
    return rows


def print_table(rows: list[tuple[str, str]], out: Any = print) -> None:
    width = min(70, max((len(a) for a, _ in rows), default=10))
    out("")
    out(f"{'figure':<{width}}  value")
    out(f"{'-' * width}  {'-' * 40}")
    for a, b in rows:
        out(f"{a:<{width}}  {b}")


def main(args: Any) -> int:
    quick = bool(getattr(args, "quick", False))
    out = Path(getattr(args, "out", None) or "results/bench")
    parts = parts_of(getattr(args, "only", None))
    seed = int(os.environ.get("EVO_BENCH_SEED", "0"))
    t0 = time.time()
    results = bench(quick, out, parts, seed=seed, sizes=sizes_from_env())
    lines: list[str] = []
    print_table(summary_rows(results), lines.append)
    m = results["meta"]["machine"]
    lines.append(f"\n{'quick' if quick else 'full'} run of {', '.join(parts)} in {time.time() - t0:.0f} s on {m['cpus']} CPUs "
                 f"(load average {m['loadavg']} at the start, {loadavg()} at the end; timings on a shared machine are noisy). "
                 f"JSON and PNG in {out.resolve()}")
    print("\n".join(lines))
    # summary.txt: every part bench.json holds (this run's and earlier runs' sections), with where each came from
    merged = json.loads((out / "bench.json").read_text())
    rows: list[str] = []
    print_table(summary_rows({k: v for k, v in merged.items() if k in ALL_PARTS}), rows.append)
    for part, r in merged.get("runs", {}).items():
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.get("started", 0)))
        rows.append(f"{part}: {'quick' if r.get('quick') else 'full'} run started {when}, {r.get('seconds')} s, sizes {r.get('sizes') or 'default'}, "
                    f"load average at its start {r.get('machine', {}).get('loadavg')}")
    (out / "summary.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return 0
