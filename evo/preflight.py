"""Before a study exists: the checks that refuse a config which could only waste runs, and the setup.

Everything here runs before the archive is created, so a refused config leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import shlex
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path, PurePosixPath

from evo.config import Config
from evo.errors import ConfigError, EvoError
from evo.executors.base import Job, RunTemplate, python_command
from evo.gitrepo import GitRepo, check_ref_name, matches
from evo.runner import network_isolation_available

_SHELL_BUILTINS = ("cd", "exec", "env", "export", "source", ".", "exit", "set", "ulimit", "umask", "eval", "test", "[", ":",
                   "command", "trap", "unset")


def check(cfg: Config, repo: GitRepo) -> None:
    """Refuse, with one line naming the key, what would make every run fail."""
    t, src = cfg.target, cfg.source
    if not check_ref_name(f"refs/heads/evo/{cfg.study.name}/main"):
        raise ConfigError(f"{src}: [study] name = {cfg.study.name!r}: not usable in a git ref name")
    check_command(cfg, t.run, "run")
    if t.setup:
        check_command(cfg, t.setup, "setup")
    if t.no_network and cfg.executor.kind == "local" and not network_isolation_available():
        raise ConfigError(f"{src}: [target] no_network = true: `unshare --net` does not work here (it needs user namespaces or root)")
    head = repo.head()
    paths = repo.match(head, t.mutable)
    if not paths:
        raise ConfigError(f"{src}: [target] mutable = {list(t.mutable)}: matches no file in {repo.path} at {head[:8]}")
    for path in paths:  # operators edit text: a binary file would fail after the baseline ran
        try:
            text = repo.read(head, path).decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{src}: [target] mutable = {list(t.mutable)}: {path} is not UTF-8 text (mutable files are edited as text)") from None
        if text.startswith(_LFS_POINTER):
            raise ConfigError(f"{src}: [target] mutable = {list(t.mutable)}: {path} is a Git LFS pointer, not the file's content "
                              "(evo edits and exports what git stores: mutable files cannot be in LFS)")
    for path, target in _links(repo, head):  # an export refuses these: every run would crash
        if target.startswith("/") or _escapes(path, target):
            raise ConfigError(f"{src}: [target] repo = {repo.path}: the symlink {path} -> {target} points outside the repository; "
                              "runs get an export of the commit, where it would dangle (commit the file itself, or point inside)")


def warnings(repo: GitRepo) -> list[str]:
    """What about the repository a user should know before a study starts from its HEAD."""
    out = []
    dirty = repo.out("status", "--porcelain", "--untracked-files=no")
    if dirty:
        out.append(f"the working tree has uncommitted changes ({len(dirty.splitlines())} file(s)): the study starts from the commit "
                   f"{repo.head()[:8]} without them")
    for line in repo.out("ls-tree", "-r", repo.head()).splitlines():
        meta, path = line.split("\t", 1)
        if meta.startswith("160000"):
            out.append(f"{path} is a submodule: runs get an export of this repository without its files")
    return out


_LFS_POINTER = "version https://git-lfs.github.com/spec/v1"


def _links(repo: GitRepo, commit: str) -> list[tuple[str, str]]:
    """(path, target) of every symlink in the commit."""
    found = []
    for line in repo.out("ls-tree", "-r", commit).splitlines():
        meta, path = line.split("\t", 1)
        if meta.startswith("120000"):
            found.append((path, repo.read(commit, path).decode("utf-8", "replace")))
    return found


def _escapes(path: str, target: str) -> bool:
    """Whether `target`, relative to the link's folder, leaves the repository."""
    depth = 0
    for part in [*PurePosixPath(path).parent.parts, *PurePosixPath(target).parts]:
        depth += -1 if part == ".." else 0 if part in (".", "") else 1
        if depth < 0:
            return True
    return False


def check_command(cfg: Config, cmd: str, key: str) -> None:
    try:
        words = shlex.split(python_command(cmd))
    except ValueError as e:
        raise ConfigError(f"{cfg.source}: [target] {key} = {cmd!r}: {e}") from None
    first = next((w for w in words if "=" not in w), "")
    relative = "/" in first and not first.startswith("/")  # ./train.sh: a file of the checkout, not of evo's cwd
    if first and not relative and not any(c in first for c in "$`;|&(") and shutil.which(first) is None and first not in _SHELL_BUILTINS:
        raise ConfigError(f"{cfg.source}: [target] {key} = {cmd!r}: command '{first}' not found")


def fingerprint(repo: GitRepo, commit: str, mutable: tuple[str, ...]) -> str:
    """A hash of the protected files: runs made under other rules (another evaluator) are not comparable."""
    h = hashlib.sha256()
    for line in repo.out("ls-tree", "-r", commit).splitlines():
        meta, path = line.split("\t", 1)
        if not matches(path, mutable):
            h.update(f"{path} {meta.split()[2]}\n".encode())
    return h.hexdigest()[:16]


def setup(cfg: Config, repo: GitRepo, base: str, template: RunTemplate, log: Path) -> None:
    """Run `[target] setup` once, in a checkout of the baseline, with the environment a run gets."""
    from evo.executors.local import run_job  # the same run settings a job gets, built in one place

    cmd = cfg.target.setup
    if not cmd:
        return
    workdir = Path(tempfile.mkdtemp(prefix="evo-setup-"))
    # the user's own command, not a candidate's: it may download data, so no network namespace
    spec = replace(template, command=python_command(cmd), timeout=max(3600.0, cfg.target.timeout), metric="__none__",
                   metric_regex="", progress_regex="", no_network=False, memory_limit_mb=0)
    try:
        if template.cache_dir:
            Path(template.cache_dir).mkdir(parents=True, exist_ok=True)  # $EVO_CACHE exists for setup to write in
        repo.export(base, workdir)
        res = run_job(spec, Job(index=0, commit=base, seed=0, role="setup", log_path=log), workdir, {}, None)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if res.returncode != 0:
        rc = res.returncode
        why = res.reason if rc is None or res.outcome == "timeout" else f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}"
        raise EvoError(f"{cfg.source}: [target] setup = {cmd!r}: failed ({why}); see {log}")
