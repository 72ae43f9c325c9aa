"""The storage seam: an Optuna study holds every run evo makes, failures included.

One trial per run (a candidate's screening run, a baseline replicate, a confirmation run on a
further seed), added when the run ends. value = the metric; state COMPLETE / PRUNED / FAIL; intermediate values = the
progress points (step = round(fraction * 1000)); user attrs carry the genealogy and the outcome,
so `optuna trials`, `optuna best-trial` and optuna-dashboard read it unchanged. Only the one
controller thread writes here: SQLite shared by writers hands the same trial to two of them.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Iterator
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
        if url.startswith(("sqlite", "postgresql", "mysql", "oracle", "mssql")):
            return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else None)
        return optuna.storages.get_storage(url)
    except Exception as e:  # noqa: BLE001 - sqlalchemy/driver errors of many kinds
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EvoError(f"storage {mask_url(given)}: cannot open: {mask_url(first)}") from None


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


def _facts(user: dict[str, Any], system: dict[str, Any]) -> dict[str, Any]:
    facts: dict[str, Any] = dict(user)
    decisions = dict(facts.get("decisions") or {})
    logbook = {int(r["gen"]): r for r in facts.get("logbook") or [] if isinstance(r, dict) and "gen" in r}
    for key, value in system.items():
        if not key.startswith(_PREFIX):
            continue  # optuna-dashboard's notes and the like
        name, _, row = key[len(_PREFIX):].partition(":")
        if name == "decisions" and row:
            decisions[row] = value
        elif name == "logbook" and row:
            logbook[int(row)] = value
        elif not row:
            facts[name] = value
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


def _study_attrs(storage: optuna.storages.BaseStorage, study_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(user attrs, system attrs) of a study; on SQL, two plain SELECTs (one row per decision adds up)."""
    rdb = _rdb(storage)
    if rdb is None:
        return storage.get_study_user_attrs(study_id), storage.get_study_system_attrs(study_id)
    import sqlalchemy as sa
    from optuna.storages._rdb import models

    out = []
    with rdb.engine.connect() as conn:
        for model in (models.StudyUserAttributeModel, models.StudySystemAttributeModel):
            t = model.__table__
            rows = conn.execute(sa.select(t.c.key, t.c.value_json).where(t.c.study_id == study_id)).all()
            out.append(dict(zip((k for k, _ in rows), _decode_all(v for _, v in rows))))
    return out[0], out[1]


def _decode_all(texts: Iterable[str]) -> list[Any]:
    """Many JSON texts decoded in one `json.loads` (one call per text cost ~1 us each, a third of reading them)."""
    return json.loads("[" + ",".join(texts) + "]")


def read_trials(storage: optuna.storages.BaseStorage, study_id: int) -> list[FrozenTrial]:
    """Every trial of a study, in trial order (treat them as read-only).

    On an SQL storage, six plain SELECTs build the trials directly: Optuna's own reader builds an
    ORM object per row (an evo trial has ~20 user attrs), which made a resume of a 10,000-trial
    study take 42 s, nearly all of it there. Anything else goes through Optuna's reader."""
    rdb = _rdb(storage)
    if rdb is None:
        return sorted(storage.get_all_trials(study_id, deepcopy=False), key=lambda t: t.number)
    if rdb.engine.dialect.name == "sqlite":
        try:
            return _select_trials_sqlite(rdb, study_id)
        except Exception as e:  # noqa: BLE001 - an SQLite built without its JSON functions (json_quote): the portable reader
            if "json_quote" not in str(e):
                raise
    return _select_trials(rdb, study_id)


def _select_trials_sqlite(rdb: optuna.storages.RDBStorage, study_id: int) -> list[FrozenTrial]:
    """The reader of the default storage, flat at 100,000 trials: SQLite puts each trial's user attrs
    together as one JSON object (group_concat), and one `json.loads` decodes them all, where a row
    per attr (~20 per trial) through SQLAlchemy's row objects cost ~10 us each. The other tables
    are read row by row on the DB-API cursor (no SQLAlchemy row processing)."""
    from optuna.distributions import json_to_distribution
    from optuna.storages._rdb import models

    V, I = models.TrialValueModel, models.TrialIntermediateValueModel
    of_study = "JOIN trials t ON t.trial_id = x.trial_id WHERE t.study_id = ?"
    conn = rdb.engine.raw_connection()
    try:
        cur = conn.cursor()
        trials = cur.execute("SELECT trial_id, number, state, datetime_start, datetime_complete FROM trials "
                             "WHERE study_id = ? ORDER BY number", (study_id,)).fetchall()
        objects = cur.execute("SELECT x.trial_id, '{' || group_concat(json_quote(x.key) || ':' || x.value_json, ',') || '}' "
                              f"FROM trial_user_attributes x {of_study} GROUP BY x.trial_id", (study_id,)).fetchall()
        values: dict[int, dict[int, float]] = {}
        for tid, objective, value, kind in cur.execute(f"SELECT x.trial_id, x.objective, x.value, x.value_type FROM trial_values x {of_study}", (study_id,)):
            values.setdefault(tid, {})[objective] = V.stored_repr_to_value(value, V.TrialValueType[kind])
        inter: dict[int, dict[int, float]] = {}
        for tid, step, value, kind in cur.execute("SELECT x.trial_id, x.step, x.intermediate_value, x.intermediate_value_type "
                                                  f"FROM trial_intermediate_values x {of_study}", (study_id,)):
            inter.setdefault(tid, {})[step] = I.stored_repr_to_intermediate_value(value, I.TrialIntermediateValueType[kind])
        system: dict[int, dict[str, Any]] = {}
        for tid, key, value in cur.execute(f"SELECT x.trial_id, x.key, x.value_json FROM trial_system_attributes x {of_study}", (study_id,)):
            system.setdefault(tid, {})[key] = json.loads(value)
        params: dict[int, list[tuple[int, str, float, str]]] = {}
        for tid, pid, name, value, dist in cur.execute("SELECT x.trial_id, x.param_id, x.param_name, x.param_value, x.distribution_json "
                                                       f"FROM trial_params x {of_study}", (study_id,)):
            params.setdefault(tid, []).append((pid, name, value, dist))
    finally:
        conn.close()
    attrs = dict(zip((tid for tid, _ in objects), _decode_all(text for _, text in objects)))
    when = datetime.datetime.fromisoformat
    return [_trial(number, TrialState[state], values.get(tid), when(start) if start else None, when(complete) if complete else None,
                   params.get(tid), attrs.get(tid, {}), system.get(tid, {}), inter.get(tid, {}), tid, json_to_distribution)
            for tid, number, state, start, complete in trials]


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
        user, system = _study_attrs(self.storage, self._id)
        self._facts = _facts(user, system)
        if metric and system.get("study:metric_names") != [metric]:  # Optuna's key for them
            with warnings.catch_warnings():  # experimental in Optuna, stable enough for a label
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self.study.set_metric_names([metric])

    # -- study-level facts ------------------------------------------------------------------
    @property
    def attrs(self) -> dict[str, Any]:
        """The study's facts (see `read_facts`), read when the archive opened: this process is the
        study's only writer (the search holds its lock), so the copy is kept in step by the writes below."""
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
            self.storage.set_study_system_attr(self._id, f"{_PREFIX}{table}:{key}", value)
        if table == "decisions":
            self.attrs["decisions"][str(key)] = value
        else:
            rows = {int(r["gen"]): r for r in self.attrs["logbook"]} | {int(key): value}
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

    def delete_if_empty(self) -> None:
        """Remove a study that was created but never started (no base commit, no trial)."""
        try:
            if "base_commit" not in self.attrs and not self.trials():
                optuna.delete_study(study_name=self.name, storage=self.storage)
        except Exception:  # noqa: BLE001 - best effort on the way out of another error
            pass

    # -- trials ------------------------------------------------------------------------------
    def trials(self, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
        trials = read_trials(self.storage, self._id)
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
            trial_id = self.storage.create_new_trial(self._id, template_trial=trial)
            return self.storage.get_trial_number_from_id(trial_id)


def list_studies(storage_url: str) -> list[optuna.study.StudySummary]:
    return optuna.get_all_study_summaries(storage=open_storage(storage_url), include_best_trial=True)
