"""Crash safety: `evo search` is killed with SIGKILL and resumed until done.

Each attempt is a real process running the real command line (`evo.cli.main`), killed with
SIGKILL. To fit many kills in CI time, most attempts are forked from a warm "zygote" that has
already imported evo (importing scipy and optuna costs more than a whole attempt); some are plain
`python -m evo search` processes. Nothing in evo knows it is being tested: the moment of a kill
is a random delay, or is chosen from outside by what evo does (a child's ref being written, a run
of some role starting, the mainline ref moving, SQLite's journal coming and going).

A kill stops evo first (SIGSTOP: nothing more happens in it), notes the runs it has going (its
child processes carry EVO_ROLE, EVO_INDIVIDUAL and EVO_SEED), then SIGKILLs it; the git commands
it had started end on their own, as they would after a real kill. Then the state on disk must
already be consistent (`Disk.check`), and what was going and what the disk holds say exactly
which phases the kill hit. With two workers one kill can hit several at once:

  startup    the study not open yet (the storage, the lock, rebuilding the state)
  commit     a child's commit and ref written in this attempt, its run not started (breeding)
  run        a baseline, replicate or candidate (screening) run going
  confirm    a confirmation run (a promotion test's further seed) going
  record     a run ended and was reported, its trial not written
  decision   a candidate's screening trial written, its decision (test, untested, promote) not
  promotion  the mainline ref moved, the archive's promotion list or the accept decision not written

Two searches are killed: greedy with the statistics off and one worker (50 kills, compared at the
end with an uninterrupted reference search), and the configuration that ships (a population, the
statistics on, two workers), whose kills are steered until every phase above has been hit;
tests/test_faults_ray.py kills the shipped shape again through the Ray executor.

EVO_FAULT_KILLS (default 50) and EVO_FAULT_SEED (default 1) change the size and the draw;
EVO_FAULT_SHIPPED_KILLS (default 0) adds random kills to the shipped search once every phase is hit.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest

from conftest import ROOT, git, write_config
from evo.runner import owner_key

KILLS = int(os.environ.get("EVO_FAULT_KILLS", "50"))
SEED = int(os.environ.get("EVO_FAULT_SEED", "1"))
SHIPPED_KILLS = int(os.environ.get("EVO_FAULT_SHIPPED_KILLS", "0"))

ZYGOTE = r'''
import json, os, sys, traceback
import evo.cli, evo.search, evo.study, evo.report, evo.executors.local, operators.constants, operators.crossover
import optuna
for name in sys.argv[1:]:
    __import__(name)
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
    """A warm interpreter that forks one `evo` command line per request.

    It starts importing at once; `ready()` waits for it (so a test can do other work meanwhile)."""

    def __init__(self, env: dict[str, str], imports: tuple[str, ...] = ()) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE, *imports], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, cwd=ROOT)
        self._ready = False

    def ready(self) -> Zygote:
        if not self._ready:
            assert self._read() == "ready"
            self._ready = True
        return self

    def _read(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the zygote died"
        return line.strip()

    def _send(self, **cmd: Any) -> str:
        assert self.proc.stdin is not None
        self.ready()
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


# -- processes, read from /proc ------------------------------------------------------------------

def state(pid: int) -> str:
    """The process's state letter (R, S, D, T, Z, ...); '' when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def alive(pid: int) -> bool:
    return state(pid) not in ("", "Z", "X")


def children(pid: int) -> list[int]:
    """Direct children of every thread of pid."""
    out: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            out += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(kv.split("=", 1) for kv in raw.decode(errors="replace").split("\0") if "=" in kv)


Run = tuple[int, int, str]  # (index, seed, role) of a run process, from its environment


def run_of(env: dict[str, str]) -> Run | None:
    if "EVO_ROLE" not in env:
        return None
    return int(env["EVO_INDIVIDUAL"]), int(env["EVO_SEED"]), env["EVO_ROLE"]


def local_runs(pid: int) -> list[Run]:
    """The runs evo (pid) has going: the local executor's runs are its children."""
    return [r for c in children(pid) if (r := run_of(environ(c))) is not None]


def ray_runs(cache: str) -> list[Run]:
    """The runs going on this machine's Ray workers for the study whose EVO_CACHE is `cache`."""
    found = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            env = environ(int(name))
            if env.get("EVO_CACHE") == cache and "EVO_RAY_RUN" in env and (r := run_of(env)) is not None and alive(int(name)):
                found.add(r)
    return sorted(found)


def wait_until(pred: Callable[[], bool], limit: float, step: float = 0.001) -> bool:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return False


def stop_and_kill(pid: int, runs: Callable[[], list[Run]]) -> list[Run] | None:
    """SIGSTOP evo, note the runs going, SIGKILL it; None if it had ended on its own.

    Evo's other children (git commands) are left to end, as after any kill -9, before this returns."""
    try:
        os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        return None
    assert wait_until(lambda: state(pid) in ("T", "t", "Z", "X", ""), 30), f"evo ({pid}) never stopped: {state(pid)}"
    if not alive(pid):
        return None
    going = runs()
    others = [c for c in children(pid) if run_of(environ(c)) is None]
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not any(alive(c) for c in others), 60), "a command evo started never ended"
    return going


# -- what is on disk ---------------------------------------------------------------------------

# a finished run as the search prints it: "[  12/23] #7    g1   constants   confirm seed 2   score ..."
RUN_LINE = re.compile(r"^\[\s*\d+(?:/\d+)?\] #(\d+)\s+g\d+\s+\S+\s+(?:\w+ seed (\d+))?", re.M)


@dataclass
class Kill:
    """One kill: what the attempt printed, the candidate refs before it started, the runs it had going."""

    text: str
    refs_before: set[int]
    runs: list[Run]


class Disk:
    """Reads a study's archive and refs the way a second process would."""

    def __init__(self, repo: Path, storage: Path, name: str) -> None:
        self.repo, self.storage, self.name = repo, storage, name
        self.logs = storage.parent / "results" / "logs" / name
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
        """The study's facts as evo reads them (decisions, promotions, ...), wherever evo keeps them."""
        if not self.study:
            return {}
        try:
            from evo.archive import read_facts
        except ImportError:  # facts kept as plain user attrs
            return dict(self.study.user_attrs)
        return read_facts(self.study._storage, self.study._study_id)  # type: ignore[attr-defined]

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
        # the order of writes: a trial before its decision, the mainline ref before the archive's copy and the decision
        attrs = self.attrs()
        screened = {t.user_attrs["index"]: t for t in ts if t.user_attrs["role"] == "candidate" and t.user_attrs["seed"] == 0}
        decisions = attrs.get("decisions", {})
        early = [k for k in decisions if int(k) not in screened or screened[int(k)].user_attrs["outcome"] != "complete"]
        assert not early, f"decided before its screening run was recorded: {early}"
        chain = self.mainline()
        promotions = [(p["index"], p["value"]) for p in attrs.get("promotions", [])]
        assert promotions == chain[:len(promotions)], f"the archive's promotions {promotions} are not the mainline's {chain}"
        accepted = {int(k) for k, d in decisions.items() if d["decision"] == "accept"}
        assert accepted <= {i for i, _ in chain}, f"accepted but not on the mainline: {accepted - {i for i, _ in chain}}"
        assert all(screened[i].value == v for i, v in chain), "a promotion's value is not its candidate's screening value"
        return ts

    def phases(self, kill: Kill) -> set[str]:
        """Which phases the kill hit, from what was going and what the disk holds (see the module's doc)."""
        if f"study {self.name}" not in kill.text:
            return {"startup"}
        ts = self.trials()
        attrs = self.attrs()
        done = {(t.user_attrs["index"], t.user_attrs["seed"]) for t in ts}
        hit = {"confirm" if role == "confirm" else "run" for i, s, role in kill.runs if (i, s) not in done}
        printed = {(int(m[1]), int(m[2] or 0)) for m in RUN_LINE.finditer(kill.text)}
        if printed - done:
            hit.add("record")
        decisions = attrs.get("decisions", {})
        if any(a["index"] > 0 and a["role"] == "candidate" and a["seed"] == 0 and a["outcome"] == "complete" and str(a["index"]) not in decisions
               for a in (t.user_attrs for t in ts)):
            hit.add("decision")
        chain = self.mainline()
        if len(chain) != len(attrs.get("promotions", [])) or (chain and decisions.get(str(chain[-1][0]), {}).get("decision") != "accept"):
            hit.add("promotion")
        going = {i for i, _, _ in kill.runs}
        for i in set(self.refs()) - kill.refs_before - {i for i, _ in done}:
            if i > 0 and i not in going and (i, 0) not in printed and not (self.logs / f"{i:05d}-seed0.log").exists():
                hit.add("commit")  # bred in this attempt, its run never started
        return hit or {"between"}

    def mean_run(self) -> float:
        secs = [float(t.user_attrs.get("run_seconds", 0.0)) for t in self.trials() if t.user_attrs.get("run_seconds")]
        return sum(secs) / len(secs) if secs else 0.3


def summary(ts: list[optuna.trial.FrozenTrial]) -> list[tuple[Any, ...]]:
    """A search's results, less what differs between two identical searches (times, commit ids)."""
    return sorted(
        (a["index"], a["seed"], a["role"], a["outcome"], a["operator"], a["description"], tuple(a["parent_indices"]),
         None if t.value is None else round(t.value, 9))
        for t in ts for a in [t.user_attrs]
    )


# -- choosing the moment --------------------------------------------------------------------------

class Moment:
    """Waits, from outside, for the moment to kill one attempt (pid). Every wait gives up after
    `limit` seconds (the kill then comes anyway) or when evo ends on its own."""

    def __init__(self, pid: int, disk: Disk, out: Path, rng: random.Random, unit: float, runs: Callable[[], list[Run]]) -> None:
        self.pid, self.disk, self.out, self.rng, self.unit, self.runs = pid, disk, out, rng, unit, runs
        self.refs = disk.repo / ".git" / "refs" / "heads" / "evo" / disk.name
        self.journal_file = disk.storage.with_name(disk.storage.name + "-journal")

    def until(self, pred: Callable[[], bool], limit: float, step: float) -> bool:
        end = time.monotonic() + limit
        while time.monotonic() < end:
            if pred():
                return True
            if not alive(self.pid):
                return False
            time.sleep(step)
        return False

    def opened(self) -> bool:
        return self.until(lambda: f"study {self.disk.name}" in self.out.read_text(errors="replace"), 120, 0.005)

    def wait(self, mode: str, limit: float, delay: float = 0.0) -> None:
        if mode == "early":  # while it opens the study
            time.sleep(self.rng.uniform(0.0, delay))
            return
        if not self.opened():
            return  # it ended (a crash is reported by the caller)
        time.sleep(self.rng.uniform(0.0, delay))
        getattr(self, mode)(limit)

    def random(self, limit: float) -> None:
        pass  # the delay was the moment

    def ref(self, limit: float) -> None:
        """A child's ref being written (its .lock or the ref itself): in the middle of breeding."""
        def names() -> set[str]:
            try:
                return set(os.listdir(self.refs / "c"))
            except OSError:
                return set()
        known = names()
        self.until(lambda: bool(names() - known), limit, 0.0005)

    def main(self, limit: float) -> None:
        """The mainline ref moving (git's main.lock, or the ref changed): in the middle of a promotion."""
        tip = (self.refs / "main").read_bytes()
        self.until(lambda: (self.refs / "main.lock").exists() or (self.refs / "main").read_bytes() != tip, limit, 0.0003)

    def run(self, limit: float) -> None:
        self.until(lambda: any(role != "confirm" for _, _, role in self.runs()), limit, 0.002)

    def confirm(self, limit: float) -> None:
        self.until(lambda: any(role == "confirm" for _, _, role in self.runs()), limit, 0.002)

    def journal(self, limit: float) -> None:
        """SQLite's journal appearing: in the middle of a write (a trial, a decision, a promotion)."""
        self.until(self.journal_file.exists, limit, 0.0002)

    def record(self, limit: float) -> None:
        """A run reported (its line printed): its trial is written next."""
        seen = len(RUN_LINE.findall(self.out.read_text(errors="replace")))
        self.until(lambda: len(RUN_LINE.findall(self.out.read_text(errors="replace"))) > seen, limit, 0.0003)

    def decision(self, limit: float) -> None:
        """A candidate's run ends; its trial is written (SQLite's journal comes and goes): before its decision is."""
        def candidates() -> set[tuple[int, int]]:
            return {(i, s) for i, s, role in self.runs() if role == "candidate" and i > 0}
        if not self.until(lambda: bool(candidates()), limit, 0.002):
            return
        watched = candidates()
        if not self.until(lambda: not watched & candidates(), limit, 0.0005):
            return
        journal = {"was": False, "seen": 0}

        def written() -> bool:
            now = self.journal_file.exists()
            journal["seen"] += now and not journal["was"]
            journal["was"] = now
            return (journal["seen"] >= 1 and not now) or journal["seen"] >= 2
        self.until(written, limit, 0.0002)


# the greedy test's draw of moments
MODES = ("early",) * 2 + ("random",) * 10 + ("ref", "main", "journal") * 2


@dataclass
class Killed:
    phases: Counter[str]  # kills that hit each phase
    modes: Counter[str]  # kills made with each mode
    kills: int
    generations: int  # the budget the search ended with
    seconds: float
    log: list[str]  # each kill's mode and the phases it hit


def search_with_kills(zygote: Zygote, plain: Plain, cfg: Path, cwd: Path, disk: Disk, rng: random.Random,
                      choose: Callable[[Counter[str], int, int], str | None], *, plain_at: set[int] = frozenset(),  # type: ignore[assignment]
                      unit: Callable[[], float], delay: Callable[[str, bool, float], float], limit: Callable[[float], float],
                      runs: Callable[[int], list[Run]] = local_runs, before: Callable[[], None] = lambda: None,
                      max_attempts: int = 200, grow: int = 10) -> Killed:
    """Kill and resume until `choose` says stop (None), then resume to the end.

    choose(phases, kills, attempt) -> the mode of the next attempt's kill, or None: let it finish.
    When the search finishes before that, its budget grows by `grow` generations (the same study).
    unit() is a run's length; delay(mode, warm, unit) the random delay before a moment is waited for;
    limit(unit) how long to wait for it; runs(pid) the runs going; before() runs before each attempt."""
    phases: Counter[str] = Counter()
    modes: Counter[str] = Counter()
    generations = int(re.search(r"generations = (\d+)", cfg.read_text())[1])  # type: ignore[index]
    kills = attempt = 0
    log: list[str] = []
    t = time.time()
    while True:
        attempt += 1
        assert attempt <= max_attempts, f"{kills} kills in {attempt - 1} attempts and the phases still missing: hit {dict(phases)}"
        out = cwd / f"attempt-{attempt}.txt"
        runner = plain if attempt in plain_at else zygote
        mode = choose(phases, kills, attempt)
        u = unit()
        before()
        refs_before = set(disk.refs())
        pid = runner.spawn(["search", "--config", str(cfg), "--generations", str(generations)], out, cwd)
        going = None
        if mode is not None:
            Moment(pid, disk, out, rng, u, lambda: runs(pid)).wait(mode, limit(u), delay(mode, runner is zygote, u))
            going = stop_and_kill(pid, lambda: runs(pid))
        rc = runner.wait(pid)
        text = out.read_text(errors="replace")
        if going is None:  # not killed: it finished (or crashed)
            assert rc == 0 and "done:" in text, f"attempt {attempt}: exit {rc}\n{text[-3000:]}"
            if mode is None:
                return Killed(phases, modes, kills, generations, time.time() - t, log)
            generations += grow  # finished too soon: a bigger budget for the same study
            continue
        assert rc == -signal.SIGKILL, f"attempt {attempt}: exit {rc}\n{text[-3000:]}"
        disk.check()
        kills += 1
        modes[mode] += 1
        hit = disk.phases(Kill(text, refs_before, going))
        phases.update(hit)
        log.append(f"{mode}:{'+'.join(sorted(hit))}")


def assert_complete(disk: Disk, population: int, generations: int) -> list[optuna.trial.FrozenTrial]:
    """The resumed population study is whole: every planned child screened once and decided, every test closed,
    the mainline and the archive's promotions one chain."""
    ts = disk.check()
    planned = population - 1 + generations * population
    assert sorted(t.user_attrs["index"] for t in ts if t.user_attrs["seed"] == 0) == list(range(planned + 1))
    assert set(disk.refs()) == {t.user_attrs["index"] for t in ts if t.user_attrs["commit"]}
    attrs = disk.attrs()
    chain = disk.mainline()
    assert [(p["index"], p["value"]) for p in attrs["promotions"]] == chain and chain, "nothing promoted"
    decisions = attrs["decisions"]
    assert not [k for k, d in decisions.items() if d["decision"] == "testing"], "a promotion test was left open"
    done = {t.user_attrs["index"] for t in ts if t.user_attrs["outcome"] == "complete" and t.user_attrs["role"] == "candidate"}
    assert done == set(map(int, decisions)), "a screened candidate was never decided, or a decision has no candidate"
    assert all(decisions[str(i)]["decision"] == "accept" for i, _ in chain)
    assert any(t.user_attrs["role"] == "confirm" for t in ts), "no confirmation run: the statistics were not exercised"
    return ts


@pytest.mark.timeout(900)
def test_kill_9_at_random_moments_then_resume(make_repo, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sections = dict(search={"strategy": "greedy", "generations": 60}, operators={"max_changes": 1})
    repo = make_repo(name="repo")
    cfg = write_config(tmp_path / "evo.toml", repo, tmp_path / "evo.db", **sections)
    ref_repo = make_repo(name="ref")
    ref_cfg = write_config(tmp_path / "ref.toml", ref_repo, tmp_path / "ref.db", **sections)
    zygote = Zygote(env).ready()
    try:
        # a short uninterrupted search measures how long one candidate takes on this machine
        t = time.time()
        pid = zygote.spawn(["search", "--config", str(ref_cfg), "--generations", "8"], tmp_path / "ref.txt", tmp_path)
        assert zygote.wait(pid) == 0, (tmp_path / "ref.txt").read_text()
        unit = (time.time() - t) / 9
        disk = Disk(repo, tmp_path / "evo.db", "toy")

        def choose(phases: Counter[str], kills: int, attempt: int) -> str | None:
            if kills >= KILLS:
                return None
            return rng.choice(MODES) if attempt > 1 else "random"

        def delay(mode: str, warm: bool, unit: float) -> float:
            return (0.3 if warm else 3.0) if mode == "early" else 1.5 * unit

        killed = search_with_kills(zygote, Plain(env), cfg, tmp_path, disk, rng, choose, plain_at={1, KILLS // 2},
                                   unit=lambda: unit, delay=delay, limit=lambda u: 4 * u)
        # the reference: the same search, never interrupted (resumed from its first 8 children)
        pid = zygote.spawn(["search", "--config", str(ref_cfg), "--generations", str(killed.generations)], tmp_path / "ref.txt", tmp_path)
        assert zygote.wait(pid) == 0, (tmp_path / "ref.txt").read_text()
    finally:
        zygote.close()
    generations, phases = killed.generations, killed.phases
    print(f"\n{killed.kills} kills in {killed.seconds:.0f}s ({generations} children, {unit:.2f}s each); phases {dict(phases)}; modes {dict(killed.modes)}")
    assert killed.kills >= KILLS
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


# The shipped configuration's phases, and the moment that aims at each (in the order they are aimed at:
# promotions and confirmation runs are frequent early in a study, while candidates still improve a lot).
AIM = {"startup": "early", "promotion": "main", "confirm": "confirm", "decision": "decision", "commit": "ref", "record": "record", "run": "run"}


def steer(wanted: tuple[str, ...], more: int, rng: random.Random) -> Callable[[Counter[str], int, int], str | None]:
    """Aim each kill at a phase not hit yet (the one aimed at least so far); once all are hit, `more`
    kills at random moments of any kind; then none."""
    aimed: Counter[str] = Counter()
    extra = [0]

    def choose(phases: Counter[str], kills: int, attempt: int) -> str | None:
        missing = [p for p in wanted if not phases[p]]
        if missing:
            p = min(missing, key=lambda p: (aimed[p], wanted.index(p)))
            aimed[p] += 1
            return AIM[p]
        if extra[0] < more:
            extra[0] += 1
            return rng.choice(("random", "random", *(AIM[p] for p in wanted)))
        return None

    return choose


def shipped_delay(mode: str, warm: bool, unit: float) -> float:
    if mode == "early":
        return 0.4 if warm else 3.0
    return 1.5 * unit if mode == "random" else 0.0


SHIPPED = dict(search={"strategy": "population", "population": 4, "generations": 2, "workers": 2},
               sprt={"enabled": True, "replicates": 3, "max_pairs": 4, "gate": 0.5})
PHASES = tuple(AIM)


@pytest.mark.timeout(900)
def test_kill_9_on_the_shipped_configuration(make_repo, tmp_path: Path) -> None:
    """The default shape: a population, the statistics on (replicates, futility, confirmation runs),
    two workers. Kills are aimed until each phase has been hit at least once; two workers make the
    order of results depend on timing, so the resumed study is not compared with a reference: it
    must hold the invariants after every kill and end complete."""
    rng = random.Random(SEED + 1)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    repo = make_repo(noise=0.4)
    cfg = write_config(tmp_path / "evo.toml", repo, tmp_path / "evo.db", **SHIPPED)  # type: ignore[arg-type]
    zygote = Zygote(env).ready()
    disk = Disk(repo, tmp_path / "evo.db", "toy")
    try:  # the second attempt is a plain start (the rest are forked from the zygote)
        killed = search_with_kills(zygote, Plain(env), cfg, tmp_path, disk, rng, steer(PHASES, SHIPPED_KILLS, rng), plain_at={2},
                                   unit=disk.mean_run, delay=shipped_delay, limit=lambda u: 30 * u + 10, max_attempts=40, grow=1)
    finally:
        zygote.close()
    print(f"\n{killed.kills} kills in {killed.seconds:.0f}s ({killed.generations} generations); phases {dict(killed.phases)}; "
          f"modes {dict(killed.modes)}\n{' '.join(killed.log)}")
    assert_complete(disk, 4, killed.generations)
    assert all(killed.phases[p] >= 1 for p in PHASES), killed.phases


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
