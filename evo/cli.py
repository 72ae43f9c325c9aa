"""`evo` command line. The only module that picks concrete classes (operators, executors)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from evo import config as config_mod
from evo.errors import EvoError
from evo.wiring import absolute_storage, build_executor, build_operators, default_storage

DEFAULT_CONFIG = Path("configs/default.toml")


def cmd_search(args: argparse.Namespace) -> int:
    path = args.config
    if path is None:
        if not DEFAULT_CONFIG.is_file():
            raise EvoError(f"no --config given and {DEFAULT_CONFIG} not found in {Path.cwd()}")
        path = DEFAULT_CONFIG
    overrides = {
        "study": {"name": args.study, "storage": absolute_storage(args.storage), "seed": args.seed},
        "search": {"strategy": args.strategy, "population": args.population, "generations": args.generations, "workers": args.workers,
                   "max_runs": args.max_runs, "max_hours": args.hours, "max_run_hours": args.run_hours,
                   "forever": True if args.forever else None},
        "sprt": {"enabled": False if args.no_sprt else None},
        "operators": {"mutation": args.mutation},
        "executor": {"kind": args.executor, "ray_address": args.ray_address},
    }
    cfg = config_mod.load(path, overrides)
    from evo.search import search

    search(cfg, *build_operators(cfg), build_executor(cfg))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from contextlib import nullcontext

    from evo.archive import Archive
    from evo.gitrepo import GitRepo
    from evo.lock import study_lock
    from evo.mainline import promote_by_hand

    storage = default_storage(args.storage)
    lock: Any = nullcontext()
    if args.to is not None and not args.to.strip():  # "" used to mean the mainline, without its lock
        raise EvoError(f"--to {args.to!r}: an empty branch name; leave --to out to promote to the study's mainline")
    attrs = Archive(storage, args.study).attrs
    if args.to is not None:
        ref = args.to if args.to.startswith("refs/") else f"refs/heads/{args.to}"
        own = [ns for ns in dict.fromkeys((f"refs/heads/evo/{args.study}", str(attrs.get("namespace") or f"refs/evo/{args.study}")))
               if ref == ns or ref.startswith(ns + "/")]
        if ref == attrs.get("mainline", f"refs/heads/evo/{args.study}/main"):
            args.to = None  # the mainline named in full: the same as leaving --to out (lock included)
        elif own:
            raise EvoError(f"--to {args.to}: is one of study '{args.study}'s own refs ({own[0]}/...), which only evo moves; "
                           "leave --to out to promote to its mainline, or name another branch")
    if args.to is None:  # the study's mainline: a running search moves it too, so take the search's lock
        repo = attrs.get("repo")
        if repo:
            lock = study_lock(GitRepo(repo).git_dir, args.study)
    with lock:
        print(promote_by_hand(storage, args.study, args.trial, args.to))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from evo.bench.run import main as bench_main

    return bench_main(args)


def parser() -> argparse.ArgumentParser:
    from importlib.metadata import PackageNotFoundError, version

    p = argparse.ArgumentParser(prog="evo", description="Evolutionary search over git branches, with an Optuna archive.")
    try:
        installed = version("evo-search")  # the distribution's name ('evo' on PyPI is another project)
    except PackageNotFoundError:
        installed = "unknown (evo-search is not installed: pip install -e .)"
    p.add_argument("--version", action="version", version=f"evo {installed}", help="print evo's version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("search", help="run (or resume) a search", description="Run or resume a study. Each flag overrides one key of the config file; without the flag "
                                   "the config's value applies, else evo's built-in default (named below).")
    s.add_argument("--config", "-c", type=Path, help=f"TOML config (default: {DEFAULT_CONFIG})")
    s.add_argument("--study", metavar="NAME", help="[study] name: names the git refs evo/NAME/... and the archive study "
                                                 "(default: the config's, else the config file's stem)")
    s.add_argument("--storage", metavar="URL", help="[study] storage: an Optuna storage URL (default: the config's, else "
                                                   "$EVO_STORAGE, else sqlite:///<results>/evo.db)")
    s.add_argument("--strategy", choices=("population", "greedy", "random"),
                   help="[search] strategy: how parents are picked (default: the config's, else population)")
    s.add_argument("--population", type=int, metavar="N", help="[search] population: individuals per generation "
                                                              "(population and random strategies; default: the config's, else 8)")
    s.add_argument("--generations", type=int, metavar="N",
                   help="[search] generations: the budget; greedy makes N children, population and random N generations "
                        "of --population children (default: the config's, else 40)")
    s.add_argument("--workers", type=int, metavar="N", help="[search] workers: runs at the same time (default: the config's, else 1)")
    s.add_argument("--max-runs", type=int, metavar="N",
                   help="[search] max_runs: stop after N runs, replicates and confirmations included (default: the config's, else no limit)")
    s.add_argument("--hours", type=float, metavar="H",
                   help="[search] max_hours: stop after H wall-clock hours over all sessions of the study (default: no limit)")
    s.add_argument("--run-hours", type=float, metavar="H",
                   help="[search] max_run_hours: stop after H hours of runs summed (GPU-hours at one GPU per run; default: no limit)")
    s.add_argument("--forever", action="store_true",
                   help="[search] forever: ignore --generations and run until a budget, Ctrl-C or SIGTERM stops it "
                        "(default: the config's, else off)")
    s.add_argument("--seed", type=int, metavar="N", help="[study] seed: the proposals' random seed and the first EVO_SEED "
                                                        "(default: the config's, else 0)")
    s.add_argument("--mutation", choices=("constants", "llm", "agent"),
                   help="[operators] mutation: who proposes a child's change (default: the config's, else constants)")
    s.add_argument("--no-sprt", action="store_true", help="turn off both sequential tests: promote on a single better run "
                                                          "and never stop a run early (default: the config's [sprt] enabled, else on)")
    s.add_argument("--executor", choices=("local", "ray"), help="[executor] kind: where runs execute (default: the config's, else local)")
    s.add_argument("--ray-address", metavar="ADDR", help="[executor] ray_address: a Ray cluster (default: the config's, else "
                                                        "start a local Ray instance)")
    s.set_defaults(func=cmd_search)

    pr = sub.add_parser("promote", help="promote a trial's commit to the mainline or a branch by hand")
    pr.add_argument("study")
    pr.add_argument("--trial", type=int, help="trial number (default: the best accepted candidate)")
    pr.add_argument("--to", metavar="BRANCH", help="branch to advance (default: the study's mainline)")
    pr.add_argument("--storage", metavar="URL", help="Optuna storage URL (default: $EVO_STORAGE, else ./results/evo.db)")
    pr.set_defaults(func=cmd_promote)

    b = sub.add_parser("bench", help="benchmarks: engine overhead, utilisation, search quality, SPRT, model/ runs cold and warm")
    b.add_argument("--quick", action="store_true", help="the CI-sized run, under 2 minutes (default: the full run)")
    b.add_argument("--out", type=Path, default=Path("results/bench"), help="folder for JSON and PNG (default: results/bench)")
    b.add_argument("--only", action="append", help="run only these parts: overhead, utilisation, quality, statistics, model, warmstart; "
                                                   "repeat for several (default: all)")
    b.set_defaults(func=cmd_bench)

    try:
        from evo.inspect.cli import add_commands
    except ImportError:  # pragma: no cover - inspection is part of the package
        pass
    else:
        add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except EvoError as e:
        print(f"evo: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("evo: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `evo trials X | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
