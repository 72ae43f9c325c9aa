"""`evo clean`: after real searches in a real repository (with the user's own branches, a tag, a
dirty working tree), cleaning a study leaves the repository exactly as it was before that study:
the same refs, HEAD, branch, index, working tree and git folder outside the object store; the
study's logs, artifacts and archive study are gone; other studies are untouched; a running
search's lock and a checked-out branch make it refuse without removing anything."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest

from evo import cli

ROOT = Path(__file__).resolve().parents[1]
TARGET = '''\
import os
LR = 0.1
#
#
WIDTH = 8
seed = int(os.environ.get("EVO_SEED", "0"))
score = 10 - (LR - 0.3) ** 2 * 20 - abs(WIDTH - 16) * 0.05 + seed * 0.001
for i in range(1, 5):
    print(f"progress: {i / 4:.2f} score: {score * (0.5 + i / 8):.4f}")
print(f"score: {score:.6f}")
'''


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "u", "GIT_AUTHOR_EMAIL": "u@u", "GIT_COMMITTER_NAME": "u", "GIT_COMMITTER_EMAIL": "u@u"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout


def evo(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def snapshot(repo: Path) -> dict[str, Any]:
    """Everything of the repository a study could have changed, except the object store."""
    gitdir = repo / ".git"
    files = {}
    for p in sorted(gitdir.rglob("*")):
        rel = p.relative_to(gitdir).as_posix()
        if rel.startswith("objects") or rel in ("index", "packed-refs") or not p.is_file():
            continue  # objects: unreachable commits stay until gc; index: git status refreshes its stat cache
        files[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    dirs = sorted(p.relative_to(gitdir).as_posix() for p in gitdir.rglob("*") if p.is_dir() and not p.relative_to(gitdir).as_posix().startswith("objects"))
    tree = {p.relative_to(repo).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(repo.rglob("*")) if p.is_file() and ".git" not in p.relative_to(repo).parts}
    return {
        "refs": git(repo, "for-each-ref", "--format=%(refname) %(objectname)"),
        "head": git(repo, "rev-parse", "HEAD"), "branch": git(repo, "symbolic-ref", "HEAD"),
        "status": git(repo, "status", "--porcelain=v1", "--untracked-files=all"), "staged": git(repo, "ls-files", "-s"),
        "gitfiles": files, "gitdirs": dirs, "tree": tree,
        "reflog_head": git(repo, "reflog", "show", "--format=%H %gs", "HEAD"),
    }


def config(root: Path, name: str, **search: Any) -> Path:
    sections = {
        "study": {"name": name, "storage": f"sqlite:///{root / 'results' / 'evo.db'}", "results": str(root / "results")},
        "target": {"repo": str(root / "repo"), "mutable": ["target.py"], "run": "{python} target.py", "time_budget": 1,
                   "timeout": 20, "metric": "score", "direction": "maximize"},
        "search": {"strategy": "greedy", "generations": 4, **search},
        "sprt": {"enabled": False},
    }
    path = root / f"{name}.toml"
    path.write_text("".join(f"[{s}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in kv.items()) for s, kv in sections.items()))
    return path


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, str]:
    """A user's repository: two commits on master, a feature branch, a tag, staged, modified and
    untracked files; and study 'keep' already searched in it."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "master")
    (repo / "target.py").write_text(TARGET)
    (repo / "README.md").write_text("mine\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "init")
    git(repo, "branch", "feature")
    git(repo, "tag", "v1")
    (repo / "README.md").write_text("mine, edited\n")
    git(repo, "commit", "-qam", "second")
    (repo / "notes.txt").write_text("staged\n")
    git(repo, "add", "notes.txt")
    (repo / "README.md").write_text("mine, edited, not committed\n")  # a dirty working tree
    (repo / "scratch.txt").write_text("untracked\n")
    url = f"sqlite:///{tmp_path / 'results' / 'evo.db'}"
    rc, out, err = evo("search", "--config", str(config(tmp_path, "keep")))
    assert rc == 0, err + out
    return tmp_path, repo, url


def test_clean_leaves_the_repository_as_it_was_before_the_study(setup: tuple[Path, Path, str]) -> None:
    root, repo, url = setup
    before = snapshot(repo)
    keep_refs = {line for line in before["refs"].splitlines() if "/evo/keep/" in line}
    assert len(keep_refs) > 1

    rc, out, err = evo("search", "--config", str(config(root, "gone")))
    assert rc == 0, err + out
    during = snapshot(repo)
    made = [line.split()[0] for line in during["refs"].splitlines() if line.split()[0].startswith(("refs/heads/evo/gone/", "refs/evo/gone/"))]
    assert "refs/heads/evo/gone/main" in made and len(made) >= 4, made  # the mainline and its candidates
    assert all(r.startswith("refs/evo/gone/c/") for r in made if r != "refs/heads/evo/gone/main"), made  # candidates are not branches
    assert during["head"] == before["head"] and during["tree"] == before["tree"]  # a search never touches them
    logs, artifacts = root / "results" / "logs" / "gone", root / "results" / "artifacts" / "gone"
    assert any(logs.iterdir()) and any(artifacts.iterdir())
    assert "gone" in optuna.get_all_study_names(url)

    rc, out, err = evo("clean", "gone", "--storage", url)
    assert rc == 0, err + out
    assert out.startswith("removed study 'gone':") and f"refs       {len(made)} in {repo}" in out, out
    after = snapshot(repo)
    for key in before:
        assert after[key] == before[key], key  # refs, HEAD, branch, status, index, .git files and dirs, tree, HEAD's reflog
    assert not logs.exists() and not artifacts.exists()
    assert (root / "results" / "logs" / "keep").is_dir()  # the other study's logs stay
    assert optuna.get_all_study_names(url) == ["keep"]
    rc, out, _ = evo("studies", "--storage", url)
    assert rc == 0 and [line.split()[0] for line in out.splitlines()[1:-1]] == ["keep"]
    # the other study still reads whole (its mainline from git)
    rc, out, err = evo("mainline", "keep", "--storage", url)
    assert rc == 0 and "mainline evo/keep/main" in out, err
    # cleaning again: the study is gone, one line, exit 2
    rc, out, err = evo("clean", "gone", "--storage", url)
    assert rc == 2 and "study 'gone' not found" in err and len(err.strip().splitlines()) == 1


def test_keep_mainline_dry_run_and_a_checked_out_branch(setup: tuple[Path, Path, str]) -> None:
    root, repo, url = setup
    refs = git(repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads/evo/keep", "refs/evo/keep").splitlines()
    main = git(repo, "rev-parse", "refs/heads/evo/keep/main").strip()
    # dry run: lists, removes nothing
    rc, out, err = evo("clean", "keep", "--dry-run", "--storage", url)
    assert rc == 0 and "would remove" in out and f"refs       {len(refs)} in {repo}" in out, err + out
    assert git(repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads/evo/keep", "refs/evo/keep").splitlines() == refs
    # the mainline checked out in a second working tree: refused, nothing removed
    wt = root / "wt"
    git(repo, "worktree", "add", "-q", str(wt), "evo/keep/main")
    rc, out, err = evo("clean", "keep", "--storage", url)
    assert rc == 2 and "evo/keep/main is checked out" in err and "--keep-mainline" in err, err
    assert git(repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads/evo/keep", "refs/evo/keep").splitlines() == refs
    assert "keep" in optuna.get_all_study_names(url)
    # --keep-mainline: every candidate ref goes, the mainline stays where it was (even checked out)
    rc, out, err = evo("clean", "keep", "--keep-mainline", "--storage", url)
    assert rc == 0, err + out
    assert f"kept       evo/keep/main at {main[:10]}" in out
    assert git(repo, "for-each-ref", "--format=%(refname)", "refs/heads/evo", "refs/evo").split() == ["refs/heads/evo/keep/main"]
    assert git(repo, "rev-parse", "evo/keep/main").strip() == main
    assert optuna.get_all_study_names(url) == []
    assert not (root / "results" / "logs" / "keep").exists()


def test_clean_refuses_while_a_search_holds_the_study_lock(setup: tuple[Path, Path, str]) -> None:
    root, repo, url = setup
    refs = git(repo, "for-each-ref", "refs/heads/evo/keep", "refs/evo/keep")
    # another process takes the very lock `evo search` takes (evo.lock.study_lock) and holds it
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\nfrom evo.lock import study_lock\n"
         f"with study_lock(Path({str(repo / '.git')!r}), 'keep'):\n    print('held', flush=True)\n    time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        rc, out, err = evo("clean", "keep", "--storage", url)
        assert rc == 3 and "study 'keep' is already running" in err and f"pid {holder.pid}" in err, err
        assert git(repo, "for-each-ref", "refs/heads/evo/keep", "refs/evo/keep") == refs
        assert "keep" in optuna.get_all_study_names(url)
        assert (root / "results" / "logs" / "keep").is_dir()
    finally:
        holder.kill()
        holder.wait()
    rc, out, err = evo("clean", "keep", "--storage", url)  # the holder is gone: the lock is free
    assert rc == 0, err
    assert git(repo, "for-each-ref", "refs/heads/evo", "refs/evo") == ""
