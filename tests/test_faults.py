"""Crash safety: `evo search` is killed with SIGKILL and resumed until done.

Each attempt is a real process running the real command line (`evo.cli.main`), killed with
SIGKILL. To fit many kills in CI time, most attempts are forked from a warm "zygote" that has
already imported evo (importing scipy and optuna costs more than a whole attempt); some are plain
`python -m evo search` processes. Nothing in evo knows it is being tested. The moment of a kill
is a random delay, or is aimed from outside at a phase by watching what evo does:

  startup    the study being made: evo is stepped from one SQLite write to the next (stopped after each
             write to the write-ahead log) until some, not all, of the facts that make a study are written;
             or, once made, opened again (a random delay after the start)
  commit     a child's ref being written (git's lock file under refs/evo/<study>/c/)
  run        a child's run going (a run process carries EVO_ROLE, EVO_INDIVIDUAL and EVO_SEED)
  confirm    a confirmation run going
  record     a child's run reported (its line printed), evo stopped before its trial is committed
  decision   a candidate's trial committed, evo stepped and stopped before its decision is
  promotion  the mainline ref being moved (git's main.lock), or the archive's list of promotions grown
             before it (the wrong order, which must never happen)

A kill stops evo first (SIGSTOP: nothing more happens in it), notes the runs it has going, then
SIGKILLs it; the git commands it had started end on their own, as after any kill -9. Then the state
on disk must already be consistent (`Disk.check`: no trial RUNNING or twice, every trial's commit
its ref's and its genealogy its commit's, the facts of a made study all there, a decision only
after its trial, the mainline ref before the archive's copy, no candidate promoted twice, each
promotion commit on the previous one and the candidate), and what was going and what the disk
holds say which phases the kill hit (`Disk.phases`; with two workers one kill can hit several).
Every run also leaves a process of its own session behind (shipped shape), which the next start
must kill.

Two searches are killed: greedy with the statistics off and one worker (50 kills at random moments,
compared at the end with an uninterrupted reference search), and the configuration that ships (a
population, the statistics on, two workers), whose kills are aimed until every phase above has been
hit at least once; tests/test_faults_ray.py kills the shipped shape again through the Ray executor.

EVO_FAULT_KILLS (default 50) and EVO_FAULT_SEED (default 1) change the size and the draw;
EVO_FAULT_SHIPPED_KILLS (default 0): kill the shipped search at least this often (at moments of any
kind once every phase is hit).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import sqlite3
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

from conftest import ROOT, TARGET, facts, git, write_config
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


def local_runs(pid: int) -> dict[int, Run]:
    """The runs evo (pid) has going, by process: its children (runs started cold) and its warm-start
    zygote's children (runs forked warm, `[target] preload`)."""
    found = {}
    for c in children(pid):
        if (r := run_of(environ(c))) is not None:
            found[c] = r
        elif warm_zygote(c):
            found.update({g: r for g in children(c) if (r := run_of(environ(g))) is not None})
    return found


def warm_zygote(pid: int) -> bool:
    """Whether pid is evo's warm-start zygote (evo/executors/zygote.py), or a run it forked."""
    try:
        return any(arg.endswith(b"evo/executors/zygote.py") for arg in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"))
    except OSError:
        return False


def parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def ray_runs(cache: str) -> dict[int, Run]:
    """The runs going on this machine's Ray workers for the study whose EVO_CACHE is `cache`, by process."""
    found = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            env = environ(int(name))
            if env.get("EVO_CACHE") == cache and "EVO_RAY_RUN" in env and (r := run_of(env)) is not None and alive(int(name)):
                found[int(name)] = r
    return found


def wait_until(pred: Callable[[], bool], limit: float, step: float = 0.001) -> bool:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return False


def stop_and_kill(pid: int, runs: Callable[[], dict[int, Run]], seen: dict[int, Run]) -> tuple[list[Run], list[Run]] | None:
    """SIGSTOP evo, note the runs going and those ended but not collected yet (its zombie children that
    were seen running: `seen`), SIGKILL it; None if it had ended on its own.

    Evo's other children (git commands) are left to end, as after any kill -9, before this returns."""
    try:
        os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        return None
    assert wait_until(lambda: state(pid) in ("T", "t", "Z", "X", ""), 30), f"evo ({pid}) never stopped: {state(pid)}"
    if not alive(pid):
        return None
    going = runs()
    kids = children(pid)
    ended = [seen[c] for c in kids if c in seen and state(c) == "Z"]
    others = [c for c in kids if c not in going and c not in seen]
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not any(alive(c) for c in others), 60), "a command evo started never ended"
    return list(going.values()), ended


# -- what is on disk ---------------------------------------------------------------------------

# a finished run as the search prints it: "[  12/23] #7    g1   constants   confirm seed 2   score ..."
RUN_LINE = re.compile(r"^\[\s*\d+(?:/\d+)?\] #(\d+)\s+g\d+\s+\S+\s+(?:\w+ seed (\d+))?", re.M)


@dataclass
class Kill:
    """One kill: what the attempt printed, the candidate refs before it started, the runs it had going."""

    text: str
    refs_before: set[int]
    runs: list[Run]  # going
    ended: list[Run]  # ended, not collected by evo yet


class Disk:
    """Reads a study's archive and refs the way a second process would."""

    def __init__(self, repo: Path, storage: Path, name: str) -> None:
        self.repo, self.storage, self.name = repo, storage, name
        self.logs = storage.parent / "results" / "logs" / name
        self._study: optuna.Study | None = None

    @property
    def study(self) -> optuna.Study | None:
        if self._study is None and self.created():
            self._study = optuna.load_study(study_name=self.name, storage=f"sqlite:///{self.storage}")
        return self._study

    def created(self) -> bool:
        """Whether the study exists, asked of SQLite itself: Optuna would create its tables in a storage that was
        killed before it had them all, doing evo's work for it."""
        if not self.storage.exists():
            return False
        db = sqlite3.connect(self.storage, timeout=60)
        try:
            return db.execute("SELECT 1 FROM studies WHERE study_name = ?", (self.name,)).fetchone() is not None
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):
                return False
            raise
        finally:
            db.close()

    def trials(self) -> list[optuna.trial.FrozenTrial]:
        return self.study.get_trials(deepcopy=False) if self.study else []

    def attrs(self) -> dict[str, Any]:
        """The study's facts as evo reads them (decisions, promotions, ...)."""
        return facts(self.study) if self.study else {}

    def refs(self) -> dict[int, str]:
        out = git(self.repo, "for-each-ref", "--format=%(refname) %(objectname)", f"refs/evo/{self.name}/c/")
        return {int(r.rsplit("/", 1)[1]): sha for r, sha in (line.split() for line in out.splitlines())}

    def mainline(self) -> list[tuple[int, float]]:
        """(index, value) of every promotion on the mainline, oldest first."""
        base = self.attrs().get("base_commit")
        if not base or not git(self.repo, "for-each-ref", f"refs/heads/evo/{self.name}/main"):
            return []  # killed before the study had them
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
        # the archive and git tell one story: a trial's genealogy is its commit's (Evo-* trailers, git parents)
        told = {}
        if commits:
            log = git(self.repo, "log", "--no-walk=unsorted", "--format=%H%x00%P%x00%B%x01", *sorted(commits))
            for entry in log.split("\x01"):
                if "\x00" in entry:
                    sha, parents, msg = entry.strip().split("\x00", 2)
                    told[sha] = (parents.split(), dict(re.findall(r"^Evo-([A-Za-z-]+): (.*)$", msg, re.M)))
        for t in ts:
            a = t.user_attrs
            if a["commit"] and a["index"] > 0:
                parents, trailers = told[a["commit"]]
                said = (int(trailers["Index"]), trailers["Operator"], int(trailers["Generation"]),
                        [int(x) for x in trailers["Parents"].split(",") if x], parents)
                kept = (a["index"], a["operator"], a["generation"], list(a["parent_indices"]), list(a["parents"]))
                assert kept == said, f"trial {t.number}: the archive says {kept}, the commit {said}"
        # the order of writes: a made study's facts before its base commit, a trial before its decision, the mainline
        # ref before the archive's copy and the decision
        attrs = self.attrs()
        if "base_commit" in attrs:
            assert CREATION <= set(attrs), f"the study has its base commit but not {sorted(CREATION - set(attrs))}"
        screened = {t.user_attrs["index"]: t for t in ts if t.user_attrs["role"] == "candidate" and t.user_attrs["seed"] == 0}
        decisions = attrs.get("decisions", {})
        early = [k for k in decisions if int(k) not in screened or screened[int(k)].user_attrs["outcome"] != "complete"]
        assert not early, f"decided before its screening run was recorded: {early}"
        chain = self.mainline()
        promotions = [(p["index"], p["value"]) for p in attrs.get("promotions", [])]
        assert promotions == chain[:len(promotions)], f"the archive's promotions {promotions} are not the mainline's {chain}"
        assert len({i for i, _ in chain}) == len(chain), f"a candidate promoted twice: {chain}"
        if chain:  # each promotion commit has the previous mainline commit and the candidate's commit as parents
            tip = attrs["base_commit"]
            log = git(self.repo, "log", "--first-parent", "--reverse", "--format=%H %P%x00%(trailers:key=Evo-Candidate,valueonly)%x01",
                      f"{tip}..refs/heads/evo/{self.name}/main")
            for entry in log.split("\x01"):
                if "\x00" not in entry:
                    continue
                shas, candidate = entry.strip().split("\x00")
                sha, *parents = shas.split()
                assert parents == [tip, candidate.strip()], f"promotion {sha[:8]}: parents {parents}, not [{tip[:8]}, {candidate.strip()[:8]}]"
                tip = sha
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
        if printed - done or {(i, s) for i, s, _ in kill.ended} - done:
            hit.add("record")
        decisions = attrs.get("decisions", {})
        if self.undecided(ts, attrs):
            hit.add("decision")
        chain = self.mainline()
        if len(chain) != len(attrs.get("promotions", [])) or (chain and decisions.get(str(chain[-1][0]), {}).get("decision") != "accept"):
            hit.add("promotion")
        going = {i for i, _, _ in kill.runs + kill.ended}
        for i in set(self.refs()) - kill.refs_before - {i for i, _ in done}:
            if i > 0 and i not in going and (i, 0) not in printed and not (self.logs / f"{i:05d}-seed0.log").exists():
                hit.add("commit")  # bred in this attempt, its run never started
        return hit or {"between"}

    def undecided(self, ts: list[optuna.trial.FrozenTrial] | None = None, attrs: dict[str, Any] | None = None) -> list[int]:
        """Candidates whose screening run is recorded (complete) and who have no decision."""
        ts = self.trials() if ts is None else ts
        decisions = (self.attrs() if attrs is None else attrs).get("decisions", {})
        return [a["index"] for a in (t.user_attrs for t in ts)
                if a["index"] > 0 and a["role"] == "candidate" and a["seed"] == 0 and a["outcome"] == "complete" and str(a["index"]) not in decisions]

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

    def __init__(self, pid: int, disk: Disk, out: Path, rng: random.Random, unit: float, runs: Callable[[], dict[int, Run]],
                 fresh: bool = False) -> None:
        self.pid, self.disk, self.out, self.rng, self.unit, self._runs = pid, disk, out, rng, unit, runs
        self.fresh = fresh  # the study is not made yet (no base commit): this attempt makes it
        self.seen: dict[int, Run] = {}  # every run process seen, by pid
        self.warm: set[int] = set()  # those forked warm
        self.refs = disk.repo / ".git" / "refs" / "heads" / "evo" / disk.name  # the mainline
        self.children = disk.repo / ".git" / "refs" / "evo" / disk.name / "c"  # the candidates' refs (not branches)
        self.wal_file = disk.storage.with_name(disk.storage.name + "-wal")  # the archive is SQLite in WAL mode
        self._wal_seen = self.wal_state()

    def wal_state(self) -> tuple[int, int]:
        try:
            st = os.stat(self.wal_file)
            return st.st_size, st.st_mtime_ns
        except OSError:
            return (-1, -1)

    def wrote(self) -> bool:
        """The write-ahead log changed since the last look: a write is going or has just been committed."""
        now = self.wal_state()
        changed, self._wal_seen = now != self._wal_seen, now
        return changed

    def going(self) -> dict[int, Run]:
        going = self._runs()
        self.seen.update(going)
        self.warm.update(p for p in going if warm_zygote(parent(p)))  # forked by evo's warm-start zygote
        return going

    def runs(self) -> list[Run]:
        return list(self.going().values())

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
        if mode == "early":  # while it makes or opens the study
            if self.fresh:
                self.create(limit)
            else:
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
                return set(os.listdir(self.children))
            except OSError:
                return set()
        known = names()
        self.until(lambda: bool(names() - known), limit, 0.0005)

    def main(self, limit: float) -> None:
        """The mainline ref moving (git's main.lock, or the ref changed): in the middle of a promotion; or, if
        evo wrote them the other way round, the archive's promotion list grown with the ref still in place."""
        tip = (self.refs / "main").read_bytes()
        known = len(self.disk.attrs().get("promotions", []))

        def moving() -> bool:
            return (self.refs / "main.lock").exists() or (self.refs / "main").read_bytes() != tip

        def ahead(db: sqlite3.Connection) -> bool:
            return len(read_fact(db, self.disk.name, "promotions") or []) > known and not moving()
        self.step(ahead, limit, also=moving)

    def run(self, limit: float) -> None:
        """A child's screening run going (the baseline's runs are hit by the other moments early on)."""
        self.until(lambda: any(role == "candidate" and i > 0 for i, _, role in self.runs()), limit, 0.002)

    def confirm(self, limit: float) -> None:
        self.until(lambda: any(role == "confirm" for _, _, role in self.runs()), limit, 0.002)

    def journal(self, limit: float) -> None:
        """SQLite's write-ahead log growing: in the middle of a write (a trial, a decision, a promotion), or just after."""
        self.wrote()
        self.until(self.wrote, limit, 0.0002)

    def record(self, limit: float) -> None:
        """A child's run reported (its line printed) and its trial not committed: evo is stopped as each such
        line appears, and let go again if the trial was written all the same."""
        end = time.monotonic() + limit
        db = self.connect(limit)
        if db is None:
            return

        def reported() -> set[tuple[int, int]]:
            return {(int(m[1]), int(m[2] or 0)) for m in RUN_LINE.finditer(self.out.read_text(errors="replace")) if int(m[1]) > 0}
        try:
            seen = reported()
            while self.until(lambda: bool(reported() - seen), end - time.monotonic(), 0.0003):
                got = self.pause(db)
                if got is None or got == "writing":
                    return  # in the middle of its trial's write (the first after the line), or ended
                if reported() - {(t.user_attrs["index"], t.user_attrs["seed"]) for t in self.disk.trials()}:
                    return
                seen = reported()
                os.kill(self.pid, signal.SIGCONT)
        finally:
            db.close()

    def pause(self, db: sqlite3.Connection) -> str | None:
        """Stop evo: 'writing' if it is in the middle of an SQLite write (it holds the write lock: nothing of the
        write is committed), 'quiet' if not (what is committed can be read while it stays stopped); None if it
        has ended. In WAL mode readers never wait for a writer, so the lock is probed by taking it (BEGIN
        IMMEDIATE, no wait) on a connection of our own and letting it go at once."""
        os.kill(self.pid, signal.SIGSTOP)
        if not wait_until(lambda: state(self.pid) in ("T", "t", "Z", "X", ""), 30) or not alive(self.pid):
            return None
        probe = sqlite3.connect(self.disk.storage, timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return "quiet"
        except sqlite3.OperationalError as e:  # locked; or "locking protocol": stopped inside the WAL index's own locks
            if not any(w in str(e) for w in ("locked", "busy", "locking protocol")):
                raise
            return "writing"
        finally:
            probe.close()

    def connect(self, limit: float) -> sqlite3.Connection | None:
        if not self.until(self.disk.storage.exists, limit, 0.0002):
            return None
        return sqlite3.connect(f"file:{self.disk.storage}?mode=ro", uri=True, timeout=0)

    def step(self, pred: Callable[[sqlite3.Connection], bool], limit: float, also: Callable[[], bool] = lambda: False) -> None:
        """Step evo from one SQLite write to the next: stop it after each write to the write-ahead log (when it
        holds no write lock, so the committed state can be read while nothing moves) and let it go on, until
        pred(a read-only connection) holds; then leave it stopped, for the kill. `also`, watched all along,
        ends the wait too."""
        end = time.monotonic() + limit
        db = self.connect(limit)
        if db is None:
            return
        try:
            self.wrote()
            while time.monotonic() < end:
                if not self.until(lambda: self.wrote() or also(), end - time.monotonic(), 0.0002) or also():
                    return
                got = self.pause(db)
                while got == "writing" and time.monotonic() < end:  # its commit is a moment away: let it finish
                    os.kill(self.pid, signal.SIGCONT)
                    time.sleep(0.0001)
                    got = self.pause(db)
                if got is None or (got == "quiet" and pred(db)):
                    return
                self.wrote()  # what it wrote up to the stop is seen
                os.kill(self.pid, signal.SIGCONT)
        finally:
            db.close()

    def decision(self, limit: float) -> None:
        """Between a candidate's trial and its decision: a screened candidate has no decision."""
        trials = [-1]

        def undecided(db: sqlite3.Connection) -> bool:
            n = db.execute("SELECT count(*) FROM trials").fetchone()[0]
            if n == trials[0]:
                return False
            trials[0] = n
            return bool(self.disk.undecided())
        self.step(undecided, limit)

    def create(self, limit: float) -> None:
        """While the study is being made: some of the facts that make a study written, not all of them."""
        k = self.rng.randint(1, len(CREATION) - 1)

        def partly(db: sqlite3.Connection) -> bool:
            return k <= len(written_facts(db, self.disk.name) & CREATION) < len(CREATION)
        self.step(partly, limit)


# the facts evo writes when it makes a study (evo.study.Study.load), `base_commit` last: a study that has it has all the rest
CREATION = frozenset({"config", "repo", "namespace", "mainline", "metric", "direction", "strategy", "seed", "mutable", "fingerprint",
                      "created", "base_commit"})


def read_fact(db: sqlite3.Connection, name: str, key: str) -> Any:
    """One fact of a study (an Optuna user attr, or the system attr evo:KEY), read with SQLite; None if not written."""
    rows = db.execute("SELECT value_json FROM study_user_attributes a JOIN studies s ON a.study_id = s.study_id "
                      "WHERE s.study_name = ? AND a.key = ? UNION ALL "
                      "SELECT value_json FROM study_system_attributes a JOIN studies s ON a.study_id = s.study_id "
                      "WHERE s.study_name = ? AND a.key = ?", (name, key, name, f"evo:{key}")).fetchall()
    return json.loads(rows[0][0]) if rows else None


def written_facts(db: sqlite3.Connection, name: str) -> set[str]:
    """The names of the facts stored for a study (Optuna user attrs, or system attrs named evo:NAME), read with SQLite."""
    try:
        rows = db.execute("SELECT key FROM study_user_attributes a JOIN studies s ON a.study_id = s.study_id WHERE s.study_name = ? "
                          "UNION SELECT key FROM study_system_attributes a JOIN studies s ON a.study_id = s.study_id WHERE s.study_name = ?",
                          (name, name)).fetchall()
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return set()  # the tables are not made yet
        raise
    return {k.removeprefix("evo:") for (k,) in rows if ":" not in k.removeprefix("evo:")}


# the greedy test's draw of moments
REQUIRED = ("startup", "commit", "run", "record")  # the phases the random-kill test must have hit
MODES = ("early",) * 2 + ("random",) * 10 + ("ref", "main", "journal") * 2


@dataclass
class Killed:
    phases: Counter[str]  # kills that hit each phase
    modes: Counter[str]  # kills made with each mode
    kills: int
    generations: int  # the budget the search ended with
    seconds: float
    log: list[str]  # each kill's mode and the phases it hit
    warm: int  # run processes seen that were forked warm


def search_with_kills(zygote: Zygote, plain: Plain, cfg: Path, cwd: Path, disk: Disk, rng: random.Random,
                      choose: Callable[[Counter[str], int, int], str | None], *, plain_at: set[int] = frozenset(),  # type: ignore[assignment]
                      unit: Callable[[], float], delay: Callable[[str, bool, float], float], limit: Callable[[float], float],
                      runs: Callable[[int], dict[int, Run]] = local_runs, before: Callable[[], None] = lambda: None,
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
    warm = 0
    made: dict[int, str] = {}  # every child ref seen so far: a child's ref is written once and never moves

    def refs_stay() -> None:
        refs = disk.refs()
        moved = {i: (made[i][:8], sha[:8]) for i, sha in refs.items() if made.get(i, sha) != sha}
        assert not moved, f"children's refs moved (was, now): {moved}"
        made.update(refs)
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
        fresh = "base_commit" not in disk.attrs()
        t_attempt = time.time()
        pid = runner.spawn(["search", "--config", str(cfg), "--generations", str(generations)], out, cwd)
        going = None
        if mode is not None:
            moment = Moment(pid, disk, out, rng, u, lambda: runs(pid), fresh)
            try:
                moment.wait(mode, limit(u), delay(mode, runner is zygote, u))
                going = stop_and_kill(pid, moment.going, moment.seen)
                warm += len(moment.warm)
            except BaseException:
                os.kill(pid, signal.SIGKILL)  # never leave it stopped
                runner.wait(pid)
                raise
        rc = runner.wait(pid)
        text = out.read_text(errors="replace")
        if going is None:  # not killed: it finished (or crashed)
            assert rc == 0 and "done:" in text, f"attempt {attempt}: exit {rc}\n{text[-3000:]}"
            refs_stay()
            if mode is None:
                return Killed(phases, modes, kills, generations, time.time() - t, log, warm)
            generations += grow  # finished too soon: a bigger budget for the same study
            continue
        assert rc == -signal.SIGKILL, f"attempt {attempt}: exit {rc}\n{text[-3000:]}"
        disk.check()
        refs_stay()
        kills += 1
        modes[mode] += 1
        hit = disk.phases(Kill(text, refs_before, *going))
        phases.update(hit)
        log.append(f"{mode}:{'+'.join(sorted(hit))}({time.time() - t_attempt:.1f}s)")


def assert_complete(disk: Disk, population: int, generations: int) -> list[optuna.trial.FrozenTrial]:
    """The resumed population study is whole: every planned child screened once and decided, every test closed,
    the mainline and the archive's promotions one chain."""
    ts = disk.check()
    planned = population - 1 + generations * population
    assert sorted(t.user_attrs["index"] for t in ts if t.user_attrs["seed"] == 0) == list(range(planned + 1))
    assert set(disk.refs()) == {t.user_attrs["index"] for t in ts if t.user_attrs["commit"]}
    # the toy target never fails: a kill must not leak into a result (a run cut short recorded as crashed, say)
    leaked = [(t.user_attrs["index"], t.user_attrs["seed"], t.user_attrs["outcome"]) for t in ts
              if t.user_attrs["outcome"] not in ("complete", "pruned", "duplicate", "operator_failed", "rejected")]
    assert not leaked, f"runs recorded with an outcome a kill left: {leaked}"
    attrs = disk.attrs()
    chain = disk.mainline()
    assert [(p["index"], p["value"]) for p in attrs.get("promotions", [])] == chain
    assert chain, "nothing promoted"
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
            if kills >= KILLS:  # random kills can miss a short phase (a CI run hit no "record" in 50):
                missing = [p for p in REQUIRED if not phases[p]]  # aim at what they missed, then stop
                return AIM[missing[0]] if missing else None
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
    assert len(phases) >= 5 and all(phases[p] >= 1 for p in REQUIRED), phases


# The shipped configuration's phases, and the moment that aims at each (in the order they are aimed at:
# promotions and confirmation runs are frequent early in a study, while candidates still improve a lot).
AIM = {"startup": "early", "promotion": "main", "confirm": "confirm", "decision": "decision", "commit": "ref", "record": "record", "run": "run"}


def steer(wanted: tuple[str, ...], at_least: int, rng: random.Random) -> Callable[[Counter[str], int, int], str | None]:
    """Aim each kill at a phase not hit yet (the one aimed at least so far); once all are hit, kill at
    moments of any kind until there have been `at_least` kills; then let the search finish."""
    aimed: Counter[str] = Counter()

    def choose(phases: Counter[str], kills: int, attempt: int) -> str | None:
        missing = [p for p in wanted if not phases[p]]
        if missing:
            p = min(missing, key=lambda p: (aimed[p], wanted.index(p)))
            aimed[p] += 1
            return AIM[p]
        if kills < at_least:
            return rng.choice(("random", "random", *AIM.values()))
        return None

    return choose


def shipped_delay(mode: str, warm: bool, unit: float) -> float:
    if mode == "early":
        return 0.4 if warm else 3.0
    return 1.5 * unit if mode == "random" else 0.0


# The toy target, each run of which also leaves a process behind in a session of its own (as a data
# loader or a compile server might): a kill -9 of evo leaves them running, and they must be killed (by
# the next start for local runs; for Ray runs, as Ray ends the dead driver's tasks).
LINGER = ("import subprocess\nsubprocess.Popen(['sleep', '60'], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, "
          "stderr=subprocess.DEVNULL, start_new_session=True)\n")


def lingering_target(noise: float) -> str:
    return LINGER + TARGET.replace("NOISE", repr(noise))


SHIPPED = dict(search={"strategy": "population", "population": 4, "generations": 1, "workers": 2},
               sprt={"enabled": True, "replicates": 3, "max_pairs": 4, "gate": 0.5},
               target={"preload": ["json"]})  # runs forked from a warm interpreter, as configs/default.toml has them
PHASES = tuple(AIM)


@pytest.mark.timeout(900)
def test_kill_9_on_the_shipped_configuration(make_repo, tmp_path: Path) -> None:
    """The default shape: a population, the statistics on (replicates, futility, confirmation runs),
    two workers. Kills are aimed until each phase has been hit at least once; two workers make the
    order of results depend on timing, so the resumed study is not compared with a reference: it
    must hold the invariants after every kill and end complete."""
    rng = random.Random(SEED + 1)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    repo = make_repo(files={"target.py": lingering_target(0.4)})
    cfg = write_config(tmp_path / "evo.toml", repo, tmp_path / "evo.db", **SHIPPED)  # type: ignore[arg-type]
    zygote = Zygote(env).ready()
    disk = Disk(repo, tmp_path / "evo.db", "toy")
    try:  # the second attempt is a plain start (the rest are forked from the zygote)
        killed = search_with_kills(zygote, Plain(env), cfg, tmp_path, disk, rng, steer(PHASES, SHIPPED_KILLS, rng), plain_at={2},
                                   unit=disk.mean_run, delay=shipped_delay, limit=lambda u: 30 * u + 10, max_attempts=40, grow=1)
    finally:
        zygote.close()
    print(f"\n{killed.kills} kills in {killed.seconds:.0f}s ({killed.generations} generations, {killed.warm} warm runs seen); "
          f"phases {dict(killed.phases)}; modes {dict(killed.modes)}\n{' '.join(killed.log)}")
    assert_complete(disk, 4, killed.generations)
    assert all(killed.phases[p] >= 1 for p in PHASES), killed.phases
    assert killed.warm, "no run was forked warm: the kills did not meet the shipped way of starting runs"


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

    if not wait_until(lambda: not ours(), 10, 0.1):
        left = ours()
        for pid in left:  # this test's runs (they carry its token): none may outlive it, even when it fails
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        raise AssertionError(f"processes of this test's runs outlived it: {left}")


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
