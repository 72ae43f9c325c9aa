"""PNG figures for `evo plot` and `evo compare -o` (matplotlib, drawn with the Agg canvas
directly: importing this module never changes the user's pyplot backend)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from evo.errors import EvoError
from evo.inspect.api import SCREENING_ROLES, EvoStudy

OUTCOME_COLORS = {
    "complete": "#4c72b0", "duplicate": "#8da0cb", "pruned": "#999999", "crashed": "#c44e52", "timeout": "#dd8452",
    "invalid": "#937860", "rejected": "#da8bc3", "operator_failed": "#8172b3", "interrupted": "#cccccc",
}


def _figure(size: tuple[float, float]) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise EvoError("plots need matplotlib: pip install matplotlib") from None
    fig = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | Path) -> Path:
    out = Path(path)
    if out.parent and not out.parent.is_dir():
        raise EvoError(f"cannot write {out}: folder {out.parent} does not exist")
    try:
        fig.savefig(out, format="png")
    except OSError as e:
        raise EvoError(f"cannot write {out}: {e.strerror or e}") from None
    return out


def _steps(ax: Any, xs: list[float], ys: list[float | None], **kw: Any) -> None:
    pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
    if pts:
        ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", **kw)


def plot_study(s: EvoStudy, path: str | Path) -> Path:
    """History (every value, best-so-far and mainline), outcome breakdown, fitness per generation."""
    fig = _figure((16, 4.8))
    gs = fig.add_gridspec(1, 3, width_ratios=[2.2, 1.1, 1.6], wspace=0.28)
    ax_h, ax_o, ax_g = fig.add_subplot(gs[0]), fig.add_subplot(gs[1]), fig.add_subplot(gs[2])
    metric = s.metric
    members = s.members()
    promoted = {i for i, m in members.items() if m.promoted and i > 0}

    # 1. optimisation history, x = trial number
    screen_x, screen_y, other_x, other_y, star_x, star_y, fail_x, fail_c = [], [], [], [], [], [], [], []
    for t in s.evo_trials:
        a = t.user_attrs
        ok = t.state == TrialState.COMPLETE and a.get("outcome") == "complete" and t.value is not None
        if a.get("role") in SCREENING_ROLES:
            if ok:
                (star_x if a.get("index") in promoted else screen_x).append(t.number)
                (star_y if a.get("index") in promoted else screen_y).append(t.value)
            elif a.get("outcome") != "duplicate":
                fail_x.append(t.number)
                fail_c.append(OUTCOME_COLORS.get(a.get("outcome", ""), "#c44e52"))
        elif ok:
            other_x.append(t.number)
            other_y.append(t.value)
    if other_x:
        ax_h.scatter(other_x, other_y, s=9, color="#bbbbbb", label="replicate / confirm runs", zorder=2)
    ax_h.scatter(screen_x, screen_y, s=18, color=OUTCOME_COLORS["complete"], label="screening runs", zorder=3)
    if star_x:
        ax_h.scatter(star_x, star_y, s=90, marker="*", color="#2ca02c", edgecolor="black", linewidth=0.5, label="promoted", zorder=5)
    hist = s.history()
    xs = [r["number"] for r in hist]
    if s.evo_trials:
        xs_end = s.evo_trials[-1].number
        _steps(ax_h, xs + [xs_end], [r["best"] for r in hist] + [hist[-1]["best"] if hist else None],
               color="#ff7f0e", linewidth=1.6, label="best screening value so far", zorder=4)
        _steps(ax_h, xs + [xs_end], [r["mainline"] for r in hist] + [hist[-1]["mainline"] if hist else None],
               color="#2ca02c", linewidth=2.2, label="mainline (promoted)", zorder=4)
    if fail_x:
        ax_h.scatter(fail_x, [0.0] * len(fail_x), marker="|", s=120, c=fail_c, transform=ax_h.get_xaxis_transform(),
                     label="failed / pruned (no value)", zorder=3, clip_on=False)
    ax_h.set_title(f"{s.study_name}: optimisation history ({s.direction_name} {metric})")
    ax_h.set_xlabel("trial")
    ax_h.set_ylabel(metric)
    ax_h.grid(alpha=0.3)
    ax_h.legend(fontsize=8, loc="best")

    # 2. outcome breakdown of the individuals (their screening run or failed proposal)
    counts: dict[str, int] = {}
    for m in members.values():
        counts[m.outcome or "?"] = counts.get(m.outcome or "?", 0) + 1
    names = sorted(counts, key=lambda k: (-counts[k], k))
    bars = ax_o.bar(range(len(names)), [counts[n] for n in names], width=0.6, color=[OUTCOME_COLORS.get(n, "#777777") for n in names])
    ax_o.set_xlim(-0.7, max(len(names), 4) - 0.3)
    ax_o.bar_label(bars, fontsize=8)
    ax_o.set_xticks(range(len(names)))
    ax_o.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    decisions: dict[str, int] = {}
    for m in members.values():
        if m.index > 0 and m.decision.get("decision"):
            decisions[m.decision["decision"]] = decisions.get(m.decision["decision"], 0) + 1
    ax_o.set_title(f"outcomes of {len(members)} individuals")
    if decisions:
        ax_o.text(0.98, 0.97, "decisions:\n" + "\n".join(f"{k} {v}" for k, v in sorted(decisions.items())),
                  transform=ax_o.transAxes, ha="right", va="top", fontsize=8,
                  bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8, "edgecolor": "#cccccc"})
    ax_o.set_ylabel("individuals")
    ax_o.grid(axis="y", alpha=0.3)

    # 3. fitness per generation (screening values), box + jittered points
    per_gen: dict[int, list[float]] = {}
    for m in members.values():
        if m.value is not None and m.outcome == "complete":
            per_gen.setdefault(m.generation, []).append(float(m.value))
    gens = sorted(per_gen)
    if gens:
        data = [per_gen[g] for g in gens]
        if max(len(d) for d in data) > 1:
            ax_g.boxplot(data, positions=gens, widths=0.6, showfliers=False, manage_ticks=False,
                         medianprops={"color": "#ff7f0e"}, boxprops={"color": "#555555"})
        rng = random.Random(0)
        for g, d in zip(gens, data):
            ax_g.scatter([g + rng.uniform(-0.15, 0.15) for _ in d], d, s=12, color=OUTCOME_COLORS["complete"], alpha=0.7, zorder=3)
        best = []
        run_best = None
        for g in gens:
            gb = s.pick_best(per_gen[g])
            run_best = gb if run_best is None or (gb is not None and s.better(gb, run_best)) else run_best
            best.append(run_best)
        ax_g.plot(gens, best, color="#ff7f0e", linewidth=1.2, label="best so far")
        ax_g.legend(fontsize=8, loc="best")
    else:
        ax_g.text(0.5, 0.5, "no completed runs", ha="center", va="center", transform=ax_g.transAxes)
    from matplotlib.ticker import MaxNLocator

    ax_g.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_g.set_title("population fitness per generation")
    ax_g.set_xlabel("generation")
    ax_g.set_ylabel(metric)
    ax_g.grid(alpha=0.3)
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.17, top=0.91)
    return _save(fig, path)


def plot_compare(result: dict[str, Any], path: str | Path) -> Path:
    """Best-so-far against runs and against compute seconds (one line per study, a colour per
    group), and the final values per group with their confidence interval."""
    fig = _figure((16, 4.8))
    ax_e, ax_s, ax_f = fig.add_subplot(1, 3, 1), fig.add_subplot(1, 3, 2), fig.add_subplot(1, 3, 3)
    key = result["value"]
    groups = [g["group"] for g in result["groups"]]
    cmap = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
    color = {g: cmap[i % len(cmap)] for i, g in enumerate(groups)}
    labelled: set[str] = set()
    for row in result["studies"]:
        hist = result["curves"][row["study"]]
        g = row["group"]
        lab = g if g not in labelled else None
        labelled.add(g)
        _steps(ax_e, [r["evaluation"] for r in hist], [r[key] for r in hist], color=color[g], alpha=0.8, linewidth=1.3, label=lab)
        _steps(ax_s, [r["seconds"] for r in hist], [r[key] for r in hist], color=color[g], alpha=0.8, linewidth=1.3, label=lab)
        if hist and hist[-1][key] is not None:  # where each study ended
            ax_e.plot([hist[-1]["evaluation"]], [hist[-1][key]], "o", color=color[g], markersize=4)
            ax_s.plot([hist[-1]["seconds"]], [hist[-1][key]], "o", color=color[g], markersize=4)
    what = "best screening value so far" if key == "best" else "mainline value"
    for ax, xl in ((ax_e, "runs (evaluations)"), (ax_s, "compute seconds (sum of run_seconds)")):
        ax.set_xlabel(xl)
        ax.set_ylabel(f"{result['metric']} ({what})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    ax_e.set_title(f"{what} against runs")
    ax_s.set_title(f"{what} against compute")
    rng = random.Random(0)
    for i, g in enumerate(result["groups"]):
        vals = g["values"]
        ax_f.scatter([i + rng.uniform(-0.12, 0.12) for _ in vals], vals, color=color[g["group"]], s=25, zorder=3)
        if g["mean"] is not None and g["n"] >= 2:  # the mean with its interval (black), beside the studies' dots
            lo, hi = g["ci_low"], g["ci_high"]
            err = [[g["mean"] - lo], [hi - g["mean"]]] if lo is not None else None
            ax_f.errorbar([i + 0.3], [g["mean"]], yerr=err, fmt="o", color="black", capsize=5, zorder=4)
        elif vals:  # one study: its dot is all there is; say why there is no interval
            ax_f.annotate("one study:\nno interval", (i, vals[0]), xytext=(8, -4), textcoords="offset points", fontsize=7, color="#555555")
    ax_f.set_xticks(range(len(groups)))
    ax_f.set_xticklabels([f"{g['group']}\n(n={g['n']})" for g in result["groups"]], fontsize=8)
    ax_f.set_xlim(-0.6, len(groups) - 0.4)
    title = f"final value per study (dots); group mean, {int(result['confidence'] * 100)}% t CI (black)"
    if result["tests"]:
        t = min(result["tests"], key=lambda t: t["p"])
        title += f"\nMann-Whitney {t['a']} vs {t['b']}: p = {t['p']:.3g}"
    ax_f.set_title(title, fontsize=10)
    ax_f.set_ylabel(result["metric"])
    ax_f.grid(axis="y", alpha=0.3)
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.16, top=0.88, wspace=0.25)
    return _save(fig, path)
