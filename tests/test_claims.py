"""One test per README claim that nothing else covered. Each runs the real thing (a search through
`evo.cli.main` in this process: real git repos in tmp_path, real subprocesses per run, real SQLite)
and fails on a deliberately broken version of the code it covers (the commit message names the
breakage each was tried against)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import random
import re
import stat
import tempfile
from pathlib import Path
from typing import Any

import optuna
import pytest

from conftest import TARGET, git, write_config, facts
from evo import cli
from evo.config import SearchConfig
from evo.individual import Individual, Run, Status
from evo.strategies import Population

TOY = TARGET.replace("NOISE", "0.0")


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs' checkouts go to this test's folder; no storage or results from the caller's environment."""
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.chdir(tmp_path)
    for name in ("EVO_STORAGE", "EVO_RESULTS", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(name, raising=False)


def repo_with(tmp: Path, target: str, name: str = "repo", files: dict[str, str] | None = None) -> Path:
    repo = tmp / name
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "master")
    (repo / "target.py").write_text(target)
    for rel, text in (files or {}).items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "init")
    return repo


def evo_main(*argv: str) -> str:
    """`evo ARGV` in this process; its output (it must succeed)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        rc = cli.main(list(argv))
    assert rc == 0, out.getvalue()
    return out.getvalue()


def search(tmp: Path, repo: Path, *flags: str, db: str = "evo.db", name: str = "toy", **sections: dict[str, Any]) -> optuna.Study:
    cfg = write_config(tmp / f"{name}.toml", repo, tmp / db, **sections)
    evo_main("search", "--config", str(cfg), *flags)
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp / db}")


def by_index(study: optuna.Study) -> dict[int, optuna.trial.FrozenTrial]:
    """Each individual's screening trial."""
    out: dict[int, optuna.trial.FrozenTrial] = {}
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if t.user_attrs["role"] in ("baseline", "candidate"):
            out.setdefault(t.user_attrs["index"], t)
    return out


# -- reading a run's output -----------------------------------------------------------------------

def test_the_last_metric_line_wins(tmp_path: Path) -> None:
    target = 'X = 1.0\nprint("score: 1.0")\nprint("score: 9.0")\nprint("loss: 4")\nprint("score: -3.25")\nprint("done")\n'
    study = search(tmp_path, repo_with(tmp_path, target), search={"generations": 0})
    (base,) = study.get_trials(deepcopy=False)
    assert base.state == optuna.trial.TrialState.COMPLETE
    assert base.value == -3.25  # not the first (1.0) nor the best (9.0) of the three
    assert base.user_attrs["metrics"] == {"score": -3.25, "loss": 4.0}


def test_progress_output_is_split_on_carriage_returns(tmp_path: Path) -> None:
    """A tqdm-style run: progress rewritten in place with '\\r', never a newline, metric last."""
    target = ('import sys\nX = 1.0\nfor i in range(1, 5):\n'
              '    sys.stdout.write(f"progress: {i / 4:.2f} score: {i * 1.5}\\r")\n    sys.stdout.flush()\n'
              'sys.stdout.write("score: 7.5\\r")\n')
    study = search(tmp_path, repo_with(tmp_path, target), search={"generations": 0})
    (base,) = study.get_trials(deepcopy=False)
    assert base.state == optuna.trial.TrialState.COMPLETE, base.user_attrs.get("reason")
    assert base.value == 7.5
    assert base.intermediate_values == {250: 1.5, 500: 3.0, 750: 4.5, 1000: 6.0}


# -- setup, storage and paths -----------------------------------------------------------------------

def test_setup_runs_once_per_search_before_any_run_and_again_on_resume(tmp_path: Path) -> None:
    events = tmp_path / "events"
    target = ('import os\nX = 1.0\n'
              'data = open(os.path.join(os.environ["EVO_CACHE"], "prepared.txt")).read()\n'
              'print(f"score: {-(X - 3) ** 2 + float(data)}")\n')
    repo = repo_with(tmp_path, target)
    sections: dict[str, Any] = {"target": {
        "setup": f'echo setup >> {events} && mkdir -p "$EVO_CACHE" && echo 0.5 > "$EVO_CACHE/prepared.txt"',
        "run": f"echo run >> {events} && {{python}} target.py"}}
    study = search(tmp_path, repo, "--generations", "2", "--workers", "2", **sections)
    assert events.read_text().split() == ["setup", "run", "run", "run"]
    assert by_index(study)[0].value == -4 + 0.5  # the run read what setup prepared
    # the same command resumes (with a larger budget): setup runs once more, first
    study = search(tmp_path, repo, "--generations", "4", "--workers", "2", **sections)
    assert events.read_text().split() == ["setup", "run", "run", "run", "setup", "run", "run"]
    assert sorted(by_index(study)) == [0, 1, 2, 3, 4]


def _bare_config(path: Path, repo: str, name: str = "toy", **extra: str) -> Path:
    """A config naming no storage and no results folder unless told (the defaults apply)."""
    lines = ["[study]", f'name = "{name}"', *[f'{k} = "{v}"' for k, v in extra.items()],
             "[target]", f'repo = "{repo}"', 'mutable = ["target.py"]', 'run = "{python} target.py"',
             "time_budget = 1", "timeout = 20", 'direction = "maximize"',
             "[search]", 'strategy = "greedy"', "generations = 1", "[sprt]", "enabled = false"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_evo_storage_is_the_default_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = repo_with(tmp_path, TOY)
    env_db = tmp_path / "elsewhere" / "env.db"
    env_db.parent.mkdir()
    monkeypatch.setenv("EVO_STORAGE", f"sqlite:///{env_db}")
    evo_main("search", "--config", str(_bare_config(tmp_path / "evo.toml", str(repo))))
    assert env_db.is_file() and not (tmp_path / "results" / "evo.db").exists()
    assert len(optuna.load_study(study_name="toy", storage=f"sqlite:///{env_db}").trials) == 2
    # the inspection commands read it too, with no --storage
    rows = json.loads(evo_main("trials", "toy", "--format", "json"))
    assert sorted(r["index"] for r in rows) == [0, 1]
    # without it: ./results/evo.db under the current directory
    monkeypatch.delenv("EVO_STORAGE")
    evo_main("search", "--config", str(_bare_config(tmp_path / "evo.toml", str(repo), name="local")))
    assert (tmp_path / "results" / "evo.db").is_file()
    assert len(optuna.load_study(study_name="local", storage=f"sqlite:///{tmp_path / 'results' / 'evo.db'}").trials) == 2


AGENT = '''\
import os, pathlib
prompt = pathlib.Path(os.environ["EVO_PROMPT_FILE"]).read_text()
marker = next(line for line in prompt.splitlines() if "PROGRAM-MARKER" in line)
p = pathlib.Path("target.py")
p.write_text(p.read_text().replace("X = 1.0", "X = 2.0"))
pathlib.Path("EVO_DESCRIPTION").write_text(marker + "\\n")
'''


def test_paths_in_a_config_are_relative_to_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """repo, results and a relative sqlite storage are relative to the config file; `program`
    to the repository; none to the current directory."""
    repo_with(tmp_path / "project", TOY, files={"notes/program.md": "PROGRAM-MARKER: try X near 3\n"})
    (tmp_path / "agent.py").write_text(AGENT)
    conf = _bare_config(tmp_path / "project" / "conf" / "evo.toml", "../repo", results="out", storage="sqlite:///db/evo.db")
    conf.write_text(conf.read_text() + f"[operators]\nmutation = \"agent\"\nprogram = \"notes/program.md\"\n"
                    f"[agent]\ncommand = \"{{python}} {tmp_path / 'agent.py'}\"\n")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    evo_main("search", "--config", "../project/conf/evo.toml")
    db = tmp_path / "project" / "conf" / "db" / "evo.db"
    assert db.is_file()
    study = optuna.load_study(study_name="toy", storage=f"sqlite:///{db}")
    assert facts(study)["repo"] == str(tmp_path / "project" / "repo")
    child = by_index(study)[1]
    assert child.user_attrs["description"] == "PROGRAM-MARKER: try X near 3"  # the agent read the program
    assert child.value == pytest.approx(-1.0 - 0.4)
    assert Path(child.user_attrs["log"]).is_relative_to(tmp_path / "project" / "conf" / "out")
    assert list((tmp_path / "cwd").iterdir()) == []  # nothing lands in the current directory


# -- strategies ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def flagged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, optuna.Study]:
    """A config that says greedy/8/seed 0/agent/'fromfile', overridden by every flag."""
    tmp = tmp_path_factory.mktemp("flags")
    repo = repo_with(tmp, TOY)
    cfg = write_config(tmp / "evo.toml", repo, tmp / "evo.db", study={"name": "fromfile", "seed": 0},
                       search={"strategy": "greedy", "population": 8, "generations": 2},
                       operators={"mutation": "agent"}, agent={"command": "false"})
    old = Path.cwd()
    os.chdir(tmp)
    try:
        evo_main("search", "--config", str(cfg), "--strategy", "random", "--population", "3", "--seed", "5",
                 "--mutation", "constants", "--study", "flagged")
    finally:
        os.chdir(old)
    storage = f"sqlite:///{tmp / 'evo.db'}"
    assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == ["flagged"]
    return repo, optuna.load_study(study_name="flagged", storage=storage)


def test_cli_flags_override_the_config(flagged: tuple[Path, optuna.Study]) -> None:
    _, study = flagged
    a = facts(study)
    assert (a["strategy"], a["seed"]) == ("random", 5)
    c = a["config"]
    assert (c["study"]["name"], c["study"]["seed"]) == ("flagged", 5)
    assert (c["search"]["strategy"], c["search"]["population"], c["operators"]["mutation"]) == ("random", 3, "constants")
    # and they took effect: 2 generations of 3 constants children, every run on seed 5
    ts = study.get_trials(deepcopy=False)
    kids = [t for t in ts if t.user_attrs["index"] > 0]
    assert sorted(t.user_attrs["index"] for t in kids) == list(range(1, 7))
    assert {t.user_attrs["operator"] for t in kids} == {"constants"}
    assert {t.user_attrs["seed"] for t in ts} == {5}
    assert sorted({t.user_attrs["generation"] for t in kids}) == [1, 2]


def test_random_strategy_breeds_every_child_from_the_baseline(flagged: tuple[Path, optuna.Study]) -> None:
    _, study = flagged
    ts = by_index(study)
    # the mainline moved before the last child was bred (one worker: a child is bred after the
    # previous one was recorded), and still nobody bred from it
    promos = facts(study)["promotions"]
    assert promos and promos[0]["index"] < max(ts), promos
    for i, t in ts.items():
        if i > 0:
            assert t.user_attrs["parent_indices"] == [0], (i, t.user_attrs["parent_indices"])
            assert t.user_attrs["parents"] == [facts(study)["base_commit"]]


def test_a_promotion_commit_has_the_previous_mainline_then_the_candidate_as_parents(flagged: tuple[Path, optuna.Study]) -> None:
    repo, study = flagged
    promos = facts(study)["promotions"]
    assert promos, "the toy's constants start far from the optimum: some child is promoted"
    previous = facts(study)["base_commit"]
    for p in promos:
        assert git(repo, "log", "-1", "--format=%P", p["commit"]).split() == [previous, p["candidate"]]
        assert git(repo, "rev-parse", f"{p['commit']}^{{tree}}") == git(repo, "rev-parse", f"{p['candidate']}^{{tree}}")
        assert f"Evo-Index: {p['index']}" in git(repo, "log", "-1", "--format=%B", p["commit"])
        previous = p["commit"]
    assert git(repo, "rev-parse", "evo/flagged/main") == previous
    assert git(repo, "rev-parse", "master") == facts(study)["base_commit"]  # the user's branch never moves


SPACED = '''\
import os
LR = 0.1
#
#
#
MOMENTUM = 0.5
#
#
#
WIDTH = 8
score = 10 - (LR - 0.3) ** 2 * 20 - (MOMENTUM - 0.9) ** 2 * 5 - abs(WIDTH - 16) * 0.05
print(f"score: {score:.6f}")
'''


# every change is a gain: every child beats its parent, so sibling lines are crossover partners
# whatever steps the constants operator takes
ALL_GAIN = SPACED.replace("score = 10 - (LR - 0.3) ** 2 * 20 - (MOMENTUM - 0.9) ** 2 * 5 - abs(WIDTH - 16) * 0.05",
                          "score = abs(LR - 0.1) + abs(MOMENTUM - 0.5) + abs(WIDTH - 8)")


@pytest.mark.parametrize("rate", [1.0, 0.0])
def test_mutation_rate_decides_whether_a_crossover_child_is_also_mutated(tmp_path: Path, rate: float) -> None:
    assert ALL_GAIN != SPACED
    sec: dict[str, Any] = {"strategy": "population", "population": 3, "generations": 1, "crossover_rate": 1.0,
                           "tournament_size": 1, "mutation_rate": rate,
                           "steady_state": False}  # the barrier: the same pool whichever run ends first
    if "merge_side_lines" in {f.name for f in dataclasses.fields(SearchConfig)}:
        sec["merge_side_lines"] = False  # those merges are planned before, and apart from, crossover_rate/mutation_rate
    study = search(tmp_path, repo_with(tmp_path, ALL_GAIN), "--workers", "2", study={"seed": 1}, search=sec,
                   operators={"duplicate_retries": 0})  # a merge that repeats a tree would be retried mutated
    crosses = [t for t in by_index(study).values() if len(t.user_attrs["parent_indices"]) == 2]
    assert crosses, "the seeded search made no crossover"
    want = "crossover+constants" if rate == 1.0 else "crossover"
    assert {t.user_attrs["operator"] for t in crosses} == {want}
    for t in crosses:  # a mutated merge names its constants mutation ("LR 0.1 -> 0.15") after the merge
        mutated = re.search(r"; [A-Z][A-Z_]* \S+ -> \S+", t.user_attrs["description"]) is not None
        assert mutated == (rate == 1.0), t.user_attrs["description"]


def _ind(index: int, value: float, cost: float) -> Individual:
    i = Individual(index=index, commit=f"c{index}", tree=f"t{index}", generation=1, status=Status.EVALUATED)
    i.runs[0] = Run(seed=0, trial=index, value=value, outcome="complete", metrics={"score": value, "cost": cost})
    return i


@pytest.mark.parametrize("elites", [0, 1, 2])
def test_elites_survive_nsga2_selection(elites: int) -> None:
    """README: the `elites` best on the primary metric stay in the breeding pool whatever the
    secondary metric says. #1 is second best on score but dominated (by #0), so NSGA-II with mu=2
    keeps the two extremes of the first front (#0, #3); only elites >= 2 keeps #1 as well."""
    cfg = SearchConfig(strategy="population", population=2, generations=3, elites=elites, secondary_metric="cost")
    strat = Population(cfg, "maximize", "minimize")
    pool = [_ind(0, 10.0, 50.0), _ind(1, 9.0, 60.0), _ind(2, 5.0, 1.0), _ind(3, 4.0, 0.0)]
    kept = {m.ind.index for m in strat.survivors(pool)}
    assert kept == ({0, 3, 1} if elites >= 2 else {0, 3})
    if elites < 2:  # elites = 2: see the next test
        assert _parents(strat, pool) == kept  # breeding only ever draws from the survivors


def _parents(strat: Population, pool: list[Individual]) -> set[int]:
    pop = {i.index: i for i in pool}
    parents: set[int] = set()
    for k in range(200):
        plan = strat.plan(10 + k, pop, pop[0], random.Random(k))
        assert plan is not None
        parents |= {p.index for p in plan.parents}
    return parents


def test_a_dominated_elite_breeds_under_nsga2() -> None:
    strat = Population(SearchConfig(strategy="population", population=2, generations=3, elites=2, secondary_metric="cost"),
                       "maximize", "minimize")
    pool = [_ind(0, 10.0, 50.0), _ind(1, 9.0, 60.0), _ind(2, 5.0, 1.0), _ind(3, 4.0, 0.0)]
    assert _parents(strat, pool) == {0, 1, 3}


COSTLY = '''\
X = 1.0  # best at 3.0 on score
Y = 5  # each step up costs 1 and gains 0.1
score = -(X - 3.0) ** 2 + 0.1 * Y
print(f"score: {score:.6f}")
print(f"cost: {abs(X - 1.0) * 2 + Y:.6f}")
'''


def test_secondary_metric_runs_nsga2_end_to_end(tmp_path: Path) -> None:
    """With `secondary_metric` each run's second number is recorded and selection is NSGA-II: with
    a generational barrier, no parent of generation g is dominated by mu or more individuals of
    the generations before it (NSGA-II never keeps such a one; plain best-of-score does)."""
    mu = 3
    study = search(tmp_path, repo_with(tmp_path, COSTLY), study={"seed": 3},
                   search={"strategy": "population", "population": mu, "generations": 3, "secondary_metric": "cost",
                           "secondary_direction": "minimize", "steady_state": False, "elites": 0, "crossover_rate": 0.0})
    ts = by_index(study)
    assert facts(study)["config"]["search"]["secondary_metric"] == "cost"
    assert len(ts) == mu + 3 * mu
    done = {i: t for i, t in ts.items() if t.value is not None}
    assert all("cost" in t.user_attrs["metrics"] for t in done.values())

    def dominates(a: optuna.trial.FrozenTrial, b: optuna.trial.FrozenTrial) -> bool:
        sa, ca, sb, cb = a.value, a.user_attrs["metrics"]["cost"], b.value, b.user_attrs["metrics"]["cost"]
        return sa >= sb and ca <= cb and (sa > sb or ca < cb)

    checked, off_score = 0, set()
    for t in ts.values():
        g = t.user_attrs["generation"]
        if g < 1:
            continue
        pool = [o for o in done.values() if o.user_attrs["generation"] < g]
        top_score = sorted(pool, key=lambda o: -o.value)[:mu]
        for p in t.user_attrs["parent_indices"]:
            if p in done:
                assert sum(dominates(o, done[p]) for o in pool) < mu, (t.user_attrs["index"], p)
                checked += 1
                if done[p] not in top_score:
                    off_score.add(p)
    assert checked >= 2 * mu
    # the secondary metric mattered: a cheap parent that the score alone would not have kept
    assert off_score, "every parent was among the mu best on score: selection ignored the secondary metric"


# -- local slots and GPUs ----------------------------------------------------------------------------

GPU_TARGET = 'import os\nX = 1.0\nprint("cuda=[" + os.environ.get("CUDA_VISIBLE_DEVICES", "unset") + "]")\nprint(f"score: {-(X - 3) ** 2}")\n'


def _gpu_ids(study: optuna.Study) -> list[tuple[str, int]]:
    out = []
    for t in study.get_trials(deepcopy=False):
        log = Path(t.user_attrs["log"]).read_text()
        out.append((log.split("cuda=[", 1)[1].split("]", 1)[0], t.user_attrs["worker"]))
    return out


def test_each_local_slot_gets_one_gpu_from_cuda_visible_devices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    study = search(tmp_path, repo_with(tmp_path, GPU_TARGET), "--workers", "2", search={"generations": 4})
    ids = _gpu_ids(study)
    assert len(ids) == 5
    assert all(gpu == str(worker) for gpu, worker in ids), ids  # one id each, the slot's own
    assert {gpu for gpu, _ in ids} == {"0", "1"}


def test_each_local_slot_gets_one_gpu_from_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'GPU 0: Fake H100 (UUID: GPU-a)'\necho 'GPU 1: Fake H100 (UUID: GPU-b)'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    study = search(tmp_path, repo_with(tmp_path, GPU_TARGET), "--workers", "2", search={"generations": 4})
    ids = _gpu_ids(study)
    assert all(gpu == str(worker) for gpu, worker in ids), ids
    assert {gpu for gpu, _ in ids} == {"0", "1"}
