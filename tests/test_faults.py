"""Crash safety: `evo search` is killed with SIGKILL at random moments and resumed until done.

Each attempt is a real process running the real command line (`evo.cli.main`), killed with
SIGKILL. To fit 50 kills in CI time, most attempts are forked from a warm "zygote" that has
already imported evo (importing scipy and optuna costs more than a whole attempt); two are plain
`python -m evo search` processes. Nothing in evo knows it is being tested: the kill moments are
random delays, plus some triggered from outside by what evo writes (a new candidate ref, the
mainline ref moving, SQLite's journal appearing), so that every phase is hit.

After every kill the state on disk must already be consistent (no trial left RUNNING, no run
recorded twice, every trial names the commit its ref holds), and what the kill left behind tells
which phase it hit. At the end the resumed study must equal an uninterrupted reference search
with the same seed: the same individuals, runs, outcomes, values and promotions. Nothing lost,
nothing evaluated twice.

EVO_FAULT_KILLS (default 50) and EVO_FAULT_SEED (default 1) change the size and the draw.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest

from conftest import ROOT, git, write_config, facts
from evo.runner import owner_key

KILLS = int(os.environ.get("EVO_FAULT_KILLS", "50"))
SEED = int(os.environ.get("EVO_FAULT_SEED", "1"))

ZYGOTE = r'''
import json, os, sys, traceback
import evo.cli, evo.search, evo.study, evo.report, evo.executors.local, operators.constants, operators.crossover
import optuna
optuna.storages.RDBStorage("sqlite:///:memory:")  # optuna imports sqlalchemy and alembic lazily: warm them too
print("ready", flush=True)
while True:
    line = sys.stdin.readline()
    if not line:
        break
    cmd = json.loads(line)
    if cmd["op"] == "spawn":
        pid = os.fork()
        if pid == 0:
            fd = os.open(cmd["out"], os.O_WRONLY | os.O_APPEND)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.stdout = sys.stderr = open(1, "w", buffering=1, closefd=False)
            os.chdir(cmd["cwd"])
            try:
                rc = evo.cli.main(cmd["argv"])
            except BaseException:
                traceback.print_exc()
                rc = 99
            sys.stdout.flush()
            os._exit(rc)
        print(pid, flush=True)
    elif cmd["op"] == "wait":
        _, status = os.waitpid(cmd["pid"], 0)
        print(os.waitstatus_to_exitcode(status), flush=True)
'''


class Zygote:
    """A warm interpreter that forks one `evo` command line per request."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, cwd=ROOT)
        assert self._read() == "ready"

    def _read(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the zygote died"
        return line.strip()

    def _send(self, **cmd: Any) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def spawn(self, argv: list[str], out: Path, cwd: Path) -> int:
        out.write_bytes(b"")
        return int(self._send(op="spawn", argv=argv, out=str(out), cwd=str(cwd)))

    def wait(self, pid: int) -> int:
        return int(self._send(op="wait", pid=pid))

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


class Plain:
    """The same interface: a fresh `python -m evo` per attempt."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def spawn(self, argv: list[str], out: Path, cwd: Path) -> int:
        with open(out, "wb") as f:
            p = subprocess.Popen([sys.executable, "-u", "-m", "evo", *argv], stdout=f, stderr=subprocess.STDOUT, cwd=cwd, env=self.env)
        self.procs[p.pid] = p
        return p.pid

    def wait(self, pid: int) -> int:
        return self.procs.pop(pid).wait(timeout=60)


# -- what is on disk ---------------------------------------------------------------------------

class Disk:
    """Reads a study's archive and refs the way a second process would."""

    def __init__(self, repo: Path, storage: Path, name: str) -> None:
        self.repo, self.storage, self.name = repo, storage, name
        self._study: optuna.Study | None = None

    @property
    def study(self) -> optuna.Study | None:
        if self._study is None and self.storage.exists():
            try:
                self._study = optuna.load_study(study_name=self.name, storage=f"sqlite:///{self.storage}")
            except KeyError:
                return None  # killed before the study was created
        return self._study

    def trials(self) -> list[optuna.trial.FrozenTrial]:
        return self.study.get_trials(deepcopy=False) if self.study else []

    def attrs(self) -> dict[str, Any]:
        return facts(self.study) if self.study else {}

    def refs(self) -> dict[int, str]:
        out = git(self.repo, "for-each-ref", "--format=%(refname) %(objectname)", f"refs/heads/evo/{self.name}/c/")
        return {int(r.rsplit("/", 1)[1]): sha for r, sha in (line.split() for line in out.splitlines())}

    def mainline(self) -> list[tuple[int, float]]:
        """(index, value) of every promotion on the mainline, oldest first."""
        base = self.attrs().get("base_commit")
        if not base:
            return []
        raw = git(self.repo, "log", "--first-parent", "--reverse",
                  "--format=%(trailers:key=Evo-Index,valueonly)%x00%(trailers:key=Evo-Value,valueonly)%x01",
                  f"{base}..refs/heads/evo/{self.name}/main")
        out = []
        for entry in raw.split("\x01"):
            if "\x00" in entry:
                idx, val = (x.strip() for x in entry.split("\x00"))
                if idx:
                    out.append((int(idx), float(val)))
        return out

    def check(self) -> list[optuna.trial.FrozenTrial]:
        """What must hold at every moment, even right after a kill -9."""
        ts = self.trials()
        assert not [t.number for t in ts if t.state == optuna.trial.TrialState.RUNNING], "a trial was left RUNNING"
        seen = Counter((t.user_attrs["index"], t.user_attrs["seed"]) for t in ts)
        twice = [k for k, n in seen.items() if n > 1]
        assert not twice, f"(index, seed) recorded twice: {twice}"
        branches = self.refs()
        commits = {t.user_attrs["commit"] for t in ts if t.user_attrs["commit"]}
        types = subprocess.run(["git", "-C", str(self.repo), "cat-file", "--batch-check=%(objecttype)"], input="".join(c + "\n" for c in commits),
                               capture_output=True, text=True, check=True).stdout.split()
        assert types == ["commit"] * len(commits), "a trial names a commit that does not exist"
        for t in ts:
            a = t.user_attrs
            if a["commit"]:
                assert branches.get(a["index"]) == a["commit"], f"trial {t.number}: ref of #{a['index']} is not its commit"
            else:
                assert a["outcome"] in ("operator_failed", "rejected"), a
        return ts

    def phase(self, out: str, t0: float) -> str:
        """Which moment the kill hit, from what it left behind."""
        if f"study {self.name}" not in out:
            return "startup"  # opening the storage, taking the lock, rebuilding the state
        ts = self.trials()
        attrs = self.attrs()
        if len(self.mainline()) != len(attrs.get("promotions", [])):
            return "promotion"  # the mainline ref moved, the archive's copy is not written yet
        done = {(t.user_attrs["index"], t.user_attrs["seed"]) for t in ts}
        printed = {(int(m[1]), int(m[2] or 0)) for m in re.finditer(r"^\[\s*\d+/\d+\] #(\d+)\s+g\d+\s+\S+\s+(?:\w+ seed (\d+))?", out, re.M)}
        decided = set(attrs.get("decisions", {}))
        undecided = [t for t in ts if t.user_attrs["index"] > 0 and t.user_attrs["role"] == "candidate"
                     and t.user_attrs["outcome"] == "complete" and str(t.user_attrs["index"]) not in decided]
        if printed - done or undecided:
            return "record"  # a run ended: its trial, or the decision it causes, is not written yet
        for log in (self.storage.parent / "results" / "logs" / self.name).glob("*.log"):
            m = re.fullmatch(r"(\d+)-seed(\d+)\.log", log.name)
            if m and log.stat().st_mtime >= t0 and (int(m[1]), int(m[2])) not in done:
                return "confirm" if int(m[1]) > 0 and int(m[2]) != 0 else "run"  # started, not ended
        indices = {t.user_attrs["index"] for t in ts}
        if any(i not in indices for i in self.refs() if i > 0):
            return "commit"  # committed, not started
        return "proposal"  # between runs: choosing, proposing, writing a failed or duplicate proposal


def summary(ts: list[optuna.trial.FrozenTrial]) -> list[tuple[Any, ...]]:
    """A search's results, less what differs between two identical searches (times, commit ids)."""
    return sorted(
        (a["index"], a["seed"], a["role"], a["outcome"], a["operator"], a["description"], tuple(a["parent_indices"]),
         None if t.value is None else round(t.value, 9))
        for t in ts for a in [t.user_attrs]
    )


def wait_until(pred: Callable[[], bool], limit: float, step: float = 0.001) -> bool:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return False


def kill_moment(mode: str, rng: random.Random, disk: Disk, out: Path, unit: float) -> None:
    """Wait for the moment to kill: a random delay, or a random delay then the next write of a kind."""
    assert wait_until(lambda: f"study {disk.name}" in out.read_text(errors="replace"), 60, 0.005), out.read_text()
    time.sleep(rng.uniform(0.0, 1.5 * unit))
    git_dir = disk.repo / ".git" / "refs" / "heads" / "evo" / disk.name
    if mode == "new-ref":
        known = set(os.listdir(git_dir / "c")) if (git_dir / "c").is_dir() else set()
        wait_until(lambda: bool(set(os.listdir(git_dir / "c")) - known), 4 * unit)
    elif mode == "mainline":
        tip = (git_dir / "main").read_bytes()
        wait_until(lambda: (git_dir / "main").read_bytes() != tip, 4 * unit)
    elif mode == "journal":
        journal = disk.storage.with_name(disk.storage.name + "-journal")
        wait_until(journal.exists, 4 * unit, 0.0002)


MODES = ("early",) * 2 + ("random",) * 10 + ("new-ref", "mainline", "journal") * 2


def search_with_kills(zygote: Zygote, plain: Plain, cfg: Path, cwd: Path, disk: Disk, kills: int, unit: float,
                      rng: random.Random) -> tuple[Counter[str], Counter[str], int]:
    """Kill `kills` times, resuming each time; the search's budget grows if it ends before that."""
    phases: Counter[str] = Counter()
    modes: Counter[str] = Counter()
    generations = int(re.search(r"generations = (\d+)", cfg.read_text())[1])  # type: ignore[index]
    plain_at = {1, kills // 2}
    attempt = 0
    while True:
        attempt += 1
        assert attempt < 2 * kills + 20, "the search never finished"
        out = cwd / f"attempt-{attempt}.txt"
        t0 = time.time() - 0.01
        runner = plain if attempt in plain_at else zygote
        killing = sum(phases.values()) < kills
        mode = rng.choice(MODES) if attempt > 1 else "random"
        pid = runner.spawn(["search", "--config", str(cfg), "--generations", str(generations)], out, cwd)
        if killing:
            if mode == "early":  # while it opens the study
                time.sleep(rng.uniform(0.0, 0.3 if runner is zygote else 3.0))
            else:
                kill_moment(mode, rng, disk, out, unit)
            os.kill(pid, signal.SIGKILL)
        rc = runner.wait(pid)
        text = out.read_text(errors="replace")
        if rc == 0 and "done:" in text:
            if not killing:
                return phases, modes, generations
            generations += 10  # finished too soon: a bigger budget for the same study
            continue
        assert rc == -signal.SIGKILL, f"attempt {attempt}: exit {rc}\n{text[-3000:]}"
        disk.check()
        phases[disk.phase(text, t0)] += 1
        modes[mode] += 1


@pytest.mark.timeout(900)
def test_kill_9_at_random_moments_then_resume(make_repo, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sections = dict(search={"strategy": "greedy", "generations": 60}, operators={"max_changes": 1})
    repo = make_repo(name="repo")
    cfg = write_config(tmp_path / "evo.toml", repo, tmp_path / "evo.db", **sections)
    ref_repo = make_repo(name="ref")
    ref_cfg = write_config(tmp_path / "ref.toml", ref_repo, tmp_path / "ref.db", **sections)
    zygote = Zygote(env)
    try:
        # a short uninterrupted search measures how long one candidate takes on this machine
        t = time.time()
        pid = zygote.spawn(["search", "--config", str(ref_cfg), "--generations", "8"], tmp_path / "ref.txt", tmp_path)
        assert zygote.wait(pid) == 0, (tmp_path / "ref.txt").read_text()
        unit = (time.time() - t) / 9
        t = time.time()
        disk = Disk(repo, tmp_path / "evo.db", "toy")
        phases, modes, generations = search_with_kills(zygote, Plain(env), cfg, tmp_path, disk, KILLS, unit, rng)
        seconds = time.time() - t
        # the reference: the same search, never interrupted (resumed from its first 8 children)
        pid = zygote.spawn(["search", "--config", str(ref_cfg), "--generations", str(generations)], tmp_path / "ref.txt", tmp_path)
        assert zygote.wait(pid) == 0, (tmp_path / "ref.txt").read_text()
    finally:
        zygote.close()
    kills = sum(phases.values())
    print(f"\n{kills} kills in {seconds:.0f}s ({generations} children, {unit:.2f}s each); phases {dict(phases)}; modes {dict(modes)}")
    assert kills >= KILLS
    ts = disk.check()
    ref = Disk(ref_repo, tmp_path / "ref.db", "toy")
    assert summary(ts) == summary(ref.trials())
    # the planned evaluations are all there: every child has its screening trial, every ref its trials
    assert sorted(t.user_attrs["index"] for t in ts if t.user_attrs["seed"] == 0) == list(range(generations + 1))
    assert set(disk.refs()) == {t.user_attrs["index"] for t in ts if t.user_attrs["commit"]}
    # the mainline: strictly improving, the same chain as the reference's, and what `promotions` says
    chain = disk.mainline()
    values = [next(t.value for t in ts if t.user_attrs["index"] == 0)] + [v for _, v in chain]
    assert all(b > a for a, b in zip(values, values[1:])), values
    assert chain == ref.mainline() and len(chain) >= 2
    assert [(p["index"], p["value"]) for p in disk.attrs()["promotions"]] == chain
    decisions = disk.attrs()["decisions"]
    assert all(decisions[str(i)]["decision"] == "accept" for i, _ in chain)
    # every evaluated child was decided (a kill between its trial and its decision loses nothing)
    assert {t.user_attrs["index"] for t in ts if t.user_attrs["outcome"] == "complete" and t.user_attrs["index"] > 0} <= set(map(int, decisions))
    # the kills landed everywhere
    assert len(phases) >= 5 and all(phases[p] >= 1 for p in ("startup", "commit", "run", "record")), phases


@pytest.mark.timeout(900)
def test_kill_9_on_the_shipped_configuration(make_repo, tmp_path: Path) -> None:
    """The default shape: a population, the statistics on (replicates, futility, confirmation runs),
    two workers. Two workers make the order of results depend on timing, so the resumed study is not
    compared with a reference; it must hold the invariants after every kill and end complete."""
    rng = random.Random(SEED + 1)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    repo = make_repo(noise=0.4)
    cfg = write_config(tmp_path / "evo.toml", repo, tmp_path / "evo.db",
                       search={"strategy": "population", "population": 4, "generations": 5, "workers": 2},
                       sprt={"enabled": True, "replicates": 3, "max_pairs": 4, "gate": 0.5})
    zygote = Zygote(env)
    disk = Disk(repo, tmp_path / "evo.db", "toy")
    try:
        t = time.time()
        pid = zygote.spawn(["search", "--config", str(cfg), "--generations", "1"], tmp_path / "first.txt", tmp_path)
        assert zygote.wait(pid) == 0, (tmp_path / "first.txt").read_text()
        unit = (time.time() - t) / 9
        phases, modes, generations = search_with_kills(zygote, Plain(env), cfg, tmp_path, disk, max(10, KILLS // 5), unit, rng)
    finally:
        zygote.close()
    ts = disk.check()
    print(f"\n{sum(phases.values())} kills ({generations} generations); phases {dict(phases)}; modes {dict(modes)}")
    planned = 4 - 1 + generations * 4
    assert sorted(t.user_attrs["index"] for t in ts if t.user_attrs["seed"] == 0) == list(range(planned + 1))
    attrs = disk.attrs()
    chain = disk.mainline()
    assert [(p["index"], p["value"]) for p in attrs["promotions"]] == chain and chain, "nothing promoted"
    decisions = attrs["decisions"]
    assert not [k for k, d in decisions.items() if d["decision"] == "testing"], "a promotion test was left open"
    done = {t.user_attrs["index"] for t in ts if t.user_attrs["outcome"] == "complete" and t.user_attrs["role"] == "candidate"}
    assert done <= set(map(int, decisions))
    assert any(t.user_attrs["role"] == "confirm" for t in ts), "no confirmation run: the statistics were not exercised"
    assert phases["startup"] >= 1 and phases["run"] + phases["confirm"] >= 1 and phases["record"] >= 1, phases


SLOW = '''\
import os, subprocess, sys, time
X = 1.0
if not os.path.exists({pids!r}):  # the first run only
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # a grandchild too
    with open({pids!r}, "a") as f:
        f.write(f"{{os.getpid()}} {{child.pid}}\\n")
    time.sleep(120)
print(f"score: {{-abs(X - 3)}}")
'''


def test_runs_left_by_a_killed_search_are_killed_on_resume(make_repo, tmp_path: Path) -> None:
    """A run has its own session, so kill -9 of evo leaves it running; the next start kills it."""
    pidfile = tmp_path / "pids"
    repo = make_repo(files={"target.py": SLOW.format(pids=str(pidfile))})
    cfg = write_config(tmp_path / "evo.toml", repo, tmp_path / "evo.db", target={"timeout": 200, "time_budget": 1},
                       search={"generations": 1})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen([sys.executable, "-m", "evo", "search", "--config", str(cfg)], cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: pidfile.exists() and pidfile.read_text().endswith("\n"), 60, 0.05), "the run never started"
    finally:
        first.kill()
        first.wait()
    pids = [int(p) for p in pidfile.read_text().split()]
    assert all(alive(p) for p in pids), "the runs should outlive the killed evo"
    res = subprocess.run([sys.executable, "-m", "evo", "search", "--config", str(cfg)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "killed the runs the last (killed) evo left behind" in res.stdout
    assert not any(alive(p) for p in pids), "the old runs are still alive"


def alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


@pytest.fixture(autouse=True)
def _no_run_left(tmp_path: Path):
    """No process a run started outlives the test (orphans of killed attempts end or are killed)."""
    yield
    prefix = f"EVO_RUN_TOKEN={owner_key(tmp_path / 'results' / 'logs' / 'toy')}-".encode()

    def ours() -> list[int]:
        found = []
        for d in Path("/proc").glob("[0-9]*"):
            try:
                if any(v.startswith(prefix) for v in (d / "environ").read_bytes().split(b"\0")) and alive(int(d.name)):
                    found.append(int(d.name))
            except OSError:
                continue
        return found

    assert wait_until(lambda: not ours(), 10, 0.1), ours()


def test_promote_by_hand_to_the_mainline_waits_for_the_running_search(make_repo, tmp_path: Path) -> None:
    """Both move evo/<study>/main and write `promotions`: the hand promotion takes the search's lock."""
    target = "import os, time\nX = 1.0\ntime.sleep(float(os.environ.get('SLOW', '0')))\nprint(f'score: {-abs(X - 3)}')\n"
    repo = make_repo(files={"target.py": target})
    cfg = write_config(tmp_path / "evo.toml", repo, tmp_path / "evo.db", target={"env_allow": ["SLOW"], "timeout": 120},
                       search={"generations": 1})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    assert subprocess.run([sys.executable, "-m", "evo", "search", "--config", str(cfg)], cwd=tmp_path, env=env,
                          capture_output=True, timeout=120).returncode == 0
    running = subprocess.Popen([sys.executable, "-m", "evo", "search", "--config", str(cfg), "--generations", "3"], cwd=tmp_path,
                               env={**env, "SLOW": "60"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lock = repo / ".git" / "evo" / "toy.lock"
        assert wait_until(lambda: lock.exists() and f"pid {running.pid} " in lock.read_text(), 60, 0.05)
        storage = f"sqlite:///{tmp_path / 'evo.db'}"
        res = subprocess.run([sys.executable, "-m", "evo", "promote", "toy", "--trial", "1", "--storage", storage],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 3 and res.stderr.startswith("evo: error: study 'toy' is already running"), res.stderr
        # another branch is not the search's: allowed
        res = subprocess.run([sys.executable, "-m", "evo", "promote", "toy", "--trial", "1", "--to", "tuned", "--storage", storage],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
    finally:
        running.terminate()  # SIGTERM: evo stops its run too
        running.wait(timeout=60)
