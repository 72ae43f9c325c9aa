"""The contract between the search loop and the operators that make children.

A mutation sees its parent's mutable files as text and returns the full new text of the files
it changed; the loop (not the operator) checks the paths against the mutable globs, compiles
Python, commits and runs. An operator that cannot produce a child raises OperatorError: the
trial becomes FAIL with that reason and no run is spent.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Parent:
    """What an operator may know about a parent individual."""

    commit: str
    files: dict[str, str]  # mutable files only: repo-relative path -> text
    value: float | None = None  # its metric (None: not measured / failed)
    description: str = ""
    trial: int | None = None  # Optuna trial number, when it has one


@dataclass(frozen=True)
class Context:
    """Study-level facts a proposer may use (an LLM prompt uses all of them)."""

    metric: str = "score"
    direction: str = "minimize"  # or "maximize"
    mutable: tuple[str, ...] = ()  # the mutable globs, for the answer contract
    program: str = ""  # research directions (e.g. model/program.md), may be empty
    history: str = ""  # compact table of earlier trials (best, recent failures, tried ideas)


@dataclass
class Proposal:
    """A child: the full new text of each file the operator changed."""

    files: dict[str, str]
    description: str  # one line; becomes the commit subject and the trial's description
    artifacts: dict[str, str] = field(default_factory=dict)  # e.g. prompt, response
    usage: dict[str, int] = field(default_factory=dict)  # prompt_tokens, completion_tokens


class OperatorError(Exception):
    """The operator could not make a child; costs one proposal, never the search."""

    def __init__(
        self,
        reason: str,
        artifacts: dict[str, str] | None = None,
        usage: dict[str, int] | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.artifacts = artifacts or {}
        self.usage = usage or {}


class Mutation(Protocol):
    name: str

    def mutate(self, parent: Parent, rng: random.Random, context: Context) -> Proposal: ...


@dataclass(frozen=True)
class Conflict:
    """One file that a 3-way merge could not settle by itself."""

    path: str
    base: str  # the file at the merge base ("" if absent there)
    ours: str  # the file in parent a
    theirs: str  # the file in parent b
    merged: str  # git's merge of the three, with <<<<<<< ======= >>>>>>> markers


class ConflictResolver(Protocol):
    """Settles conflicting files of a crossover. Returns the resolved text of each conflicted path."""

    name: str

    def resolve(
        self, conflicts: list[Conflict], a: Parent, b: Parent, rng: random.Random, context: Context
    ) -> Proposal: ...
