"""TOML config -> frozen dataclasses.

Every error is one line naming the file, the key and the value, raised as ConfigError (the CLI
prints it and exits 2 before anything is created). Relative paths in a file are resolved against
the file's folder, so a config means the same thing whatever the current directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import math
import os
import re
import subprocess
import tomllib
import types
import typing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from evo.errors import ConfigError


@dataclass(frozen=True)
class StudyConfig:
    name: str = ""  # default: the config file's stem
    storage: str = ""  # any Optuna storage URL; default sqlite:///<results>/evo.db
    seed: int = 0
    results: str = ""  # folder for storage, logs, artifacts; default ./results


@dataclass(frozen=True)
class TargetConfig:
    repo: str = "."  # the git repository to evolve
    mutable: tuple[str, ...] = ()  # globs: the only files a candidate may change
    run: str = ""  # shell command run in the candidate's checkout; {python} = evo's interpreter
    setup: str = ""  # run once before the search in a checkout of the baseline
    time_budget: float = 300.0  # seconds, exported as EVO_TIME_BUDGET
    timeout: float = 600.0  # hard kill after this many seconds
    metric: str = "score"
    direction: str = "minimize"
    metric_regex: str = ""  # default ^\s*<metric>:\s*<number>
    progress_regex: str = ""  # named groups progress (0..1) and value
    env_allow: tuple[str, ...] = ()  # extra environment variables a run may see
    max_log_bytes: int = 20_000_000  # the log keeps this much; the rest is counted, not stored
    memory_limit_mb: int = 0  # RLIMIT_AS per run; 0 = none
    no_network: bool = False  # run in a new network namespace when unshare allows it
    preload: tuple[str, ...] = ()  # modules a pre-started interpreter imports once; `{python} script` runs fork from it


@dataclass(frozen=True)
class SearchConfig:
    strategy: str = "population"  # population | greedy | random
    population: int = 8
    generations: int = 40
    workers: int = 1
    crossover_rate: float = 0.3  # the quality bench chose it (docs/bench.md)
    mutation_rate: float = 0.2  # a crossover child is also mutated with this probability
    tournament_size: int = 3
    elites: int = 2  # HallOfFame size kept in every generation
    secondary_metric: str = ""  # e.g. peak_rss_mb: selection turns to NSGA-II
    secondary_direction: str = "minimize"
    steady_state: bool = True  # refill a worker as soon as it frees (no generation barrier)
    exploit: float = 0.9  # population: chance a parent is the head of the mainline's line (else a power-law draw by rank)
    rank_power: float = 1.0  # population: a parent of rank r (0 = best) is drawn with weight (r + 1) ** -rank_power
    merge_side_lines: bool = True  # population: merge improving lines the incumbent lacks into it, once per pair
    islands: int = 1  # population: children dealt round robin to this many islands, each breeding from its own best
    island_patience: int = 4  # population: an island whose best had this many children that failed takes the incumbent in
    tpe_rate: float = 0.0  # greedy and population: chance a mutation child is proposed by TPE over the constants instead
    step_spread: float = 0.0  # population: island k's (or in-flight child k's) constants step x 2 ** (spread * u), u in [-1, 1]
    # budgets: the search stops at whichever comes first (0 = no limit); `generations` still bounds the children
    max_runs: int = 0  # runs (baseline replicates and confirmations included)
    max_hours: float = 0.0  # wall-clock hours, summed over every session of the study
    max_run_hours: float = 0.0  # run hours: the sum of run durations (GPU-hours with one GPU per run)
    forever: bool = False  # ignore `generations`: run until a budget, Ctrl-C or SIGTERM stops it


@dataclass(frozen=True)
class OperatorsConfig:
    mutation: str = "constants"  # constants | llm | agent
    conflict: str = "fitter"  # fitter | random | llm
    max_changes: int = 2  # constants operator: at most this many literals per child
    step: float = 1.0  # constants operator: scale of the log-scale step (the quality bench chose 1.0 over 0.5)
    program: str = ""  # research directions for LLM/agent prompts (e.g. model/program.md)
    duplicate_retries: int = 3  # a child whose code already exists is proposed again this many times
    step_dist: str = "cauchy"  # constants operator: cauchy (heavy-tailed) | gauss steps of scale `step`
    exclude: tuple[str, ...] = ()  # constants operator: names it never changes (also: `# evo: fixed` markers)


PRUNERS = ("sprt", "median", "wilcoxon")


@dataclass(frozen=True)
class SprtConfig:
    enabled: bool = True
    replicates: int = 12  # baseline runs on distinct seeds that measure the noise; 12 chosen by the statistics bench (docs/statistics.md)
    alpha: float = 0.05  # chance of promoting a no-gain candidate
    beta: float = 0.1  # chance of missing a gain of delta
    delta: float = 0.0  # wanted gain in metric units; 0 = 1.25 seed sigmas of the baseline
    max_pairs: int = 8  # paired seeds before a promotion test is called inconclusive
    futility_alpha: float = 0.1  # chance of stopping a run that is truly better by delta
    gate: float = 1.5  # only test candidates whose screening run shows gate*delta (docs/statistics.md: measured)
    futility: bool = True  # stop clearly-worse runs early
    pruner: str = "sprt"  # the early stop: sprt (evo's futility test) | median | wilcoxon (Optuna's pruners, for comparison)
    seed_corr: float = 0.0  # futility test: least share of the seed's effect a change keeps (the study's measured lower bound is used when larger)


@dataclass(frozen=True)
class LLMConfig:
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.7
    max_tokens: int = 4096
    timeout: float = 120.0
    deadline: float = 600.0
    retries: int = 3
    fix_attempts: int = 2
    token_budget: int = 0  # 0 = unlimited; else stop proposing once spent


@dataclass(frozen=True)
class AgentConfig:
    command: str = ""  # e.g. 'my-agent --prompt-file {prompt}'
    timeout: float = 900.0
    env_allow: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExecutorConfig:
    kind: str = "local"  # local | ray
    ray_address: str = ""  # empty: start a local Ray instance
    gpus_per_trial: float = 0.0  # ray: GPUs requested per evaluation
    cpus_per_trial: float = 1.0
    retries: int = 1  # ray: a run lost with its node is retried this many times


@dataclass(frozen=True)
class Config:
    study: StudyConfig = field(default_factory=StudyConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    operators: OperatorsConfig = field(default_factory=OperatorsConfig)
    sprt: SprtConfig = field(default_factory=SprtConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    source: str = "<flags>"  # the file it came from, for error messages

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source")
        return d


_SECTIONS: dict[str, type] = {k: v for k, v in typing.get_type_hints(Config).items() if k != "source"}
_CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("target", "direction"): ("minimize", "maximize"),
    ("search", "strategy"): ("population", "greedy", "random"),
    ("search", "secondary_direction"): ("minimize", "maximize"),
    ("operators", "mutation"): ("constants", "llm", "agent"),
    ("operators", "conflict"): ("fitter", "random", "llm"),
    ("operators", "step_dist"): ("cauchy", "gauss"),
    ("executor", "kind"): ("local", "ray"),
}


def load(path: str | Path | None, overrides: dict[str, dict[str, Any]] | None = None) -> Config:
    """Read a TOML file (or nothing), apply flag overrides, resolve paths, validate."""
    raw: dict[str, Any] = {}
    source = "<flags>"
    base = Path.cwd()
    if path is not None:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            line = e.object[: e.start].count(b"\n") + 1
            raise ConfigError(f"{p}: not UTF-8 text (byte 0x{e.object[e.start]:02x} on line {line})") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: not valid TOML: {e}") from None
        base = p.resolve().parent
    sections: dict[str, Any] = {}
    for sec, value in raw.items():
        if sec not in _SECTIONS:
            raise ConfigError(f"{source}: [{sec}]: unknown section{_hint(sec, _SECTIONS)}")
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {sec} = {value!r}: expected a [{sec}] table")
        sections[sec] = _build(source, sec, _SECTIONS[sec], value)
    for sec, kv in (overrides or {}).items():
        kv = {k: v for k, v in kv.items() if v is not None}
        if kv:
            current = sections.get(sec, _SECTIONS[sec]())
            checked = _build("<flags>", sec, _SECTIONS[sec], kv)
            sections[sec] = replace(current, **{k: getattr(checked, k) for k in kv})
    cfg = Config(**sections, source=source)
    return _finish(cfg, base, stem=Path(path).stem if path is not None else "study")


def _hint(name: str, choices: Any) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _build(source: str, sec: str, cls: type, values: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(f"{source}: [{sec}] {key}: unknown key{_hint(key, hints)}")
        kwargs[key] = _coerce(source, sec, key, value, hints[key])
        allowed = _CHOICES.get((sec, key))
        if allowed and kwargs[key] not in allowed:
            raise ConfigError(
                f"{source}: [{sec}] {key} = {value!r}: must be one of {', '.join(allowed)}"
            )
    return cls(**kwargs)


def _coerce(source: str, sec: str, key: str, value: Any, typ: Any) -> Any:
    where = f"{source}: [{sec}] {key} = {value!r}"
    if typing.get_origin(typ) is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings")
        return tuple(value)
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string")
        return value
    if isinstance(typ, types.UnionType):  # pragma: no cover - no such fields yet
        return value
    raise ConfigError(f"{where}: unsupported type")  # pragma: no cover


def default_results() -> Path:
    """Where storage, logs and artifacts go unless the config says: $EVO_RESULTS, else ./results."""
    return Path(os.environ.get("EVO_RESULTS", Path.cwd() / "results"))


def default_storage_url(results: Path) -> str:
    """The storage when none is named: $EVO_STORAGE, else an SQLite file in the results folder."""
    return os.environ.get("EVO_STORAGE") or f"sqlite:///{(results / 'evo.db').resolve()}"


def _finish(cfg: Config, base: Path, stem: str) -> Config:
    src = cfg.source
    st, tg, se, sp = cfg.study, cfg.target, cfg.search, cfg.sprt
    name = st.name or re.sub(r"[^A-Za-z0-9._-]+", "-", stem)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name) or ".." in name or name.endswith((".", ".lock")):
        raise ConfigError(f"{src}: [study] name = {name!r}: use letters, digits, '.', '_' and '-' (it names git refs)")
    results = Path(st.results) if st.results else default_results()
    if st.results and not results.is_absolute():
        results = base / results
    storage = st.storage or default_storage_url(results)
    if storage.startswith("sqlite:///") and not storage.startswith("sqlite:////") and st.storage:
        rel = storage[len("sqlite:///"):]
        if rel and rel != ":memory:":
            storage = f"sqlite:///{(base / rel).resolve()}"
    repo = (base / tg.repo).resolve() if tg.repo else base
    program = cfg.operators.program
    if program:
        program = str((repo / program) if not Path(program).is_absolute() else Path(program))
    for key, val in (("time_budget", tg.time_budget), ("timeout", tg.timeout)):
        if math.isinf(val):  # inf was accepted: no timeout at all
            raise ConfigError(f"{src}: [target] {key} = {val}: must be a finite number of seconds")
        if not val > 0:
            raise ConfigError(f"{src}: [target] {key} = {val}: must be > 0 seconds")
    if tg.timeout < tg.time_budget:
        raise ConfigError(f"{src}: [target] timeout = {tg.timeout}: must be >= time_budget ({tg.time_budget})")
    if not tg.run.strip():
        raise ConfigError(f"{src}: [target] run: missing; the shell command that runs one experiment")
    if not tg.mutable:
        raise ConfigError(f"{src}: [target] mutable: missing; list the files a candidate may change")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", tg.metric):
        raise ConfigError(f"{src}: [target] metric = {tg.metric!r}: use a plain name such as val_bpb")
    for module in tg.preload:
        if not all(part.isidentifier() for part in module.split(".")):
            raise ConfigError(f"{src}: [target] preload = {list(tg.preload)!r}: {module!r} is not a module name "
                              "(a list of names such as \"torch\" or \"numpy.linalg\")")
    for key in ("metric_regex", "progress_regex"):
        pattern = getattr(tg, key)
        if pattern:
            try:
                rx = re.compile(pattern, re.MULTILINE)
            except re.error as e:
                raise ConfigError(f"{src}: [target] {key} = {pattern!r}: invalid regex: {e}") from None
            if key == "progress_regex" and not {"progress", "value"} <= set(rx.groupindex):
                raise ConfigError(f"{src}: [target] progress_regex = {pattern!r}: needs named groups (?P<progress>...) and (?P<value>...)")
            if key == "metric_regex" and rx.groups < 1:
                raise ConfigError(f"{src}: [target] metric_regex = {pattern!r}: needs a group that captures the number")
    for key, val, lo in (
        ("population", se.population, 1), ("generations", se.generations, 0), ("workers", se.workers, 1),
        ("tournament_size", se.tournament_size, 1), ("elites", se.elites, 0),
    ):
        if val < lo:
            raise ConfigError(f"{src}: [search] {key} = {val}: must be >= {lo}")
    for key, val in (("max_runs", se.max_runs), ("max_hours", se.max_hours), ("max_run_hours", se.max_run_hours)):
        if not (val >= 0 and math.isfinite(val)):
            raise ConfigError(f"{src}: [search] {key} = {val}: must be a finite number >= 0 (0 = no limit)")
    if not (0.0 <= se.exploit <= 1.0):
        raise ConfigError(f"{src}: [search] exploit = {se.exploit}: must be between 0 and 1")
    for key, val, lo in (("islands", se.islands, 1), ("island_patience", se.island_patience, 1)):
        if val < lo:
            raise ConfigError(f"{src}: [search] {key} = {val}: must be >= {lo}")
    if not (0.0 <= se.step_spread <= 4.0):
        raise ConfigError(f"{src}: [search] step_spread = {se.step_spread}: must be between 0 and 4 (a power of 2)")
    if not (0.0 <= se.rank_power <= 100.0):
        raise ConfigError(f"{src}: [search] rank_power = {se.rank_power}: must be between 0 and 100")
    if cfg.operators.duplicate_retries < 0:
        raise ConfigError(f"{src}: [operators] duplicate_retries = {cfg.operators.duplicate_retries}: must be >= 0")
    for key, val in (("crossover_rate", se.crossover_rate), ("mutation_rate", se.mutation_rate), ("tpe_rate", se.tpe_rate),
                     ("seed_corr", sp.seed_corr)):
        if not 0.0 <= val <= 1.0:
            sec = "sprt" if key == "seed_corr" else "search"
            raise ConfigError(f"{src}: [{sec}] {key} = {val}: must be between 0 and 1")
    if not 0.0 <= sp.gate <= 4.0:
        raise ConfigError(f"{src}: [sprt] gate = {sp.gate}: must be between 0 and 4 (a multiple of delta)")
    for key, val in (("alpha", sp.alpha), ("beta", sp.beta), ("futility_alpha", sp.futility_alpha)):
        if not 0.0 < val < 0.5:
            raise ConfigError(f"{src}: [sprt] {key} = {val}: must be between 0 and 0.5")
    if sp.pruner not in PRUNERS:
        raise ConfigError(f"{src}: [sprt] pruner = {sp.pruner!r}: must be one of {', '.join(PRUNERS)}")
    if sp.enabled and sp.replicates < 2:
        raise ConfigError(f"{src}: [sprt] replicates = {sp.replicates}: the noise model needs at least 2")
    if not (math.isfinite(sp.delta) and sp.delta >= 0):  # nan passed `< 0` and turned every test into "no"
        raise ConfigError(f"{src}: [sprt] delta = {sp.delta}: must be a finite number >= 0 (0 = one seed sigma)")
    _check_numbers(cfg)
    if sp.max_pairs < 2:
        raise ConfigError(f"{src}: [sprt] max_pairs = {sp.max_pairs}: must be >= 2")
    if cfg.operators.mutation == "llm" and not cfg.llm.model:
        raise ConfigError(f"{src}: [llm] model: missing; required when [operators] mutation = 'llm'")
    key = cfg.llm.api_key_env
    for pattern in tg.env_allow:  # runs are untrusted: the LLM's key reaches them only when named exactly
        if pattern != key and fnmatch.fnmatchcase(key, pattern):
            raise ConfigError(f"{src}: [target] env_allow = {list(tg.env_allow)}: {pattern!r} would pass the LLM key variable {key} "
                              "to every run; name it exactly if the runs need it")
    if cfg.operators.mutation == "agent" and not cfg.agent.command:
        raise ConfigError(f"{src}: [agent] command: missing; required when [operators] mutation = 'agent'")
    _check_ref_clash(cfg, repo, name)
    _check_creatable(src, "results", str(st.results or results), results)
    return replace(
        cfg,
        study=replace(st, name=name, storage=storage, results=str(results.resolve())),
        target=replace(tg, repo=str(repo)),
        operators=replace(cfg.operators, program=program),
    )


def _check_numbers(cfg: Config) -> None:
    """Values that were silently accepted and made no sense: a non-finite number anywhere, a
    negative limit, a step or count that does nothing. One line naming [section] key = value."""
    src = cfg.source
    for sec in _SECTIONS:
        for f in dataclasses.fields(getattr(cfg, sec)):
            val = getattr(getattr(cfg, sec), f.name)
            if isinstance(val, float) and not math.isfinite(val):
                raise ConfigError(f"{src}: [{sec}] {f.name} = {val}: must be a finite number")
    o, tg, ll, ag, ex = cfg.operators, cfg.target, cfg.llm, cfg.agent, cfg.executor
    checks: list[tuple[str, str, float, bool, str]] = [
        ("operators", "max_changes", o.max_changes, o.max_changes >= 1, "must be >= 1 (literals changed per child)"),
        ("operators", "step", o.step, o.step > 0, "must be > 0 (the std of the log-scale step)"),
        ("target", "memory_limit_mb", tg.memory_limit_mb, tg.memory_limit_mb >= 0, "must be >= 0 (0 = no limit)"),
        ("target", "max_log_bytes", tg.max_log_bytes, tg.max_log_bytes >= 0, "must be >= 0"),
        ("llm", "temperature", ll.temperature, ll.temperature >= 0, "must be >= 0"),
        ("llm", "max_tokens", ll.max_tokens, ll.max_tokens >= 1, "must be >= 1"),
        ("llm", "timeout", ll.timeout, ll.timeout > 0, "must be > 0 seconds"),
        ("llm", "deadline", ll.deadline, ll.deadline > 0, "must be > 0 seconds"),
        ("llm", "retries", ll.retries, ll.retries >= 0, "must be >= 0"),
        ("llm", "fix_attempts", ll.fix_attempts, ll.fix_attempts >= 0, "must be >= 0"),
        ("llm", "token_budget", ll.token_budget, ll.token_budget >= 0, "must be >= 0 (0 = unlimited)"),
        ("agent", "timeout", ag.timeout, ag.timeout > 0, "must be > 0 seconds"),
        ("executor", "cpus_per_trial", ex.cpus_per_trial, ex.cpus_per_trial >= 0, "must be >= 0"),
        ("executor", "gpus_per_trial", ex.gpus_per_trial, ex.gpus_per_trial >= 0, "must be >= 0"),
        ("executor", "retries", ex.retries, ex.retries >= 0, "must be >= 0"),
    ]
    for sec, key, val, ok, message in checks:
        if not ok:
            raise ConfigError(f"{src}: [{sec}] {key} = {val}: {message}")


def _check_creatable(src: str, key: str, value: str, folder: Path) -> None:
    """That `folder` exists or can be made, without making it: its nearest existing ancestor is a
    writable folder. (Found later, every run crashed on its log: `results = "/dev/null/res"`.)"""
    p = folder.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        raise ConfigError(f"{src}: [study] {key} = {value!r}: cannot be a folder ({p} is not a folder)")
    if not os.access(p, os.W_OK | os.X_OK):
        raise ConfigError(f"{src}: [study] {key} = {value!r}: cannot be written ({p} is not writable)")


def _check_ref_clash(cfg: Config, repo: Path, name: str) -> None:
    """A study's refs live under refs/heads/evo/<name>/: a user branch `evo` or `evo/<name>` makes
    them impossible (git: "cannot lock ref"), found only after the study was created."""
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "for-each-ref", "--format=%(refname)", "refs/heads/evo", f"refs/heads/evo/{name}"],
            capture_output=True, text=True, timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return  # not a usable repository: the repository checks say so
    if out.returncode != 0:
        return
    refs = set(out.stdout.split())
    for clash in ("refs/heads/evo", f"refs/heads/evo/{name}"):
        if clash in refs:
            branch = clash[len("refs/heads/"):]
            raise ConfigError(f"{cfg.source}: [study] name = {name!r}: the study's branches evo/{name}/... cannot exist next to "
                              f"the branch '{branch}' in {repo}; rename that branch or choose another study name")


def with_overrides(cfg: Config, **sections: dict[str, Any]) -> Config:
    """Return cfg with some keys replaced (used by tests and the benchmark)."""
    out = cfg
    for sec, kv in sections.items():
        out = replace(out, **{sec: replace(getattr(out, sec), **kv)})
    return out
