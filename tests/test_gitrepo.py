"""The in-process tree reads (ls_files, changed_paths) list what git's own commands list; the in-process
writers (objects, commits, candidate refs) write what git writes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from evo.gitrepo import GitRepo


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env).stdout.decode()


def _commit(repo: Path, files: dict[str, str | None], modes: dict[str, int] | None = None) -> str:
    for rel, text in files.items():
        path = repo / rel
        if text is None:
            _git(repo, "rm", "-rq", rel)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for rel, mode in (modes or {}).items():
        (repo / rel).chmod(mode)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "x", "--allow-empty")
    return _git(repo, "rev-parse", "HEAD").strip()


def test_tree_reads_match_git(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    repo.mkdir()
    _git(repo, "init", "-q")
    a = _commit(repo, {"a.py": "1", "b/c.py": "2", "b/d/e.txt": "3", "b-x": "4", "b.y": "5", "f": "6", "ü.txt": "7"})
    b = _commit(repo, {"a.py": "1 changed", "b/d/e.txt": None, "b/new.py": "8", "f": None}, modes={"b-x": 0o755})
    (repo / "f").mkdir()
    c = _commit(repo, {"f/g.py": "9", "b/c.py": None, "a.py": None})  # a file that becomes a folder; a folder emptied
    g = GitRepo(repo)
    for rev in (a, b, c, "HEAD", g.tree_of(b)):
        listed = _git(repo, "ls-tree", "-r", "-z", "--name-only", rev).split("\0")
        assert g.ls_files(rev) == [p for p in listed if p]
    for x, y in ((a, b), (b, c), (a, c), (c, a), (a, a), (g.tree_of(a), g.tree_of(c))):
        listed = _git(repo, "diff-tree", "-r", "-z", "--name-only", "--no-renames", x, y).split("\0")
        assert g.changed_paths(x, y) == [p for p in listed if p], (x, y)


def test_pack_refs_keeps_every_ref_and_only_packs_past_the_threshold(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    repo.mkdir()
    _git(repo, "init", "-q")
    a = _commit(repo, {"a.py": "1"})
    b = _commit(repo, {"a.py": "2"})
    g = GitRepo(repo)
    for i in range(5):
        g.set_ref(f"refs/evo/s/c/{i:05d}", a if i % 2 else b)
    before = g.refs("refs/evo/s/c/")
    loose = repo / ".git" / "refs" / "evo" / "s" / "c"
    assert not g.pack_refs("refs/evo/s/c", threshold=5)  # 5 loose refs: at the threshold, left alone
    assert len(list(loose.iterdir())) == 5
    assert g.pack_refs("refs/evo/s/c", threshold=4)
    assert not loose.exists() or not list(loose.iterdir())
    assert g.refs("refs/evo/s/c/") == before
    assert _git(repo, "rev-parse", "refs/evo/s/c/00001").strip() == a
    assert not g.pack_refs("refs/evo/none", threshold=0)  # no such folder: nothing to pack
    (repo / ".git" / "packed-refs.lock").write_text("")  # what a kill -9 mid-pack leaves: the next pack fails quietly
    g.set_ref("refs/evo/s/c/00009", a)  # and refs are still created and moved
    g.set_ref("refs/evo/s/c/00001", b, a)
    assert not g.pack_refs("refs/evo/s/c", threshold=0)
    assert g.refs("refs/evo/s/c/") == before | {"refs/evo/s/c/00009": a, "refs/evo/s/c/00001": b}


def test_in_process_objects_commits_and_refs_are_what_git_writes(tmp_path: Path, monkeypatch) -> None:
    repo = tmp_path / "r"
    repo.mkdir()
    _git(repo, "init", "-q")
    base = _commit(repo, {"a.py": "A = 1\n", "b/c.txt": "x\n"}, modes={"a.py": 0o755})
    monkeypatch.setenv("GIT_AUTHOR_DATE", "1700000000 +0130")
    monkeypatch.setenv("GIT_COMMITTER_DATE", "1700000100 -0500")
    g = GitRepo(repo)
    assert g._plain
    tree = g.write_tree(base, {"a.py": "A = 2\n", "b/new/d.py": "D = 4\n"})
    commit = g.commit_tree(tree, [base], "child\n\nEvo-Index: 1\n")
    g.set_ref("refs/evo/toy/c/00001", commit)
    # git reads them back: the files and the executable bit kept, the ref, and the objects are well-formed
    assert _git(repo, "ls-tree", "-r", tree).split("\n")[0].startswith("100755 blob")
    assert _git(repo, "show", f"{commit}:b/new/d.py") == "D = 4\n"
    assert _git(repo, "rev-parse", "refs/evo/toy/c/00001").strip() == commit
    _git(repo, "fsck", "--strict", "--no-dangling")
    # and git's own writers give the same ids for the same content, dates and identity
    g._plain = False
    assert g.write_tree(base, {"a.py": "A = 2\n", "b/new/d.py": "D = 4\n"}) == tree
    assert g.commit_tree(tree, [base], "child\n\nEvo-Index: 1\n") == commit
    # a date git would parse but evo does not (an ISO form) goes to git, with the same result as git alone
    g._plain = True
    monkeypatch.setenv("GIT_AUTHOR_DATE", "2023-11-14T22:13:20+01:30")
    iso = g.commit_tree(tree, [base], "child\n\nEvo-Index: 1\n")
    assert _git(repo, "log", "-1", "--format=%ai", iso).strip() == "2023-11-14 22:13:20 +0130"
    # a ref that has a reflog is left to git, which appends to it
    _git(repo, "update-ref", "--create-reflog", "-m", "t", "refs/evo/toy/c/00002", base)
    g.set_ref("refs/evo/toy/c/00002", commit)
    assert len(_git(repo, "reflog", "show", "refs/evo/toy/c/00002").splitlines()) == 2


def test_a_childs_patch_is_what_git_diff_prints(tmp_path: Path) -> None:
    """`GitRepo.patch` makes a child's diff.patch in-process: for the edits the constants operator makes
    (lines changed in place, in one file or several) it is byte for byte `git diff --full-index`; for
    random edits (lines added and removed too) it is a patch git applies, where git may place an
    ambiguous blank line elsewhere; anything else (a file added, removed, re-moded, binary, with no
    final newline) is git's own output."""
    import random

    repo = tmp_path / "r"
    repo.mkdir()
    _git(repo, "init", "-q")
    src = (Path(__file__).parents[1] / "model" / "train.py").read_text()
    other = (Path(__file__).parents[1] / "evo" / "judge.py").read_text()
    base = _commit(repo, {"train.py": src, "sub/j.py": other, "bin.dat": "a\0b\n", "tail.txt": "no newline"})
    g = GitRepo(repo)
    rng = random.Random(0)

    def git_diff(a: str, b: str) -> str:
        return _git(repo, "diff", "--full-index", a, b)

    for k in range(40):  # in-place edits, as the constants operator makes: exactly git's bytes
        files = {}
        for name, text in (("train.py", src), ("sub/j.py", other)):
            lines = text.split("\n")
            for _ in range(rng.choice([1, 2, 3])):
                i = rng.randrange(len(lines))
                lines[i] = lines[i].replace("=", f"= {k} +", 1) if "=" in lines[i] else lines[i] + " # edited"
            if k % 3 or name == "train.py":
                files[name] = "\n".join(lines)
        child = g.commit_files(base, files, "m")
        assert g.patch(base, child) == git_diff(base, child)
    applied = 0
    for _ in range(40):  # lines added and removed: a patch git applies to the parent, giving the child
        lines = src.split("\n")
        for _ in range(rng.choice([1, 3, 6])):
            i = rng.randrange(len(lines))
            if rng.random() < 0.5:
                del lines[i]
            else:
                lines.insert(i, rng.choice(["", "X = 1", "    pass"]))
        child = g.commit_files(base, {"train.py": "\n".join(lines)}, "m")
        mine = g.patch(base, child)
        work = tmp_path / "w"
        subprocess.run(["rm", "-rf", str(work)], check=True)
        _git(repo, "worktree", "add", "-q", "--detach", str(work), base)
        subprocess.run(["git", "apply", "-"], input=mine.encode(), cwd=work, check=True, capture_output=True)
        assert (work / "train.py").read_text() == "\n".join(lines)
        _git(repo, "worktree", "remove", "--force", str(work))
        applied += 1
    assert applied == 40
    for files in ({"bin.dat": "a\0c\n"}, {"tail.txt": "still none"}, {"new.py": "x = 1\n"}):  # git's own output
        child = g.commit_files(base, files, "m")
        assert g.patch(base, child) == git_diff(base, child) != ""
    gone = _commit(repo, {"tail.txt": None})
    assert g.patch(base, gone) == git_diff(base, gone) and "deleted file mode" in g.patch(base, gone)


def test_reads_are_git_s_bytes_through_a_full_object_cache(tmp_path: Path, monkeypatch) -> None:
    """Objects are read in-process (loose ones inflated here, packed ones through git) into a bounded
    cache: with a cache too small for the repository, every file still reads as `git show` prints it,
    before and after `git gc` packs the objects."""
    import evo.gitrepo as gitrepo

    monkeypatch.setattr(gitrepo, "_CACHE_BYTES", 4096)
    repo = tmp_path / "r"
    repo.mkdir()
    _git(repo, "init", "-q")
    files = {f"d{i % 3}/f{i}.txt": f"{i}\n" * (50 + 40 * i) for i in range(12)}
    commit = _commit(repo, files)
    for packed in (False, True):
        if packed:
            _git(repo, "gc", "-q")
            assert not any(p.name != "pack" and p.name != "info" for p in (repo / ".git" / "objects").iterdir())
        g = GitRepo(repo)
        for _ in range(2):  # the second pass reads what the first evicted
            for path in files:
                assert g.read(commit, path) == _git(repo, "show", f"{commit}:{path}").encode()
        assert g._objects.size <= 4096
