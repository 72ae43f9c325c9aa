"""The mainline: screening, promotion tests, promotion. The only writer of the mainline ref.

After a candidate's screening run the judge says whether it is worth a promotion test; a test
asks for runs on further seeds (the study schedules them) until the judge accepts, rejects or
gives up. An accepted candidate becomes one auditable commit on the mainline whose message names
every change since the previous mainline and the evidence for it. The ref moves before the
archive's copy of the promotion list, so a kill between the two is repaired by `reconcile`,
which reads the chain back from git. `promote_by_hand` is `evo promote`.
"""

from __future__ import annotations

import time
from typing import Any

from evo import lineage
from evo.archive import Archive
from evo.errors import EvoError
from evo.gitrepo import GitRepo
from evo.individual import Decision, Individual
from evo.judge import Judge

_MAX_DIFF_LINES = 60  # of the commit message's "changes since the previous mainline" section


class Mainline:
    def __init__(self, repo: GitRepo, ref: str, study: str, metric: str, judge: Judge, archive: Archive, log: Any = print) -> None:
        self.repo, self.ref, self.study, self.metric, self.judge, self.archive, self.log = repo, ref, study, metric, judge, archive, log
        self.decisions: dict[str, dict[str, Any]] = {}
        self.promotions: list[dict[str, Any]] = []
        self.incumbent: Individual | None = None
        # kept as decisions are made, so that no run's recording walks every decision of the study
        self.testing: set[int] = set()  # promotion tests under way
        self.tested: list[tuple[int, int]] = []  # decided tests: (candidate, the incumbent it was tested against)

    @property
    def branch(self) -> str:
        return self.ref[len("refs/heads/"):]

    def reconcile(self, pop: dict[int, Individual]) -> None:
        """Decisions from the archive; promotions from the ref (the truth), the archive brought in line."""
        base = self.archive.attrs["base_commit"]
        if self.repo.ref(self.ref) is None:
            self.repo.set_ref(self.ref, base, reason="evo: study mainline")
        self.decisions = dict(self.archive.attrs.get("decisions", {}))
        self.testing, self.tested = set(), []
        by_value = {d.value: d for d in Decision}  # the enum's constructor is slow at 100,000 decisions
        for key, d in self.decisions.items():
            ind = pop.get(int(key))
            if ind is not None:
                ind.decision = by_value[d.get("decision", "")]
                self._note(ind.index, d)
        recorded = {p["index"]: p for p in self.archive.attrs.get("promotions", [])}
        steps = lineage.mainline(self.repo, base, self.repo.ref(self.ref))
        self.promotions = []
        changed = len(steps) != len(recorded)
        recovered = []
        for step in steps:
            p = recorded.get(step.index) or {"index": step.index, "commit": step.commit, "candidate": step.trailers.get("Candidate", ""),
                                             "value": step.value, "time": time.time(), "decision": step.trailers.get("Decision", "")}
            self.promotions.append(p)
            if self.decisions.get(str(step.index), {}).get("decision") != Decision.ACCEPT:  # killed before the decision was written
                self.decisions[str(step.index)] = {"decision": Decision.ACCEPT.value, "recovered": True}
                self.testing.discard(step.index)
                recovered.append(step.index)
                changed = True
            if step.index in pop:
                pop[step.index].decision = Decision.ACCEPT
        if changed:
            self.archive.set_attr("promotions", self.promotions)
            for index in recovered:
                self.archive.set_row("decisions", index, self.decisions[str(index)])
        if self.promotions and self.archive.attrs.get("best") != self.best_label():
            self.archive.set_attr("best", self.best_label())
        last = self.promotions[-1]["index"] if self.promotions else 0
        self.incumbent = pop.get(last, pop[0])

    def best_label(self) -> str:
        """The study's `best` label: its confirmed result, the head of the mainline, in one line. Optuna's
        own "best trial" is the best single run (a lucky seed, or a confirmation run of a candidate
        that was never promoted); `optuna studies` and optuna-dashboard show this label beside it."""
        p = self.promotions[-1]
        text = f"{self.metric} {p['value']:.6g}: mainline #{p['index']} ({self.branch} {str(p['commit'])[:10]})"
        if p.get("gain") is not None and p.get("gain_ci"):
            lo, hi = p["gain_ci"]
            text += f"; last step's gain on fresh seeds {p['gain']:.4g} (95% interval {lo:.4g} to {hi:.4g})"
        return text

    # -- decisions ------------------------------------------------------------------------------
    def screen(self, ind: Individual, pop: dict[int, Individual]) -> None:
        """After its screening run: promote (statistics off), start a promotion test, or leave it untested."""
        assert self.incumbent is not None
        verdict = self.judge.screen(ind, self.incumbent, tuple(pop[i] for i in ind.parent_indices if i in pop))
        if verdict == "promote":
            self.promote(ind, {"decision": Decision.ACCEPT.value, "rule": self.judge.single_run_rule}, pop)
        else:
            self.decide(ind, Decision.TESTING if verdict == "test" else Decision.UNTESTED, {})

    def update_tests(self, pop: dict[int, Individual], running: set[int]) -> None:
        """Decide every promotion test whose evidence is in; `running` = individuals with runs in flight."""
        self.judge.note_tests(self.tests(pop))
        for ind in [pop[i] for i in sorted(self.testing)]:
            if ind.decision != Decision.TESTING or self.incumbent is None or ind.index == self.incumbent.index:
                continue
            if self.judge.noiseless:  # identical replicates: one run says it all
                if self.judge.screen(ind, self.incumbent) == "promote":
                    self.promote(ind, {"decision": Decision.ACCEPT.value, "rule": "single run (deterministic target)"}, pop)
                else:
                    self.decide(ind, Decision.UNTESTED, {"rule": "single run (deterministic target)"})
                continue
            d = self.judge.decide(ind, self.incumbent, self.tests(pop))
            if d is None:
                continue  # no noise model yet
            info = d.info | {"against": self.incumbent.index}
            if d.decision == "accept":
                self.promote(ind, info | {"decision": Decision.ACCEPT.value}, pop)
            elif d.decision in ("reject", "inconclusive"):
                self.decide(ind, Decision(d.decision), info)
                self.log(f"#{ind.index:<4} promotion test: {d.decision} after {d.n} pairs (llr {d.llr:.2f})")
            elif not self.judge.needed(ind, self.incumbent) and ind.index not in running:
                self.decide(ind, Decision.INCONCLUSIVE, info)

    def tests(self, pop: dict[int, Individual]) -> list[tuple[Individual, Individual]]:
        """Every promotion test of the study: (candidate, the incumbent it was tested against)."""
        out = [(pop[c], pop[a]) for c, a in self.tested if c in pop and a in pop]
        if self.incumbent is not None:
            out += [(pop[i], self.incumbent) for i in sorted(self.testing) if i in pop]
        return out

    def decide(self, ind: Individual, decision: Decision, info: dict[str, Any]) -> None:
        ind.decision = decision
        self.decisions[str(ind.index)] = info | {"decision": decision.value, "time": time.time()}
        self._note(ind.index, self.decisions[str(ind.index)])
        self.archive.set_row("decisions", ind.index, self.decisions[str(ind.index)])

    def _note(self, index: int, d: dict[str, Any]) -> None:
        if d.get("decision") == Decision.TESTING:
            self.testing.add(index)
            return
        self.testing.discard(index)
        if d.get("pairs") and d.get("against") is not None:
            self.tested.append((index, int(d["against"])))

    def promote(self, ind: Individual, info: dict[str, Any], pop: dict[int, Individual] | None = None) -> None:
        """Advance the mainline by one auditable commit: the candidate's tree, both lines as parents."""
        old = self.repo.ref(self.ref)
        prev = self.incumbent
        was = f"{prev.value:.6g}" if prev is not None and prev.value is not None else "?"
        assert ind.value is not None
        subject = f"evo: promote #{ind.index} ({self.metric} {was} -> {ind.value:.6g})"
        rule = info.get("rule") or f"paired SPRT, {info.get('pairs', 0)} pairs, llr {info.get('llr', 0.0):.3g}"
        body = ind.description
        if info.get("gain") is not None and info.get("gain_ci"):  # the honest figure: measured on seeds that did not select it
            lo, hi = info["gain_ci"]
            body += (f"\n\nGain over #{info.get('against', '?')} on {info['pairs']} fresh seed(s), not used to select it: "
                     f"{info['gain']:.4g} (95% interval {lo:.4g} to {hi:.4g}; {self.metric} units, positive = better; "
                     f"the pairs' own mean {info.get('gain_raw', info['gain']):.4g}, shrunk toward the study's other promotion "
                     "tests because a test that accepted is one whose pairs came out well)")
        body += inherited(ind, prev, pop or {}) + changes_since(self.repo, old, ind.commit)
        parents = [old] if old == ind.commit else [p for p in (old, ind.commit) if p]
        message = lineage.promotion_message(subject, body, study=self.study, index=ind.index, trial=ind.runs[ind.screen_seed].trial,
                                            candidate=ind.commit, metric=self.metric, value=ind.value,
                                            decision=f"{info.get('decision')} ({rule})")
        commit = self.repo.commit_tree(ind.tree, parents, message)
        self.repo.set_ref(self.ref, commit, old, reason=subject)  # the ref first: it is the truth `reconcile` reads
        self.incumbent = ind
        self.promotions.append({"index": ind.index, "commit": commit, "candidate": ind.commit, "value": ind.value,
                                "previous": prev.value if prev else None, "time": time.time(), "decision": info.get("decision"),
                                "gain": info.get("gain"), "gain_ci": info.get("gain_ci")})
        self.archive.set_attr("promotions", self.promotions)
        self.archive.set_attr("best", self.best_label())
        self.decide(ind, Decision.ACCEPT, info)
        self.log(f"#{ind.index:<4} PROMOTED to {self.branch}: {self.metric} {was} -> {ind.value:.6g}")


def inherited(ind: Individual, prev: Individual | None, pop: dict[int, Individual]) -> str:
    """The individuals whose changes arrive with `ind` besides its own (untested parents, a
    crossover's other line), each with what it changed: a commit message section. Without it a
    promotion described as one constant's step would hide the others it brings."""
    if prev is None or not pop:
        return ""
    others = sorted(lineage.ancestors(ind.index, pop) - lineage.ancestors(prev.index, pop) - {ind.index})
    if not others:
        return ""
    rows = [f"  #{i} {pop[i].description} ({pop[i].operator}, {pop[i].decision.value or 'not screened'})"
            for i in others]
    return "\n\nAlso brings the changes of (ancestors the previous mainline lacks, oldest first):\n" + "\n".join(rows)


def changes_since(repo: GitRepo, old: str | None, new: str) -> str:
    """The whole change from the previous mainline, inherited edits included (a commit message section)."""
    if not old:
        return ""
    lines = [ln for ln in repo.diff(old, new).splitlines() if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    if not lines:
        return ""
    shown = lines[:_MAX_DIFF_LINES] + ([f"... {len(lines) - _MAX_DIFF_LINES} more changed lines"] if len(lines) > _MAX_DIFF_LINES else [])
    files = repo.changed_paths(repo.tree_of(old), repo.tree_of(new))
    return f"\n\nChanges since the previous mainline ({', '.join(files)}):\n" + "\n".join(f"  {ln}" for ln in shown)


def promote_by_hand(storage: str, study_name: str, trial: int | None, to: str | None) -> str:
    """`evo promote`: put a trial's code on the study's mainline or on a branch of the user's.

    Refuses to move a branch checked out in any worktree (that would change files under the
    user's feet) and to overwrite work on the target branch: the candidate is fast-forwarded or
    merged; a conflicting merge is refused, never forced."""
    archive = Archive(storage, study_name)
    attrs = archive.attrs
    if "repo" not in attrs:
        raise EvoError(f"study '{study_name}' was not made by evo search")
    repo = GitRepo(attrs["repo"])
    trials = {t.number: t for t in archive.trials()}
    if trial is None:
        accepted = [int(i) for i, d in attrs.get("decisions", {}).items() if d.get("decision") == Decision.ACCEPT]
        if not accepted:
            raise EvoError(f"study '{study_name}' has no accepted candidate; name one with --trial N")
        index = accepted[-1]
        t = next(t for t in trials.values() if t.user_attrs.get("index") == index and t.user_attrs.get("role") == "candidate")
    else:
        if trial not in trials:
            raise EvoError(f"study '{study_name}' has no trial {trial}")
        t = trials[trial]
    commit = t.user_attrs.get("commit")
    if not commit:
        raise EvoError(f"trial {t.number} has no commit (its proposal failed: {t.user_attrs.get('reason', '')})")
    if t.value is None:
        raise EvoError(f"trial {t.number} has no value (outcome {t.user_attrs.get('outcome', '?')}): only a run that completed can be promoted")
    target = f"refs/heads/{to}" if to else attrs["mainline"]
    if target in repo.checked_out_branches():
        raise EvoError(f"branch {target[len('refs/heads/'):]} is checked out in a working tree; check out another branch first")
    old = repo.ref(target)
    metric = attrs.get("metric", "value")
    subject = f"evo: promote #{t.user_attrs.get('index')} by hand ({metric} {t.value:.6g})"
    body = t.user_attrs.get("description", "") + changes_since(repo, old, commit)
    message = lineage.promotion_message(subject, body, study=study_name, index=t.user_attrs.get("index"), trial=t.number,
                                        candidate=commit, metric=metric, value=t.value, decision="by hand")
    tree = repo.tree_of(commit)
    if old is None:
        new = repo.commit_tree(tree, [commit], message)
    elif repo.is_ancestor(commit, old):
        return f"{target[len('refs/heads/'):]} already contains {commit[:8]}"
    elif repo.is_ancestor(old, commit) or target == attrs["mainline"]:
        new = repo.commit_tree(tree, [old, commit], message)
    else:
        merged = repo.merge_tree(old, commit)
        if merged.conflicts:
            raise EvoError(f"merging {commit[:8]} into {to} conflicts in {', '.join(merged.conflicts)}; merge it yourself")
        new = repo.commit_tree(merged.tree, [old, commit], message)
    repo.set_ref(target, new, old, reason=subject)
    if target == attrs["mainline"]:
        promotions = list(attrs.get("promotions", []))
        promotions.append({"index": t.user_attrs.get("index"), "commit": new, "candidate": commit, "value": t.value,
                           "previous": None, "time": time.time(), "decision": "by hand"})
        archive.set_attr("promotions", promotions)
    return f"{target[len('refs/heads/'):]} -> {new[:8]} (trial {t.number}, {metric} {t.value:.6g})"
