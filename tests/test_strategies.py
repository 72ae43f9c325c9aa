"""Issue 15: the constants operator's sanity, selection pressure, crossover that makes new code, and
the generated benchmark targets. Real git and the real engine (in-process executor); seeded."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from conftest import git
from evo import config as config_mod
from evo.bench.common import make_config, study_trials
from evo.bench.quality import holm, wilcoxon
from evo.bench.targets import FAMILIES, check, generate
from evo.config import ConfigError, SearchConfig
from evo.executors import inprocess
from evo.gitrepo import GitRepo
from evo.individual import Decision, Direction, Individual, Run, Status
from evo.strategies import Family, Greedy, HeadTracker, Population, best_screened, hall_of_fame, head
from operators.base import Context, OperatorError, Parent
from operators.constants import ConstantsMutation, find_constants, perturb
from operators.crossover import FitterResolver, RandomResolver, crossover, line_merge


# -- the constants operator --------------------------------------------------------------------------------
SRC = ("LR = 0.004\nWD = 0.0\nBETA = 0.95\nBIG = 15000.0\nNEG = -0.5\nDEPTH = 6\nZERO = 0\nNEG_INT = -3\n"
       "TINY = 1e-8\nFLAG = True\n")


@pytest.mark.parametrize("dist", ["cauchy", "gauss"])
def test_perturb_keeps_kind_and_sign_and_writes_three_significant_digits(dist: str) -> None:
    rng = random.Random(0)
    for c in find_constants("t.py", SRC):
        for _ in range(300):
            text = perturb(c, rng, 0.5, dist)
            new = eval(text)  # noqa: S307 - our own literal
            assert type(new) is type(c.value), (c.name, text)
            assert new != c.value, (c.name, text)
            if isinstance(new, bool):
                continue
            if c.value > 0 or c.value == 0:
                assert new >= 0, (c.name, text)
            else:
                assert new < 0, (c.name, text)
            if c.name == "WD":
                assert 1e-4 <= new <= 0.1  # 0.0 moves to a small positive value
            if c.name == "BETA":
                assert 0 < new < 1
            if isinstance(new, float):
                mant = text.lower().split("e")[0].replace("-", "").replace(".", "").strip("0")
                assert len(mant) <= 3, (c.name, text)  # no 15263.585147


def test_cauchy_steps_are_heavy_tailed_and_gauss_steps_are_not() -> None:
    c = next(c for c in find_constants("t.py", SRC) if c.name == "LR")
    jumps = {}
    for dist in ("cauchy", "gauss"):
        rng = random.Random(1)
        logs = [abs(math.log(float(perturb(c, rng, 0.5, dist)) / c.value)) for _ in range(2000)]
        jumps[dist] = sum(x > 2.0 for x in logs)  # a factor e^2 ~ 7: four gauss sigmas
    assert jumps["gauss"] <= 2 and jumps["cauchy"] >= 100


def test_inert_markers_and_exclude_are_never_mutated(monkeypatch: pytest.MonkeyPatch) -> None:
    src = ("A = 1.0\nB = 2.0  # evo: fixed\nC = 3  # GPU only  # evo: inert on cpu\nD = 4  # evo: inert on cuda\nE = 0.5\n")
    monkeypatch.delenv("EVO_DEVICE", raising=False)
    op = ConstantsMutation(max_changes=5, exclude=["E"])
    assert {c.name for c in op.candidates({"m.py": src})} == {"A", "D"}
    for s in range(50):
        out = op.mutate(Parent("c", {"m.py": src}), random.Random(s), Context())
        lines = out.files["m.py"].splitlines()
        assert lines[1:3] == src.splitlines()[1:3] and lines[4] == "E = 0.5"
    gpu = ConstantsMutation(max_changes=5, device="cuda")
    assert {c.name for c in gpu.candidates({"m.py": src})} == {"A", "C", "E"}
    with pytest.raises(OperatorError, match="marked inert"):
        ConstantsMutation(exclude=["A", "D", "E"]).mutate(Parent("c", {"m.py": src}), random.Random(0), Context())


def test_model_train_marks_its_gpu_only_constants_inert_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVO_DEVICE", "cpu")
    text = (Path(__file__).resolve().parents[1] / "model" / "train.py").read_text()
    names = {c.name for c in ConstantsMutation().candidates({"model/train.py": text})}
    assert names and not names & {"GPU_DEPTH", "GPU_WIDTH", "GPU_BATCH_SIZE", "USE_COMPILE"}
    assert {"DEPTH", "MATRIX_LR"} <= names


def test_config_validates_the_new_keys(tmp_path: Path) -> None:
    base = {"target": {"repo": str(tmp_path), "mutable": ["x.py"], "run": "true"}}
    cfg = config_mod.load(None, base | {"operators": {"exclude": ["A"], "step_dist": "gauss"}, "search": {"exploit": 0.5}})
    assert cfg.operators.exclude == ("A",) and cfg.operators.step_dist == "gauss" and cfg.search.exploit == 0.5
    for over in ({"search": {"exploit": 1.5}}, {"search": {"rank_power": -1}}, {"operators": {"step_dist": "levy"}}):
        with pytest.raises(ConfigError):
            config_mod.load(None, base | over)


# -- crossover ---------------------------------------------------------------------------------------------
BASE = "# consts\nA = 1.0\nB = 2.0\nC = 3.0\nD = 4.0\n"


def test_line_merge_keeps_both_neighbouring_changes_and_gives_shared_lines_to_the_fitter() -> None:
    a = BASE.replace("A = 1.0", "A = 1.5").replace("C = 3.0", "C = 3.5")
    b = BASE.replace("B = 2.0", "B = 2.5").replace("C = 3.0", "C = 2.5")
    for prefer_a, c_line in ((True, "C = 3.5"), (False, "C = 2.5")):
        m = line_merge(BASE, a, b, pick=lambda p=prefer_a: p)
        assert m is not None and m.left == 0 and (m.from_a, m.from_b, m.both) == (1, 1, 1)
        assert "A = 1.5" in m.text and "B = 2.5" in m.text and c_line in m.text and "D = 4.0" in m.text
    # a hunk that adds lines does not align: left to the resolver
    m = line_merge(BASE, BASE.replace("B = 2.0", "B = 2.0\nE = 5.0"), BASE.replace("B = 2.0", "B = 7.0"), pick=lambda: True)
    assert m is not None and m.left == 1


@pytest.fixture
def repo(tmp_path: Path) -> tuple[GitRepo, str]:
    p = tmp_path / "r"
    p.mkdir()
    git(p, "init", "-q")
    (p / "t.py").write_text(BASE)
    git(p, "add", "-A")
    git(p, "commit", "-qm", "base")
    r = GitRepo(p)
    return r, r.head()


def test_git_crossover_of_neighbouring_constants_makes_a_child_with_both(repo) -> None:
    r, base = repo
    a = r.commit_files(base, {"t.py": BASE.replace("A = 1.0", "A = 1.5")}, "a")
    b = r.commit_files(base, {"t.py": BASE.replace("B = 2.0", "B = 2.5")}, "b")
    for resolver in (FitterResolver(), RandomResolver()):
        child = crossover(r, Parent(a, {}, 1.0), Parent(b, {}, 2.0), resolver, random.Random(0), Context())
        assert child is not None and child.conflicts == ("t.py",)  # git alone calls it one conflict
        text = r.read(child.tree, "t.py").decode()
        assert "A = 1.5" in text and "B = 2.5" in text and "<<<" not in text
        assert child.tree not in (r.tree_of(a), r.tree_of(b))
        assert "line merge (a 1, b 1" in child.description


# -- selection ---------------------------------------------------------------------------------------------
def ind(index: int, values: list[float] | None, parents: tuple[int, ...] = (0,), generation: int = 1) -> Individual:
    i = Individual(index=index, commit=f"c{index}", tree=f"t{index}", parent_indices=parents if index else (),
                   generation=generation, status=Status.EVALUATED if values else Status.RUNNING)
    for s, v in enumerate(values or []):
        i.runs[s] = Run(seed=s, trial=index * 10 + s, value=v, outcome="complete")
    return i


def test_generation_zero_makes_at_most_one_baseline_mutant_per_worker() -> None:
    strat = Population(SearchConfig(population=8, generations=3, workers=2, crossover_rate=0.0, merge_side_lines=False), "minimize")
    pop = {0: ind(0, [5.0], generation=0)}
    p1 = strat.plan(1, pop, pop[0], random.Random(1))
    pop[1] = ind(1, None, generation=0)
    p2 = strat.plan(2, pop, pop[0], random.Random(2))
    pop[2] = ind(2, [4.0], generation=0)
    assert p1.parents[0].index == 0 and p2.parents[0].index == 0
    picks = {strat.plan(3, pop, pop[0], random.Random(s)).parents[0].index for s in range(100)}  # type: ignore[union-attr]
    assert 2 in picks  # generation 0 now breeds from what has been evaluated, not only the baseline


def test_exploitation_and_rank_pressure() -> None:
    cfg = SearchConfig(population=4, generations=5, crossover_rate=0.0, exploit=0.7, rank_power=1.0, merge_side_lines=False)
    strat = Population(cfg, "minimize")
    pop = {i: ind(i, [float(v)]) for i, v in enumerate([9, 1, 4, 2, 3, 8])}
    counts = {}
    for s in range(2000):
        a = strat.plan(10, pop, pop[1], random.Random(s)).parents[0].index  # type: ignore[union-attr]
        counts[a] = counts.get(a, 0) + 1
    assert set(counts) <= {1, 2, 3, 4}  # survivors only
    assert 0.75 < counts[1] / 2000 < 0.88  # 0.7 + 0.3 * 0.48 (rank weight of the best)
    assert counts[3] > counts[4] > counts[2]  # by rank: 1 < 2 < 3 < 4


def test_selection_ranks_on_the_mean_over_seeds() -> None:
    strat = Population(SearchConfig(population=1, generations=5, crossover_rate=0.0, exploit=0.0, elites=0, merge_side_lines=False), "minimize")
    lucky = ind(1, [1.0, 5.0, 6.0])  # screening run 1.0, mean 4.0
    steady = ind(2, [2.0])
    pop = {0: ind(0, [9.0]), 1: lucky, 2: steady}
    assert {strat.plan(5, pop, pop[0], random.Random(s)).parents[0].index for s in range(30)} == {2}  # type: ignore[union-attr]


def test_failing_lines_breed_less() -> None:
    strat = Population(SearchConfig(population=4, generations=5, crossover_rate=0.0, exploit=0.0, merge_side_lines=False), "minimize")
    pop = {0: ind(0, [9.0]), 1: ind(1, [1.0]), 2: ind(2, [1.1])}
    def share(p: dict[int, Individual]) -> float:
        return sum(strat.plan(50, p, p[0], random.Random(s)).parents[0].index == 1 for s in range(1000)) / 1000  # type: ignore[union-attr]
    before = share(pop)
    for k in range(3, 9):  # six children of #1, none better than it
        pop[k] = ind(k, [3.0 + k], parents=(1,))
    assert share(pop) < before - 0.2


def test_crossover_partners_are_never_nested_and_none_is_planned_without_one() -> None:
    cfg = SearchConfig(population=8, generations=5, crossover_rate=1.0, mutation_rate=0.0, merge_side_lines=False)
    strat = Population(cfg, "minimize")
    chain = {0: ind(0, [9.0]), 1: ind(1, [5.0], (0,)), 2: ind(2, [4.0], (1,)), 3: ind(3, [3.0], (2,))}
    assert all(strat.plan(9, chain, chain[3], random.Random(s)).operator == "mutation" for s in range(50))  # type: ignore[union-attr]
    tree = dict(chain) | {4: ind(4, [3.5], (1,)), 5: ind(5, [2.0], (3, 4))}
    family = Family()
    family.update(tree)
    assert all(family.nested(5, i) for i in range(5)) and family.nested(1, 5) and not family.nested(3, 4)
    for s in range(200):
        plan = strat.plan(9, tree, tree[5], random.Random(s))
        assert plan is not None
        if plan.operator == "crossover":
            a, b = (p.index for p in plan.parents)
            assert not family.nested(a, b)
    crossed = [strat.plan(9, dict(chain) | {4: ind(4, [3.5], (1,))}, chain[3], random.Random(s)) for s in range(50)]
    assert {tuple(sorted(p.index for p in c.parents)) for c in crossed if c and c.operator == "crossover"} == {(3, 4), (2, 4)}


def test_improving_side_lines_are_merged_into_the_incumbent_once() -> None:
    strat = Population(SearchConfig(population=8, generations=5, crossover_rate=0.0, exploit=1.0, merge_side_lines=True), "minimize")
    # 1 and 2 are siblings from the baseline; 3 (child of 1) is the incumbent; 2 improved on the baseline, 4 did not
    pop = {0: ind(0, [9.0]), 1: ind(1, [5.0]), 2: ind(2, [6.0]), 3: ind(3, [4.0], (1,)), 4: ind(4, [9.5])}
    plan = strat.plan(5, pop, pop[3], random.Random(0))
    assert plan is not None and plan.operator == "crossover" and [p.index for p in plan.parents] == [3, 2]
    pop[5] = ind(5, None, (3, 2))  # the merge is under way: never planned twice
    assert all(strat.plan(6, pop, pop[3], random.Random(s)).operator == "mutation" for s in range(20))  # type: ignore[union-attr]
    off = Population(SearchConfig(population=8, generations=5, crossover_rate=0.0, exploit=1.0, merge_side_lines=False), "minimize")
    assert off.plan(5, {k: v for k, v in pop.items() if k < 5}, pop[3], random.Random(0)).operator == "mutation"  # type: ignore[union-attr]


def test_greedy_breeds_from_the_best_screened_line_below_the_incumbent_and_drops_rejected_lines() -> None:
    # 0 baseline; 1 (incumbent) <- 2 (better on the screening seed) <- 3 (better still); 4 a worse child of 3;
    # 5 a better sibling line of the baseline (not under the incumbent: never the head)
    pop = {0: ind(0, [9.0]), 1: ind(1, [8.0]), 2: ind(2, [7.0], (1,)), 3: ind(3, [6.0], (2,)), 4: ind(4, [6.5], (3,)),
           5: ind(5, [1.0], (0,))}
    greedy = Greedy(SearchConfig(generations=10), "minimize")
    assert head(pop, pop[1], greedy.direction).index == 3
    assert {greedy.plan(6, pop, pop[1], random.Random(s)).parents[0].index for s in range(10)} == {3}  # type: ignore[union-attr]
    pop[3].decision = Decision.REJECT  # its promotion test said no: the line is abandoned from 3 on, 4 with it
    assert head(pop, pop[1], greedy.direction).index == 2
    pop[2].decision = Decision.REJECT
    assert head(pop, pop[1], greedy.direction).index == 1  # back to the incumbent
    pop[2].decision = Decision.INCONCLUSIVE  # undecided at the cap: still bred from
    assert head(pop, pop[1], greedy.direction).index == 2
    assert head(pop, pop[3], greedy.direction).index == 3  # a rejected line below the incumbent: only what is after it counts
    maxi = {0: ind(0, [1.0]), 1: ind(1, [2.0]), 2: ind(2, [0.5], (1,))}
    assert head(maxi, maxi[0], greedy.direction).index == 2 and head(maxi, maxi[0], Greedy(SearchConfig(), "maximize").direction).index == 1


def test_the_kept_head_equals_the_head_walked_afresh_as_the_population_grows() -> None:
    """HeadTracker answers each plan from what changed; a walk of the whole population must agree at every step."""
    rng = random.Random(5)
    kept = HeadTracker(Greedy(SearchConfig()).direction)
    pop = {0: ind(0, [10.0])}
    incumbent = pop[0]
    for k in range(1, 400):
        parent = kept.head(pop, incumbent)
        assert parent.index == head(pop, incumbent, kept.direction).index, k
        pop[k] = ind(k, None, (parent.index,) if rng.random() < 0.9 else (parent.index, rng.randrange(k)))
        for i in rng.sample(sorted(pop), min(3, len(pop))):  # runs and decisions land in any order
            x = pop[i]
            if i and x.status == Status.RUNNING:
                x.status = rng.choice((Status.EVALUATED, Status.EVALUATED, Status.PRUNED, Status.FAILED))
                if x.status == Status.EVALUATED:
                    x.runs[0] = Run(seed=0, trial=i, value=round(pop[x.parent_indices[0]].value or 10.0) - rng.choice((-1, 0, 1, 2)) * 0.5, outcome="complete")
            elif i and x.status == Status.EVALUATED and x.decision == Decision.NONE:
                x.decision = rng.choice((Decision.UNTESTED, Decision.TESTING))
            elif i and x.decision == Decision.TESTING:
                x.decision = rng.choice((Decision.REJECT, Decision.INCONCLUSIVE, Decision.ACCEPT))
                if x.decision == Decision.ACCEPT:
                    incumbent = x
    assert len(kept.open) < 40  # finished, decided individuals leave the open set


# -- the real engine ---------------------------------------------------------------------------------------
def engine_search(tmp_path: Path, name: str, seed: int = 3, workers: int = 4):
    t = generate("epistatic", seed)
    repo = t.make_repo(tmp_path / name)
    cfg = make_config(tmp_path, name, repo, run="python run.py", mutable=t.mutable, strategy="population", generations=5,
                      population=6, seed=seed, workers=workers, study={"storage": f"memory://{name}"},
                      search={"crossover_rate": 0.5, "exploit": 0.7})
    summary, _ = inprocess.search(cfg, t.evaluate)
    return t, repo, summary, sorted(study_trials(cfg), key=lambda x: x.number)


def test_population_search_makes_new_crossover_code_and_is_seeded(tmp_path: Path) -> None:
    t, repo, summary, trials = engine_search(tmp_path, "pa")
    tree = {x.user_attrs["index"]: x.user_attrs.get("tree") for x in trials}
    xo = [x for x in trials if str(x.user_attrs.get("operator", "")).startswith("crossover")]
    assert xo, "no crossover child"
    new = [x for x in xo if all(tree[i] != x.user_attrs["tree"] for i in x.user_attrs["parent_indices"])]
    assert len(new) >= 0.5 * len(xo)
    assert summary["duplicates"] <= 0.1 * summary["candidates"]
    baseline = t.true_value(t.constants())
    assert summary["promotions"] >= 1
    _, _, summary2, trials2 = engine_search(tmp_path, "pb")
    assert [x.user_attrs.get("tree") for x in trials] == [x.user_attrs.get("tree") for x in trials2]
    assert baseline > 0


# -- the benchmark's targets and statistics ------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_generated_targets_are_seeded_valid_and_differ_by_seed(family: str) -> None:
    ts = [generate(family, s) for s in range(12)]
    assert generate(family, 3).files == ts[3].files and generate(family, 3).objective == ts[3].objective
    assert len({repr(t.optimum_at) for t in ts}) == len(ts)
    for t in ts:
        check(t)
    if family == "large":
        assert all(20 <= len(t.constants()) <= 50 and 3 <= len(t.files) <= 5 for t in ts)
    if family == "noisy":
        assert all(t.noisy for t in ts)
    if family == "epistatic":
        t = ts[0]
        tricks = [k for k, v in t.optimum_at.items() if v is True]
        assert len(tricks) >= 4
        at = dict(t.optimum_at)
        at[tricks[0]] = False  # one switch of a pair alone is worse than neither
        neither = dict(at)
        for k in tricks[:2]:
            neither[k] = False
        assert t.true_value(at) > t.true_value(neither) > 0


def test_holm_and_paired_wilcoxon() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    w = wilcoxon([0.1 * k for k in range(20)], [0.1 * k + 1 for k in range(20)])
    assert w["wins"] == 20 and w["p"] < 1e-4
    assert wilcoxon([1.0] * 5, [1.0] * 5)["p"] == 1.0


# -- islands, per-child step sizes, the TPE proposer, what the trials record -------------------------------------
def test_new_search_keys_are_validated_with_file_key_and_value(tmp_path: Path) -> None:
    base = {"target": {"repo": str(tmp_path), "mutable": ["x.py"], "run": "true"}}
    cfg = config_mod.load(None, base | {"search": {"islands": 4, "island_patience": 2, "step_spread": 1.0, "tpe_rate": 0.25}})
    assert (cfg.search.islands, cfg.search.island_patience, cfg.search.step_spread, cfg.search.tpe_rate) == (4, 2, 1.0, 0.25)
    for key, bad in (("islands", 0), ("island_patience", 0), ("step_spread", 5.0), ("tpe_rate", 1.5), ("tpe_rate", -0.1)):
        with pytest.raises(ConfigError, match=rf"\[search\] {key} = {bad}"):
            config_mod.load(None, base | {"search": {key: bad}})


def test_islands_breed_from_their_own_best_and_a_stagnant_island_takes_the_incumbent_in() -> None:
    cfg = SearchConfig(population=8, generations=5, workers=1, crossover_rate=0.0, exploit=1.0, merge_side_lines=False, islands=2, island_patience=2,
                       step_spread=1.0)
    strat = Population(cfg, "minimize")
    # island 0: even indices, island 1: odd ones; #3 (island 1) is the incumbent, #2 is island 0's best
    pop = {0: ind(0, [9.0], generation=0), 1: ind(1, [6.0]), 2: ind(2, [5.0]), 3: ind(3, [4.0], (1,))}
    assert strat.plan(10, pop, pop[3], random.Random(0)).parents[0].index == 2  # type: ignore[union-attr]
    assert strat.plan(11, pop, pop[3], random.Random(0)).parents[0].index == 3  # type: ignore[union-attr]
    pop[4] = ind(4, [7.0], (2,))
    assert strat.plan(10, pop, pop[3], random.Random(0)).parents[0].index == 2  # type: ignore[union-attr]  # one failure: patience 2
    pop[6] = ind(6, [8.0], (2,))
    assert strat.plan(10, pop, pop[3], random.Random(0)).parents[0].index == 3  # type: ignore[union-attr]  # stagnant: migration
    # each island its own step size: 2 ** -1 and 2 ** +1 of the operator's step
    assert [strat.step_scale(i) for i in (10, 11)] == [0.5, 2.0]
    one = Population(SearchConfig(population=8, generations=5, workers=4, step_spread=1.0), "minimize")
    assert sorted(one.step_scale(i) for i in range(4)) == pytest.approx([0.5, 2 ** (-1 / 3), 2 ** (1 / 3), 2.0])  # in flight at once
    assert Population(SearchConfig(population=8, generations=5, workers=4), "minimize").step_scale(3) == 1.0
    assert ConstantsMutation(step=0.5).scaled(2.0).step == 1.0


def test_tpe_children_are_proposed_from_the_studys_own_candidates(tmp_path: Path) -> None:
    t = generate("smooth", 2)
    repo = t.make_repo(tmp_path / "tpe")
    cfg = make_config(tmp_path, "tpe", repo, run="python run.py", mutable=t.mutable, strategy="greedy", generations=24,
                      seed=2, workers=4, study={"storage": "memory://tpe"}, search={"tpe_rate": 0.5})
    summary, _ = inprocess.search(cfg, t.evaluate)
    trials = sorted(study_trials(cfg), key=lambda x: x.number)
    tpe = [x for x in trials if x.user_attrs.get("operator") == "tpe"]
    assert 6 <= len(tpe) <= 18 and summary["failed"] == 0
    space = t.space()
    for x in tpe:
        assert x.user_attrs["description"].startswith("tpe: ") and x.params  # the constants it moved, as Optuna params
        for name, v in x.params.items():  # inside the ranges around the baseline
            spec = space[name]
            assert spec[0] == "bool" or spec[1] * 0.99 <= v <= spec[2] * 1.01, (name, v, spec)
    # a TPE child moves several constants at once (a mutation at most max_changes = 2)
    assert max(len(x.params) for x in tpe) > 2
    assert t.true_value(t.constants()) > 0


def test_trials_record_the_planned_operator_and_the_virtual_end_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from evo.strategies import Plan

    real = Population.plan

    def plan(self: Population, index: int, pop: dict[int, Individual], incumbent: Individual, rng: random.Random) -> Plan | None:
        if index == 5:  # a crossover of nested lines (#1 descends from the baseline): the breeder mutates instead
            return Plan(parents=(pop[1], pop[0]), operator="crossover", generation=1)
        return real(self, index, pop, incumbent, rng)

    monkeypatch.setattr(Population, "plan", plan)
    t = generate("smooth", 4)
    repo = t.make_repo(tmp_path / "pl")
    cfg = make_config(tmp_path, "pl", repo, run="python run.py", mutable=t.mutable, strategy="population", generations=2,
                      population=4, seed=4, workers=3, study={"storage": "memory://pl"})
    _, ex = inprocess.search(cfg, t.evaluate)
    trials = sorted(study_trials(cfg), key=lambda x: x.number)
    five = [x for x in trials if x.user_attrs.get("index") == 5]
    assert five and five[0].user_attrs["planned"] == "crossover" and five[0].user_attrs["operator"] == "constants"
    assert five[0].user_attrs["parent_indices"] == [1]
    assert all("planned" not in x.user_attrs for x in trials if x.user_attrs.get("index") != 5)
    ends = [x.user_attrs["metrics"]["virtual_end"] for x in trials if x.user_attrs.get("outcome") in ("complete", "pruned")]
    assert ends and ends == sorted(ends) and 0 < ends[-1] <= ex.now + 1e-9  # recorded in the order they finished


def test_family_answers_ancestry_like_a_full_walk_as_the_population_grows() -> None:
    """Nested lines, merged pairs and children by first parent, kept as children arrive, against the
    definitions computed from scratch over a random 300-individual history with merges."""
    rng = random.Random(5)
    pop = {0: ind(0, [10.0])}
    family = Family()
    for k in range(1, 300):
        parents = (rng.randrange(k),) if rng.random() < 0.7 or k < 3 else tuple(rng.sample(range(k), 2))
        pop[k] = ind(k, [10.0 - k / 100], parents=parents)
        family.update(pop)
        if k % 37 == 0:
            anc: dict[int, set[int]] = {}
            for i in sorted(pop):
                anc[i] = set().union(*({p} | anc[p] for p in pop[i].parent_indices)) if pop[i].parent_indices else set()
            for a in range(0, k, 7):
                for b in range(0, k, 11):
                    assert family.nested(a, b) == (a == b or a in anc[b] or b in anc[a]), (a, b)
            assert family.merged == {tuple(sorted(i.parent_indices)) for i in pop.values() if len(i.parent_indices) == 2}
            assert all(sorted(family.offspring.get(i, [])) == sorted(c for c in pop if pop[c].parent_indices[:1] == (i,)) for i in pop)


def test_the_hall_of_fame_is_deaps_with_its_ties() -> None:
    """`best_screened` keeps DEAP's HallOfFame's choice and order, ties included, without its copies."""
    from deap import tools

    from evo.strategies import _Member

    rng = random.Random(3)
    for trial in range(200):
        inds = [ind(i, [float(rng.randint(0, 6))]) for i in range(rng.randint(1, 30))]
        k = rng.randint(1, 4)
        for d in (Direction.MINIMIZE, Direction.MAXIMIZE):
            hof = tools.HallOfFame(k)
            hof.update([_Member(i, (d.oriented(i.value),)) for i in inds])
            assert [m.ind.index for m in hof] == [i.index for i in best_screened(inds, d, k)]
    assert [i.index for i in hall_of_fame({i.index: i for i in inds}, Direction.MINIMIZE, 2)] == [i.index for i in best_screened(inds, Direction.MINIMIZE, 2)]


def test_ranks_kept_up_to_date_agree_with_survivors_made_anew() -> None:
    """`Ranks` (survivors and hall of fame kept as the population changes) against `survivors` over the
    whole population, at every step of random histories: runs finishing, tests adding seeds to a
    candidate and the incumbent, decisions made, incumbents changing, ties on the screening value."""
    from evo.strategies import evaluated

    for world in range(6):
        rng = random.Random(world)
        strat = Population(SearchConfig(population=rng.choice([3, 8]), generations=100, elites=rng.choice([0, 2, 3])),
                           rng.choice(["minimize", "maximize"]))
        pop = {0: ind(0, [10.0])}
        inc = pop[0]
        for k in range(1, 120):
            new = ind(k, None, parents=(rng.randrange(k),))
            pop[k] = new
            for i in list(pop.values()):
                if i.status == Status.RUNNING and rng.random() < 0.5:
                    i.status = rng.choice([Status.EVALUATED] * 3 + [Status.FAILED, Status.PRUNED])
                    if i.status == Status.EVALUATED:
                        i.runs[0] = Run(seed=0, trial=i.index, value=float(rng.randint(0, 9)), outcome="complete")
                        i.decision = rng.choice([Decision.UNTESTED, Decision.UNTESTED, Decision.TESTING])
                elif i.decision == Decision.TESTING and rng.random() < 0.3:
                    s = max(i.runs) + 1
                    i.runs[s] = Run(seed=s, trial=k, value=rng.gauss(5, 3), outcome="complete")
                    inc.runs[s] = Run(seed=s, trial=k, value=rng.gauss(5, 3), outcome="complete")
                    i.decision = rng.choice([Decision.TESTING, Decision.REJECT, Decision.INCONCLUSIVE, Decision.ACCEPT])
                    if i.decision == Decision.ACCEPT:
                        inc = i
            fast = strat.ranks.survivors(pop, inc)
            pool = evaluated(pop)
            assert (fast is None) == (not pool)
            if pool:
                assert [m.ind.index for m in fast] == [m.ind.index for m in strat.survivors(pool)], (world, k)  # type: ignore[union-attr]


def test_the_plan_benchmarks_history_plans_the_same_with_kept_and_fresh_state() -> None:
    """evo.bench.plans's synthetic history: a strategy that keeps its state from plan to plan (as in a
    search) plans what a new one, taking the whole population in, plans from the same rng state."""
    from evo.bench.plans import history

    pop = history(400, seed=3)
    kept = Population(SearchConfig(population=8, generations=10**6, workers=2, crossover_rate=0.5), "minimize")
    for k in range(30):
        child = Individual(index=400 + k, commit=f"c{400 + k}", tree=f"t{400 + k}", generation=60, parent_indices=(k * 13,),
                           status=Status.EVALUATED, decision=Decision.UNTESTED if k % 3 else Decision.TESTING)
        child.runs[0] = Run(seed=0, trial=400 + k, value=9.0 + k / 10, outcome="complete")
        pop[400 + k] = child
        a = kept.plan(500 + k, pop, pop[0], random.Random(k))
        b = Population(kept.cfg, "minimize").plan(500 + k, pop, pop[0], random.Random(k))
        assert a is not None and b is not None
        assert (a.operator, [p.index for p in a.parents]) == (b.operator, [p.index for p in b.parents])
