"""The git seam: individuals are commits, made and merged without a checkout.

Nothing here touches the user's working tree, index or HEAD: commits are built in a temporary
index file, merges use `git merge-tree --write-tree`, runs get a `git archive` export. GitPython
opens and validates the repository; plumbing goes through the git binary, which is faster and
gives exact control over the environment and exit codes.
"""

from __future__ import annotations

import fnmatch
import io
import os
import subprocess
import tarfile
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import git as gitpython
from git.objects.fun import tree_entries_from_data, tree_to_stream
from gitdb import IStream

from evo.errors import GitError

# Commits made by evo carry a fixed identity so they work on machines with no git config.
_IDENTITY = {
    "GIT_AUTHOR_NAME": "evo",
    "GIT_AUTHOR_EMAIL": "evo@localhost",
    "GIT_COMMITTER_NAME": "evo",
    "GIT_COMMITTER_EMAIL": "evo@localhost",
}


@dataclass(frozen=True)
class MergeResult:
    tree: str  # the merged tree; conflicted files hold conflict markers
    conflicts: tuple[str, ...]  # paths git could not merge by itself


class GitRepo:
    def __init__(self, path: str | Path) -> None:
        p = Path(path)
        if not p.exists():
            raise GitError(f"{p}: repository not found")
        try:
            repo = gitpython.Repo(p, search_parent_directories=True)  # a subfolder is refused below, by name
        except gitpython.InvalidGitRepositoryError:
            raise GitError(f"{p}: not a git repository (run 'git init' and commit the files first)") from None
        except gitpython.NoSuchPathError:
            raise GitError(f"{p}: repository not found") from None
        if repo.bare:
            raise GitError(f"{p}: is a bare repository; evo needs a repository with a working tree")
        if Path(repo.working_tree_dir).resolve() != p.resolve():  # type: ignore[arg-type]
            raise GitError(f"{p}: is inside a git repository but not its top folder ({repo.working_tree_dir})")
        self.path = p.resolve()
        self._repo = repo
        self._odb_lock = threading.Lock()  # GitPython's cat-file process serves one request at a time
        self._files: dict[bytes, list[str]] = {}  # tree id -> its file listing
        if self.rev("HEAD", missing_ok=True) is None:
            raise GitError(f"{p}: the repository has no commits yet")

    # -- plumbing ---------------------------------------------------------------------------
    def git(self, *args: str, input: bytes | None = None, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        full_env = {**os.environ, **_IDENTITY, "GIT_TERMINAL_PROMPT": "0", **(env or {})}
        proc = subprocess.run(
            ["git", "-C", str(self.path), *args], input=input, capture_output=True, env=full_env
        )
        if check and proc.returncode != 0:
            msg = proc.stderr.decode(errors="replace").strip().splitlines()
            raise GitError(f"git {' '.join(args[:3])}: {msg[-1] if msg else f'exit {proc.returncode}'}")
        return proc

    def out(self, *args: str, input: bytes | None = None, env: dict[str, str] | None = None) -> str:
        return self.git(*args, input=input, env=env).stdout.decode().strip()

    def rev(self, rev: str, missing_ok: bool = False) -> str | None:
        proc = self.git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
        if proc.returncode != 0:
            if missing_ok:
                return None
            raise GitError(f"{self.path}: no commit named {rev!r}")
        return proc.stdout.decode().strip()

    def tree_of(self, commit: str) -> str:
        return self.out("rev-parse", f"{commit}^{{tree}}")

    @property
    def git_dir(self) -> Path:
        """The repository's common git folder (evo keeps its study locks under it)."""
        return Path(self.out("rev-parse", "--path-format=absolute", "--git-common-dir"))

    def head(self) -> str:
        return self.rev("HEAD")  # type: ignore[return-value]

    # -- reading ------------------------------------------------------------------------------
    def ls_files(self, commit: str) -> list[str]:
        """Every file's path at a commit (or tree), as `git ls-tree -r --name-only` lists them, read from the
        object database in-process: a breeding step asked git for it, a process per child."""
        with self._odb_lock:
            root = self._tree_id(commit)
            files = self._files.get(root)
            if files is None:  # a tree never changes: its listing is kept
                files = self._files[root] = [path for path, _, _ in self._walk(root, "")]
        return list(files)

    def _tree_id(self, rev: str) -> bytes:
        obj = self._repo.rev_parse(rev)
        return (obj.tree if obj.type == "commit" else obj).binsha

    def _entries(self, tree: bytes | None) -> dict[str, tuple[bytes, int]]:
        if tree is None:
            return {}
        return {name: (sha, mode) for sha, mode, name in tree_entries_from_data(self._repo.odb.stream(tree).read())}

    def _walk(self, tree: bytes, prefix: str) -> list[tuple[str, bytes, int]]:
        """(path, id, mode) of every non-tree entry under `tree`, in git's order."""
        out = []
        for name, (sha, mode) in _git_order(self._entries(tree)):
            if mode == _TREE:
                out += self._walk(sha, f"{prefix}{name}/")
            else:
                out.append((f"{prefix}{name}", sha, mode))
        return out

    def match(self, commit: str, globs: tuple[str, ...] | list[str]) -> list[str]:
        return [p for p in self.ls_files(commit) if matches(p, globs)]

    def read(self, commit: str, path: str) -> bytes:
        """A file's bytes at a commit (or tree), through GitPython's long-lived `git cat-file --batch`:
        no process per read, which is most of the cost of breeding on small targets."""
        with self._odb_lock:
            try:
                obj = self._repo.rev_parse(commit)
                # a bare tree id carries no path: give it the root's, as a commit's tree has
                tree = obj.tree if obj.type == "commit" else gitpython.Tree(self._repo, obj.binsha, _TREE, "")
                return (tree / path).data_stream.read()
            except (KeyError, ValueError, gitpython.BadName, gitpython.BadObject) as e:
                raise GitError(f"{commit[:12]}:{path}: not in the repository ({type(e).__name__})") from None

    def read_text(self, commit: str, paths: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for p in paths:
            try:
                out[p] = self.read(commit, p).decode("utf-8")
            except UnicodeDecodeError:
                raise GitError(f"{p}: mutable files must be UTF-8 text") from None
        return out

    def changed_paths(self, a: str, b: str) -> list[str]:
        """The paths whose content or mode differs between two commits or trees (added and removed ones
        too), as `git diff-tree -r --name-only --no-renames` lists them; compared in-process, subtree
        by subtree, so unchanged folders are never read."""
        with self._odb_lock:
            out: list[str] = []
            self._diff(self._tree_id(a), self._tree_id(b), "", out)
            return out

    def _diff(self, a: bytes | None, b: bytes | None, prefix: str, out: list[str]) -> None:
        ea, eb = self._entries(a), self._entries(b)
        for name, _ in _git_order({**ea, **eb}):
            x, y = ea.get(name), eb.get(name)
            if x == y:
                continue
            x_tree, y_tree = x is not None and x[1] == _TREE, y is not None and y[1] == _TREE
            if x_tree or y_tree:  # a folder on either side: what is under it; a file replaced by a folder (or back) too
                if (x is not None and not x_tree) or (y is not None and not y_tree):
                    out.append(f"{prefix}{name}")
                self._diff(x[0] if x_tree else None, y[0] if y_tree else None, f"{prefix}{name}/", out)  # type: ignore[index]
            else:
                out.append(f"{prefix}{name}")

    def diff(self, a: str, b: str, paths: list[str] | None = None) -> str:
        return self.git("diff", a, b, "--", *(paths or [])).stdout.decode(errors="replace")

    def merge_base(self, a: str, b: str) -> str | None:
        proc = self.git("merge-base", a, b, check=False)
        return proc.stdout.decode().strip() or None

    def is_ancestor(self, a: str, b: str) -> bool:
        return self.git("merge-base", "--is-ancestor", a, b, check=False).returncode == 0

    # -- writing objects (never the index, worktree or HEAD) ---------------------------------
    def write_tree(self, base: str, files: dict[str, str | bytes]) -> str:
        """A tree: base's tree (base a commit or a tree) with `files` written over it.

        Objects are written by GitPython into the object database directly (no index, no
        process per object): breeding a child costs no `git` process for its tree."""
        with self._odb_lock:
            obj = self._repo.rev_parse(base)
            root = (obj.tree if obj.type == "commit" else obj).binsha
            data = {path: content.encode() if isinstance(content, str) else content for path, content in files.items()}
            return self._write_subtree(root, data).hex()

    def _write_subtree(self, tree: bytes | None, changes: dict[str, bytes]) -> bytes:
        """Tree `tree` (None: empty) with `changes` (paths relative to it) written over it; returns its id."""
        entries = self._entries(tree)
        below: dict[str, dict[str, bytes]] = {}
        for path, blob in changes.items():
            head, _, rest = path.partition("/")
            if rest:
                below.setdefault(head, {})[rest] = blob
            else:
                mode = entries.get(head, (b"", 0o100644))[1]  # a file keeps its mode (executable, link)
                entries[head] = (self._store(b"blob", blob), mode if mode != _TREE else 0o100644)
        for head, sub in below.items():
            old = entries.get(head)
            entries[head] = (self._write_subtree(old[0] if old and old[1] == _TREE else None, sub), _TREE)
        # git's order: a tree sorts as if its name ended in "/"
        ordered = [(sha, mode, name) for name, (sha, mode) in _git_order(entries)]
        buf = io.BytesIO()
        tree_to_stream(ordered, buf.write)
        return self._store(b"tree", buf.getvalue())

    def _store(self, kind: bytes, data: bytes) -> bytes:
        return self._repo.odb.store(IStream(kind, len(data), io.BytesIO(data))).binsha

    def commit_files(self, base: str, files: dict[str, str | bytes], message: str, parents: list[str] | None = None) -> str:
        """A new commit: base's tree with `files` replaced; parents default to [base]."""
        return self.commit_tree(self.write_tree(base, files), parents if parents is not None else [base], message)

    def commit_tree(self, tree: str, parents: list[str], message: str) -> str:
        args = ["commit-tree", tree]
        for p in parents:
            args += ["-p", p]
        return self.out(*args, input=message.encode())

    def merge_tree(self, a: str, b: str) -> MergeResult:
        """3-way merge of two commits at their merge base, without a worktree."""
        proc = self.git("merge-tree", "--write-tree", "--name-only", "--no-messages", "-z", a, b, check=False)
        if proc.returncode not in (0, 1):
            raise GitError(f"git merge-tree {a[:8]} {b[:8]}: {proc.stderr.decode(errors='replace').strip()}")
        parts = [x for x in proc.stdout.decode(errors="surrogateescape").split("\0") if x]
        return MergeResult(tree=parts[0].strip(), conflicts=tuple(dict.fromkeys(parts[1:])))

    # -- refs ---------------------------------------------------------------------------------
    def ref(self, name: str) -> str | None:
        proc = self.git("rev-parse", "--verify", "--quiet", name, check=False)
        return proc.stdout.decode().strip() or None

    def set_ref(self, name: str, new: str, old: str | None = None, reason: str = "evo") -> None:
        """Atomic update; with `old`, only if the ref still points there (compare-and-swap)."""
        args = ["update-ref", "-m", reason, name, new]
        if old is not None:
            args.append(old)
        self.git(*args)

    def refs(self, prefix: str) -> dict[str, str]:
        raw = self.out("for-each-ref", "--format=%(refname) %(objectname)", prefix)
        return dict(line.split(" ", 1) for line in raw.splitlines() if line)  # type: ignore[misc]

    def pack_refs(self, prefix: str, threshold: int) -> bool:
        """`git pack-refs --all` when more than `threshold` loose refs lie under `prefix` (a folder of refs,
        `refs/evo/<study>/c`); whether it packed. Listing 100,000 loose refs read 100,000 files (1.5 s at
        load 4); packed they are one file (0.17 s). Git packs the same way in `git gc`: every ref keeps
        its value, a concurrent update is safe (each loose ref is removed only if it still holds what was
        packed), and a kill -9 mid-pack at worst leaves `packed-refs.lock`, which blocks ref deletions
        (git names the file to remove) but not the creations and updates a search makes. Best effort: a
        pack that fails (that stale lock, a read-only folder) changes nothing and is not an error."""
        folder = self.git_dir / prefix
        try:
            with os.scandir(folder) as entries:  # the files backend's loose refs: a directory listing, no git process
                loose = sum(1 for _ in entries)
        except OSError:
            return False  # no such folder: nothing loose
        if loose <= threshold:
            return False
        return self.git("pack-refs", "--all", "--prune", check=False).returncode == 0

    def checked_out_branches(self) -> set[str]:
        raw = self.out("worktree", "list", "--porcelain")
        return {line.split(" ", 1)[1] for line in raw.splitlines() if line.startswith("branch ")}

    # -- run directories ------------------------------------------------------------------------
    def export(self, commit: str, dest: Path) -> None:
        """Write the commit's files into dest (a fresh folder outside the repository)."""
        dest.mkdir(parents=True, exist_ok=True)
        export_tree(self.archive(commit), dest)

    def archive(self, commit: str) -> bytes:
        return self.git("archive", "--format=tar", commit).stdout


_TREE = 0o40000


def _git_order(entries: dict[str, tuple[bytes, int]]) -> list[tuple[str, tuple[bytes, int]]]:
    """Tree entries in git's order: a folder sorts as if its name ended in '/'."""
    return sorted(entries.items(), key=lambda e: e[0].encode("utf-8", "surrogateescape") + (b"/" if e[1][1] == _TREE else b""))


def export_tree(tar_bytes: bytes, dest: Path) -> None:
    """Unpack a `git archive` tarball (also used on remote workers, which have no repository)."""
    import io

    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tf:
        tf.extractall(dest, filter="data")


def matches(path: str, globs: tuple[str, ...] | list[str]) -> bool:
    return any(fnmatch.fnmatchcase(path, g) for g in globs)


def check_ref_name(name: str) -> bool:
    return subprocess.run(["git", "check-ref-format", name], capture_output=True).returncode == 0


def merge_file(base: str, ours: str, theirs: str, favor: str | None = None, diff3: bool = False) -> tuple[str, bool]:
    """3-way merge of three texts; favor='ours'|'theirs' settles each conflict hunk that way;
    diff3 also shows the base's side of each conflict (`||||||| base`)."""
    with tempfile.TemporaryDirectory(prefix="evo-merge-") as tmp:
        paths = []
        for name, text in (("ours", ours), ("base", base), ("theirs", theirs)):
            f = Path(tmp) / name
            f.write_text(text, encoding="utf-8")
            paths.append(str(f))
        args = ["merge-file", "-p", "-L", "a", "-L", "base", "-L", "b"]
        if favor:
            args.append(f"--{favor}")
        if diff3:
            args.append("--diff3")
        proc = subprocess.run(["git", *args, *paths], capture_output=True)
    if proc.returncode < 0 or proc.returncode > 127:
        raise GitError(f"git merge-file: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout.decode("utf-8", errors="replace"), proc.returncode == 0
