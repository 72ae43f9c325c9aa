"""Candidate isolation: what a run (untrusted code) can and cannot reach. See docs/threat-model.md.

Each test runs a real search (`evo.cli.main` in this process, a real subprocess per run) whose
baseline is the misbehaving program, and reads what it printed into its log; or calls the
runner directly where only the runner is involved.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import optuna
import pytest

from conftest import TARGET, git, write_config, facts
from evo import cli
from evo.runner import RunSpec, network_isolation_available, run, run_env


def search(tmp: Path, repo: Path, baseline_fails: bool = False, **sections: dict[str, Any]) -> list[optuna.trial.FrozenTrial]:
    """A search in this process; only the baseline runs unless sections say otherwise.

    A baseline that cannot run stops the search with an error naming its log (`baseline_fails`)."""
    sections.setdefault("search", {}).setdefault("generations", 0)
    cfg = write_config(tmp / "evo.toml", repo, tmp / "evo.db", **sections)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(["search", "--config", str(cfg)])
    if baseline_fails:
        assert rc != 0 and "the baseline" in err.getvalue() and "did not run" in err.getvalue(), out.getvalue() + err.getvalue()
    else:
        assert rc == 0, out.getvalue() + err.getvalue()
    return optuna.load_study(study_name="toy", storage=f"sqlite:///{tmp / 'evo.db'}").get_trials()


def make_repo(tmp: Path, target: str, files: dict[str, str] | None = None) -> Path:
    repo = tmp / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "master")
    (repo / "target.py").write_text(target)
    (repo / "README.md").write_text("a protected file\n")
    for rel, text in (files or {}).items():
        (repo / rel).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "init")
    return repo


def log_of(t: optuna.trial.FrozenTrial) -> str:
    return Path(t.user_attrs["log"]).read_text(errors="replace")


@pytest.fixture(autouse=True)
def _checkouts_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs' checkouts go to this test's folder, not the shared /tmp."""
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.chdir(tmp_path)


# -- the environment ------------------------------------------------------------------------------

DUMP_ENV = '''\
import json, os
print("ENV " + json.dumps(dict(os.environ)))
print("score: 1.0")
'''


def test_a_run_sees_no_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {
        "OPENAI_API_KEY": "sk-openai-S3CR3T-1", "ANTHROPIC_API_KEY": "sk-ant-S3CR3T-2", "MY_SERVICE_API_KEY": "S3CR3T-3",
        "LLM_ACCESS": "S3CR3T-4",  # the LLM key variable, by name ([llm] api_key_env)
        "EVO_STORAGE": "postgresql://u:S3CR3T-5@db/x", "AWS_SECRET_ACCESS_KEY": "S3CR3T-6", "GITHUB_TOKEN": "S3CR3T-7",
        "DB_PASSWORD": "S3CR3T-8", "HARMLESS": "visible-1", "DATA_DIR": "visible-2",
    }
    for k, v in secrets.items():
        monkeypatch.setenv(k, v)
    repo = make_repo(tmp_path, DUMP_ENV)
    # patterns let ordinary names through, never secret-like ones; a storage URL with a password stays in evo
    ts = search(tmp_path, repo, study={"storage": f"sqlite:///{tmp_path / 'evo.db'}"},
                target={"env_allow": ["DATA_*", "*_KEY", "*TOKEN*", "HARMLESS", "*PASSWORD"]}, llm={"api_key_env": "LLM_ACCESS"})
    env = json.loads(next(line[4:] for line in log_of(ts[0]).splitlines() if line.startswith("ENV ")))
    assert env["HARMLESS"] == "visible-1" and env["DATA_DIR"] == "visible-2"
    leaked = {k for k, v in env.items() if "S3CR3T" in v}
    assert not leaked, leaked
    assert "EVO_STORAGE" not in env and "LLM_ACCESS" not in env
    assert not any(str(tmp_path / "evo.db") in v for v in env.values())  # not even the storage's path
    assert {"EVO_SEED", "EVO_TIME_BUDGET", "EVO_RUN_TOKEN", "PATH"} <= set(env)


def test_naming_a_secret_exactly_passes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one way through: the exact name in [target] env_allow (for a target that needs it)."""
    monkeypatch.setenv("HF_TOKEN", "hf-1")
    assert run_env(("HF_TOKEN",))["HF_TOKEN"] == "hf-1"
    assert "HF_TOKEN" not in run_env(("HF_*", "*TOKEN"))


def test_a_pattern_that_would_pass_the_llm_key_is_refused(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, DUMP_ENV)
    cfg = write_config(tmp_path / "evo.toml", repo, tmp_path / "evo.db", target={"env_allow": ["LLM_*"]}, llm={"api_key_env": "LLM_ACCESS"})
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert cli.main(["search", "--config", str(cfg)]) == 2
    assert err.getvalue() == (f"evo: error: {cfg}: [target] env_allow = ['LLM_*']: 'LLM_*' would pass the LLM key variable "
                              "LLM_ACCESS to every run; name it exactly if the runs need it\n")
    assert not (tmp_path / "evo.db").exists()


# -- processes ---------------------------------------------------------------------------------------

SESSION = '''\
import os, subprocess
print(f"IDS {os.getpid()} {os.getpgid(0)} {os.getsid(0)} {os.getppid()}")
print("CWD " + os.getcwd())
git = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True)
print(f"GIT {git.returncode}")
print("score: 1.0")
'''


def test_a_run_has_its_own_session_and_a_checkout_outside_the_repo(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, SESSION)
    head, status = git(repo, "rev-parse", "HEAD"), git(repo, "status", "--porcelain")
    t = search(tmp_path, repo)[0]
    text = log_of(t)
    pid, pgid, sid, ppid = map(int, next(line for line in text.splitlines() if line.startswith("IDS ")).split()[1:])
    assert sid == pgid != os.getsid(0)  # its own session and process group (led by the run's shell, or the run)
    cwd = Path(next(line for line in text.splitlines() if line.startswith("CWD "))[4:])
    assert not cwd.is_relative_to(repo) and cwd.is_relative_to(tmp_path / "tmp")  # a `git archive` export in the temp folder
    assert not cwd.exists()  # deleted after the run
    assert "GIT 128" in text  # no .git there: git commands in the checkout do not reach the repository
    assert (git(repo, "rev-parse", "HEAD"), git(repo, "status", "--porcelain")) == (head, status)


def test_everything_a_run_started_is_killed_when_it_ends(tmp_path: Path) -> None:
    """Background children, a setsid daemon (another session) and a double-forked one."""
    pids = tmp_path / "pids"
    script = f'''
import os, subprocess, sys, time
kids = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"]),
        subprocess.Popen(["setsid", sys.executable, "-c", "import time; time.sleep(300)"])]
if os.fork() == 0:
    if os.fork() == 0:
        os.setsid()
        with open({str(pids)!r}, "a") as f:
            f.write(f"{{os.getpid()}}\\n")
        time.sleep(300)
    os._exit(0)
with open({str(pids)!r}, "a") as f:
    f.write("".join(f"{{k.pid}}\\n" for k in kids))
time.sleep(0.3)
print("score: 1")
'''
    (tmp_path / "t.py").write_text(script)
    res = run(RunSpec(command=f"{sys.executable} t.py", cwd=tmp_path, env=run_env(), timeout=30, log_path=tmp_path / "log", metric="score"))
    assert res.outcome == "complete" and res.seconds < 10
    started = [int(p) for p in pids.read_text().split()]
    assert len(started) == 3
    left = [p for p in started if Path(f"/proc/{p}").exists() and "\nState:\tZ" not in Path(f"/proc/{p}/status").read_text()]
    assert not left


def test_a_daemon_holding_the_output_does_not_keep_the_run_going(tmp_path: Path) -> None:
    """A daemon that keeps stdout open does not keep the run alive past the command's exit."""
    cmd = f"setsid {sys.executable} -c 'import time; time.sleep(300)' & echo 'score: 2'"
    res = run(RunSpec(command=cmd, cwd=tmp_path, env=run_env(), timeout=30, log_path=tmp_path / "log", metric="score"))
    assert res.outcome == "complete" and res.value == 2.0 and res.seconds < 10


# -- optional limits -------------------------------------------------------------------------------

ALLOCATE = '''\
import sys
size = {mb} * 1024 * 1024
try:
    block = bytearray(size)
except MemoryError:
    print("MemoryError"); sys.exit(1)
print("score: 1.0")
'''


def test_memory_limit(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, ALLOCATE.format(mb=600))
    t = search(tmp_path, repo, baseline_fails=True, target={"memory_limit_mb": 300})[0]
    assert t.user_attrs["outcome"] == "crashed" and t.user_attrs["reason"] == "the run failed (exit code 1)"
    assert "MemoryError" in log_of(t)
    # the same program with room to spare completes
    (tmp_path / "ok").mkdir()
    repo2 = make_repo(tmp_path / "ok", ALLOCATE.format(mb=50))
    assert search(tmp_path / "ok", repo2, target={"memory_limit_mb": 300})[0].user_attrs["outcome"] == "complete"


def test_memory_limit_with_a_compound_command(tmp_path: Path) -> None:
    """`cd sub && python t.py` under a limit (it once became `exec cd sub && ...`: exit 127)."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "t.py").write_text(ALLOCATE.format(mb=10))
    res = run(RunSpec(command=f"cd sub && {sys.executable} t.py", cwd=tmp_path, env=run_env(), timeout=30,
                      log_path=tmp_path / "log", metric="score", memory_limit_mb=300))
    assert res.outcome == "complete", (tmp_path / "log").read_text()


CONNECT = '''\
import socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=3).close()
    print("CONNECTED")
except OSError as e:
    print(f"NO NETWORK: {{e}}")
print("score: 1.0")
'''


@pytest.mark.skipif(not network_isolation_available(), reason="`unshare --net` does not work here (needs user namespaces or root)")
def test_no_network(tmp_path: Path) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    accepted: list[Any] = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    try:
        repo = make_repo(tmp_path, CONNECT.format(port=port))
        t = search(tmp_path, repo, target={"no_network": True})[0]
        assert "NO NETWORK" in log_of(t) and "CONNECTED" not in log_of(t)
        assert t.user_attrs["outcome"] == "complete"  # the run goes on; only its network is gone
        # without the option, the same run reaches the socket (the test is not vacuous)
        (tmp_path / "net").mkdir()
        repo2 = make_repo(tmp_path / "net", CONNECT.format(port=port))
        assert "CONNECTED" in log_of(search(tmp_path / "net", repo2)[0])
    finally:
        server.close()


# -- protected files and metric integrity ---------------------------------------------------------------

AGENT = '''\
import os, pathlib, sys
p = pathlib.Path("target.py")
p.write_text(p.read_text().replace("X = 1.0", "X = 3.0"))
if os.environ["EVO_AGENT_MODE"] == "sneaky":
    pathlib.Path("README.md").write_text("rewritten by the agent\\n")  # a protected file of the repository
    pathlib.Path("prepare.py").write_text("EVAL = 0\\n")  # a file outside the mutable globs
'''


@pytest.mark.parametrize("mode", ["sneaky", "honest"])
def test_an_agent_that_touches_a_protected_file_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """README: a child that changes a file outside `mutable` is recorded as FAIL and never run,
    whatever the operator. The agent reports every file it wrote; the engine rejects the child."""
    monkeypatch.setenv("EVO_AGENT_MODE", mode)
    repo = make_repo(tmp_path, TARGET.replace("NOISE", "0.0"))
    (tmp_path / "agent.py").write_text(AGENT)
    ts = search(tmp_path, repo, search={"generations": 1}, operators={"mutation": "agent"},
                agent={"command": f"{{python}} {tmp_path / 'agent.py'}", "env_allow": ["EVO_AGENT_MODE"]})
    child = next(t for t in ts if t.user_attrs["index"] == 1)
    refs = git(repo, "for-each-ref", "--format=%(refname)", "refs/evo/toy/c/").split()
    if mode == "honest":  # the same agent, staying inside target.py: a normal child
        assert child.user_attrs["outcome"] == "complete" and child.value == pytest.approx(-0.4)  # X = 3.0, Y = 5
        assert git(repo, "diff", "--name-only", child.user_attrs["parents"][0], child.user_attrs["commit"]) == "target.py"
        assert "refs/evo/toy/c/00001" in refs
        return
    assert child.state == optuna.trial.TrialState.FAIL
    assert child.user_attrs["outcome"] == "rejected"
    assert child.user_attrs["reason"] == "touches protected file(s): README.md, prepare.py"
    # never committed, never run
    assert not child.user_attrs.get("commit") and not child.user_attrs.get("log")
    assert "refs/evo/toy/c/00001" not in refs
    assert len([t for t in ts if t.user_attrs["index"] == 1]) == 1
    assert git(repo, "show", "HEAD:README.md") == "a protected file"
    diff = (Path(child.user_attrs["artifacts"]) / "diff.txt").read_text()
    assert "+rewritten by the agent" in diff and "+X = 3.0" in diff


def test_the_study_fingerprints_the_protected_files(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, TARGET.replace("NOISE", "0.0"))
    search(tmp_path, repo)
    attrs = facts(optuna.load_study(study_name="toy", storage=f"sqlite:///{tmp_path / 'evo.db'}"))
    readme = git(repo, "rev-parse", "HEAD:README.md")
    import hashlib
    assert attrs["fingerprint"] == hashlib.sha256(f"README.md {readme}\n".encode()).hexdigest()[:16]


FINGERPRINTED = '''\
X = 1.0
if X == 1.0:
    print("data_fingerprint: 5eed0fda7a")  # only the baseline prints it
print(f"score: {-abs(X - 3.0)}")
'''


def test_runs_on_other_data_are_refused_even_after_a_resume(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, FINGERPRINTED)
    ts = search(tmp_path, repo, search={"generations": 1})
    base, child = sorted(ts, key=lambda t: t.user_attrs["index"])
    assert base.user_attrs["data_fingerprint"] == "5eed0fda7a" and base.user_attrs["outcome"] == "complete"
    assert child.user_attrs["outcome"] == "invalid" and child.value is None
    assert child.user_attrs["reason"] == "data fingerprint (none printed) differs from the baseline's 5eed0fda7a"
    study = optuna.load_study(study_name="toy", storage=f"sqlite:///{tmp_path / 'evo.db'}")
    assert facts(study)["data_fingerprint"] == "5eed0fda7a"
    # resumed with a bigger budget: the baseline is not re-run, its fingerprint still rules
    ts = search(tmp_path, repo, search={"generations": 2})
    third = next(t for t in ts if t.user_attrs["index"] == 2)
    assert third.user_attrs["outcome"] == "invalid" and "5eed0fda7a" in third.user_attrs["reason"]
    assert git(repo, "rev-parse", "evo/toy/main") == git(repo, "rev-parse", "HEAD")  # nothing promoted on other data


def test_no_network_where_it_cannot_be_had_is_an_error_not_a_silent_downgrade(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import evo.runner

    monkeypatch.setattr(evo.runner, "_NETNS", False)  # as on a machine without user namespaces
    repo = make_repo(tmp_path, CONNECT.format(port=1))
    cfg = write_config(tmp_path / "evo.toml", repo, tmp_path / "evo.db", target={"no_network": True})
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert cli.main(["search", "--config", str(cfg)]) == 2
    assert err.getvalue() == f"evo: error: {cfg}: [target] no_network = true: `unshare --net` does not work here (it needs user namespaces or root)\n"
    assert not (tmp_path / "evo.db").exists()
    # a remote worker without it (the Ray executor) does not run the candidate at all
    res = run(RunSpec(command="echo 'score: 1'", cwd=tmp_path, env=run_env(), timeout=10, log_path=tmp_path / "log",
                      metric="score", no_network=True))
    assert res.outcome == "crashed" and res.reason.startswith("not run: [target] no_network = true")
