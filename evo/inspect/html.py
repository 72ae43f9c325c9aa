"""`evo report`: one self-contained HTML page per search (or several), for a browser.

The page holds its data as one JSON block and draws everything with inline JavaScript and SVG
(no network, no external file): the lineage tree (a crossover has two incoming edges), the
mainline's steps with their confirmed gains and 95% intervals and the whole diff from the
previous mainline, every candidate's outcome, diff against each parent and progress curves, the
optimisation history, and, for several studies, the strategy comparison of `evo compare`.

Diffs come from the study's repository (`git diff-tree --stdin`, one process for all of them),
else from the saved `diff.patch` artifacts. Nothing here writes to the storage or the repo.
"""

from __future__ import annotations

import html
import json
import math
import re
import time
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from evo.errors import EvoError, GitError
from evo.inspect.api import EvoStudy, constant_changes, fmt_time, summarize_changes

MAX_DIFF_LINES = 300  # per diff; the page says when one is cut
MAX_CURVES = 400  # screening runs drawn in the overview of progress curves (the latest ones)
_SHA = re.compile(r"^[0-9a-f]{40}(?:[0-9a-f]{24})?$")


def _num(v: Any) -> float | None:
    """A finite float for JSON (NaN and inf are not JSON), else None."""
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _finite(obj: Any) -> Any:
    """The data with every NaN or infinity replaced by None (JSON has neither)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _cap(text: str, max_lines: int | None) -> tuple[str, int]:
    """The text cut to max_lines, and how many lines were cut."""
    if max_lines is None:
        return text, 0
    lines = text.splitlines()
    if len(lines) <= max_lines:
        return text, 0
    return "\n".join(lines[:max_lines]) + "\n", len(lines) - max_lines


def batch_diffs(repo: Any, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """`git diff OLD NEW` for every (old, new) pair of commits, in one `git diff-tree --stdin`.

    With --always every input line prints its commit id, then its patch (nothing when the
    trees are equal), so the output splits on those id lines, in input order."""
    pairs = list(dict.fromkeys((a, b) for a, b in pairs if a and b))
    if not pairs:
        return {}
    out: dict[tuple[str, str], str] = {}
    try:
        proc = repo.git("diff-tree", "--stdin", "-p", "-r", "--always", "--no-color",
                        input="".join(f"{new} {old}\n" for old, new in pairs).encode())
        text = proc.stdout.decode(errors="replace")
    except GitError:
        text = ""
    blocks: list[list[str]] = []
    for line in text.splitlines(keepends=True):
        if _SHA.match(line.strip()) and len(blocks) < len(pairs) and line.strip() == pairs[len(blocks)][1]:
            blocks.append([])
        elif blocks:
            blocks[-1].append(line)
    if len(blocks) == len(pairs):
        return {p: "".join(b) for p, b in zip(pairs, blocks)}
    for old, new in pairs:  # an unknown commit stops diff-tree: fall back to one diff per pair
        try:
            out[(old, new)] = repo.diff(old, new)
        except GitError as e:
            out[(old, new)] = f"(git diff failed: {e})\n"
    return out


def _curve(t: Any) -> list[list[float]]:
    pts = []
    for step, v in sorted(t.intermediate_values.items()):
        f = _num(v)
        if f is not None:
            pts.append([round(step / 1000.0, 4), f])
    return pts


def _ci(d: dict[str, Any]) -> tuple[float | None, float | None, float | None]:
    """The paired test's mean gain per seed with its 95% t interval (gain: positive = better)."""
    mean_diff, sd, n = _num(d.get("mean_diff")), _num(d.get("sd")), d.get("pairs")
    if mean_diff is None or not isinstance(n, int) or n < 1:
        return None, None, None
    gain = -mean_diff
    if n < 2 or sd is None:
        return gain, None, None
    from scipy import stats

    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return gain, gain - half, gain + half


def study_data(s: EvoStudy, max_diff_lines: int | None = MAX_DIFF_LINES) -> dict[str, Any]:
    """Everything the page shows about one study, as plain JSON-able data."""
    members = s.members()
    if not members:
        raise EvoError(f"study '{s.study_name}' has no evo trials yet: nothing to report")
    rows = s.mainline()
    repo = s.repo()
    # the diffs: each individual against each parent, each mainline step against the previous one
    pairs: list[tuple[str, str]] = []
    for m in members.values():
        for p in m.attrs.get("parents", []) or []:
            if p and m.commit:
                pairs.append((p, m.commit))
    for prev, row in zip(rows, rows[1:]):
        pairs.append((prev["commit"], row["commit"]))
    diffs = batch_diffs(repo, pairs) if repo is not None else {}

    def diff_of(old: str, new: str, artifacts: str | None = None) -> dict[str, Any] | None:
        text = diffs.get((old, new))
        source = f"git -C {repo.path} diff {old[:10]} {new[:10]}" if text is not None and repo is not None else ""
        if text is None and artifacts:
            patch = Path(artifacts) / "diff.patch"
            try:
                text, source = patch.read_text(errors="replace"), str(patch)
            except OSError:
                text = None
        if text is None:
            return None
        body, cut = _cap(text, max_diff_lines)
        return {"text": body, "cut": cut, "source": source}

    out_members = []
    for idx in sorted(members):
        m = members[idx]
        a = m.attrs
        parents = [p for p in a.get("parents", []) or [] if p]
        pidx = list(m.parent_indices)
        mdiffs = []
        for i, p in enumerate(parents):
            d = diff_of(p, m.commit, a.get("artifacts") if i == 0 else None) if m.commit else None
            if d is not None:
                d["against"] = pidx[i] if i < len(pidx) else None
                mdiffs.append(d)
        if not parents and m.index > 0 and a.get("artifacts"):
            d = diff_of("", "", a.get("artifacts"))
            if d is not None:
                d["against"] = pidx[0] if pidx else None
                mdiffs.append(d)
        runs = []
        for t in m.runs:
            ta = t.user_attrs
            runs.append({"trial": t.number, "role": ta.get("role", ""), "seed": ta.get("seed"), "state": t.state.name,
                         "value": _num(t.value) if t.state == TrialState.COMPLETE else None,
                         "outcome": ta.get("outcome", ""), "seconds": _num(ta.get("run_seconds")), "curve": _curve(t)})
        dec = m.decision or {}
        gain, lo, hi = _ci(dec)
        out_members.append({
            "index": idx, "trial": m.number, "parents": pidx, "operator": m.operator, "generation": m.generation,
            "description": m.description if idx > 0 else "baseline", "outcome": m.outcome, "reason": m.reason,
            "value": _num(m.value), "decision": dec.get("decision", "baseline" if idx == 0 else ""),
            "pairs": dec.get("pairs"), "llr": _num(dec.get("llr")), "gain": gain, "ci": [lo, hi] if lo is not None else None,
            "promoted": bool(m.promoted and idx > 0), "commit": m.commit, "branch": a.get("branch", ""),
            "reused_from": a.get("reused_from_index"), "children": list(m.children), "runs": runs, "diffs": mdiffs,
        })

    changes = {c["step"]: c for c in s.mainline_changes(diffs=False)}

    steps = []
    for k, row in enumerate(rows):
        m = members.get(row["index"])
        d = (m.decision if m else {}) or {}
        gain, lo, hi = _ci(d)
        step = {
            "step": row["step"], "index": row["index"], "trial": row["trial"], "value": _num(row["value"]),
            "gain": _num(row["gain"]), "gain_pct": _num(row["gain_pct"]), "decision": row["decision"] or "",
            "pairs": row["pairs"], "llr": _num(row["llr"]), "seed_gain": gain, "ci": [lo, hi] if lo is not None else None,
            "commit": row["commit"], "time": fmt_time(row["time"]) if row["time"] else "", "evaluations": row["evaluations"],
            "description": row["description"], "via": [], "diff": None, "changes": None,
        }
        if k:
            prev = rows[k - 1]
            # the individuals whose changes this promotion brings: the candidate and the ancestors
            # of it that the previous mainline individual does not have (inherited, untested)
            step["via"] = changes[row["step"]]["brings"] if row["step"] in changes else []
            step["drops"] = changes[row["step"]]["drops"] if row["step"] in changes else []
            step["diff"] = diff_of(prev["commit"], row["commit"])
            full = diffs.get((prev["commit"], row["commit"]))
            if full is not None:
                step["changes"] = summarize_changes(*constant_changes(full))
        steps.append(step)

    hist = s.history()
    screening = [m for m in out_members if m["runs"]]
    curves = []
    for m in screening[-MAX_CURVES:]:
        first = next((r for r in m["runs"] if r["role"] in ("baseline", "candidate")), None)
        if first and first["curve"]:
            curves.append({"index": m["index"], "promoted": m["promoted"] or m["index"] == 0, "curve": first["curve"]})
    b = s.best()
    counts = s.counts()
    return {
        "name": s.study_name, "metric": s.metric, "direction": s.direction_name, "strategy": s.strategy,
        "repo": str(repo.path) if repo is not None else str(s.attrs.get("repo", "")), "branch": s.mainline_branch,
        "created": fmt_time(s.attrs.get("created")) if s.attrs.get("created") else "",
        "counts": counts, "members": out_members, "mainline": steps,
        "history": [{"evaluation": h["evaluation"], "index": h["index"], "role": h["role"], "value": _num(h["value"]),
                     "screening": h["screening"], "best": _num(h["best"]), "mainline": _num(h["mainline"])} for h in hist],
        "curves": curves, "curves_total": len(screening),
        "best": {"mainline_index": b["mainline"]["index"], "mainline_value": _num(b["mainline"]["value"]),
                 "best_run_index": (b["best_run"] or {}).get("index"), "best_run_value": _num((b["best_run"] or {}).get("value")),
                 "best_run_on_mainline": bool((b["best_run"] or {}).get("on_mainline"))},
        "notes": list(dict.fromkeys(s.notes)),
    }


def compare_data(studies: list[EvoStudy], group: str | None, by: str, value: str) -> dict[str, Any]:
    from evo.inspect.compare import compare

    res = compare(studies, group=group, by=by, value=value)
    return {
        "metric": res["metric"], "direction": res["direction"], "value": value, "grouping": res["grouping"],
        "studies": [{k: (_num(v) if isinstance(v, float) else v) for k, v in r.items()} for r in res["studies"]],
        "groups": [{"group": g["group"], "n": g["n"], "mean": _num(g["mean"]), "sd": _num(g["sd"]), "median": _num(g["median"]),
                    "ci_low": _num(g["ci_low"]), "ci_high": _num(g["ci_high"]), "best": _num(g["best"]),
                    "values": [_num(v) for v in g["values"]]} for g in res["groups"]],
        "tests": res["tests"], "notes": res["notes"],
        "curves": {k: [[r["evaluation"], _num(r[value])] for r in v] for k, v in res["curves"].items()},
    }


def render(studies: list[EvoStudy], *, max_diff_lines: int | None = MAX_DIFF_LINES, group: str | None = None,
           by: str = "strategy", value: str = "mainline") -> str:
    """The whole page as one string."""
    data = {
        "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
        "studies": [study_data(s, max_diff_lines) for s in studies],
        "compare": compare_data(studies, group, by, value) if len(studies) > 1 else None,
    }
    data = _finite(data)
    # JSON inside <script>: escape '<', '>' and '&' so no text (a diff, an LLM's description) can end the element
    blob = json.dumps(data, separators=(",", ":"), allow_nan=False)
    blob = blob.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    names = ", ".join(s.study_name for s in studies)
    return (PAGE.replace("__TITLE__", html.escape(f"evo report: {names}"))
            .replace("__CSS__", CSS).replace("__JS__", JS).replace("__DATA__", blob))


def write_report(studies: list[EvoStudy], path: str | Path, **kw: Any) -> Path:
    out = Path(path)
    if not out.parent.is_dir():
        raise EvoError(f"cannot write {out}: folder {out.parent} does not exist")
    text = render(studies, **kw)
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as e:
        raise EvoError(f"cannot write {out}: {e.strerror or e}") from None
    return out


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>__CSS__</style>
</head>
<body>
<header id="top"><h1>__TITLE__</h1><nav id="nav"></nav></header>
<main id="app"><p id="nojs">This page draws itself with JavaScript; turn it on to see the study.</p></main>
<script type="application/json" id="evo-data">__DATA__</script>
<script>__JS__</script>
</body>
</html>
"""

CSS = r"""
:root { --fg:#1d2330; --muted:#667085; --line:#d0d5dd; --bg:#fff; --panel:#f7f8fa; --accent:#3563c9;
        --good:#1a7f37; --bad:#c4314b; --gold:#d4a017; --merge:#8e44ad; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--fg); background:var(--bg); }
header { padding:12px 20px; border-bottom:1px solid var(--line); background:var(--panel); position:sticky; top:0; z-index:5; }
header h1 { font-size:17px; margin:0 0 4px; }
nav a { margin-right:14px; color:var(--accent); text-decoration:none; font-size:13px; }
main { padding:8px 20px 40px; max-width:1500px; }
section.study, section#compare { border-bottom:2px solid var(--line); padding-bottom:20px; margin-bottom:10px; }
h2 { font-size:18px; margin:18px 0 6px; } h3 { font-size:15px; margin:16px 0 6px; }
.summary { color:var(--muted); margin:2px 0 8px; } .summary b { color:var(--fg); }
.note { color:#9a6700; font-size:13px; }
table { border-collapse:collapse; font-size:13px; margin:4px 0 8px; }
th, td { padding:3px 8px; border-bottom:1px solid #eaecf0; text-align:left; vertical-align:top; white-space:nowrap; }
th { background:var(--panel); font-weight:600; position:sticky; top:0; }
td.num { text-align:right; font-variant-numeric:tabular-nums; } td.desc { white-space:normal; min-width:260px; }
tr.clickable { cursor:pointer; } tr.clickable:hover { background:#eef3ff; } tr.selected { background:#dde7ff; }
.scroll { max-height:420px; overflow:auto; border:1px solid var(--line); }
.treebox { overflow:auto; max-height:640px; border:1px solid var(--line); background:#fcfcfd; }
svg text { font-size:11px; fill:var(--fg); } .node text.label { paint-order:stroke; stroke:#fcfcfd; stroke-width:3px; }
svg .axis line, svg .axis path { stroke:#98a2b3; } svg .axis line.grid { stroke:#e4e7ec; }
.edge { fill:none; stroke:#98a2b3; stroke-width:1.3; } .edge.merge { stroke:var(--merge); stroke-dasharray:5 3; stroke-width:1.6; }
.node circle { stroke:#475467; stroke-width:1; cursor:pointer; } .node.promoted circle { stroke:var(--gold); stroke-width:3; }
.node.selected circle { stroke:var(--accent); stroke-width:3.5; } .node text { cursor:pointer; }
.o-complete { fill:#4c72b0; } .o-duplicate { fill:#8da0cb; } .o-pruned { fill:#999; } .o-crashed { fill:#c44e52; }
.o-timeout { fill:#dd8452; } .o-invalid { fill:#937860; } .o-rejected { fill:#da8bc3; } .o-operator_failed { fill:#8172b3; }
.o-interrupted { fill:#ccc; } .o-other { fill:#ccc; }
.legend span { display:inline-block; margin-right:12px; font-size:12px; color:var(--muted); }
.legend i { display:inline-block; width:10px; height:10px; border-radius:50%; margin-right:4px; vertical-align:-1px; }
.detail { border:1px solid var(--line); background:var(--panel); padding:10px 14px; margin-top:10px; }
.detail h3 { margin-top:4px; }
.kv { display:grid; grid-template-columns:max-content 1fr; gap:2px 14px; font-size:13px; }
.kv div:nth-child(odd) { color:var(--muted); }
pre.diff { background:#fff; border:1px solid var(--line); padding:6px 8px; font:12px/1.35 ui-monospace,Menlo,Consolas,monospace;
           overflow:auto; max-height:460px; margin:4px 0 10px; }
pre.diff span { display:block; white-space:pre; } .d-add { background:#e6ffec; color:#116329; } .d-del { background:#ffebe9; color:#82071e; }
.d-hunk { color:#6639ba; } .d-file { color:var(--muted); font-weight:600; }
.gain-pos { color:var(--good); } .gain-neg { color:var(--bad); }
.charts { display:flex; flex-wrap:wrap; gap:18px; }
.chart { background:#fff; border:1px solid var(--line); }
.chart .title { font-size:12px; font-weight:600; }
.series { fill:none; stroke-width:1.6; } .dot { stroke:none; }
details > summary { cursor:pointer; color:var(--accent); }
.small { font-size:12px; color:var(--muted); }
"""

JS = r"""
'use strict';
const D = JSON.parse(document.getElementById('evo-data').textContent);
const NS = 'http://www.w3.org/2000/svg';
const OUTCOMES = ['complete','duplicate','pruned','crashed','timeout','invalid','rejected','operator_failed','interrupted'];
const OCOLOR = {complete:'#4c72b0', duplicate:'#8da0cb', pruned:'#999', crashed:'#c44e52', timeout:'#dd8452', invalid:'#937860',
                rejected:'#da8bc3', operator_failed:'#8172b3', interrupted:'#ccc'};
const PALETTE = ['#3563c9','#c4314b','#1a7f37','#d9822b','#8e44ad','#0f8b8d','#a0522d','#e0559a','#5b6770','#b8a000'];

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'text') e.textContent = v; else if (k === 'onclick') e.addEventListener('click', v); else e.setAttribute(k, v);
  }
  for (const k of kids) if (k !== null && k !== undefined) e.append(k);
  return e;
}
function sv(tag, attrs, ...kids) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k === 'text') e.textContent = v; else e.setAttribute(k, v);
  }
  for (const k of kids) if (k) e.append(k);
  return e;
}
function fmt(v, d) {
  if (v === null || v === undefined) return '-';
  if (typeof v !== 'number') return String(v);
  if (Number.isInteger(v)) return String(v);
  return String(Number(v.toPrecision(d || 6)));
}
function signed(v) { return v === null || v === undefined ? '-' : (v >= 0 ? '+' : '') + fmt(v, 4); }
function oclass(o) { return 'o-' + (OUTCOMES.includes(o) ? o : 'other'); }

// -- a small line/dot chart ----------------------------------------------------------------------
function niceTicks(lo, hi, n) {
  if (!(hi > lo)) { const c = lo || 0; lo = c - 1; hi = c + 1; }
  const raw = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map(m => m * mag).find(s => s >= raw) || raw;
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(Number(t.toPrecision(12)));
  return out;
}
// series: [{points:[[x,y]...], color, cls, dash, width, label, dots, id, step}]
function chart(opts) {
  const W = opts.width || 520, H = opts.height || 260, m = {l: 62, r: 14, t: 22, b: 38};
  const all = opts.series.flatMap(s => s.points.filter(p => p[1] !== null && p[0] !== null));
  const svg = sv('svg', {width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: 'chart ' + (opts.cls || ''), role: 'img'});
  svg.append(sv('text', {x: m.l, y: 14, class: 'title', text: opts.title || ''}));
  if (!all.length) { svg.append(sv('text', {x: W / 2, y: H / 2, 'text-anchor': 'middle', text: 'no data'})); return svg; }
  let x0 = Math.min(...all.map(p => p[0])), x1 = Math.max(...all.map(p => p[0]));
  let y0 = Math.min(...all.map(p => p[1])), y1 = Math.max(...all.map(p => p[1]));
  if (opts.x0 !== undefined) x0 = opts.x0; if (opts.x1 !== undefined) x1 = opts.x1;
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  const pad = (y1 - y0) * 0.06 || Math.abs(y0) * 0.05 || 1; y0 -= pad; y1 += pad;
  const X = x => m.l + (x - x0) / (x1 - x0) * (W - m.l - m.r), Y = y => H - m.b - (y - y0) / (y1 - y0) * (H - m.t - m.b);
  const ax = sv('g', {class: 'axis'});
  for (const t of niceTicks(y0, y1, 5)) {
    ax.append(sv('line', {x1: m.l, x2: W - m.r, y1: Y(t), y2: Y(t), class: 'grid'}));
    ax.append(sv('text', {x: m.l - 6, y: Y(t) + 4, 'text-anchor': 'end', text: fmt(t, 4)}));
  }
  for (const [t, label] of (opts.xticks || niceTicks(x0, x1, 6).map(t => [t, fmt(t, 4)]))) {
    ax.append(sv('line', {x1: X(t), x2: X(t), y1: H - m.b, y2: H - m.b + 4}));
    ax.append(sv('text', {x: X(t), y: H - m.b + 16, 'text-anchor': 'middle', text: label}));
  }
  ax.append(sv('line', {x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b}));
  ax.append(sv('line', {x1: m.l, x2: m.l, y1: m.t, y2: H - m.b}));
  ax.append(sv('text', {x: (m.l + W - m.r) / 2, y: H - 6, 'text-anchor': 'middle', text: opts.xlabel || ''}));
  ax.append(sv('text', {x: 12, y: (m.t + H - m.b) / 2, 'text-anchor': 'middle', transform: `rotate(-90 12 ${(m.t + H - m.b) / 2})`, text: opts.ylabel || ''}));
  svg.append(ax);
  for (const s of opts.series) {
    const pts = s.points.filter(p => p[1] !== null && p[0] !== null);
    if (!pts.length) continue;
    const g = sv('g', {class: 'series-group', id: s.id || null});
    if (s.dots) {
      for (const p of pts) g.append(sv('circle', {cx: X(p[0]), cy: Y(p[1]), r: s.r || 2.6, fill: s.color, class: 'dot ' + (s.cls || ''), opacity: s.opacity || 1},
                                      sv('title', {text: (s.label ? s.label + ': ' : '') + fmt(p[0]) + ', ' + fmt(p[1])})));
    } else {
      let d = '';
      pts.forEach((p, i) => {
        if (i === 0) d += `M${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`;
        else if (s.step) d += `H${X(p[0]).toFixed(1)}V${Y(p[1]).toFixed(1)}`;
        else d += `L${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`;
      });
      g.append(sv('path', {d, stroke: s.color, class: 'series ' + (s.cls || ''), 'stroke-dasharray': s.dash || null,
                           'stroke-width': s.width || null, opacity: s.opacity || null}, s.label ? sv('title', {text: s.label}) : null));
    }
    svg.append(g);
  }
  if (opts.legend) {
    let lx = m.l + 8;
    for (const [label, color, dash] of opts.legend) {
      svg.append(sv('line', {x1: lx, x2: lx + 16, y1: m.t + 8, y2: m.t + 8, stroke: color, 'stroke-width': 2, 'stroke-dasharray': dash || null}));
      svg.append(sv('text', {x: lx + 20, y: m.t + 12, text: label}));
      lx += 28 + label.length * 6.2;
    }
  }
  return svg;
}

function diffBlock(text, cls) {
  const pre = el('pre', {class: 'diff ' + (cls || '')});
  for (const line of (text || '(no change)').replace(/\n$/, '').split('\n')) {
    let c = '';
    if (line.startsWith('+++') || line.startsWith('---') || line.startsWith('diff ') || line.startsWith('index ')) c = 'd-file';
    else if (line.startsWith('+')) c = 'd-add'; else if (line.startsWith('-')) c = 'd-del'; else if (line.startsWith('@@')) c = 'd-hunk';
    pre.append(el('span', {class: c || null, text: line}));
  }
  return pre;
}
function diffSection(d, title) {
  const box = el('div', {class: 'diffbox'});
  box.append(el('div', {class: 'small', text: title + (d.source ? '  (' + d.source + ')' : '')}));
  box.append(diffBlock(d.text));
  if (d.cut) box.append(el('div', {class: 'small', text: `… ${d.cut} more line(s) not shown (evo report --max-diff-lines)`}));
  return box;
}

// -- one study ---------------------------------------------------------------------------------------
function renderStudy(S, k) {
  const sec = el('section', {class: 'study', id: `study-${k}`});
  const better = S.direction === 'minimize' ? 'lower' : 'higher';
  const byIndex = new Map(S.members.map(m => [m.index, m]));
  const last = S.mainline[S.mainline.length - 1], base = S.mainline[0];
  sec.append(el('h2', {text: `study ${S.name}`}));
  const c = S.counts;
  const sum = el('p', {class: 'summary'});
  sum.append(`${S.direction} ${S.metric} (${better} is better), ${S.strategy || 'unknown'} strategy, ${c.trials} runs `
             + `(${c.COMPLETE} complete, ${c.PRUNED} pruned, ${c.FAIL} failed), ${S.members.length} individuals; repository ${S.repo || '-'}`
             + (S.created ? `; started ${S.created}` : ''));
  sum.append(el('br'));
  sum.append('mainline ', el('b', {text: S.branch}), `: #${last.index} ${S.metric} `, el('b', {text: fmt(last.value)}),
             ` after ${S.mainline.length - 1} promotion(s), baseline ${fmt(base.value)}` );
  if (S.best.best_run_index !== null && S.best.best_run_index !== undefined)
    sum.append(`; best single run #${S.best.best_run_index} ${fmt(S.best.best_run_value)}`
               + (S.best.best_run_on_mainline ? ' (on the mainline)' : ' (not on the mainline: one seed, unconfirmed)'));
  sec.append(sum);
  for (const n of S.notes) sec.append(el('p', {class: 'note', text: 'note: ' + n}));

  // mainline
  sec.append(el('h3', {id: `mainline-${k}`, text: 'Mainline: each promotion, its confirmed gain and the whole change from the previous step'}));
  const mt = el('table', {class: 'mainline'});
  mt.append(el('tr', {}, ...['step', 'individual', 'change from the previous step', S.metric, 'gain', 'gain %', 'decision', 'gain per seed (95% CI)', 'trial', 'runs by then', 'when', 'commit'].map(h => el('th', {text: h}))));
  for (const r of S.mainline) {
    const ci = r.ci ? `${signed(r.seed_gain)} [${fmt(r.ci[0], 4)}, ${fmt(r.ci[1], 4)}] over ${r.pairs} pairs`
                    : (r.seed_gain !== null && r.seed_gain !== undefined ? `${signed(r.seed_gain)} (${r.pairs} pair)` : (r.step ? 'single run: no interval' : '-'));
    const tr = el('tr', {class: 'step clickable', id: `s${k}-step-${r.step}`, onclick: () => select(r.index)},
      el('td', {class: 'num', text: r.step}), el('td', {text: '#' + r.index}), el('td', {class: 'desc', text: r.changes || r.description}),
      el('td', {class: 'num', text: fmt(r.value)}),
      el('td', {class: 'num ' + (r.gain > 0 ? 'gain-pos' : r.gain < 0 ? 'gain-neg' : ''), text: signed(r.gain)}),
      el('td', {class: 'num', text: r.gain_pct === null ? '-' : signed(r.gain_pct) + '%'}),
      el('td', {class: 'desc', text: r.decision + (r.pairs && !/pairs/.test(r.decision) ? ` (${r.pairs} pairs, llr ${fmt(r.llr, 3)})` : '')}), el('td', {text: ci}),
      el('td', {class: 'num', text: fmt(r.trial)}), el('td', {class: 'num', text: fmt(r.evaluations)}),
      el('td', {text: (r.time || '-').slice(5)}), el('td', {text: (r.commit || '').slice(0, 8)}));
    mt.append(tr);
  }
  sec.append(el('div', {class: 'scroll'}, mt));
  const steps = el('div', {class: 'mainline-diffs'});
  for (const r of S.mainline.slice(1)) {
    const det = el('details', {class: 'step-diff', id: `s${k}-stepdiff-${r.step}`});
    const own = byIndex.get(r.index);
    det.append(el('summary', {text: `step ${r.step}: #${r.index} — every change from step ${r.step - 1}: ${r.changes || (own ? own.description : '')}`
                                      + (r.via.length > 1 ? ` (brings ${r.via.length} individuals' changes)` : '')}));
    if (r.via.length) {
      const ul = el('ul', {class: 'via'});
      for (const v of r.via) ul.append(el('li', {text: `#${v.index} ${v.operator}: ${v.description}` + (v.promoted ? ' (the promoted candidate)' : ` (inherited, ${v.decision || 'untested'})`)}));
      det.append(el('div', {class: 'small', text: 'the changes come from:'}), ul);
    }
    if (r.drops && r.drops.length) {
      const ul = el('ul', {class: 'drops'});
      for (const v of r.drops) ul.append(el('li', {text: `#${v.index} ${v.operator}: ${v.description}`}));
      det.append(el('div', {class: 'small', text: 'it undoes the changes of (on the previous step\'s line, not on this one):'}), ul);
    }
    if (r.diff) det.append(diffSection(r.diff, `diff of the mainline, step ${r.step - 1} -> ${r.step}`));
    steps.append(det);
  }
  sec.append(steps);

  // history and curves
  sec.append(el('h3', {id: `progress-${k}`, text: 'Progress'}));
  const charts = el('div', {class: 'charts'});
  const H = S.history;
  charts.append(chart({
    title: `every run's ${S.metric}, best single run so far and the mainline`, xlabel: 'runs finished', ylabel: S.metric, cls: 'history', width: 640,
    series: [
      {points: H.filter(h => !h.screening).map(h => [h.evaluation, h.value]), color: '#b0b7c3', dots: true, label: 'replicate/confirmation run', r: 2},
      {points: H.filter(h => h.screening).map(h => [h.evaluation, h.value]), color: '#4c72b0', dots: true, label: 'screening run'},
      {points: H.map(h => [h.evaluation, h.best]), color: '#d9822b', step: true, label: 'best single run so far', dash: '4 3'},
      {points: H.map(h => [h.evaluation, h.mainline]), color: '#1a7f37', step: true, label: 'mainline', width: 2.4, cls: 'mainline-line'},
    ],
    legend: [['mainline', '#1a7f37'], ['best single run', '#d9822b', '4 3'], ['runs', '#4c72b0']],
  }));
  const cs = S.curves.map(c => ({points: c.curve, color: c.index === 0 ? '#111' : c.promoted ? '#d4a017' : '#4c72b0',
                                 opacity: c.promoted ? 1 : 0.35, width: c.promoted ? 2 : 1, label: '#' + c.index,
                                 id: `s${k}-curve-${c.index}`, cls: 'progress-curve'}));
  charts.append(chart({title: `progress curves of the screening runs (${S.curves.length} of ${S.curves_total})`, xlabel: 'fraction of the run',
                       ylabel: S.metric, cls: 'curves-all', series: cs, x0: 0, x1: 1,
                       legend: [['baseline', '#111'], ['promoted', '#d4a017'], ['other', '#4c72b0']]}));
  sec.append(charts);

  // tree
  sec.append(el('h3', {id: `lineage-${k}`, text: 'Lineage'}));
  const legend = el('div', {class: 'legend'});
  for (const o of OUTCOMES) if (S.members.some(m => m.outcome === o)) legend.append(el('span', {}, el('i', {style: 'background:' + OCOLOR[o]}), o));
  legend.append(el('span', {text: 'gold ring = promoted to the mainline; dashed purple edge = second parent of a crossover (merge); click a node for its diff and curves'}));
  sec.append(legend);
  const treebox = el('div', {class: 'treebox'});
  treebox.append(tree(S, k, byIndex));
  sec.append(treebox);

  // detail
  const detail = el('div', {class: 'detail', id: `s${k}-detail`});
  sec.append(detail);

  // table of individuals
  sec.append(el('h3', {id: `candidates-${k}`, text: 'Individuals'}));
  const ct = el('table', {class: 'candidates'});
  ct.append(el('tr', {}, ...['#', 'gen', 'parents', 'operator', 'outcome', S.metric, 'decision', 'runs', 'description'].map(h => el('th', {text: h}))));
  for (const m of S.members) {
    ct.append(el('tr', {class: 'clickable cand' + (m.promoted ? ' promoted' : ''), id: `s${k}-row-${m.index}`, onclick: () => select(m.index)},
      el('td', {class: 'num', text: (m.promoted ? '★ ' : '') + m.index}), el('td', {class: 'num', text: m.generation}),
      el('td', {text: m.parents.map(p => '#' + p).join(' x ') || '-'}), el('td', {text: m.operator}), el('td', {text: m.outcome}),
      el('td', {class: 'num', text: fmt(m.value)}), el('td', {text: m.decision || ''}), el('td', {class: 'num', text: m.runs.length}),
      el('td', {class: 'desc', text: m.description + (m.reason && m.outcome !== 'complete' ? ` (${m.reason})` : '')})));
  }
  sec.append(el('div', {class: 'scroll'}, ct));

  function select(index) {
    const m = byIndex.get(index);
    if (!m) return;
    for (const n of sec.querySelectorAll('.node.selected, tr.selected')) n.classList.remove('selected');
    const node = document.getElementById(`s${k}-node-${index}`); if (node) node.classList.add('selected');
    const row = document.getElementById(`s${k}-row-${index}`); if (row) row.classList.add('selected');
    renderDetail(S, k, m, byIndex, detail);
  }
  sec.addEventListener('evo-select', e => select(e.detail));
  const start = S.best.mainline_index > 0 ? S.best.mainline_index : (S.members.find(m => m.index > 0 && m.commit) || S.members[0]).index;
  select(start);
  return sec;
}

function tree(S, k, byIndex) {
  // each child under its first parent (as `evo lineage`); leaves get rows, a parent sits at its children's middle
  const kids = new Map(), root = byIndex.has(0) ? 0 : S.members[0].index;
  for (const m of S.members) {
    if (m.index === root) continue;
    const p = m.parents.length && byIndex.has(m.parents[0]) ? m.parents[0] : root;
    if (!kids.has(p)) kids.set(p, []);
    kids.get(p).push(m.index);
  }
  const pos = new Map(); let row = 0, maxDepth = 0;
  const stack = [[root, 0, false]];
  while (stack.length) {  // iterative post-order: deep trees do not overflow the call stack
    const [i, depth, done] = stack.pop();
    const ch = kids.get(i) || [];
    if (!done) {
      maxDepth = Math.max(maxDepth, depth);
      stack.push([i, depth, true]);
      for (let j = ch.length - 1; j >= 0; j--) stack.push([ch[j], depth + 1, false]);
    } else {
      const y = ch.length ? (pos.get(ch[0]).y + pos.get(ch[ch.length - 1]).y) / 2 : row++;
      pos.set(i, {x: depth, y});
    }
  }
  const DX = 120, DY = 30, L = 24, T = 24;
  const W = L + (maxDepth + 1) * DX + 220, Hh = T + Math.max(row, 1) * DY + 10;
  const svg = sv('svg', {width: W, height: Hh, class: 'tree', id: `s${k}-tree`});
  const P = i => ({x: L + pos.get(i).x * DX, y: T + pos.get(i).y * DY});
  const edges = sv('g', {class: 'edges'}), nodes = sv('g', {class: 'nodes'});
  for (const m of S.members) {
    if (!pos.has(m.index)) continue;
    m.parents.forEach((p, n) => {
      if (!pos.has(p)) return;
      const a = P(p), b = P(m.index), mx = (a.x + b.x) / 2;
      edges.append(sv('path', {d: `M${a.x},${a.y} C${mx},${a.y} ${mx},${b.y} ${b.x},${b.y}`, class: n === 0 ? 'edge' : 'edge merge',
                               id: `s${k}-edge-${p}-${m.index}`, 'data-from': p, 'data-to': m.index},
                          sv('title', {text: `#${p} -> #${m.index}` + (n ? ' (second parent: merge)' : '')})));
    });
  }
  for (const m of S.members) {
    if (!pos.has(m.index)) continue;
    const p = P(m.index);
    const g = sv('g', {class: 'node' + (m.promoted ? ' promoted' : '') + (m.parents.length > 1 ? ' crossover' : ''), id: `s${k}-node-${m.index}`,
                       transform: `translate(${p.x},${p.y})`, 'data-index': m.index});
    g.append(sv('circle', {r: m.index === 0 ? 8 : 6.5, class: oclass(m.outcome)}));
    g.append(sv('text', {x: -8, y: -10, class: 'label', text: `#${m.index} ${m.value === null ? m.outcome.toUpperCase() : fmt(m.value, 5)}`}));
    g.append(sv('title', {text: `#${m.index} g${m.generation} ${m.operator}: ${m.description}` + (m.decision ? ` [${m.decision}]` : '')}));
    g.addEventListener('click', () => svg.closest('section').dispatchEvent(new CustomEvent('evo-select', {detail: m.index})));
    nodes.append(g);
  }
  svg.append(edges, nodes);
  return svg;
}

function renderDetail(S, k, m, byIndex, box) {
  box.replaceChildren();
  box.append(el('h3', {text: `#${m.index}` + (m.promoted ? ' ★ promoted' : '') + ` — ${m.description}`}));
  const kv = el('div', {class: 'kv'});
  const add = (a, b) => kv.append(el('div', {text: a}), el('div', {text: b}));
  add('outcome', m.outcome + (m.reason ? ': ' + m.reason : ''));
  add(S.metric, fmt(m.value) + (m.index > 0 && m.parents.length && byIndex.get(m.parents[0]) ? `  (parent #${m.parents[0]}: ${fmt(byIndex.get(m.parents[0]).value)})` : ''));
  add('operator', `${m.operator || '-'}, generation ${m.generation}`);
  add('parents', m.parents.map(p => '#' + p).join(', ') || '-');
  add('children', m.children.map(p => '#' + p).join(', ') || '-');
  if (m.decision) add('decision', m.decision + (m.pairs ? ` after ${m.pairs} pairs, llr ${fmt(m.llr, 3)}` : '')
                               + (m.ci ? `; gain per seed ${signed(m.gain)} [${fmt(m.ci[0], 4)}, ${fmt(m.ci[1], 4)}] (95% t)` : ''));
  add('commit', (m.commit ? m.commit.slice(0, 12) : '-') + (m.branch ? '  ' + m.branch : ''));
  if (m.reused_from !== null && m.reused_from !== undefined) add('same code as', '#' + m.reused_from);
  add('runs', m.runs.map(r => `trial ${r.trial} ${r.role} seed ${fmt(r.seed)}: ${r.value === null ? r.outcome || r.state : fmt(r.value)}`).join('; ') || '-');
  box.append(kv);
  const series = [];
  const parent = m.parents.length ? byIndex.get(m.parents[0]) : null;
  if (parent) {
    const pr = parent.runs.find(r => r.role === 'baseline' || r.role === 'candidate');
    if (pr && pr.curve.length) series.push({points: pr.curve, color: '#98a2b3', dash: '5 3', label: `parent #${parent.index}`, cls: 'parent-curve'});
  }
  m.runs.forEach((r, i) => { if (r.curve.length) series.push({points: r.curve, color: PALETTE[i % PALETTE.length], label: `trial ${r.trial} seed ${r.seed}`, cls: 'curve-line', id: `s${k}-run-${r.trial}`}); });
  if (series.length) {
    box.append(chart({title: `progress of #${m.index}'s runs` + (parent ? ` (dashed: parent #${parent.index})` : ''), xlabel: 'fraction of the run',
                      ylabel: S.metric, cls: 'curve', series, x0: 0, x1: 1, width: 560,
                      legend: series.slice(0, 4).map(s => [s.label, s.color, s.dash])}));
  } else box.append(el('p', {class: 'small', text: 'no progress points recorded for this individual'}));
  if (m.diffs.length) for (const d of m.diffs) box.append(diffSection(d, `diff #${d.against} -> #${m.index}`));
  else box.append(el('p', {class: 'small', text: m.index === 0 ? 'the baseline: the repository as the study found it' : 'no diff: the proposal never became a commit'}));
}

// -- several studies -------------------------------------------------------------------------------
function renderCompare(C) {
  const sec = el('section', {id: 'compare'});
  sec.append(el('h2', {text: `Strategy comparison: ${C.studies.length} studies, final ${C.value === 'mainline' ? 'mainline (confirmed)' : 'best single run'} ${C.metric}, grouped ${C.grouping}`}));
  const t = el('table', {class: 'compare-studies'});
  t.append(el('tr', {}, ...['study', 'group', 'strategy', 'runs', 'baseline', 'best run', 'mainline', 'promotions'].map(h => el('th', {text: h}))));
  for (const r of C.studies) t.append(el('tr', {}, el('td', {text: r.study}), el('td', {text: r.group}), el('td', {text: r.strategy || '-'}),
    el('td', {class: 'num', text: r.runs}), el('td', {class: 'num', text: fmt(r.baseline)}), el('td', {class: 'num', text: fmt(r.best)}),
    el('td', {class: 'num', text: fmt(r.mainline)}), el('td', {class: 'num', text: r.promotions})));
  sec.append(t);
  const g = el('table', {class: 'compare-groups'});
  g.append(el('tr', {}, ...['group', 'n', 'mean', '95% CI (t)', 'sd', 'median', 'best'].map(h => el('th', {text: h}))));
  for (const r of C.groups) g.append(el('tr', {id: 'compare-group-' + r.group, class: 'group'}, el('td', {text: r.group}), el('td', {class: 'num', text: r.n}), el('td', {class: 'num', text: fmt(r.mean)}),
    el('td', {text: r.ci_low === null ? (r.n < 2 ? 'none: one study (repeat it with other seeds for an interval)' : '-') : `[${fmt(r.ci_low)}, ${fmt(r.ci_high)}]`}),
    el('td', {class: 'num', text: fmt(r.sd, 3)}), el('td', {class: 'num', text: fmt(r.median)}), el('td', {class: 'num', text: fmt(r.best)})));
  sec.append(g);
  for (const x of C.tests) sec.append(el('p', {class: 'small', text: `${x.test}: ${x.a} vs ${x.b}: U = ${fmt(x.u)}, p = ${fmt(x.p, 3)}`
                                                    + (x.p < 0.05 ? '' : ' (no significant difference at 5%)')}));
  for (const n of C.notes) sec.append(el('p', {class: 'note', text: 'note: ' + n}));
  const groups = [...new Set(C.studies.map(r => r.group))];
  const color = grp => PALETTE[groups.indexOf(grp) % PALETTE.length];
  const series = C.studies.map(r => ({points: C.curves[r.study] || [], color: color(r.group), step: true, label: `${r.study} (${r.group})`,
                                       id: 'compare-curve-' + r.study, cls: 'compare-curve'}));
  const charts = el('div', {class: 'charts'});
  charts.append(chart({title: `${C.value === 'mainline' ? 'mainline' : 'best single run'} ${C.metric} against runs (a colour per group)`,
                       xlabel: 'runs finished', ylabel: C.metric, cls: 'compare', series, width: 640,
                       legend: groups.map(grp => [grp, color(grp)])}));
  // final values per group: one dot per study; the mean and its interval where a group has two or more
  const pts = [];
  groups.forEach((grp, gi) => {
    const r = C.groups.find(x => x.group === grp);
    r.values.forEach(v => pts.push({points: [[gi + 1, v]], color: color(grp), dots: true, r: 4, label: `${grp}: a study's final value`, cls: 'final-dot'}));
    if (r.ci_low !== null) pts.push({points: [[gi + 1, r.ci_low], [gi + 1, r.ci_high]], color: '#111', width: 3, label: `${grp}: 95% CI of the mean`, cls: 'ci-bar'});
  });
  const ch = chart({title: 'final value per study (dots); 95% CI of a group\'s mean (bar, n ≥ 2)',
                    xlabel: 'group', ylabel: C.metric, cls: 'compare-final', xticks: groups.map((g, i) => [i + 1, g]),
                    series: pts, x0: 0.5, x1: groups.length + 0.5, width: 560});
  charts.append(ch);
  sec.append(charts);
  return sec;
}

const app = document.getElementById('app');
app.replaceChildren();
const nav = document.getElementById('nav');
if (D.compare) { app.append(renderCompare(D.compare)); nav.append(el('a', {href: '#compare', text: 'comparison'})); }
D.studies.forEach((S, k) => {
  app.append(renderStudy(S, k));
  nav.append(el('a', {href: `#study-${k}`, text: S.name}));
});
app.append(el('p', {class: 'small', id: 'generated', text: `written by evo report on ${D.generated}; one file, no network`}));
document.body.setAttribute('data-rendered', 'yes');
"""
