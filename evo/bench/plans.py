"""What one plan of the population strategy costs as the population grows (prints figures).

    python -m evo.bench.plans 1000 10000 100000

A synthetic history stands in for a long study: each child is a mutant of the best so far (nine in
ten) or of a random individual, three in ten are merges, every one screened and decided. The
strategy is the shipped `Population` with configs/default.toml's selection settings; the first plan
after a start takes the whole population in (as after a resume), the next ones only what changed.
"""

from __future__ import annotations

import random
import sys
import time

from evo.config import SearchConfig
from evo.individual import Decision, Direction, Individual, Run, Status
from evo.strategies import Population


def history(n: int, seed: int = 0) -> dict[int, Individual]:
    rng = random.Random(seed)
    pop = {0: Individual(index=0, commit="c0", tree="t0", generation=0, status=Status.EVALUATED)}
    pop[0].runs[0] = Run(seed=0, trial=0, value=10.0, outcome="complete")
    best = 0
    for i in range(1, n):
        first = best if rng.random() < 0.9 else rng.randrange(i)
        parents = (first, rng.randrange(i)) if rng.random() < 0.3 else (first,)
        if len(parents) == 2 and parents[0] == parents[1]:
            parents = (first,)
        value = pop[first].runs[0].value + rng.gauss(0.02, 0.1)  # type: ignore[operator]
        child = Individual(index=i, commit=f"c{i}", tree=f"t{i}", generation=1 + i // 8, status=Status.EVALUATED,
                           parent_indices=parents, decision=Decision.UNTESTED)
        child.runs[0] = Run(seed=0, trial=i, value=value, outcome="complete")
        pop[i] = child
        if value < pop[best].runs[0].value:  # type: ignore[operator]
            best = i
    return pop


def measure(n: int, plans: int = 20) -> dict[str, float]:
    pop = history(n)
    strat = Population(SearchConfig(strategy="population", population=8, generations=10**6, workers=2, exploit=0.9,
                                    crossover_rate=0.3, merge_side_lines=True), Direction.MINIMIZE)
    rng = random.Random(1)
    t0 = time.perf_counter()
    strat.plan(n, pop, pop[0], rng)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for k in range(plans):
        strat.plan(n + 1 + k, pop, pop[0], rng)
    return {"individuals": n, "first_plan_ms": 1000 * first, "plan_ms": 1000 * (time.perf_counter() - t0) / plans}


def main(argv: list[str]) -> None:
    for n in [int(a) for a in argv] or [1000, 10000, 100000]:
        m = measure(n)
        load = open("/proc/loadavg").read().split()[0] if sys.platform.startswith("linux") else "?"
        print(f"{m['individuals']:>7} individuals: {m['plan_ms']:.2f} ms a plan (the first after a start {m['first_plan_ms']:.0f} ms), load {load}",
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
