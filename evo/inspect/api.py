"""The Python API: `evo.load_study(name, storage)` returns an `EvoStudy`, a real `optuna.Study`
(a subclass) with evo's helpers on top:

    s = evo.load_study("toy", "sqlite:///results/evo.db")
    s.best_trial, s.trials_dataframe()      # plain Optuna keeps working
    s.dataframe()                           # pandas, one row per trial, user attrs flattened
    s.best()                                # mainline best (confirmed stats) + best single screening run
    s.mainline()                            # baseline + promotions, oldest first
    s.lineage(trial=None)                   # TreeNode: a trial's ancestry, or the whole tree
    s.members()                             # index -> Member (an individual and all its runs)
    s.history()                             # best-so-far per run, for curves

Trials are read once with `get_trials(deepcopy=False)` and cached (`refresh()` re-reads), so a
study of many thousand trials loads in one query. Nothing here writes to the storage or the repo.
"""

from __future__ import annotations

import datetime
import difflib
import math
import re
import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from evo import lineage
from evo.lineage import parse as parse_trailers
from evo.archive import mask_url, no_gc, open_storage, read_facts, read_trials
from evo.errors import EvoError, GitError
from evo.individual import Direction

SCREENING_ROLES = ("baseline", "candidate")  # the run every individual gets first (one seed)
NO_STUDIES_HINT = "run 'evo search' first, or pass --storage URL / set EVO_STORAGE"


# -- storage ---------------------------------------------------------------------------------
def resolve_storage(storage: str | None) -> str:
    """The storage URL a command means: --storage, else $EVO_STORAGE, else ./results/evo.db.

    A bare file path (no '://') is taken as a SQLite file.
    """
    from evo.wiring import default_storage

    if storage and "://" not in storage:
        storage = f"sqlite:///{Path(storage).expanduser().resolve()}"
    return default_storage(storage)


def open_existing(url: str) -> BaseStorage:
    """Open a storage for reading; a SQLite file that does not exist is an error, never created."""
    if url.startswith("sqlite:"):
        path = url[len("sqlite:///"):].split("?", 1)[0] if url.startswith("sqlite:///") else ""
        if not path or path == ":memory:":
            raise EvoError(f"storage {mask_url(url)}: an in-memory database holds no studies; pass --storage URL")
        if not Path(path).is_file():
            raise EvoError(f"storage {mask_url(url)}: {path} does not exist, so there are no studies ({NO_STUDIES_HINT})")
    return open_storage(url)


class ReadOnlyError(RuntimeError):
    """A write through a ReadOnlyStorage (e.g. optuna-dashboard's delete button)."""


_WRITES = ("create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr", "create_new_trial",
           "set_trial_param", "set_trial_state_values", "set_trial_intermediate_value", "set_trial_user_attr",
           "set_trial_system_attr")


class ReadOnlyStorage(BaseStorage):
    """An Optuna storage that reads through to another and refuses every write.

    `evo dashboard` serves this by default: a study deleted from the dashboard would leave its
    git refs, logs and artifacts behind (`evo clean` removes all of them), and evo's archive is
    written by `evo search` alone."""

    def __init__(self, inner: BaseStorage) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:  # whatever else the inner storage offers (remove_session, ...)
        return getattr(self._inner, name)

    def _refuse(self, name: str) -> None:
        raise ReadOnlyError(f"read-only storage: {name} refused (evo clean removes a study with its refs, logs and "
                            "artifacts; evo dashboard --writable allows writes)")


def _reader(name: str) -> Any:
    def read(self: ReadOnlyStorage, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._inner, name)(*args, **kwargs)

    read.__name__ = name
    return read


def _writer(name: str) -> Any:
    def write(self: ReadOnlyStorage, *args: Any, **kwargs: Any) -> Any:
        self._refuse(name)

    write.__name__ = name
    return write


for _name in sorted(BaseStorage.__abstractmethods__) + ["get_best_trial", "get_n_trials", "get_trial_id_from_study_id_trial_number",
                                                         "get_trial_number_from_id", "get_trial_param", "get_trial_params",
                                                         "get_trial_user_attrs", "get_trial_system_attrs"]:
    setattr(ReadOnlyStorage, _name, _writer(_name) if _name in _WRITES else _reader(_name))
ReadOnlyStorage.__abstractmethods__ = frozenset()


def study_names(storage: str | BaseStorage | None = None) -> list[str]:
    """The names of every study in the storage, sorted."""
    st = storage if isinstance(storage, BaseStorage) else open_existing(resolve_storage(storage))
    return sorted(s.study_name for s in st.get_all_studies())


def missing_study(name: str, url: str, names: list[str]) -> EvoError:
    where = mask_url(url)
    if not names:
        return EvoError(f"no studies in {where} ({NO_STUDIES_HINT})")
    shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
    close = difflib.get_close_matches(name, names, 1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return EvoError(f"study '{name}' not found in {where}{hint} (studies there: {shown})")


def load_study(name: str, storage: str | BaseStorage | None = None) -> EvoStudy:
    """The study `name` as an `EvoStudy` (an `optuna.Study`); EvoError if it is not there."""
    if isinstance(storage, BaseStorage):
        st, url = storage, "<storage>"
    else:
        url = resolve_storage(storage)
        st = open_existing(url)
    try:
        st.get_study_id_from_name(name)
    except KeyError:
        raise missing_study(name, url, sorted(s.study_name for s in st.get_all_studies())) from None
    return EvoStudy(name, st, url)


# -- small helpers -----------------------------------------------------------------------------
def timestamp(t: FrozenTrial) -> float | None:
    d = t.datetime_complete or t.datetime_start
    return d.timestamp() if d is not None else None


def ran(t: FrozenTrial) -> bool:
    """A trial that spent compute (a run), as opposed to a failed proposal or a reused duplicate."""
    return "run_seconds" in t.user_attrs


def mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


@dataclass(repr=False)
class Member:
    """One individual (an index): its screening run and every other run (replicates, confirmations)."""

    index: int
    runs: list[FrozenTrial] = field(default_factory=list)  # every trial of this index, by number
    screening: FrozenTrial | None = None  # the first run (role baseline/candidate)
    decision: dict[str, Any] = field(default_factory=dict)  # study attr decisions[index]
    promoted: bool = False  # on the mainline
    children: list[int] = field(default_factory=list)

    @property
    def first(self) -> FrozenTrial:
        return self.screening or self.runs[0]

    @property
    def attrs(self) -> dict[str, Any]:
        return self.first.user_attrs

    @property
    def number(self) -> int:
        return self.first.number

    @property
    def parent_indices(self) -> tuple[int, ...]:
        return tuple(int(x) for x in self.attrs.get("parent_indices", ()) or ())

    @property
    def operator(self) -> str:
        return str(self.attrs.get("operator", ""))

    @property
    def description(self) -> str:
        return str(self.attrs.get("description", ""))

    @property
    def generation(self) -> int:
        return int(self.attrs.get("generation", 0) or 0)

    @property
    def outcome(self) -> str:
        return str(self.attrs.get("outcome", ""))

    @property
    def reason(self) -> str:
        return str(self.attrs.get("reason", ""))

    @property
    def commit(self) -> str:
        return str(self.attrs.get("commit", ""))

    @property
    def value(self) -> float | None:
        """The screening value (a duplicate's is the reused one)."""
        t = self.screening
        return t.value if t is not None and t.state == TrialState.COMPLETE else None

    def label(self) -> str:
        """One line: index, generation, operator (with a crossover's other parents), value or outcome,
        decision, description."""
        op = self.operator or "-"
        if len(self.parent_indices) > 1:
            op += " x " + ", ".join(f"#{p}" for p in self.parent_indices[1:])
        value = self.value
        val = f"{value:.6g}" if value is not None and self.outcome in ("complete", "duplicate") else (self.outcome or "?").upper()
        parts = [("* " if self.promoted and self.index > 0 else "") + f"#{self.index}", f"g{self.generation}", op, val]
        d = self.decision.get("decision", "")
        if self.index > 0 and d and d != "untested":
            parts.append(f"[{d}]")
        desc = " ".join(self.description.split()) if self.index > 0 else ""
        if desc:
            parts.append(desc if len(desc) <= 60 else desc[:57] + "...")
        return "  ".join(parts)

    def __repr__(self) -> str:
        return f"<Member {self.label()} ({len(self.runs)} run{'s' if len(self.runs) != 1 else ''})>"

    def seed_values(self) -> dict[int, float]:
        """seed -> metric, over the runs that completed (duplicates excluded)."""
        out: dict[int, float] = {}
        for t in self.runs:
            if t.state == TrialState.COMPLETE and t.user_attrs.get("outcome") == "complete" and t.value is not None:
                out.setdefault(int(t.user_attrs.get("seed", 0)), float(t.value))
        return out


@dataclass
class TreeNode:
    """A lineage tree: `branches` are the parents (ancestry) or the children (the whole tree)."""

    member: Member
    branches: list[TreeNode] = field(default_factory=list)
    repeat: bool = False  # shown already higher up in this tree (a shared ancestor)

    REPR_LINES = 40  # repr() shows this many nodes; str() / render() the whole tree

    def render(self, limit: int | None = None) -> str:
        """The tree as text, like `evo lineage` (ASCII; '*' = promoted), at most `limit` nodes."""
        from evo.inspect.tables import tree

        total = sum(1 for _ in self.walk())
        text = tree(self, lambda n: f"#{n.member.index} (see above)" if n.repeat else n.member.label(), fancy=False)
        if limit is not None and total > limit:
            text = "\n".join(text.splitlines()[:limit]) + f"\n... {total - limit} more node(s); print(node) or node.render() shows all"
        return text

    def __str__(self) -> str:
        return self.render()

    def __repr__(self) -> str:
        n = sum(1 for _ in self.walk())
        return f"<TreeNode #{self.member.index}: {n} node(s)>\n" + self.render(self.REPR_LINES)

    def walk(self) -> Iterator[tuple[int, TreeNode]]:
        """(depth, node), depth first, in display order."""
        stack: list[tuple[int, TreeNode]] = [(0, self)]
        while stack:
            depth, node = stack.pop()
            yield depth, node
            stack.extend((depth + 1, b) for b in reversed(node.branches))


class EvoStudy(optuna.Study):
    """An Optuna study written by `evo search`, with read-only helpers (see the module doc)."""

    def __init__(self, study_name: str, storage: str | BaseStorage, url: str = "") -> None:
        super().__init__(study_name=study_name, storage=storage)
        self.url = url or (storage if isinstance(storage, str) else "<storage>")
        self.notes: list[str] = []  # what could not be read (a moved repository, ...)
        self._trials: list[FrozenTrial] | None = None
        self._attrs: dict[str, Any] | None = None
        self._members: dict[int, Member] | None = None
        self._mainline: list[dict[str, Any]] | None = None
        self._repo: Any = False

    # -- basics ------------------------------------------------------------------------------
    @property
    def study(self) -> EvoStudy:
        """The Optuna study itself (so `evo.load_study(...).study` also works)."""
        return self

    def refresh(self) -> EvoStudy:
        """Forget the cached trials and attrs (a search still running has added some)."""
        self._trials = self._attrs = self._members = self._mainline = None
        self.notes = []
        return self

    @property
    def evo_trials(self) -> list[FrozenTrial]:
        """Every trial by number, read once (deepcopy=False: treat them as read-only)."""
        if self._trials is None:
            self._trials = read_trials(self._storage, self._study_id)
        return self._trials

    @property
    def attrs(self) -> dict[str, Any]:
        """The study's facts: its labels, other facts, decisions and logbook (evo.archive.read_facts; read once)."""
        if self._attrs is None:
            self._attrs = read_facts(self._storage, self._study_id)
        return self._attrs

    @property
    def metric(self) -> str:
        return str(self.attrs.get("metric", "value"))

    @property
    def direction_name(self) -> str:
        return self.direction.name.lower()

    @property
    def sense(self) -> Direction:
        """The study's direction as evo's one sign convention (evo.individual.Direction)."""
        return Direction(self.direction_name)

    @property
    def strategy(self) -> str:
        return str(self.attrs.get("strategy", ""))

    @property
    def mainline_ref(self) -> str:
        return str(self.attrs.get("mainline", f"refs/heads/evo/{self.study_name}/main"))

    @property
    def mainline_branch(self) -> str:
        ref = self.mainline_ref
        return ref[len("refs/heads/"):] if ref.startswith("refs/heads/") else ref

    def better(self, a: float, b: float) -> bool:
        return self.sense.better(a, b)

    def gain(self, new: float | None, old: float | None) -> float | None:
        """The improvement from old to new: positive is better, whatever the direction."""
        if new is None or old is None:
            return None
        return self.sense.gain(old, new)

    def pick_best(self, values: list[float]) -> float | None:
        values = [v for v in values if v is not None and math.isfinite(v)]
        return self.sense.best(values) if values else None

    def trial(self, number: int) -> FrozenTrial:
        ts = self.evo_trials
        if 0 <= number < len(ts) and ts[number].number == number:
            return ts[number]
        for t in ts:
            if t.number == number:
                return t
        span = f"its trials are 0..{ts[-1].number}" if ts else "it has no trials yet"
        raise EvoError(f"study '{self.study_name}' has no trial {number} ({span})")

    def repo(self) -> Any:
        """The study's git repository (evo.gitrepo.GitRepo), or None with a note on why."""
        if self._repo is False:
            from evo.gitrepo import GitRepo

            path = self.attrs.get("repo")
            self._repo = None
            if not path:
                self.notes.append(f"study '{self.study_name}' records no repository (not made by evo search?)")
            else:
                try:
                    self._repo = GitRepo(path)
                except GitError as e:
                    self.notes.append(f"repository unavailable: {e}")
        return self._repo

    # -- individuals -------------------------------------------------------------------------------
    def members(self) -> dict[int, Member]:
        """index -> Member, for every evo trial (trials without an `index` attr are skipped)."""
        if self._members is None:
            decisions = self.attrs.get("decisions", {}) or {}
            members: dict[int, Member] = {}
            trials = self.evo_trials
            with no_gc():
                for t in trials:
                    a = t.user_attrs
                    if "index" not in a:
                        continue
                    idx = int(a["index"])
                    m = members.get(idx)
                    if m is None:
                        m = members[idx] = Member(index=idx, decision=dict(decisions.get(str(idx), {}) or {}))
                    m.runs.append(t)
                    if m.screening is None and a.get("role") in SCREENING_ROLES:
                        m.screening = t
            for m in members.values():
                for p in dict.fromkeys(m.parent_indices):
                    if p in members:
                        members[p].children.append(m.index)
            self._members = members
            for row in self.mainline():
                if row["index"] in members:
                    members[row["index"]].promoted = True
        return self._members

    def member(self, index: int) -> Member:
        m = self.members().get(index)
        if m is None:
            raise EvoError(f"study '{self.study_name}' has no individual #{index}")
        return m

    def member_of(self, number: int) -> Member:
        t = self.trial(number)
        if "index" not in t.user_attrs:
            raise EvoError(f"trial {number} of study '{self.study_name}' was not written by evo (no index attr)")
        return self.members()[int(t.user_attrs["index"])]

    def screening_trials(self) -> list[FrozenTrial]:
        return [t for t in self.evo_trials if t.user_attrs.get("role") in SCREENING_ROLES]

    def best_run(self) -> FrozenTrial | None:
        """The best single screening run (outcome complete): maybe a lucky seed, unconfirmed."""
        done = [t for t in self.screening_trials()
                if t.state == TrialState.COMPLETE and t.user_attrs.get("outcome") == "complete" and t.value is not None]
        if not done:
            return None
        return min(done, key=lambda t: self.sense.sort_key(t.value))  # type: ignore[arg-type]  # the earliest among equals

    # -- the mainline ----------------------------------------------------------------------------------
    def _git_chain(self) -> list[dict[str, Any]] | None:
        """The mainline's promotion commits from the ref's first-parent log, oldest first."""
        base = self.attrs.get("base_commit")
        repo = self.repo()
        if repo is None or not base:
            return None
        tip = repo.ref(self.mainline_ref)
        if tip is None:
            self.notes.append(f"{self.mainline_branch} does not exist in {repo.path}: promotions from the archive")
            return None
        try:
            raw = repo.out("log", "--first-parent", "--format=%H%x00%ct%x00%B%x01", f"{base}..{tip}")
        except GitError as e:
            self.notes.append(f"cannot read {self.mainline_branch}: {e}")
            return None
        chain = []
        for entry in raw.split("\x01"):
            if "\x00" not in entry:
                continue
            sha, ctime, msg = entry.strip().split("\x00", 2)
            tr = parse_trailers(msg)
            if "Index" not in tr:
                continue
            chain.append({"commit": sha, "ctime": float(ctime), "trailers": tr, "subject": msg.strip().splitlines()[0] if msg.strip() else ""})
        chain.reverse()
        return chain

    def fresh_gain(self) -> tuple[float | None, list[float] | None]:
        """The mainline's gain over the baseline measured on seeds that selected none of its steps:
        the sum of each promotion's gain on its fresh confirmation seeds, with a 95% interval (the
        steps' intervals combined as independent). None when a step has no such measurement (a
        promotion by hand, a single-run rule, an older study)."""
        promos = [p for p in self.attrs.get("promotions", []) or [] if isinstance(p, dict)]
        if not promos or any(p.get("gain") is None or not p.get("gain_ci") for p in promos):
            return None, None
        total = sum(float(p["gain"]) for p in promos)
        half = math.sqrt(sum(((float(p["gain_ci"][1]) - float(p["gain_ci"][0])) / 2) ** 2 for p in promos))
        return total, [total - half, total + half]

    def mainline(self) -> list[dict[str, Any]]:
        """The baseline (step 0) and every promotion, oldest first.

        The mainline ref's first-parent log is the truth (as for the engine); the archive's
        `promotions` attr adds times and previous values, and stands in when the repo is gone.
        Each row: step, index, trial, value, previous, gain (positive = better), gain_pct,
        decision, pairs, llr, commit (mainline commit), candidate, time, evaluations, description, source.
        """
        if self._mainline is not None:
            return self._mainline
        a = self.attrs
        decisions = a.get("decisions", {}) or {}
        recorded = [p for p in a.get("promotions", []) or [] if isinstance(p, dict)]
        screening = {}
        for t in self.evo_trials:
            if t.user_attrs.get("role") in SCREENING_ROLES and "index" in t.user_attrs:
                screening.setdefault(int(t.user_attrs["index"]), t)
        base_t = screening.get(0)
        rows: list[dict[str, Any]] = [{
            "step": 0, "index": 0, "trial": base_t.number if base_t else None,
            "value": base_t.value if base_t is not None and base_t.state == TrialState.COMPLETE else None,
            "previous": None, "gain": None, "gain_pct": None,
            "decision": "baseline", "pairs": None, "llr": None, "commit": a.get("base_commit", ""), "candidate": a.get("base_commit", ""),
            "time": a.get("created") or (timestamp(base_t) if base_t else None), "evaluations": 1 if base_t is not None else 0,
            "description": "baseline", "source": "archive",
        }]
        chain = self._git_chain()
        entries: list[dict[str, Any]] = []
        if chain is None:
            for p in recorded:
                entries.append({"index": int(p.get("index", -1)), "commit": p.get("commit", ""), "candidate": p.get("candidate", ""),
                                "value": p.get("value"), "time": p.get("time"), "decision": p.get("decision", ""), "trial": None,
                                "source": "archive"})
        else:
            used: set[int] = set()
            for c in chain:
                tr = c["trailers"]
                idx = int(tr["Index"])
                match = next((i for i, p in enumerate(recorded) if i not in used and p.get("commit") == c["commit"]), None)
                if match is None:
                    match = next((i for i, p in enumerate(recorded) if i not in used and p.get("index") == idx), None)
                p = recorded[match] if match is not None else {}
                if match is not None:
                    used.add(match)
                value = p.get("value")
                if value is None:
                    try:
                        value = float(tr.get("Value", "nan"))
                    except ValueError:
                        value = float("nan")
                    value = value if math.isfinite(value) else None
                entries.append({"index": idx, "commit": c["commit"], "candidate": tr.get("Candidate", p.get("candidate", "")),
                                "value": value, "time": p.get("time", c["ctime"]), "decision": tr.get("Decision") or p.get("decision", ""),
                                "trial": int(tr["Trial"]) if tr.get("Trial", "").strip().isdigit() else None,
                                "source": "git+archive" if p else "git"})
            stray = [p for i, p in enumerate(recorded) if i not in used]
            if stray:
                self.notes.append("the archive lists promotion(s) not on the mainline ref: "
                                  + ", ".join(f"#{p.get('index')}" for p in stray))
        done_times = sorted(ts for t in self.evo_trials if ran(t) and (ts := timestamp(t)) is not None)
        for step, e in enumerate(entries, 1):
            idx = e["index"]
            d = decisions.get(str(idx), {}) or {}
            st = screening.get(idx)
            prev = rows[-1]["value"]
            g = self.gain(e["value"], prev)
            when = e["time"]
            rows.append({
                "step": step, "index": idx, "trial": e["trial"] if e["trial"] is not None else (st.number if st else None),
                "value": e["value"], "previous": prev, "gain": g,
                "gain_pct": (100.0 * g / abs(prev)) if g is not None and prev else None,
                "decision": e["decision"] or d.get("decision", ""), "pairs": d.get("pairs"), "llr": d.get("llr"),
                "commit": e["commit"], "candidate": e["candidate"], "time": when,
                "evaluations": sum(1 for x in done_times if when is None or x <= when + 1e-6),
                "description": st.user_attrs.get("description", "") if st else "", "source": e["source"],
            })
        self._mainline = rows
        return rows

    def ancestors(self, index: int) -> set[int]:
        """The individual and every ancestor (through all parents of crossovers)."""
        return lineage.ancestors(index, self.members())

    def mainline_changes(self, diffs: bool = True) -> list[dict[str, Any]]:
        """Per promotion (step >= 1): everything that changed from the previous mainline step.

        `brings`: the individuals whose changes arrive with it, oldest first: the promoted
        candidate and every ancestor of it that the previous mainline individual does not have
        (untested parents of the candidate, a crossover's other line); `drops`: those on the
        previous step's line that the new one lacks (a promotion off the mainline's line undoes
        their changes, as `evo promote` by hand can). `changes`: the
        UPPER_CASE module constants that differ between the two mainline commits (from `git
        diff`, so inherited changes are named too) with a count of other changed lines; `diff`:
        that diff (None without the repository)."""
        rows = self.mainline()
        members = self.members()
        repo = self.repo() if diffs else None
        out = []
        for prev, row in zip(rows, rows[1:]):
            new, old = self.ancestors(row["index"]), self.ancestors(prev["index"])
            brings, drops = sorted(new - old), sorted(old - new)
            text = None
            if repo is not None and prev["commit"] and row["commit"]:
                try:
                    text = repo.diff(prev["commit"], row["commit"])
                except GitError as e:
                    self.notes.append(f"cannot diff mainline step {row['step'] - 1} -> {row['step']}: {e}")
            consts, other = constant_changes(text) if text is not None else ([], 0)
            out.append({
                "step": row["step"], "index": row["index"], "previous_index": prev["index"],
                "brings": [{"index": i, "operator": members[i].operator, "description": members[i].description,
                            "decision": members[i].decision.get("decision", ""), "promoted": i == row["index"]} for i in brings],
                "drops": [{"index": i, "operator": members[i].operator, "description": members[i].description} for i in drops],
                "constants": consts, "other_lines": other, "changes": summarize_changes(consts, other) if text is not None else None,
                "diff": text,
            })
        return out

    # -- best ----------------------------------------------------------------------------------------
    def best(self) -> dict[str, Any]:
        """The mainline's current best with its confirmed stats, and the best single screening run."""
        rows = self.mainline()
        last, base = rows[-1], rows[0]
        members = self.members()
        m = members.get(last["index"])
        seeds = m.seed_values() if m else {}
        mean, sd = mean_sd(list(seeds.values()))
        d = dict(m.decision) if m else {}
        repo = self.attrs.get("repo", "")
        mainline = {
            "branch": self.mainline_branch, "ref": self.mainline_ref, "commit": last["commit"],
            "index": last["index"], "trial": last["trial"], "value": last["value"], "candidate": last["candidate"],
            "operator": m.operator if m else "", "description": m.description if m else "",
            "decision": d.get("decision", "baseline" if last["index"] == 0 else last["decision"]),
            "rule": d.get("rule", ""), "pairs": d.get("pairs"), "llr": d.get("llr"), "mean_diff": d.get("mean_diff"),
            "against": d.get("against"), "trailer_decision": last["decision"] if last["index"] else "",
            "seeds": seeds, "mean": mean, "sd": sd, "n": len(seeds),
            "baseline": base["value"], "gain": self.gain(last["value"], base["value"]),
            "gain_pct": (100.0 * self.gain(last["value"], base["value"]) / abs(base["value"]))  # type: ignore[operator]
            if last["value"] is not None and base["value"] else None,
            "promotions": len(rows) - 1,
        }
        mainline["fresh_gain"], mainline["fresh_ci"] = self.fresh_gain()
        best_run = None
        t = self.best_run()
        if t is not None:
            bm = members.get(int(t.user_attrs.get("index", -1)))
            best_run = {
                "index": t.user_attrs.get("index"), "trial": t.number, "value": t.value, "seed": t.user_attrs.get("seed"),
                "operator": t.user_attrs.get("operator", ""), "description": t.user_attrs.get("description", ""),
                "decision": (bm.decision.get("decision", "") if bm else "") or ("baseline" if t.user_attrs.get("index") == 0 else ""),
                "on_mainline": bool(bm and bm.promoted) or t.user_attrs.get("index") == last["index"],
                "seeds": bm.seed_values() if bm else {}, "branch": t.user_attrs.get("branch", ""),
            }
        return {
            "study": self.study_name, "metric": self.metric, "direction": self.direction_name, "strategy": self.strategy,
            "mainline": mainline, "best_run": best_run, "repo": repo,
            "checkout": f"git -C {repo} checkout {self.mainline_branch}" if repo else "",
            "notes": list(dict.fromkeys(self.notes)),
        }

    # -- lineage ---------------------------------------------------------------------------------------
    def lineage(self, trial: int | None = None, index: int | None = None) -> TreeNode:
        """A trial's (or individual's) ancestry up to the baseline, parents as branches (two for
        a crossover; an ancestor reached twice is marked `repeat` and not expanded again).
        With neither: the whole tree from the baseline, each child under its first parent."""
        members = self.members()
        if not members:
            raise EvoError(f"study '{self.study_name}' has no evo trials yet")
        if trial is None and index is None:
            roots = [m for m in members.values() if not m.parent_indices or m.parent_indices[0] not in members]
            top = members.get(0) or min(roots, key=lambda m: m.index)
            root = TreeNode(top)
            nodes = {top.index: root}
            order = sorted(members.values(), key=lambda m: m.index)
            for m in order:
                if m.index == top.index:
                    continue
                nodes[m.index] = TreeNode(m)
            for m in order:
                if m.index == top.index:
                    continue
                first = m.parent_indices[0] if m.parent_indices and m.parent_indices[0] in nodes else top.index
                nodes[first].branches.append(nodes[m.index])
            return root
        start = self.member_of(trial) if trial is not None else self.member(index)  # type: ignore[arg-type]
        root = TreeNode(start)
        seen: set[int] = set()
        stack = [root]
        while stack:
            node = stack.pop()
            if node.member.index in seen:
                node.repeat = True
                continue
            seen.add(node.member.index)
            node.branches = [TreeNode(members[p]) for p in node.member.parent_indices if p in members]
            stack.extend(reversed(node.branches))
        return root

    # -- tables ----------------------------------------------------------------------------------------
    def history(self) -> list[dict[str, Any]]:
        """One row per run, in the order runs finished: evaluations and compute seconds so far,
        the best screening value so far, and the mainline value at that time."""
        steps = [(r["time"], r["value"]) for r in self.mainline()[1:] if r["time"] is not None]
        steps.sort(key=lambda x: x[0])
        rows = []
        best: float | None = None
        mainline: float | None = None
        seconds = 0.0
        k = 0
        done = [t for t in self.evo_trials if ran(t)]
        for i, t in enumerate(done):
            a = t.user_attrs
            seconds += float(a.get("run_seconds", 0.0) or 0.0)
            value = t.value if t.state == TrialState.COMPLETE and a.get("outcome") == "complete" else None
            screening = a.get("role") in SCREENING_ROLES
            if screening and value is not None and (best is None or self.better(value, best)):
                best = value
            if a.get("index") == 0 and screening and value is not None:
                mainline = value
            # a promotion lands after the run that decided it was recorded: it counts from that
            # run on, i.e. every promotion made before the next run finished
            nxt = timestamp(done[i + 1]) if i + 1 < len(done) else math.inf
            while k < len(steps) and nxt is not None and steps[k][0] < nxt:
                mainline = steps[k][1]
                k += 1
            rows.append({"evaluation": len(rows) + 1, "number": t.number, "index": a.get("index"), "role": a.get("role"),
                         "value": value, "screening": screening, "seconds": seconds, "best": best, "mainline": mainline})
        return rows

    def dataframe(self) -> Any:
        """A pandas DataFrame: one row per trial; user attrs flattened (`metrics.score`,
        `usage.prompt_tokens`, ...) plus the study's promotion `decision` for the trial's index."""
        try:
            import pandas as pd
        except ImportError:
            raise EvoError("dataframe() needs pandas: pip install pandas") from None
        decisions = self.attrs.get("decisions", {}) or {}
        rows = []
        trials = self.evo_trials
        with no_gc():
            for t in trials:
                row: dict[str, Any] = {
                    "number": t.number, "state": t.state.name, "value": t.value,
                    "datetime_start": t.datetime_start, "datetime_complete": t.datetime_complete,
                    "duration": (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_start and t.datetime_complete else None,
                }
                _flatten("", t.user_attrs, row)
                if "index" in t.user_attrs:
                    row["decision"] = (decisions.get(str(t.user_attrs["index"]), {}) or {}).get("decision")
                rows.append(row)
            return pd.DataFrame(rows)

    def counts(self) -> dict[str, int]:
        out = {"trials": 0, "COMPLETE": 0, "PRUNED": 0, "FAIL": 0, "RUNNING": 0, "WAITING": 0}
        for t in self.evo_trials:
            out["trials"] += 1
            out[t.state.name] = out.get(t.state.name, 0) + 1
        return out


def _flatten(prefix: str, d: dict[str, Any], out: dict[str, Any]) -> None:
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and all(isinstance(x, str) for x in v):
            _flatten(key + ".", v, out)
        else:
            out[key] = v


_CONST = re.compile(r"^([A-Z][A-Z0-9_]*)\s*(?::[^=]*)?=\s*(.*?)\s*(?:#.*)?$")


def constant_changes(diff: str) -> tuple[list[tuple[str, str | None, str | None]], int]:
    """From a unified diff: (name, old, new) for each top-level UPPER_CASE assignment that
    changed (old or new None when added or removed), and the number of other changed lines."""
    old: dict[tuple[str, str], str] = {}
    new: dict[tuple[str, str], str] = {}
    order: list[tuple[str, str]] = []
    other = 0
    path = ""
    for line in diff.splitlines():
        if line.startswith("+++ ") or line.startswith("--- "):
            if line.startswith("+++ "):
                path = line[6:] if line.startswith("+++ b/") else line[4:]
            continue
        if not line or line[0] not in "+-" or line.startswith(("diff ", "index ")):
            continue
        m = _CONST.match(line[1:])
        if m is None:
            if line[1:].strip():
                other += 1
            continue
        key = (path, m.group(1))
        if key not in order:
            order.append(key)
        (old if line[0] == "-" else new)[key] = m.group(2)
    out = []
    for key in order:
        o, n = old.get(key), new.get(key)
        if o != n:
            out.append((key[1], o, n))
    return out, other


def summarize_changes(consts: list[tuple[str, str | None, str | None]], other: int) -> str:
    """'LR 0.1 -> 0.156; WIDTH 8 -> 9 (+2 other changed lines)'."""
    parts = [f"{name} {'(new)' if o is None else o} -> {'(removed)' if n is None else n}" for name, o, n in consts]
    text = "; ".join(parts)
    if other:
        text += f"{' (+' if text else ''}{other} other changed line{'s' if other != 1 else ''}{')' if text else ''}"
    return text or "no change"


def fmt_time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")
