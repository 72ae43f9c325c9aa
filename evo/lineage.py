"""Lineage in git: the `Evo-*` trailers evo writes on its commits, and the mainline's chain.

Every child commit and every promotion commit carries trailers (`Evo-Index: 12`), so the
repository alone says what each commit is: a resume adopts children committed just before a
kill, the mainline is rebuilt from its first-parent chain, and inspection reads the same fields.
They are written and parsed only here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only for annotations: GitPython's import (~0.2 s) is left to the commands that read git
    from evo.gitrepo import GitRepo

_TRAILER = re.compile(r"^Evo-([A-Za-z-]+): (.*)$", re.MULTILINE)


def parse(message: str) -> dict[str, str]:
    """The trailers of a commit message, by name without the `Evo-` prefix."""
    return dict(_TRAILER.findall(message))


def _message(subject: str, body: str, fields: dict[str, object]) -> str:
    trailers = "".join(f"Evo-{k}: {v}\n" for k, v in fields.items())
    return f"{subject}\n\n{body + chr(10) + chr(10) if body else ''}{trailers}"


def child_message(description: str, study: str, index: int, operator: str, generation: int, parents: tuple[int, ...]) -> str:
    """A child commit: the operator's one-line description, then who it is."""
    return f"{description}\n\n" + "".join(f"Evo-{k}: {v}\n" for k, v in {
        "Study": study, "Index": index, "Operator": operator, "Generation": generation,
        "Parents": ",".join(str(p) for p in parents),
    }.items())


def promotion_message(subject: str, body: str, *, study: str, index: int | None, trial: int, candidate: str,
                      metric: str, value: float, decision: str) -> str:
    """A mainline commit: what moved, why (the decision and its evidence), and which run it rests on."""
    return _message(subject, body, {
        "Study": study, "Index": index, "Trial": trial, "Candidate": candidate, "Metric": metric,
        "Value": repr(value), "Decision": decision,
    })


@dataclass(frozen=True)
class Child:
    """What a child commit's trailers say (used to adopt commits made just before a kill)."""

    index: int
    operator: str
    generation: int
    parents: tuple[int, ...]
    description: str


def read_child(repo: GitRepo, sha: str) -> Child | None:
    msg = repo.out("log", "-1", "--format=%B", sha)
    t = parse(msg)
    if "Index" not in t:
        return None
    return Child(index=int(t["Index"]), operator=t.get("Operator", "?"), generation=int(t.get("Generation", "0")),
                 parents=tuple(int(x) for x in t.get("Parents", "").split(",") if x.strip()),
                 description=msg.splitlines()[0] if msg else "")


@dataclass(frozen=True)
class Step:
    """One promotion on the mainline, oldest first."""

    commit: str  # the promotion commit on the mainline
    index: int  # the candidate it promoted
    trailers: dict[str, str]

    @property
    def value(self) -> float:
        try:
            return float(self.trailers.get("Value", "nan"))
        except ValueError:
            return float("nan")


def mainline(repo: GitRepo, base: str, tip: str | None) -> list[Step]:
    """The promotions between the base commit and the tip, oldest first (first parents only)."""
    if not tip or tip == base:
        return []
    raw = repo.out("log", "--first-parent", "--format=%H%x00%B%x01", f"{base}..{tip}")
    steps = []
    for entry in raw.split("\x01"):
        if "\x00" not in entry:
            continue
        sha, msg = entry.strip().split("\x00", 1)
        t = parse(msg)
        if t.get("Index", "").lstrip("-").isdigit():
            steps.append(Step(commit=sha, index=int(t["Index"]), trailers=t))
    steps.reverse()
    return steps


def ancestors(index: int, members: Mapping[int, Any]) -> set[int]:
    """The individual and every ancestor, through both parents of a crossover (`members`: index ->
    anything with `parent_indices`, the engine's individuals or inspection's members)."""
    seen: set[int] = set()
    stack = [index]
    while stack:
        i = stack.pop()
        if i not in seen and i in members:
            seen.add(i)
            stack.extend(members[i].parent_indices)
    return seen
