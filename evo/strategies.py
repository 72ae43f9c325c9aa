"""Strategies decide who breeds next; they never run, commit or record anything.

Each is a pure function of the individuals evaluated so far and a seeded rng, so a resumed
search asks the same questions and gets the same answers. The loop asks `plan()` for the next
child and `planned` for the budget; the greedy ratchet and best-of-N share everything else with
the population strategy, so `evo compare` sets them side by side at equal budgets.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

from deap import base, tools

from evo.config import SearchConfig
from evo.individual import Direction, Individual, Status


@dataclass(frozen=True)
class Plan:
    parents: tuple[Individual, ...]  # one for a mutation, two for a crossover
    operator: str  # "mutation" | "crossover"
    generation: int
    mutate_after: bool = False  # crossover child also mutated (folded into the merge commit)


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
    """autoresearch's ratchet: always mutate the current best confirmed commit."""

    name = "greedy"

    def __init__(self, cfg: SearchConfig) -> None:
        self.planned = cfg.generations

    def generation_of(self, index: int) -> int:
        return index

    def plan(self, index: int, pop: dict[int, Individual], incumbent: Individual, rng: random.Random) -> Plan | None:
        return Plan(parents=(incumbent,), operator="mutation", generation=index)


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
    """(mu + lambda) with DEAP tournament (or NSGA-II) selection, crossover by git merge."""

    name = "population"

    def __init__(self, cfg: SearchConfig, direction: Direction, secondary_direction: Direction = Direction.MINIMIZE) -> None:
        self.cfg = cfg
        self.mu = cfg.population
        self.direction = Direction(direction)
        self.secondary = cfg.secondary_metric
        self.secondary_direction = Direction(secondary_direction)
        # generation 0: the baseline plus (population - 1) mutants of it; then `generations` of population each
        self.planned = (self.mu - 1) + cfg.generations * self.mu

    def generation_of(self, index: int) -> int:
        return 0 if index < self.mu else 1 + (index - self.mu) // self.mu

    def members(self, pool: list[Individual]) -> list[_Member]:
        out = []
        for ind in pool:
            vals: tuple[float, ...] = (self.direction.oriented(ind.value),)  # type: ignore[arg-type]
            if self.secondary:
                run = ind.runs.get(ind.screen_seed)
                sec = run.metrics.get(self.secondary) if run else None
                vals += (self.secondary_direction.oriented(sec) if sec is not None else float("-inf"),)
            out.append(_Member(ind, vals))
        return out

    def survivors(self, pool: list[Individual]) -> list[_Member]:
        """The mu best (plus-selection); NSGA-II ranks two objectives. The hall of fame (the
        `elites` best on the primary metric) always survives, whatever the secondary says."""
        members = self.members(pool)
        select = tools.selNSGA2 if self.secondary else tools.selBest
        chosen = select(members, min(self.mu, len(members)))
        kept = {m.ind.index for m in chosen}
        fame = {i.index for i in hall_of_fame({m.ind.index: m.ind for m in members}, self.direction, self.cfg.elites)} if self.cfg.elites else set()
        return chosen + [m for m in members if m.ind.index in fame - kept]

    def plan(self, index: int, pop: dict[int, Individual], incumbent: Individual, rng: random.Random) -> Plan | None:
        gen = self.generation_of(index)
        if gen == 0:
            return Plan(parents=(pop[0],), operator="mutation", generation=0)
        if not self.cfg.steady_state:
            waiting = [i for i in pop.values() if i.generation < gen and not i.finished]
            if waiting:
                return None  # generational barrier: gen g breeds from gen < g, all finished
        pool = evaluated(pop, before_generation=None if self.cfg.steady_state else gen)
        if not pool:
            return Plan(parents=(pop[0],), operator="mutation", generation=gen)
        members = self.survivors(pool)
        # DEAP's selectors draw from the global `random`: seed it from our rng for reproducibility
        random.seed(rng.random())
        if self.secondary:  # binary tournaments on Pareto rank, then crowding distance
            padded = (members * 4)[: max(4, (len(members) + 3) // 4 * 4)]
            picks = tools.selTournamentDCD(padded, 2)
        else:
            k = min(self.cfg.tournament_size, len(members))
            picks = tools.selTournament(members, 1, tournsize=k)
            # the second parent comes from a tournament among the others, so a small pool still crosses over
            others = [m for m in members if m.ind.index != picks[0].ind.index] or members
            picks += tools.selTournament(others, 1, tournsize=min(k, len(others)))
        a, b = picks[0].ind, picks[1].ind
        if a.index != b.index and rng.random() < self.cfg.crossover_rate:
            return Plan(parents=(a, b), operator="crossover", generation=gen, mutate_after=rng.random() < self.cfg.mutation_rate)
        return Plan(parents=(a,), operator="mutation", generation=gen)


def make_strategy(cfg: SearchConfig, direction: Direction) -> Strategy:
    if cfg.strategy == "greedy":
        return Greedy(cfg)
    if cfg.strategy == "random":
        return RandomSearch(cfg)
    return Population(cfg, direction, Direction(cfg.secondary_direction))


def hall_of_fame(pop: dict[int, Individual], direction: Direction, k: int) -> list[Individual]:
    """The k best evaluated individuals ever (DEAP HallOfFame), for elitism and reports."""
    hof = tools.HallOfFame(max(1, k))
    direction = Direction(direction)
    members = [_Member(i, (direction.oriented(i.value),)) for i in evaluated(pop)]  # type: ignore[arg-type]
    if members:
        hof.update(members)
    return [m.ind for m in hof]

