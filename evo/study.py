"""A study's workspace: its repository refs, archive, operators and the bookkeeping of runs.

Crash safety comes from the order of writes: a child's commit and ref are written before its
trial, a run's trial before the run, a promotion's mainline ref before the archive's copy of it.
On every start, `load` rebuilds the state from the archive and the refs, so whatever moment a
kill -9 lands on, the next start sees a consistent state and re-runs only what never finished.
"""

from __future__ import annotations

import hashlib
import json
import math
import py_compile
import random
import re
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from evo.archive import Archive, mask_url
from evo.config import Config
from evo.errors import ConfigError, EvoError
from evo.executors.base import Job, RunTemplate
from evo.gitrepo import GitRepo, check_ref_name, matches
from evo.judge import Judge, lower_better
from evo.population import DUPLICATE, EVALUATED, FAILED, PENDING, PRUNED, RUNNING, Individual, Run, rebuild
from evo.runner import RunSpec, kill_leftovers, network_isolation_available, run, run_env
from evo.strategies import Plan, make_strategy
from operators.base import Context, OperatorError, Parent, Proposal

TRAILER = re.compile(r"^Evo-([A-Za-z-]+): (.*)$", re.MULTILINE)


def python_command(cmd: str) -> str:
    """`{python}` in a command means the interpreter evo runs under (the venv's python)."""
    return cmd.replace("{python}", shlex.quote(sys.executable))


class Study:
    def __init__(self, cfg: Config, mutation: Any, resolver: Any, log: Any = print) -> None:
        self.cfg = cfg
        self.log = log
        t = cfg.target
        self.name = cfg.study.name
        self.repo = GitRepo(t.repo)
        if not check_ref_name(f"refs/heads/evo/{self.name}/main"):
            raise ConfigError(f"{cfg.source}: [study] name = {self.name!r}: not usable in a git ref name")
        self.ns = f"refs/heads/evo/{self.name}"
        self.mainline_ref = f"{self.ns}/main"
        self.results = Path(cfg.study.results)
        self.logs = self.results / "logs" / self.name
        self.artifacts = self.results / "artifacts" / self.name
        self.mutation = mutation
        self.resolver = resolver
        self.judge = Judge(cfg.sprt, t.direction, cfg.study.seed)
        self.strategy = make_strategy(cfg.search, t.direction)
        self.template = RunTemplate(
            command=python_command(t.run), timeout=t.timeout, time_budget=t.time_budget, metric=t.metric,
            metric_regex=t.metric_regex, progress_regex=t.progress_regex, env_allow=t.env_allow,
            max_log_bytes=t.max_log_bytes, memory_limit_mb=t.memory_limit_mb, no_network=t.no_network,
            cache_dir=str(self.results / "cache"),
        )
        self._check_command(t.run, "run")
        if t.setup:
            self._check_command(t.setup, "setup")
        if t.no_network and cfg.executor.kind == "local" and not network_isolation_available():
            raise ConfigError(f"{cfg.source}: [target] no_network = true: `unshare --net` does not work here (it needs user namespaces or root)")
        head = self.repo.head()
        if not self.repo.match(head, t.mutable):  # checked before the archive is created: nothing is left behind
            raise ConfigError(f"{cfg.source}: [target] mutable = {list(t.mutable)}: matches no file in {self.repo.path} at {head[:8]}")
        for path in self.repo.match(head, t.mutable):  # operators edit text: a binary file would fail after the baseline ran
            if not _utf8(self.repo.read(head, path)):
                raise ConfigError(f"{cfg.source}: [target] mutable = {list(t.mutable)}: {path} is not UTF-8 text (mutable files are edited as text)")
        self.archive = Archive(cfg.study.storage, self.name, t.direction)
        self.pop: dict[int, Individual] = {}
        self.inflight: set[tuple[int, int]] = set()
        self.incumbent: Individual | None = None
        self.decisions: dict[str, dict[str, Any]] = {}
        self.promotions: list[dict[str, Any]] = []
        self.next_index = 1
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0}
        self.data_fingerprint = ""  # what the baseline's runs print as `data_fingerprint:`; every run must match
        self.started = time.time()

    # -- opening and resuming ----------------------------------------------------------------
    def _check_command(self, cmd: str, key: str) -> None:
        try:
            words = shlex.split(python_command(cmd))
        except ValueError as e:
            raise ConfigError(f"{self.cfg.source}: [target] {key} = {cmd!r}: {e}") from None
        first = next((w for w in words if "=" not in w), "")
        relative = "/" in first and not first.startswith("/")  # ./train.sh: a file of the checkout, not of evo's cwd
        builtins = ("cd", "exec", "env", "export", "source", ".", "exit", "set", "ulimit", "umask", "eval", "test", "[", ":", "command", "trap", "unset")
        if first and not relative and not any(c in first for c in "$`;|&(") and shutil.which(first) is None and first not in builtins:
            raise ConfigError(f"{self.cfg.source}: [target] {key} = {cmd!r}: command '{first}' not found")

    def load(self) -> None:
        a = self.archive.attrs
        if "base_commit" not in a:
            base = self.repo.head()
            mutable = self.repo.match(base, self.cfg.target.mutable)
            protected = [p for p in self.repo.ls_files(base) if not matches(p, self.cfg.target.mutable)]
            config = self.cfg.to_dict()
            config["study"]["storage"] = mask_url(config["study"]["storage"])  # no password in the archive
            self.archive.set_attr("config", config)
            self.archive.set_attr("repo", str(self.repo.path))
            self.archive.set_attr("namespace", self.ns)
            self.archive.set_attr("mainline", self.mainline_ref)
            self.archive.set_attr("metric", self.cfg.target.metric)
            self.archive.set_attr("direction", self.cfg.target.direction)
            self.archive.set_attr("strategy", self.strategy.name)
            self.archive.set_attr("seed", self.cfg.study.seed)
            self.archive.set_attr("mutable", mutable)
            self.archive.set_attr("fingerprint", self._fingerprint(base, protected))
            self.archive.set_attr("created", time.time())
            self.archive.set_attr("base_commit", base)  # last: a study with a base_commit has all of the above
        else:
            if Path(a["repo"]).resolve() != self.repo.path:
                raise EvoError(f"study '{self.name}' belongs to the repository {a['repo']}, not {self.repo.path}")
            if a.get("strategy") not in (None, self.strategy.name):
                raise EvoError(f"study '{self.name}' was run with strategy {a['strategy']}; use a new study name for {self.strategy.name}")
            protected = [p for p in self.repo.ls_files(a["base_commit"]) if not matches(p, self.cfg.target.mutable)]
            fingerprint = self._fingerprint(a["base_commit"], protected)
            if a.get("fingerprint", fingerprint) != fingerprint:  # runs under other rules are not comparable
                raise ConfigError(
                    f"{self.cfg.source}: [target] mutable = {list(self.cfg.target.mutable)}: protects other files than study "
                    f"'{self.name}' was started with (fingerprint {fingerprint}, was {a['fingerprint']}); use a new study name"
                )
        base = self.archive.attrs["base_commit"]
        if self.repo.ref(self.mainline_ref) is None:
            self.repo.set_ref(self.mainline_ref, base, reason="evo: study mainline")
        stale = self.archive.recover()
        if stale:
            self.log(f"resume: {len(stale)} run(s) interrupted by the last stop will run again")
        if kill_leftovers(self.logs):  # runs a kill -9'd evo left running: they would compete with ours
            self.log("resume: killed the runs the last (killed) evo left behind")
        self.pop = rebuild(self.archive.trials(), self.judge.screen_seed)
        self._adopt_orphan_commits()
        if 0 not in self.pop:
            self.pop[0] = Individual(index=0, commit=base, tree=self.repo.tree_of(base), description="baseline", screen_seed=self.judge.screen_seed)
            self.repo.set_ref(f"{self.ns}/c/00000", base)
        self.next_index = max(self.pop) + 1
        self.decisions = dict(self.archive.attrs.get("decisions", {}))
        for key, d in self.decisions.items():
            if int(key) in self.pop:
                self.pop[int(key)].decision = d.get("decision", "")
        self._reconcile_mainline()
        self.judge.fit(self.pop[0])
        self.usage = dict(self.archive.attrs.get("usage", self.usage))
        self.data_fingerprint = str(self.archive.attrs.get("data_fingerprint", ""))
        for ind in sorted(self.pop.values(), key=lambda i: i.index):
            if ind.index > 0 and ind.status == EVALUATED and not ind.decision:
                self._screen(ind)  # killed between its trial and its decision: decide now, as `record` would have
        self.update_tests()  # likewise for a promotion test whose last run was recorded, not yet decided

    def _fingerprint(self, commit: str, paths: list[str]) -> str:
        h = hashlib.sha256()
        raw = self.repo.out("ls-tree", "-r", commit)
        for line in raw.splitlines():
            meta, path = line.split("\t", 1)
            if path in paths:
                h.update(f"{path} {meta.split()[2]}\n".encode())
        return h.hexdigest()[:16]

    def _adopt_orphan_commits(self) -> None:
        """Children committed just before a kill, with no trial yet: their trailers say what they are."""
        for ref, sha in self.repo.refs(f"{self.ns}/c/").items():
            try:
                idx = int(ref.rsplit("/", 1)[1])
            except ValueError:
                continue
            if idx in self.pop or idx == 0:
                continue
            msg = self.repo.out("log", "-1", "--format=%B", sha)
            t = dict(TRAILER.findall(msg))
            parents = tuple(int(x) for x in t.get("Parents", "").split(",") if x.strip())
            ind = self.pop[idx] = Individual(
                index=idx, commit=sha, tree=self.repo.tree_of(sha), parents=tuple(self.repo.out("log", "-1", "--format=%P", sha).split()),
                parent_indices=parents, operator=t.get("Operator", "?"), description=msg.splitlines()[0] if msg else "",
                generation=int(t.get("Generation", "0")), screen_seed=self.judge.screen_seed,
            )
            if ind.parents:  # the diff is written right after the ref: the kill may have come first
                ind.artifacts = self._save_artifacts(idx, {"diff.patch": self.repo.diff(ind.parents[0], sha)})
            twin = next((o for o in self.pop.values() if o.tree == ind.tree and o.index < idx and o.commit), None)
            if twin is not None:  # killed before its `duplicate` trial was written: write it now, never run it
                self._duplicate(ind, twin, ind.artifacts, {})

    def _reconcile_mainline(self) -> None:
        """The mainline ref is the truth about promotions; the archive's list is brought in line."""
        base = self.archive.attrs["base_commit"]
        tip = self.repo.ref(self.mainline_ref)
        chain = []
        if tip and tip != base:
            raw = self.repo.out("log", "--first-parent", "--format=%H%x00%B%x01", f"{base}..{tip}")
            for entry in raw.split("\x01"):
                if "\x00" not in entry:
                    continue
                sha, msg = entry.strip().split("\x00", 1)
                t = dict(TRAILER.findall(msg))
                if "Index" in t:
                    chain.append((sha, int(t["Index"]), t))
        chain.reverse()
        recorded = {p["index"]: p for p in self.archive.attrs.get("promotions", [])}
        self.promotions = []
        changed = len(chain) != len(recorded)
        for sha, idx, t in chain:
            p = recorded.get(idx) or {"index": idx, "commit": sha, "candidate": t.get("Candidate", ""), "value": float(t.get("Value", "nan")), "time": time.time(), "decision": t.get("Decision", "")}
            self.promotions.append(p)
            if self.decisions.get(str(idx), {}).get("decision") != "accept":  # killed before the decision was written
                self.decisions[str(idx)] = {"decision": "accept", "recovered": True}
                changed = True
            if idx in self.pop:
                self.pop[idx].decision = "accept"
        if changed:
            self.archive.set_attr("promotions", self.promotions)
            self.archive.set_attr("decisions", self.decisions)
        last = self.promotions[-1]["index"] if self.promotions else 0
        self.incumbent = self.pop.get(last, self.pop[0])

    # -- choosing work -------------------------------------------------------------------------
    def next_job(self) -> Job | None:
        """The most useful run to start now: baseline replicates, promotion tests, pending children, new children."""
        base = self.pop[0]
        for seed in self.judge.replicate_seeds:
            if seed not in base.runs and (0, seed) not in self.inflight:
                return self._job(base, seed, "baseline" if seed == self.judge.screen_seed else "replicate")
        if self.judge.screen_seed not in base.runs:
            return None  # everyone is compared with the baseline's screening run: wait for it
        assert self.incumbent is not None
        for ind in sorted(self.pop.values(), key=lambda i: i.index):
            if ind.decision == "testing":
                for who, seed in self.judge.needed(ind, self.incumbent):
                    if (who.index, seed) not in self.inflight:
                        return self._job(who, seed, "confirm")
        for ind in sorted(self.pop.values(), key=lambda i: i.index):
            if ind.status == PENDING and ind.commit and (ind.index, ind.screen_seed) not in self.inflight:
                return self._job(ind, ind.screen_seed, "candidate", monitor=True)
        while self.made < self.strategy.planned and not self.out_of_tokens():
            child = self.breed()
            if child is None:
                return None  # the strategy waits for running evaluations
            if child.status == PENDING:
                return self._job(child, child.screen_seed, "candidate", monitor=True)
        return None

    @property
    def made(self) -> int:
        return self.next_index - 1

    def out_of_tokens(self) -> bool:
        budget = self.cfg.llm.token_budget
        return bool(budget) and self.usage["prompt_tokens"] + self.usage["completion_tokens"] >= budget

    def _job(self, ind: Individual, seed: int, role: str, monitor: bool = False) -> Job:
        self.inflight.add((ind.index, seed))
        if seed == ind.screen_seed:
            ind.status = RUNNING
        parent = self.pop.get(ind.parent_indices[0]) if ind.parent_indices else None
        mon = self.judge.monitor(parent) if monitor and parent is not None else None
        return Job(index=ind.index, commit=ind.commit, seed=seed, role=role,
                   log_path=self.logs / f"{ind.index:05d}-seed{seed}.log", monitor=mon)

    def _attrs(self, ind: Individual) -> dict[str, Any]:
        return {
            "index": ind.index, "commit": ind.commit, "tree": ind.tree, "branch": f"{self.ns}/c/{ind.index:05d}"[len("refs/heads/"):] if ind.commit else "",
            "parents": list(ind.parents), "parent_indices": list(ind.parent_indices), "operator": ind.operator,
            "description": ind.description, "generation": ind.generation, "artifacts": ind.artifacts,
        }

    # -- making children -------------------------------------------------------------------------
    def context(self) -> Context:
        program = ""
        if self.cfg.operators.program:
            try:
                program = Path(self.cfg.operators.program).read_text(encoding="utf-8")
            except OSError as e:
                raise EvoError(f"[operators] program = {self.cfg.operators.program}: cannot read: {e.strerror}") from None
        return Context(metric=self.cfg.target.metric, direction=self.cfg.target.direction,
                       mutable=tuple(self.cfg.target.mutable), program=program, history=self.history())

    def history(self, best: int = 5, recent: int = 20) -> str:
        """A compact results table for prompts, like autoresearch's results.tsv."""
        done = [i for i in self.pop.values() if i.finished and i.index > 0]
        ranked = sorted((i for i in done if i.value is not None), key=lambda i: lower_better(i.value, self.cfg.target.direction))  # type: ignore[arg-type]
        lines = ["index\tvalue\tstatus\tdescription"]
        shown = set()
        for i in ranked[:best] + sorted(done, key=lambda i: -i.index)[:recent]:
            if i.index in shown:
                continue
            shown.add(i.index)
            val = f"{i.value:.6g}" if i.value is not None else "-"
            why = f" ({i.reason})" if i.status in (FAILED, PRUNED) and i.reason else ""
            lines.append(f"{i.index}\t{val}\t{i.status}{why}\t{i.description}")
        base = self.pop[0]
        head = f"baseline value: {base.value:.6g}\n" if base.value is not None else ""
        return head + "\n".join(lines)

    def parent_view(self, ind: Individual, tree: str | None = None) -> Parent:
        rev = tree or ind.commit
        paths = [p for p in self.repo.ls_files(rev) if matches(p, self.cfg.target.mutable)]
        return Parent(commit=ind.commit, files=self.repo.read_text(rev, paths), value=ind.value,
                      description=ind.description, trial=ind.runs[ind.screen_seed].trial if ind.screen_seed in ind.runs else None)

    def breed(self) -> Individual | None:
        idx = self.next_index
        rng = random.Random(f"{self.cfg.study.seed}:{idx}")
        assert self.incumbent is not None
        plan = self.strategy.plan(idx, self.pop, self.incumbent, rng)
        if plan is None:
            return None
        self.next_index += 1
        ind = Individual(index=idx, commit="", tree="", parents=tuple(p.commit for p in plan.parents),
                         parent_indices=tuple(p.index for p in plan.parents), generation=plan.generation,
                         operator=self.mutation.name, screen_seed=self.judge.screen_seed)
        self.pop[idx] = ind
        artifacts: dict[str, str] = {}
        usage: dict[str, int] = {}
        try:
            tree, description, artifacts, usage = self._propose(plan, ind, rng)
            self._validate(plan.parents[0], tree, artifacts)
        except OperatorError as e:
            self._count_usage(e.usage)
            ind.status, ind.reason, ind.description = FAILED, e.reason, ind.description or e.reason
            outcome = "rejected" if e.reason.startswith(("touches protected", "syntax error", "no change")) else "operator_failed"
            self.archive.add(outcome, None, self._attrs(ind) | {
                "seed": ind.screen_seed, "role": "candidate", "reason": e.reason,
                "artifacts": self._save_artifacts(idx, e.artifacts | artifacts), "usage": e.usage,
            })
            self.log(f"#{idx:<4} {ind.operator:<10} FAIL     {e.reason}")
            return ind
        self._count_usage(usage)
        ind.usage = dict(usage)
        ind.description = description
        msg = (f"{description}\n\nEvo-Study: {self.name}\nEvo-Index: {idx}\nEvo-Operator: {ind.operator}\n"
               f"Evo-Generation: {plan.generation}\nEvo-Parents: {','.join(str(p.index) for p in plan.parents)}\n")
        ind.commit = self.repo.commit_tree(tree, list(ind.parents), msg)
        ind.tree = tree
        self.repo.set_ref(f"{self.ns}/c/{idx:05d}", ind.commit)
        art = self._save_artifacts(idx, artifacts | {"diff.patch": self.repo.diff(plan.parents[0].commit, ind.commit)})
        twin = next((o for o in self.pop.values() if o.tree == tree and o.index != idx and o.commit), None)
        if twin is not None:  # the same code as an earlier individual: reuse, never re-run
            return self._duplicate(ind, twin, art, usage)
        ind.status = PENDING
        ind.artifacts = art
        return ind

    def _duplicate(self, ind: Individual, twin: Individual, art: str, usage: dict[str, int]) -> Individual:
        ind.reused_from = twin.index
        ind.status = DUPLICATE
        reused = twin.value if twin.status == EVALUATED else None
        if reused is not None:
            ind.runs[ind.screen_seed] = Run(seed=ind.screen_seed, trial=-1, value=reused, outcome="duplicate")
        self.archive.add("duplicate", reused, self._attrs(ind) | {
            "seed": ind.screen_seed, "role": "candidate", "reused_from": twin.runs[twin.screen_seed].trial if twin.screen_seed in twin.runs else None,
            "reused_from_index": twin.index, "reason": f"same tree as #{twin.index}" + ("" if reused is not None else " (no result yet)"),
            "artifacts": art, "usage": usage,
        })
        self.log(f"#{ind.index:<4} {ind.operator:<10} same code as #{twin.index}: not run again")
        return ind

    def _propose(self, plan: Plan, ind: Individual, rng: random.Random) -> tuple[str, str, dict[str, str], dict[str, int]]:
        from operators.crossover import crossover

        ctx = self.context()
        a = plan.parents[0]
        if plan.operator == "crossover":
            child = crossover(self.repo, self.parent_view(a), self.parent_view(plan.parents[1]), self.resolver, rng, ctx)
            if child is not None:
                ind.operator = "crossover"
                tree, desc = child.tree, child.description.replace("merge", f"merge of #{a.index} and #{plan.parents[1].index}", 1)
                if plan.mutate_after:
                    prop = self.mutation.mutate(self.parent_view(a, tree=tree), rng, ctx)
                    tree = self.repo.write_tree(tree, dict(prop.files))
                    desc = f"{desc}; {prop.description}"
                    ind.operator = f"crossover+{self.mutation.name}"
                return tree, desc, child.artifacts, child.usage
            ind.parents, ind.parent_indices = (a.commit,), (a.index,)  # same or nested lines: mutate instead
        prop: Proposal = self.mutation.mutate(self.parent_view(a), rng, ctx)
        bad = [p for p in prop.files if not matches(p, self.cfg.target.mutable)]
        if bad:
            raise OperatorError(f"touches protected file(s): {', '.join(sorted(bad))}", prop.artifacts, prop.usage)
        return self.repo.write_tree(a.commit, dict(prop.files)), prop.description, prop.artifacts, prop.usage

    def _validate(self, parent: Individual, tree: str, artifacts: dict[str, str]) -> None:
        """Nothing outside the mutable files changes; Python still compiles. Else no run is spent."""
        changed = self.repo.changed_paths(parent.tree, tree)
        bad = [p for p in changed if not matches(p, self.cfg.target.mutable)]
        if bad:
            raise OperatorError(f"touches protected file(s): {', '.join(sorted(bad))}", artifacts)
        with tempfile.TemporaryDirectory(prefix="evo-compile-") as tmp:
            for path in changed:
                if path.endswith(".py"):
                    src = Path(tmp) / Path(path).name
                    src.write_bytes(self.repo.read(tree, path))
                    try:
                        py_compile.compile(str(src), cfile=str(Path(tmp) / "check.pyc"), doraise=True)
                    except py_compile.PyCompileError as e:
                        msg = str(e.exc_value).replace(str(src), path).replace(f"({src.name}, line", f"({path}, line").strip().splitlines()[-1]
                        raise OperatorError(f"syntax error in {path}: {msg}", artifacts) from None

    def _save_artifacts(self, idx: int, artifacts: dict[str, str]) -> str:
        if not artifacts:
            return ""
        folder = self.artifacts / f"{idx:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in artifacts.items():
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", name) or "artifact"
            (folder / (safe if "." in safe else safe + ".txt")).write_text(text, encoding="utf-8")
        return str(folder)

    def _count_usage(self, usage: dict[str, int]) -> None:
        if usage:
            for k in ("prompt_tokens", "completion_tokens"):
                self.usage[k] = self.usage.get(k, 0) + int(usage.get(k, 0))
            self.archive.set_attr("usage", self.usage)

    # -- recording runs and deciding ------------------------------------------------------------
    def record(self, job: Job, result: Any, worker: int, trace: list[tuple[float, float]]) -> Individual:
        ind = self.pop[job.index]
        self.inflight.discard((ind.index, job.seed))
        self._check_data(ind, result)
        attrs: dict[str, Any] = self._attrs(ind) | {
            "seed": job.seed, "role": job.role, "run_seconds": round(result.seconds, 3), "log": str(job.log_path),
            "metrics": result.metrics, "reason": result.reason, "worker": worker, "returncode": result.returncode,
        }
        if getattr(result, "data_fingerprint", ""):
            attrs["data_fingerprint"] = result.data_fingerprint
        if trace:
            attrs["sprt"] = {"futility": trace, "delta": self.judge.delta}
        if job.role == "candidate" and ind.usage:
            attrs["usage"] = ind.usage
        if result.outcome == "interrupted":  # not a result: the run starts again on resume
            if job.seed == ind.screen_seed:
                ind.status = PENDING
            return ind
        number = self.archive.add(result.outcome, result.value, attrs, result.progress, result.seconds)
        ind.runs[job.seed] = Run(seed=job.seed, trial=number, value=result.value, outcome=result.outcome,
                                 progress=result.progress, metrics=result.metrics, seconds=result.seconds)
        if job.seed == ind.screen_seed:
            ind.status = {"complete": EVALUATED, "pruned": PRUNED}.get(result.outcome, FAILED)
            ind.reason = result.reason
        if ind.index == 0 and self.judge.noise is None and self.judge.fit(ind) is not None:
            self.archive.set_attr("noise", self.judge.noise.to_dict())  # type: ignore[union-attr]
            self.log(f"noise model: sigma {self.judge.noise.sigma_final:.4g} over {self.judge.noise.n} seeds; delta {self.judge.delta:.4g}")  # type: ignore[union-attr]
        if job.seed == ind.screen_seed and ind.status == EVALUATED and ind.index > 0 and not ind.decision:
            self._screen(ind)
        self.update_tests()
        return ind

    def _check_data(self, ind: Individual, result: Any) -> None:
        """Runs on other data are not comparable: a complete run must print the baseline's data fingerprint."""
        fp = getattr(result, "data_fingerprint", "")
        if result.outcome != "complete":
            return
        if not self.data_fingerprint:
            if ind.index == 0 and fp:  # the first baseline run that prints one sets it (written before its trial)
                self.data_fingerprint = fp
                self.archive.set_attr("data_fingerprint", fp)
            return
        if fp != self.data_fingerprint:
            result.outcome, result.value = "invalid", None
            result.reason = f"data fingerprint {fp or '(none printed)'} differs from the baseline's {self.data_fingerprint}"
            self.log(f"#{ind.index:<4} INVALID  {result.reason}")

    def _screen(self, ind: Individual) -> None:
        """After its screening run: promote (SPRT off), start a promotion test, or leave it untested."""
        verdict = self.judge.screen(ind, self.incumbent)  # type: ignore[arg-type]
        if verdict == "promote":
            self.promote(ind, {"decision": "accept", "rule": "single run (SPRT off)"})
        else:
            self._decide(ind, "testing" if verdict == "test" else "untested", {})

    def update_tests(self) -> None:
        for ind in sorted(self.pop.values(), key=lambda i: i.index):
            if ind.decision != "testing" or self.incumbent is None:
                continue
            if ind.index == self.incumbent.index:
                continue
            if self.judge.noiseless:  # identical replicates: one run says it all
                if self.judge.screen(ind, self.incumbent) == "promote":
                    self.promote(ind, {"decision": "accept", "rule": "single run (deterministic target)"})
                else:
                    self._decide(ind, "untested", {"rule": "single run (deterministic target)"})
                continue
            if not math.isfinite(self.judge.delta):
                continue
            d = self.judge.decide(ind, self.incumbent)
            info = {"llr": d.llr, "pairs": d.n, "mean_diff": d.mean_diff, "sd": d.sd, "trace": list(d.trace),
                    "bounds": list(d.bounds), "delta": self.judge.delta, "against": self.incumbent.index,
                    "seeds": [s for s in self.judge.seeds if s in ind.values() and s in self.incumbent.values()]}
            if d.decision == "accept":
                self.promote(ind, info | {"decision": "accept"})
            elif d.decision in ("reject", "inconclusive"):
                self._decide(ind, d.decision, info)
                self.log(f"#{ind.index:<4} promotion test: {d.decision} after {d.n} pairs (llr {d.llr:.2f})")
            elif not self.judge.needed(ind, self.incumbent) and not any(i == ind.index for i, _ in self.inflight):
                self._decide(ind, "inconclusive", info)

    def _decide(self, ind: Individual, decision: str, info: dict[str, Any]) -> None:
        ind.decision = decision
        self.decisions[str(ind.index)] = info | {"decision": decision, "time": time.time()}
        self.archive.set_attr("decisions", self.decisions)

    def promote(self, ind: Individual, info: dict[str, Any]) -> None:
        """Advance the mainline by one auditable commit: the candidate's tree, both lines as parents."""
        old = self.repo.ref(self.mainline_ref)
        prev = self.incumbent
        metric = self.cfg.target.metric
        was = f"{prev.value:.6g}" if prev is not None and prev.value is not None else "?"
        subject = f"evo: promote #{ind.index} ({metric} {was} -> {ind.value:.6g})"
        rule = info.get("rule") or f"paired SPRT, {info.get('pairs', 0)} pairs, llr {info.get('llr', 0.0):.3g}"
        body = (f"{ind.description}\n\nEvo-Study: {self.name}\nEvo-Index: {ind.index}\nEvo-Trial: {ind.runs[ind.screen_seed].trial}\n"
                f"Evo-Candidate: {ind.commit}\nEvo-Metric: {metric}\nEvo-Value: {ind.value!r}\n"
                f"Evo-Decision: {info.get('decision')} ({rule})\n")
        parents = [old] if old == ind.commit else [p for p in (old, ind.commit) if p]
        commit = self.repo.commit_tree(ind.tree, parents, f"{subject}\n\n{body}")
        self.repo.set_ref(self.mainline_ref, commit, old, reason=subject)
        self.incumbent = ind
        self.promotions.append({"index": ind.index, "commit": commit, "candidate": ind.commit, "value": ind.value,
                                "previous": prev.value if prev else None, "time": time.time(), "decision": info.get("decision")})
        self.archive.set_attr("promotions", self.promotions)
        self._decide(ind, "accept", info)
        self.log(f"#{ind.index:<4} PROMOTED to {self.mainline_ref[len('refs/heads/'):]}: {metric} {was} -> {ind.value:.6g}")

    def finished(self) -> bool:
        if self.made < self.strategy.planned and not self.out_of_tokens():
            return False
        if self.inflight:
            return False
        if any(i.status == PENDING and i.commit for i in self.pop.values()):
            return False
        return not any(i.decision == "testing" for i in self.pop.values())

    # -- setup ---------------------------------------------------------------------------------------
    def setup(self) -> None:
        cmd = self.cfg.target.setup
        if not cmd:
            return
        workdir = Path(tempfile.mkdtemp(prefix="evo-setup-"))
        log = self.logs / "setup.log"
        try:
            self.repo.export(self.archive.attrs["base_commit"], workdir)
            env = run_env(self.cfg.target.env_allow, {"EVO_CACHE": self.template.cache_dir, "EVO_TIME_BUDGET": f"{self.cfg.target.time_budget:g}", "PYTHONUNBUFFERED": "1"})
            res = run(RunSpec(command=python_command(cmd), cwd=workdir, env=env, timeout=max(3600.0, self.cfg.target.timeout), log_path=log, metric="__none__"))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if res.returncode != 0:
            rc = res.returncode
            why = res.reason if rc is None or res.outcome == "timeout" else f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}"
            raise EvoError(f"{self.cfg.source}: [target] setup = {cmd!r}: failed ({why}); see {log}")

    def summary(self) -> dict[str, Any]:
        inds = [i for i in self.pop.values() if i.index > 0]
        count = lambda s: sum(1 for i in inds if i.status == s)  # noqa: E731
        return {
            "study": self.name, "candidates": len(inds), "evaluated": count(EVALUATED), "failed": count(FAILED),
            "pruned": count(PRUNED), "duplicates": count(DUPLICATE), "runs": sum(len(i.runs) for i in self.pop.values()),
            "promotions": len(self.promotions), "baseline": self.pop[0].value,
            "incumbent": self.incumbent.index if self.incumbent else 0,
            "incumbent_value": self.incumbent.value if self.incumbent else None,
            "run_seconds": round(sum(r.seconds for i in self.pop.values() for r in i.runs.values()), 1),
        }


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)


class Logbook:
    """Per-generation statistics (a DEAP Logbook), stored in the study as they complete."""

    def __init__(self, study: Study) -> None:
        from deap import tools

        self.study = study
        self.book = tools.Logbook()
        self.book.header = ["gen", "evals", "best", "median", "failed", "pruned", "seconds"]
        for row in study.archive.attrs.get("logbook", []):
            self.book.record(**row)
        self.last = self.book[-1]["gen"] if len(self.book) else -1
        self.t0 = time.time()

    def update(self) -> list[dict[str, Any]]:
        """Record every generation that has just completed; return the new rows."""
        import numpy as np

        s = self.study
        new = []
        while True:
            g = self.last + 1
            members = [i for i in range(0, s.strategy.planned + 1) if s.strategy.generation_of(i) == g]
            if not members or max(members) >= s.next_index:
                break
            inds = [s.pop[i] for i in members if i in s.pop]
            if any(not i.finished for i in inds):
                break
            values = [i.value for i in inds if i.value is not None]
            everything = [i.value for i in s.pop.values() if i.value is not None and i.status == EVALUATED]
            pick = min if s.cfg.target.direction == "minimize" else max
            row = {
                "gen": g, "evals": len(inds), "best": pick(everything) if everything else None,
                "median": float(np.median(values)) if values else None,
                "failed": sum(1 for i in inds if i.status == FAILED), "pruned": sum(1 for i in inds if i.status == PRUNED),
                "seconds": round(time.time() - self.t0, 1),
            }
            self.book.record(**row)
            self.last = g
            new.append(row)
        if new:
            s.archive.set_attr("logbook", [dict(r) for r in self.book])
        return new
