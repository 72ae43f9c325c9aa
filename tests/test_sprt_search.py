"""Both sequential tests inside real searches: futility pruning and paired-seed promotion."""

from __future__ import annotations

from pathlib import Path

import optuna

from conftest import evo, write_config

# A noisy target: a seed offset shared by every candidate on that seed (pairing cancels it) and
# a per-run jitter (it does not cancel), with progress lines one step every `step_s` seconds.
NOISY = '''\
import os, random, time
X = 1.0  # best at 3.0
Y = 5  # best at 7
step_s = STEP
score = -(X - 3.0) ** 2 - 0.1 * (Y - 7) ** 2
seed = int(os.environ["EVO_SEED"])
offset = 0.3 * random.Random(seed).gauss(0, 1)
jitter = 0.02 * random.Random().gauss(0, 1)
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
                       sprt={"enabled": True, "replicates": 3, "max_pairs": 5, "alpha": 0.05, "beta": 0.2},
                       study={"seed": 1})
    res = evo("search", "--config", str(cfg), cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    study = optuna.load_study(study_name="toy", storage=f"sqlite:///{tmp_path / 'evo.db'}")
    ts = study.get_trials(deepcopy=False)
    assert study.user_attrs["noise"]["n"] == 3
    roles = [t.user_attrs["role"] for t in ts]
    assert roles.count("replicate") == 2

    pruned = [t for t in ts if t.state == optuna.trial.TrialState.PRUNED]
    full = [t.user_attrs["run_seconds"] for t in ts if t.user_attrs["outcome"] == "complete"]
    assert pruned, "no clearly-worse child was stopped"
    for t in pruned:
        trace = t.user_attrs["sprt"]["futility"]
        stopped_at = trace[-1][0]  # the fraction where the test said stop
        assert stopped_at < 1.0
        # the run stopped within a second of the decision (8 steps of 0.15 s: fraction f at ~1.2 f s)
        assert t.user_attrs["run_seconds"] < 1.2 * stopped_at + 1.0 + 0.6, (t.user_attrs["run_seconds"], stopped_at)
        assert t.user_attrs["run_seconds"] < min(full)

    decisions = study.user_attrs.get("decisions", {})
    promos = study.user_attrs.get("promotions", [])
    for p in promos:
        d = decisions[str(p["index"])]
        assert d["decision"] == "accept"
        assert d["pairs"] >= 3  # the GSPRT's burn-in: never on one run
        confirm_seeds = {t.user_attrs["seed"] for t in ts if t.user_attrs["index"] == p["index"]}
        assert len(confirm_seeds) >= 3
    # a candidate whose first paired run looked good but did not hold up is not promoted
    assert all(d["decision"] in ("accept", "reject", "inconclusive", "untested") for d in decisions.values())
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
    assert study.user_attrs["promotions"], "a better child of a deterministic target was not promoted"
    assert "noise" not in study.user_attrs
