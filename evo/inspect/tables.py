"""Plain-text output: aligned tables, trees, numbers, CSV and JSON."""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # tables are plain text; the tree type only names what they print
    from evo.inspect.api import TreeNode


def fmt(v: Any, digits: int = 6) -> str:
    """A number the way the search prints it (6 significant digits); '-' for nothing."""
    if v is None or v == "":
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.{digits}g}"
    return str(v)


def signed(v: float | None, digits: int = 4) -> str:
    return "-" if v is None else f"{v:+.{digits}g}"


def pct(v: float | None) -> str:
    return "-" if v is None else f"{v:+.2f}%"


def seconds(v: float | None) -> str:
    if v is None:
        return "-"
    if v < 100:
        return f"{v:.1f}s"
    if v < 3600 * 2:
        return f"{v / 60:.1f}m"
    return f"{v / 3600:.1f}h"


def truncate(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    if len(text) <= width:
        return text
    return text[: max(0, width - 1)] + "…" if unicode_ok() else text[: max(0, width - 3)] + "..."


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[bool] | None = None) -> str:
    """An aligned table; `right` marks right-aligned (numeric) columns. Cells are str()-ed."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in cells:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))
    right = list(right) if right is not None else [False] * len(headers)

    def line(r: Sequence[str]) -> str:
        parts = [c.rjust(widths[i]) if right[i] else c.ljust(widths[i]) for i, c in enumerate(r)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(list(headers))] + [line(r) for r in cells])


def unicode_ok() -> bool:
    enc = (getattr(sys.stdout, "encoding", None) or "ascii").lower()
    return "utf" in enc


def tree(root: TreeNode, label: Callable[[TreeNode], str], fancy: bool | None = None) -> str:
    """An ASCII tree (box-drawing characters when stdout takes UTF-8), built without recursion."""
    fancy = unicode_ok() if fancy is None else fancy
    tee, last, bar, gap = ("├─ ", "└─ ", "│  ", "   ") if fancy else ("|- ", "`- ", "|  ", "   ")
    lines = []
    stack: list[tuple[TreeNode, str, str]] = [(root, "", "")]
    while stack:
        node, lead, cont = stack.pop()
        lines.append(lead + label(node))
        n = len(node.branches)
        for i, b in reversed(list(enumerate(node.branches))):
            end = i == n - 1
            stack.append((b, cont + (last if end else tee), cont + (gap if end else bar)))
    return "\n".join(lines)


def to_json(obj: Any) -> str:
    """Standard JSON (NaN/inf become null; datetimes ISO 8601)."""
    return json.dumps(clean(obj), indent=2, default=_jsonable, allow_nan=False)


def _jsonable(o: Any) -> Any:
    if hasattr(o, "isoformat"):
        return o.isoformat()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


def clean(obj: Any) -> Any:
    """NaN/inf -> None, so the JSON is standard."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    return obj


def to_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """CSV with a header; lists are joined with ';', dicts written as JSON."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        out = []
        for c in columns:
            v = r.get(c)
            if v is None:
                out.append("")
            elif isinstance(v, (list, tuple)):
                out.append(";".join(str(x) for x in v))
            elif isinstance(v, dict):
                out.append(json.dumps(v, default=str))
            elif isinstance(v, float):
                out.append(repr(v))
            else:
                out.append(str(v))
        w.writerow(out)
    return buf.getvalue().rstrip("\n")
