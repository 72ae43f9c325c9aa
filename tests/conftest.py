"""Shared fixtures: real git repositories in temp dirs holding a tiny, fast target."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A target with a known optimum (X=3, Y=7, FLAG=True), progress lines and a seed-dependent
# offset, so every engine path (progress, pairing, pruning) has something real to read.
TARGET = '''\
import os
import time
X = 1.0  # distance from the optimum at 3.0
Y = 5  # integer knob, best at 7
FLAG = False  # worth +0.5
sleep_s = 0.0  # seconds per progress step (lower case: not a mutation target)
score = -(X - 3.0) ** 2 - 0.1 * (Y - 7) ** 2 + (0.5 if FLAG else 0.0)
seed = int(os.environ.get("EVO_SEED", "0"))
noise = NOISE * (((seed * 7919) % 101) / 50.0 - 1.0)
for i in range(1, 5):
    time.sleep(sleep_s)
    print(f"progress: {i / 4:.2f} score: {score + noise:.6f}", flush=True)
print("---")
print(f"score: {score + noise:.6f}")
'''


# Constants far apart (so crossovers merge cleanly), ten progress points (so the futility test
# has its checkpoints), a seed-dependent offset (so replicates differ).
INSPECT_TARGET = '''\
import os
import random
LR = 0.1
#
#
#
MOMENTUM = 0.5
#
#
#
WIDTH = 8
seed = int(os.environ.get("EVO_SEED", "0"))
rng = random.Random(seed)
score = 10 - (LR - 0.3) ** 2 * 20 - (MOMENTUM - 0.9) ** 2 * 5 - abs(WIDTH - 16) * 0.05 + rng.gauss(0, 0.05)
for i in range(1, 11):
    print(f"progress: {i / 10:.2f} score: {score * (0.5 + i / 20) + rng.gauss(0, 0.02):.4f}")
print(f"score: {score:.6f}")
'''


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout.strip()


def facts(study: object) -> dict:
    """Everything evo keeps about a study (labels as user attrs, the rest as system attrs): as evo reads it."""
    from evo.archive import read_facts

    return read_facts(study._storage, study._study_id)  # type: ignore[attr-defined]


def write_config(path: Path, repo: Path, storage: Path, **sections: dict[str, object]) -> Path:
    """A TOML config for the toy target; keyword sections override keys."""
    base: dict[str, dict[str, object]] = {
        "study": {"name": "toy", "storage": f"sqlite:///{storage}", "results": str(storage.parent / "results")},
        "target": {"repo": str(repo), "mutable": ["target.py"], "run": "{python} target.py", "time_budget": 1,
                   "timeout": 20, "metric": "score", "direction": "maximize"},
        "search": {"strategy": "greedy", "generations": 5},
        "sprt": {"enabled": False},
    }
    for sec, kv in sections.items():
        base.setdefault(sec, {}).update(kv)
    lines = []
    for sec, kv in base.items():
        lines.append(f"[{sec}]")
        for k, v in kv.items():
            if isinstance(v, bool):
                lines.append(f"{k} = {'true' if v else 'false'}")
            elif isinstance(v, (int, float)):
                lines.append(f"{k} = {v}")
            elif isinstance(v, list):
                lines.append(f"{k} = [{', '.join(repr(str(x)).replace(chr(39), chr(34)) for x in v)}]")
            else:
                lines.append(f"{k} = '{v}'")
    path.write_text("\n".join(lines) + "\n")
    return path


def inspect_repo(repo: Path) -> Path:
    """A committed repository holding INSPECT_TARGET (the inspection tests' lab)."""
    repo.mkdir()
    git(repo, "init", "-q", "-b", "master")
    (repo / "target.py").write_text(INSPECT_TARGET)
    (repo / "README.md").write_text("protected\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "init")
    return repo


@pytest.fixture
def make_repo(tmp_path: Path) -> Callable[..., Path]:
    """make_repo(noise=0.0, files={...}) -> a committed git repo holding target.py (+ files)."""

    def make(noise: float = 0.0, files: dict[str, str] | None = None, name: str = "repo") -> Path:
        repo = tmp_path / name
        repo.mkdir()
        git(repo, "init", "-q", "-b", "master")
        (repo / "target.py").write_text(TARGET.replace("NOISE", repr(noise)))
        (repo / "README.md").write_text("a protected file\n")
        for rel, text in (files or {}).items():
            p = repo / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(textwrap.dedent(text))
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", "init")
        return repo

    return make


def evo(*args: str, cwd: Path | None = None, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `evo` command line in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "evo", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


# -- PostgreSQL: the storage a Ray user shares between machines ---------------------------------------

PG_URL = os.environ.get("EVO_TEST_POSTGRES", "postgresql+psycopg://evo@127.0.0.1:5432/evo")


def postgres_or_skip() -> str:
    """The test server's URL; in CI (CI=true) its absence is a failure, elsewhere a skip with the reason."""
    import importlib.util

    from evo.archive import mask_url, open_storage
    from evo.errors import EvoError

    why = ""
    if importlib.util.find_spec("psycopg") is None:
        why = 'the PostgreSQL driver is not installed (pip install "psycopg[binary]")'
    else:
        try:
            open_storage(PG_URL)
        except EvoError as e:
            why = f"no PostgreSQL server at {mask_url(PG_URL)} ({e}); start one with .ci/postgres"
    if why:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the PostgreSQL test: {why}")
        print(f"skipped: {why}")
        pytest.skip(why)
    return PG_URL
