"""The Ray executor: real Ray, real subprocesses, real worker deaths.

One local Ray instance (2 CPUs) is started per module and shared: the in-process executor
tests use it directly, the CLI searches connect to it with --ray-address. One search starts
its own instance, to check that evo shuts down what it started.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

ray = pytest.importorskip("ray")

from conftest import evo, write_config  # noqa: E402

from evo.config import ExecutorConfig  # noqa: E402
from evo.executors.base import Job, RunTemplate  # noqa: E402
from evo.gitrepo import GitRepo  # noqa: E402

pytestmark = pytest.mark.slow

# Finds the Ray worker running this run: the nearest ancestor whose title starts with "ray::".
FIND_WORKER = '''\
def ray_worker():
    pid = os.getppid()
    while pid > 1:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if f.read().startswith(b"ray::"):
                return pid
        with open(f"/proc/{pid}/stat") as f:
            pid = int(f.read().rsplit(")", 1)[1].split()[1])
    return 0
'''


@pytest.fixture(scope="module")
def cluster():
    """A local Ray instance shared by the module; yields its address for CLI searches."""
    if ray.is_initialized():
        ray.shutdown()
    from evo.executors.ray import _keep_signal_handlers

    with _keep_signal_handlers():  # Ray's SIGTERM handler would outlive the module in this pytest process
        # one logical GPU (no hardware needed) to check how runs are bound to GPUs
        ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # StopAtHalf travels by value
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def trials(storage: Path, name: str = "toy") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{storage}").get_trials(deepcopy=False)


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "zombie" not in status.lower()


def wait_for(pred, timeout: float = 30.0, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


def template(**kw) -> RunTemplate:
    return RunTemplate(**{"command": f"{sys.executable} target.py", "timeout": 60, "time_budget": 1, "metric": "score", **kw})


def executor(repo: Path, workers: int = 1, **cfg):
    from evo.executors.ray import RayExecutor

    return RayExecutor(GitRepo(repo), template(), workers, ExecutorConfig(kind="ray", **cfg))


def drain(ex, timeout: float = 60.0) -> list:
    """wait() until nothing is running; every Done seen."""
    out = []
    deadline = time.monotonic() + timeout
    while ex.busy() and time.monotonic() < deadline:
        out += ex.wait(0.2)
    assert ex.busy() == 0, "runs never finished"
    return out


def job(repo: Path, tmp_path: Path, index: int = 0, seed: int = 0, monitor=None) -> Job:
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    return Job(index, commit, seed, "candidate", tmp_path / "logs" / f"{index:05d}-seed{seed}.log", monitor)


def pids_of(pidfile: Path) -> list[list[int]]:
    return [[int(x) for x in line.split()] for line in pidfile.read_text().splitlines() if line.strip()] if pidfile.exists() else []


def shut_down(ex, pidfile: Path) -> None:
    """Shut the executor down and kill whatever runs (and their children) a failed test left behind."""
    ex.shutdown()
    for line in pids_of(pidfile):
        for pid in line[1:]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


# -- searches through the command line --------------------------------------------------------------

def test_search_on_its_own_ray_instance_with_two_workers(make_repo, tmp_path: Path) -> None:
    """`evo search --executor ray --workers 2` with no address: starts Ray, runs, shuts it down."""
    def ray_daemons() -> set[int]:
        out = set()
        for p in Path("/proc").glob("[0-9]*"):
            try:
                if p.joinpath("comm").read_text().strip() in ("raylet", "gcs_server"):
                    out.add(int(p.name))
            except OSError:
                pass
        return out

    before = ray_daemons()
    repo = make_repo()
    cfg = write_config(tmp_path / "evo.toml", repo, tmp_path / "evo.db", search={"generations": 2})
    res = evo("search", "--config", str(cfg), "--executor", "ray", "--workers", "2", cwd=tmp_path, timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    ts = trials(tmp_path / "evo.db")
    assert sorted(t.user_attrs["index"] for t in ts) == list(range(3))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in ts)
    for t in ts:
        log = Path(t.user_attrs["log"]).read_text()
        assert "progress: 1.00" in log and "score:" in log
    # what evo started, evo stopped
    wait_for(lambda: ray_daemons() <= before, timeout=20, every=0.2)


def _toy() -> str:
    from conftest import TARGET

    return TARGET.replace("NOISE", "0.0")


def test_ray_search_matches_the_local_search(cluster: str, make_repo, tmp_path: Path) -> None:
    runs = {}
    for kind in ("local", "ray"):
        repo = make_repo(noise=0.2, name=kind)
        cfg = write_config(tmp_path / f"{kind}.toml", repo, tmp_path / f"{kind}.db", study={"seed": 11},
                           search={"generations": 3})
        res = evo("search", "--config", str(cfg), "--executor", kind, "--ray-address", cluster, "--workers", "1",
                  cwd=tmp_path, timeout=180)
        assert res.returncode == 0, res.stdout + res.stderr
        runs[kind] = [(t.user_attrs["index"], t.user_attrs["description"], t.user_attrs["outcome"], t.value)
                      for t in sorted(trials(tmp_path / f"{kind}.db"), key=lambda t: t.user_attrs["index"])]
    assert runs["ray"] == runs["local"]
    assert len(runs["ray"]) == 4


def test_a_killed_worker_loses_nothing(cluster: str, make_repo, tmp_path: Path) -> None:
    """SIGKILL the Ray worker of the first run: it is retried once, the search completes, no duplicates."""
    pidfile = tmp_path / "pids"
    target = f'''\
import os, time
{FIND_WORKER}
X = 1.0
with open({str(pidfile)!r}, "a") as f:
    f.write(f"{{ray_worker()}} {{os.getpid()}}\\n")
time.sleep(1.0)
print(f"score: {{-abs(X - 3)}}")
'''
    repo = make_repo(files={"target.py": target})
    cfg = write_config(tmp_path / "evo.toml", repo, tmp_path / "evo.db", search={"generations": 2})
    proc = subprocess.Popen([sys.executable, "-m", "evo", "search", "--config", str(cfg), "--executor", "ray",
                             "--ray-address", cluster, "--workers", "2"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        worker, run = wait_for(lambda: pids_of(pidfile), timeout=60)[0]
        assert worker > 0, "no ray worker among the run's ancestors"
        os.kill(worker, signal.SIGKILL)
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    ts = trials(tmp_path / "evo.db")
    assert sorted(t.user_attrs["index"] for t in ts) == [0, 1, 2]  # nothing lost, nothing twice
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in ts)
    assert len(pids_of(pidfile)) == 4  # three runs and the one retried
    killed = next(t for t in ts if t.user_attrs["index"] == 0)  # the baseline runs first, alone
    assert "attempt 1 lost (ray worker died" in Path(killed.user_attrs["log"]).read_text()
    wait_for(lambda: not alive(run), timeout=30)  # the orphaned run was killed by the watchdog


def test_sigterm_stops_a_ray_search_cleanly(cluster: str, make_repo, tmp_path: Path) -> None:
    """ray.init installs a SIGTERM handler that kills the process; evo must keep its own (clean stop)."""
    pidfile = tmp_path / "pids"
    target = f'''\
import os, subprocess, sys, time
X = 1.0
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
with open({str(pidfile)!r}, "a") as f:
    f.write(f"{{os.getpid()}} {{child.pid}}\\n")
time.sleep(60)
'''
    repo = make_repo(files={"target.py": target})
    cfg = write_config(tmp_path / "evo.toml", repo, tmp_path / "evo.db", target={"timeout": 90}, search={"generations": 1})
    proc = subprocess.Popen([sys.executable, "-m", "evo", "search", "--config", str(cfg), "--executor", "ray",
                             "--ray-address", cluster], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        run, child = wait_for(lambda: pids_of(pidfile), timeout=60)[0]
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "interrupted" in out, out
    for pid in (run, child):
        wait_for(lambda: not alive(pid), timeout=30)
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in trials(tmp_path / "evo.db"))


# -- the executor in process ---------------------------------------------------------------------

SLOW = '''\
import os, subprocess, sys, time
{find}
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print("started " + "x" * 20000, flush=True)  # more than the runner's log buffer: reaches the file now
with open({pidfile!r}, "a") as f:
    f.write(f"{{ray_worker()}} {{os.getpid()}} {{child.pid}}\\n")
time.sleep(120)
print("score: 1")
'''


def test_cancel_all_kills_the_run_and_its_children(cluster: str, make_repo, tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    repo = make_repo(files={"target.py": SLOW.format(find=FIND_WORKER, pidfile=str(pidfile))})
    ex = executor(repo, workers=2)
    try:
        # asked to stop: the run is killed, its log is kept (and was streamed while it ran)
        j = job(repo, tmp_path)
        ex.submit(j)
        worker = wait_for(lambda: pids_of(pidfile))[0][0]
        wait_for(lambda: ex.wait(0.1) == [] and "started" in j.log_path.read_text(), timeout=30)  # streamed
        t0 = time.monotonic()
        ex.cancel_all()  # asks first; forces (kills the Ray worker) only after its 10 s grace
        assert time.monotonic() - t0 < 60, "cancel_all hung"
        # the polite path did it: the run stopped inside the grace, so its Ray worker was not killed
        assert alive(worker), "cancel_all had to kill the Ray worker: the run ignored the request to stop"
        (done,) = ex.wait(0.1)
        assert done.result.outcome == "interrupted" and done.job is j, done.result.reason
        assert "started" in j.log_path.read_text()
        for pid in pids_of(pidfile)[0][1:]:
            wait_for(lambda: not alive(pid), timeout=30)
        # forced at once (grace 0): the worker is killed, the watchdog kills the run it leaves behind
        j2 = job(repo, tmp_path, index=1)
        ex.submit(j2)
        wait_for(lambda: len(pids_of(pidfile)) == 2)
        ex.cancel_all(grace=0)
        (done,) = ex.wait(0.1)
        assert done.result.outcome == "interrupted" and ex.busy() == 0
        for pid in pids_of(pidfile)[1]:  # the worker, the run and the run's child
            wait_for(lambda: not alive(pid), timeout=30)
    finally:
        shut_down(ex, pidfile)
    assert ray.is_initialized()  # it did not own the shared instance


def test_a_worker_told_to_exit_leaves_no_run_behind(cluster: str, make_repo, tmp_path: Path) -> None:
    """A Ray worker whose driver died is sent SIGTERM, which Ray turns into SystemExit inside the task:
    the task's clean-up code runs while its run (and what the run started in a session of its own)
    still goes on. The run must not be declared over to the watchdog then; it is killed when the
    worker exits (a kill -9 test through Ray once left such a run's child alive for a minute)."""
    pidfile = tmp_path / "pids"
    own_session = SLOW.replace('"import time; time.sleep(120)"])', '"import time; time.sleep(120)"], start_new_session=True)')
    assert own_session != SLOW
    repo = make_repo(files={"target.py": own_session.format(find=FIND_WORKER, pidfile=str(pidfile))})
    ex = executor(repo, retries=0)
    try:
        ex.submit(job(repo, tmp_path))
        worker, run, child = wait_for(lambda: pids_of(pidfile), timeout=60)[0]
        assert worker > 0, "no ray worker among the run's ancestors"
        os.kill(worker, signal.SIGTERM)  # the polite request; Ray's SIGKILL follows if the worker is slow to go
        time.sleep(0.05)
        if alive(worker):
            os.kill(worker, signal.SIGKILL)
        for pid in (run, child):
            wait_for(lambda: not alive(pid), timeout=30)
        drain(ex)
    finally:
        shut_down(ex, pidfile)


def test_a_killed_worker_without_retries_is_a_crashed_run(cluster: str, make_repo, tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    repo = make_repo(files={"target.py": SLOW.format(find=FIND_WORKER, pidfile=str(pidfile))})
    ex = executor(repo, retries=0)
    try:
        ex.submit(job(repo, tmp_path))
        worker, run, child = wait_for(lambda: pids_of(pidfile))[0]
        os.kill(worker, signal.SIGKILL)
        (done,) = drain(ex, timeout=30)
        assert done.result.outcome == "crashed"
        assert done.result.reason.startswith("ray worker died: WorkerCrashedError"), done.result.reason
        for pid in (run, child):
            wait_for(lambda: not alive(pid), timeout=30)
    finally:
        ex.shutdown()


class StopAtHalf:
    """A picklable futility monitor: stops the run at the half-way progress point."""

    def __init__(self) -> None:
        self.trace: list[tuple[float, float]] = []

    def __call__(self, fraction: float, value: float) -> bool:
        self.trace.append((fraction, value))
        return fraction >= 0.5


def test_the_monitor_runs_on_the_worker_and_its_trace_comes_back(cluster: str, make_repo, tmp_path: Path) -> None:
    repo = make_repo(files={"target.py": _toy().replace("sleep_s = 0.0", "sleep_s = 0.3")})
    ex = executor(repo, workers=2)
    try:
        mon = StopAtHalf()
        ex.submit(job(repo, tmp_path, index=1, seed=0, monitor=mon))
        ex.submit(job(repo, tmp_path, index=2, seed=1))
        done = {d.job.index: d for d in drain(ex)}
    finally:
        ex.shutdown()
    assert done[1].result.outcome == "pruned" and done[1].result.value is None
    assert [f for f, _ in done[1].monitor_trace] == [0.25, 0.5]
    assert mon.trace == done[1].monitor_trace
    assert done[2].result.outcome == "complete" and done[2].result.value == pytest.approx(-4.4)
    assert done[2].result.progress[-1][0] == 1.0
    assert {d.worker for d in done.values()} == {0, 1}
    assert 0 < ex.utilisation() <= 1


def test_runs_see_only_the_gpus_ray_gave_them(cluster: str, make_repo, tmp_path: Path) -> None:
    target = 'import os\nprint("cuda=[" + os.environ.get("CUDA_VISIBLE_DEVICES", "unset") + "]")\nprint("score: 1")\n'
    repo = make_repo(files={"target.py": target})
    seen = {}
    for gpus in (1.0, 0.0):
        ex = executor(repo, gpus_per_trial=gpus)
        try:
            ex.submit(job(repo, tmp_path, index=int(gpus)))
            (done,) = drain(ex)
        finally:
            ex.shutdown()
        assert done.result.outcome == "complete", done.result.reason
        seen[gpus] = done.job.log_path.read_text().split("]")[0] + "]"
    assert seen == {1.0: "cuda=[0]", 0.0: "cuda=[]"}
    with pytest.raises(Exception, match="gpus_per_trial = 2"):
        executor(repo, gpus_per_trial=2)


# Two runs that each wait for the other to start: they meet only when Ray runs them at once.
MEET = '''\
import os, pathlib, time
events = pathlib.Path({events!r})
me = os.environ["EVO_SEED"]
with open(events, "a") as f:
    f.write(f"start {{me}}\\n")
deadline = time.monotonic() + {wait}
while time.monotonic() < deadline and len([x for x in events.read_text().split("\\n") if x.startswith("start")]) < 2:
    time.sleep(0.05)
with open(events, "a") as f:
    f.write(f"end {{me}}\\n")
print("score: 1")
'''


@pytest.mark.parametrize("cpus", [1.0, 2.0])
def test_cpus_per_trial_is_what_a_run_reserves(cluster: str, make_repo, tmp_path: Path, cpus: float) -> None:
    """On the 2-CPU instance, two workers run two runs at once with cpus_per_trial = 1, and one
    after the other with cpus_per_trial = 2 (each run holds both CPUs). Event order, not timing:
    with 1 CPU each both start before either ends; with 2 the second starts after the first ends
    (the first gives up waiting after 3 s)."""
    events = tmp_path / "events"
    repo = make_repo(files={"target.py": MEET.format(events=str(events), wait=60 if cpus == 1.0 else 3)})
    ex = executor(repo, workers=2, cpus_per_trial=cpus)
    try:
        ex.submit(job(repo, tmp_path, index=1, seed=0))
        ex.submit(job(repo, tmp_path, index=2, seed=1))
        done = drain(ex, timeout=120)
    finally:
        ex.shutdown()
    assert sorted(d.result.outcome for d in done) == ["complete", "complete"], [d.result.reason for d in done]
    kinds = [line.split()[0] for line in events.read_text().splitlines()]
    assert kinds == (["start", "start", "end", "end"] if cpus == 1.0 else ["start", "end", "start", "end"]), kinds


def test_the_watchdog_guards_from_the_moment_it_is_made(tmp_path: Path) -> None:
    """What a worker killed just after starting a task leaves: Ray SIGKILLs the worker's direct children
    (the watchdog's first process among them) at once, and the pipe reads EOF. A run started right after
    the task was guarded, in a session of its own, must still be killed and the task's folder removed;
    before the watchdog waited to be ready, its interpreter could die before it had forked the process
    that guards (a Ray kill test failed that way once). A task that ended and said so is left alone."""
    from evo.executors.ray import MARKER_ENV, _Watchdog

    ended, folder = tmp_path / "ended", tmp_path / "task"
    ended.mkdir()
    folder.mkdir()
    dog = _Watchdog()
    assert dog._proc is not None and dog.alive()
    assert dog.guard("m-test-0", ended)
    dog.release("m-test-0")  # an earlier task of the same worker, ended cleanly
    keep = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env={**os.environ, MARKER_ENV: "m-test-0"},
                            start_new_session=True)
    assert dog.guard("m-test-1", folder)
    run = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env={**os.environ, MARKER_ENV: "m-test-1"},
                           start_new_session=True)
    try:
        os.kill(dog._proc.pid, signal.SIGKILL)  # what Ray does to a dead worker's children
        dog._proc.wait()
        os.close(dog._w)  # the worker dies: EOF
        wait_for(lambda: run.poll() is not None, timeout=20)
        wait_for(lambda: not folder.exists(), timeout=20)
        time.sleep(1.5)  # the watchdog scans for a second
        assert keep.poll() is None and ended.exists()  # not the ended task's
    finally:
        for p in (run, keep):
            if p.poll() is None:
                p.kill()
            p.wait()


def test_one_watchdog_serves_a_workers_tasks_and_a_dead_one_is_replaced(tmp_path: Path) -> None:
    """Tasks of one worker share its watchdog (an interpreter a task was a third of a core at 64 slots);
    if it dies, the next task starts a new one before its run."""
    import evo.executors.ray as rx

    rx._watchdog = None
    first = rx._guard("m-a", tmp_path)
    assert first is not None and rx._guard("m-b", tmp_path) is first
    pid = first._proc.pid
    os.killpg(os.getpgid(pid), signal.SIGKILL)  # its own session: the grandchild that guards goes too
    first._proc.wait()
    second = rx._guard("m-c", tmp_path)
    assert second is not None and second is not first and second._proc.pid != pid and second.alive()
    second.close()
    rx._watchdog = None
