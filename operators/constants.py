"""The offline mutation: perturb module-level UPPER_CASE numeric and boolean constants.

Hyperparameters in autoresearch-style scripts are module constants (DEPTH = 8, MATRIX_LR = 0.04),
so many useful mutations are one-line diffs. Only the literal's characters are rewritten: the
rest of the file stays byte-identical, and the diff reads like a person's edit.

What it changes, and how:

* A literal keeps its kind and sign: a bool flips, an int stays an int of the same sign (0 may
  become 1 or 2, never negative), a float stays a float of the same sign; a float in (0, 1)
  stays in (0, 1) (a logit step); 0.0 becomes a small positive value (1e-4 .. 1e-1, log-uniform).
* New floats are written with three significant digits (`15300.0`, `0.00412`, `3.2e-06`).
* Steps are heavy-tailed by default (`step_dist = "cauchy"`: a Cauchy step of scale `step` on the
  log (or logit) scale, capped at +-5): mostly small moves, now and then a jump across a ridge;
  `"gauss"` is the old fixed-width normal step.
* Never touched: a constant whose line carries the marker `# evo: fixed`, or `# evo: inert on
  DEVICE` when DEVICE is the device runs use (`EVO_DEVICE`, default `cpu`; `auto` counts as cpu),
  and any name in `[operators] exclude`. The marker is anywhere in the line's trailing comment:
  `GPU_DEPTH = 6  # blocks on CUDA  # evo: inert on cpu`.
"""

from __future__ import annotations

import ast
import copy
import math
import os
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
    comment: str = ""  # the line's trailing comment (where the inert markers live)

    @property
    def kind(self) -> str:
        v = self.value
        return "bool" if isinstance(v, bool) else "int" if isinstance(v, int) else "float"


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
        rest = line[end:].strip()
        comment = rest[1:].strip() if rest.startswith("#") else ""
        found.append(Constant(path, target.id, literal, value.lineno, start, end, line[start:end], comment))
    return found


def _literal(node: ast.expr) -> int | float | bool | None:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _literal(node.operand)
        return -inner if isinstance(inner, (int, float)) and not isinstance(inner, bool) else None
    if isinstance(node, ast.Constant) and isinstance(node.value, (bool, int, float)):
        v = node.value
        return v if isinstance(v, bool) or math.isfinite(v) else None
    return None



_MARK = re.compile(r"\bevo:\s*(fixed|inert\s+on\s+([A-Za-z0-9_:-]+))", re.IGNORECASE)
CAP = 5.0  # largest step on the log/logit scale (a factor of e^5 ~ 150)


def current_device() -> str:
    d = os.environ.get("EVO_DEVICE", "cpu").strip().lower() or "cpu"
    return "cpu" if d == "auto" else d.split(":")[0]


def inert(c: Constant, device: str) -> bool:
    """The target marks c as not to be mutated (always, or on this device)."""
    for m in _MARK.finditer(c.comment):
        if m.group(1).lower() == "fixed" or m.group(2).lower().split(":")[0] == device:
            return True
    return False


def _draw(rng: random.Random, step: float, dist: str) -> float:
    """One step on the log (or logit) scale: normal(0, step), or Cauchy of scale step (capped)."""
    if dist == "cauchy":
        x = step * math.tan(math.pi * (rng.random() - 0.5))
    else:
        x = rng.gauss(0.0, step)
    return max(-CAP, min(CAP, x))


def perturb(c: Constant, rng: random.Random, step: float, dist: str = "cauchy") -> str:
    """New literal text for c, of the same kind and sign (see the module doc)."""
    v = c.value
    if isinstance(v, bool):
        return "False" if v else "True"
    if isinstance(v, int):
        sign = -1 if v < 0 else 1
        a = abs(v)
        for _ in range(20):
            if a <= 8:
                jump = 1 if rng.random() < 0.8 else 2
                if dist == "cauchy" and rng.random() < 0.1:
                    jump = max(1, int(round(a * (math.exp(abs(_draw(rng, step, dist))) - 1)))) or 1
                new = a + rng.choice((-1, 1)) * jump
                new = new if (new > 0 or (v == 0 and new == 0)) else (a + jump if v else abs(new))
            else:
                new = int(round(a * math.exp(_draw(rng, step, dist))))
            if new != a and (new > 0 or v == 0) and new >= 0:
                return str(sign * new)
        return str(sign * (a + 1))
    # float
    for _ in range(20):
        if v == 0.0:
            new = 10.0 ** rng.uniform(-4.0, -1.0)
        elif 0.0 < v < 1.0:  # ratios, betas, dropout: stay inside (0, 1)
            logit = math.log(v / (1.0 - v)) + _draw(rng, step, dist)
            new = 1.0 / (1.0 + math.exp(-logit))
            if not 0.0 < float(_format_float(new, c.text)) < 1.0:
                continue
        else:
            new = math.copysign(abs(v) * math.exp(_draw(rng, step, dist)), v)
        text = _format_float(new, c.text)
        if float(text) != v and float(text) != 0.0:
            return text
    return _format_float(v * 1.1 if v else 0.01, c.text)


def _format_float(x: float, like: str) -> str:
    """Three significant digits; an exponent where the original had one or the value is tiny/huge."""
    r = float(f"{x:.3g}")
    if "e" in like.lower() or (r != 0 and (abs(r) < 1e-3 or abs(r) >= 1e6)):
        mant, exp = f"{r:.2e}".split("e")
        mant = mant.rstrip("0").rstrip(".") if "." in mant else mant
        return f"{mant}e{int(exp)}"
    text = repr(r)
    return text if "." in text else text + ".0"


class ConstantsMutation:
    """Offline mutation: 1..max_changes constants across the mutable Python files."""

    name = "constants"

    def __init__(self, max_changes: int = 2, step: float = 0.5, step_dist: str = "cauchy",
                 exclude: tuple[str, ...] | list[str] = (), device: str | None = None) -> None:
        if step_dist not in ("gauss", "cauchy"):
            raise ValueError(f"step_dist must be gauss or cauchy, not {step_dist!r}")
        self.max_changes = max(1, max_changes)
        self.step = step
        self.step_dist = step_dist
        self.exclude = frozenset(exclude)
        self.device = device or current_device()

    def scaled(self, factor: float) -> ConstantsMutation:
        """The same operator with its step multiplied by `factor` (a plan's per-child step scale)."""
        out = copy.copy(self)
        out.step = self.step * factor
        return out

    def candidates(self, files: dict[str, str]) -> list[Constant]:
        """The constants this operator may change in these files."""
        return [c for path in sorted(files) if path.endswith(".py") for c in find_constants(path, files[path])
                if c.name not in self.exclude and not inert(c, self.device)]

    def mutate(self, parent: Parent, rng: random.Random, context: Context) -> Proposal:
        pool = self.candidates(parent.files)
        if not pool:
            raise OperatorError("no mutable module-level UPPER_CASE numeric or boolean constants in the mutable files "
                                "(all absent, excluded or marked inert)")
        k = rng.randint(1, min(self.max_changes, len(pool)))
        chosen = sorted(rng.sample(pool, k), key=lambda c: (c.path, c.line))
        files = {p: parent.files[p].splitlines(keepends=True) for p in {c.path for c in chosen}}
        changes = []
        for c in chosen:
            new = perturb(c, rng, self.step, self.step_dist)
            line = files[c.path][c.line - 1]
            files[c.path][c.line - 1] = line[: c.start] + new + line[c.end :]
            changes.append(f"{c.name} {c.text} -> {new}")
        return Proposal(files={p: "".join(ls) for p, ls in files.items()}, description="; ".join(changes))
