"""The offline mutation: perturb module-level UPPER_CASE numeric and boolean constants.

Hyperparameters in autoresearch-style scripts are module constants (DEPTH = 8, MATRIX_LR = 0.04),
so many useful mutations are one-line diffs. Only the literal's characters are rewritten: the
rest of the file stays byte-identical, and the diff reads like a person's edit.
"""

from __future__ import annotations

import ast
import math
import random
import re
from dataclasses import dataclass

from operators.base import Context, OperatorError, Parent, Proposal

_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


@dataclass(frozen=True)
class Constant:
    path: str
    name: str
    value: int | float | bool
    line: int  # 1-based
    start: int  # column offsets of the literal (including a leading minus sign)
    end: int
    text: str  # the literal as written


def find_constants(path: str, source: str) -> list[Constant]:
    """Module-level `NAME = <number or bool>` (optionally annotated, optionally negative)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    lines = source.splitlines(keepends=True)
    found = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if not isinstance(target, ast.Name) or not _NAME.match(target.id):
            continue
        literal = _literal(value)
        if literal is None or value.lineno != value.end_lineno:
            continue
        line = lines[value.lineno - 1]
        # ast offsets count UTF-8 bytes; convert to str indexes for non-ASCII lines
        raw = line.encode("utf-8")
        start = len(raw[: value.col_offset].decode("utf-8"))
        end = len(raw[: value.end_col_offset].decode("utf-8"))
        found.append(Constant(path, target.id, literal, value.lineno, start, end, line[start:end]))
    return found


def _literal(node: ast.expr) -> int | float | bool | None:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _literal(node.operand)
        return -inner if isinstance(inner, (int, float)) and not isinstance(inner, bool) else None
    if isinstance(node, ast.Constant) and isinstance(node.value, (bool, int, float)):
        v = node.value
        return v if isinstance(v, bool) or math.isfinite(v) else None
    return None


def perturb(c: Constant, rng: random.Random, step: float) -> str:
    """New literal text for c: bool flip, integer step, log-scale (or logit-scale in (0,1)) float step."""
    v = c.value
    if isinstance(v, bool):
        return "False" if v else "True"
    if isinstance(v, int):
        if abs(v) <= 8:
            new = v + rng.choice((-1, 1)) * (2 if rng.random() < 0.2 else 1)
            if v > 0 and new <= 0:
                new = v + 1
        else:
            for _ in range(20):
                new = int(round(v * math.exp(rng.gauss(0.0, step))))
                if new != v and (new > 0) == (v > 0):
                    break
            else:
                new = v + (1 if v > 0 else -1)
        return str(new)
    # float
    for _ in range(20):
        if v == 0.0:
            new = rng.gauss(0.0, 0.1)
        elif 0.0 < v < 1.0:  # ratios, betas, dropout: stay inside (0, 1)
            logit = math.log(v / (1.0 - v)) + rng.gauss(0.0, step)
            new = 1.0 / (1.0 + math.exp(-logit))
        else:
            new = math.copysign(abs(v) * math.exp(rng.gauss(0.0, step)), v)
        text = _format_float(new, c.text)
        if float(text) != v:
            return text
    return _format_float(v * 1.1 if v else 0.01, c.text)


def _format_float(x: float, like: str) -> str:
    """Three significant digits, in the style of the original literal (exponent or plain)."""
    if "e" in like.lower() or (x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5)):
        mant, exp = f"{x:.2e}".split("e")
        mant = mant.rstrip("0").rstrip(".") if "." in mant else mant
        return f"{mant}e{int(exp)}"
    text = f"{x:.3g}"
    if "e" in text:  # .3g chose an exponent for a mid-size number: write it out
        text = f"{x:.6f}".rstrip("0")
    return text if "." in text else text + ".0"


class ConstantsMutation:
    """Offline mutation: 1..max_changes constants across the mutable Python files."""

    name = "constants"

    def __init__(self, max_changes: int = 2, step: float = 0.5) -> None:
        self.max_changes = max(1, max_changes)
        self.step = step

    def mutate(self, parent: Parent, rng: random.Random, context: Context) -> Proposal:
        pool = [c for path in sorted(parent.files) if path.endswith(".py") for c in find_constants(path, parent.files[path])]
        if not pool:
            raise OperatorError("no module-level UPPER_CASE numeric or boolean constants in the mutable files")
        k = rng.randint(1, min(self.max_changes, len(pool)))
        chosen = sorted(rng.sample(pool, k), key=lambda c: (c.path, c.line))
        files = {p: parent.files[p].splitlines(keepends=True) for p in {c.path for c in chosen}}
        changes = []
        for c in chosen:
            new = perturb(c, rng, self.step)
            line = files[c.path][c.line - 1]
            files[c.path][c.line - 1] = line[: c.start] + new + line[c.end :]
            changes.append(f"{c.name} {c.text} -> {new}")
        return Proposal(files={p: "".join(ls) for p, ls in files.items()}, description="; ".join(changes))
