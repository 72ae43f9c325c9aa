"""The inspection commands: studies, trials, best, show, lineage, mainline, compare, report, clean, plot, dashboard.

Each reads the storage (and the study's git repository) and never writes, except `clean`. Problems (an empty
storage, a missing study or trial) are EvoErrors: one line, exit code 2. This module imports
only argparse at import time: `evo.cli` loads it for every command.
"""

from __future__ import annotations

import argparse
import fnmatch
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evo.errors import EvoError
from evo.individual import Direction

STORAGE_HELP = "Optuna storage URL or SQLite file (default: $EVO_STORAGE, else $EVO_RESULTS/evo.db, else ./results/evo.db)"
STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING")
ROLES = ("baseline", "replicate", "candidate", "confirm", "rerun")


def _out(text: str = "") -> None:
    """print, degrading characters the terminal's encoding lacks (LANG=C) instead of failing."""
    try:
        print(text)
    except UnicodeEncodeError:
        enc = getattr(sys.stdout, "encoding", None) or "ascii"
        print(text.encode(enc, errors="replace").decode(enc, errors="replace"))


def _storage(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", metavar="URL", help=STORAGE_HELP)


def _format(p: argparse.ArgumentParser, choices: tuple[str, ...] = ("table", "json", "csv")) -> None:
    p.add_argument("--format", "-f", choices=choices, default="table", help="output format (default: table)")


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("studies", help="list the studies in a storage", description="Every study in the storage, one line each.")
    _storage(p)
    _format(p)
    p.set_defaults(func=cmd_studies)

    p = sub.add_parser("trials", help="list a study's trials (runs)", description="A study's trials (one per run), filtered.")
    p.add_argument("study")
    p.add_argument("--state", type=str.upper, choices=STATES, help="only trials in this state, any case (default: all)")
    p.add_argument("--operator", metavar="GLOB", help="only these operators, a glob: 'crossover*' (default: all)")
    p.add_argument("--generation", type=int, metavar="G", help="only this generation (default: all)")
    p.add_argument("--role", type=str.lower, choices=ROLES, help="only this role (default: all)")
    p.add_argument("--outcome", help="only this outcome: complete, crashed, timeout, pruned, duplicate, ... (default: all)")
    p.add_argument("--index", type=int, metavar="I", help="only the runs of this individual (default: all)")
    p.add_argument("--sort", choices=("number", "recent", "value", "seconds"), default="number",
                   help="order: trial number (default), newest first, best value first, longest first")
    p.add_argument("--limit", type=int, metavar="N", help="show at most N trials, after filters and sort (default: no limit)")
    _format(p)
    _storage(p)
    p.set_defaults(func=cmd_trials)

    p = sub.add_parser("best", help="the mainline's best, its confirmation, and the best single run",
                       description="The mainline's current best (last promotion, or the baseline) with its confirmed "
                                   "stats, the best single screening run, and how to check the code out.")
    p.add_argument("study")
    _format(p, ("table", "json"))
    _storage(p)
    p.set_defaults(func=cmd_best)

    p = sub.add_parser("show", help="one trial: attrs, diff, SPRT trace, prompt, log tail",
                       description="Everything about one trial: attrs, outcome, the diff against its parent(s), the "
                                   "SPRT traces, prompt and response, token usage and the log's tail.")
    p.add_argument("study")
    p.add_argument("trial", type=int, help="trial number (with --index: an individual's index)")
    p.add_argument("--index", action="store_true", help="TRIAL is an individual's index: show its screening run (default: a trial number)")
    p.add_argument("--lines", type=int, default=30, help="log lines to show (default 30)")
    p.add_argument("--full", action="store_true", help="do not shorten diffs, prompts and responses (default: diffs to 240 lines, prompts and responses to 80)")
    p.add_argument("--no-diff", action="store_true", help="leave the diff out (default: show it)")
    _storage(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("lineage", help="ancestry tree of a trial, or the whole tree",
                       description="With TRIAL: its ancestors up to the baseline (a crossover has two branches). "
                                   "Without: the whole tree from the baseline, each child under its first parent.")
    p.add_argument("study")
    p.add_argument("trial", type=int, nargs="?", help="trial number, with --index an individual's index (default: the whole tree)")
    p.add_argument("--index", action="store_true", help="TRIAL is an individual's index (default: a trial number)")
    p.add_argument("--best", action="store_true", help="the ancestry of the mainline's best (default: off)")
    _storage(p)
    p.set_defaults(func=cmd_lineage)

    p = sub.add_parser("mainline", help="promotions over time, gain per promotion",
                       description="The mainline's promotions (first-parent log of evo/<study>/main with its "
                                   "trailers, and the study's record): value, gain and decision of each.")
    p.add_argument("study")
    _format(p)
    _storage(p)
    p.set_defaults(func=cmd_mainline)

    p = sub.add_parser("compare", help="compare studies: curves, groups, confidence intervals, tests",
                       description="Best-so-far against runs and compute seconds for each study; studies grouped "
                                   "(by strategy by default) with a t confidence interval of the final value per "
                                   "group and Mann-Whitney U tests between groups.")
    p.add_argument("studies", nargs="*", metavar="STUDY", help="study names or globs (default: every study)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--group", metavar="REGEX", help="group by a regex on the name: its first group, else the match (default: group --by)")
    g.add_argument("--by", default="strategy", metavar="ATTR",
                   help="group by a study attr: strategy (default), name, seed, or a dotted path like config.search.population")
    p.add_argument("--value", choices=("mainline", "best"), default="mainline",
                   help="compare the promoted (confirmed) mainline value (default) or, with 'best', the best single "
                        "screening run (unconfirmed: may be a lucky seed)")
    p.add_argument("--budget", choices=("runs", "run-hours", "end"), default="runs",
                   help="read every study at the same compute: the smallest study's runs (default; replicates and "
                        "confirmations included), its run-hours, or 'end' (where each ended: warned when >10%% apart)")
    p.add_argument("-o", "--output", metavar="PATH", help="also write a PNG here (default: no PNG)")
    _format(p, ("table", "json"))
    _storage(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("report", help="one self-contained HTML page: lineage tree, mainline, diffs, curves",
                       description="Write one HTML file (inline CSS, JavaScript and SVG; no network) with the lineage "
                                   "tree (a crossover has two incoming edges), the mainline's steps with their confirmed "
                                   "gains and the whole diff from the previous step, each candidate's outcome, diff and "
                                   "progress curves, and, for several studies, the strategy comparison.")
    p.add_argument("studies", nargs="+", metavar="STUDY", help="study names or quoted globs ('pop-*')")
    p.add_argument("-o", "--output", metavar="PATH",
                   help="HTML file to write (default: <study>.html for one study, report.html for several)")
    p.add_argument("--max-diff-lines", type=int, default=300, metavar="N",
                   help="cut each diff after N lines (default 300; 0 = no limit)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--group", metavar="REGEX", help="comparison: group studies by a regex on the name (default: by strategy)")
    g.add_argument("--by", default="strategy", metavar="ATTR", help="comparison: group by this study attr (default: strategy)")
    p.add_argument("--value", choices=("mainline", "best"), default="mainline",
                   help="comparison: the confirmed mainline value (default) or the best single run")
    _storage(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("clean", help="remove a study: its git refs, logs, artifacts and archive",
                       description="Remove everything a study left: its refs (refs/heads/evo/STUDY/...) in the "
                                   "repository, its logs and artifacts under the results folder, its lock file and its "
                                   "study in the storage. Refuses while a search of the study runs (exit 3) and when one "
                                   "of its branches is checked out. HEAD, the index and the working tree are not touched.")
    p.add_argument("study")
    p.add_argument("--keep-mainline", action="store_true",
                   help="keep the mainline branch evo/STUDY/main (default: remove it too)")
    p.add_argument("--dry-run", "-n", action="store_true", help="only say what would be removed (default: remove it)")
    p.add_argument("--yes", "-y", action="store_true",
                   help="do not ask for confirmation (default: ask when stdin is a terminal)")
    _storage(p)
    p.set_defaults(func=cmd_clean)

    p = sub.add_parser("plot", help="PNG: history, outcomes, fitness per generation",
                       description="One PNG: optimisation history (every value, best-so-far and the mainline), "
                                   "outcome breakdown, and the fitness of each generation.")
    p.add_argument("study")
    p.add_argument("-o", "--output", metavar="PATH", help="PNG to write (default: <study>.png)")
    _storage(p)
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("dashboard", help="serve optuna-dashboard for the storage",
                       description="Run optuna-dashboard on the storage, read-only unless --writable (needs the "
                                   "dashboard extra: pip install 'evo-search[dashboard]').")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--writable", action="store_true",
                   help="let the dashboard write: delete studies, edit notes (default: read-only; a study deleted there "
                        "keeps its git refs, logs and artifacts, which 'evo clean' removes)")
    _storage(p)
    p.set_defaults(func=cmd_dashboard)


# -- studies ---------------------------------------------------------------------------------------
def study_rows(url: str) -> list[dict[str, Any]]:
    from optuna.trial import TrialState

    from evo.inspect.api import NO_STUDIES_HINT, open_existing
    from evo.archive import mask_url, read_facts, read_trials

    st = open_existing(url)
    studies = st.get_all_studies()
    if not studies:
        raise EvoError(f"no studies in {mask_url(url)} ({NO_STUDIES_HINT})")
    rows = []
    for fs in sorted(studies, key=lambda s: s.study_name):
        trials = read_trials(st, fs._study_id)  # Optuna's own reader took 100 s for a 100,000-trial study
        a = read_facts(st, fs._study_id)
        direction = fs.direction.name.lower() if len(fs.directions) == 1 else "multi"
        done = [t.value for t in trials if t.state == TrialState.COMPLETE and t.value is not None
                and t.user_attrs.get("role", "candidate") in ("baseline", "candidate")]
        best = Direction(direction).best(done) if done and direction != "multi" else None
        promotions = [p for p in a.get("promotions", []) or [] if isinstance(p, dict)]
        base = next((t for t in sorted(trials, key=lambda t: t.number)
                     if t.user_attrs.get("index") == 0 and t.user_attrs.get("role") == "baseline"), None)
        mainline = promotions[-1].get("value") if promotions else (base.value if base is not None else None)
        starts = [t.datetime_start.timestamp() for t in trials if t.datetime_start is not None]
        rows.append({
            "name": fs.study_name, "direction": direction, "metric": a.get("metric", ""), "strategy": a.get("strategy", ""),
            "trials": len(trials), "complete": sum(t.state == TrialState.COMPLETE for t in trials),
            "pruned": sum(t.state == TrialState.PRUNED for t in trials), "fail": sum(t.state == TrialState.FAIL for t in trials),
            "best": best, "mainline": mainline, "promotions": len(promotions),
            "created": a.get("created") or (min(starts) if starts else None),
        })
    return rows


def _without_gc(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A reading command run with Python's cyclic collector paused: it builds a few objects per trial that
    form no cycles, and each collector pass walked every trial read (at 100,000 trials a fifth of
    `evo trials --format csv`). A command is one short process: what it allocates is freed at its exit."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        from evo.archive import no_gc

        with no_gc():
            return command(args)

    return run


@_without_gc
def cmd_studies(args: argparse.Namespace) -> int:
    from evo.archive import mask_url
    from evo.inspect import tables as T
    from evo.inspect.api import fmt_time, resolve_storage

    url = resolve_storage(args.storage)
    rows = study_rows(url)
    if args.format == "json":
        _out(T.to_json(rows))
        return 0
    if args.format == "csv":
        _out(T.to_csv(rows, list(rows[0])))
        return 0
    headers = ["name", "direction", "metric", "strategy", "trials", "complete", "pruned", "fail", "best", "mainline", "promotions", "created"]
    right = [False] * 4 + [True] * 7 + [False]
    _out(T.table(headers, [[r["name"], r["direction"], r["metric"] or "-", r["strategy"] or "-", r["trials"], r["complete"],
                             r["pruned"], r["fail"], T.fmt(r["best"]), T.fmt(r["mainline"]), r["promotions"],
                             fmt_time(r["created"])[:16]] for r in rows], right))
    _out(f"{len(rows)} stud{'y' if len(rows) == 1 else 'ies'} in {mask_url(url)}; best = best single run, mainline = promoted value")
    return 0


# -- trials ----------------------------------------------------------------------------------------
TRIAL_COLUMNS = ("number", "index", "role", "seed", "state", "value", "operator", "generation", "outcome", "seconds",
                 "description", "reason", "decision", "commit", "branch", "parent_indices", "reused_from_index", "metrics",
                 "datetime_start", "datetime_complete")


def trial_record(t: Any, decisions: dict[str, Any]) -> dict[str, Any]:
    a = t.user_attrs
    idx = a.get("index")
    return {
        "number": t.number, "index": idx, "role": a.get("role"), "seed": a.get("seed"), "state": t.state.name,
        "value": t.value, "operator": a.get("operator"), "generation": a.get("generation"), "outcome": a.get("outcome"),
        "seconds": a.get("run_seconds"), "description": a.get("description", ""), "reason": a.get("reason", ""),
        "decision": (decisions.get(str(idx), {}) or {}).get("decision") if idx is not None else None,
        "commit": a.get("commit", ""), "branch": a.get("branch", ""), "parent_indices": list(a.get("parent_indices", []) or []),
        "reused_from_index": a.get("reused_from_index"), "metrics": a.get("metrics", {}),
        "datetime_start": t.datetime_start.isoformat() if t.datetime_start else None,
        "datetime_complete": t.datetime_complete.isoformat() if t.datetime_complete else None,
    }


@_without_gc
def cmd_trials(args: argparse.Namespace) -> int:
    from evo.inspect import tables as T
    from evo.inspect.api import load_study

    s = load_study(args.study, args.storage)
    ts = list(s.evo_trials)
    total = len(ts)
    if args.state:
        ts = [t for t in ts if t.state.name == args.state]
    if args.operator:
        ts = [t for t in ts if fnmatch.fnmatchcase(str(t.user_attrs.get("operator", "")), args.operator)]
    if args.generation is not None:
        ts = [t for t in ts if t.user_attrs.get("generation") == args.generation]
    if args.role:
        ts = [t for t in ts if t.user_attrs.get("role") == args.role]
    if args.outcome:
        ts = [t for t in ts if t.user_attrs.get("outcome") == args.outcome]
    if args.index is not None:
        ts = [t for t in ts if t.user_attrs.get("index") == args.index]
    if args.sort == "recent":
        ts.reverse()
    elif args.sort == "value":
        ts.sort(key=lambda t: (t.value is None, s.sense.sort_key(t.value) if t.value is not None else 0.0, t.number))
    elif args.sort == "seconds":
        ts.sort(key=lambda t: -float(t.user_attrs.get("run_seconds", 0.0) or 0.0))
    matched = len(ts)
    if args.limit is not None:
        if args.limit < 0:
            raise EvoError(f"--limit {args.limit}: must be 0 or more")
        ts = ts[: args.limit]
    decisions = s.attrs.get("decisions", {}) or {}
    recs = [trial_record(t, decisions) for t in ts]
    if args.format == "json":
        _out(T.to_json(recs))
        return 0
    if args.format == "csv":
        _out(T.to_csv(recs, TRIAL_COLUMNS))
        return 0
    rows = []
    for r in recs:
        desc = r["description"] or ""
        if r["outcome"] not in ("complete", None) and r["reason"]:
            desc = f"{desc} ({r['reason']})" if desc and desc != r["reason"] else r["reason"]
        rows.append([r["number"], T.fmt(r["index"]), r["role"] or "-", T.fmt(r["seed"]), r["state"], T.fmt(r["value"]),
                     r["operator"] or "-", T.fmt(r["generation"]), r["outcome"] or "-", T.seconds(r["seconds"]), T.truncate(desc, 60)])
    headers = ["trial", "index", "role", "seed", "state", "value", "operator", "gen", "outcome", "seconds", "description"]
    if rows:
        _out(T.table(headers, rows, [True, True, False, True, False, True, False, True, False, True, False]))
    shown = f"{len(rows)} of {total} trials" if len(rows) != total else f"{total} trials"
    more = f" ({matched - len(rows)} more match; raise --limit)" if matched > len(rows) else ""
    _out(f"{shown} of study {s.study_name} ({s.direction_name} {s.metric}){more}")
    return 0


# -- best ------------------------------------------------------------------------------------------
@_without_gc
def cmd_best(args: argparse.Namespace) -> int:
    from evo.inspect import tables as T
    from evo.inspect.api import load_study

    s = load_study(args.study, args.storage)
    b = s.best()
    if args.format == "json":
        _out(T.to_json(b))
        return 0
    m, r = b["mainline"], b["best_run"]
    metric = b["metric"]
    _out(f"study {s.study_name}: {b['direction']} {metric}, {b['strategy'] or 'unknown strategy'}, {len(s.evo_trials)} trials")
    if m["value"] is None and m["index"] == 0:
        _out("mainline: the baseline has no result yet")
    else:
        head = "baseline (no promotion yet)" if m["index"] == 0 else f"#{m['index']} (trial {T.fmt(m['trial'])})"
        _out(f"mainline {m['branch']}: {head}  {metric} {T.fmt(m['value'])}")
    rows = []
    if m["index"] != 0:
        rows.append(("gain", f"{T.signed(m['gain'])} ({T.pct(m['gain_pct'])}) over the baseline {T.fmt(m['baseline'])}, "
                             f"in {m['promotions']} promotion(s), on the screening runs that selected them (optimistic)"))
        if m.get("fresh_gain") is not None:
            lo, hi = m["fresh_ci"]
            rows.append(("fresh gain", f"{T.signed(m['fresh_gain'])} (95% interval {T.fmt(lo, 4)} to {T.fmt(hi, 4)}) on fresh seeds "
                                        "that selected no step: the figure to trust"))
        d = m["trailer_decision"] or m["decision"]
        rows.append(("decision", d))
        if m["pairs"] is not None or m["llr"] is not None:
            rows.append(("confirmed", f"{T.fmt(m['pairs'])} paired seeds against #{T.fmt(m['against'])}, llr {T.fmt(m['llr'], 4)}"
                                      + (f", mean gain {T.fmt(-m['mean_diff'] if m['mean_diff'] is not None else None, 4)}"
                                         if m["mean_diff"] is not None else "")))
        elif m["rule"]:
            rows.append(("confirmed", f"no: {m['rule']}"))
    if m["n"] > 1:
        rows.append(("seeds", f"mean {T.fmt(m['mean'])} ± {T.fmt(m['sd'], 3)} (sd) over {m['n']} seeds: "
                              + ", ".join(f"{k}:{T.fmt(v)}" for k, v in sorted(m["seeds"].items()))))
    elif m["n"] == 1:
        rows.append(("seeds", "1 run (seed " + ", ".join(str(k) for k in m["seeds"]) + "): not replicated"))
    if m["index"] != 0:
        rows.append(("change", f"{m['description']} ({m['operator']})"))
    if m["commit"]:
        rows.append(("commit", f"{m['commit'][:10]} on {m['branch']}" + (f", candidate {m['candidate'][:10]}" if m["index"] != 0 else "")))
    for k, v in rows:
        _out(f"  {k:<10} {v}")
    if r is None:
        _out("best single run: none completed yet")
    else:
        if r["on_mainline"]:
            verdict = "on the mainline"
        elif r["index"] == 0:
            verdict = "the baseline"
        elif len(r["seeds"]) > 1:
            verdict = f"NOT on the mainline (promotion test: {r['decision'] or 'none'})"
        else:
            verdict = f"NOT on the mainline ({r['decision'] or 'untested'}): a single run, unconfirmed, may be seed noise"
        _out(f"best single screening run: #{r['index']} (trial {r['trial']}, seed {r['seed']})  {metric} {T.fmt(r['value'])}  — {verdict}")
        if r["index"] != m["index"] and r["index"] != 0:
            if len(r["seeds"]) > 1:
                mean = sum(r["seeds"].values()) / len(r["seeds"])
                _out(f"  {'seeds':<10} mean {T.fmt(mean)} over {len(r['seeds'])} seeds")
            _out(f"  {'change':<10} {r['description']} ({r['operator']})")
            _out(f"  {'branch':<10} {r['branch']}")
    if b["checkout"]:
        _out(f"check it out: {b['checkout']}")
    for n in b["notes"]:
        _out(f"note: {n}")
    return 0


# -- show ------------------------------------------------------------------------------------------
def _section(title: str) -> None:
    _out("")
    _out(f"--- {title}")


def _capped(text: str, limit: int | None, what: str) -> None:
    lines = text.rstrip("\n").splitlines()
    if limit is not None and len(lines) > limit:
        for line in lines[:limit]:
            _out(line)
        _out(f"... ({len(lines) - limit} more lines of {what}; --full shows everything)")
    else:
        for line in lines:
            _out(line)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _tail(path: Path, n: int) -> list[str] | None:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            chunk = min(size, max(8192, 400 * n))
            f.seek(size - chunk)
            data = f.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    return data.splitlines()[-n:] if n > 0 else []


@_without_gc
def cmd_show(args: argparse.Namespace) -> int:
    from optuna.trial import TrialState

    from evo.inspect import tables as T
    from evo.inspect.api import fmt_time, load_study

    s = load_study(args.study, args.storage)
    if args.index:
        mem = s.member(args.trial)
        t = mem.first
    else:
        t = s.trial(args.trial)
        mem = s.members().get(int(t.user_attrs["index"])) if "index" in t.user_attrs else None
    a = t.user_attrs
    full = args.full
    cap = None if full else 80
    metric = s.metric
    value = f"{metric} {T.fmt(t.value)}" if t.state == TrialState.COMPLETE else ""
    who = f"#{a.get('index')} {a.get('role', '')}, seed {a.get('seed')}" if "index" in a else "not an evo trial"
    _out(f"trial {t.number} of study {s.study_name} ({who}): {t.state.name}  {value}".rstrip())
    kv: list[tuple[str, str]] = []
    kv.append(("outcome", str(a.get("outcome", "-")) + (f": {a['reason']}" if a.get("reason") else "")))
    if a.get("reused_from_index") is not None:
        kv.append(("reused", f"result of #{a['reused_from_index']} (trial {T.fmt(a.get('reused_from'))}): same code"))
    kv.append(("operator", f"{a.get('operator', '-')}, generation {T.fmt(a.get('generation'))}"))
    members = s.members()
    parents = []
    for p in a.get("parent_indices", []) or []:
        pm = members.get(int(p))
        parents.append(f"#{p}" + (f" (trial {pm.number}, {metric} {T.fmt(pm.value)})" if pm else ""))
    kv.append(("parents", ", ".join(parents) or "- (the baseline)"))
    if mem is not None and mem.children:
        kv.append(("children", ", ".join(f"#{c}" for c in mem.children[:20]) + (f" (+{len(mem.children) - 20})" if len(mem.children) > 20 else "")))
    kv.append(("branch", f"{a.get('branch') or '-'}  commit {str(a.get('commit') or '-')[:10]}"))
    if a.get("description") and a.get("description") != a.get("reason"):
        kv.append(("description", str(a["description"])))
    if mem is not None and mem.promoted and mem.index > 0:  # what its promotion brought, inherited changes included
        for c in s.mainline_changes():
            if c["index"] != mem.index:
                continue
            inherited = [b for b in c["brings"] if not b["promoted"]]
            kv.append(("promotion", f"mainline step {c['step']} (from #{c['previous_index']}): {c['changes'] or 'changes unknown (no repository)'}"
                       + ("; inherits " + ", ".join(f"#{b['index']} '{T.truncate(b['description'], 50)}' ({b['decision'] or 'untested'})"
                                                    for b in inherited) if inherited else "")
                       + ("; undoes " + ", ".join(f"#{b['index']} '{T.truncate(b['description'], 50)}'" for b in c["drops"])
                          if c["drops"] else "")))
    if "run_seconds" in a:
        kv.append(("run", f"{T.seconds(a.get('run_seconds'))} on worker {T.fmt(a.get('worker'))}, exit {T.fmt(a.get('returncode'))}; "
                          f"{fmt_time(t.datetime_start.timestamp() if t.datetime_start else None)} -> "
                          f"{fmt_time(t.datetime_complete.timestamp() if t.datetime_complete else None)[11:]}"))
    metrics = a.get("metrics") or {}
    if metrics:
        kv.append(("metrics", ", ".join(f"{k} {T.fmt(v)}" for k, v in metrics.items())))
    if t.intermediate_values:
        pts = sorted(t.intermediate_values.items())
        kv.append(("progress", ", ".join(f"{k / 1000:.2f}:{T.fmt(v, 5)}" for k, v in pts[:12]) + (" ..." if len(pts) > 12 else "")))
    usage = a.get("usage") or {}
    total = s.attrs.get("usage") or {}
    if usage:
        kv.append(("usage", f"{usage.get('prompt_tokens', 0)} prompt + {usage.get('completion_tokens', 0)} completion tokens"))
    elif a.get("role") == "candidate" and (total.get("prompt_tokens") or total.get("completion_tokens")):
        kv.append(("usage", f"not recorded on this trial; the study spent {total.get('prompt_tokens', 0)} prompt + "
                            f"{total.get('completion_tokens', 0)} completion tokens in all"))
    if mem is not None and mem.decision:
        d = mem.decision
        text = d.get("decision", "-")
        if d.get("pairs") is not None:
            text += f" after {d['pairs']} pairs, llr {T.fmt(d.get('llr'), 4)}"
            if d.get("bounds"):
                text += f" (reject <= {T.fmt(d['bounds'][0], 3)}, accept >= {T.fmt(d['bounds'][1], 3)})"
            if d.get("against") is not None:
                text += f" against #{d['against']}"
        if d.get("rule"):
            text += f" ({d['rule']})"
        if d.get("recovered"):
            text += " (recovered from the mainline ref)"
        kv.append(("decision", text))
        if d.get("trace"):
            kv.append(("llr trace", ", ".join(T.fmt(x, 3) for x in d["trace"])
                       + (f"  delta {T.fmt(d.get('delta'), 4)}" if d.get("delta") is not None else "")))
        if d.get("mean_diff") is not None:
            kv.append(("pairs", f"mean gain {T.signed(-d['mean_diff'])} per seed (sd {T.fmt(d.get('sd'), 3)}) "
                                f"on seeds {', '.join(str(x) for x in d.get('seeds', []))}"))
    sprt = a.get("sprt") or {}
    if sprt.get("futility"):
        tr = sprt["futility"]
        kv.append(("futility", ", ".join(f"{f:.2f}:{T.fmt(llr, 3)}" for f, llr in tr[:12]) + (" ..." if len(tr) > 12 else "")
                   + f"  (fraction:llr; delta {T.fmt(sprt.get('delta'), 4)})"))
    if mem is not None and len(mem.runs) > 1:
        kv.append(("runs", ", ".join(
            f"trial {r.number} seed {r.user_attrs.get('seed')} "
            + (T.fmt(r.value) if r.state == TrialState.COMPLETE else str(r.user_attrs.get("outcome", r.state.name)))
            + (" (this)" if r.number == t.number else "") for r in mem.runs[:20])
            + (f" (+{len(mem.runs) - 20} more)" if len(mem.runs) > 20 else "")))
    width = max(len(k) for k, _ in kv)
    for k, v in kv:
        _out(f"  {k:<{width}}  {v}")
    art = Path(a["artifacts"]) if a.get("artifacts") else None

    if not args.no_diff:
        _show_diff(s, a, art, cap)
    if art is not None:
        for name in ("prompt.txt", "response.txt"):
            text = _read(art / name)
            if text is not None:
                _section(f"{name[:-4]} ({art / name})")
                _capped(text, cap, name[:-4])
        extra = sorted(p.name for p in art.iterdir() if p.name not in ("prompt.txt", "response.txt", "diff.patch")) if art.is_dir() else []
        if extra:
            _section(f"other artifacts in {art}: {', '.join(extra)}")
    log = a.get("log")
    if log:
        lines = _tail(Path(log), args.lines)
        if lines is None:
            _section(f"log {log}: no longer exists")
        else:
            _section(f"log {log} (last {len(lines)} lines)")
            for line in lines:
                _out(line)
    for n in dict.fromkeys(s.notes):
        _out(f"note: {n}")
    return 0


def _show_diff(s: Any, a: dict[str, Any], art: Path | None, cap: int | None) -> None:
    commit = a.get("commit") or ""
    parents = [p for p in a.get("parents", []) or [] if p]
    pidx = list(a.get("parent_indices", []) or [])
    if not parents:
        if a.get("index") == 0:
            return
    repo = s.repo() if commit and parents else None
    if repo is not None:
        from evo.errors import GitError

        for i, p in enumerate(parents):
            who = f"#{pidx[i]}" if i < len(pidx) else p[:8]
            try:
                text = repo.diff(p, commit)
            except GitError as e:
                _section(f"diff against parent {who}: {e}")
                continue
            _section(f"diff {who} -> #{a.get('index')} (git -C {repo.path} diff {p[:10]} {commit[:10]})")
            _capped(text or "(no change)\n", None if cap is None else 3 * cap, "diff")
        return
    patch = _read(art / "diff.patch") if art is not None else None
    if patch is not None:
        _section(f"diff ({art / 'diff.patch'})")
        _capped(patch or "(no change)\n", None if cap is None else 3 * cap, "diff")
    elif not commit:
        _section("diff: none (the proposal never became a commit)")
    else:
        _section("diff: unavailable (no repository and no diff.patch)")


# -- lineage ---------------------------------------------------------------------------------------
def _node_label(s: Any, node: Any, whole: bool) -> str:
    from evo.inspect import tables as T

    m = node.member
    star = ("★ " if T.unicode_ok() else "* ") if m.promoted and m.index > 0 else ""
    if node.repeat:
        return f"#{m.index} (see above)"
    if m.value is not None and m.outcome in ("complete", "duplicate"):
        val = f"{s.metric} {T.fmt(m.value)}"
    else:
        val = (m.outcome or "?").upper()
    op = m.operator or "-"
    if whole and len(m.parent_indices) > 1:
        op += " x " + ", ".join(f"#{p}" for p in m.parent_indices[1:])
    parts = [f"{star}#{m.index}", f"g{m.generation}", op, val]
    d = m.decision.get("decision", "")
    if m.index > 0 and d and d != "untested":
        parts.append(f"[{d}]")
    if m.outcome == "duplicate" and m.attrs.get("reused_from_index") is not None:
        parts.append(f"(same code as #{m.attrs['reused_from_index']})")
    desc = m.description if m.index > 0 else ""
    if m.outcome not in ("complete", "duplicate") and m.reason:
        desc = f"{desc} ({m.reason})" if desc and desc != m.reason else m.reason
    if desc:
        parts.append(T.truncate(desc, 60))
    parts.append(f"(trial {m.number})")
    return "  ".join(parts)


@_without_gc
def cmd_lineage(args: argparse.Namespace) -> int:
    from evo.inspect import tables as T
    from evo.inspect.api import load_study

    s = load_study(args.study, args.storage)
    if args.best:
        if args.trial is not None:
            raise EvoError("give TRIAL or --best, not both")
        root = s.lineage(index=s.mainline()[-1]["index"])
        whole = False
    elif args.trial is None:
        if args.index:
            raise EvoError("--index needs TRIAL (an individual's index)")
        root = s.lineage()
        whole = True
    else:
        root = s.lineage(index=args.trial) if args.index else s.lineage(trial=args.trial)
        whole = False
    mark = "★" if T.unicode_ok() else "*"
    if whole:
        _out(f"study {s.study_name}: the whole tree from the baseline, {len(s.members())} individuals "
             f"({mark} = promoted to {s.mainline_branch}; a crossover sits under its first parent, 'x #j' names the other)")
    else:
        depth = max(d for d, _ in root.walk())
        _out(f"study {s.study_name}: ancestry of #{root.member.index} (trial {root.member.number}), "
             f"{depth} level(s) of ancestors back to the baseline ({mark} = promoted; a crossover has two branches)")
    _out(T.tree(root, lambda n: _node_label(s, n, whole)))
    return 0


# -- mainline --------------------------------------------------------------------------------------
@_without_gc
def cmd_mainline(args: argparse.Namespace) -> int:
    from evo.inspect import tables as T
    from evo.inspect.api import fmt_time, load_study

    s = load_study(args.study, args.storage)
    rows = [dict(r) for r in s.mainline()]
    # every change from the previous step (git diff of the two mainline commits), and the
    # individuals it comes from: the candidate and the untested ancestors it inherited from
    changes = {c["step"]: c for c in s.mainline_changes()}
    for r in rows:
        c = changes.get(r["step"])
        r["changes"] = (c["changes"] if c else None) if r["step"] else None
        r["brings"] = [b["index"] for b in c["brings"]] if c else []
        r["drops"] = [b["index"] for b in c["drops"]] if c else []
    if args.format == "json":
        _out(T.to_json({"study": s.study_name, "branch": s.mainline_branch, "metric": s.metric, "direction": s.direction_name,
                        "steps": rows, "notes": list(dict.fromkeys(s.notes))}))
        return 0
    if args.format == "csv":
        _out(T.to_csv(rows, list(rows[0])))
        return 0
    base, last = rows[0], rows[-1]
    total = s.gain(last["value"], base["value"])
    pct = 100.0 * total / abs(base["value"]) if total is not None and base["value"] else None
    _out(f"mainline {s.mainline_branch} of study {s.study_name} ({s.direction_name} {s.metric}): {len(rows) - 1} promotion(s), "
         f"baseline {T.fmt(base['value'])} -> {T.fmt(last['value'])} ({T.signed(total)}, {T.pct(pct)})")
    t0 = base["time"]
    table_rows = []
    for r in rows:
        after = f"+{T.seconds(r['time'] - t0)}" if r["time"] is not None and t0 is not None and r["step"] else ""
        table_rows.append([r["step"], f"#{r['index']}", T.fmt(r["trial"]), r["evaluations"], T.fmt(r["value"]),
                           T.signed(r["gain"]), T.pct(r["gain_pct"]), T.truncate(r["decision"] or "-", 44),
                           (fmt_time(r["time"])[5:16] + (f" ({after})" if after else "")) if r["time"] else "-",
                           (r["commit"] or "-")[:8], T.truncate(r["changes"] or r["description"] or "", 60)])
    _out(T.table(["step", "index", "trial", "runs", "value", "gain", "gain%", "decision", "when", "commit",
                  "change from the previous step"],
                 table_rows, [True, True, True, True, True, True, True, False, False, False, False]))
    for st in rows[1:]:
        c = changes.get(st["step"])
        if c is None:
            continue
        inherited = [b for b in c["brings"] if not b["promoted"]]
        if inherited or c["drops"] or (c["changes"] and c["changes"] != s.member(st["index"]).description):
            _out(f"step {st['step']} #{st['index']}: {c['changes'] or '(no repository: changes unknown)'}; from "
                 + ", ".join(f"#{b['index']} {b['operator']} '{T.truncate(b['description'], 50)}'"
                             + ("" if b["promoted"] else f" ({b['decision'] or 'untested'}, inherited)") for b in c["brings"])
                 + ("; undoes " + ", ".join(f"#{b['index']} '{T.truncate(b['description'], 50)}'" for b in c["drops"])
                    if c["drops"] else ""))
    if s.attrs.get("repo"):
        _out(f"runs = runs finished by then; change = git diff of the step's mainline commit against the previous one; "
             f"see the commits: git -C {s.attrs['repo']} log --first-parent {s.mainline_branch}")
    for n in dict.fromkeys(s.notes):
        _out(f"note: {n}")
    return 0


# -- compare ---------------------------------------------------------------------------------------
@_without_gc
def cmd_compare(args: argparse.Namespace) -> int:
    import re

    from evo.inspect import tables as T
    from evo.inspect.api import load_study, open_existing, resolve_storage
    from evo.inspect.compare import compare

    url = resolve_storage(args.storage)
    st = open_existing(url)
    if args.group:
        try:
            re.compile(args.group)
        except re.error as e:
            raise EvoError(f"--group {args.group!r}: not a regular expression: {e}") from None
    studies = [load_study(n, st) for n in _pick_studies(st, url, args.studies or ["*"])]
    res = compare(studies, group=args.group, by=args.by, value=args.value, budget=args.budget)
    if args.output:
        from evo.inspect.plots import plot_compare

        out = plot_compare(res, args.output)
    if args.format == "json":
        payload = {k: v for k, v in res.items() if k != "curves"}
        payload["curves"] = {k: [{c: r[c] for c in ("evaluation", "seconds", "best", "mainline")} for r in v] for k, v in res["curves"].items()}
        _out(T.to_json(payload))
        return 0
    what = "best screening value" if args.value == "best" else "mainline (promoted) value"
    at = {"runs": f"at {T.fmt(res['compared_at'])} runs each (the smallest study's)",
          "run-hours": f"at {T.seconds(res['compared_at'])} of run time each (the smallest study's)",
          "end": "where each study ended"}[args.budget]
    _out(f"{len(studies)} studies, {res['direction']} {res['metric']}, {what} {at}, grouped {res['grouping']}")
    _out(T.table(["study", "group", "strategy", "runs", "compute", "baseline", "best run", "mainline", "promotions", "compared"],
                 [[r["study"], r["group"], r["strategy"] or "-", r["runs"], T.seconds(r["seconds"]), T.fmt(r["baseline"]),
                   T.fmt(r["best"]), T.fmt(r["mainline"]), r["promotions"], T.fmt(r["final"])] for r in res["studies"]],
                 [False, False, False, True, True, True, True, True, True, True]))
    _out("")
    conf = int(res["confidence"] * 100)
    _out(T.table(["group", "n", "mean", f"{conf}% CI (t)", "sd", "median", "best"],
                 [[g["group"], g["n"], T.fmt(g["mean"]),
                   f"[{T.fmt(g['ci_low'])}, {T.fmt(g['ci_high'])}]" if g["ci_low"] is not None else "- (n < 2)",
                   T.fmt(g["sd"], 3), T.fmt(g["median"]), T.fmt(g["best"])] for g in res["groups"]],
                 [False, True, True, False, True, True, True]))
    for t in res["tests"]:
        _out(f"{t['test']}: {t['a']} vs {t['b']}: U = {T.fmt(t['u'])}, p = {t['p']:.3g}"
             + (f" (better median: {t['better_median']})" if t["better_median"] != "-" else "")
             + ("" if t["p"] < 0.05 else "; no significant difference at 5%"))
    for n in res["notes"]:
        _out(f"note: {n}")
    if args.output:
        _out(f"wrote {out}")
    return 0


# -- report ----------------------------------------------------------------------------------------
def _pick_studies(st: Any, url: str, patterns: list[str]) -> list[str]:
    """Study names for names and globs (in the order given, each once); EvoError for a miss."""
    from evo.archive import mask_url
    from evo.inspect.api import missing_study

    names = sorted(s.study_name for s in st.get_all_studies())
    if not names:
        raise missing_study("", url, names)
    chosen: list[str] = []
    for pat in patterns:
        if any(c in pat for c in "*?["):
            hits = [n for n in names if fnmatch.fnmatchcase(n, pat)]
            if not hits:
                raise EvoError(f"no study matches {pat!r} in {mask_url(url)} (studies there: {', '.join(names[:20])})")
        elif pat in names:
            hits = [pat]
        else:
            raise missing_study(pat, url, names)
        chosen.extend(h for h in hits if h not in chosen)
    return chosen


@_without_gc
def cmd_report(args: argparse.Namespace) -> int:
    from evo.inspect.api import load_study, open_existing, resolve_storage
    from evo.inspect.html import write_report

    if args.max_diff_lines < 0:
        raise EvoError(f"--max-diff-lines {args.max_diff_lines}: must be 0 (no limit) or more")
    if args.group:
        import re

        try:
            re.compile(args.group)
        except re.error as e:
            raise EvoError(f"--group {args.group!r}: not a regular expression: {e}") from None
    url = resolve_storage(args.storage)
    st = open_existing(url)
    studies = [load_study(n, st) for n in _pick_studies(st, url, args.studies)]
    out = args.output or (f"{studies[0].study_name}.html" if len(studies) == 1 else "report.html")
    path = write_report(studies, out, max_diff_lines=args.max_diff_lines or None, group=args.group, by=args.by, value=args.value)
    notes = [n for s in studies for n in dict.fromkeys(s.notes)]
    _out(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB, {len(studies)} stud{'y' if len(studies) == 1 else 'ies'}): "
         f"open it in a browser")
    for n in dict.fromkeys(notes):
        _out(f"note: {n}")
    return 0


# -- clean -----------------------------------------------------------------------------------------
def _short(ref: str) -> str:
    return ref[len("refs/heads/"):] if ref.startswith("refs/heads/") else ref


def cmd_clean(args: argparse.Namespace) -> int:
    from evo.archive import mask_url
    from evo.inspect.api import missing_study, open_existing, resolve_storage
    from evo.inspect.clean import clean, plan

    url = resolve_storage(args.storage)
    st = open_existing(url)
    names = sorted(s.study_name for s in st.get_all_studies())
    if args.study not in names:
        raise missing_study(args.study, url, names)

    def describe(p: Any) -> list[str]:
        refs = sorted(p.refs, key=lambda r: (not r.endswith("/main"), r))  # the mainline first
        shown = ", ".join(_short(r) for r in refs[:3]) + (f", ... ({len(refs)} in all)" if len(refs) > 3 else "")
        lines = [f"  archive    study '{p.study}' ({p.trials} trials) in {mask_url(p.url)}"]
        if p.repo is not None:
            lines.append(f"  refs       {len(refs)} in {p.repo.path}" + (f": {shown}" if refs else ""))
        lines += [f"  folder     {f}" for f in p.folders]
        lines += [f"  kept       {_short(r)} at {sha[:10]}" for r, sha in sorted(p.kept.items())]
        return lines

    if args.dry_run:
        p = plan(st, url, args.study, args.keep_mainline)
        _out(f"evo clean {args.study} would remove:")
        for line in describe(p):
            _out(line)
        for n in p.notes:
            _out(f"note: {n}")
        return 0
    if not args.yes and sys.stdin.isatty():
        p = plan(st, url, args.study, args.keep_mainline)
        _out(f"evo clean {args.study} will remove:")
        for line in describe(p):
            _out(line)
        try:
            answer = input("remove them? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            _out("nothing removed")
            return 1
    p = clean(st, url, args.study, args.keep_mainline)
    _out(f"removed study '{args.study}':")
    for line in describe(p):
        _out(line)
    for n in p.notes:
        _out(f"note: {n}")
    if p.refs:
        _out(f"the commits stay in {p.repo.path}'s object store until git gc drops them (unreachable now)")
    return 0


# -- plot ------------------------------------------------------------------------------------------
@_without_gc
def cmd_plot(args: argparse.Namespace) -> int:
    from evo.inspect.api import load_study
    from evo.inspect.plots import plot_study

    s = load_study(args.study, args.storage)
    if not s.evo_trials:
        raise EvoError(f"study '{s.study_name}' has no trials yet: nothing to plot")
    out = plot_study(s, args.output or f"{s.study_name}.png")
    _out(f"wrote {out}")
    return 0


# -- dashboard -------------------------------------------------------------------------------------
def cmd_dashboard(args: argparse.Namespace) -> int:
    from evo.archive import mask_url
    from evo.inspect.api import ReadOnlyStorage, missing_study, open_existing, resolve_storage

    try:
        from optuna_dashboard import run_server
    except ImportError:
        raise EvoError("optuna-dashboard is not installed: pip install 'evo-search[dashboard]' (the dashboard extra), "
                       "or pip install optuna-dashboard") from None
    url = resolve_storage(args.storage)
    st = open_existing(url)
    if not st.get_all_studies():
        raise missing_study("", url, [])
    if not 0 <= args.port <= 65535:
        raise EvoError(f"--port {args.port}: not a port number")
    mode = "writable" if args.writable else "read-only (--writable allows deletes and notes)"
    print(f"optuna-dashboard for {mask_url(url)} on http://{args.host}:{args.port}/, {mode} (Ctrl-C stops it)", flush=True)
    try:
        run_server(st if args.writable else ReadOnlyStorage(st), host=args.host, port=args.port)
    except OSError as e:
        raise EvoError(f"cannot serve on {args.host}:{args.port}: {e.strerror or e}") from None
    except KeyboardInterrupt:
        print("dashboard stopped", file=sys.stderr)
    return 0
