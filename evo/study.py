"""A study: the coordinator of one search. It opens or resumes, picks the next run, records runs.

The decisions are elsewhere, each with one owner: the strategy plans who breeds, the breeder
makes and checks the child commit, the judge says what the statistics need and conclude, the
mainline promotes. Crash safety comes from the order of writes: a child's commit and ref before
its trial, a run's trial when the run ends, a promotion's mainline ref before the archive's copy.
On every start `load` rebuilds the state from the archive and the refs, so whatever moment a kill
-9 lands on, the next start sees a consistent state and re-runs only what never finished.
"""

from __future__ import annotations

import random
import re
import sys
import time
from pathlib import Path
from typing import Any

from evo import preflight
from evo.archive import Archive, mask_url, no_gc
from evo.breeder import Breeder
from evo.config import Config
from evo.errors import EvoError
from evo.executors.base import Job, RunTemplate
from evo.gitrepo import GitRepo
from evo.individual import COMPLETE, INTERRUPTED, Decision, Direction, Individual, PopIndex, Role, Run, Status, candidate_attrs, rebuild
from evo.judge import Judge
from evo.mainline import Mainline
from evo.runner import RunResult, default_progress_regex, kill_leftovers
from evo.strategies import Failures, make_strategy
from operators.base import ConflictResolver, Mutation


_PROGRESS_LIKE = re.compile(r"(?i)\b(progress|step|iter|epoch|batch)\b\D{0,20}\d")
# more loose candidate refs than this are packed into git's packed-refs file when a session ends: a start
# lists them all (adopt_orphans), 1.5 s for 100,000 loose refs at load 4 against 0.17 s packed. Not at a
# start: packing removes each loose ref's file (2.4 ms a ref on this machine's disk at load 6), which a
# session's end spreads over its own candidates
PACK_LOOSE_REFS = 1000


class Study:
    def __init__(self, cfg: Config, mutation: Mutation, resolver: ConflictResolver, log: Any = print) -> None:
        self.cfg, self.log, self.name = cfg, log, cfg.study.name
        self.repo = GitRepo(cfg.target.repo)
        preflight.check(cfg, self.repo)  # before the archive exists: a refused config leaves nothing behind
        for warning in preflight.warnings(self.repo):
            log(f"warning: {warning}")
        self.direction = Direction(cfg.target.direction)
        self.results = Path(cfg.study.results)
        self.logs = self.results / "logs" / self.name
        self.template = RunTemplate.from_target(cfg.target, cache_dir=str(self.results / "cache"))
        self.judge = Judge(cfg.sprt, self.direction, cfg.study.seed)
        self.strategy = make_strategy(cfg.search, self.direction)
        self.archive = Archive(cfg.study.storage, self.name, cfg.target.direction, metric=cfg.target.metric)
        # candidates' refs outside refs/heads (`git branch` lists only the mainline; thousands of
        # candidates clutter no branch list); a study started before keeps the namespace it recorded
        self.ns = str(self.archive.attrs.get("namespace") or f"refs/evo/{self.name}")
        self.index = PopIndex(self.direction)  # pending, testing, trees and ranks, kept per change: no scan per candidate
        self.mainline = Mainline(self.repo, f"refs/heads/evo/{self.name}/main", self.name, cfg.target.metric, self.judge, self.archive, log)
        self.breeder = Breeder(self.repo, self.name, self.ns, cfg.target.mutable, mutation, resolver, self.archive,
                               self.results / "artifacts" / self.name, seed=cfg.study.seed, screen_seed=self.judge.screen_seed,
                               metric=cfg.target.metric, direction=self.direction, program=cfg.operators.program,
                               token_budget=cfg.llm.token_budget, duplicate_retries=cfg.operators.duplicate_retries, log=log,
                               index=self.index)
        self.pop: dict[int, Individual] = {}
        self.inflight: set[tuple[int, int]] = set()
        self.next_index = 1
        self.data_fingerprint = ""  # what the baseline's runs print as `data_fingerprint:`; every run must match
        self.started = time.time()
        self.earlier_wall = 0.0  # wall-clock seconds of the study's earlier sessions
        self.spent_runs, self.spent_seconds = 0, 0.0  # runs recorded so far and their summed durations
        self.stop_reason = ""  # which budget ended the search ("" while none has)

    @property
    def incumbent(self) -> Individual | None:
        return self.mainline.incumbent

    @property
    def made(self) -> int:
        return self.next_index - 1

    @property
    def planned(self) -> int:
        """Children this search makes at most (`forever`: no bound but the budgets)."""
        return sys.maxsize if self.cfg.search.forever else self.strategy.planned

    def wall_seconds(self) -> float:
        return self.earlier_wall + time.time() - self.started

    def over_budget(self) -> str:
        """The budget that is spent (runs in flight count as spent), or ''. No run starts past it."""
        se = self.cfg.search
        if se.max_runs and self.spent_runs + len(self.inflight) >= se.max_runs:
            return f"max_runs = {se.max_runs}"
        if se.max_run_hours and self.spent_seconds >= se.max_run_hours * 3600:
            return f"max_run_hours = {se.max_run_hours:g}"
        if se.max_hours and self.wall_seconds() >= se.max_hours * 3600:
            return f"max_hours = {se.max_hours:g}"
        return ""

    # -- opening and resuming ----------------------------------------------------------------
    def load(self) -> None:
        """Open or resume the study: its state rebuilt from the archive and the refs."""
        with no_gc():  # millions of objects that form no cycles (each individual, run, decision): the collector's passes
            self._load()  # over them, triggered as they are built, were a third of a resume at 100,000 trials

    def _load(self) -> None:
        a = self.archive.attrs
        fingerprint = preflight.fingerprint(self.repo, a.get("base_commit") or self.repo.head(), self.cfg.target.mutable)
        if "base_commit" not in a:
            base = self.repo.head()
            config = self.cfg.to_dict()
            for sec, key in (("study", "storage"), ("llm", "base_url"), ("executor", "ray_address")):
                config[sec][key] = mask_url(config[sec][key])  # no credential in the archive
            try:
                for key, attrs in (("config", config), ("repo", str(self.repo.path)), ("namespace", self.ns),
                                   ("mainline", self.mainline.ref), ("metric", self.cfg.target.metric),
                                   ("direction", self.cfg.target.direction), ("strategy", self.strategy.name), ("seed", self.cfg.study.seed),
                                   ("mutable", self.repo.match(base, self.cfg.target.mutable)), ("fingerprint", fingerprint),
                                   ("created", time.time()), ("base_commit", base)):  # base_commit last: a study with it has all the rest
                    self.archive.set_attr(key, attrs)
            except BaseException:
                self.archive.delete_if_empty()  # a study that never got its base commit leaves nothing behind
                raise
        elif Path(a["repo"]).resolve() != self.repo.path:
            raise EvoError(f"study '{self.name}' belongs to the repository {a['repo']}, not {self.repo.path}")
        elif a.get("strategy") not in (None, self.strategy.name):
            raise EvoError(f"study '{self.name}' was run with strategy {a['strategy']}; use a new study name for {self.strategy.name}")
        elif a.get("fingerprint", fingerprint) != fingerprint:  # runs under other rules are not comparable
            raise EvoError(f"{self.cfg.source}: [target] mutable = {list(self.cfg.target.mutable)}: protects other files than study "
                           f"'{self.name}' was started with (fingerprint {fingerprint}, was {a['fingerprint']}); use a new study name")
        base = self.archive.attrs["base_commit"]
        if kill_leftovers(self.logs):  # runs a kill -9'd evo left running: they would compete with ours
            self.log("resume: killed the runs the last (killed) evo left behind")
        self.pop = rebuild(self.archive.trials(), self.judge.screen_seed)
        self.breeder.adopt_orphans(self.pop)
        if 0 not in self.pop:
            self.pop[0] = Individual(index=0, commit=base, tree=self.repo.tree_of(base), description="baseline", screen_seed=self.judge.screen_seed)
            self.repo.set_ref(self.breeder.ref(0), base)
        first = self.pop[0].runs.get(self.judge.screen_seed)
        if first is not None and first.outcome != COMPLETE:  # the baseline failed last time: try it again (it stops the search if it fails)
            del self.pop[0].runs[self.judge.screen_seed]
        self.next_index = max(self.pop) + 1
        ran = [r for i in self.pop.values() for r in i.runs.values() if r.trial >= 0]  # duplicates reuse a run: not spent
        self.spent_runs, self.spent_seconds = len(ran), sum(r.seconds for r in ran)
        self.earlier_wall = float(self.archive.attrs.get("wall_seconds", 0.0))
        self.mainline.reconcile(self.pop)
        self.judge.fit(self.pop[0])
        for ind in self.pop.values():
            for seed in sorted(ind.runs):
                self.judge.observe(ind, seed)
        self.data_fingerprint = str(self.archive.attrs.get("data_fingerprint", ""))
        for ind in sorted(self.pop.values(), key=lambda i: i.index):
            if ind.index > 0 and ind.status == Status.EVALUATED and not ind.decision:
                self.mainline.screen(ind, self.pop)  # killed between its trial and its decision: decide now, as `record` would have
        self.mainline.update_tests(self.pop, self.running())  # likewise for a test whose last run was recorded, not decided
        self.index.build(self.pop)

    def setup(self) -> None:
        preflight.setup(self.cfg, self.repo, self.archive.attrs["base_commit"], self.template, self.logs / "setup.log")

    # -- choosing work -------------------------------------------------------------------------
    def next_job(self) -> Job | None:
        """The most useful run to start now: baseline replicates, promotion tests, pending children, new children."""
        if self.over_budget():
            return None
        base = self.pop[0]
        for seed in self.judge.replicate_seeds:
            if seed not in base.runs and (0, seed) not in self.inflight:
                return self._job(base, seed, Role.BASELINE if seed == self.judge.screen_seed else Role.REPLICATE)
        if self.judge.screen_seed not in base.runs:
            return None  # everyone is compared with the baseline's screening run: wait for it
        incumbent = self.incumbent
        assert incumbent is not None
        for i in sorted(self.index.testing):
            for who, seed in self.judge.needed(self.pop[i], incumbent):
                if (who.index, seed) not in self.inflight:
                    return self._job(who, seed, Role.CONFIRM)
        for i in sorted(self.index.pending):
            ind = self.pop[i]
            if (ind.index, ind.screen_seed) not in self.inflight:
                return self._job(ind, ind.screen_seed, Role.CANDIDATE)
        stuck = self._stuck_head(incumbent)
        if stuck is not None:
            return self._job(stuck, self.judge.rerun_seed, Role.RERUN)
        while self.made < self.planned and not self.breeder.out_of_tokens():
            idx = self.next_index
            rng = random.Random(f"{self.cfg.study.seed}:{idx}")
            plan = self.strategy.plan(idx, self.pop, incumbent, rng)
            if plan is None:
                return None  # the strategy waits for running evaluations
            self.next_index += 1
            child = self.breeder.breed(idx, plan, self.pop, rng)
            self.index.note(child)
            if child.status == Status.PENDING:
                return self._job(child, child.screen_seed, Role.CANDIDATE)
        return None

    def _stuck_head(self, incumbent: Individual) -> Individual | None:
        """The head the strategy breeds from, when its one screening run may be a lucky one: it has had
        `max(3, workers)` finished children that did not beat it, is not the mainline and was never
        tested. It then runs once more, on a seed of its own (`Judge.rerun_seed`): the head is chosen by the mean
        over its seeds and its children's futility reference becomes its mean curve, so children truly
        as good as it stop being stopped against its luck (on model/ one such head was the parent of 182
        of 327 children, 178 of them stopped early, and the search made no promotion after child 83)."""
        heads = getattr(self.strategy, "heads", None)
        if heads is None or not self.judge.cfg.enabled or self.judge.noise is None or self.judge.noiseless:
            return None
        head = heads.head(self.pop, incumbent)
        seed = self.judge.rerun_seed
        if (head.index in (0, incumbent.index) or len(head.runs) != 1 or head.status != Status.EVALUATED
                or head.decision not in (Decision.NONE, Decision.UNTESTED) or (head.index, seed) in self.inflight):
            return None
        if Failures(heads.family, self.pop, self.judge.direction).get(head.index) < max(3, self.cfg.search.workers):
            return None
        return head  # the head tracker walks the line again once the run is in (the head's mean changes)

    def _job(self, ind: Individual, seed: int, role: Role) -> Job:
        self.inflight.add((ind.index, seed))
        if seed == ind.screen_seed:
            ind.status = Status.RUNNING
            self.index.note(ind)
        parent = self.pop.get(ind.parent_indices[0]) if ind.parent_indices else None
        mon = self.judge.monitor(parent) if role == Role.CANDIDATE and parent is not None else None
        return Job(index=ind.index, commit=ind.commit, seed=seed, role=role.value,
                   log_path=self.logs / f"{ind.index:05d}-seed{seed}.log", monitor=mon)

    def running(self) -> set[int]:
        return {i for i, _ in self.inflight}

    # -- recording runs -------------------------------------------------------------------------
    def record(self, job: Job, result: RunResult, worker: int, trace: list[tuple[float, float]]) -> Individual:
        ind = self.pop[job.index]
        self.inflight.discard((ind.index, job.seed))
        if result.outcome == INTERRUPTED:  # not a result: the run starts again on resume
            if job.seed == ind.screen_seed:
                ind.status = Status.PENDING
                self.index.note(ind)
            return ind
        self._check_data(ind, result)
        attrs: dict[str, Any] = candidate_attrs(ind, self.breeder.branch(ind.index)) | {
            "seed": job.seed, "role": job.role, "run_seconds": round(result.seconds, 3), "log": str(job.log_path),
            "metrics": result.metrics, "reason": result.reason, "worker": worker, "returncode": result.returncode,
        }
        if result.data_fingerprint:
            attrs["data_fingerprint"] = result.data_fingerprint
        if trace:
            attrs["sprt"] = {"futility": trace, "delta": self.judge.delta}
        if job.role == Role.CANDIDATE and ind.usage:
            attrs["usage"] = ind.usage
        params = ind.params if job.role == Role.CANDIDATE else {}  # one trial per candidate carries them: its screening run
        number = self.archive.add(result.outcome, result.value, attrs, result.progress, result.seconds, params=params)
        ind.runs[job.seed] = Run(seed=job.seed, trial=number, value=result.value, outcome=result.outcome,
                                 progress=result.progress, metrics=result.metrics, seconds=result.seconds)
        self.spent_runs += 1
        self.spent_seconds += result.seconds
        self.judge.observe(ind, job.seed)
        if job.seed == ind.screen_seed:
            ind.status = {COMPLETE: Status.EVALUATED, "pruned": Status.PRUNED}.get(result.outcome, Status.FAILED)
            ind.reason = result.reason
            if ind.index == 0 and ind.status != Status.EVALUATED:  # nothing can be compared with a baseline that does not run
                raise EvoError(f"the baseline ({self.archive.attrs['base_commit'][:8]}) did not run: {result.outcome}"
                               f"{': ' + result.reason if result.reason else ''}; see {job.log_path}")
        if ind.index == 0 and job.seed == self.judge.screen_seed and result.outcome == COMPLETE and not result.progress:
            self._no_progress_hint(result)
        if ind.index == 0 and self.judge.noise is None and not self.judge.noiseless and self.judge.fit(ind) is not None:
            noise = self.judge.noise
            assert noise is not None
            self.archive.set_attr("noise", noise.to_dict())
            monitor = f"futility over {len(noise.checkpoints)} checkpoints" if noise.checkpoints else "no progress checkpoints: no futility test"
            self.log(f"noise model: sigma {noise.sigma_final:.4g} over {noise.n} seeds; delta {self.judge.delta:.4g}; {monitor}")
        if job.seed == ind.screen_seed and ind.status == Status.EVALUATED and ind.index > 0 and not ind.decision:
            self.mainline.screen(ind, self.pop)
        self.mainline.update_tests(self.pop, self.running())
        for i in [ind.index, *self.index.testing]:  # the decisions those two can have changed
            self.index.note(self.pop[i])
        return ind

    def _no_progress_hint(self, result: RunResult) -> None:
        """A baseline with no progress point the regex reads: say what it printed that looks like progress."""
        looks = [ln for ln in result.log_tail.replace("\r", "\n").splitlines() if _PROGRESS_LIKE.search(ln)]
        regex = self.cfg.target.progress_regex or default_progress_regex(self.cfg.target.metric)
        if looks:
            self.log(f"note: the baseline printed {looks[-1].strip()[:120]!r}, which [target] progress_regex = {regex!r} does not read; "
                     "name groups (?P<progress>...) (0..1) and (?P<value>...) in a progress_regex that does, or the futility test has nothing to watch")
        else:
            self.log("note: the baseline printed no progress lines: runs are judged on their final metric alone (no futility test)")

    def _check_data(self, ind: Individual, result: RunResult) -> None:
        """Runs on other data are not comparable: a complete run must print the baseline's data fingerprint."""
        fp = result.data_fingerprint
        if result.outcome != COMPLETE:
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

    def finished(self) -> bool:
        """Nothing left to do: the children made and decided, or a budget spent with no run in flight."""
        if self.inflight:
            return False
        if (reason := self.over_budget()):
            self.stop_reason = reason
            return True
        if self.made < self.planned and not self.breeder.out_of_tokens():
            return False
        return not self.index.pending and not self.index.testing

    def close(self) -> None:
        """Record this session's wall time and why the search stopped (a budget, or the end of its plan)."""
        self.archive.set_attr("wall_seconds", round(self.wall_seconds(), 3))
        self.archive.set_attr("stopped", {"reason": self.stop_reason or "planned children made and decided",
                                          "runs": self.spent_runs, "run_seconds": round(self.spent_seconds, 3), "time": time.time()})
        self.archive.close()
        self.repo.pack_refs(f"{self.ns}/c", PACK_LOOSE_REFS)  # the next start lists them

    def summary(self) -> dict[str, Any]:
        inds = [i for i in self.pop.values() if i.index > 0]
        count = lambda s: sum(1 for i in inds if i.status == s)  # noqa: E731
        inc = self.incumbent
        return {
            "study": self.name, "candidates": len(inds), "evaluated": count(Status.EVALUATED), "failed": count(Status.FAILED),
            "pruned": count(Status.PRUNED), "duplicates": count(Status.DUPLICATE), "runs": sum(len(i.runs) for i in self.pop.values()),
            "promotions": len(self.mainline.promotions), "baseline": self.pop[0].value,
            "incumbent": inc.index if inc else 0, "incumbent_value": inc.value if inc else None,
            "run_seconds": round(self.spent_seconds, 1), "spent_runs": self.spent_runs, "stopped": self.stop_reason,
        }
