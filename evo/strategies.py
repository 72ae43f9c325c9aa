"""Strategies decide who breeds next; they never run, commit or record anything.

Each is a pure function of the individuals evaluated so far and a seeded rng, so a resumed
search asks the same questions and gets the same answers. The loop asks `plan()` for the next
child and `planned` for the budget; the greedy ratchet and best-of-N share everything else with
the population strategy, so `evo compare` sets them side by side at equal budgets.
"""

from __future__ import annotations

import bisect
import heapq
import random
from dataclasses import dataclass
from typing import Protocol

from deap import base, tools

from evo.config import SearchConfig
from evo.individual import COMPLETE, Decision, Direction, Individual, Status


@dataclass(frozen=True)
class Plan:
    parents: tuple[Individual, ...]  # one for a mutation, two for a crossover
    operator: str  # "mutation" | "crossover" | "tpe" (a proposal of the TPE model of the study's candidates)
    generation: int
    mutate_after: bool = False  # crossover child also mutated (folded into the merge commit)
    step_scale: float = 1.0  # the constants operator's step is multiplied by this for this child (islands)


class Strategy(Protocol):
    name: str
    planned: int  # candidates (children) this search makes, the baseline excluded

    def generation_of(self, index: int) -> int: ...
    def plan(self, index: int, pop: dict[int, Individual], incumbent: Individual, rng: random.Random) -> Plan | None:
        """The next child, or None to wait for running evaluations (a generation barrier)."""
        ...


class _Fitness1(base.Fitness):
    weights = (1.0,)  # values are stored oriented: higher is better


class _Fitness2(base.Fitness):
    weights = (1.0, 1.0)


class _Member:
    """A DEAP-compatible view of an individual (DEAP selection reads `.fitness`)."""

    def __init__(self, ind: Individual, values: tuple[float, ...]) -> None:
        self.ind = ind
        self.fitness = (_Fitness1 if len(values) == 1 else _Fitness2)(values)


def evaluated(pop: dict[int, Individual], before_generation: int | None = None) -> list[Individual]:
    return [
        i for i in pop.values()
        if i.status == Status.EVALUATED and i.value is not None and (before_generation is None or i.generation < before_generation)
    ]


class Greedy:
    """autoresearch's ratchet: always mutate the head of the line, the best screened descendant of the
    mainline that no promotion test rejected (`head`).

    Breeding only from the confirmed mainline makes the search wait for every small gain to be
    proven on its own, and a single change rarely shows enough to be tested: the search stalls at
    the first step smaller than the gate. Breeding from the screened head is autoresearch's keep-if-
    better rule for the search itself, while the mainline moves only when the judge confirms the
    whole line's gain (several small steps add up to one that a test can see)."""

    name = "greedy"

    def __init__(self, cfg: SearchConfig, direction: Direction = Direction.MINIMIZE) -> None:
        self.planned = cfg.generations
        self.tpe_rate = cfg.tpe_rate
        self.direction = Direction(direction)
        self.heads = HeadTracker(self.direction)

    def generation_of(self, index: int) -> int:
        return index

    def plan(self, index: int, pop: dict[int, Individual], incumbent: Individual, rng: random.Random) -> Plan | None:
        parent = self.heads.head(pop, incumbent)
        if self.tpe_rate and rng.random() < self.tpe_rate:
            return Plan(parents=(parent,), operator="tpe", generation=index)
        return Plan(parents=(parent,), operator="mutation", generation=index)


def head(pop: dict[int, Individual], incumbent: Individual, direction: Direction) -> Individual:
    """The head of the incumbent's line: its best screened descendant (itself included) with no
    rejected candidate on the way from the incumbent to it.

    Screening runs share one seed, so comparing them is autoresearch's fixed-seed rule; a line whose
    head a promotion test rejected is abandoned from that candidate on (the search falls back to
    the best of what is left, the incumbent at worst), so a lucky run cannot hold the search.
    O(population); `HeadTracker` answers the same in O(1) amortised per child."""
    return HeadTracker(direction).head(pop, incumbent)


class Arrivals:
    """The individuals added to a population since the last look, without a scan of it: indices are
    handed out in order, and the study's population only grows."""

    def __init__(self) -> None:
        self.pop: dict[int, Individual] | None = None  # the population followed
        self.seen = -1  # the largest index taken in
        self.known = 0  # how many individuals are taken in

    def follow(self, pop: dict[int, Individual]) -> tuple[bool, list[int]]:
        """(whether this began again on another population: a new start, a test; the new indices)."""
        reset = pop is not self.pop or self.known > len(pop)
        if reset:
            self.pop, self.seen, self.known = pop, -1, 0
        new = []
        while self.seen + 1 in pop:
            self.seen += 1
            new.append(self.seen)
        self.known += len(new)
        if self.known != len(pop):  # a gap in the indices (never made by the engine): find the rest the slow way
            new += sorted(i for i in pop if i > self.seen)
            self.seen, self.known = max(pop), len(pop)
        return reset, new


class Family:
    """Who descends from whom, kept up to date as the population grows, so a plan does not walk the
    population (parents never change once a child exists): children by any parent and by first
    parent, the pairs already merged, and whether two lines are nested (memoised walks up)."""

    def __init__(self) -> None:
        self.arrivals = Arrivals()
        self.children: dict[int, list[int]] = {}  # by any parent
        self.offspring: dict[int, list[int]] = {}  # by first parent: the children that tried to improve on it
        self.merged: set[tuple[int, int]] = set()  # parent pairs of every merge made
        self._nested: dict[tuple[int, int], bool] = {}

    @property
    def pop(self) -> dict[int, Individual] | None:
        return self.arrivals.pop

    def update(self, pop: dict[int, Individual]) -> tuple[bool, list[int]]:
        """Take in the new individuals: (whether this began again on another population, the new indices)."""
        reset, new = self.arrivals.follow(pop)
        if reset:
            self.children, self.offspring, self.merged, self._nested = {}, {}, set(), {}
        for i in new:
            ps = pop[i].parent_indices
            for p in set(ps):
                if p != i:
                    self.children.setdefault(p, []).append(i)
            if ps and ps[0] != i:
                self.offspring.setdefault(ps[0], []).append(i)
            if len(ps) == 2:
                self.merged.add((min(ps), max(ps)))
        return reset, new

    def nested(self, a: int, b: int) -> bool:
        """One line contains the other (or they are the same): a merge would add nothing new."""
        if a == b:
            return True
        key = (min(a, b), max(a, b))
        hit = self._nested.get(key)
        if hit is None:
            assert self.pop is not None
            hit = self._nested[key] = descends(self.pop, key[1], key[0])
        return hit


def descends(pop: dict[int, Individual], young: int, old: int) -> bool:
    """`young` has `old` among its ancestors: a walk up its parents (both of a merge), never below
    `old` (parents always have smaller indices)."""
    todo, seen = [young], {young}
    while todo:
        for p in pop[todo.pop()].parent_indices:
            if p == old:
                return True
            if p > old and p not in seen and p in pop:
                seen.add(p)
                todo.append(p)
    return False


class Ranks:
    """The population strategy's survivors and hall of fame kept up to date as it grows, so a plan
    does not score the whole population (at 100,000 individuals that was most of a plan).

    An individual is *open* while what ranks it can still change: not finished, its promotion
    decision not made or under way, accepted (an incumbent gets runs on every test's seeds), or
    the baseline. A closed one never changes again, so of the closed only the `mu` best can ever
    be survivors and only those tied with the hall of fame's worst or better can be in it; the open
    ones (the runs in flight, the tests under way, the incumbents) are scored on every plan."""

    CLOSED = (Decision.UNTESTED, Decision.REJECT, Decision.INCONCLUSIVE)

    def __init__(self, strategy: Population) -> None:
        self.s = strategy
        self.arrivals = Arrivals()
        self.open: set[int] = set()
        self.closed: list[tuple[float, int]] = []  # (-score, index) of the closed evaluated, best first, the `mu` best
        self.screened: list[tuple[float, int]] = []  # (-screening value, index), best first: the hall of fame's candidates
        self.evaluated: set[int] = set()  # taken in as evaluated (a screening value never changes once it is in)

    def survivors(self, pop: dict[int, Individual], incumbent: Individual) -> list[_Member] | None:
        """`Population.survivors(evaluated(pop))` (None when nothing is evaluated), for a population
        whose order is its indices' (the engine's: children are added as they are made)."""
        reset, new = self.arrivals.follow(pop)
        if reset:
            self.open, self.closed, self.screened, self.evaluated = set(), [], [], set()
        self.open.update(new)
        screened, closed, oriented = [], [], self.s.direction.oriented
        for i in sorted(self.open):
            ind = pop[i]
            value = ind.value
            if ind.status == Status.EVALUATED and value is not None and i not in self.evaluated:
                self.evaluated.add(i)
                screened.append((-oriented(value), i))
            if ind.finished and i != incumbent.index and i != 0 and (ind.status != Status.EVALUATED or ind.decision in self.CLOSED):
                self.open.discard(i)
                if ind.status == Status.EVALUATED and value is not None:
                    closed.append((-self.s.score(ind), i))
        if closed:
            self.closed = heapq.nsmallest(self.s.mu, self.closed + closed)
        if screened and self.s.cfg.elites:  # the `elites` best and every entry tied with the worst of them
            both = self.screened + screened
            worst = heapq.nsmallest(self.s.cfg.elites, both)[-1][0]
            self.screened = sorted(k for k in both if k[0] <= worst)
        if not self.evaluated:
            return None
        live = [(-self.s.score(pop[i]), i) for i in self.open if pop[i].status == Status.EVALUATED and pop[i].value is not None]
        chosen = [pop[i] for _, i in heapq.nsmallest(self.s.mu, self.closed + live)]
        kept = {i.index for i in chosen}
        fame: set[int] = set()
        if self.s.cfg.elites:
            worst = self.screened[min(self.s.cfg.elites, len(self.screened)) - 1][0]
            fame = {i.index for i in best_screened([pop[i] for i in sorted(i for f, i in self.screened if f <= worst)], self.s.direction, self.s.cfg.elites)}
        return self.s.members(chosen) + (self.s.members([pop[i] for i in sorted(fame - kept)]) if fame - kept else [])



class HeadTracker:
    """`head()` kept up to date as the population grows, so a plan does not walk the population.

    The incumbent's line (its descendants through any parent, cut below rejected candidates) is
    walked again only when the incumbent changes or one of its candidates is rejected; otherwise each
    plan adds the new children and looks again at the few whose run or decision is still open."""

    def __init__(self, direction: Direction) -> None:
        self.direction = direction
        self.family = Family()
        self.inc = -1  # the incumbent the line below was walked from
        self.line: set[int] = set()
        self.open: set[int] = set()  # members whose screening run or promotion decision may still change
        self.best = -1
        self.best_runs = 0  # the head's runs when it was chosen: one more (it was run again) changes its mean

    def head(self, pop: dict[int, Individual], incumbent: Individual) -> Individual:
        reset, new = self.family.update(pop)
        if reset:
            self.inc, self.line, self.open, self.best = -1, set(), set(), -1
        if incumbent.index != self.inc or (self.best in pop and len(pop[self.best].runs) != self.best_runs):
            self._walk(pop, incumbent)
        else:
            for i in new:
                if any(p in self.line for p in pop[i].parent_indices if p != i):
                    self.line.add(i)
                    self.open.add(i)
            if any(pop[i].decision == Decision.REJECT for i in self.open):
                self._walk(pop, incumbent)
        for i in sorted(self.open):
            self._consider(pop[i], pop)
        self.best_runs = len(pop[self.best].runs)
        return pop[self.best]

    def _walk(self, pop: dict[int, Individual], incumbent: Individual) -> None:
        self.inc, self.best = incumbent.index, incumbent.index
        self.line, self.open, todo = set(), set(), [incumbent.index]
        while todo:
            i = todo.pop()
            if i in self.line or (i != incumbent.index and pop[i].decision == Decision.REJECT):
                continue
            self.line.add(i)
            self.open.add(i)
            todo.extend(self.family.children.get(i, ()))

    def _consider(self, ind: Individual, pop: dict[int, Individual]) -> None:
        # by the mean over its seeds: a head run again because its children kept losing to its one run
        # (Study._stuck_head) is judged by both (the mean of one run is its screening value)
        best = pop[self.best]
        mine, theirs = ind.mean(), best.mean()
        if ind.status == Status.EVALUATED and ind.value is not None and mine is not None and (
                theirs is None or self.direction.better(mine, theirs) or (mine == theirs and ind.index < best.index)):
            self.best = ind.index
        if ind.finished and (ind.status != Status.EVALUATED or ind.decision not in (Decision.NONE, Decision.TESTING)):
            self.open.discard(ind.index)  # nothing about it can change any more (but a rejection: see `head`)


class RandomSearch:
    """Best-of-N: every child is a mutant of the baseline."""

    name = "random"

    def __init__(self, cfg: SearchConfig) -> None:
        self.size = cfg.population
        self.planned = cfg.generations * cfg.population

    def generation_of(self, index: int) -> int:
        return 0 if index == 0 else 1 + (index - 1) // self.size

    def plan(self, index: int, pop: dict[int, Individual], incumbent: Individual, rng: random.Random) -> Plan | None:
        return Plan(parents=(pop[0],), operator="mutation", generation=self.generation_of(index))


class Population:
    """A steady-state population with selection pressure, crossover of non-nested lines by git merge.

    * Generation 0 is no wasted generation: at most one mutant of the baseline per worker; every
      later child is bred from what has been evaluated by then.
    * A parent is the head of the mainline's line (`HeadTracker`; the mainline's candidate when every
      gain is promoted at once; the best ranked when the head is not among the survivors) with
      probability `exploit`, else a
      draw among the `population` best by rank, weight (rank + 1) ** -rank_power divided by
      (1 + the children it already had that did not beat it): lines that keep failing breed less.
    * Ranking uses a candidate's mean over every seed it ran (`Individual.mean()`), so one lucky
      screening run does not outrank a candidate measured on several seeds.
    * A crossover (probability `crossover_rate`) takes a partner drawn the same way among the lines
      that neither contain nor are contained in the first parent (ancestry from `parent_indices`;
      a merge of nested lines is a copy of the newer one) and that beat their own parent (an
      improving side line, e.g. a sibling that lost the race to the incumbent with many workers;
      merging a line whose own change hurt brings that change in). With no such partner, it is a
      mutation.
    * Before any of that (`merge_side_lines`): an improving line the incumbent does not contain and
      was never merged with (with several workers, a sibling that improved but lost the race) is
      merged into the incumbent, best ranked first, once per pair.
    * With a `secondary_metric`, survivors and tournaments are NSGA-II's (DEAP), as before.
    """

    name = "population"

    def __init__(self, cfg: SearchConfig, direction: Direction, secondary_direction: Direction = Direction.MINIMIZE) -> None:
        self.cfg = cfg
        self.mu = cfg.population
        self.direction = Direction(direction)
        self.secondary = cfg.secondary_metric
        self.secondary_direction = Direction(secondary_direction)
        # budget in children: (population - 1) in generation 0, then `generations` of population each
        self.planned = (self.mu - 1) + cfg.generations * self.mu
        self.heads = HeadTracker(self.direction)
        self.ranks = Ranks(self)

    def generation_of(self, index: int) -> int:
        return 0 if index < self.mu else 1 + (index - self.mu) // self.mu

    def score(self, ind: Individual) -> float:
        """Higher is better: the mean over its seeds, oriented."""
        runs = ind.runs
        if len(runs) == 1:  # most have one run: its value is the mean (`Individual.mean` without its dict)
            r = next(iter(runs.values()))
            m = r.value if r.outcome == COMPLETE else None
        else:
            m = ind.mean()
        return self.direction.oriented(m if m is not None else ind.value)  # type: ignore[arg-type]

    def members(self, pool: list[Individual]) -> list[_Member]:
        out = []
        for ind in pool:
            vals: tuple[float, ...] = (self.score(ind),)
            if self.secondary:
                run = ind.runs.get(ind.screen_seed)
                sec = run.metrics.get(self.secondary) if run else None
                vals += (self.secondary_direction.oriented(sec) if sec is not None else float("-inf"),)
            out.append(_Member(ind, vals))
        return out

    def survivors(self, pool: list[Individual]) -> list[_Member]:
        """The mu best (plus-selection; ties to the earlier), best first; NSGA-II ranks two objectives.
        The hall of fame (the `elites` best on the primary metric) always survives."""
        if self.secondary:
            members = self.members(pool)
            chosen = tools.selNSGA2(members, min(self.mu, len(members)))
        else:  # one pass over the pool, members made only for the few kept (a plan at 100,000 individuals)
            chosen = self.members(heapq.nsmallest(self.mu, pool, key=lambda i: (-self.score(i), i.index)))
        kept = {m.ind.index for m in chosen}
        fame = {i.index for i in best_screened(pool, self.direction, self.cfg.elites)} if self.cfg.elites else set()
        elites = self.members([i for i in pool if i.index in fame - kept]) if fame - kept else []
        for m in elites:  # NSGA-II's tournament reads a crowding distance; an elite it did not keep has none:
            m.fitness.crowding_dist = float("inf")  # type: ignore[attr-defined]  # it is extreme on the primary, as a boundary point
        return chosen + elites

    def plan(self, index: int, pop: dict[int, Individual], incumbent: Individual, rng: random.Random) -> Plan | None:
        gen = self.generation_of(index)
        if gen == 0 and index <= self.cfg.workers and sum(
                1 for i in pop.values() if i.index > 0 and i.parent_indices == (0,) and i.generation == 0) < self.cfg.workers:
            return Plan(parents=(pop[0],), operator="mutation", generation=0)
        if gen > 0 and not self.cfg.steady_state:
            waiting = [i for i in pop.values() if i.generation < gen and not i.finished]
            if waiting:
                return None  # generational barrier: gen g breeds from gen < g, all finished
        pool: list[Individual] = []
        if not self.secondary and self.cfg.islands <= 1 and (self.cfg.steady_state or gen == 0):
            found = self.ranks.survivors(pop, incumbent)  # the same as below, kept up to date instead of made anew
            if found is None:
                return Plan(parents=(pop[0],), operator="mutation", generation=gen)
            members = found
        else:
            pool = evaluated(pop, before_generation=None if (self.cfg.steady_state or gen == 0) else gen)
            if not pool:
                return Plan(parents=(pop[0],), operator="mutation", generation=gen)
            members = self.survivors(pool)
        if self.secondary:
            a, b = self._nsga_pair(members, rng)
        else:
            ranked = [m.ind for m in members]
            # the head of the mainline's line (the mainline itself when every gain is promoted at once)
            # while it is among the survivors, else the best ranked: as for greedy, breeding only from
            # the confirmed mainline would make the search wait for each small gain to be proven
            lead = self.heads.head(pop, incumbent)
            family = self.heads.family
            fails = Failures(family, pop, self.direction)
            inc = next((i for i in ranked if i.index == lead.index), None) or next((i for i in ranked if i.index == incumbent.index), ranked[0])
            side = self.side_line(inc, ranked, pop, family)
            if side is not None:  # an improving line the incumbent lacks: merge it in first
                return Plan(parents=(inc, side), operator="crossover", generation=gen)
            island = self.island_of(index)
            if island is not None:  # this child's island: its own best (the incumbent once it stagnates)
                ranked = self.island_members(island, pool, inc, fails)
                inc = ranked[0]
            a = inc if rng.random() < self.cfg.exploit else self._draw(ranked, fails, rng)
            b = None
            if rng.random() < self.cfg.crossover_rate:
                partners = [i for i in ranked if not family.nested(a.index, i.index) and improved(i, pop, self.direction)]
                b = self._draw(partners, fails, rng) if partners else None
        scale = self.step_scale(index)
        if b is None and self.cfg.tpe_rate and rng.random() < self.cfg.tpe_rate:
            return Plan(parents=(a,), operator="tpe", generation=gen)
        if b is not None and a.index != b.index:
            return Plan(parents=(a, b), operator="crossover", generation=gen, mutate_after=rng.random() < self.cfg.mutation_rate,
                        step_scale=scale)
        return Plan(parents=(a,), operator="mutation", generation=gen, step_scale=scale)

    # -- islands: per-island lines and step sizes ----------------------------------------------
    def island_of(self, index: int) -> int | None:
        """Child `index`'s island (children are dealt round robin), or None with one population."""
        return index % self.cfg.islands if self.cfg.islands > 1 else None

    def step_scale(self, index: int) -> float:
        """The constants step multiplier of child `index`: 2 ** (step_spread * u), u evenly spaced in [-1, 1]
        over the islands (or, with one population, over as many slots as workers: the children in flight
        at one time carry different step sizes)."""
        if not self.cfg.step_spread:
            return 1.0
        k = self.cfg.islands if self.cfg.islands > 1 else max(2, self.cfg.workers)
        u = 2.0 * (index % k) / (k - 1) - 1.0
        return 2.0 ** (self.cfg.step_spread * u)

    def island_members(self, island: int, pool: list[Individual], inc: Individual, fails: Failures) -> list[Individual]:
        """The island's `population` best, best first. An island with no member yet starts from the incumbent;
        one whose best member has had `island_patience` children that did not beat it (stagnant) takes the
        incumbent in (migration of the global best)."""
        own = sorted((i for i in pool if i.index > 0 and i.index % self.cfg.islands == island),
                     key=lambda i: (-self.score(i), i.index))[: self.mu]
        if not own:
            return [inc]
        if own[0].index != inc.index and fails.get(own[0].index, 0) >= self.cfg.island_patience:
            return [inc] + [i for i in own if i.index != inc.index]
        return own

    def side_line(self, inc: Individual, ranked: list[Individual], pop: dict[int, Individual], family: Family) -> Individual | None:
        """The best survivor that beat its own parent, is not nested with the incumbent and was never
        merged with it: with several workers, a sibling that improved but lost the race (`merge_side_lines`)."""
        if not self.cfg.merge_side_lines:
            return None
        for i in ranked:
            if (not family.nested(inc.index, i.index) and improved(i, pop, self.direction)
                    and (min(inc.index, i.index), max(inc.index, i.index)) not in family.merged):
                return i
        return None

    def _draw(self, ranked: list[Individual], fails: Failures, rng: random.Random) -> Individual:
        weights = [(r + 1) ** -self.cfg.rank_power / (1 + fails.get(i.index, 0)) for r, i in enumerate(ranked)]
        return rng.choices(ranked, weights=weights, k=1)[0]

    def _nsga_pair(self, members: list[_Member], rng: random.Random) -> tuple[Individual, Individual | None]:
        # DEAP's selectors draw from the global `random`: seed it from our rng for reproducibility
        random.seed(rng.random())
        padded = (members * 4)[: max(4, (len(members) + 3) // 4 * 4)]
        picks = tools.selTournamentDCD(padded, 2)
        a, b = picks[0].ind, picks[1].ind
        return a, (b if rng.random() < self.cfg.crossover_rate else None)


def improved(ind: Individual, pop: dict[int, Individual], direction: Direction) -> bool:
    """ind beat its (first) parent: its own change was a gain where it was made (worth merging elsewhere)."""
    p = pop.get(ind.parent_indices[0]) if ind.parent_indices else None
    if p is None or p.index == ind.index:
        return False
    a, b = ind.mean(), p.mean()
    return a is not None and b is not None and direction.better(a, b)


class Failures:
    """index -> how many of its children did not beat it (failed, pruned, duplicate or no better), counted
    when asked (a plan asks about its few survivors) from the children by first parent."""

    def __init__(self, family: Family, pop: dict[int, Individual], direction: Direction) -> None:
        self.family, self.pop, self.direction = family, pop, direction
        self._memo: dict[int, int] = {}

    def get(self, index: int, default: int = 0) -> int:
        if index not in self._memo:
            self._memo[index] = self._count(index)
        return self._memo[index] or default

    def _count(self, index: int) -> int:
        p = self.pop.get(index)
        if p is None or p.value is None:
            return 0
        pm = p.mean()
        ref = pm if pm is not None else p.value
        n = 0
        for c in self.family.offspring.get(index, ()):
            child = self.pop[c]
            if not child.finished:
                continue
            cv = child.mean() if child.status == Status.EVALUATED else None
            n += cv is None or not self.direction.better(cv, ref)
        return n


def make_strategy(cfg: SearchConfig, direction: Direction) -> Strategy:
    if cfg.strategy == "greedy":
        return Greedy(cfg, direction)
    if cfg.strategy == "random":
        return RandomSearch(cfg)
    return Population(cfg, direction, Direction(cfg.secondary_direction))


def hall_of_fame(pop: dict[int, Individual], direction: Direction, k: int) -> list[Individual]:
    """The k best evaluated individuals ever (DEAP's HallOfFame), for elitism and reports."""
    return best_screened(evaluated(pop), Direction(direction), k)


def best_screened(inds: list[Individual], direction: Direction, k: int) -> list[Individual]:
    """DEAP's `HallOfFame(k).update(inds)` on the screening values, best first, ties exactly as it
    breaks them, without its deep copy of every entrant (the whole population, every plan)."""
    k = max(1, k)
    keys: list[float] = []  # ascending, as DEAP keeps them (worst first)
    items: list[Individual] = []  # best first
    for ind in inds:
        f = direction.oriented(ind.value)  # type: ignore[arg-type]
        if items and len(items) >= k:
            if not f > keys[0]:
                continue
            del keys[0], items[-1]
        i = bisect.bisect_right(keys, f)
        items.insert(len(items) - i, ind)
        keys.insert(i, f)
    return items

