"""Crossover: a real 3-way git merge of two parents at their merge base.

Hunks only one parent changed are taken from that parent (GEPA's per-component merge, done by
git); hunks both changed are conflicts, settled by a policy (the fitter parent's side, or a coin
per hunk) or by the LLM resolver. The child is a merge commit with both parents, so
`git log --graph` shows the genealogy.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

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
    for path in merged.conflicts:
        texts = []
        for rev in (base, a.commit, b.commit):
            try:
                texts.append(repo.read(rev, path).decode("utf-8") if rev else "")
            except Exception:  # noqa: BLE001 - absent on that side (add/delete conflict)
                texts.append("")
        marked, _clean = merge_file(*texts)
        conflicts.append(Conflict(path=path, base=texts[0], ours=texts[1], theirs=texts[2], merged=marked))
    resolved = resolver.resolve(conflicts, a, b, rng, context)
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
