"""`evo clean STUDY`: remove a study and everything it left behind.

What a study leaves: its git refs in the user's repository (`refs/heads/evo/<study>/main` and
one `refs/evo/<study>/c/NNNNN` per candidate (`refs/heads/evo/...` for older studies), or whatever namespace the study attrs
name), its run logs and artifacts under the results folder (`logs/<study>/`,
`artifacts/<study>/`), its study in the Optuna storage, and its lock file
(`.git/evo/<study>.lock`). Clean removes them in that order, the archive last, so a clean that
stops half-way can simply be run again. It takes the study's lock first (the one `evo search`
holds), so it refuses while a search of the study runs; it refuses to delete a branch that is
checked out in a working tree. The user's HEAD, index and working tree are never touched; the
commits themselves stay in the object store until git's own gc drops them.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evo.archive import read_facts
from evo.errors import EvoError, GitError


@dataclass
class Plan:
    study: str
    url: str
    trials: int = 0
    repo: Any = None  # GitRepo, or None when the study's repository is gone
    repo_path: str = ""
    refs: dict[str, str] = field(default_factory=dict)  # refname -> commit, to delete
    kept: dict[str, str] = field(default_factory=dict)  # refname -> commit, kept (--keep-mainline)
    folders: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _prefixes(study: str, attrs: dict[str, Any]) -> list[str]:
    """The ref namespaces that belong to the study (no trailing slash: for-each-ref then matches
    whole path components, so study 'a' never matches 'ab')."""
    out = [f"refs/heads/evo/{study}", f"refs/evo/{study}"]
    ns = str(attrs.get("namespace") or "").rstrip("/")
    if ns.startswith("refs/") and ns.rsplit("/", 1)[-1] == study:
        out.append(ns)
    return list(dict.fromkeys(out))


def _count_trials(storage: Any, study_id: int) -> int:
    """One COUNT query on an RDB storage (reading 10,000 trials to count them takes half a minute)."""
    from optuna.storages import RDBStorage

    if isinstance(storage, RDBStorage):
        from sqlalchemy import text

        with storage.engine.connect() as conn:
            return int(conn.execute(text("SELECT COUNT(*) FROM trials WHERE study_id = :sid"), {"sid": study_id}).scalar() or 0)
    return len(storage.get_all_trials(study_id, deepcopy=False))


def plan(storage: Any, url: str, study: str, keep_mainline: bool = False) -> Plan:
    """What `clean` would remove (reads only)."""
    from evo.gitrepo import GitRepo

    sid = storage.get_study_id_from_name(study)
    attrs = read_facts(storage, sid)
    p = Plan(study=study, url=url, trials=_count_trials(storage, sid))
    p.repo_path = str(attrs.get("repo") or "")
    if p.repo_path:
        try:
            p.repo = GitRepo(p.repo_path)
        except GitError as e:
            p.notes.append(f"repository unavailable, no refs removed: {e}")
    else:
        p.notes.append("the study records no repository: no refs removed")
    if p.repo is not None:
        mainline = str(attrs.get("mainline") or f"refs/heads/evo/{study}/main")
        raw = p.repo.out("for-each-ref", "--format=%(refname) %(objectname)", *_prefixes(study, attrs))
        for line in raw.splitlines():
            name, sha = line.split(" ", 1)
            (p.kept if keep_mainline and name == mainline else p.refs)[name] = sha
    results = (attrs.get("config") or {}).get("study", {}).get("results") if isinstance(attrs.get("config"), dict) else None
    if results:
        for sub in ("logs", "artifacts"):
            folder = Path(results) / sub / study
            if folder.is_dir():
                p.folders.append(folder)
    else:
        p.notes.append("the study records no results folder: no logs or artifacts removed")
    return p


def _checked_out(p: Plan) -> list[str]:
    try:
        out = p.repo.out("worktree", "list", "--porcelain")
    except GitError:
        return []
    branches = {line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("branch ")}
    return sorted(r for r in p.refs if r in branches)


def execute(storage: Any, p: Plan) -> None:
    """Remove the refs (one git transaction), the folders, the lock file, then the archive study."""
    import optuna

    if p.repo is not None and p.refs:
        busy = _checked_out(p)
        if busy:
            names = ", ".join(b[len("refs/heads/"):] if b.startswith("refs/heads/") else b for b in busy)
            raise EvoError(f"{names} is checked out in a working tree of {p.repo.path}; check out another branch first"
                           + (" (or keep it with --keep-mainline)" if all(b.endswith("/main") for b in busy) else ""))
        # one transaction; each delete names the value it expects, so a ref moved meanwhile fails it all
        stdin = "".join(f"delete {name} {sha}\n" for name, sha in p.refs.items())
        p.repo.git("update-ref", "--stdin", input=stdin.encode())
    for folder in p.folders:
        shutil.rmtree(folder)
        with contextlib.suppress(OSError):  # logs/ and artifacts/ themselves, when this was the last study
            folder.parent.rmdir()
    if p.repo is not None:
        lock = p.repo.git_dir / "evo" / f"{p.study}.lock"
        with contextlib.suppress(OSError):
            lock.unlink()
        with contextlib.suppress(OSError):
            lock.parent.rmdir()  # only when empty: other studies' locks stay
    optuna.delete_study(study_name=p.study, storage=storage)


def clean(storage: Any, url: str, study: str, keep_mainline: bool = False, dry_run: bool = False) -> Plan:
    """Plan, take the study's lock (StudyLocked while a search runs), then remove everything."""
    from evo.lock import study_lock

    p = plan(storage, url, study, keep_mainline)
    if dry_run:
        return p
    lock: Any = study_lock(p.repo.git_dir, study) if p.repo is not None else contextlib.nullcontext()
    with lock:
        if p.repo is not None:  # the refs again, under the lock: a search may have made more meanwhile
            p = plan(storage, url, study, keep_mainline)
        execute(storage, p)
    return p
