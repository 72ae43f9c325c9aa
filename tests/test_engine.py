"""The engine in-process: the real Study, strategies, breeder, judge, mainline, operators, git and
Optuna (in-memory storage), with runs simulated by the in-process executor on a virtual clock.

No run subprocess is started here; each test is a scheduling, promotion or resume question asked
of the code that ships.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from conftest import git, write_config
from evo import config as config_mod
from evo import lineage
from evo.config import Config
from evo.executors.base import Job
from evo.executors.inprocess import Evaluation, InProcessExecutor, Source, search
from evo.individual import Decision, Role, Status
from evo.study import Study
from evo.wiring import build_operators
from operators.constants import find_constants

_names = itertools.count()


def constants(src: Source) -> dict[str, float]:
    return {c.name: float(c.value) for c in find_constants("target.py", src.read("target.py"))}


def toy(noise: float = 0.0, progress: bool = True, log: str = ""):
    """The conftest target's formula (maximise; optimum X=3, Y=7, FLAG=True) with a per-seed offset."""

    def evaluate(src: Source, job: Job) -> Evaluation:
        c = constants(src)
        score = -(c["X"] - 3.0) ** 2 - 0.1 * (c["Y"] - 7) ** 2 + (0.5 if c["FLAG"] else 0.0)
        score += noise * random.Random(job.seed * 7919 + 17).gauss(0.0, 1.0)
        curve = [(k / 4, score - (1 - k / 4)) for k in range(1, 5)] if progress else []
        return Evaluation(value=score, seconds=1.0, progress=curve, log=log)

    return evaluate


def make_cfg(tmp_path: Path, repo: Path, **sections: dict[str, object]) -> Config:
    sections.setdefault("study", {}).setdefault("storage", f"memory://test-engine-{next(_names)}")
    path = write_config(tmp_path / f"evo{next(_names)}.toml", repo, tmp_path / "evo.db", **sections)
    return config_mod.load(path)


def drive(study: Study, ex: InProcessExecutor, until: int = 10_000) -> list[Job]:
    """The search loop's inner part (evo.search), returning the jobs in the order they started."""
    started: list[Job] = []
    while not study.finished() and len(started) < until:
        while ex.free() and (job := study.next_job()) is not None:
            ex.submit(job)
            started.append(job)
        if ex.busy() == 0:
            break
        for done in ex.wait(0):
            study.record(done.job, done.result, done.worker, done.monitor_trace)
    return started


def test_greedy_ratchet_promotes_only_improvements_with_auditable_commits(make_repo, tmp_path: Path) -> None:
    repo = make_repo()
    cfg = make_cfg(tmp_path, repo, search={"strategy": "greedy", "generations": 40}, sprt={"enabled": False})
    summary, ex = search(cfg, toy())
    assert summary["candidates"] == 40 and summary["promotions"] >= 3
    assert ex.now == pytest.approx(summary["runs"] - summary["duplicates"])  # one virtual second per run, one worker
    study = Study(cfg, *build_operators(cfg), log=lambda s: None)
    study.load()
    steps = lineage.mainline(study.repo, study.archive.attrs["base_commit"], study.repo.ref(study.mainline.ref))
    values = [s.value for s in steps]
    assert len(steps) == summary["promotions"] and values == sorted(values) and len(set(values)) == len(values)
    for step in steps:
        parents = git(repo, "log", "-1", "--format=%P", step.commit).split()
        cand = study.pop[step.index]
        assert parents[-1] == cand.commit and step.trailers["Candidate"] == cand.commit
        assert "Changes since the previous mainline" in git(repo, "log", "-1", "--format=%B", step.commit)
    assert git(repo, "status", "--porcelain") == "" and git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "master"


def test_a_promotion_commit_names_the_untested_ancestors_it_brings(make_repo, tmp_path: Path) -> None:
    """A population child of an untested parent brings that parent's change too: the commit says so."""
    repo = make_repo()
    cfg = make_cfg(tmp_path, repo, search={"strategy": "population", "population": 4, "generations": 8, "exploit": 0.3,
                                           "crossover_rate": 0.3}, sprt={"enabled": False})
    search(cfg, toy())
    study = Study(cfg, *build_operators(cfg), log=lambda s: None)
    study.load()
    steps = lineage.mainline(study.repo, study.archive.attrs["base_commit"], study.repo.ref(study.mainline.ref))
    named = 0
    for prev, step in zip([None, *steps], steps):
        before = lineage.ancestors(prev.index, study.pop) if prev else {0}
        brings = sorted(lineage.ancestors(step.index, study.pop) - before - {step.index})
        body = git(repo, "log", "-1", "--format=%B", step.commit)
        for i in brings:
            assert f"  #{i} {study.pop[i].description} ({study.pop[i].operator}, " in body, (i, body)
            named += 1
        assert ("Also brings the changes of" in body) == bool(brings), body
    assert named >= 1, "this seeded search promotes a child of an untested parent"


def test_the_eta_follows_the_recent_run_rate(make_repo, tmp_path: Path) -> None:
    """The time left is the work left at the rate of the latest runs, not the session's average:
    runs get shorter as futility stops more of them, and the average then overstates the time."""
    import time as _time

    from evo.report import RATE_WINDOW, Progress, _duration

    repo = make_repo()
    cfg = make_cfg(tmp_path, repo, search={"strategy": "greedy", "generations": 100}, sprt={"enabled": False})
    study = Study(cfg, *build_operators(cfg), log=lambda s: None)
    study.load()
    ex = InProcessExecutor(study.repo, study.template, 1, toy())
    p = Progress(study, ex, out=lambda s: None)
    study.next_index, study.spent_runs = 21, 21  # 20 children made, 80 left at one run each
    now = _time.time()
    p.t0, p.done_runs = now - 400.0, 21  # slow early runs: the session's average is 21 runs in 400 s
    p.done_at.extend(now - 20.0 + 0.5 * k for k in range(RATE_WINDOW + 1))  # the latest: 2 runs a second
    runs, seconds = p.eta()
    assert runs == 80 and seconds == pytest.approx(40.0, rel=0.05)  # not 80 / (21 / 400) = 1524 s
    p.done_at.clear()
    p.done_at.extend(now - 10.0 + k for k in range(5))  # too few recent runs: the session's average
    assert p.eta()[1] == pytest.approx(80 / (21 / 400), rel=0.05)
    assert [_duration(x) for x in (42, 155, 599, 1500, 7200)] == ["42s", "2 min 35s", "9 min 59s", "25 min", "2.0 h"]
    # runs per child from the latest 40 children: the first 20 ran 4 runs each (confirmations), the rest one
    from evo.individual import Individual, Run

    for i in range(1, 61):
        study.pop[i] = ind = Individual(index=i, commit=f"c{i}", tree=f"t{i}")
        for seed in range(4 if i <= 20 else 1):
            ind.runs[seed] = Run(seed=seed, trial=100 * i + seed, value=1.0, outcome="complete")
    study.next_index, study.spent_runs = 61, 1 + 80 + 40  # the study's average: 2 runs per child
    assert p.eta()[0] == 40  # 40 children left at the latest children's 1 run each, not 80


def test_scheduling_order_baseline_replicates_then_children(make_repo, tmp_path: Path) -> None:
    repo = make_repo()
    cfg = make_cfg(tmp_path, repo, search={"strategy": "greedy", "generations": 3}, sprt={"enabled": True, "replicates": 3})
    study = Study(cfg, *build_operators(cfg), log=lambda s: None)
    study.load()
    ex = InProcessExecutor(study.repo, study.template, 4, toy(noise=0.01))
    first = [study.next_job() for _ in range(2)]
    assert [(j.index, j.seed, j.role) for j in first] == [(0, 0, Role.BASELINE), (0, 1, Role.REPLICATE)]  # type: ignore[union-attr]
    third = study.next_job()
    assert third is not None and (third.index, third.seed, third.role) == (0, 2, Role.REPLICATE)
    assert study.next_job() is None  # no child before the baseline's screening run is in
    for job in first + [third]:
        ex.submit(job)  # type: ignore[arg-type]
    for done in ex.wait(0):
        study.record(done.job, done.result, done.worker, done.monitor_trace)
    assert study.judge.noise is not None and not study.judge.noise.checkpoints == ()
    child = study.next_job()
    assert child is not None and child.role == Role.CANDIDATE and child.seed == 0 and child.index == 1
    assert child.monitor is not None  # progress lines and a noise model: the futility test watches it


def test_promotion_test_confirms_on_fresh_seeds_never_the_screening_one(make_repo, tmp_path: Path) -> None:
    """A candidate that passed the gate on seed 0 is tested on seeds 1, 2, ...: the pair that
    selected it is not evidence. The incumbent (the baseline) already ran those seeds."""
    repo = make_repo()
    cfg = make_cfg(tmp_path, repo, search={"strategy": "greedy", "generations": 12}, sprt={"enabled": True, "replicates": 3})
    study = Study(cfg, *build_operators(cfg), log=lambda s: None)
    study.load()
    ex = InProcessExecutor(study.repo, study.template, 1, toy(noise=0.05))
    jobs = drive(study, ex)
    tested = [i for i in study.pop.values() if i.index > 0 and study.mainline.decisions.get(str(i.index), {}).get("pairs")]
    assert tested, "no candidate reached a promotion test"
    for ind in tested:
        seeds = study.mainline.decisions[str(ind.index)]["seeds"]
        assert seeds and study.judge.screen_seed not in seeds
    confirms = [j for j in jobs if j.role == Role.CONFIRM]
    assert confirms and all(j.seed != study.judge.screen_seed for j in confirms)
    assert study.mainline.promotions, "a gain of many noise sigmas was never promoted"


def test_a_target_without_progress_lines_still_promotes(make_repo, tmp_path: Path) -> None:
    """autoresearch's train.py prints its steps with \r and only `val_bpb:` at the end: the finals
    alone make the noise model, and the user is told which line the progress regex did not read."""
    repo = make_repo()
    cfg = make_cfg(tmp_path, repo, search={"strategy": "greedy", "generations": 15}, sprt={"enabled": True, "replicates": 3})
    lines: list[str] = []
    printed = "step 00950 (98.2%) | loss: 3.2101 | dt: 312ms\rstep 00953 (100.0%) | loss: 3.2099\n---\nscore: 1.0\n"
    summary, _ = search(cfg, toy(noise=0.05, progress=False, log=printed), out=lines.append)
    assert any("no progress checkpoints" in ln for ln in lines)
    hint = [ln for ln in lines if ln.startswith("note: the baseline printed")]
    assert len(hint) == 1 and "step 00953 (100.0%)" in hint[0] and "progress_regex" in hint[0]
    assert summary["promotions"] >= 2 and summary["spent_runs"] <= 3 * summary["candidates"]
    assert not any("testing" == d.get("decision") for d in Study(cfg, *build_operators(cfg)).archive.attrs["decisions"].values())


def test_resume_adopts_a_child_committed_just_before_a_kill(make_repo, tmp_path: Path) -> None:
    repo = make_repo()
    cfg = make_cfg(tmp_path, repo, search={"strategy": "greedy", "generations": 5}, sprt={"enabled": False})
    study = Study(cfg, *build_operators(cfg), log=lambda s: None)
    study.load()
    ex = InProcessExecutor(study.repo, study.template, 1, toy())
    drive(study, ex, until=2)  # the baseline and child 1 ran
    job = study.next_job()  # child 2: committed and its ref written, then "killed" before its run
    assert job is not None and job.index == 2
    orphan = job.commit  # type: ignore[union-attr]
    again = Study(cfg, *build_operators(cfg), log=lambda s: None)
    again.load()
    ind = again.pop[job.index]  # type: ignore[union-attr]
    assert ind.commit == orphan and ind.status == Status.PENDING
    nxt = again.next_job()
    assert nxt is not None and (nxt.index, nxt.commit, nxt.role) == (job.index, orphan, Role.CANDIDATE)  # type: ignore[union-attr]


def test_a_promotion_whose_archive_copy_was_lost_is_recovered_from_the_ref(make_repo, tmp_path: Path) -> None:
    repo = make_repo()
    cfg = make_cfg(tmp_path, repo, search={"strategy": "greedy", "generations": 15}, sprt={"enabled": False})
    summary, _ = search(cfg, toy())
    assert summary["promotions"] >= 2
    study = Study(cfg, *build_operators(cfg), log=lambda s: None)
    promoted = [p["index"] for p in study.archive.attrs["promotions"]]
    study.archive.set_attr("promotions", [])  # as if killed between the ref and the archive's writes
    for index in promoted:
        study.archive.set_row("decisions", index, {"decision": "testing"})
    study.load()
    assert len(study.mainline.promotions) == summary["promotions"]
    last = study.mainline.promotions[-1]["index"]
    assert study.incumbent is not None and study.incumbent.index == last
    assert study.pop[last].decision == Decision.ACCEPT and study.mainline.decisions[str(last)]["recovered"]


def test_same_seed_same_search_and_duplicates_are_proposed_again(make_repo, tmp_path: Path) -> None:
    repo = make_repo()

    def trees(retries: int, name: str) -> tuple[list[str], int]:
        cfg = make_cfg(tmp_path, repo, study={"name": name}, search={"strategy": "population", "population": 4, "generations": 6},
                       operators={"duplicate_retries": retries}, sprt={"enabled": False})
        summary, _ = search(cfg, toy())
        study = Study(cfg, *build_operators(cfg))
        study.load()
        return [study.pop[i].tree for i in sorted(study.pop)], summary["duplicates"]

    a, dup_a = trees(3, "a")
    b, _ = trees(3, "b")
    assert a == b  # the same seed makes the same children
    _, dup_none = trees(0, "c")
    assert dup_a < dup_none  # re-proposing a duplicate spends proposals, not runs


def test_a_failed_baseline_stops_the_search(make_repo, tmp_path: Path) -> None:
    from evo.errors import EvoError

    repo = make_repo()
    cfg = make_cfg(tmp_path, repo, search={"strategy": "greedy", "generations": 5}, sprt={"enabled": False})

    def crash(src: Source, job: Job) -> Evaluation:
        return Evaluation(value=None, reason="ImportError: no module named torch")

    with pytest.raises(EvoError, match="baseline .* did not run: crashed"):
        search(cfg, crash)
    study = Study(cfg, *build_operators(cfg))
    study.load()
    assert study.made == 0  # no child was made (nor any LLM token spent) against a baseline that cannot run


def _runs(cfg: Config) -> list[tuple[int, int]]:
    study = Study(cfg, *build_operators(cfg))
    return [(int(t.user_attrs["index"]), int(t.user_attrs["seed"])) for t in study.archive.trials() if "run_seconds" in t.user_attrs]


def test_max_runs_stops_the_search_and_a_larger_budget_continues_it(make_repo, tmp_path: Path) -> None:
    repo = make_repo()
    sections = {"search": {"strategy": "population", "population": 4, "generations": 50, "workers": 3, "max_runs": 20},
                "sprt": {"enabled": True, "replicates": 3}}
    cfg = make_cfg(tmp_path, repo, **sections)
    summary, _ = search(cfg, toy(noise=0.05))
    runs = _runs(cfg)
    assert len(runs) == 20 == summary["spent_runs"] and summary["stopped"] == "max_runs = 20"
    assert Study(cfg, *build_operators(cfg)).archive.attrs["stopped"]["reason"] == "max_runs = 20"
    more = config_mod.with_overrides(cfg, search={"max_runs": 35})
    summary2, _ = search(more, toy(noise=0.05))
    runs2 = _runs(more)
    assert len(runs2) == 35 and runs2[:20] == runs  # nothing re-run: the first 20 are the same trials
    assert len(set(runs2)) == len(runs2)


def test_run_hours_and_wall_hours_budgets(make_repo, tmp_path: Path) -> None:
    repo = make_repo()
    cfg = make_cfg(tmp_path, repo, search={"strategy": "greedy", "generations": 100, "max_run_hours": 12 / 3600}, sprt={"enabled": False})
    summary, _ = search(cfg, toy())  # every simulated run lasts one (virtual) second
    assert summary["spent_runs"] == 12 and summary["stopped"].startswith("max_run_hours")
    cfg = make_cfg(tmp_path, repo, study={"name": "wall"}, search={"strategy": "greedy", "generations": 100, "max_hours": 1e-9},
                   sprt={"enabled": False})
    summary, _ = search(cfg, toy())
    assert summary["spent_runs"] == 0 and summary["stopped"].startswith("max_hours")
    wall = Study(cfg, *build_operators(cfg)).archive.attrs["wall_seconds"]
    assert wall > 0
    summary, _ = search(config_mod.with_overrides(cfg, search={"max_hours": 0.0, "generations": 5}), toy())
    assert summary["spent_runs"] == 6 and summary["stopped"] == ""
    assert Study(cfg, *build_operators(cfg)).archive.attrs["wall_seconds"] > wall  # the sessions add up


def test_statistics_bench_runs_the_product_path(tmp_path: Path) -> None:
    """`evo bench --only statistics`: whole ratchets of the real engine in a simulated world, where the
    truth of every change is known; the three rules spend the same run-seconds."""
    from evo.bench import statistics as stats

    res = stats.run(True, tmp_path, sizes={"reps": 1, "budget": 40}, log=lambda line: None)
    rules = res["rules"]
    assert set(rules) == {"evo", "fixed-seed", "fresh-seed"}
    for rec in res["records"]:
        assert rec["run_seconds"] <= 40 + 1.0 and rec["candidates"] > 0  # a run that starts under the budget finishes
    evo = [r for r in res["records"] if r["rule"] == "evo"]
    assert all(r["runs"] >= 3 for r in evo)  # the baseline's replicates are spent first
    assert all(r["commits"] >= r["no_gain_commits"] >= 0 for r in res["records"])
    fixed = [r for r in res["records"] if r["rule"] == "fixed-seed"]
    assert all(r["runs_per_candidate"] <= 1.05 for r in fixed)  # one run each (the baseline's aside)
    fa = rules["evo"]["false_acceptance"]
    assert fa["tests"] == sum(r["null_tests"] for r in evo) and fa["accepted"] == sum(r["null_accepts"] for r in evo)
    assert [sum(v[i] for v in fa["by_run_sd"].values()) for i in (0, 1)] == [fa["accepted"], fa["tests"]]
    # the exact binomial interval: no success in 64 tests still allows up to 1 - 0.025 ** (1 / 64)
    assert stats.clopper_pearson(0, 64) == [0.0, pytest.approx(1 - 0.025 ** (1 / 64))]
    lo, hi = stats.clopper_pearson(14, 268)
    assert 0.028 < lo < 14 / 268 < hi < 0.087


def test_credentials_never_reach_the_archive(make_repo, tmp_path: Path) -> None:
    repo = make_repo()
    cfg = make_cfg(tmp_path, repo, search={"strategy": "greedy", "generations": 1}, sprt={"enabled": False},
                   llm={"base_url": "https://alice:s3cret-pw@llm.example/v1"}, executor={"ray_address": "ray://bob:hunter2@head:10001"})
    search(cfg, toy())
    stored = repr(Study(cfg, *build_operators(cfg)).archive.attrs)
    assert "s3cret-pw" not in stored and "hunter2" not in stored and "alice:***@llm.example" in stored


def test_compare_reads_every_study_at_equal_compute(make_repo, tmp_path: Path) -> None:
    from evo.inspect.api import load_study
    from evo.inspect.compare import compare

    repo = make_repo()
    storage = f"memory://test-engine-compare-{next(_names)}"
    for name, strategy, runs in (("pop", "population", 30), ("greedy", "greedy", 18)):
        cfg = make_cfg(tmp_path, repo, study={"name": name, "storage": storage},
                       search={"strategy": strategy, "population": 4, "generations": 50, "max_runs": runs}, sprt={"enabled": False})
        search(cfg, toy())
    studies = [load_study(n, storage) for n in ("pop", "greedy")]
    res = compare(studies)
    assert res["budget"] == "runs" and res["compared_at"] == 18
    assert all(r["at_runs"] == 18 for r in res["studies"]) and any("each is read at 18 runs" in n for n in res["notes"])
    hours = compare(studies, budget="run-hours")
    assert hours["compared_at"] == 18.0 and all(r["at_run_seconds"] <= 18.0 for r in hours["studies"])
    end = compare(studies, budget="end")
    assert any(n.startswith("WARNING: the studies spent 18..30 runs") for n in end["notes"])
    assert {r["at_runs"] for r in end["studies"]} == {18, 30}


def test_repository_states_that_would_break_runs_are_refused_or_warned(make_repo, tmp_path: Path) -> None:
    import os

    from evo.errors import ConfigError

    repo = make_repo()
    os.symlink("/etc/hostname", repo / "host")  # an absolute link: the export refuses it, so every run would crash
    git(repo, "add", "host")
    git(repo, "commit", "-qm", "link")
    cfg = make_cfg(tmp_path, repo, search={"strategy": "greedy", "generations": 1}, sprt={"enabled": False})
    with pytest.raises(ConfigError, match=r"the symlink host -> /etc/hostname points outside the repository"):
        search(cfg, toy())
    git(repo, "rm", "-q", "host")
    os.symlink("../../outside", repo / "up")
    git(repo, "add", "up")
    git(repo, "commit", "-qm", "up")
    with pytest.raises(ConfigError, match=r"the symlink up -> \.\./\.\./outside"):
        search(cfg, toy())
    git(repo, "rm", "-q", "up")
    os.symlink("target.py", repo / "alias.py")  # inside: fine
    (repo / "README.md").write_text("edited, not committed\n")
    git(repo, "add", "alias.py")
    git(repo, "commit", "-qm", "alias")
    (repo / "README.md").write_text("edited again\n")
    lines: list[str] = []
    search(cfg, toy(), out=lines.append)
    assert any(ln.startswith("warning: the working tree has uncommitted changes (1 file(s))") for ln in lines), lines
    lfs = make_repo(name="lfs", files={"big.py": "version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n"})
    cfg = make_cfg(tmp_path, lfs, target={"mutable": ["big.py"]}, search={"strategy": "greedy", "generations": 1}, sprt={"enabled": False})
    with pytest.raises(ConfigError, match="big.py is a Git LFS pointer"):
        search(cfg, toy())


def test_a_head_whose_children_keep_losing_to_its_one_run_is_run_again(make_repo, tmp_path: Path) -> None:
    """A single screening run can be lucky; a head bred from again and again then stops being displaced
    (its children look worse than its luck). After max(3, workers) children that did not beat it, the head
    runs once more on a seed no promotion test uses (that run helps choose the head, so it cannot be evidence
    in the head's test), and the line's head is then chosen by the mean over seeds."""
    from evo.individual import Decision, Individual, Run

    repo = make_repo()
    cfg = make_cfg(tmp_path, repo, search={"strategy": "greedy", "generations": 50}, sprt={"enabled": True, "replicates": 3})
    study = Study(cfg, *build_operators(cfg), log=lambda s: None)
    study.load()
    base = study.pop[0]
    for k, s in enumerate(study.judge.replicate_seeds):  # maximised; noisy replicates
        base.runs[s] = Run(seed=s, trial=k, value=1.0 + 0.1 * k, outcome="complete")
        study.judge.observe(base, s)
    assert study.judge.fit(base) is not None and not study.judge.noiseless
    base.status = Status.EVALUATED
    screen, again = study.judge.screen_seed, study.judge.rerun_seed
    assert again not in study.judge.confirm_seeds + study.judge.replicate_seeds

    def add(idx: int, parent: int, value: float) -> Individual:
        ind = study.pop[idx] = Individual(index=idx, commit=f"c{idx}", tree=f"t{idx}", parent_indices=(parent,),
                                          status=Status.EVALUATED, decision=Decision.UNTESTED, screen_seed=screen)
        ind.runs[screen] = Run(seed=screen, trial=idx, value=value, outcome="complete")
        return ind

    head = add(1, 0, 5.0)  # a lucky run
    for i in range(2, 4):
        add(i, 1, 2.0)
    study.next_index = 4
    study.index.build(study.pop)
    assert study._stuck_head(base) is None  # two losing children: not yet
    add(4, 1, 2.5)
    study.next_index = 5
    study.index.build(study.pop)
    job = study.next_job()
    assert job is not None and job.index == 1 and job.seed == again and job.role == Role.RERUN.value
    assert study._stuck_head(base) is None  # in flight: not twice
    head.runs[again] = Run(seed=again, trial=5, value=-1.0, outcome="complete")  # its mean, 2.0, is below child #4's run
    study.inflight.discard((1, again))
    assert study.strategy.heads.head(study.pop, base).index == 4
