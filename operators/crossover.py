"""Crossover: a real 3-way git merge of two parents at their merge base.

Hunks only one parent changed are taken from that parent (GEPA's per-component merge, done by
git). Git calls edits on neighbouring lines one conflict, so two lines that each changed a
different constant would collapse into a copy of one parent: a conflicting hunk whose base, a
and b sides have equally many lines is therefore settled line by line first (a line only one
side changed takes that side, so the child has both changes; a line both changed takes the
fitter parent's). Only hunks that do not align (lines added or removed) go to the configured
resolver (the fitter parent's side, a coin per hunk, or the LLM). The child is a merge commit
with both parents, so `git log --graph` shows the genealogy.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from evo.errors import GitError
from evo.gitrepo import GitRepo, merge_file
from operators.base import Conflict, ConflictResolver, Context, OperatorError, Parent, Proposal

_HUNK = re.compile(r"^<<<<<<< a\n(.*?)^=======\n(.*?)^>>>>>>> b\n", re.MULTILINE | re.DOTALL)


@dataclass
class Child:
    tree: str
    description: str
    conflicts: tuple[str, ...] = ()
    artifacts: dict[str, str] = field(default_factory=dict)
    usage: dict[str, int] = field(default_factory=dict)


def better(a: Parent, b: Parent, direction: str) -> Parent:
    """The fitter parent (ties and unknown values go to a)."""
    if b.value is None:
        return a
    if a.value is None:
        return b
    return b if (b.value < a.value if direction == "minimize" else b.value > a.value) else a


class FitterResolver:
    """Each conflicting hunk takes the fitter parent's side."""

    name = "fitter"

    def resolve(self, conflicts: list[Conflict], a: Parent, b: Parent, rng: random.Random, context: Context) -> Proposal:
        favor = "ours" if better(a, b, context.direction) is a else "theirs"
        files = {c.path: merge_file(c.base, c.ours, c.theirs, favor=favor)[0] for c in conflicts}
        side = "a" if favor == "ours" else "b"
        return Proposal(files=files, description=f"conflicts -> fitter parent ({side})")


class RandomResolver:
    """Each conflicting hunk takes a side by a fair coin from the seeded rng."""

    name = "random"

    def resolve(self, conflicts: list[Conflict], a: Parent, b: Parent, rng: random.Random, context: Context) -> Proposal:
        files = {}
        picks = []
        for c in conflicts:
            def pick(m: re.Match[str]) -> str:
                side = rng.choice("ab")
                picks.append(side)
                return m.group(1) if side == "a" else m.group(2)

            text, n = _HUNK.subn(pick, c.merged)
            if n == 0 or "<<<<<<< a" in text:
                raise OperatorError(f"crossover: cannot split the conflict in {c.path} into hunks")
            files[c.path] = text
        return Proposal(files=files, description=f"conflicts -> random hunks ({''.join(picks)})")


def crossover(repo: GitRepo, a: Parent, b: Parent, resolver: ConflictResolver, rng: random.Random, context: Context) -> Child | None:
    """Merge b into a. None when a merge makes no sense (same commit, or one contains the other)."""
    if a.commit == b.commit or repo.is_ancestor(a.commit, b.commit) or repo.is_ancestor(b.commit, a.commit):
        return None
    merged = repo.merge_tree(a.commit, b.commit)
    desc = "merge"  # the caller names the parents (commit hashes would make seeded searches differ)
    if not merged.conflicts:
        return Child(tree=merged.tree, description=desc)
    base = repo.merge_base(a.commit, b.commit)
    conflicts = []
    settled: dict[str, str] = {}
    lines_a = lines_b = lines_fit = 0
    prefer_a = better(a, b, context.direction) is a
    for path in merged.conflicts:
        texts = []
        for rev in (base, a.commit, b.commit):
            try:
                texts.append(repo.read(rev, path).decode("utf-8") if rev else "")
            except Exception:  # noqa: BLE001 - absent on that side (add/delete conflict)
                texts.append("")
        lm = line_merge(*texts, pick=_line_policy(resolver.name, prefer_a, rng))
        if lm is not None:
            lines_a, lines_b, lines_fit = lines_a + lm.from_a, lines_b + lm.from_b, lines_fit + lm.both
            if not lm.left:
                settled[path] = lm.text
                continue
            texts = [lm.base, lm.ours, lm.theirs]  # the aligned hunks settled; the rest for the resolver
        marked, _clean = merge_file(*texts)
        conflicts.append(Conflict(path=path, base=texts[0], ours=texts[1], theirs=texts[2], merged=marked))
    line_desc = f"line merge (a {lines_a}, b {lines_b}, both changed -> {resolver.name} {lines_fit})" if settled or lines_a or lines_b or lines_fit else ""
    if not conflicts:
        return Child(tree=repo.write_tree(merged.tree, settled), description=f"{desc}; conflicts -> {line_desc}", conflicts=merged.conflicts)
    resolved = resolver.resolve(conflicts, a, b, rng, context)
    resolved.files = {**settled, **resolved.files}
    if line_desc:
        resolved.description = f"{line_desc}; rest {resolved.description}"
    missing = [c.path for c in conflicts if c.path not in resolved.files]
    if missing:
        raise OperatorError(f"crossover: the {resolver.name} resolver left {', '.join(missing)} unresolved", resolved.artifacts, resolved.usage)
    for path, text in resolved.files.items():
        if re.search(r"^(<<<<<<<|>>>>>>>) ", text, re.MULTILINE):
            raise OperatorError(f"crossover: conflict markers left in {path}", resolved.artifacts, resolved.usage)
    return Child(
        tree=repo.write_tree(merged.tree, dict(resolved.files)), description=f"{desc}; {resolved.description}", conflicts=merged.conflicts,
        artifacts=resolved.artifacts, usage=resolved.usage,
    )


@dataclass
class LineMerge:
    text: str  # the merged file (unaligned hunks: a's side)
    base: str  # the file with aligned hunks settled, unaligned hunks as in base / a / b:
    ours: str  # what a resolver merges when `left` > 0
    theirs: str
    from_a: int = 0  # lines taken from a because only a changed them
    from_b: int = 0
    both: int = 0  # lines both changed (differently): the fitter parent's
    left: int = 0  # hunks that do not align, left to the resolver


def _line_policy(resolver: str, prefer_a: bool, rng: random.Random) -> Callable[[], bool] | None:
    """Who wins a line both parents changed: the fitter parent, a coin (random), or the resolver (None)."""
    if resolver == "fitter":
        return lambda: prefer_a
    if resolver == "random":
        return lambda: rng.random() < 0.5
    return None


def line_merge(base: str, ours: str, theirs: str, pick: Callable[[], bool] | None) -> LineMerge | None:
    """Settle each conflicting hunk whose three sides have equally many lines line by line.

    `pick()` says whether a line both sides changed takes a's side; with no `pick`, a hunk with
    such a line is left to the resolver whole (only its one-sided lines' hunks are settled).

    None when the file's 3-way merge cannot be read as hunks (e.g. one side lacks the file)."""
    if not base or not ours or not theirs:
        return None
    try:
        text = merge_file(base, ours, theirs, diff3=True)[0]
    except GitError as e:
        raise OperatorError(f"crossover: {e}") from None
    out: list[list[str]] = [[], [], [], []]  # merged, base', ours', theirs'
    lm = LineMerge("", "", "", "")
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.startswith("<<<<<<< a"):
            for o in out:
                o.append(line)
            i += 1
            continue
        sides: list[list[str]] = [[], [], []]  # a, base, b
        k, i = 0, i + 1
        while i < len(lines) and not lines[i].startswith(">>>>>>> b"):
            if lines[i].startswith("||||||| base") and k == 0:
                k = 1
            elif lines[i].startswith("=======") and k == 1 and (lines[i].rstrip("\r\n") == "======="):
                k = 2
            else:
                sides[k].append(lines[i])
            i += 1
        if i >= len(lines) or k != 2:
            return None  # not the shape git writes: leave the file to the resolver
        i += 1
        sa, sb, sbase = sides[0], sides[2], sides[1]
        aligned = len(sa) == len(sb) == len(sbase)
        if aligned and pick is None and any(la != lb and la != lo and lb != lo for la, lo, lb in zip(sa, sbase, sb)):
            aligned = False
        if aligned:
            for la, lo, lb in zip(sa, sbase, sb):
                if la == lb or lb == lo:
                    got = la
                    lm.from_a += la != lo
                elif la == lo:
                    got = lb
                    lm.from_b += 1
                else:
                    lm.both += 1
                    got = la if pick is not None and pick() else lb
                for o in out:
                    o.append(got)
        else:
            lm.left += 1
            out[0] += sa
            out[1] += sbase
            out[2] += sa
            out[3] += sb
    lm.text, lm.base, lm.ours, lm.theirs = ("".join(o) for o in out)
    return lm
