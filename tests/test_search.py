"""End-to-end searches on real git repos with real subprocesses and a real Optuna storage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from conftest import evo, git, write_config


def trials(storage: Path, name: str = "toy") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{storage}").get_trials(deepcopy=False)


def test_greedy_ten_generations_end_to_end(make_repo, tmp_path: Path) -> None:
    repo = make_repo()
    head, status = git(repo, "rev-parse", "HEAD"), git(repo, "status", "--porcelain")
    branch = git(repo, "symbolic-ref", "HEAD")
    cfg = write_config(tmp_path / "evo.toml", repo, tmp_path / "evo.db", search={"generations": 10})
    res = evo("search", "--config", str(cfg), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    ts = trials(tmp_path / "evo.db")
    assert len(ts) == 11
    assert sorted(t.user_attrs["index"] for t in ts) == list(range(11))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in ts)
    # the user's repository is untouched
    assert git(repo, "rev-parse", "HEAD") == head
    assert git(repo, "status", "--porcelain") == status
    assert git(repo, "symbolic-ref", "HEAD") == branch
    # every candidate is a commit on its ref (refs/evo/..., not a branch), child of its parent
    for t in ts:
        a = t.user_attrs
        assert git(repo, "rev-parse", a["branch"]) == a["commit"] and a["branch"].startswith("refs/evo/toy/c/")
        if a["index"] > 0:
            assert git(repo, "log", "-1", "--format=%P", a["commit"]).split() == a["parents"]
            assert git(repo, "diff", "--name-only", a["parents"][0], a["commit"]) == "target.py"
    # the mainline only ever moved to strictly better values, one commit per promotion
    log = git(repo, "log", "--first-parent", "--format=%H %s", "evo/toy/main").splitlines()
    promos = [line for line in log if "evo: promote" in line]
    values = [float(git(repo, "log", "-1", "--format=%(trailers:key=Evo-Value,valueonly)", line.split()[0])) for line in promos]
    base = next(t.value for t in ts if t.user_attrs["index"] == 0)
    chain = [base] + values[::-1]
    assert all(b > a for a, b in zip(chain, chain[1:])), chain
    assert len(promos) >= 1  # the toy's constants start far from the optimum
    # optuna's own CLI reads the study unchanged
    optuna_cli = str(Path(sys.executable).parent / "optuna")
    out = subprocess.run([optuna_cli, "trials", "--storage", f"sqlite:///{tmp_path / 'evo.db'}",
                          "--study-name", "toy", "-f", "json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)) == 11


FAULTY = '''\
import sys, time
Y = 5  # 4 crashes, 6 hangs, 3 prints no metric, 7 prints nan
if Y == 4:
    print("boom"); sys.exit(3)
if Y == 6:
    time.sleep(60)
if Y == 3:
    print("no metric here"); sys.exit(0)
print("score: nan" if Y == 7 else f"score: {-abs(Y - 10)}")
'''


def test_failing_runs_become_fail_trials_and_the_search_goes_on(make_repo, tmp_path: Path) -> None:
    repo = make_repo(files={"target.py": FAULTY})
    cfg = write_config(tmp_path / "evo.toml", repo, tmp_path / "evo.db", target={"timeout": 2},
                       search={"generations": 14}, operators={"max_changes": 1})
    res = evo("search", "--config", str(cfg), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    ts = trials(tmp_path / "evo.db")
    assert len(ts) == 15
    by_y = {}
    for t in ts:
        desc = t.user_attrs["description"]
        y = int(desc.split("-> ")[-1]) if "->" in desc else 5
        by_y.setdefault(y, t)
    expect = {4: ("crashed", "exit code 3"), 6: ("timeout", "timeout"), 3: ("crashed", "never printed"), 7: ("invalid", "nan")}
    # the search is seeded: its 14 one-literal children reach every fault kind, each must be seen
    assert set(expect) <= set(by_y), {y: t.user_attrs["description"] for y, t in by_y.items()}
    for y, (outcome, why) in expect.items():
        t = by_y[y]
        assert t.state == optuna.trial.TrialState.FAIL, (y, t.state)
        assert t.user_attrs["outcome"] == outcome, (y, t.user_attrs["outcome"])
        assert why in t.user_attrs["reason"], (y, t.user_attrs["reason"])
        assert Path(t.user_attrs["log"]).exists()
    timeouts = [t for t in ts if t.user_attrs["outcome"] == "timeout"]
    assert all(t.user_attrs["run_seconds"] < 6 for t in timeouts)


def test_same_seed_gives_the_same_search(make_repo, tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        repo = make_repo(name=name)
        cfg = write_config(tmp_path / f"{name}.toml", repo, tmp_path / f"{name}.db",
                           study={"seed": 7}, search={"strategy": "population", "population": 3, "generations": 2})
        assert evo("search", "--config", str(cfg), cwd=tmp_path).returncode == 0
        runs.append([(t.user_attrs["index"], t.user_attrs["operator"], t.user_attrs["description"], t.value)
                     for t in sorted(trials(tmp_path / f"{name}.db"), key=lambda t: t.number)])
    assert runs[0] == runs[1]
    assert len(runs[0]) >= 8


def test_ctrl_c_kills_the_run_and_the_search_resumes(make_repo, tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    slow = f'''\
import os, time, subprocess, sys
X = 1.0
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
with open({str(pidfile)!r}, "a") as f:
    f.write(f"{{os.getpid()}} {{child.pid}}\\n")
time.sleep(float(os.environ.get("SLOW", "30")))
print(f"score: {{-abs(X - 3)}}")
'''
    repo = make_repo(files={"target.py": slow})
    cfg = write_config(tmp_path / "evo.toml", repo, tmp_path / "evo.db", target={"timeout": 60, "env_allow": ["SLOW"]},
                       search={"generations": 2})
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "SLOW": "30"}
    proc = subprocess.Popen([sys.executable, "-m", "evo", "search", "--config", str(cfg)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 30
    while time.time() < deadline and not (pidfile.exists() and pidfile.read_text().strip()):
        time.sleep(0.1)
    assert pidfile.exists(), "the run never started"
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, out
    time.sleep(0.3)
    for line in pidfile.read_text().split("\n"):
        for pid in line.split():
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower(), f"{pid} still alive"
    # no trial was left RUNNING; the interrupted baseline simply has no trial yet
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in trials(tmp_path / "evo.db"))
    res = subprocess.run([sys.executable, "-m", "evo", "search", "--config", str(cfg)], cwd=tmp_path,
                         env={**env, "SLOW": "0"}, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    ts = trials(tmp_path / "evo.db")
    assert sorted(t.user_attrs["index"] for t in ts) == [0, 1, 2]


def test_second_search_on_a_running_study_is_refused(make_repo, tmp_path: Path) -> None:
    repo = make_repo(files={"target.py": "import os, time\nX = 1.0\ntime.sleep(float(os.environ['SLOW']))\nprint('score: 1')\n"})
    cfg = write_config(tmp_path / "evo.toml", repo, tmp_path / "evo.db", search={"generations": 1}, target={"env_allow": ["SLOW"]})
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "SLOW": "20"}
    first = subprocess.Popen([sys.executable, "-m", "evo", "search", "--config", str(cfg)], cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lock = repo / ".git" / "evo" / "toy.lock"
        deadline = time.time() + 20
        while time.time() < deadline and not (lock.exists() and lock.read_text()):
            time.sleep(0.1)
        second = evo("search", "--config", str(cfg), cwd=tmp_path)
        assert second.returncode == 3
        assert "already running" in second.stderr and len(second.stderr.strip().splitlines()) == 1
    finally:
        first.kill()
        first.wait()
    # the kill -9'd holder's lock is stale: the next search takes it over and finishes
    cfg2 = write_config(tmp_path / "evo.toml", repo, tmp_path / "evo.db", search={"generations": 0}, target={"env_allow": ["SLOW"]})
    assert evo("search", "--config", str(cfg2), cwd=tmp_path, timeout=120, env={"SLOW": "0"}).returncode == 0


def test_promote_by_hand_refuses_a_checked_out_branch(make_repo, tmp_path: Path) -> None:
    repo = make_repo()
    cfg = write_config(tmp_path / "evo.toml", repo, tmp_path / "evo.db", search={"generations": 3})
    assert evo("search", "--config", str(cfg), cwd=tmp_path).returncode == 0
    storage = f"sqlite:///{tmp_path / 'evo.db'}"
    res = evo("promote", "toy", "--trial", "2", "--to", "master", "--storage", storage, cwd=tmp_path)
    assert res.returncode == 2 and "checked out" in res.stderr
    res = evo("promote", "toy", "--trial", "2", "--to", "tuned", "--storage", storage, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    t = next(t for t in trials(tmp_path / "evo.db") if t.number == 2)
    assert git(repo, "rev-parse", "tuned^{tree}") == t.user_attrs["tree"]
    assert git(repo, "status", "--porcelain") == ""
