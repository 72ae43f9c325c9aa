"""Both sequential tests inside real searches: futility pruning and paired-seed promotion."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from conftest import evo, write_config, facts

# A noisy target: a seed offset shared by every candidate on that seed (pairing cancels it) and
# a per-run jitter (it does not cancel; seeded by the seed and the code, so the search is reproducible), with progress lines one step every `step_s` seconds.
NOISY = '''\
import os, random, time
X = 1.0  # best at 3.0
Y = 5  # best at 7
score = -(X - 3.0) ** 2 - 0.1 * (Y - 7) ** 2
step_s = STEP if score >= -4.4 else 4 * STEP  # a worse child than the baseline runs 4x longer
seed = int(os.environ["EVO_SEED"])
offset = 0.3 * random.Random(seed).gauss(0, 1)
jitter = 0.02 * random.Random(f"{seed}:" + repr((X, Y))).gauss(0, 1)  # per run, but seeded
for i in range(1, 9):
    time.sleep(step_s)
    print(f"progress: {i / 8:.3f} score: {score + offset + jitter:.6f}", flush=True)
print(f"score: {score + offset + jitter:.6f}")
'''


def test_futility_prunes_fast_and_promotion_needs_paired_confirmation(make_repo, tmp_path: Path) -> None:
    repo = make_repo(files={"target.py": NOISY.replace("STEP", "0.15")})
    cfg = write_config(tmp_path / "evo.toml", repo, tmp_path / "evo.db",
                       search={"strategy": "greedy", "generations": 10},
                       operators={"max_changes": 1, "step": 1.0},
                       sprt={"enabled": True, "replicates": 3, "max_pairs": 5, "alpha": 0.05, "beta": 0.2, "futility_alpha": 0.3},  # a lenient test, so both of its shapes stop the clearly-worse children early here
                       study={"seed": 1})
    res = evo("search", "--config", str(cfg), cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    study = optuna.load_study(study_name="toy", storage=f"sqlite:///{tmp_path / 'evo.db'}")
    ts = study.get_trials(deepcopy=False)
    assert facts(study)["noise"]["n"] == 3
    roles = [t.user_attrs["role"] for t in ts]
    assert roles.count("replicate") == 2

    pruned = [t for t in ts if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, "no clearly-worse child was stopped"
    for t in pruned:
        trace = t.user_attrs["sprt"]["futility"]
        stopped_at = trace[-1][0]  # the fraction where the test said stop
        assert stopped_at < 1.0, trace
        # a worse child runs 8 steps of 0.6 s (4.8 s): stopped at fraction f it was killed long
        # before its end (the bound leaves over 2 s of slack), and its log never reached the end
        assert t.user_attrs["run_seconds"] < 4.8 * stopped_at + 2.2, (t.user_attrs["run_seconds"], stopped_at)
        log = Path(t.user_attrs["log"]).read_text()
        assert "progress: 1.000" not in log and "\nscore: " not in log, log

    # the target starts far from its optimum: the seeded search (the jitter too) promotes, each
    # promotion on paired seeds after the GSPRT's burn-in, never on one run
    decisions = facts(study)["decisions"]
    promos = facts(study)["promotions"]
    assert promos, "nothing was promoted"
    for p in promos:
        d = decisions[str(p["index"])]
        assert d["decision"] == "accept"
        assert d["pairs"] >= 1  # >= 2: test_a_huge_gain_is_still_confirmed_on_a_further_seed
        confirm_seeds = {t.user_attrs["seed"] for t in ts if t.user_attrs["index"] == p["index"]}
        assert len(confirm_seeds) >= d["pairs"]  # it ran on every seed of its pairs
    # only the promoted ones were accepted; a tested candidate that did not hold up is rejected or
    # inconclusive, never promoted; one not worth testing ran once
    assert {k for k, d in decisions.items() if d["decision"] == "accept"} == {str(p["index"]) for p in promos}
    for k, d in decisions.items():
        runs = {t.user_attrs["seed"] for t in ts if t.user_attrs["index"] == int(k)}
        if d["decision"] == "untested":  # once; or once more, on a seed no test uses (1 + max(3, 5 + 1)), as a head its children kept losing to
            assert "pairs" not in d and runs in ({1}, {1, 7}), (k, d, runs)
        else:
            assert d["decision"] in ("accept", "reject", "inconclusive") and len(runs) >= d["pairs"] >= 1, (k, d)
    # with --no-sprt no run is pruned and no confirmation run is spent
    cfg2 = write_config(tmp_path / "naive.toml", repo, tmp_path / "naive.db", search={"strategy": "greedy", "generations": 4},
                        operators={"max_changes": 1, "step": 1.0}, study={"seed": 1, "name": "naive"})
    res = evo("search", "--config", str(cfg2), "--no-sprt", cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr
    naive = optuna.load_study(study_name="naive", storage=f"sqlite:///{tmp_path / 'naive.db'}").get_trials(deepcopy=False)
    assert {t.user_attrs["role"] for t in naive} == {"baseline", "candidate"}
    assert not any(t.state == optuna.trial.TrialState.PRUNED for t in naive)


def test_a_deterministic_target_with_sprt_on_falls_back_to_single_runs(make_repo, tmp_path: Path) -> None:
    """Identical replicates (no noise) leave nothing to test: the search must not stop, and a
    strictly better run is promoted at once (found by the benchmark: delta 0 raised)."""
    repo = make_repo(noise=0.0)
    cfg = write_config(tmp_path / "evo.toml", repo, tmp_path / "evo.db", search={"strategy": "greedy", "generations": 8},
                       sprt={"enabled": True, "replicates": 3})
    res = evo("search", "--config", str(cfg), cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    study = optuna.load_study(study_name="toy", storage=f"sqlite:///{tmp_path / 'evo.db'}")
    kids = {t.user_attrs["index"] for t in study.get_trials(deepcopy=False) if t.user_attrs["index"] > 0}
    assert kids == set(range(1, 9))
    assert facts(study)["promotions"], "a better child of a deterministic target was not promoted"
    assert "noise" not in facts(study)


AGENT = """\
import pathlib
p = pathlib.Path("target.py")
p.write_text(p.read_text().replace("X = 1.0", "X = 3.0"))
"""


def test_a_huge_gain_is_still_confirmed_on_a_further_seed(make_repo, tmp_path: Path) -> None:
    """A child 8 sigmas better (a scripted agent moves X to its optimum) is promoted only after
    paired runs on at least one further seed, never on its one screening run."""
    repo = make_repo(files={"target.py": NOISY.replace("STEP", "0.0")})
    (tmp_path / "agent.py").write_text(AGENT)
    cfg = write_config(tmp_path / "evo.toml", repo, tmp_path / "evo.db", search={"strategy": "greedy", "generations": 1},
                       operators={"mutation": "agent"}, agent={"command": f"{{python}} {tmp_path / 'agent.py'}"},
                       sprt={"enabled": True, "replicates": 3, "max_pairs": 4}, study={"seed": 1})
    res = evo("search", "--config", str(cfg), cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    study = optuna.load_study(study_name="toy", storage=f"sqlite:///{tmp_path / 'evo.db'}")
    d = facts(study)["decisions"]["1"]
    assert d["decision"] == "accept", d
    seeds = {t.user_attrs["seed"] for t in study.get_trials(deepcopy=False) if t.user_attrs["index"] == 1}
    # the evidence is the confirmation pairs alone, on seeds other than the screening seed that selected it
    assert d["pairs"] >= 1 and 1 not in d["seeds"] and len(seeds) >= 2 and len(seeds) == d["pairs"] + 1, d
