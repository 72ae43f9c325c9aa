"""The git seam: individuals are commits, made and merged without a checkout.

Nothing here touches the user's working tree, index or HEAD: trees are written straight into the
object database (no index), merges use `git merge-tree --write-tree`, runs get a `git archive` export. GitPython
opens and validates the repository; plumbing goes through the git binary, which is faster and
gives exact control over the environment and exit codes, except on the path every child takes:
its blobs, trees and commit are written as loose objects and its new candidate ref as a loose ref
in-process (what git writes, byte for byte; a git process each was most of a child's cost on
quick targets). Repositories that are not plain SHA-1 with files-backend refs use git for those too.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import hashlib
import io
import os
import re
import subprocess
import tarfile
import tempfile
import threading
import time
import zlib
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
        self._objects = _ObjectCache(_CACHE_BYTES)  # object id -> (kind, bytes): objects never change
        self._trees: dict[str, bytes] = {}  # commit or tree id (hex) -> its root tree's id
        self._parsed: dict[bytes, dict[str, tuple[bytes, int]]] = {}  # tree id -> its entries
        if self.rev("HEAD", missing_ok=True) is None:
            raise GitError(f"{p}: the repository has no commits yet")
        self._common = Path(self.out("rev-parse", "--path-format=absolute", "--git-common-dir"))
        cfg = self._repo.config_reader()  # parses every config file: once
        self._plain = self._plain_format(cfg)
        self._log_all = str(cfg.get_value("core", "logallrefupdates", "")).lower() == "always"

    # -- plumbing ---------------------------------------------------------------------------
    def git(self, *args: str, input: bytes | None = None, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        full_env = _environment(env)
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
        return self._common

    def _plain_format(self, cfg: gitpython.config.GitConfigParser) -> bool:
        """SHA-1 objects in the common folder's objects/ and refs as files: what the in-process writers
        write. Anything else (SHA-256, reftable, a group-shared repository, an object folder moved by
        the environment) goes through git."""
        if str(cfg.get_value("extensions", "objectformat", "sha1")).lower() != "sha1":
            return False
        if str(cfg.get_value("extensions", "refstorage", "files")).lower() != "files":
            return False
        if str(cfg.get_value("core", "sharedrepository", "false")).lower() not in ("false", "umask", "0"):
            return False  # group-shared: git sets the group's permissions on what it writes
        if os.environ.get("GIT_OBJECT_DIRECTORY") or os.environ.get("GIT_DIR") or os.environ.get("GIT_COMMON_DIR"):
            return False
        return (self._common / "objects").is_dir() and (self._common / "refs").is_dir()

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
        """The root tree of a commit or tree named by `rev`. An object id is resolved from the object
        itself and remembered (a commit's tree never changes); any other name goes to GitPython."""
        known = self._trees.get(rev)
        if known is not None:
            return known
        if not _HEX40.fullmatch(rev):
            obj = self._repo.rev_parse(rev)
            return (obj.tree if obj.type == "commit" else obj).binsha
        kind, data = self._object(bytes.fromhex(rev))
        if kind == b"commit" and data.startswith(b"tree "):
            tree = bytes.fromhex(data[5:45].decode())
        elif kind == b"tree":
            tree = bytes.fromhex(rev)
        else:
            raise ValueError(f"{rev}: a {kind.decode()}, not a commit or tree")
        if len(self._trees) >= 5 * _PARSED_TREES:
            self._trees.clear()
        self._trees[rev] = tree
        return tree

    def _object(self, sha: bytes) -> tuple[bytes, bytes]:
        """(kind, content) of an object: a loose one read and inflated in-process, a packed one through
        GitPython's `git cat-file --batch`; kept in a bounded cache. Breeding reads the same parent
        trees and files again and again, and each round trip to cat-file cost ~0.3 ms."""
        hit = self._objects.get(sha)
        if hit is not None:
            return hit
        obj = None
        if self._plain:
            hexsha = sha.hex()
            try:
                raw = zlib.decompress((self._common / "objects" / hexsha[:2] / hexsha[2:]).read_bytes())
                header, _, data = raw.partition(b"\0")
                kind, _, size = header.partition(b" ")
                if size.isdigit() and int(size) == len(data):
                    obj = (kind, data)
            except (OSError, zlib.error):
                pass  # not loose (packed, or an alternate's): git knows where it is
        if obj is None:
            stream = self._repo.odb.stream(sha)
            obj = (stream.type, stream.read())
        self._objects.put(sha, obj)
        return obj

    def _entries(self, tree: bytes | None) -> dict[str, tuple[bytes, int]]:
        """A tree's entries, name -> (id, mode); a fresh dict the caller may change. Parsed once per
        tree (GitPython's parser checks every name, ~0.1 ms a tree, and a child reads several)."""
        if tree is None:
            return {}
        parsed = self._parsed.get(tree)
        if parsed is None:
            if len(self._parsed) >= _PARSED_TREES:
                self._parsed.clear()
            parsed = self._parsed[tree] = {name: (sha, mode) for sha, mode, name in tree_entries_from_data(self._object(tree)[1])}
        return dict(parsed)

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
        """A file's bytes at a commit (or tree), read in-process (see `_object`): no process per read,
        which was most of the cost of breeding on small targets."""
        with self._odb_lock:
            try:
                sha, mode = self._lookup(self._tree_id(commit), path)
                if mode == _TREE:
                    raise KeyError(f"{path} is a folder")
                return self._object(sha)[1]
            except (KeyError, ValueError, gitpython.BadName, gitpython.BadObject) as e:
                raise GitError(f"{commit[:12]}:{path}: not in the repository ({type(e).__name__})") from None

    def _lookup(self, tree: bytes, path: str) -> tuple[bytes, int]:
        """(id, mode) of the entry at `path` under `tree`; KeyError when there is none."""
        sha, mode = tree, _TREE
        for part in path.strip("/").split("/"):
            if mode != _TREE:
                raise KeyError(part)
            sha, mode = self._entries(sha)[part]
        return sha, mode

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

    def patch(self, a: str, b: str) -> str:
        """The patch from commit `a` to `b`, as `git diff --full-index a b` prints it: made in-process
        when every change is an edit of a text file (same mode, each side ending in a newline),
        else by git. A breeding step ran `git diff` for each child's diff.patch (a process, and
        the environment copied for it, a tenth of the controller's time per child at 64 slots)."""
        with self._odb_lock:
            ta, tb = self._tree_id(a), self._tree_id(b)
            paths: list[str] = []
            self._diff(ta, tb, "", paths)
            sides = []
            for path in paths:
                try:
                    (x, mx), (y, my) = self._lookup(ta, path), self._lookup(tb, path)
                except KeyError:
                    break  # added or removed: git's own headers
                old, new = self._object(x)[1], self._object(y)[1]
                if mx != my or mx not in (0o100644, 0o100755) or not (_plain_text(old) and _plain_text(new)):
                    break
                sides.append((path, x, y, mx, old, new))
            else:
                return "".join(_file_patch(*side) for side in sides)
        return self.git("diff", "--full-index", a, b).stdout.decode(errors="replace")

    def merge_base(self, a: str, b: str) -> str | None:
        proc = self.git("merge-base", a, b, check=False)
        return proc.stdout.decode().strip() or None

    def is_ancestor(self, a: str, b: str) -> bool:
        return self.git("merge-base", "--is-ancestor", a, b, check=False).returncode == 0

    # -- writing objects (never the index, worktree or HEAD) ---------------------------------
    def write_tree(self, base: str, files: dict[str, str | bytes]) -> str:
        """A tree: base's tree (base a commit or a tree) with `files` written over it.

        Objects are written into the object database directly (`_store`: no index, no process per
        object): breeding a child costs no `git` process for its tree."""
        with self._odb_lock:
            root = self._tree_id(base)
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
        """Write one object; its binary id. A loose object as git writes it (zlib of "<kind> <size>\\0" +
        data, at objects/xx/yyyy..., read-only), through a temporary file renamed into place, so a kill
        leaves the object whole or absent (and at worst a `tmp_obj_*` file, which `git gc` removes)."""
        if not self._plain:
            return self._repo.odb.store(IStream(kind, len(data), io.BytesIO(data))).binsha
        raw = b"%s %d\0" % (kind, len(data)) + data
        sha = hashlib.sha1(raw).digest()
        hexsha = sha.hex()
        folder = self._common / "objects" / hexsha[:2]
        path = folder / hexsha[2:]
        if not path.exists():
            _write_atomically(folder, path, zlib.compress(raw, 1), "tmp_obj_", 0o444, sync=False)
        self._objects.put(sha, (kind, data))
        return sha

    def commit_files(self, base: str, files: dict[str, str | bytes], message: str, parents: list[str] | None = None) -> str:
        """A new commit: base's tree with `files` replaced; parents default to [base]."""
        return self.commit_tree(self.write_tree(base, files), parents if parents is not None else [base], message)

    def commit_tree(self, tree: str, parents: list[str], message: str) -> str:
        """A commit object, as `git commit-tree` writes it with evo's identity: written in-process, or by
        git when a date in the environment is in a form other than git's own `<seconds> <+hhmm>`."""
        stamps = [_git_date(os.environ.get(var)) for var in ("GIT_AUTHOR_DATE", "GIT_COMMITTER_DATE")]
        if not self._plain or None in stamps or not all(_HEX40.fullmatch(x) for x in (tree, *parents)):
            args = ["commit-tree", tree]
            for p in parents:
                args += ["-p", p]
            return self.out(*args, input=message.encode())
        author, committer = stamps
        lines = [f"tree {tree}", *(f"parent {p}" for p in parents),
                 f"author {_IDENTITY['GIT_AUTHOR_NAME']} <{_IDENTITY['GIT_AUTHOR_EMAIL']}> {author}",
                 f"committer {_IDENTITY['GIT_COMMITTER_NAME']} <{_IDENTITY['GIT_COMMITTER_EMAIL']}> {committer}", "", ""]
        return self._store(b"commit", "\n".join(lines).encode() + message.encode()).hex()

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
        if old is None and self._loose_ref(name, new):
            return
        args = ["update-ref", "-m", reason, name, new]
        if old is not None:
            args.append(old)
        self.git(*args)

    def _loose_ref(self, name: str, new: str) -> bool:
        """Set a ref under refs/evo/ as a loose ref (the files backend's form; a packed entry of the same
        name is shadowed, as `git update-ref` leaves it); whether it was written. The id is written and
        synced in a file under the git folder's evo/ and renamed over the ref: a kill leaves the ref
        old or new, never half-written and never locked (git's `<ref>.lock`, taken in-process, would
        stay behind a kill -9 and stop every later update; a git process, by contrast, outlives the
        kill and finishes). Only evo writes its refs, under the study's lock. Git keeps no reflog
        there; a ref that has one, `core.logAllRefUpdates = always` or a name outside what evo makes
        are left to git."""
        if not (self._plain and not self._log_all and _HEX40.fullmatch(new) and evo_ref_name(name)):
            return False
        path = self._common / name
        if (self._common / "logs" / name).exists():
            return False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            return False  # a file where a folder of refs should be: git says what is wrong
        _write_atomically(self._common / "evo", path, f"{new}\n".encode(), "tmp_ref_", 0o644, sync=True)
        return True

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
_CACHE_BYTES = 64 << 20  # objects kept in memory per repository: every tree and file of a small target
_PARSED_TREES = 20_000  # parsed trees kept (then forgotten all at once)


class _ObjectCache:
    """Least recently used objects up to a total size; one larger than a quarter of it is not kept.
    Locked on its own: a commit object is stored outside the repository's object lock."""

    def __init__(self, limit: int) -> None:
        self.limit, self.size = limit, 0
        self._items: dict[bytes, tuple[bytes, bytes]] = {}  # insertion order = recency
        self._lock = threading.Lock()

    def get(self, sha: bytes) -> tuple[bytes, bytes] | None:
        with self._lock:
            obj = self._items.pop(sha, None)
            if obj is not None:
                self._items[sha] = obj
            return obj

    def put(self, sha: bytes, obj: tuple[bytes, bytes]) -> None:
        with self._lock:
            if sha in self._items or len(obj[1]) > self.limit // 4:
                return
            self._items[sha] = obj
            self.size += len(obj[1])
            while self.size > self.limit:
                self.size -= len(self._items.pop(next(iter(self._items)))[1])


def _plain_text(data: bytes) -> bool:
    """A file git would diff as text, line by line, with no end-of-file marker to print."""
    return (not data or data.endswith(b"\n")) and b"\0" not in data[:8000]


def _file_patch(path: str, x: bytes, y: bytes, mode: int, old: bytes, new: bytes) -> str:
    """One file's part of `git diff --full-index`: the header, then hunks with 3 lines of context, each
    headed by the nearest line above it that starts with a letter, `_` or `$` (git's default rule)."""
    a, b = old.split(b"\n")[:-1], new.split(b"\n")[:-1]
    out = [f"diff --git a/{path} b/{path}\nindex {x.hex()}..{y.hex()} {mode:o}\n--- a/{path}\n+++ b/{path}\n".encode()]
    for group in difflib.SequenceMatcher(None, a, b, autojunk=False).get_grouped_opcodes(3):
        i1, i2, j1, j2 = group[0][1], group[-1][2], group[0][3], group[-1][4]
        func = next((line[:80].rstrip() for line in reversed(a[:i1]) if line[:1].isalpha() or line[:1] in (b"_", b"$")), b"")
        out.append(b"@@ -%s +%s @@%s\n" % (_range(i1, i2), _range(j1, j2), b" " + func if func else b""))
        for tag, p1, p2, q1, q2 in group:
            if tag == "equal":
                out += [b" " + line + b"\n" for line in a[p1:p2]]
                continue
            out += [b"-" + line + b"\n" for line in a[p1:p2]]
            out += [b"+" + line + b"\n" for line in b[q1:q2]]
    return b"".join(out).decode(errors="replace")


def _range(start: int, stop: int) -> bytes:
    """A hunk's line range as git writes it: `start,count`, `start` alone for one line, the line before for none."""
    n = stop - start
    return b"%d" % (start + 1) if n == 1 else b"%d,%d" % (start + (n > 0), n)


def _environment(extra: dict[str, str] | None) -> dict[bytes, bytes] | dict[str, str]:
    """A git process's environment: evo's identity over the caller's environment. Copied as bytes
    where the platform keeps it so (no decoding and re-encoding of every variable per process)."""
    over = {**_IDENTITY, "GIT_TERMINAL_PROMPT": "0", **(extra or {})}
    if os.supports_bytes_environ:
        return {**os.environb, **{os.fsencode(k): os.fsencode(v) for k, v in over.items()}}
    return {**os.environ, **over}


def _git_order(entries: dict[str, tuple[bytes, int]]) -> list[tuple[str, tuple[bytes, int]]]:
    """Tree entries in git's order: a folder sorts as if its name ended in '/'."""
    return sorted(entries.items(), key=lambda e: e[0].encode("utf-8", "surrogateescape") + (b"/" if e[1][1] == _TREE else b""))


_HEX40 = re.compile(r"[0-9a-f]{40}")
_GIT_DATE = re.compile(r"@?(\d+) ([+-]\d{4})")
_REF_OK = re.compile(r"refs/evo/[A-Za-z0-9_./-]+")


def _git_date(value: str | None) -> str | None:
    """`<seconds> <+hhmm>` for a commit: now in the local zone when unset, the value when git's own
    raw form, None for any other form (left to git to parse)."""
    if not value:
        now = time.time()
        off = time.localtime(now).tm_gmtoff // 60
        return f"{int(now)} {'-' if off < 0 else '+'}{abs(off) // 60:02d}{abs(off) % 60:02d}"
    m = _GIT_DATE.fullmatch(value.strip())
    return f"{m.group(1)} {m.group(2)}" if m else None


def evo_ref_name(name: str) -> bool:
    """A name under refs/evo/ of the kind evo makes (letters, digits, `_ . / -`) that git's rules
    accept, checked without a process; False means: ask git."""
    if not _REF_OK.fullmatch(name):
        return False
    parts = name.split("/")
    return all(p and not p.startswith(".") and not p.endswith((".lock", ".")) for p in parts) and ".." not in name


def _write_atomically(folder: Path, path: Path, data: bytes, prefix: str, mode: int, sync: bool) -> None:
    """`data` at `path` whole or not at all: written in `folder` (the same file system), renamed into place."""
    folder.mkdir(exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=prefix, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)  # the same bytes if another writer got there first
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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
