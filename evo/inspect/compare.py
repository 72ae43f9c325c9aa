"""`evo compare`: best-so-far curves of several studies, grouped (e.g. repeated seeds of one
strategy), with a t confidence interval per group and Mann-Whitney U tests between groups."""

from __future__ import annotations

import math
import re
import statistics
from itertools import combinations
from typing import Any

from evo.errors import EvoError
from evo.inspect.api import EvoStudy

CONFIDENCE = 0.95


def group_of(s: EvoStudy, group: str | None, by: str) -> str:
    """The group a study belongs to: the --group regex's first group (or whole match) on its
    name; else the study attr named by --by (`strategy`, `name`, or a dotted path such as
    `config.search.population`)."""
    if group:
        m = re.search(group, s.study_name)
        if m is None:
            return s.study_name
        if m.groups() and m.group(1) is not None:
            return m.group(1)
        return m.group(0)
    if by == "name":
        return s.study_name
    value: Any = s.attrs
    for part in by.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "-" if value is None else str(value)


def t_interval(values: list[float], confidence: float = CONFIDENCE) -> tuple[float | None, float | None]:
    if len(values) < 2:
        return None, None
    from scipy import stats

    mean = statistics.fmean(values)
    sd = statistics.stdev(values)
    if sd == 0:
        return mean, mean
    half = float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1)) * sd / math.sqrt(len(values))
    return mean - half, mean + half


def at_budget(hist: list[dict[str, Any]], key: str, limit: float) -> dict[str, Any]:
    """The last history row within `limit` of `key` (evaluation = runs, seconds = run seconds)."""
    row: dict[str, Any] = {}
    for r in hist:
        if r[key] > limit + 1e-9:
            break
        row = r
    return row


def compare(studies: list[EvoStudy], group: str | None = None, by: str = "strategy", value: str = "mainline",
            budget: str = "runs") -> dict[str, Any]:
    """Rows per study, stats per group, pairwise tests, and each study's curve.

    value: "best" = the best screening value so far; "mainline" = the promoted (confirmed) value.
    budget: the compute at which studies are compared, read from the archive: "runs" (the
    smallest study's number of runs, replicates and confirmations included), "run-hours" (its
    summed run time), or "end" (wherever each study ended: only fair when they spent the same).
    """
    if not studies:
        raise EvoError("no studies to compare")
    directions = sorted({s.direction_name for s in studies})
    if len(directions) > 1:
        raise EvoError("the studies do not share a direction: " + ", ".join(f"{s.study_name} {s.direction_name}" for s in studies))
    ref = studies[0]
    notes = []
    metrics = sorted({s.metric for s in studies})
    if len(metrics) > 1:
        notes.append(f"the studies report different metrics ({', '.join(metrics)}): the values may not be comparable")
    rows, curves = [], {}
    hists = {s.study_name: s.history() for s in studies}
    total_runs = {n: (h[-1]["evaluation"] if h else 0) for n, h in hists.items()}
    total_secs = {n: (h[-1]["seconds"] if h else 0.0) for n, h in hists.items()}
    point = {"runs": ("evaluation", min(total_runs.values())), "run-hours": ("seconds", min(total_secs.values())),
             "end": ("evaluation", math.inf)}[budget]
    spent = total_runs if budget != "run-hours" else total_secs
    lo_spent, hi_spent = min(spent.values()), max(spent.values())
    if budget == "end" and lo_spent > 0 and hi_spent > 1.1 * lo_spent:
        notes.append(f"WARNING: the studies spent {lo_spent:g}..{hi_spent:g} runs (more than 10% apart): compared where each ended, "
                     "which favours the longer ones; the default compares at equal runs")
    elif budget != "end" and lo_spent > 0 and hi_spent > 1.1 * lo_spent:
        unit = "runs" if budget == "runs" else "run-seconds"
        notes.append(f"the studies spent {lo_spent:g}..{hi_spent:g} {unit}: each is read at {point[1]:g} {unit} (the smallest)")
    for s in studies:
        hist = hists[s.study_name]
        curves[s.study_name] = hist
        last = at_budget(hist, *point) if hist else {}
        main = s.mainline()
        rows.append({
            "study": s.study_name, "group": group_of(s, group, by), "strategy": s.strategy, "metric": s.metric,
            "runs": len(hist), "candidates": sum(1 for m in s.members() if m > 0), "seconds": last.get("seconds", 0.0),
            "baseline": main[0]["value"], "best": last.get("best"), "mainline": main[-1]["value"],
            "promotions": len(main) - 1, "final": last.get(value), "at_runs": last.get("evaluation"),
            "at_run_seconds": last.get("seconds"),
        })
        notes.extend(f"{s.study_name}: {n}" for n in dict.fromkeys(s.notes))
    groups: dict[str, list[float]] = {}
    for r in rows:
        groups.setdefault(r["group"], [])
        if r["final"] is not None:
            groups[r["group"]].append(float(r["final"]))
    gstats = []
    for name, vals in groups.items():
        lo, hi = t_interval(vals)
        gstats.append({
            "group": name, "n": len(vals), "mean": statistics.fmean(vals) if vals else None,
            "sd": statistics.stdev(vals) if len(vals) > 1 else None, "median": statistics.median(vals) if vals else None,
            "ci_low": lo, "ci_high": hi, "best": ref.pick_best(vals), "values": vals,
        })
    tests = []
    for a, b in combinations(gstats, 2):
        if a["n"] < 2 or b["n"] < 2:
            continue
        from scipy import stats

        res = stats.mannwhitneyu(a["values"], b["values"], alternative="two-sided")
        better = a["group"] if ref.better(a["median"], b["median"]) else b["group"] if ref.better(b["median"], a["median"]) else "-"
        tests.append({"a": a["group"], "b": b["group"], "test": "Mann-Whitney U (two-sided)", "u": float(res.statistic),
                      "p": float(res.pvalue), "better_median": better})
    if len(gstats) > 1 and not tests:
        notes.append("no test between groups: each needs at least 2 studies (e.g. repeated seeds)")
    return {"metric": ref.metric, "direction": ref.direction_name, "value": value, "confidence": CONFIDENCE,
            "budget": budget, "compared_at": None if budget == "end" else point[1],
            "grouping": f"regex {group}" if group else f"by {by}", "studies": rows, "groups": gstats, "tests": tests,
            "curves": curves, "notes": notes}
