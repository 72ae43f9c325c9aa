"""`evo promote`: put a trial's code on the study's mainline or on a branch of the user's, by hand.

Refuses to move a branch that is checked out in any worktree (that would change files under
the user's feet), and to overwrite work on the target branch: the candidate is fast-forwarded
or merged; a conflicting merge is refused, never forced.
"""

from __future__ import annotations

import time

from evo.archive import Archive
from evo.errors import EvoError
from evo.gitrepo import GitRepo


def promote_by_hand(storage: str, study_name: str, trial: int | None, to: str | None) -> str:
    archive = Archive(storage, study_name)
    attrs = archive.attrs
    if "repo" not in attrs:
        raise EvoError(f"study '{study_name}' was not made by evo search")
    repo = GitRepo(attrs["repo"])
    trials = {t.number: t for t in archive.trials()}
    if trial is None:
        accepted = [int(i) for i, d in attrs.get("decisions", {}).items() if d.get("decision") == "accept"]
        if not accepted:
            raise EvoError(f"study '{study_name}' has no accepted candidate; name one with --trial N")
        index = accepted[-1]
        t = next(t for t in trials.values() if t.user_attrs.get("index") == index and t.user_attrs.get("role") == "candidate")
    else:
        if trial not in trials:
            raise EvoError(f"study '{study_name}' has no trial {trial}")
        t = trials[trial]
    commit = t.user_attrs.get("commit")
    if not commit:
        raise EvoError(f"trial {t.number} has no commit (its proposal failed: {t.user_attrs.get('reason', '')})")
    target = f"refs/heads/{to}" if to else attrs["mainline"]
    if target in repo.checked_out_branches():
        raise EvoError(f"branch {target[len('refs/heads/'):]} is checked out in a working tree; check out another branch first")
    old = repo.ref(target)
    value = t.value if t.value is not None else float("nan")
    metric = attrs.get("metric", "value")
    subject = f"evo: promote #{t.user_attrs.get('index')} by hand ({metric} {value:.6g})"
    body = (f"{t.user_attrs.get('description', '')}\n\nEvo-Study: {study_name}\nEvo-Index: {t.user_attrs.get('index')}\n"
            f"Evo-Trial: {t.number}\nEvo-Candidate: {commit}\nEvo-Metric: {metric}\nEvo-Value: {value!r}\nEvo-Decision: by hand\n")
    tree = repo.tree_of(commit)
    if old is None:
        new = repo.commit_tree(tree, [commit], f"{subject}\n\n{body}")
    elif repo.is_ancestor(commit, old):
        return f"{target[len('refs/heads/'):]} already contains {commit[:8]}"
    elif repo.is_ancestor(old, commit) or to is None:
        new = repo.commit_tree(tree, [old, commit], f"{subject}\n\n{body}")
    else:
        merged = repo.merge_tree(old, commit)
        if merged.conflicts:
            raise EvoError(f"merging {commit[:8]} into {to} conflicts in {', '.join(merged.conflicts)}; merge it yourself")
        new = repo.commit_tree(merged.tree, [old, commit], f"{subject}\n\n{body}")
    repo.set_ref(target, new, old, reason=subject)
    if to is None:
        promotions = list(attrs.get("promotions", []))
        promotions.append({"index": t.user_attrs.get("index"), "commit": new, "candidate": commit, "value": t.value,
                           "previous": None, "time": time.time(), "decision": "by hand"})
        archive.set_attr("promotions", promotions)
    return f"{target[len('refs/heads/'):]} -> {new[:8]} (trial {t.number}, {metric} {value:.6g})"
