"""How far apart two studies of identical code put `delta` (the gain a promotion test looks for).

Pairs of greedy studies on the same noisy target (a quadratic in three constants, run noise sd
0.3 drawn per (code, seed)), identical but for the study seed, through the real Study, judge,
operators and git with the in-process executor; after each, the judge's final delta. Prints, per
pair, both deltas and their ratio; then how many pairs are within 25% of each other.

    python -m evo.bench.delta --pairs 16 --replicates 6
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import tempfile
import zlib
from pathlib import Path

from evo.bench.common import make_config, make_repo
from evo.executors.base import Job
from evo.executors.inprocess import Evaluation, Source, search

TARGET = "X = 1.0\nY = 5\nFLAG = False\n"
NOISE = 0.3


def evaluate(src: Source, job: Job) -> Evaluation:
    from operators.constants import find_constants

    text = src.read("target.py")
    c = {k.name: float(k.value) for k in find_constants("target.py", text)}
    score = -(c["X"] - 3.0) ** 2 - 0.1 * (c["Y"] - 7) ** 2 + (0.5 if c["FLAG"] else 0.0)
    score += NOISE * random.Random(zlib.crc32(f"{text}|{job.seed}".encode())).gauss(0.0, 1.0)
    return Evaluation(value=score, seconds=1.0, progress=[], log="")


def final_delta(work: Path, repo: Path, name: str, seed: int, replicates: int, children: int) -> float:
    from evo.study import Study
    from evo.wiring import build_operators

    cfg = make_config(work, name, repo, run="true", mutable=["target.py"], direction="maximize", generations=children, seed=seed,
                      sprt=True, study={"storage": f"memory://delta-{name}"})
    cfg = dataclasses.replace(cfg, sprt=dataclasses.replace(cfg.sprt, replicates=replicates))
    search(cfg, evaluate)
    st = Study(cfg, *build_operators(cfg), log=lambda s: None)
    st.load()
    return st.judge.delta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m evo.bench.delta", description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--replicates", type=int, default=6)
    ap.add_argument("--children", type=int, default=60)
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="evo-delta-"))
    repo = make_repo(work / "repo", {"target.py": TARGET, "README.md": "delta stability\n"})
    ratios = []
    for k in range(args.pairs):
        a, b = (final_delta(work, repo, f"r{args.replicates}-{k}-{j}", 100 * k + 10 * j, args.replicates, args.children) for j in (0, 1))
        ratios.append(max(a, b) / min(a, b))
        print(f"pair {k:>2}: delta {a:.4f} and {b:.4f}, ratio {ratios[-1]:.2f}", flush=True)
    within = sum(r <= 1.25 for r in ratios)
    print(f"replicates {args.replicates}: {within} of {len(ratios)} pairs within 25%; median ratio {statistics.median(ratios):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
