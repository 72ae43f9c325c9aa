"""Benchmark of the model target (not a test): throughput, overhead and seed noise.

Runs the unchanged train.py for several seeds at a budget and reports steps, tokens/s,
the seconds spent outside training, the val_bpb reached, its seed-to-seed standard
deviation (the sigma evo's statistics run on), the standard deviation at each progress
checkpoint and the correlation between checkpoints (for the futility test). With
--versus it also runs a variant (constants replaced in a copy of train.py) on the same
seeds and reports the paired difference, to see whether a change is visible at that
budget. The figures go into model/README.md between
`<!-- bench:TAG:start -->` and `<!-- bench:TAG:end -->` (TAG from --tag).

    python model/bench.py                       # default budget, 5 seeds, CPU
    python model/bench.py --budget 10 --seeds 5 --versus MATRIX_LR=0.002 --tag lr10
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from prepare import DEFAULT_TIME_BUDGET, PROGRESS_FRACTIONS  # noqa: E402

SUMMARY = re.compile(r"^(\w+):\s+(\S+)$")
PROGRESS = re.compile(r"^progress: ([0-9.]+) val_bpb: ([0-9.]+)$")


def variant_dir(overrides: list[str]) -> str:
    """A temporary copy of model/ with `NAME=VALUE` constants replaced in train.py."""
    d = tempfile.mkdtemp(prefix="evo-bench-")
    shutil.copy(os.path.join(HERE, "prepare.py"), d)
    src = open(os.path.join(HERE, "train.py")).read()
    for item in overrides:
        name, value = item.split("=", 1)
        src, n = re.subn(rf"^{name} = \S+", f"{name} = {value}", src, flags=re.M)
        if n != 1:
            raise SystemExit(f"--versus: no constant {name} in train.py")
    with open(os.path.join(d, "train.py"), "w") as f:
        f.write(src)
    return d


def run_once(train_py: str, seed: int, args) -> dict:
    env = dict(os.environ, EVO_SEED=str(seed), EVO_TIME_BUDGET=str(args.budget), PYTHONUNBUFFERED="1")
    if args.device:
        env["EVO_DEVICE"] = args.device
    if args.threads:
        env["EVO_THREADS"] = str(args.threads)
    if args.clock:
        env["EVO_CLOCK"] = args.clock
    t0 = time.time()
    p = subprocess.run([sys.executable, train_py], env=env, capture_output=True, text=True)
    wall = time.time() - t0
    if p.returncode != 0:
        raise SystemExit(f"seed {seed} failed (rc {p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    lines = p.stdout.splitlines()
    summary = {}
    for line in lines[lines.index("---") + 1:]:
        m = SUMMARY.match(line)
        if m:
            summary[m[1]] = m[2]
    progress = [float(m[2]) for m in map(PROGRESS.match, lines) if m]
    return {"summary": summary, "progress": progress, "wall": wall}


def num(runs, key):
    return [float(r["summary"][key]) for r in runs]


def sd(xs):
    return statistics.stdev(xs) if len(xs) > 1 else float("nan")


def corr(a, b):
    try:
        return statistics.correlation(a, b)
    except statistics.StatisticsError:
        return float("nan")


def report(runs, args, versus_runs=None) -> str:
    s0 = runs[0]["summary"]
    bpb = num(runs, "val_bpb")
    train_s = num(runs, "training_seconds")
    overhead = [r["wall"] - t for r, t in zip(runs, train_s)]
    out = []
    out.append(f"Measured {time.strftime('%Y-%m-%d')} with `python model/bench.py --budget {args.budget:g} "
               f"--seeds {args.seeds}" + (f" --device {args.device}" if args.device else "")
               + (f" --threads {args.threads}" if args.threads else "")
               + (f" --clock {args.clock}" if args.clock else "")
               + (f" --versus {' '.join(args.versus)}" if args.versus else "") + "`"
               + f" on {platform.machine()} / {os.cpu_count()} CPUs ({s0.get('device', '?')}, "
               f"data {s0.get('data_fingerprint', '?')}, load average at start {args.load:.1f}).")
    out.append("")
    out.append("| figure | mean | sd | min | max |")
    out.append("| --- | --- | --- | --- | --- |")

    def row(name, xs, fmt):
        out.append(f"| {name} | {fmt.format(statistics.mean(xs))} | {fmt.format(sd(xs))} | "
                   f"{fmt.format(min(xs))} | {fmt.format(max(xs))} |")

    row("val_bpb", bpb, "{:.4f}")
    row("num_steps", num(runs, "num_steps"), "{:.1f}")
    row("tokens_per_sec", num(runs, "tokens_per_sec"), "{:.0f}")
    row("training_seconds", train_s, "{:.2f}")
    row("wall seconds per run (bench's clock)", [r["wall"] for r in runs], "{:.2f}")
    row("non-training seconds per run", overhead, "{:.2f}")
    row("startup_seconds", num(runs, "startup_seconds"), "{:.2f}")
    row("warmup_seconds (excluded steps)", num(runs, "warmup_seconds"), "{:.2f}")
    row("eval_seconds", num(runs, "eval_seconds"), "{:.2f}")
    row("peak_rss_mb", num(runs, "peak_rss_mb"), "{:.0f}")
    out.append("")
    out.append(f"val_bpb per seed: {', '.join(f'{x:.4f}' for x in bpb)}; "
               f"num_params_M {s0.get('num_params_M')}, depth {s0.get('depth')}.")

    curves = [r["progress"] for r in runs]
    k = min(len(c) for c in curves)
    if k and len(runs) > 1:
        cols = [[c[i] for c in curves] for i in range(k)]
        out.append("")
        out.append("Progress checkpoints (mean, seed sd, correlation with the final checkpoint and with the previous one):")
        out.append("")
        out.append("| checkpoint | " + " | ".join(f"{f:.1f}" for f in PROGRESS_FRACTIONS[:k]) + " |")
        out.append("| --- |" + " --- |" * k)
        out.append("| mean | " + " | ".join(f"{statistics.mean(c):.3f}" for c in cols) + " |")
        out.append("| sd | " + " | ".join(f"{sd(c):.4f}" for c in cols) + " |")
        out.append("| corr(final) | " + " | ".join(f"{corr(c, cols[-1]):.2f}" for c in cols) + " |")
        out.append("| corr(prev) | - | " + " | ".join(f"{corr(cols[i], cols[i - 1]):.2f}" for i in range(1, k)) + " |")

    if versus_runs:
        vb = num(versus_runs, "val_bpb")
        diffs = [v - b for v, b in zip(vb, bpb)]
        mean_d, sd_d = statistics.mean(diffs), sd(diffs)
        out.append("")
        out.append(f"Variant `{' '.join(args.versus)}` on the same seeds: val_bpb {statistics.mean(vb):.4f} "
                   f"(sd {sd(vb):.4f}), paired difference variant - baseline {mean_d:+.4f} (sd {sd_d:.4f}); "
                   f"|difference| / baseline seed sd = {abs(mean_d) / sd(bpb):.2f}, "
                   f"paired t = {mean_d / (sd_d / len(diffs) ** 0.5):.2f}; "
                   f"variant steps {statistics.mean(num(versus_runs, 'num_steps')):.0f}.")
    return "\n".join(out)


def write_readme(block: str, tag: str) -> None:
    path = os.path.join(HERE, "README.md")
    start, end = (f"<!-- bench:{tag}:start -->", f"<!-- bench:{tag}:end -->") if tag else \
        ("<!-- bench:start -->", "<!-- bench:end -->")
    text = open(path).read() if os.path.exists(path) else ""
    new = f"{start}\n{block}\n{end}"
    if start in text and end in text:
        text = text[:text.index(start)] + new + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + new + "\n"
    with open(path, "w") as f:
        f.write(text)
    print(f"wrote {path} ({start})")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=float, default=DEFAULT_TIME_BUDGET, help="EVO_TIME_BUDGET seconds")
    p.add_argument("--seeds", type=int, default=5, help="number of seeds (0..N-1)")
    p.add_argument("--device", default=None, help="EVO_DEVICE: cpu, cuda (default: train.py's auto)")
    p.add_argument("--threads", type=int, default=None, help="EVO_THREADS")
    p.add_argument("--clock", choices=("wall", "cpu"), default=None, help="EVO_CLOCK")
    p.add_argument("--versus", nargs="*", default=[], metavar="NAME=VALUE",
                   help="also run a variant with these constants replaced, paired by seed")
    p.add_argument("--tag", default="", help="README marker tag (bench:TAG:start)")
    p.add_argument("--no-write", action="store_true", help="print only, leave README.md alone")
    args = p.parse_args(argv)
    args.load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    subprocess.run([sys.executable, os.path.join(HERE, "prepare.py")], check=True, capture_output=True)
    vdir = variant_dir(args.versus) if args.versus else None
    runs, vruns = [], []
    try:
        for seed in range(args.seeds):
            runs.append(run_once(os.path.join(HERE, "train.py"), seed, args))
            msg = f"seed {seed}: val_bpb {runs[-1]['summary']['val_bpb']} steps {runs[-1]['summary']['num_steps']}"
            if vdir:
                vruns.append(run_once(os.path.join(vdir, "train.py"), seed, args))
                msg += f" | variant val_bpb {vruns[-1]['summary']['val_bpb']} steps {vruns[-1]['summary']['num_steps']}"
            print(msg, flush=True)
    finally:
        if vdir:
            shutil.rmtree(vdir, ignore_errors=True)
    block = report(runs, args, vruns)
    print(block)
    if not args.no_write:
        write_readme(block, args.tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
