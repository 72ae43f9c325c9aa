"""Population search: selection, elitism, git-merge crossover, deduplication, utilisation, promotion."""

from __future__ import annotations

import random
from pathlib import Path

import optuna
import pytest

from conftest import evo, git, write_config, facts
from evo.config import SearchConfig
from evo.gitrepo import GitRepo
from evo.individual import Individual, Run, Status

EVALUATED = Status.EVALUATED
from evo.strategies import Population, hall_of_fame
from operators.base import Context, Parent
from operators.constants import ConstantsMutation, find_constants
from operators.crossover import FitterResolver, RandomResolver, crossover


def ind(index: int, value: float | None, generation: int = 1, status: str = EVALUATED) -> Individual:
    i = Individual(index=index, commit=f"c{index}", tree=f"t{index}", generation=generation, status=status)
    if value is not None:
        i.runs[0] = Run(seed=0, trial=index, value=value, outcome="complete")
    return i


def test_survivors_keep_the_best_mu_and_tournaments_prefer_fitter() -> None:
    cfg = SearchConfig(strategy="population", population=3, generations=5, tournament_size=3, crossover_rate=0.0)
    strat = Population(cfg, "minimize")
    pop = {i: ind(i, float(v)) for i, v in enumerate([5, 1, 4, 2, 3, 9])}
    assert [m.ind.index for m in strat.survivors(list(pop.values()))] == [1, 3, 4]
    counts: dict[int, int] = {}
    for k in range(300):
        plan = strat.plan(10 + k, pop, pop[0], random.Random(k))
        assert plan is not None and plan.operator == "mutation"
        counts[plan.parents[0].index] = counts.get(plan.parents[0].index, 0) + 1
    assert set(counts) <= {1, 3, 4}  # only survivors breed: elites are never lost
    assert counts[1] > counts[4]  # tournaments favour the fitter


def test_generational_barrier_waits_and_steady_state_does_not() -> None:
    pop = {0: ind(0, 1.0, generation=0), 1: ind(1, 2.0, generation=0), 2: ind(2, None, generation=0, status="running")}
    barrier = Population(SearchConfig(population=3, generations=2, steady_state=False), "minimize")
    assert barrier.plan(3, pop, pop[0], random.Random(0)) is None
    steady = Population(SearchConfig(population=3, generations=2, steady_state=True), "minimize")
    assert steady.plan(3, pop, pop[0], random.Random(0)) is not None


def test_hall_of_fame_and_maximize() -> None:
    pop = {i: ind(i, float(v)) for i, v in enumerate([5, 1, 4])}
    assert [i.index for i in hall_of_fame(pop, "maximize", 2)] == [0, 2]
    assert [i.index for i in hall_of_fame(pop, "minimize", 1)] == [1]


SRC = "A = 1.0\nB = 2\n\n\ndef f():\n    return A * B\n\n\nC = True\n"


def branch(repo: GitRepo, base: str, text: str, msg: str) -> str:
    return repo.commit_files(base, {"t.py": text}, msg)


@pytest.fixture
def gitrepo(tmp_path: Path) -> tuple[GitRepo, str]:
    p = tmp_path / "r"
    p.mkdir()
    git(p, "init", "-q")
    (p / "t.py").write_text(SRC)
    git(p, "add", "-A")
    git(p, "commit", "-qm", "base")
    repo = GitRepo(p)
    return repo, repo.head()


def test_crossover_without_conflict_takes_both_changes(gitrepo) -> None:
    repo, base = gitrepo
    a = branch(repo, base, SRC.replace("A = 1.0", "A = 1.5"), "a")
    b = branch(repo, base, SRC.replace("C = True", "C = False"), "b")
    child = crossover(repo, Parent(a, {}, 1.0), Parent(b, {}, 2.0), FitterResolver(), random.Random(0), Context())
    assert child is not None and child.conflicts == ()
    merged = repo.commit_tree(child.tree, [a, b], "x")
    text = repo.read(merged, "t.py").decode()
    assert "A = 1.5" in text and "C = False" in text
    assert len(repo.out("log", "-1", "--format=%P", merged).split()) == 2


def test_crossover_conflict_goes_to_the_fitter_parent(gitrepo) -> None:
    repo, base = gitrepo
    a = branch(repo, base, SRC.replace("A = 1.0", "A = 1.5"), "a")
    b = branch(repo, base, SRC.replace("A = 1.0", "A = 0.5"), "b")
    for direction, expect in (("minimize", "A = 1.5"), ("maximize", "A = 0.5")):
        child = crossover(repo, Parent(a, {}, 1.0), Parent(b, {}, 2.0), FitterResolver(), random.Random(0), Context(direction=direction))
        assert child is not None and child.conflicts == ("t.py",)
        text = repo.read(repo.commit_tree(child.tree, [a, b], "x"), "t.py").decode()
        assert expect in text and "<<<<<<<" not in text


def test_crossover_random_policy_picks_per_hunk(gitrepo) -> None:
    repo, base = gitrepo
    a = branch(repo, base, SRC.replace("A = 1.0", "A = 1.5").replace("C = True", "C = False  # a"), "a")
    b = branch(repo, base, SRC.replace("A = 1.0", "A = 0.5").replace("C = True", "C = False  # b"), "b")
    seen = set()
    for seed in range(12):
        child = crossover(repo, Parent(a, {}), Parent(b, {}), RandomResolver(), random.Random(seed), Context())
        text = repo.read(repo.commit_tree(child.tree, [a, b], "x"), "t.py").decode()  # type: ignore[union-attr]
        seen.add(("A = 1.5" in text, "# a" in text))
    assert len(seen) >= 3  # hunks are chosen independently


def test_crossover_of_nested_lines_is_declined(gitrepo) -> None:
    repo, base = gitrepo
    a = branch(repo, base, SRC.replace("A = 1.0", "A = 1.5"), "a")
    b = branch(repo, a, SRC.replace("A = 1.0", "A = 1.5").replace("B = 2", "B = 3"), "b")
    assert crossover(repo, Parent(a, {}), Parent(b, {}), FitterResolver(), random.Random(0), Context()) is None
    assert crossover(repo, Parent(a, {}), Parent(a, {}), FitterResolver(), random.Random(0), Context()) is None


def test_constants_operator_edits_only_the_literal_and_is_seeded() -> None:
    src = 'X = 1.5  # lr\nN = 12\nF: bool = False\nlower = 3.0\nNEG = -2e-3\ndef g():\n    Y = 4\n'
    consts = {c.name: c for c in find_constants("m.py", src)}
    assert set(consts) == {"X", "N", "F", "NEG"}
    op = ConstantsMutation(max_changes=1)
    outs = [op.mutate(Parent("c", {"m.py": src}), random.Random(s), Context()) for s in range(30)]
    for out in outs:
        new = out.files["m.py"].splitlines()
        old = src.splitlines()
        changed = [i for i, (x, y) in enumerate(zip(old, new)) if x != y]
        assert len(changed) == 1 and len(new) == len(old)
        line = old[changed[0]]
        name = line.split("=")[0].split(":")[0].strip()
        assert out.description.startswith(name)
        assert new[changed[0]].split("=")[0] == line.split("=")[0]  # left side untouched
        if "#" in line:
            assert new[changed[0]].endswith("# lr")
    again = [op.mutate(Parent("c", {"m.py": src}), random.Random(s), Context()) for s in range(30)]
    assert [o.files for o in outs] == [o.files for o in again]


def population_trials(tmp_path: Path, name: str = "evo.db") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="toy", storage=f"sqlite:///{tmp_path / name}").get_trials(deepcopy=False)


def test_population_search_end_to_end(make_repo, tmp_path: Path) -> None:
    repo = make_repo()
    # One worker on a deterministic target: the same search every time (with two workers the run order
    # varied, and some orders left no improving line beside the head to cross with). exploit 0 draws
    # every parent by rank, so side lines grow beside the head and crossovers have partners.
    cfg = write_config(tmp_path / "evo.toml", repo, tmp_path / "evo.db",
                       search={"strategy": "population", "population": 4, "generations": 5, "crossover_rate": 1.0, "exploit": 0.0,
                               "workers": 1}, study={"seed": 3})
    res = evo("search", "--config", str(cfg), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    ts = population_trials(tmp_path)
    candidates = {t.user_attrs["index"] for t in ts}
    assert len(candidates) == 4 + 5 * 4  # baseline + 3 mutants, then 5 generations of 4
    xs = [t for t in ts if t.user_attrs["operator"].startswith("crossover") and t.user_attrs.get("commit")]
    assert xs, "no crossover child was made"
    for t in xs:
        parents = git(repo, "log", "-1", "--format=%P", t.user_attrs["commit"]).split()
        assert len(parents) == 2 and parents == t.user_attrs["parents"]
    # every promotion improved on the last one
    promos = facts(optuna.load_study(study_name="toy", storage=f"sqlite:///{tmp_path / 'evo.db'}"))["promotions"]
    vals = [p["value"] for p in promos]
    assert vals == sorted(vals) and len(set(vals)) == len(vals)
    assert "worker utilisation" in res.stdout
    logbook = facts(optuna.load_study(study_name="toy", storage=f"sqlite:///{tmp_path / 'evo.db'}"))["logbook"]
    assert [r["gen"] for r in logbook] == list(range(6))


def test_duplicate_trees_are_not_run_again(make_repo, tmp_path: Path) -> None:
    repo = make_repo(files={"target.py": "FLAG = False\nprint(f'score: {1 if FLAG else 0}')\n"})
    cfg = write_config(tmp_path / "evo.toml", repo, tmp_path / "evo.db", search={"generations": 4})
    assert evo("search", "--config", str(cfg), cwd=tmp_path).returncode == 0
    ts = population_trials(tmp_path)
    dups = [t for t in ts if t.user_attrs["outcome"] == "duplicate"]
    assert len(dups) >= 2  # FLAG flips back and forth: every later child repeats a tree
    assert len({t.user_attrs["tree"] for t in ts if t.user_attrs["outcome"] == "complete"}) == 2
    for t in dups:
        assert "run_seconds" not in t.user_attrs and "same tree" in t.user_attrs["reason"]
