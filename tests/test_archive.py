"""The archive's own trial reader gives exactly what Optuna's gives, on a real SQLite storage."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
from optuna.trial import TrialState

from evo.archive import Archive, read_trials


def test_the_fast_reader_equals_optunas(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'evo.db'}"
    ar = Archive(url, "s", direction="minimize", metric="loss")
    other = Archive(url, "other", direction="minimize")  # another study's trials must not leak in
    other.add("complete", 9.0, {"index": 0})
    ar.add("complete", 1.5, {"index": 0, "seed": 0, "nested": {"a": [1, 2.5, None]}, "text": "ü"}, [(0.25, 3.0), (0.5, math.inf)],
           seconds=2.0, params={"LR": 0.01, "DEPTH": 4.0})
    ar.add("pruned", None, {"index": 1, "seed": 0}, [(0.1, 7.0)])
    ar.add("crashed", None, {"index": 2, "reason": "exit 1"})
    ar.add("complete", -math.inf, {"index": 3})  # a value Optuna stores as a type, not a number: recorded FAIL
    ar.add("complete", 2.5, {"index": 4}, params={"LR": 0.02})
    study = optuna.load_study(study_name="s", storage=url)
    ours, theirs = read_trials(ar.storage, ar._id), sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    assert [t.number for t in ours] == [0, 1, 2, 3, 4]
    assert ours == theirs  # FrozenTrial equality: every field (values, params, distributions, attrs, intermediates, times)
    for a, b in zip(ours, theirs):
        assert (a.user_attrs, a.system_attrs, a.intermediate_values, a.distributions) == (b.user_attrs, b.system_attrs, b.intermediate_values, b.distributions)
        assert a._trial_id == b._trial_id and a.state == b.state
        assert a.__dict__ == b.__dict__  # the fast reader sets FrozenTrial's fields itself: exactly the ones Optuna's has
    assert [t.state for t in ours] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE]
    assert Archive(url, "s").trials(states=(TrialState.COMPLETE,)) == [theirs[0], theirs[4]]
    mem = Archive("memory://test-archive-reader", "m", direction="minimize")  # not SQL: Optuna's reader
    mem.add("complete", 1.0, {"index": 0})
    assert [t.value for t in mem.trials()] == [1.0]
