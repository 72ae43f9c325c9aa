"""The archive's own trial reader and writer agree with Optuna's, on a real SQLite storage."""

from __future__ import annotations

import math
from typing import Any
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from evo import archive as archive_mod
from evo.archive import Archive, read_trials


def _fill(ar: Archive) -> None:
    ar.add("complete", 1.5, {"index": 0, "seed": 0, "nested": {"a": [1, 2.5, None]}, "text": "ü", 'q"uote': "x"}, [(0.25, 3.0), (0.5, math.inf)],
           seconds=2.0, params={"LR": 0.01, "DEPTH": 4.0})
    ar.add("pruned", None, {"index": 1, "seed": 0}, [(0.1, 7.0), (0.2, math.nan)])
    ar.add("crashed", None, {"index": 2, "reason": "exit 1"})
    ar.add("complete", -math.inf, {"index": 3})  # a value Optuna stores as a type, not a number: recorded FAIL
    ar.add("complete", 2.5, {"index": 4}, params={"LR": 0.02})


@pytest.mark.parametrize("json_functions", [True, False])
def test_the_fast_reader_equals_optunas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, json_functions: bool) -> None:
    if not json_functions:  # an SQLite without json_quote, and every other database: a row per attr
        monkeypatch.setattr(archive_mod, "_has_json_quote", lambda q: False)
    url = f"sqlite:///{tmp_path / 'evo.db'}"
    ar = Archive(url, "s", direction="minimize", metric="loss")
    if json_functions:  # the fast path is the one taken here
        with archive_mod._queries(archive_mod._rdb(ar.storage), ar._id) as q:  # type: ignore[arg-type]
            assert archive_mod._has_json_quote(q)
    other = Archive(url, "other", direction="minimize")  # another study's trials must not leak in
    other.add("complete", 9.0, {"index": 0})
    _fill(ar)
    study = optuna.load_study(study_name="s", storage=url)
    ours, theirs = read_trials(ar.storage, ar._id), sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    assert [t.number for t in ours] == [0, 1, 2, 3, 4]
    assert ours == theirs  # FrozenTrial equality: every field (values, params, distributions, attrs, intermediates, times)
    for a, b in zip(ours, theirs):
        assert (a.user_attrs, a.system_attrs, a.distributions) == (b.user_attrs, b.system_attrs, b.distributions)
        assert a.intermediate_values.keys() == b.intermediate_values.keys()  # NaN != NaN: compared as text
        assert repr(a.intermediate_values) == repr(b.intermediate_values)
        assert a._trial_id == b._trial_id and a.state == b.state
        assert a.__dict__.keys() == b.__dict__.keys()  # the fast reader sets FrozenTrial's fields itself: exactly the ones Optuna's has
    assert [t.state for t in ours] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE]
    assert Archive(url, "s").trials(states=(TrialState.COMPLETE,)) == [theirs[0], theirs[4]]
    mem = Archive(f"memory://test-archive-reader-{json_functions}", "m", direction="minimize")  # not SQL: Optuna's reader
    mem.add("complete", 1.0, {"index": 0})
    assert [t.value for t in mem.trials()] == [1.0]


@pytest.mark.parametrize("database", ["sqlite", "postgresql", "sqlite-core"])
def test_the_writer_writes_what_optuna_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database: str) -> None:
    """`Archive.add` writes trials with the driver's own SQL; Optuna's `create_new_trial` of the same
    trials leaves the same rows: read back by Optuna's own reader, the two studies' trials are equal
    (datetimes, enums and values go through the same column types on both databases). `sqlite-core`:
    the SQLAlchemy Core statements a driver with a 'numeric' paramstyle gets."""
    import uuid

    from conftest import postgres_or_skip

    if database == "sqlite-core":
        real = archive_mod._DriverSQL.__init__

        def numeric(self: Any, rdb: Any) -> None:
            real(self, rdb)
            self._mark = None

        monkeypatch.setattr(archive_mod._DriverSQL, "__init__", numeric)
        monkeypatch.setattr(archive_mod, "_DRIVERS", {})
    url = postgres_or_skip() if database == "postgresql" else f"sqlite:///{tmp_path / 'evo.db'}"
    tag = uuid.uuid4().hex[:8]  # a shared server keeps earlier runs' studies
    mine, other = f"ours-{tag}", f"theirs-{tag}"
    ours = Archive(url, mine, direction="minimize")
    _fill(ours)
    ours.set_row("decisions", 3, {"decision": "rejected"})
    ours.set_row("decisions", 3, {"decision": "accepted"})  # the second write of a row updates it
    assert Archive(url, mine).attrs["decisions"] == {"3": {"decision": "accepted"}}
    theirs = Archive(url, other, direction="minimize")
    for t in sorted(optuna.load_study(study_name=mine, storage=url).get_trials(deepcopy=False), key=lambda t: t.number):
        theirs.storage.create_new_trial(theirs._id, template_trial=t)
    a = sorted(optuna.load_study(study_name=mine, storage=url).get_trials(), key=lambda t: t.number)
    b = sorted(optuna.load_study(study_name=other, storage=url).get_trials(), key=lambda t: t.number)
    assert len(a) == len(b) == 5
    for x, y in zip(a, b):
        assert (x.number, x.state, x.values, x.params, x.distributions, x.user_attrs, x.system_attrs, x.datetime_start, x.datetime_complete) == \
               (y.number, y.state, y.values, y.params, y.distributions, y.user_attrs, y.system_attrs, y.datetime_start, y.datetime_complete)
        assert repr(x.intermediate_values) == repr(y.intermediate_values)
    # optuna's own tools read the study: best trial, a dataframe, the summaries
    study = optuna.load_study(study_name=mine, storage=url)
    assert study.best_trial.number == 0 and len(study.trials_dataframe()) == 5
    assert {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(url)}[mine] == 5
    if database == "postgresql":
        for name in (mine, other):
            optuna.delete_study(study_name=name, storage=url)


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    """A write is an append to SQLite's write-ahead log with synchronous=NORMAL, not a sync of the database file."""
    import sqlalchemy as sa

    ar = Archive(f"sqlite:///{tmp_path / 'evo.db'}", "s", direction="minimize")
    ar.add("complete", 1.0, {"index": 0})
    with archive_mod._rdb(ar.storage).engine.connect() as conn:  # type: ignore[union-attr]
        assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(sa.text("PRAGMA synchronous")).scalar() == 1  # NORMAL


def _copies(url: str) -> dict[int, Any]:
    """trial_id -> the decoded user attrs copy (evo.archive.ATTRS_COPY)."""
    import json
    import sqlite3

    with sqlite3.connect(url[len("sqlite:///"):]) as con:
        return {tid: json.loads(text) for tid, text in con.execute(f"SELECT trial_id, user_attrs FROM {archive_mod.ATTRS_COPY}")}


def test_the_user_attrs_copy_is_read_repaired_and_never_trusted_stale(tmp_path: Path) -> None:
    """Each finished trial's user attrs are also one JSON object in evo's own table, written with the trial.
    Reads equal Optuna's whether the copy is complete, missing (an older evo's study), stale or partial;
    the study's writer copies what is missing; an unfinished trial is never copied."""
    import sqlite3

    url = f"sqlite:///{tmp_path / 'evo.db'}"
    ar = Archive(url, "s", direction="minimize")
    _fill(ar)
    study = optuna.load_study(study_name="s", storage=url)
    running = study.ask()  # an unfinished trial (Optuna's own API): its attrs may still change, so it is read from Optuna's rows
    running.set_user_attr("index", 99)
    theirs = lambda: sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)  # noqa: E731
    copies = _copies(url)
    assert {t._trial_id: t.user_attrs for t in theirs() if t.state.is_finished()} == copies  # written with each trial
    assert read_trials(ar.storage, ar._id) == theirs()

    db = str(tmp_path / "evo.db")
    with sqlite3.connect(db) as con:  # one copy tampered with: the reader takes it (it is what is read) ...
        con.execute(f"UPDATE {archive_mod.ATTRS_COPY} SET user_attrs = '{{\"index\": 7}}' WHERE trial_id = ?", (theirs()[1]._trial_id,))
    assert read_trials(ar.storage, ar._id)[1].user_attrs == {"index": 7}
    with sqlite3.connect(db) as con:  # ... but a copy that names another trial (number, completion time) is not
        con.execute(f"UPDATE {archive_mod.ATTRS_COPY} SET number = 40 WHERE trial_id = ?", (theirs()[1]._trial_id,))
        con.execute(f"UPDATE {archive_mod.ATTRS_COPY} SET datetime_complete = '2000-01-01 00:00:00' WHERE trial_id = ?",
                    (theirs()[2]._trial_id,))
        con.execute(f"DELETE FROM {archive_mod.ATTRS_COPY} WHERE trial_id = ?", (theirs()[3]._trial_id,))
    assert read_trials(ar.storage, ar._id) == theirs()
    assert len(_copies(url)) == 4  # a reader does not write (one of the 5 was deleted)
    assert Archive(url, "s").trials() == theirs()  # the study's writer reads the same and repairs the copy
    assert _copies(url) == {t._trial_id: t.user_attrs for t in theirs() if t.state.is_finished()}

    with sqlite3.connect(db) as con:  # a study written before the copy existed
        con.execute(f"DROP TABLE {archive_mod.ATTRS_COPY}")
    assert read_trials(ar.storage, ar._id) == theirs()
    assert Archive(url, "s").trials() == theirs()
    assert _copies(url) == {t._trial_id: t.user_attrs for t in theirs() if t.state.is_finished()}
    assert optuna.load_study(study_name="s", storage=url).best_trial.number == 0  # Optuna reads the database beside the table
