"""Bad input: every row of the table in docs/bad-input.md is a test, and every test is a row.

A row names a case (a function below that prepares the bad input), the exit code and the exact
line evo prints (`evo: error: ...`), or for a fault that happens while a candidate runs, the
trial's `outcome: reason`. Placeholders: <tmp> is the test's folder, <repo> the repository,
<head> its HEAD commit (8 digits); a message ending in `...` is a prefix (the rest comes from
a driver or the OS). Config-time errors must leave nothing behind: no storage file, no
results folder, no refs, no lock folder.

The cases run `evo.cli.main` in this process (fast); a few also run the real `python -m evo`
to show the same line comes out.
"""

from __future__ import annotations

import re
import tempfile
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest

from conftest import ROOT, TARGET, evo, git, write_config

DOC = ROOT / "docs" / "bad-input.md"


def doc_rows() -> dict[str, tuple[int, str]]:
    """case -> (exit code, message), from the table in docs/bad-input.md."""
    rows: dict[str, tuple[int, str]] = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 5 and cells[0].isdigit():
            case = cells[1].strip("`")
            assert case not in rows, f"{case} is in the table twice"
            message = re.match(r"`([^`]*)`", cells[4])  # the first code span; words after it are notes
            assert message, line
            rows[case] = (int(cells[3]), message[1].replace("\\|", "|"))
    return rows


# -- the cases ------------------------------------------------------------------------------------

@dataclass
class Case:
    """What a case function gives back: the command line, and for run-time faults how to read the result."""

    argv: list[str]
    runtime: bool = False  # the message is the baseline's (or #index's) trial `outcome: reason`
    index: int = 0
    check: Callable[[optuna.trial.FrozenTrial], None] | None = None  # more to check on that trial
    creates: bool = False  # the error comes after the study was opened (it may stay)
    api: Callable[[], int] | None = None  # run this (the Python API) instead of the command line


class Bench:
    """The test's folder: a toy repository and a config, to be spoiled by a case."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.repo = tmp / "repo"
        self.cfg = tmp / "evo.toml"

    def make_repo(self, files: dict[str, str | bytes] | None = None) -> Path:
        self.repo.mkdir()
        git(self.repo, "init", "-q", "-b", "master")
        (self.repo / "target.py").write_text(TARGET.replace("NOISE", "0.0"))
        (self.repo / "README.md").write_text("a protected file\n")
        for rel, content in (files or {}).items():
            p = self.repo / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                p.write_bytes(content)
            else:
                p.write_text(textwrap.dedent(content))
        git(self.repo, "add", "-A")
        git(self.repo, "commit", "-qm", "init")
        return self.repo

    def config(self, **sections: dict[str, Any]) -> list[str]:
        """A valid config (greedy, no SPRT, no children: only the baseline runs) with `sections` over it."""
        sections.setdefault("search", {}).setdefault("generations", 0)
        write_config(self.cfg, self.repo, self.tmp / "evo.db", **sections)
        return ["search", "--config", "evo.toml"]

    def spoil(self, old: str, new: str, **sections: dict[str, Any]) -> list[str]:
        """A valid config with one line replaced (for TOML a dict cannot write)."""
        argv = self.config(**sections)
        text = self.cfg.read_text()
        assert old in text, (old, text)
        self.cfg.write_text(text.replace(old, new, 1))
        return argv

    def target(self, code: str, check: Callable[[optuna.trial.FrozenTrial], None] | None = None, **target: Any) -> Case:
        """A candidate whose run misbehaves: the baseline runs clean (a baseline that fails stops the
        search: row `baseline-crashes`), the constants operator changes X, and the child runs `code`."""
        self.make_repo({"target.py": CHILD_ONLY.format(code=textwrap.indent(code, "    "))})
        return Case(self.config(target={"timeout": 20, **target}, search={"generations": 1}), runtime=True, index=1, check=check)


# the fault runs in the candidate only (the baseline has X = 1.0; the child's X differs)
CHILD_ONLY = """\
X = 1.0
if X != 1.0:
{code}
    raise SystemExit(0)
print("score: 1.0")
"""


CASES: dict[str, Callable[[Bench], Case]] = {}


def case(fn: Callable[[Bench], Case | list[str]]) -> Callable[[Bench], Case]:
    def wrapped(b: Bench) -> Case:
        got = fn(b)
        return got if isinstance(got, Case) else Case(got)

    CASES[fn.__name__.replace("_", "-")] = wrapped
    return wrapped


# config file and TOML
@case
def missing_config(b: Bench) -> list[str]:
    return ["search", "--config", "nope.toml"]


@case
def no_config_and_no_default(b: Bench) -> list[str]:
    return ["search"]


@case
def invalid_toml(b: Bench) -> list[str]:
    b.make_repo()
    return b.spoil("[target]", "[target")


@case
def config_not_utf8(b: Bench) -> list[str]:
    b.make_repo()
    argv = b.config()
    b.cfg.write_bytes(b.cfg.read_bytes() + b"# caf\xe9\n")
    return argv


@case
def unknown_section(b: Bench) -> list[str]:
    b.make_repo()
    return b.spoil("[search]", "[serch]")


@case
def unknown_key(b: Bench) -> list[str]:
    b.make_repo()
    return b.spoil("metric = ", "metrik = ")


@case
def section_not_a_table(b: Bench) -> list[str]:
    b.make_repo()
    argv = b.config()
    b.cfg.write_text("sprt = 3\n" + b.cfg.read_text().replace("[sprt]\nenabled = false\n", ""))
    return argv


@case
def wrong_type(b: Bench) -> list[str]:
    b.make_repo()
    return b.config(search={"workers": "two"})


@case
def wrong_type_bool(b: Bench) -> list[str]:
    b.make_repo()
    return b.config(sprt={"enabled": "yes"})


@case
def bad_choice(b: Bench) -> list[str]:
    b.make_repo()
    return b.config(target={"direction": "up"})


# values out of range
@case
def time_budget_zero(b: Bench) -> list[str]:
    b.make_repo()
    return b.config(target={"time_budget": 0})


@case
def timeout_below_time_budget(b: Bench) -> list[str]:
    b.make_repo()
    return b.config(target={"time_budget": 10, "timeout": 5})


@case
def negative_population(b: Bench) -> list[str]:
    b.make_repo()
    return b.config(search={"strategy": "population", "population": -1})


@case
def workers_zero(b: Bench) -> list[str]:
    b.make_repo()
    return b.config(search={"workers": 0})


@case
def workers_zero_flag(b: Bench) -> list[str]:
    b.make_repo()
    return b.config() + ["--workers", "0"]


@case
def alpha_out_of_range(b: Bench) -> list[str]:
    b.make_repo()
    return b.config(sprt={"enabled": True, "alpha": 0.7})


@case
def unknown_pruner(b: Bench) -> list[str]:
    b.make_repo()
    return b.config(sprt={"enabled": True, "pruner": "hyperband"})


@case
def crossover_rate_above_one(b: Bench) -> list[str]:
    b.make_repo()
    return b.config(search={"crossover_rate": 1.5})


@case
def one_replicate(b: Bench) -> list[str]:
    b.make_repo()
    return b.config(sprt={"enabled": True, "replicates": 1})


@case
def delta_nan(b: Bench) -> list[str]:
    b.make_repo()
    return b.config(sprt={"enabled": True, "delta": float("nan")})


@case
def alpha_nan(b: Bench) -> list[str]:
    b.make_repo()
    return b.config(sprt={"enabled": True, "alpha": float("nan")})


@case
def timeout_inf(b: Bench) -> list[str]:
    b.make_repo()
    return b.config(target={"timeout": float("inf")})


@case
def time_budget_inf(b: Bench) -> list[str]:
    b.make_repo()
    return b.config(target={"time_budget": float("inf"), "timeout": float("inf")})


@case
def step_negative(b: Bench) -> list[str]:
    b.make_repo()
    return b.config(operators={"step": -1.0})


@case
def max_changes_zero(b: Bench) -> list[str]:
    b.make_repo()
    return b.config(operators={"max_changes": 0})


@case
def memory_limit_negative(b: Bench) -> list[str]:
    b.make_repo()
    return b.config(target={"memory_limit_mb": -5})


@case
def llm_timeout_inf(b: Bench) -> list[str]:
    b.make_repo()
    return b.config(llm={"timeout": float("inf")})


# the target's keys
@case
def metric_not_a_name(b: Bench) -> list[str]:
    b.make_repo()
    return b.config(target={"metric": "val bpb"})


@case
def invalid_regex(b: Bench) -> list[str]:
    b.make_repo()
    return b.config(target={"metric_regex": "score: ([0-9]+"})


@case
def regex_without_a_group(b: Bench) -> list[str]:
    b.make_repo()
    return b.config(target={"metric_regex": "^score: [0-9.]+"})


@case
def progress_regex_without_names(b: Bench) -> list[str]:
    b.make_repo()
    return b.config(target={"progress_regex": "progress: ([0-9.]+) score: ([0-9.]+)"})


@case
def run_missing(b: Bench) -> list[str]:
    b.make_repo()
    return b.spoil("run = '{python} target.py'\n", "")


@case
def run_command_not_found(b: Bench) -> list[str]:
    b.make_repo()
    return b.config(target={"run": "no-such-trainer --fast"})


@case
def run_unbalanced_quote(b: Bench) -> list[str]:
    b.make_repo()
    return b.spoil("run = '{python} target.py'", 'run = "{python} \'target.py"')


@case
def mutable_missing(b: Bench) -> list[str]:
    b.make_repo()
    return b.spoil('mutable = ["target.py"]\n', "")


@case
def mutable_matches_nothing(b: Bench) -> list[str]:
    b.make_repo()
    return b.config(target={"mutable": ["src/*.py"]})


@case
def llm_without_model(b: Bench) -> list[str]:
    b.make_repo()
    return b.config(operators={"mutation": "llm"})


@case
def agent_without_command(b: Bench) -> list[str]:
    b.make_repo()
    return b.config(operators={"mutation": "agent"})


@case
def env_allow_passes_the_llm_key(b: Bench) -> list[str]:
    b.make_repo()
    return b.config(target={"env_allow": ["LLM_*"]}, llm={"api_key_env": "LLM_ACCESS"})


# the study and its storage
@case
def study_name_not_a_ref(b: Bench) -> list[str]:
    b.make_repo()
    return b.config(study={"name": "my study"})


@case
def study_name_with_dots(b: Bench) -> list[str]:
    b.make_repo()
    return b.config(study={"name": "a..b"})


@case
def unreachable_storage(b: Bench) -> list[str]:
    b.make_repo()
    return b.config(study={"storage": "postgresql://u:secret@127.0.0.1:1/x"})


@case
def storage_unknown_scheme(b: Bench) -> list[str]:
    b.make_repo()
    return b.config(study={"storage": "nosuchdb://u:secret@host/x"})


@case
def storage_folder_impossible(b: Bench) -> list[str]:
    b.make_repo()
    return b.config(study={"storage": "sqlite:////dev/null/evo.db"})


@case
def study_name_clashes_with_a_branch(b: Bench) -> list[str]:
    """A user branch `evo`: refs/heads/evo/toy/main cannot exist next to it (git: cannot lock ref)."""
    b.make_repo()
    git(b.repo, "branch", "evo")
    return b.config()


@case
def study_name_clashes_with_its_namespace(b: Bench) -> list[str]:
    b.make_repo()
    git(b.repo, "branch", "evo/toy")
    return b.config()


@case
def results_folder_impossible(b: Bench) -> list[str]:
    """Found later, every run crashed on its log (and the search went on, or hung in a worker)."""
    b.make_repo()
    return b.config(study={"results": "/dev/null/res"})


# the repository
@case
def missing_repo(b: Bench) -> list[str]:
    return b.config()


@case
def not_a_git_repo(b: Bench) -> list[str]:
    b.repo.mkdir()
    (b.repo / "target.py").write_text("X = 1\n")
    return b.config()


@case
def bare_repo(b: Bench) -> list[str]:
    git(b.tmp, "init", "-q", "--bare", str(b.repo))
    return b.config()


@case
def repo_without_commits(b: Bench) -> list[str]:
    b.repo.mkdir()
    git(b.repo, "init", "-q")
    (b.repo / "target.py").write_text("X = 1\n")
    return b.config()


@case
def repo_subfolder(b: Bench) -> list[str]:
    b.make_repo({"sub/target.py": "X = 1\n"})
    argv = b.config()
    b.cfg.write_text(b.cfg.read_text().replace(f"repo = '{b.repo}'", f"repo = '{b.repo / 'sub'}'"))
    return argv


# resuming with a different config
@case
def resume_with_other_mutable_files(b: Bench) -> list[str]:
    b.make_repo({"other.py": "Z = 1\n"})
    assert run_cli(b.config()) [0] == 0
    return b.config(target={"mutable": ["target.py", "other.py"]})


@case
def resume_with_other_strategy(b: Bench) -> list[str]:
    b.make_repo()
    assert run_cli(b.config())[0] == 0
    return b.config(search={"strategy": "random", "population": 2})


@case
def setup_fails(b: Bench) -> Case:
    b.make_repo()
    return Case(b.config(target={"setup": "exit 3"}), creates=True)


@case
def mutable_file_not_utf8(b: Bench) -> list[str]:
    b.make_repo({"target.py": b"X = 1.0\n# caf\xe9\nprint('score: 1')\n"})
    return b.config(search={"generations": 1})


@case
def baseline_crashes(b: Bench) -> Case:
    """Nothing can be compared with a baseline that does not run: the search stops at once."""
    b.make_repo({"target.py": "import sys\nsys.exit(3)\n"})
    return Case(b.config(search={"generations": 3}), creates=True)


# promoting by hand
@case
def promote_to_an_empty_branch(b: Bench) -> Case:
    """`--to ""` used to mean the mainline without taking the study's lock."""
    b.make_repo()
    assert run_cli(b.config())[0] == 0
    return Case(["promote", "toy", "--trial", "0", "--to", "", "--storage", f"sqlite:///{b.tmp / 'evo.db'}"], creates=True)


@case
def promote_to_a_study_ref(b: Bench) -> Case:
    b.make_repo()
    assert run_cli(b.config())[0] == 0
    return Case(["promote", "toy", "--trial", "0", "--to", "evo/toy/c/00000", "--storage", f"sqlite:///{b.tmp / 'evo.db'}"],
                creates=True)


# faults of a run: the search goes on, the trial says what happened
@case
def metric_never_printed(b: Bench) -> Case:
    return b.target("print('loss: 0.5')\n")


@case
def metric_regex_captures_no_number(b: Bench) -> Case:
    return b.target("print('score: high')\n", metric_regex="^score: (\\w+)")


@case
def run_exits_nonzero(b: Bench) -> Case:
    return b.target("import sys\nprint('score: 1')\nsys.exit(3)\n")


@case
def run_killed_by_signal(b: Bench) -> Case:
    return b.target("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")


@case
def run_never_ends(b: Bench) -> Case:
    return b.target("import time\ntime.sleep(60)\n", time_budget=1, timeout=1)


@case
def metric_is_nan(b: Bench) -> Case:
    return b.target("print('score: nan')\n")


@case
def metric_is_inf(b: Bench) -> Case:
    return b.target("print('score: -inf')\n")


@case
def output_100_mb(b: Bench) -> Case:
    code = "import sys\nline = b'x' * 999 + b'\\n'\nfor _ in range(100_000):\n    sys.stdout.buffer.write(line)\nprint('score: 1.5')\n"

    def check(t: optuna.trial.FrozenTrial) -> None:
        assert t.value == 1.5
        log = Path(t.user_attrs["log"]).read_bytes()
        assert 1_000_000 < len(log) < 1_000_000 + 10_000, len(log)  # 100 MB printed, 1 MB kept
        assert b"[evo] log truncated here; output continued" in log
        assert log.rstrip().endswith(b"score: 1.5")  # and the last output

    return b.target(code, check, max_log_bytes=1_000_000)


@case
def binary_output(b: Bench) -> Case:
    code = "import os, sys\nsys.stdout.buffer.write(os.urandom(200_000) + b'\\xff\\xfe\\x00\\r\\n')\nprint('score: 2.5')\n"

    def check(t: optuna.trial.FrozenTrial) -> None:
        assert t.value == 2.5 and b"\xff\xfe\x00" in Path(t.user_attrs["log"]).read_bytes()  # the log keeps the bytes

    return b.target(code, check)


@case
def other_data_fingerprint(b: Bench) -> Case:
    b.make_repo({"target.py": "X = 1.0\nprint('data_fingerprint: ' + ('aaaa' if X == 1.0 else 'bbbb'))\nprint(f'score: {X}')\n"})
    return Case(b.config(search={"generations": 1}), runtime=True, index=1)


@case
def syntax_error_from_agent(b: Bench) -> Case:
    b.make_repo({"target.py": "X = 1.0\nprint(f'score: {X}')\n"})
    (b.tmp / "agent.py").write_text("open('target.py', 'a').write('\\nX = (1.0\\n')\n")
    return Case(b.config(search={"generations": 1}, operators={"mutation": "agent"},
                         agent={"command": f"{{python}} {b.tmp / 'agent.py'}"}), runtime=True, index=1)


@case
def agent_deletes_the_file(b: Bench) -> Case:
    b.make_repo()
    return Case(b.config(search={"generations": 1}, operators={"mutation": "agent"},
                         agent={"command": "rm target.py"}), runtime=True, index=1)


@case
def run_starts_daemons(b: Bench) -> Case:
    pids = b.tmp / "pids"
    code = f"""\
import os, subprocess, sys, time
subprocess.Popen(["setsid", sys.executable, "-c", "import time; time.sleep(300)"])  # a new session: not in the group
if os.fork() == 0:  # a double fork: a daemon re-parented to init, in the run's group
    if os.fork() == 0:
        os.setsid()
        with open({str(pids)!r}, "a") as f:
            f.write(f"{{os.getpid()}}\\n")
        time.sleep(300)
    os._exit(0)
time.sleep(0.5)
print("score: 1.0")
"""

    def check(t: optuna.trial.FrozenTrial) -> None:
        found = [int(line.split()[0]) for line in pids.read_text().splitlines()]
        found += [int(p.name) for p in Path("/proc").glob("[0-9]*") if _in_env(p, t)]
        assert found and not [p for p in found if _alive(p)], found

    return b.target(code, check)


@case
def run_deletes_outside_its_checkout(b: Bench) -> Case:
    """`rm -rf ../*` from the checkout, made safe to run here: the checkouts go to a throwaway folder
    this test made (<tmp>/tmp), and the run deletes only when a marker only this test wrote sits
    next to its checkout; anywhere else (a checkout that moved to the shared /tmp) it deletes
    nothing and the check fails. Everything outside the throwaway folder is compared before/after."""
    import uuid

    throwaway = b.tmp / "tmp"  # test_bad_input points tempfile here: every checkout of this test is made in it
    throwaway.mkdir(exist_ok=True)
    marker = f"THROWAWAY-{uuid.uuid4().hex}"
    (throwaway / marker).write_text("this folder may be wiped\n")
    canary = throwaway / "someone-elses-file"
    canary.write_text("x")
    (b.tmp / "outside-canary").write_text("must survive\n")
    code = f"""\
import os, sys
if not os.path.isfile(os.path.join(os.path.dirname(os.getcwd()), {marker!r})):
    print("not in the test's throwaway folder: deleting nothing")
    sys.exit(5)
os.system('rm -rf ../*')  # everything next to its checkout
print('score: 1.0')
"""
    case = b.target(code)
    before = _snapshot(b.tmp, skip=throwaway)

    def check(t: optuna.trial.FrozenTrial) -> None:
        assert not canary.exists() and not (throwaway / marker).exists()  # the damage is real: no sandbox ...
        assert _snapshot(b.tmp, skip=throwaway) == before  # ... and it stayed inside the throwaway folder
        assert git(b.repo, "status", "--porcelain") == ""  # the repository (elsewhere) is untouched
        assert git(b.repo, "rev-parse", "refs/heads/evo/toy/main") == git(b.repo, "rev-parse", "HEAD")

    case.check = check
    return case


def _snapshot(root: Path, skip: Path) -> dict[str, str]:
    """Every file under root (but `skip`, and what evo itself writes: the storage, results/ and
    .git/) with its content hash."""
    import hashlib

    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p == skip or skip in p.parents or rel.parts[0] in ("results", "evo.db", "evo.db-journal", "evo.db-wal", "evo.db-shm") or ".git" in rel.parts:
            continue
        out[str(rel)] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


@case
def operator_touches_protected_file(b: Bench) -> Case:
    """A mutation operator (a plugin, through the Python API) also edits README.md: rejected, never run."""
    b.make_repo()
    argv = b.config(search={"generations": 1})

    class Sneaky:
        name = "sneaky"

        def mutate(self, parent: Any, rng: Any, context: Any) -> Any:
            from operators.base import Proposal

            return Proposal({"target.py": parent.files["target.py"].replace("X = 1.0", "X = 3.0"), "README.md": "edited\n"}, "X 1.0 -> 3.0")

    def api() -> int:
        from evo import config as config_mod
        from evo import wiring
        from evo.search import search

        cfg = config_mod.load(b.cfg)
        search(cfg, Sneaky(), wiring.build_operators(cfg)[1], wiring.build_executor(cfg), out=lambda line: None)
        return 0

    def check(t: optuna.trial.FrozenTrial) -> None:
        assert t.user_attrs["commit"] == "" and "run_seconds" not in t.user_attrs  # no commit, no run

    return Case(argv, runtime=True, index=1, check=check, api=api)


def _alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def _in_env(proc: Path, t: optuna.trial.FrozenTrial) -> bool:
    """Whether a process carries a token of this study's runs."""
    from evo.runner import owner_key

    try:
        return f"EVO_RUN_TOKEN={owner_key(Path(t.user_attrs['log']).parent)}-".encode() in (proc / "environ").read_bytes()
    except OSError:
        return False


# -- running a case ------------------------------------------------------------------------------

def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """evo.cli.main in this process; returns (exit code, stdout, stderr)."""
    import contextlib
    import io

    from evo import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(argv)
    return rc, out.getvalue(), err.getvalue()


def placeholders(b: Bench, text: str) -> str:
    head = "<no head>"
    if "<head>" in text:
        head = git(b.repo, "rev-parse", "HEAD")[:8]
    return text.replace("<tmp>", str(b.tmp)).replace("<repo>", str(b.repo)).replace("<head>", head)


def trial_message(b: Bench, index: int) -> str:
    storage = f"sqlite:///{b.tmp / 'evo.db'}"
    ts = [t for t in optuna.load_study(study_name="toy", storage=storage).get_trials() if t.user_attrs["index"] == index]
    assert len(ts) == 1, ts
    a = ts[0].user_attrs
    return f"{a['outcome']}: {a['reason']}" if a["reason"] else a["outcome"]


def created(b: Bench) -> list[str]:
    """What a failed start left behind."""
    left = [p.name for p in (b.tmp / "evo.db", b.tmp / "results") if p.exists()]
    if (b.repo / ".git").exists() or (b.repo / "HEAD").exists():
        gd = b.repo / ".git" if (b.repo / ".git").exists() else b.repo
        left += [f"ref {r}" for r in git(b.repo, "for-each-ref", "--format=%(refname)", "refs/heads/evo/", "refs/evo/").split()]
        if (gd / "evo").exists():
            left.append("lock folder")
    return left


ROWS = doc_rows()


def test_the_table_and_the_cases_agree() -> None:
    assert len(ROWS) >= 30
    assert sorted(ROWS) == sorted(CASES), {"only in the doc": sorted(set(ROWS) - set(CASES)), "only here": sorted(set(CASES) - set(ROWS))}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EVO_STORAGE", raising=False)
    monkeypatch.delenv("EVO_RESULTS", raising=False)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # runs' checkouts go here, not in the shared /tmp
    b = Bench(tmp_path)
    c = CASES[name](b)
    existed = created(b) or c.creates  # a resume case made a study on purpose
    if c.api is not None:
        rc, out, err = c.api(), "", ""
    else:
        rc, out, err = run_cli(c.argv)
    code, expected = ROWS[name]
    expected = placeholders(b, expected)
    assert rc == code, out + err
    if c.runtime:
        got = trial_message(b, c.index)
    else:
        assert out == "" or existed, out
        assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
        got = err.rstrip("\n")
        assert "secret" not in err
        if code == 2 and not existed:
            assert created(b) == [], "a config-time error left something behind"
    if expected.endswith("..."):
        assert got.startswith(expected[:-3]), got
    else:
        assert got == expected
    if c.check is not None:
        storage = f"sqlite:///{b.tmp / 'evo.db'}"
        c.check(next(t for t in optuna.load_study(study_name="toy", storage=storage).get_trials() if t.user_attrs["index"] == c.index))


@pytest.mark.parametrize("name", ["unknown-key", "unreachable-storage", "missing-repo"])
def test_the_real_command_prints_the_same_line(name: str, tmp_path: Path) -> None:
    b = Bench(tmp_path)
    c = CASES[name](b)
    res = evo(*c.argv, cwd=tmp_path, env={"EVO_STORAGE": "", "EVO_RESULTS": ""})
    code, expected = ROWS[name]
    expected = placeholders(b, expected)
    assert res.returncode == code and res.stdout == ""
    line = res.stderr.rstrip("\n")
    assert "\n" not in line and (line.startswith(expected[:-3]) if expected.endswith("...") else line == expected), res.stderr
    assert "secret" not in res.stderr
