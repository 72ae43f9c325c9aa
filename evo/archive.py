"""The storage seam: an Optuna study holds every run evo makes, failures included.

One trial per run (a candidate's screening run, a baseline replicate, a confirmation run on a
further seed), added when the run ends. value = the metric; state COMPLETE / PRUNED / FAIL; intermediate values = the
progress points (step = round(fraction * 1000)); user attrs carry the genealogy and the outcome,
so `optuna trials`, `optuna best-trial` and optuna-dashboard read it unchanged. Only the one
controller thread writes here: SQLite shared by writers hands the same trial to two of them.
"""

from __future__ import annotations

import datetime
import gc
import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
import math
import re
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from evo.errors import EvoError

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

# Trial user attrs: docs/archive.md; written by evo.individual.candidate_attrs and evo.study.record.
STATE_OF_OUTCOME = {
    "complete": TrialState.COMPLETE,
    "duplicate": TrialState.COMPLETE,
    "pruned": TrialState.PRUNED,
}


# scheme://user:password@ : the password runs to the last '@' of the word (it may hold '@' or '/');
# scheme://token@ : a bare user name, masked when it looks like a token
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?:(?P<user>[^\s:/@?#]*):\S*|(?P<info>[^\s:/@?#]+))@")
# ?password=... &token=... ;api_key=... : any query/fragment parameter whose name says it is a secret
_SECRET_PARAM = re.compile(
    r"(?P<name>[?&;#](?:[\w.-]*?)(?:pass(?:word|wd)?|pwd|secret|token|key|auth\w*|credential\w*|signature|sig)(?:[\w.-]*?)=)"
    r"(?P<value>[^&;#\s'\"]+)",
    re.IGNORECASE,
)


def mask_url(text: str) -> str:
    """`text` (a URL, or a message holding URLs) with every credential masked as `***`:
    `user:password@` -> `user:***@`, a bare token as userinfo (`https://ghp_...@host`) -> `***@`,
    and the value of every query parameter named like a secret (password, passwd, pwd, secret,
    token, key, api_key, auth..., credential..., sig, signature). Idempotent; the rest is kept,
    so the URL still says which server and database it is."""

    def userinfo(m: re.Match[str]) -> str:
        if m.group("user") is not None:
            return f"{m.group('scheme')}{m.group('user')}:***@"
        info = m.group("info")
        if len(info) >= 16 and re.search(r"\d", info) and re.search(r"[A-Za-z]", info):
            return f"{m.group('scheme')}***@"  # a token used as the user name
        return m.group(0)

    text = _USERINFO.sub(userinfo, text)
    return _SECRET_PARAM.sub(lambda m: f"{m.group('name')}***", text)


def mask_config(value: Any) -> Any:
    """A copy of a config dict (or any JSON-like value) with mask_url applied to every string:
    for the study's stored `config` attr (storage, [llm] base_url, [executor] ray_address, ...)."""
    if isinstance(value, dict):
        return {k: mask_config(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_config(v) for v in value]
    return mask_url(value) if isinstance(value, str) and ("://" in value or "=" in value) else value


_MEMORY: dict[str, optuna.storages.BaseStorage] = {}


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """Any Optuna storage URL; `memory://NAME` is Optuna's in-memory storage, one per NAME and process
    (what the in-process engine tests and benchmarks use: no file, no SQL)."""
    if url.startswith("memory://"):
        return _MEMORY.setdefault(url, optuna.storages.InMemoryStorage())
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if path and path != ":memory:":
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise EvoError(f"storage {mask_url(url)}: cannot create the folder {Path(path).parent}: {e.strerror}") from None
    given, url = url, _postgresql_driver(url)  # messages name the URL as the user wrote it
    try:
        if url.startswith("sqlite"):
            return _tuned_sqlite(optuna.storages.RDBStorage(url))
        if url.startswith(("postgresql", "mysql", "oracle", "mssql")):
            return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
        return optuna.storages.get_storage(url)
    except Exception as e:  # noqa: BLE001 - sqlalchemy/driver errors of many kinds
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EvoError(f"storage {mask_url(given)}: cannot open: {mask_url(first)}") from None


def _tuned_sqlite(storage: optuna.storages.RDBStorage) -> optuna.storages.RDBStorage:
    """SQLite in WAL mode with synchronous=NORMAL: a commit appends to the write-ahead log instead of
    syncing a rollback journal and the database (measured under load: 16-35 ms -> 1.6-7 ms a write;
    a candidate makes three). A kill -9 loses nothing committed and never leaves a half write; a
    power cut may lose the last commits, never the file's consistency, and a lost tail of trials and
    facts is a state the engine's order of writes already repairs on resume (a child's ref before
    its trial, the mainline ref before the archive's copy). WAL is a property of the file, so
    Optuna's tools and optuna-dashboard open it unchanged; synchronous is set per connection. The
    log is folded back into the file when the last connection closes (at exit, below)."""
    import atexit
    import weakref

    import sqlalchemy as sa

    database = storage.engine.url.database or ""
    wal = database not in ("", ":memory:") and not database.startswith("file::memory:")

    def pragmas(dbapi_connection: Any, _record: Any) -> None:
        cur = dbapi_connection.cursor()
        try:
            if wal:
                try:
                    cur.execute("PRAGMA journal_mode=WAL")
                except Exception:  # noqa: BLE001 - a read-only file or folder: read it in the mode it has
                    pass
            cur.execute("PRAGMA synchronous=NORMAL")
        finally:
            cur.close()

    storage.engine.dispose()  # the connections Optuna opened to make its tables: the next ones get the pragmas
    sa.event.listen(storage.engine, "connect", pragmas)
    engine = weakref.ref(storage.engine)  # closing the last connection checkpoints and removes the -wal and -shm files
    atexit.register(lambda: (e := engine()) is not None and e.dispose())
    return storage


POSTGRESQL_HINT = 'install psycopg 3 (pip install "psycopg[binary]") and use the URL form postgresql+psycopg://user:password@host/db'


def _postgresql_driver(url: str) -> str:
    """The URL SQLAlchemy can open: `postgresql://` means psycopg2 to it, so where only psycopg 3
    is installed the URL is read as `postgresql+psycopg://`; with no driver at all, one line
    that names the driver to install and the URL form (SQLAlchemy only says "Failed to import
    DB access module")."""
    import importlib.util

    scheme, sep, rest = url.partition("://")
    base, _, driver = scheme.lower().partition("+")
    if not sep or base not in ("postgresql", "postgres"):
        return url
    have = {name: importlib.util.find_spec(name) is not None for name in ("psycopg", "psycopg2")}
    if base == "postgres":  # SQLAlchemy 2 knows only postgresql://
        scheme, base = "postgresql" + (f"+{driver}" if driver else ""), "postgresql"
    if not driver:
        if have["psycopg2"]:
            return f"{scheme}://{rest}"
        if have["psycopg"]:
            return f"postgresql+psycopg://{rest}"
        raise EvoError(f"storage {mask_url(url)}: cannot open: no PostgreSQL driver is installed; {POSTGRESQL_HINT}")
    if driver in have and not have[driver]:
        raise EvoError(f"storage {mask_url(url)}: cannot open: the PostgreSQL driver {driver} is not installed; {POSTGRESQL_HINT}")
    return f"{scheme}://{rest}"


# -- study facts ------------------------------------------------------------------------------
# A few short labels are Optuna user attrs: `optuna studies` prints them and optuna-dashboard shows
# them. Everything else evo keeps about a study is an Optuna *system* attr named "evo:KEY", and the
# per-candidate decisions and per-generation logbook rows are one attr each ("evo:decisions:17",
# "evo:logbook:3"): a write is one row however long the study has run (rewriting one growing
# attr made every candidate cost O(trials)), and `optuna studies` stays one screen wide.
LABELS = frozenset({"metric", "direction", "strategy", "repo", "mainline", "base_commit", "best"})
ROWS = frozenset({"decisions", "logbook"})
_PREFIX = "evo:"


def read_facts(storage: optuna.storages.BaseStorage, study_id: int) -> dict[str, Any]:
    """Everything evo keeps about a study, as one dict: the labels, the other facts, `decisions`
    (candidate index as a string -> decision) and `logbook` (rows in generation order). Studies
    written before facts were split keep them all in user attrs; those are read too."""
    return _facts(*_study_attrs(storage, study_id))


def _facts(user: dict[str, Any], system: dict[str, Any], decisions: dict[str, Any], logbook: dict[int, Any]) -> dict[str, Any]:
    """The facts from the study's user attrs, its other system attrs, and the decision and logbook rows."""
    facts: dict[str, Any] = dict(user)
    decisions = dict(facts.get("decisions") or {}) | decisions  # an older study's whole-attr copies, then the rows
    logbook = {int(r["gen"]): r for r in facts.get("logbook") or [] if isinstance(r, dict) and "gen" in r} | logbook
    for key, value in system.items():
        if key.startswith(_PREFIX):  # not optuna-dashboard's notes and the like
            facts[key[len(_PREFIX):]] = value
    facts["decisions"] = decisions
    facts["logbook"] = [logbook[g] for g in sorted(logbook)]
    return facts


def _rdb(storage: optuna.storages.BaseStorage) -> optuna.storages.RDBStorage | None:
    """The SQL storage under Optuna's cache and evo's read-only wrapper, if it is one."""
    while not isinstance(storage, optuna.storages.RDBStorage):
        storage = getattr(storage, "_backend", None) or getattr(storage, "_inner", None)  # type: ignore[assignment]
        if storage is None:
            return None
    return storage


def _study_attrs(storage: optuna.storages.BaseStorage, study_id: int, logbook: bool = True
                 ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[int, Any]]:
    """(user attrs, the other system attrs, decision rows by candidate, logbook rows by generation) of a
    study; `logbook=False`: the latest logbook row alone (what the study's writer needs of 100,000).
    On SQL, plain SELECTs, the rows picked out by SQLite (one `partition` per row was 0.3 s at 100,000)."""
    rdb = _rdb(storage)
    if rdb is None:
        system, decisions, book = {}, {}, {}
        for key, value in storage.get_study_system_attrs(study_id).items():
            name, _, row = key[len(_PREFIX):].partition(":") if key.startswith(_PREFIX) else ("", "", "")
            if row and name in ROWS:
                (decisions if name == "decisions" else book)[row] = value
            else:
                system[key] = value
        logbook_rows = {int(g): r for g, r in book.items()}
        if not logbook and logbook_rows:
            logbook_rows = {max(logbook_rows): logbook_rows[max(logbook_rows)]}
        return storage.get_study_user_attrs(study_id), system, decisions, logbook_rows
    of = "FROM study_system_attributes WHERE study_id = :sid AND key"
    with _queries(rdb, study_id) as q:
        user = q("SELECT key, value_json FROM study_user_attributes WHERE study_id = :sid")
        system = q(f"SELECT key, value_json {of} NOT LIKE '{_PREFIX}decisions:%' AND key NOT LIKE '{_PREFIX}logbook:%'")
        decisions = q(f"SELECT key, value_json {of} LIKE '{_PREFIX}decisions:%'")
        if logbook:
            book = q(f"SELECT key, value_json {of} LIKE '{_PREFIX}logbook:%'")
        else:  # the latest generation's row: the keys are text, so its number is found here, then its row read
            keys = q(f"SELECT key {of} LIKE '{_PREFIX}logbook:%'")
            last = max((k for k, in keys), key=lambda k: int(k.rpartition(":")[2]), default=None)
            book = q(f"SELECT key, value_json {of} = '{last}'") if last is not None else []
    cut_d, cut_l = len(f"{_PREFIX}decisions:"), len(f"{_PREFIX}logbook:")
    return (dict(zip((k for k, _ in user), _decode_all(v for _, v in user))),
            dict(zip((k for k, _ in system), _decode_all(v for _, v in system))),
            dict(zip((k[cut_d:] for k, _ in decisions), _decode_all(v for _, v in decisions))),
            dict(zip((int(k[cut_l:]) for k, _ in book), _decode_all(v for _, v in book))))


@contextmanager
def _queries(rdb: optuna.storages.RDBStorage, study_id: int) -> Iterator[Callable[[str], list[Any]]]:
    """q(sql) -> all rows, `:sid` standing for the study's id, on the DB-API cursor itself: SQLAlchemy's
    result rows cost a third of reading a 100,000-trial study. A literal `%` (a LIKE pattern) is
    doubled where the driver's placeholders are %-style (psycopg, PostgreSQL), which read it as one."""
    style = rdb.engine.dialect.paramstyle
    mark, args = {"qmark": ("?", (study_id,)), "format": ("%s", (study_id,)), "numeric": (":1", (study_id,)),
                  "named": (":sid", {"sid": study_id})}.get(style, ("%(sid)s", {"sid": study_id}))
    percent = "%%" if style in ("format", "pyformat") else "%"
    conn = rdb.engine.raw_connection()
    try:
        cur = conn.cursor()

        def q(sql: str) -> list[Any]:
            cur.execute(sql.replace("%", percent).replace(":sid", mark), args)
            return cur.fetchall()

        yield q
    finally:
        conn.close()


def _decode_all(texts: Iterable[str]) -> list[Any]:
    """Many JSON texts decoded in one `json.loads` (one call per text cost ~1 us each, a third of reading them)."""
    return json.loads("[" + ",".join(texts) + "]")


def read_trials(storage: optuna.storages.BaseStorage, study_id: int, repair: bool = False) -> list[FrozenTrial]:
    """Every trial of a study, in trial order (treat them as read-only).

    On an SQL storage, six plain SELECTs build the trials directly: Optuna's own reader builds an
    ORM object per row (an evo trial has ~20 user attrs), which made a resume of a 10,000-trial
    study take 42 s, nearly all of it there. Anything else goes through Optuna's reader.
    `repair` (the study's writer only): finished trials that the attrs copy lacks are copied into it."""
    rdb = _rdb(storage)
    if rdb is None:
        return sorted(storage.get_all_trials(study_id, deepcopy=False), key=lambda t: t.number)
    with no_gc():
        trials, uncopied = _select_trials(rdb, study_id)
    if repair and uncopied:
        _copy_attrs(rdb, study_id)
    return trials


@contextmanager
def no_gc() -> Iterator[None]:
    """Python's cyclic collector paused while millions of objects that form no cycles are built (every
    trial's dicts, then the individuals): its passes over them were 40% of reading 100,000 trials."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


# one query per table, each row (trial_id, ...); the user attrs, ~20 rows a trial, are the bulk
_OF_STUDY = "JOIN trials t ON t.trial_id = x.trial_id WHERE t.study_id = :sid"
_USER_ROWS = f"SELECT x.trial_id, x.key, x.value_json FROM trial_user_attributes x {_OF_STUDY}"
# SQLite: one JSON object per trial, built by the database (~10x fewer rows to fetch)
_OBJECT = "'{' || group_concat(json_quote(x.key) || ':' || x.value_json, ',') || '}'"
_USER_OBJECTS = f"SELECT x.trial_id, {_OBJECT} FROM trial_user_attributes x {_OF_STUDY} GROUP BY x.trial_id"

# -- the user attrs copy: one row a finished trial, beside Optuna's tables (SQLite) ----------------
# Joining a trial's ~20 attr rows back into one JSON object was the largest part of reading a
# study (at 100,000 trials: 2 million rows, 1.3 s of a 7 s resume at load 4; 8.9 s against 0.9 s
# for one row a trial at load 7). So evo also keeps each finished trial's user attrs as that one
# object in a table of its own, written in the trial's own transaction: a copy, never the only one
# (Optuna's rows stay the truth, and optuna-dashboard and Optuna's reader never see the table). A
# copy counts only while it names its trial exactly (id, study, number, completion time), so one
# outliving its trial (a deleted study whose ids SQLite hands out again) is never read. Trials
# with no copy (written by an older evo, or by Optuna) are read from Optuna's rows and copied by
# the study's next writer. Finished trials only: Optuna refuses to change a finished trial's attrs,
# so a copy cannot go stale.
ATTRS_COPY = "evo_trial_user_attrs"
_COPY_DDL = (f"CREATE TABLE IF NOT EXISTS {ATTRS_COPY} (trial_id INTEGER PRIMARY KEY, study_id INTEGER NOT NULL, "
             "number INTEGER NOT NULL, datetime_complete DATETIME, user_attrs TEXT NOT NULL)")
_FINISHED = "('COMPLETE', 'PRUNED', 'FAIL')"
_SAME_TRIAL = "c.trial_id = t.trial_id AND c.study_id = t.study_id AND c.number = t.number AND c.datetime_complete IS t.datetime_complete"
_COPIED = f"SELECT c.trial_id, c.user_attrs FROM trials t JOIN {ATTRS_COPY} c ON {_SAME_TRIAL} WHERE t.study_id = :sid"
_COPY_MISSING = (  # every finished trial of the study without a valid copy (REPLACE: a stale row with its id goes)
    f"INSERT OR REPLACE INTO {ATTRS_COPY} (trial_id, study_id, number, datetime_complete, user_attrs) "
    "SELECT t.trial_id, t.study_id, t.number, t.datetime_complete, "
    f"COALESCE((SELECT {_OBJECT} FROM trial_user_attributes x WHERE x.trial_id = t.trial_id), '{{}}') FROM trials t "
    f"WHERE t.study_id = :sid AND t.state IN {_FINISHED} AND NOT EXISTS (SELECT 1 FROM {ATTRS_COPY} c WHERE {_SAME_TRIAL})")
_COPY_ONE = (f"INSERT OR REPLACE INTO {ATTRS_COPY} (trial_id, study_id, number, datetime_complete, user_attrs) "
             "SELECT trial_id, study_id, number, datetime_complete, :attrs FROM trials WHERE trial_id = :tid")


def _copy_attrs(rdb: optuna.storages.RDBStorage, study_id: int) -> None:
    """Copy the user attrs of the study's finished trials that have no copy yet (once per older study). Best
    effort: a database that cannot be written (a read-only file) is read from Optuna's rows instead."""
    import sqlalchemy as sa

    try:
        with rdb.engine.begin() as conn:
            conn.exec_driver_sql(_COPY_DDL)
            conn.execute(sa.text(_COPY_MISSING), {"sid": study_id})
    except sa.exc.SQLAlchemyError:
        pass


def _attrs_object(rows: list[dict[str, Any]]) -> str:
    """A trial's user attr rows (key, value_json) as the one JSON object SQLite's group_concat builds of them."""
    return "{" + ",".join(json.dumps(r["key"]) + ":" + r["value_json"] for r in sorted(rows, key=lambda r: r["key"])) + "}"


def _select_trials(rdb: optuna.storages.RDBStorage, study_id: int) -> tuple[list[FrozenTrial], int]:
    """Plain SQL on Optuna's tables, one query per table, every JSON value decoded in one `json.loads`
    (one call per value cost ~1 us each); on SQLite the user attrs come as one object per trial, from
    their copy where it has them. No ORM object and no SQLAlchemy row: at 100,000 trials every
    microsecond per trial is 0.1 s. Also returns how many finished trials had no copy of their attrs."""
    from optuna.distributions import json_to_distribution
    from optuna.storages._rdb import models

    V, I = models.TrialValueModel, models.TrialIntermediateValueModel
    with _queries(rdb, study_id) as q:
        trials = q("SELECT trial_id, number, state, datetime_start, datetime_complete FROM trials WHERE study_id = :sid ORDER BY number")
        values: dict[int, dict[int, float]] = {}
        for tid, objective, value, kind in q(f"SELECT x.trial_id, x.objective, x.value, x.value_type FROM trial_values x {_OF_STUDY}"):
            values.setdefault(tid, {})[objective] = V.stored_repr_to_value(value, V.TrialValueType[kind])
        inter: dict[int, dict[int, float]] = {}
        for tid, step, value, kind in q("SELECT x.trial_id, x.step, x.intermediate_value, x.intermediate_value_type "
                                        f"FROM trial_intermediate_values x {_OF_STUDY}"):
            inter.setdefault(tid, {})[step] = I.stored_repr_to_intermediate_value(value, I.TrialIntermediateValueType[kind])
        system = _grouped(q(f"SELECT x.trial_id, x.key, x.value_json FROM trial_system_attributes x {_OF_STUDY}"))
        params: dict[int, list[tuple[int, str, float, str]]] = {}
        for tid, pid, name, value, dist in q("SELECT x.trial_id, x.param_id, x.param_name, x.param_value, x.distribution_json "
                                             f"FROM trial_params x {_OF_STUDY}"):
            params.setdefault(tid, []).append((pid, name, value, dist))
        uncopied = 0
        if rdb.engine.dialect.name == "sqlite" and _has_json_quote(q):
            objects = _copied(q)
            have = {tid for tid, _ in objects}
            missing = [tid for tid, *_ in trials if tid not in have]
            finished = {"COMPLETE", "PRUNED", "FAIL"}
            uncopied = sum(1 for tid, _, state, *_ in trials if tid not in have and state in finished)
            if missing:  # trials without a copy: their rows, joined by SQLite (by id when they are few)
                sql = (_USER_OBJECTS if len(missing) > 500 else
                       _USER_OBJECTS.replace(" GROUP BY", f" AND x.trial_id IN ({','.join(map(str, missing))}) GROUP BY"))
                objects += [row for row in q(sql) if row[0] not in have]
            user = dict(zip((tid for tid, _ in objects), _decode_all(text for _, text in objects)))
        else:
            user = _grouped(q(_USER_ROWS))

    def when(x: Any) -> datetime.datetime | None:  # SQLite hands text back, other databases datetimes
        return datetime.datetime.fromisoformat(x) if isinstance(x, str) else x

    return [_trial(number, TrialState[state], values.get(tid), when(start), when(complete), params.get(tid), user.get(tid, {}),
                   system.get(tid, {}), inter.get(tid, {}), tid, json_to_distribution)
            for tid, number, state, start, complete in trials], uncopied


def _copied(q: Callable[[str], list[Any]]) -> list[Any]:
    """(trial_id, user attrs JSON) of the study's trials that have a valid copy; none where the table is not there yet."""
    try:
        return q(_COPIED)
    except Exception:  # noqa: BLE001 - OperationalError: no such table (a database no evo of this version wrote)
        return []


def _grouped(rows: list[Any]) -> dict[int, dict[str, Any]]:
    """(trial_id, key, value_json) rows -> trial_id -> {key: value}."""
    out: dict[int, dict[str, Any]] = {}
    for (tid, key, _), value in zip(rows, _decode_all(v for _, _, v in rows)):
        out.setdefault(tid, {})[key] = value
    return out


def _has_json_quote(q: Callable[[str], list[Any]]) -> bool:
    """SQLite's JSON functions are built in since 3.38 and almost always compiled in before."""
    try:
        q("SELECT json_quote(:sid)")  # q binds the study id: the probe takes it too
        return True
    except Exception:  # noqa: BLE001 - OperationalError: no such function
        return False


def _trial(number: int, state: TrialState, values: dict[int, float] | None, start: datetime.datetime | None,
           complete: datetime.datetime | None, params: list[tuple[int, str, float, str]] | None, user: dict[str, Any],
           system: dict[str, Any], intermediate: dict[int, float], trial_id: int, to_distribution: Any) -> FrozenTrial:
    """A FrozenTrial from the rows of one trial (params in param_id order, as Optuna reads them).

    Its fields are set as FrozenTrial.__init__ sets them, without the call: at 100,000 trials the
    keyword call was a third of a resume. tests/test_archive.py checks the result equals Optuna's own."""
    dists = {name: to_distribution(dist) for _, name, _, dist in sorted(params)} if params else {}
    internal = {name: value for _, name, value, _ in params} if params else {}
    trial = object.__new__(FrozenTrial)
    trial.__dict__ = {
        "_number": number, "state": state, "_values": [values[k] for k in sorted(values)] if values else None,
        "_datetime_start": start, "datetime_complete": complete,
        "_params": {k: d.to_external_repr(internal[k]) for k, d in dists.items()} if dists else {},
        "_user_attrs": user, "_system_attrs": system, "intermediate_values": intermediate, "_distributions": dists, "_trial_id": trial_id,
    }
    return trial


class _DriverSQL:
    """Statements on Optuna's tables as the database driver's own SQL, bound values passed through the
    columns' SQLAlchemy bind processors (datetimes as SQLite text, enums as their names): the rows Core
    would write, without building, cache-keying and compiling a statement on every call. Core's
    `execute(insert(...))` cost ~1 ms of Python per statement, and a candidate's record took seven;
    at 32 slots the controller's thread spent a fifth of its time there (`evo bench`, no-op runs).
    A driver with a 'numeric' paramstyle gets Core's statements instead."""

    def __init__(self, rdb: optuna.storages.RDBStorage) -> None:
        self.dialect = rdb.engine.dialect
        self.sqlite = self.dialect.name == "sqlite"
        self._named = self.dialect.paramstyle in ("named", "pyformat")
        self._mark = {"qmark": "?", "format": "%s", "named": ":{}", "pyformat": "%({})s"}.get(self.dialect.paramstyle)
        self._procs: dict[tuple[str, str], Callable[[Any], Any] | None] = {}

    def params(self, table: Any, rows: list[dict[str, Any]]) -> list[Any]:
        cols = list(rows[0])
        procs = []
        for c in cols:
            key = (table.name, c)
            if key not in self._procs:
                self._procs[key] = table.c[c].type.bind_processor(self.dialect)
            procs.append(self._procs[key])
        if self._named:
            return [{c: (f(r[c]) if f else r[c]) for c, f in zip(cols, procs)} for r in rows]
        return [tuple(f(r[c]) if f else r[c] for c, f in zip(cols, procs)) for r in rows]

    def marks(self, cols: Iterable[str]) -> str:
        return ", ".join(self._mark.format(c) for c in cols)  # type: ignore[union-attr]

    def name(self, identifier: str) -> str:
        """A table or column name as the database needs it written (`key` is reserved in MySQL)."""
        return self.dialect.identifier_preparer.quote(identifier)

    def insert(self, conn: Any, table: Any, rows: list[dict[str, Any]], returning: str | None = None) -> Any:
        """INSERT `rows` (dicts with the same keys); with `returning`, the one row's value of that column."""
        if self._mark is None:
            import sqlalchemy as sa

            if returning is not None:
                return conn.execute(sa.insert(table).values(**rows[0])).inserted_primary_key[0]
            conn.execute(sa.insert(table), rows)
            return None
        cols = list(rows[0])
        sql = f"INSERT INTO {self.name(table.name)} ({', '.join(map(self.name, cols))}) VALUES ({self.marks(cols)})"
        if returning is not None:
            if self.dialect.insert_returning:
                return conn.exec_driver_sql(f"{sql} RETURNING {self.name(returning)}", self.params(table, rows)[0]).scalar()
            return conn.exec_driver_sql(sql, self.params(table, rows)[0]).lastrowid
        params = self.params(table, rows)
        conn.exec_driver_sql(sql, params if len(rows) > 1 else params[0])
        return None

    def update(self, conn: Any, table: Any, values: dict[str, Any], where: dict[str, Any]) -> int:
        """UPDATE `table` SET values WHERE every `where` column equals its value; the rows it matched."""
        if self._mark is None:
            import sqlalchemy as sa

            return conn.execute(sa.update(table).where(*(table.c[c] == v for c, v in where.items())).values(**values)).rowcount
        row = {**values, **where}
        sets = ", ".join(f"{self.name(c)} = {self.marks([c])}" for c in values)
        cond = " AND ".join(f"{self.name(c)} = {self.marks([c])}" for c in where)
        return conn.exec_driver_sql(f"UPDATE {self.name(table.name)} SET {sets} WHERE {cond}", self.params(table, [row])[0]).rowcount


_DRIVERS: dict[int, _DriverSQL] = {}


def _driver(rdb: optuna.storages.RDBStorage) -> _DriverSQL:
    d = _DRIVERS.get(id(rdb.engine))
    if d is None or d.dialect is not rdb.engine.dialect:
        d = _DRIVERS[id(rdb.engine)] = _DriverSQL(rdb)
    return d


def set_study_system_attr(rdb: optuna.storages.RDBStorage, study_id: int, key: str, value: Any) -> None:
    """`RDBStorage.set_study_system_attr` as one UPDATE (or INSERT) in one transaction, without its ORM
    session and lookups: a row a candidate (its decision) was 7 ms of the controller's ~50 (load 2)."""
    from optuna.storages._rdb import models

    A = models.StudySystemAttributeModel.__table__
    text = json.dumps(value)
    sql = _driver(rdb)
    with rdb.engine.begin() as conn:
        if not sql.update(conn, A, {"value_json": text}, {"study_id": study_id, "key": key}):
            sql.insert(conn, A, [{"study_id": study_id, "key": key, "value_json": text}])


def insert_trials(rdb: optuna.storages.RDBStorage, study_id: int, trials: list[FrozenTrial]) -> list[int]:
    """Finished trials written as Optuna's RDB schema holds them, in one transaction; their numbers.

    What `RDBStorage.create_new_trial(template_trial=...)` writes, row for row (tests/test_archive.py
    reads both back and compares, on SQLite and PostgreSQL), without its SELECT and upsert per user
    attr (~20 per evo trial): one INSERT per trial and one multi-row INSERT per attribute table, in the
    driver's own SQL (`_DriverSQL`). The number follows the study's latest trial's, read under a lock on
    the study's row (Optuna counts the study's trials for it, which is the same number and O(trials):
    5.6 ms at 100,000 trials against 0.03 ms)."""
    import sqlalchemy as sa
    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models

    T, S = models.TrialModel.__table__, models.StudyModel.__table__
    V, I = models.TrialValueModel, models.TrialIntermediateValueModel
    values, params, user, system, inter = [], [], [], [], []
    numbers = []
    sql = _driver(rdb)
    copies: list[dict[str, Any]] = []  # the user attrs copy's rows (see ATTRS_COPY), in the trials' own transaction
    with rdb.engine.begin() as conn:
        if sql.sqlite:
            conn.exec_driver_sql(_COPY_DDL)
        conn.execute(sa.select(S.c.study_id).where(S.c.study_id == study_id).with_for_update())
        last = conn.execute(sa.select(T.c.number).where(T.c.study_id == study_id).order_by(T.c.trial_id.desc()).limit(1)).scalar()
        count = 0 if last is None else last + 1
        for k, t in enumerate(trials):
            numbers.append(count + k)
            row = {"number": count + k, "study_id": study_id, "state": t.state, "datetime_start": t.datetime_start,
                   "datetime_complete": t.datetime_complete}
            tid = sql.insert(conn, T, [row], returning="trial_id")
            for objective, value in enumerate(t.values or ()):
                stored, kind = V.value_to_stored_repr(value)
                values.append({"trial_id": tid, "objective": objective, "value": stored, "value_type": kind})
            for name, value in t.params.items():
                dist = t.distributions[name]
                params.append({"trial_id": tid, "param_name": name, "param_value": dist.to_internal_repr(value),
                               "distribution_json": distribution_to_json(dist)})
            attr_rows = [{"trial_id": tid, "key": key, "value_json": json.dumps(value)} for key, value in t.user_attrs.items()]
            user += attr_rows
            if sql.sqlite and t.state.is_finished():
                copies.append({"tid": tid, "attrs": _attrs_object(attr_rows)})
            system += [{"trial_id": tid, "key": key, "value_json": json.dumps(value)} for key, value in t.system_attrs.items()]
            for step, value in t.intermediate_values.items():
                stored, kind = I.intermediate_value_to_stored_repr(value)
                inter.append({"trial_id": tid, "step": step, "intermediate_value": stored, "intermediate_value_type": kind})
        for model, rows in ((V, values), (models.TrialParamModel, params), (models.TrialUserAttributeModel, user),
                            (models.TrialSystemAttributeModel, system), (I, inter)):
            if rows:
                sql.insert(conn, model.__table__, rows)
        if copies:
            conn.execute(sa.text(_COPY_ONE), copies)
    return numbers


class Archive:
    def __init__(self, storage_url: str, study_name: str, direction: str | None = None, metric: str | None = None) -> None:
        """Open the study; create it when `direction` is given and it does not exist yet.

        `metric` names the objective, so Optuna's tools (optuna-dashboard) show val_bpb, not "Objective 0"."""
        self.url = storage_url
        self.storage = open_storage(storage_url)
        try:
            if direction is None:
                self.study = optuna.load_study(study_name=study_name, storage=self.storage)
            else:
                self.study = optuna.create_study(
                    study_name=study_name, storage=self.storage, direction=direction, load_if_exists=True
                )
        except KeyError:
            raise EvoError(f"study '{study_name}' not found in {mask_url(storage_url)} (see 'evo studies')") from None
        if direction is not None and self.study.direction.name.lower() != direction:
            raise EvoError(
                f"study '{study_name}' exists with direction {self.study.direction.name.lower()}, config says {direction}"
            )
        self.name = study_name
        self._id = self.storage.get_study_id_from_name(study_name)
        user, system, decisions, logbook = _study_attrs(self.storage, self._id, logbook=False)
        self._facts = _facts(user, system, decisions, logbook)
        if metric and system.get("study:metric_names") != [metric]:  # Optuna's key for them
            with warnings.catch_warnings():  # experimental in Optuna, stable enough for a label
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self.study.set_metric_names([metric])

    # -- study-level facts ------------------------------------------------------------------
    @property
    def attrs(self) -> dict[str, Any]:
        """The study's facts (see `read_facts`), read when the archive opened: this process is the
        study's only writer (the search holds its lock), so the copy is kept in step by the writes below.
        Its `logbook` holds the latest row as the archive opened and the rows written since (the writer
        needs no more; `read_facts` reads every row)."""
        return self._facts

    def set_attr(self, key: str, value: Any) -> None:
        """One fact: a label as a user attr, anything else as a system attr."""
        assert key not in ROWS, f"{key} is written a row at a time (set_row)"
        with self._writing():
            if key in LABELS:
                self.storage.set_study_user_attr(self._id, key, value)
            else:
                self.storage.set_study_system_attr(self._id, _PREFIX + key, value)
        self.attrs[key] = value

    def set_row(self, table: str, key: str | int, value: Any) -> None:
        """One row of `decisions` (key = candidate index) or `logbook` (key = generation)."""
        assert table in ROWS, table
        with self._writing():
            rdb = _rdb(self.storage)
            if rdb is None:
                self.storage.set_study_system_attr(self._id, f"{_PREFIX}{table}:{key}", value)
            else:
                set_study_system_attr(rdb, self._id, f"{_PREFIX}{table}:{key}", value)
        if table == "decisions":
            self.attrs["decisions"][str(key)] = value
        else:
            book = self.attrs["logbook"]
            if not book or int(book[-1]["gen"]) < int(key):  # a new generation: O(1), not a rebuild of the whole logbook
                book.append(value)
            else:
                rows = {int(r["gen"]): r for r in book} | {int(key): value}
                self.attrs["logbook"] = [rows[g] for g in sorted(rows)]

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """A storage that fails under a write (disk full, a server gone) is one line, not a traceback;
        what was written before stays consistent (each write is one transaction) and the study resumes."""
        try:
            yield
        except EvoError:
            raise
        except Exception as e:  # noqa: BLE001 - Optuna/SQLAlchemy/driver errors of many kinds
            text = str(getattr(e, "orig", None) or e).strip().splitlines()
            raise EvoError(f"storage {mask_url(self.url)}: cannot write: {mask_url(text[0] if text else type(e).__name__)}") from None

    def close(self) -> None:
        """Close the storage's connections (it opens new ones if used again): on SQLite, closing the last one
        folds the write-ahead log into the database file and removes the -wal and -shm files."""
        rdb = _rdb(self.storage)
        if rdb is not None:
            rdb.engine.dispose()

    def delete_if_empty(self) -> None:
        """Remove a study that was created but never started (no base commit, no trial)."""
        try:
            if "base_commit" not in self.attrs and not self.trials():
                optuna.delete_study(study_name=self.name, storage=self.storage)
        except Exception:  # noqa: BLE001 - best effort on the way out of another error
            pass

    # -- trials ------------------------------------------------------------------------------
    def trials(self, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
        trials = read_trials(self.storage, self._id, repair=True)
        return trials if states is None else [t for t in trials if t.state in states]

    def add(self, outcome: str, value: float | None, attrs: dict[str, Any], progress: list[tuple[float, float]] | None = None,
            seconds: float = 0.0, params: dict[str, float] | None = None) -> int:
        """One finished trial, written in a single transaction; returns its number.

        Runs are recorded when they end, not when they start: a run cut short by a crash leaves
        no trial behind, only its committed candidate, which the next start runs again. That is
        also four times cheaper on SQLite than ask/report/tell (one commit instead of dozens).
        """
        intermediate: dict[int, float] = {}
        for fraction, val in progress or []:
            if math.isfinite(val):
                intermediate[int(round(fraction * 1000))] = float(val)  # Optuna rejects NaN; one value per step
        state = STATE_OF_OUTCOME.get(outcome, TrialState.FAIL)
        if state == TrialState.COMPLETE and (value is None or not math.isfinite(value)):
            state = TrialState.FAIL
        params = {k: v for k, v in (params or {}).items() if math.isfinite(v)}
        trial = optuna.trial.create_trial(
            state=state, value=value if state == TrialState.COMPLETE else None,
            user_attrs={**attrs, "outcome": outcome}, intermediate_values=intermediate,
            params=params, distributions={k: optuna.distributions.FloatDistribution(v, v) for k, v in params.items()},
        )
        if seconds > 0 and trial.datetime_complete is not None:
            trial.datetime_start = trial.datetime_complete - datetime.timedelta(seconds=seconds)
        with self._writing():
            rdb = _rdb(self.storage)
            if rdb is not None:
                return insert_trials(rdb, self._id, [trial])[0]
            trial_id = self.storage.create_new_trial(self._id, template_trial=trial)
            return self.storage.get_trial_number_from_id(trial_id)


def list_studies(storage_url: str) -> list[optuna.study.StudySummary]:
    return optuna.get_all_study_summaries(storage=open_storage(storage_url), include_best_trial=True)
