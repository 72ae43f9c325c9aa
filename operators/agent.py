"""Mutation "agent": a coding-agent CLI edits a scratch copy of the parent's mutable files.

The command runs through /bin/sh in a fresh temporary directory holding the parent's files
(plus read-only context files), with the prompt in a file (`{prompt}` in the command, and
$EVO_PROMPT_FILE), the environment of an untrusted run (`evo.runner.run_env`: the base set and
`env_allow`, secret-looking names only when named exactly), and a timeout that kills its whole
process group. EVERY file it changed or created becomes part of the Proposal, protected ones
included: the search loop, not this operator, knows the mutable globs, and rejects a child that
touches anything else (outcome "rejected", "touches protected file(s): ..."), so an agent's edit
outside the mutable files is never silently dropped.

    agent = AgentMutation(AgentSettings(command='my-agent --prompt-file {prompt}', timeout=900,
                                        env_allow=("ANTHROPIC_API_KEY",)))
"""

from __future__ import annotations

import difflib
import os
import random
import shlex
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath
from typing import Any

from evo.runner import kill_group, run_env

from .base import Context, OperatorError, Parent, Proposal
from .llm import one_line, prompt_values, render_prompt

__all__ = ["AgentMutation", "AgentSettings"]

DESCRIPTION_FILE = "EVO_DESCRIPTION"
TAIL = 4000  # characters of stdout/stderr kept as artifacts
KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL of the process group
IGNORED_DIRS = {".git", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", "node_modules", ".venv"}  # tool caches, never part of a child


@dataclass(frozen=True)
class AgentSettings:
    """The `[agent]` section of the config."""

    command: str = ""  # shell command; {prompt} and {workdir} are replaced by quoted paths
    timeout: float = 900.0  # seconds; then the agent's process group is killed
    env_allow: tuple[str, ...] = ()  # extra variables passed through (names, or globs that never match secret-looking names)

    def __post_init__(self) -> None:
        if not self.command.strip():
            raise ValueError("[agent] command is not set (e.g. command = \"my-agent --prompt-file {prompt}\")")
        if not self.timeout > 0:
            raise ValueError("[agent] timeout must be > 0")
        if isinstance(self.env_allow, str):
            raise ValueError("[agent] env_allow must be a list of variable names")
        object.__setattr__(self, "env_allow", tuple(self.env_allow))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AgentSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"[agent] unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)


def _safe_relative(path: str) -> PurePosixPath:
    rel = PurePosixPath(path)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise OperatorError(f"unsafe file path for the agent's directory: {path!r}")
    return rel


def _tail(path: Path) -> str:
    """The last TAIL characters of a (possibly huge) output file."""
    with open(path, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - TAIL * 4))
        return f.read().decode("utf-8", errors="replace")[-TAIL:]


class AgentMutation:
    """Mutation "agent". `extra_files` (path -> text) are written read-only next to the parent's
    files as context. The proposal holds every file the agent changed or created (context files
    included; only DESCRIPTION_FILE and IGNORED_DIRS are left out), so the search loop's
    protected-file check sees, and rejects, any change outside the mutable globs."""

    name = "agent"

    def __init__(self, settings: AgentSettings, extra_files: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.extra_files = dict(extra_files or {})

    def prompt(self, parent: Parent, context: Context) -> str:
        extra = ""
        if self.extra_files:
            extra = "Read-only context (changing it rejects your edit): " + ", ".join(f"`{p}`" for p in sorted(self.extra_files)) + ".\n"
        return render_prompt("agent", **prompt_values(parent, context), extra=extra)

    def _env(self, prompt_file: Path, workdir: Path) -> dict[str, str]:
        """The one scrubber evo uses for untrusted processes (runs and agents alike)."""
        return run_env(self.settings.env_allow, extra={
            "EVO_PROMPT_FILE": str(prompt_file), "EVO_WORKDIR": str(workdir), "EVO_DESCRIPTION_FILE": str(workdir / DESCRIPTION_FILE),
        })

    def mutate(self, parent: Parent, rng: random.Random, context: Context) -> Proposal:
        if not parent.files:
            raise OperatorError("the parent has no mutable files to edit")
        prompt = self.prompt(parent, context)
        with tempfile.TemporaryDirectory(prefix="evo-agent-", ignore_cleanup_errors=True) as tmp:
            root = Path(tmp)
            workdir = root / "work"
            workdir.mkdir()
            for path, text in {**self.extra_files, **parent.files}.items():
                target = workdir / _safe_relative(path)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8", newline="")
                if path not in parent.files:
                    target.chmod(0o444)
            prompt_file = root / "prompt.md"
            prompt_file.write_text(prompt, encoding="utf-8")
            command = self.settings.command.replace("{prompt}", shlex.quote(str(prompt_file))).replace(
                "{workdir}", shlex.quote(str(workdir))
            )
            artifacts = {"prompt": prompt, "command": command}
            stdout_file, stderr_file = root / "stdout.txt", root / "stderr.txt"
            with open(stdout_file, "wb") as out, open(stderr_file, "wb") as err:
                process = subprocess.Popen(
                    ["/bin/sh", "-c", command],
                    cwd=workdir,
                    env=self._env(prompt_file, workdir),
                    stdin=subprocess.DEVNULL,
                    stdout=out,  # files, not pipes: a grandchild holding a pipe cannot hang us
                    stderr=err,
                    start_new_session=True,  # its own process group, killed as a whole
                )
                try:
                    status = process.wait(timeout=self.settings.timeout)
                    timed_out = False
                except subprocess.TimeoutExpired:
                    timed_out = True
                finally:
                    kill_group(process, grace=KILL_GRACE)  # also reaps children left behind by an agent that exited
            artifacts["stdout"], artifacts["stderr"] = _tail(stdout_file), _tail(stderr_file)
            if timed_out:
                raise OperatorError(f"agent timed out after {self.settings.timeout:g} s (process group killed)", artifacts)
            if status != 0:
                last = one_line(artifacts["stderr"].strip().splitlines()[-1]) if artifacts["stderr"].strip() else ""
                raise OperatorError(f"agent exited with status {status}" + (f": {last}" if last else ""), artifacts)
            changed = self._collect(workdir, parent)
            description_file = workdir / DESCRIPTION_FILE
            described = description_file.read_text(encoding="utf-8", errors="replace") if description_file.is_file() else ""
        if not changed:
            raise OperatorError("agent made no change", artifacts)
        before = {**self.extra_files, **parent.files}
        artifacts["diff"] = "".join(
            "".join(difflib.unified_diff(before.get(p, "").splitlines(True), changed[p].splitlines(True),
                                         f"a/{p}" if p in before else "/dev/null", f"b/{p}"))
            for p in sorted(changed)
        )
        description = _first_line(described) or _first_line(artifacts["stdout"]) or "agent edit"
        return Proposal(changed, description, artifacts)

    def _collect(self, workdir: Path, parent: Parent) -> dict[str, str]:
        """Every file the agent changed or created, by repo-relative path -> new text. A deleted
        or undecodable file is an error (a proposal holds full texts; it cannot delete)."""
        before = {**self.extra_files, **parent.files}
        changed: dict[str, str] = {}
        for path in before:
            if not (workdir / path).is_file():
                raise OperatorError(f"agent deleted {path} (deleting a file is not supported)")
        for dirpath, dirnames, filenames in os.walk(workdir):
            dirnames[:] = sorted(d for d in dirnames if d not in IGNORED_DIRS)
            for name in sorted(filenames):
                file = Path(dirpath) / name
                rel = file.relative_to(workdir).as_posix()
                if file.is_symlink():  # never read through it: it may point anywhere (~/.ssh, say)
                    raise OperatorError(f"agent left a symbolic link at {rel} (not supported)")
                if rel == DESCRIPTION_FILE or not file.is_file():
                    continue
                try:
                    new = file.read_bytes().decode("utf-8")
                except UnicodeDecodeError:
                    raise OperatorError(f"agent left {rel} not valid UTF-8") from None
                if new != before.get(rel):
                    changed[rel] = new
        return changed


def _first_line(text: str) -> str:
    return next((one_line(line) for line in text.splitlines() if line.strip()), "")
