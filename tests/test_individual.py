"""PopIndex.build indexes a whole population as noting each individual in turn does."""

from __future__ import annotations

import random

from evo.individual import COMPLETE, Decision, Direction, Individual, PopIndex, Run, Status


def _population(rng: random.Random, n: int) -> dict[int, Individual]:
    pop = {}
    for i in rng.sample(range(3 * n), n):  # gaps in the indices, inserted out of order
        status = rng.choice(list(Status))
        ind = Individual(index=i, commit=rng.choice(["", f"c{i}"]), tree=f"t{rng.randrange(n // 3)}", status=status,
                         decision=rng.choice(list(Decision)), reused_from=rng.choice([None, None, 0]))
        if status == Status.EVALUATED and rng.random() < 0.9:
            ind.runs[0] = Run(seed=0, trial=i, value=float(rng.randrange(20)), outcome=COMPLETE)  # ties: the earlier index ranks first
        pop[i] = ind
    return pop


def test_build_equals_noting_each_individual() -> None:
    rng = random.Random(3)
    for direction in Direction:
        pop = _population(rng, 300)
        built, noted = PopIndex(direction), PopIndex(direction)
        built.build(pop)
        for i in rng.sample(sorted(pop), len(pop)):  # any order
            noted.note(pop[i])
        for field in ("pending", "testing", "finished", "trees", "ranked", "top", "_ranked_as"):
            assert getattr(built, field) == getattr(noted, field), field
        assert built.ranked and built.trees and built.pending and built.testing  # the population exercises every part
        assert [i.index for i in built.best(pop, 5)] == [i for _, i in sorted(noted.ranked)[:5]]
