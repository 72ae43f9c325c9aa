"""Warm starts (evo/executors/warm.py, evo/executors/zygote.py): `{python} script.py` runs forked
from a zygote that has imported the target's modules, and everything a cold run guarantees.

Real processes throughout: a real zygote (one importing torch and numpy, one importing only
`json` for the tests where the import does not matter), real forked runs read by evo's runner,
cold runs of the same commands beside them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, git
from evo.config import load
from evo.errors import ConfigError
from evo.executors import warm
from evo.executors.base import Job, RunTemplate
from evo.executors.local import LocalExecutor
from evo.gitrepo import GitRepo
from evo.runner import RunResult, RunSpec, network_isolation_available, run, run_env

PY = sys.executable
MODEL = ROOT / "model"
SECRETS = {"EVO_WS_TEST_API_KEY": "sk-warm-secret-1", "MY_WS_TOKEN": "tok-warm-secret-2", "DB_PASSWORD": "pw-warm-secret-3"}


@pytest.fixture(scope="module")
def secrets_in_evo() -> Any:
    """Secrets in evo's own environment while the zygotes start: none may reach a zygote or a run."""
    old = {k: os.environ.get(k) for k in SECRETS}
    os.environ.update(SECRETS)
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ws-cache")
    r = subprocess.run([PY, str(MODEL / "prepare.py")], env={**os.environ, "EVO_CACHE": str(path)}, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return path


@pytest.fixture(scope="module")
def base_env(cache: Path, secrets_in_evo: None) -> dict[str, str]:
    """Every run's environment here (the runs of model/ and the small scripts alike), as the executor builds it."""
    return run_env((), {"PYTHONUNBUFFERED": "1", "EVO_CACHE": str(cache), "EVO_THREADS": "1", "EVO_DEVICE": "cpu",
                        "EVO_TIME_BUDGET": "4", "EVO_MAX_STEPS": "3"})


@pytest.fixture(scope="module")
def torch_zygote(base_env: dict[str, str]) -> Any:
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed")
    notes: list[str] = []
    z = warm.Zygote(["torch", "numpy"], base_env, log=notes.append)  # imports torch while the first (cold) run goes
    z.notes = notes  # type: ignore[attr-defined]
    yield z
    z.close()


@pytest.fixture(scope="module")
def small_zygote(base_env: dict[str, str]) -> Any:
    notes: list[str] = []
    z = warm.Zygote(["json"], base_env, log=notes.append)
    assert z.ready(), notes
    z.notes = notes  # type: ignore[attr-defined]
    yield z
    z.close()


def script_spec(tmp: Path, code: str, env: dict[str, str], timeout: float = 20, name: str = "", **kw: Any) -> RunSpec:
    script = tmp / (name or f"s{uuid.uuid4().hex[:6]}.py")
    script.write_text(textwrap.dedent(code))
    return RunSpec(command=f"{PY} {script.name}", cwd=tmp, env=dict(env), timeout=timeout,
                   log_path=tmp / "logs" / f"{script.stem}-{uuid.uuid4().hex[:4]}.log", metric="score", **kw)


def run_warm(spec: RunSpec, z: warm.Zygote) -> RunResult:
    before = z.warm_runs
    res = run(spec, warm=z)
    assert z.warm_runs == before + 1, f"the run did not fork from the zygote: {z.why_off or z.notes}"  # type: ignore[attr-defined]
    return res


def alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def carriers(needle: str) -> list[int]:
    """Pids whose /proc/PID/environ holds `needle` (what evo's token scan reads)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            try:
                if needle.encode() in Path(f"/proc/{name}/environ").read_bytes():
                    found.append(int(name))
            except OSError:
                pass
    return found


# -- the same results ------------------------------------------------------------------------------------

TIMINGS = {"training_seconds", "total_seconds", "startup_seconds", "eval_seconds", "warmup_seconds", "peak_rss_mb", "tokens_per_sec"}


def model_output(spec: RunSpec) -> tuple[dict[str, str], list[str]]:
    text = spec.log_path.read_text()
    summary = {m[1]: m[2] for m in re.finditer(r"^(\w+):\s+(\S+)$", text, re.M)}
    return summary, [line for line in text.splitlines() if line.startswith("progress:")]


def test_a_warm_run_of_model_prints_what_a_cold_run_prints(torch_zygote: warm.Zygote, base_env: dict[str, str], tmp_path: Path) -> None:
    """model/train.py, seed 1, three steps (EVO_MAX_STEPS): val_bpb and every progress value identical."""
    results = {}
    for how in ("cold", "warm"):
        spec = RunSpec(command=f"{PY} model/train.py", cwd=ROOT, env={**base_env, "EVO_SEED": "1"}, timeout=120,
                       log_path=tmp_path / f"{how}.log", metric="val_bpb")
        res = run_warm(spec, torch_zygote) if how == "warm" else run(spec)
        assert res.outcome == "complete", spec.log_path.read_text()
        results[how] = (res, *model_output(spec))
    (cold, cold_summary, cold_progress), (hot, warm_summary, warm_progress) = results["cold"], results["warm"]
    assert hot.value == cold.value and warm_summary["val_bpb"] == cold_summary["val_bpb"]
    assert warm_progress == cold_progress and len(cold_progress) == 10
    assert {k: v for k, v in warm_summary.items() if k not in TIMINGS} == {k: v for k, v in cold_summary.items() if k not in TIMINGS}
    assert warm_summary["num_steps"] == "3" and warm_summary["seed"] == "1"
    # the imports were done before the fork: the script's own startup (imports, data, model) is shorter
    assert float(warm_summary["startup_seconds"]) < float(cold_summary["startup_seconds"])


def test_forked_runs_do_not_deadlock_on_thread_pools(torch_zygote: warm.Zygote, base_env: dict[str, str], tmp_path: Path) -> None:
    """The zygote runs no torch op and holds no thread when it forks; a run starts torch's and
    OpenBLAS's pools with two threads each and finishes (a pool copied mid-flight would hang it)."""
    assert len(os.listdir(f"/proc/{torch_zygote.pid}/task")) == 1  # one thread: nothing to copy locked
    spec = script_spec(tmp_path, """\
        import numpy as np, torch
        torch.set_num_threads(2)
        a = torch.randn(512, 512)
        for _ in range(5):
            a = torch.tanh(a @ a)
        m = np.random.rand(600, 600)
        print(f"threads: {torch.get_num_threads()}")
        print(f"score: {float((m @ m).mean()) + float(a.mean()):.3f}")
        """, base_env, timeout=60)
    res = run_warm(spec, torch_zygote)
    assert res.outcome == "complete" and res.seconds < 60, spec.log_path.read_text()
    assert res.metrics["threads"] == 2
    assert len(os.listdir(f"/proc/{torch_zygote.pid}/task")) == 1


# -- the same environment ------------------------------------------------------------------------------

DUMP = """\
import json, os, sys
proc = dict(x.split("=", 1) for x in open("/proc/self/environ").read().split("\\0") if "=" in x)
print("ENV " + json.dumps(dict(os.environ)))
print("PROC " + json.dumps(proc))
print("ARGV " + json.dumps([sys.argv, sys.path[0], __file__, __name__]))
print("IDS " + json.dumps([os.getpid(), os.getpgid(0), os.getsid(0), os.getcwd()]))
print("score: 1")
"""


def dumped(spec: RunSpec) -> dict[str, Any]:
    return {line.split(" ", 1)[0]: json.loads(line.split(" ", 1)[1]) for line in spec.log_path.read_text().splitlines()
            if line.split(" ", 1)[0] in ("ENV", "PROC", "ARGV", "IDS")}


def test_a_warm_run_sees_the_environment_a_cold_run_sees(small_zygote: warm.Zygote, base_env: dict[str, str], tmp_path: Path) -> None:
    env = {**base_env, "EVO_SEED": "7", "EVO_ROLE": "candidate"}
    cold_spec = script_spec(tmp_path, DUMP, env, name="dump.py")
    warm_spec = RunSpec(**{**cold_spec.__dict__, "log_path": tmp_path / "logs" / "warm.log"})
    assert run(cold_spec).outcome == "complete" and run_warm(warm_spec, small_zygote).outcome == "complete"
    cold, hot = dumped(cold_spec), dumped(warm_spec)
    for what in ("ENV", "PROC"):  # os.environ, and what /proc/PID/environ shows (evo's token scan reads it)
        c, w = dict(cold[what]), dict(hot[what])
        assert c.pop("EVO_RUN_TOKEN") != w.pop("EVO_RUN_TOKEN")  # each run its own token...
        assert c == w, what  # ...and otherwise the same variables, PWD, SHLVL and _ included
    assert hot["ENV"]["EVO_RUN_TOKEN"] == hot["PROC"]["EVO_RUN_TOKEN"]
    assert hot["ENV"]["EVO_SEED"] == "7" and hot["PROC"]["PWD"] == str(tmp_path)
    assert hot["ARGV"] == cold["ARGV"] == [["dump.py"], str(tmp_path), str(tmp_path / "dump.py"), "__main__"]
    pid, pgid, sid, cwd = hot["IDS"]
    assert pid == pgid == sid != os.getsid(0) and cwd == str(tmp_path)  # its own session and group
    # no secret of evo's environment anywhere: not in a run, not in the zygote
    try:  # the zygote is not dumpable: only root reads its /proc files (and no run of evo's user can)
        zygote_env = Path(f"/proc/{small_zygote.pid}/environ").read_bytes().decode(errors="replace")
    except PermissionError:
        zygote_env = ""
    seen = json.dumps([cold, hot]) + zygote_env
    assert not [v for v in SECRETS.values() if v in seen]


def test_a_run_whose_environment_differs_from_the_zygotes_starts_cold(small_zygote: warm.Zygote, base_env: dict[str, str], tmp_path: Path) -> None:
    """The preloaded modules were imported under the zygote's environment (thread counts, locale):
    a run with another one (besides its per-run values) is not forked from it."""
    spec = script_spec(tmp_path, DUMP, {**base_env, "OMP_NUM_THREADS": "3"})
    before = small_zygote.cold_runs
    assert run(spec, warm=small_zygote).outcome == "complete"
    assert small_zygote.cold_runs == before + 1
    assert dumped(spec)["ENV"]["OMP_NUM_THREADS"] == "3"
    assert any("OMP_NUM_THREADS" in n for n in small_zygote.notes)  # type: ignore[attr-defined]


# -- killed, time-boxed, isolated -------------------------------------------------------------------------

LINGER = """\
import os, subprocess, sys, time
pids = [os.getpid()]
pids.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"]).pid)
pids.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True).pid)
child = os.fork()
if child == 0:  # a daemon in a session of its own that never execs: found only by its environment
    os.setsid()
    time.sleep(300)
    os._exit(0)
pids.append(child)
print("PIDS " + " ".join(map(str, pids)), flush=True)
time.sleep(300)
"""


def test_a_warm_run_is_killed_with_all_it_started_on_timeout(small_zygote: warm.Zygote, base_env: dict[str, str], tmp_path: Path) -> None:
    mark = uuid.uuid4().hex
    env = {**base_env, "EVO_SEED": mark}  # a per-run value: marks this run's processes
    spec = script_spec(tmp_path, LINGER, env, timeout=1)
    res = run_warm(spec, small_zygote)
    assert res.outcome == "timeout" and res.seconds < 15, res
    pids = [int(p) for p in next(line for line in spec.log_path.read_text().splitlines() if line.startswith("PIDS ")).split()[1:]]
    assert len(pids) == 4
    deadline = time.monotonic() + 5
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if alive(p)], "a warm run left processes behind"
    assert not carriers(f"EVO_SEED={mark}")
    assert small_zygote.ready()  # the zygote itself is untouched


def test_a_resume_kills_the_warm_runs_a_killed_evo_left(small_zygote: warm.Zygote, base_env: dict[str, str], tmp_path: Path) -> None:
    """After kill -9, the next `evo search` kills the study's runs by their token (kill_leftovers reads
    /proc/PID/environ): a forked run carries its token there, not the zygote's environment."""
    from evo.runner import kill_leftovers

    spec = script_spec(tmp_path, "import time\nprint('started', flush=True)\ntime.sleep(300)\n", base_env, timeout=60)
    got: list[RunResult] = []
    t = threading.Thread(target=lambda: got.append(run_warm(spec, small_zygote)))
    t.start()
    deadline = time.monotonic() + 20
    while "started" not in (spec.log_path.read_text() if spec.log_path.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert kill_leftovers(spec.log_path.parent) == 1  # the run itself, found by its token
    t.join(timeout=20)
    assert got and got[0].outcome == "crashed" and got[0].returncode == -signal.SIGKILL
    assert small_zygote.ready()  # the zygote carries no token: untouched


def test_a_warm_run_stopped_by_cancel_is_interrupted(small_zygote: warm.Zygote, base_env: dict[str, str], tmp_path: Path) -> None:
    spec = script_spec(tmp_path, "import time\nprint('progress: 0.5 score: 1', flush=True)\ntime.sleep(300)\n", base_env, timeout=60)
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    before = small_zygote.warm_runs
    res = run(spec, cancel=cancel, warm=small_zygote)
    assert small_zygote.warm_runs == before + 1
    assert res.outcome == "interrupted" and res.seconds < 10


def test_exit_codes_tracebacks_and_open_files_as_in_a_cold_run(small_zygote: warm.Zygote, base_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "left-open.txt"
    cases = {
        "import sys\nprint('score: 2')\nsys.exit(3)\n": (3, "crashed"),
        "print('score: 2')\ndef f():\n    raise ValueError('boom')\nf()\n": (1, "crashed"),
        f"f = open({str(out)!r}, 'w')\nf.write('kept')\nprint('score: 2')\n": (0, "complete"),  # never closed: flushed at exit
        "import signal, os\nprint('score: 2', flush=True)\nos.kill(os.getpid(), signal.SIGKILL)\n": (-9, "crashed"),
    }
    for code, (rc, outcome) in cases.items():
        spec = script_spec(tmp_path, code, base_env)
        cold_spec = RunSpec(**{**spec.__dict__, "log_path": spec.log_path.with_suffix(".cold")})
        hot, cold = run_warm(spec, small_zygote), run(cold_spec)
        assert (hot.returncode, hot.outcome) == (rc, outcome) == (cold.returncode, cold.outcome), code
        if rc == 1:
            text = spec.log_path.read_text()
            assert text == cold_spec.log_path.read_text()  # the traceback starts at the script, as a cold one does
            assert text.startswith("score: 2\nTraceback (most recent call last):\n  File \"") and "zygote" not in text
    assert out.read_text() == "kept"


def test_a_warm_run_has_the_memory_limit_of_a_cold_run(small_zygote: warm.Zygote, base_env: dict[str, str], tmp_path: Path) -> None:
    code = """\
        import resource
        print("LIMIT", *resource.getrlimit(resource.RLIMIT_AS))
        try:
            block = bytearray(600 * 1024 * 1024)
            print("ALLOCATED")
        except MemoryError:
            print("MemoryError")
        print("score: 1")
        """
    spec = script_spec(tmp_path, code, base_env, memory_limit_mb=300)
    cold_spec = RunSpec(**{**spec.__dict__, "log_path": spec.log_path.with_suffix(".cold")})
    assert run_warm(spec, small_zygote).outcome == "complete" and run(cold_spec).outcome == "complete"
    text = spec.log_path.read_text()
    assert f"LIMIT {300 << 20} {300 << 20}" in text and "MemoryError" in text
    assert text == cold_spec.log_path.read_text()


CONNECT = """\
import os, socket
print("NETNS", os.readlink("/proc/self/ns/net"))
try:
    socket.create_connection(("127.0.0.1", PORT), timeout=3).close()
    print("CONNECTED")
except OSError as e:
    print(f"NO NETWORK: {e}")
print("score: 1.0")
"""


@pytest.mark.skipif(not network_isolation_available(), reason="`unshare --net` does not work here (needs user namespaces or root)")
def test_a_warm_run_with_no_network_has_no_network(small_zygote: warm.Zygote, base_env: dict[str, str], tmp_path: Path) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    try:
        code = CONNECT.replace("PORT", str(server.getsockname()[1]))
        isolated = script_spec(tmp_path, code, base_env, no_network=True)
        open_ = script_spec(tmp_path, code, base_env)
        assert run_warm(isolated, small_zygote).outcome == "complete" and run_warm(open_, small_zygote).outcome == "complete"
        text = isolated.log_path.read_text()
        assert "NO NETWORK" in text and "CONNECTED" not in text
        assert "CONNECTED" in open_.log_path.read_text()  # not vacuous: without the option it connects
        mine = os.readlink("/proc/self/ns/net")
        assert f"NETNS {mine}" not in text and f"NETNS {mine}" in open_.log_path.read_text()  # a namespace of its own
        assert os.readlink(f"/proc/{small_zygote.pid}/ns/net") == mine  # made by each run after its fork, not shared through the zygote
    finally:
        server.close()


# -- falling back to a cold start --------------------------------------------------------------------------


def _executor(repo: Path, preload: tuple[str, ...], notes: list[str], command: str = f"{PY} target.py") -> tuple[LocalExecutor, str]:
    g = GitRepo(repo)
    template = RunTemplate(command=command, timeout=20, time_budget=1, metric="score", preload=preload)
    return LocalExecutor(g, template, workers=1, log=notes.append), g.head()


def _one(ex: LocalExecutor, job: Job) -> RunResult:
    ex.submit(job)
    end = time.monotonic() + 30
    while time.monotonic() < end:
        done = ex.wait(timeout=0.5)
        if done:
            return done[0].result
    raise AssertionError("the job never came back")


def test_the_executor_falls_back_to_cold_once_its_zygote_is_gone(make_repo: Any, tmp_path: Path) -> None:
    notes: list[str] = []
    ex, head = _executor(make_repo(), ("json",), notes)
    try:
        assert ex.zygote is not None
        first = _one(ex, Job(0, head, 0, "baseline", tmp_path / "0.log"))
        assert first.outcome == "complete" and ex.warm_counts()["warm"] == 1
        os.kill(ex.zygote.pid, signal.SIGKILL)
        ex.zygote.proc.wait(timeout=10)
        for i in (1, 2):
            res = _one(ex, Job(i, head, i, "replicate", tmp_path / f"{i}.log"))
            assert res.outcome == "complete" and res.value == first.value
        assert ex.warm_counts()["warm"] == 1 and ex.warm_counts()["cold"] == 2
        assert len(notes) == 1 and "the zygote died (killed by signal 9)" in notes[0] and "runs start cold" in notes[0], notes
    finally:
        ex.shutdown()


def test_a_preload_that_cannot_be_imported_falls_back_to_cold(make_repo: Any, tmp_path: Path) -> None:
    notes: list[str] = []
    ex, head = _executor(make_repo(), ("json", "evo_no_such_module_xyz"), notes)
    try:
        assert _one(ex, Job(0, head, 0, "baseline", tmp_path / "0.log")).outcome == "complete"
        assert _one(ex, Job(1, head, 1, "baseline", tmp_path / "1.log")).outcome == "complete"
        assert ex.warm_counts()["warm"] == 0 and ex.warm_counts()["cold"] == 2
        assert len(notes) == 1 and "`import evo_no_such_module_xyz` failed: ModuleNotFoundError" in notes[0], notes
    finally:
        ex.shutdown()
    assert ex.zygote is not None and ex.zygote.proc is not None and ex.zygote.proc.poll() is not None  # it exited


def test_a_preload_that_leaves_a_thread_running_is_refused(base_env: dict[str, str], tmp_path: Path) -> None:
    """A module that starts a thread at import (a pool without an at-fork handler): forking next to it
    could deadlock a run, so the zygote refuses and every run starts cold."""
    (tmp_path / "spinner.py").write_text("import threading, time\nthreading.Thread(target=time.sleep, args=(300,), daemon=True).start()\n")
    notes: list[str] = []
    z = warm.Zygote(["json", "spinner"], {**base_env, "PYTHONPATH": str(tmp_path)}, log=notes.append)
    try:
        assert not z.ready()
        assert len(notes) == 1 and "left 1 thread(s) running" in notes[0] and "runs start cold" in notes[0], notes
    finally:
        z.close()


def test_a_command_that_is_not_a_python_script_starts_cold(make_repo: Any, tmp_path: Path) -> None:
    notes: list[str] = []
    ex, head = _executor(make_repo(), ("json",), notes, command=f"cd . && {PY} target.py")
    try:
        assert ex.zygote is None and len(notes) == 1 and "is not `{python} script.py ...`" in notes[0]
        assert _one(ex, Job(0, head, 0, "baseline", tmp_path / "0.log")).outcome == "complete"
    finally:
        ex.shutdown()
    ex2, _ = _executor(make_repo(name="repo2"), (), notes)
    assert ex2.zygote is None and len(notes) == 1  # no preload: today's behaviour, nothing said
    ex2.shutdown()


@pytest.mark.parametrize("command, argv", [
    (f"{PY} model/train.py", [PY, "model/train.py"]),
    (f"{PY} 'my script.py' --lr 0.1 \"a b\"", [PY, "my script.py", "--lr", "0.1", "a b"]),
    (f"{PY} -u model/train.py", None),  # interpreter options
    (f"{PY} -m model.train", None),
    ("python model/train.py", None),  # not evo's interpreter
    (f"{PY} model/train.py > out.txt", None),
    (f"{PY} model/train.py && echo done", None),
    (f"{PY} model/train.py $HOME", None),
    (f"{PY} model/*.py", None),
    (f"X=1 {PY} model/train.py", None),
    (f"{PY}", None),
    (f"{PY} 'unterminated", None),
])
def test_which_commands_are_forked(command: str, argv: list[str] | None) -> None:
    assert warm.script_argv(command) == argv


# -- the config key ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, why", [
    ("5", "expected a list of strings"),
    ("[1, 2]", "expected a list of strings"),
    ('["torch numpy"]', "'torch numpy' is not a module name"),
    ('["torch", "os; rm -rf /"]', "'os; rm -rf /' is not a module name"),
    ('[""]', "'' is not a module name"),
    ('["../model/train"]', "'../model/train' is not a module name"),
])
def test_a_bad_preload_is_a_one_line_error(tmp_path: Path, value: str, why: str) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "master")
    cfg = tmp_path / "evo.toml"
    cfg.write_text(f'[target]\nrepo = "{repo}"\nmutable = ["t.py"]\nrun = "{{python}} t.py"\npreload = {value}\n')
    with pytest.raises(ConfigError) as e:
        load(cfg)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{cfg}: [target] preload = ") and why in msg, msg


def test_the_default_config_preloads_torch_and_numpy_and_defaults_to_none(tmp_path: Path) -> None:
    assert load(ROOT / "configs" / "default.toml").target.preload == ("torch", "numpy")
    cfg = tmp_path / "evo.toml"
    cfg.write_text(f'[target]\nrepo = "{ROOT}"\nmutable = ["t.py"]\nrun = "{{python}} t.py"\n')
    assert load(cfg).target.preload == ()
    template = RunTemplate.from_target(load(ROOT / "configs" / "default.toml").target, cache_dir="")
    assert template.preload == ("torch", "numpy") and warm.script_argv(template.command) == [PY, "model/train.py"]


def test_the_bench_part_reads_its_rows() -> None:
    """`evo bench --only warmstart` (its runs take minutes: here only its arithmetic and table)."""
    from evo.bench import run as bench_run
    from evo.bench import warmstart as part

    assert bench_run.parts_of(["warmstart"]) == ["warmstart"] and "warmstart" not in bench_run.DEFAULT_PARTS
    rows = [{"how": how, "i": i, "wall_s": wall, "runner_s": wall - 0.1, "startup_s": st, "eval_s": 0.4, "train_wall_s": 4.0,
             "budget_s": 4.1, "outside_script_s": 0.2, "steps": 60, "loadavg": [1.0, 1.0, 1.0]}
            for i in range(3) for how, wall, st in (("cold", 7.0, 1.5), ("warm", 5.0, 0.05))]
    s = part.summarise(rows)
    assert s["cold"]["train_fraction"] == round(4.0 / 7.0, 4) and s["warm"]["not_training_s"] == 1.0 and s["saved_s"] == 2.0
    table = dict(part.table({"status": "ok", "params": {"time_budget": 4.0}, **s}))
    assert table["model/ warm run, 4 s box (median of 3)"].startswith("wall 5 s, training 80% of it")
    assert s["warm"]["train_cpu_fraction"] is None  # rows without CPU seconds
