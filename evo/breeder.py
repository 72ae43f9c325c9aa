"""The breeder: a strategy's plan -> a child commit, checked before any run is spent on it.

It asks the operators for new file contents (a mutation, or a git merge of two parents with its
conflicts resolved), rejects changes outside the mutable files and Python that does not compile,
re-proposes a child whose code already exists (a duplicate would spend a run on nothing new), and
writes the commit and its ref before anything else knows of it: a kill right after is adopted on
the next start from the commit's trailers (`adopt_orphans`).
"""

from __future__ import annotations

import random
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from evo import lineage
from evo.archive import Archive
from evo.errors import EvoError
from evo.gitrepo import GitRepo, matches
from evo.individual import DUPLICATE_OUTCOME, OPERATOR_FAILED, REJECTED, Direction, Individual, PopIndex, Role, Run, Status, candidate_attrs
from evo.runner import cap_artifacts
from evo.strategies import Plan
from operators.base import ConflictResolver, Context, Mutation, OperatorError, Parent

class Breeder:
    def __init__(self, repo: GitRepo, study: str, ns: str, mutable: tuple[str, ...], mutation: Mutation,
                 resolver: ConflictResolver, archive: Archive, artifacts: Path, *, seed: int, screen_seed: int,
                 metric: str, direction: Direction, program: str = "", token_budget: int = 0,
                 duplicate_retries: int = 3, log: Any = print, index: PopIndex | None = None) -> None:
        self.repo, self.study, self.ns, self.mutable = repo, study, ns, mutable
        self.index = index or PopIndex(direction)  # the coordinator's, kept up to date by it: trees and ranks without a scan
        self.mutation, self.resolver, self.archive, self.artifacts = mutation, resolver, archive, artifacts
        self.seed, self.screen_seed, self.metric, self.direction = seed, screen_seed, metric, direction
        self.program, self.token_budget, self.duplicate_retries, self.log = program, token_budget, duplicate_retries, log
        self.usage: dict[str, int] = dict(archive.attrs.get("usage", {"prompt_tokens": 0, "completion_tokens": 0}))

    def ref(self, index: int) -> str:
        return f"{self.ns}/c/{index:05d}"

    def branch(self, index: int) -> str:
        """The name to give git for the candidate: `refs/evo/<study>/c/NNNNN` (a branch name
        without refs/heads/ for studies that kept candidates as branches)."""
        ref = self.ref(index)
        return ref[len("refs/heads/"):] if ref.startswith("refs/heads/") else ref

    def out_of_tokens(self) -> bool:
        return bool(self.token_budget) and self.usage.get("prompt_tokens", 0) + self.usage.get("completion_tokens", 0) >= self.token_budget

    # -- one child ------------------------------------------------------------------------------
    def breed(self, idx: int, plan: Plan, pop: dict[int, Individual], rng: random.Random) -> Individual:
        """Make child `idx` from `plan`: PENDING (to run), DUPLICATE (an earlier tree) or FAILED (no run).

        `rng` is the one the strategy planned with: the first proposal draws from it, so a seeded
        search makes the same children; a re-proposal after a duplicate draws from its own seed."""
        ind = Individual(index=idx, commit="", tree="", parents=tuple(p.commit for p in plan.parents),
                         parent_indices=tuple(p.index for p in plan.parents), generation=plan.generation,
                         operator=self.mutation.name, screen_seed=self.screen_seed)
        pop[idx] = ind
        trees = self.index.trees  # tree -> the first individual with it (never a duplicate: it has no run of its own)
        artifacts: dict[str, str] = {}
        ctx = self.context(pop)
        try:
            for attempt in range(self.duplicate_retries + 1):
                if attempt:  # a merge is deterministic: its retry mutates the merged tree too
                    rng = random.Random(f"{self.seed}:{idx}:{attempt}")
                    plan = replace(plan, mutate_after=True) if plan.operator == "crossover" else plan
                tree, description, artifacts, usage = self._propose(plan, ind, rng, ctx, pop)
                self._count_usage(usage)
                ind.usage = {k: ind.usage.get(k, 0) + int(usage.get(k, 0)) for k in ("prompt_tokens", "completion_tokens")}
                if tree not in trees or self.out_of_tokens():
                    break
            self._validate(plan.parents[0], tree, artifacts)
        except OperatorError as e:
            self._count_usage(e.usage)
            ind.status, ind.reason, ind.description = Status.FAILED, e.reason, ind.description or e.reason
            outcome = REJECTED if e.reason.startswith(("touches protected", "syntax error", "no change")) else OPERATOR_FAILED
            self.archive.add(outcome, None, candidate_attrs(ind, self.branch(idx)) | {
                "seed": ind.screen_seed, "role": Role.CANDIDATE, "reason": e.reason,
                "artifacts": self.save_artifacts(idx, e.artifacts | artifacts), "usage": e.usage,
            })
            self.log(f"#{idx:<4} {ind.operator:<10} FAIL     {e.reason}")
            return ind
        ind.description = description
        ind.params = changed_constants(self.repo, plan.parents[0].tree, tree, self.mutable)
        msg = lineage.child_message(description, self.study, idx, ind.operator, plan.generation, ind.parent_indices)
        ind.commit = self.repo.commit_tree(tree, list(ind.parents), msg)
        ind.tree = tree
        self.repo.set_ref(self.ref(idx), ind.commit)  # the ref before the trial: a kill here is adopted
        ind.artifacts = self.save_artifacts(idx, artifacts | {"diff.patch": self.repo.patch(plan.parents[0].commit, ind.commit)})
        twin = trees.get(tree)
        if twin is not None:  # retries exhausted: the same code as an earlier individual, never re-run
            return self.duplicate(ind, pop[twin])
        ind.status = Status.PENDING
        return ind

    def _propose(self, plan: Plan, ind: Individual, rng: random.Random, ctx: Context,
                 pop: dict[int, Individual]) -> tuple[str, str, dict[str, str], dict[str, int]]:
        from operators.crossover import crossover

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
        ind.parents, ind.parent_indices = (a.commit,), (a.index,)  # a mutation, or nested lines: mutate instead
        ind.planned = "crossover" if plan.operator == "crossover" else ""  # the trial says the planned crossover fell back
        if plan.operator == "tpe":
            ind.operator = "tpe"
            prop = self.tpe_proposal(a, pop, rng)
            return self.repo.write_tree(a.commit, dict(prop.files)), prop.description, prop.artifacts, prop.usage
        ind.operator = self.mutation.name
        mutation = self.mutation
        if plan.step_scale != 1.0 and hasattr(mutation, "scaled"):  # an island's own step size
            mutation = mutation.scaled(plan.step_scale)
        prop = mutation.mutate(self.parent_view(a), rng, ctx)
        bad = [p for p in prop.files if not matches(p, self.mutable)]
        if bad:
            raise OperatorError(f"touches protected file(s): {', '.join(sorted(bad))}", prop.artifacts, prop.usage)
        return self.repo.write_tree(a.commit, dict(prop.files)), prop.description, prop.artifacts, prop.usage

    def tpe_proposal(self, parent: Individual, pop: dict[int, Individual], rng: random.Random) -> Any:
        """A child of `parent` proposed by TPE over the constants, fitted on every evaluated candidate (operators/tpe.py)."""
        from operators.tpe import TPEProposer

        if not hasattr(self.mutation, "candidates"):
            raise OperatorError("tpe children need [operators] mutation = 'constants' (it says which constants may change)")
        observed, running = [], []
        for o in sorted(pop.values(), key=lambda o: o.index):
            if not o.commit or o.reused_from is not None:
                continue
            if o.status == Status.EVALUATED and o.mean() is not None:
                observed.append((self.constants_of(o), float(o.mean())))  # type: ignore[arg-type]
            elif o.status in (Status.PENDING, Status.RUNNING) and o.tree:
                running.append(self.constants_of(o))
        base = self.parent_view(pop[0]).files
        return TPEProposer(self.mutation).propose(self.parent_view(parent), base, observed, running, str(self.direction), rng)  # type: ignore[arg-type]

    def constants_of(self, ind: Individual) -> dict[str, Any]:
        """The module-level constants of an individual's mutable Python files (cached by tree)."""
        from operators.constants import find_constants

        cache = self.__dict__.setdefault("_constants", {})
        if ind.tree not in cache:
            files = self.parent_view(ind).files
            cache[ind.tree] = {c.name: c.value for p in sorted(files) if p.endswith(".py") for c in find_constants(p, files[p])}
        return cache[ind.tree]

    def _validate(self, parent: Individual, tree: str, artifacts: dict[str, str]) -> None:
        """Nothing outside the mutable files changes; Python still compiles. Else no run is spent."""
        changed = self.repo.changed_paths(parent.tree, tree)
        bad = [p for p in changed if not matches(p, self.mutable)]
        if bad:
            raise OperatorError(f"touches protected file(s): {', '.join(sorted(bad))}", artifacts)
        for path in changed:
            if path.endswith(".py"):
                try:  # what py_compile does, without its files: compile() reads the source's encoding line too
                    compile(self.repo.read(tree, path), path, "exec", dont_inherit=True)
                except (SyntaxError, ValueError) as e:  # ValueError: a null byte in the source
                    msg = str(e).strip().splitlines()[-1]
                    raise OperatorError(f"syntax error in {path}: {msg}", artifacts) from None

    def duplicate(self, ind: Individual, twin: Individual) -> Individual:
        ind.reused_from = twin.index
        ind.status = Status.DUPLICATE
        reused = twin.value if twin.status == Status.EVALUATED else None
        if reused is not None:
            ind.runs[ind.screen_seed] = Run(seed=ind.screen_seed, trial=-1, value=reused, outcome=DUPLICATE_OUTCOME)
        self.archive.add(DUPLICATE_OUTCOME, reused, candidate_attrs(ind, self.branch(ind.index)) | {
            "seed": ind.screen_seed, "role": Role.CANDIDATE,
            "reused_from": twin.runs[twin.screen_seed].trial if twin.screen_seed in twin.runs else None,
            "reused_from_index": twin.index, "reason": f"same tree as #{twin.index}" + ("" if reused is not None else " (no result yet)"),
            "usage": ind.usage,
        }, params=ind.params)
        self.log(f"#{ind.index:<4} {ind.operator:<10} same code as #{twin.index}: not run again")
        return ind

    def adopt_orphans(self, pop: dict[int, Individual]) -> None:
        """Children committed just before a kill, with no trial yet: their trailers say what they are."""
        for ref, sha in self.repo.refs(f"{self.ns}/c/").items():
            try:
                idx = int(ref.rsplit("/", 1)[1])
            except ValueError:
                continue
            if idx in pop or idx == 0:
                continue
            c = lineage.read_child(self.repo, sha)
            if c is None:
                continue
            ind = pop[idx] = Individual(
                index=idx, commit=sha, tree=self.repo.tree_of(sha), parents=tuple(self.repo.out("log", "-1", "--format=%P", sha).split()),
                parent_indices=c.parents, operator=c.operator, description=c.description, generation=c.generation,
                screen_seed=self.screen_seed,
            )
            if ind.parents:  # the diff is written right after the ref: the kill may have come first
                ind.artifacts = self.save_artifacts(idx, {"diff.patch": self.repo.patch(ind.parents[0], sha)})
                ind.params = changed_constants(self.repo, self.repo.tree_of(ind.parents[0]), ind.tree, self.mutable)
            twin = min((o for o in pop.values() if o.tree == ind.tree and o.index < idx and o.commit and o.reused_from is None),
                       key=lambda o: o.index, default=None)
            if twin is not None:  # killed before its `duplicate` trial was written: write it now, never run it
                self.duplicate(ind, twin)

    # -- what operators see ---------------------------------------------------------------------
    def context(self, pop: dict[int, Individual]) -> Context:
        program = ""
        if self.program:
            try:
                program = Path(self.program).read_text(encoding="utf-8")
            except OSError as e:
                raise EvoError(f"[operators] program = {self.program}: cannot read: {e.strerror}") from None
        return Context(metric=self.metric, direction=str(self.direction), mutable=self.mutable, program=program,
                       history=history(pop, self.index))

    def parent_view(self, ind: Individual, tree: str | None = None) -> Parent:
        rev = tree or ind.commit
        paths = [p for p in self.repo.ls_files(rev) if matches(p, self.mutable)]
        return Parent(commit=ind.commit, files=self.repo.read_text(rev, paths), value=ind.value,
                      description=ind.description, trial=ind.runs[ind.screen_seed].trial if ind.screen_seed in ind.runs else None)

    # -- bookkeeping ----------------------------------------------------------------------------
    def save_artifacts(self, idx: int, artifacts: dict[str, str]) -> str:
        if not artifacts:
            return ""
        folder = self.artifacts / f"{idx:05d}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # untrusted text (a model's answer): made encodable and capped per proposal, the cut said in the file
            for name, text in cap_artifacts(artifacts).items():
                safe = re.sub(r"[^A-Za-z0-9._-]", "_", name) or "artifact"
                (folder / (safe if "." in safe else safe + ".txt")).write_text(text, encoding="utf-8")
        except OSError as e:  # a full disk or an unwritable results folder: the study stops, and resumes later
            raise EvoError(f"cannot write the artifacts of #{idx} under {folder}: {e.strerror}") from None
        return str(folder)

    def _count_usage(self, usage: dict[str, int]) -> None:
        if usage:
            for k in ("prompt_tokens", "completion_tokens"):
                self.usage[k] = self.usage.get(k, 0) + int(usage.get(k, 0))
            self.archive.set_attr("usage", self.usage)


def history(pop: dict[int, Individual], index: PopIndex, best: int = 5, recent: int = 20) -> str:
    """A compact results table for prompts, like autoresearch's results.tsv: the best children and the
    latest finished ones (from the index: a proposal reads ~25 individuals, not the population)."""
    lines = ["index\tvalue\tstatus\tdescription"]
    shown = set()
    for i in index.best(pop, best, skip=0) + index.recent(pop, recent):
        if i.index in shown:
            continue
        shown.add(i.index)
        val = f"{i.value:.6g}" if i.value is not None else "-"
        why = f" ({i.reason})" if i.status in (Status.FAILED, Status.PRUNED) and i.reason else ""
        lines.append(f"{i.index}\t{val}\t{i.status}{why}\t{i.description}")
    base = pop.get(0)
    head = f"baseline value: {base.value:.6g}\n" if base is not None and base.value is not None else ""
    return head + "\n".join(lines)


def changed_constants(repo: GitRepo, parent_tree: str, tree: str, mutable: tuple[str, ...]) -> dict[str, float]:
    """Numeric UPPER_CASE constants whose value differs from the parent's: recorded as Optuna params,
    so optuna-dashboard's slice and importance views have something to show."""
    from operators.constants import find_constants

    out: dict[str, float] = {}
    try:
        paths = [p for p in repo.changed_paths(parent_tree, tree) if matches(p, mutable) and p.endswith(".py")]
        for path in paths:
            old = {c.name: c.value for c in find_constants(path, repo.read(parent_tree, path).decode("utf-8", "replace"))}
            for c in find_constants(path, repo.read(tree, path).decode("utf-8", "replace")):
                if old.get(c.name) != c.value:
                    out[c.name] = float(c.value)
    except Exception:  # noqa: BLE001 - params are a convenience for viewers; a file deleted on one side has none
        return out
    return out

