"""Toy targets with known optima, written as small git repositories.

Each target is a set of mutable Python files holding UPPER_CASE constants (what evo's offline
operator perturbs) and a protected evaluator:

    objective.py   def objective(C) -> float      the noise-free loss, minimum OPTIMUM (= 0)
                   def noise(C, seed) -> float     the seed-dependent noise (0 for most targets)
    run.py         reads the constants of the mutable files, prints `progress: <p> score: <v>`
                   lines (a learning-curve-like offset that shrinks to 0) and `score: <v>`

The benchmark imports the same objective.py source, so the value the script prints and the
value the benchmark computes from a commit's constants cannot drift apart. Every target
minimises `score`; the optimum is 0, so the regret of a configuration is its noise-free
objective.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evo.bench.common import git, make_repo

RUN_PY = '''\
"""Evaluator of a benchmark target (protected: candidates never change it)."""
import importlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from objective import STEPS, SLEEP, CURVE, objective, noise, jitter

MODULES = {modules!r}
C = {{}}
for name in MODULES:
    mod = importlib.import_module(name)
    C.update({{k: v for k, v in vars(mod).items() if k.isupper() and not k.startswith("_")}})
seed = int(os.environ.get("EVO_SEED", "0"))
f = objective(C) + noise(C, seed)
for k in range(1, STEPS + 1):
    p = k / STEPS
    time.sleep(SLEEP)
    print(f"progress: {{p:.3f}} score: {{f + CURVE * (1.0 - p) + jitter(C, seed, k):.6f}}", flush=True)
print("---")
print(f"score: {{f:.6f}}")
'''

COMMON = '''\
import math
import random

STEPS = {steps}
SLEEP = {sleep!r}
CURVE = 1.0  # the progress curve: final value + CURVE * (1 - progress), the same for every config
NOISE_SD = {noise_sd!r}  # sd of the config-specific part of the seed noise
SHARED_SD = {shared_sd!r}  # sd of the part every config shares on a seed (pairing cancels it)


def L(x, best):
    """Log-distance from the best value (x must be > 0; anything else is very bad)."""
    return math.log(x / best) if x > 0 else 20.0


def _key(C):
    return repr(sorted((k, float(v)) for k, v in C.items()))


def noise(C, seed):
    if not NOISE_SD and not SHARED_SD:
        return 0.0
    shared = random.Random(f"shared:{{seed}}").gauss(0.0, 1.0)
    own = random.Random(f"own:{{seed}}:{{_key(C)}}").gauss(0.0, 1.0)
    return SHARED_SD * shared + NOISE_SD * own


def jitter(C, seed, k):
    """Checkpoint-to-checkpoint wobble of the progress curve (noisy targets only)."""
    if not NOISE_SD:
        return 0.0
    return 0.5 * NOISE_SD * random.Random(f"jit:{{seed}}:{{k}}:{{_key(C)}}").gauss(0.0, 1.0) * (1.0 - k / STEPS) ** 0.5

'''


@dataclass(frozen=True)
class Target:
    name: str
    about: str
    files: dict[str, str]  # mutable files: path -> source with UPPER_CASE constants
    objective: str  # the body of objective.py after COMMON: defines objective(C)
    optimum_at: dict[str, Any]  # the constants at the optimum (documentation and tests)
    noise_sd: float = 0.0
    shared_sd: float = 0.0
    steps: int = 10
    sleep: float = 0.0
    optimum: float = 0.0
    ranges: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # TPE: name -> explicit range override
    durations: float = 0.0  # in-process runs: lognormal sigma of the duration (0 = one virtual second each)

    @property
    def mutable(self) -> list[str]:
        return sorted(self.files)

    @property
    def noisy(self) -> bool:
        return bool(self.noise_sd or self.shared_sd)

    def objective_source(self) -> str:
        return COMMON.format(steps=self.steps, sleep=self.sleep, noise_sd=self.noise_sd, shared_sd=self.shared_sd) + self.objective

    def repo_files(self) -> dict[str, str]:
        modules = [Path(p).stem for p in self.mutable]
        return {**self.files, "objective.py": self.objective_source(), "run.py": RUN_PY.format(modules=modules),
                "README.md": f"# benchmark target: {self.name}\n\n{self.about}\n"}

    def make_repo(self, path: Path) -> Path:
        return make_repo(path, self.repo_files())

    # -- the same maths in-process --------------------------------------------------------------------
    def _ns(self) -> dict[str, Any]:
        ns = getattr(self, "_cached_ns", None)
        if ns is None:
            ns = {}
            exec(compile(self.objective_source(), f"<{self.name}/objective.py>", "exec"), ns)  # noqa: S102 - our own source
            object.__setattr__(self, "_cached_ns", ns)
        return ns

    def true_value(self, C: dict[str, Any]) -> float:
        """The noise-free objective (= regret, since the optimum is 0)."""
        return float(self._ns()["objective"](dict(C)))

    def observed(self, C: dict[str, Any], seed: int) -> float:
        """What run.py prints as `score:` for these constants on EVO_SEED=seed."""
        ns = self._ns()
        return float(ns["objective"](dict(C)) + ns["noise"](dict(C), seed))

    def evaluate(self, src: Any, job: Any) -> Any:
        """What run.py prints for a candidate, in-process (the in-process executor's `evaluate`):
        the same objective.py maths, the same rounding, one virtual second per run."""
        from evo.executors.inprocess import Evaluation

        ns = self._ns()
        C = constants_of({p: src.read(p) for p in self.mutable})
        f = float(ns["objective"](dict(C)) + ns["noise"](dict(C), job.seed))
        steps = ns["STEPS"]
        curve = [(round(k / steps, 3), round(f + ns["CURVE"] * (1.0 - k / steps) + ns["jitter"](C, job.seed, k), 6)) for k in range(1, steps + 1)]
        return Evaluation(value=round(f, 6), seconds=self.duration(C, job.seed), progress=curve)

    def duration(self, C: dict[str, Any], seed: int) -> float:
        """Virtual seconds a run of these constants takes: lognormal (`durations` sigma), fixed per code and seed,
        so the order results come back in varies between candidates; one second each when `durations` is 0."""
        if not self.durations:
            return 1.0
        return math.exp(random.Random(f"{_key(C)}:{seed}").gauss(0.0, self.durations))

    def constants(self) -> dict[str, Any]:
        return constants_of(self.files)

    def constants_at(self, repo: Path, commit: str) -> dict[str, Any]:
        return constants_of({p: git(repo, "show", f"{commit}:{p}") + "\n" for p in self.mutable})

    # -- TPE's search space -----------------------------------------------------------------------------
    def space(self) -> dict[str, tuple[Any, ...]]:
        """name -> ('float', lo, hi, log) | ('int', lo, hi, log) | ('bool',): ranges around the baseline.

        Floats: [v/10, 10 v] on a log scale ([v/10, 0.999] for values in (0, 1), which the constants
        operator keeps inside (0, 1)); ints: [max(1, v // 8), 8 v] on a log scale; bools: both. Every
        optimum lies inside these ranges (checked by the tests)."""
        out: dict[str, tuple[Any, ...]] = {}
        for name, v in self.constants().items():
            if name in self.ranges:
                out[name] = self.ranges[name]
            elif isinstance(v, bool):
                out[name] = ("bool",)
            elif isinstance(v, int):
                out[name] = ("int", max(1, v // 8), max(2, 8 * v), True)
            elif 0 < v < 1:
                out[name] = ("float", v / 10, 0.999, True)
            else:
                out[name] = ("float", v / 10, v * 10, True)
        return out


def _key(C: dict[str, Any]) -> str:
    return repr(sorted((k, float(v)) for k, v in C.items()))


def constants_of(files: dict[str, str]) -> dict[str, Any]:
    from operators.constants import find_constants

    out: dict[str, Any] = {}
    for path in sorted(files):
        for c in find_constants(path, files[path]):
            out[c.name] = c.value
    return out


# -- the targets ------------------------------------------------------------------------------------------
SEPARABLE = Target(
    name="separable",
    about="Six independent constants, each with its own best value (a sum of squared log-distances).",
    files={"train.py": (
        "# hyperparameters of a pretend training run\n"
        "LR = 0.01  # best 0.002\n"
        "WEIGHT_DECAY = 0.3  # best 0.05\n"
        "WARMUP = 20  # best 50\n"
        "DROPOUT = 0.5  # best 0.1\n"
        "BETA = 2.0  # best 0.6\n"
        "DEPTH = 3  # best 6\n"
    )},
    objective=(
        "def objective(C):\n"
        "    return (L(C['LR'], 0.002) ** 2 + L(C['WEIGHT_DECAY'], 0.05) ** 2 + L(C['WARMUP'], 50) ** 2\n"
        "            + L(C['DROPOUT'], 0.1) ** 2 + L(C['BETA'], 0.6) ** 2 + 0.1 * (C['DEPTH'] - 6) ** 2)\n"
    ),
    optimum_at={"LR": 0.002, "WEIGHT_DECAY": 0.05, "WARMUP": 50, "DROPOUT": 0.1, "BETA": 0.6, "DEPTH": 6},
)

INTERACTING = Target(
    name="interacting",
    about=("Pairs that only improve together: the best LR scales with BATCH (LR* = 0.001 * BATCH / 32) and the best "
           "1 - MOMENTUM shrinks with EPOCHS (0.4 / EPOCHS); BATCH and EPOCHS have weak pulls of their own. A narrow, "
           "curved valley in log space."),
    files={"train.py": (
        "LR = 0.01\n"
        "BATCH = 32\n"
        "MOMENTUM = 0.5\n"
        "EPOCHS = 5\n"
        "CLIP = 3.0  # best 1.0, independent\n"
    )},
    objective=(
        "def objective(C):\n"
        "    b, e = max(C['BATCH'], 1), max(C['EPOCHS'], 1)\n"
        "    m = C['MOMENTUM']\n"
        "    valley1 = 3.0 * L(C['LR'], 0.001 * b / 32) ** 2 + 0.3 * L(b, 256) ** 2\n"
        "    valley2 = 3.0 * (L(1.0 - m, 0.4 / e) if m < 1 else 20.0) ** 2 + 0.3 * L(e, 16) ** 2\n"
        "    return valley1 + valley2 + L(C['CLIP'], 1.0) ** 2\n"
    ),
    optimum_at={"LR": 0.008, "BATCH": 256, "MOMENTUM": 0.975, "EPOCHS": 16, "CLIP": 1.0},
)

DECEPTIVE = Target(
    name="deceptive",
    about=("SCALE has a wide local basin at 0.5 (loss 0.4), downhill from the baseline 1.0, and the global optimum at "
           "6.0 behind a ridge (uphill steps from 1.0 get worse before they get better); two easy constants beside it."),
    files={"train.py": (
        "SCALE = 1.0\n"
        "DECAY = 0.3  # best 0.05\n"
        "WIDTH = 4  # best 8\n"
    )},
    objective=(
        "def objective(C):\n"
        "    s = C['SCALE']\n"
        "    basin = min(0.4 + 3.0 * L(s, 0.5) ** 2, 2.0 * L(s, 6.0) ** 2)\n"
        "    return basin + 0.5 * L(C['DECAY'], 0.05) ** 2 + 0.05 * (C['WIDTH'] - 8) ** 2\n"
    ),
    optimum_at={"SCALE": 6.0, "DECAY": 0.05, "WIDTH": 8},
)

NOISY = Target(
    name="noisy",
    about=("Three independent constants with seed noise: a shared per-seed offset (sd 0.3, cancelled by evo's paired "
           "seeds) and a config-specific part (sd 0.15); runs print 10 progress points 10 ms apart, so the futility "
           "test can stop clearly worse runs early."),
    files={"train.py": (
        "LR = 0.01  # best 0.003\n"
        "WEIGHT_DECAY = 0.2  # best 0.05\n"
        "WARMUP = 10  # best 30\n"
    )},
    objective=(
        "def objective(C):\n"
        "    return L(C['LR'], 0.003) ** 2 + L(C['WEIGHT_DECAY'], 0.05) ** 2 + L(C['WARMUP'], 30) ** 2\n"
    ),
    optimum_at={"LR": 0.003, "WEIGHT_DECAY": 0.05, "WARMUP": 30},
    noise_sd=0.15, shared_sd=0.3, sleep=0.01,
)

CROSSOVER = Target(
    name="crossover",
    about=("Two files. model.py and data.py each hold a switch (MODEL_TRICK, DATA_TRICK) that costs 0.2 alone and "
           "gains 1.5 with the other (net -1.1), beside two continuous constants each. A line that found one switch "
           "and a line that found the other are combined by one git merge; a single mutation must flip both at once."),
    files={
        "model.py": (
            "# model side\n"
            "MODEL_TRICK = False\n"
            "MODEL_LR = 0.02  # best 0.005\n"
            "MODEL_DEPTH = 3  # best 5\n"
        ),
        "data.py": (
            "# data side\n"
            "DATA_TRICK = False\n"
            "DATA_MIX = 0.5  # best 0.2\n"
            "DATA_REPEAT = 2  # best 4\n"
        ),
    },
    objective=(
        "def objective(C):\n"
        "    a, b = bool(C['MODEL_TRICK']), bool(C['DATA_TRICK'])\n"
        "    trick = (-1.5 if a and b else 0.0) + 0.2 * a + 0.2 * b\n"
        "    smooth = (L(C['MODEL_LR'], 0.005) ** 2 + 0.1 * (C['MODEL_DEPTH'] - 5) ** 2\n"
        "              + L(C['DATA_MIX'], 0.2) ** 2 + 0.1 * (C['DATA_REPEAT'] - 4) ** 2)\n"
        "    return smooth + trick + 1.1\n"
    ),
    optimum_at={"MODEL_TRICK": True, "DATA_TRICK": True, "MODEL_LR": 0.005, "MODEL_DEPTH": 5, "DATA_MIX": 0.2, "DATA_REPEAT": 4},
)

TARGETS: dict[str, Target] = {t.name: t for t in (SEPARABLE, INTERACTING, DECEPTIVE, NOISY, CROSSOVER)}


def tpe_params(trial: Any, space: dict[str, tuple[Any, ...]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, spec in space.items():
        if spec[0] == "bool":
            out[name] = trial.suggest_categorical(name, [False, True])
        elif spec[0] == "int":
            out[name] = trial.suggest_int(name, spec[1], spec[2], log=spec[3])
        else:
            out[name] = trial.suggest_float(name, spec[1], spec[2], log=spec[3])
    return out


def check(t: Target) -> None:
    """Self-checks: the optimum is 0 and inside TPE's ranges; the baseline is worse."""
    at = t.optimum_at
    assert abs(t.true_value(at) - t.optimum) < 1e-9, (t.name, t.true_value(at))
    assert t.true_value(t.constants()) > t.optimum + 0.1
    for name, spec in t.space().items():
        v = at[name]
        if spec[0] != "bool":
            assert spec[1] <= v <= spec[2], (t.name, name, v, spec)
    rng = random.Random(0)
    for _ in range(200):  # the optimum is a minimum nearby too
        c = {k: (v if isinstance(v, bool) else (v + rng.choice((-1, 1)) if isinstance(v, int) else v * math.exp(rng.gauss(0, 0.05))))
             for k, v in at.items()}
        assert t.true_value(c) >= t.optimum - 1e-9


# -- target generators: one instance per (family, seed), so nothing is tuned to one instance ------------------
# Every generated target minimises `score` with its optimum exactly 0 at `optimum_at`; the baseline is drawn
# around it. D(x, best) is the distance a term measures: log-distance for positive numbers, logit-distance for
# fractions in (0, 1) (the constants operator keeps those inside (0, 1)).
GEN_HELPERS = '''
def LG(x, best):
    """Logit-distance for fractions in (0, 1) (anything outside is very bad)."""
    if not 0.0 < x < 1.0:
        return 20.0
    return math.log(x / (1.0 - x)) - math.log(best / (1.0 - best))


def RIPPLE(d, period, height):
    """A bowl with ripples: 0 at d = 0, local minima near d = +-period, +-2 period, ..."""
    return height * (1.0 - math.cos(2.0 * math.pi * d / period))


def DECEIVE(x, local, best, depth, width):
    """Two basins on the log scale: a wide local one (value `depth`) and the global one (0) at `best`."""
    return min(depth + width * L(x, local) ** 2, width * L(x, best) ** 2)

'''

FAMILIES = ("smooth", "multimodal", "epistatic", "noisy", "large")
DURATION_SD = 0.5  # lognormal sigma of the simulated run durations (median 1 virtual second)


class _Gen:
    """Draws constants and writes their files and objective terms."""

    def __init__(self, rng: random.Random, files: list[str]) -> None:
        self.rng, self.files = rng, files
        self.text = {f: f"# {Path(f).stem}: hyperparameters of a pretend training run\n" for f in files}
        self.opt: dict[str, Any] = {}
        self.terms: list[str] = []
        self.n = 0

    def name(self, stem: str) -> str:
        self.n += 1
        return f"{stem}_{self.n}"

    def add(self, file: str, name: str, base: Any) -> None:
        self.text[file] += f"{name} = {base!r}\n"

    def positive(self, file: str, stem: str, spread: float = 1.6) -> tuple[str, str]:
        """A float > 0 (learning-rate-like): optimum at 10^U(-4, 1), baseline a factor e^U(0.5, spread) away."""
        r = self.rng
        name = self.name(stem)
        for _ in range(100):  # a baseline in (0, 1) stays there under the operator: so must the optimum
            best = float(f"{10 ** r.uniform(-4, 1):.3g}")
            base = float(f"{best * math.exp(r.choice((-1, 1)) * r.uniform(0.5, spread)):.3g}")
            if base >= 1 or best < 0.99:
                break
        self.add(file, name, base)
        self.opt[name] = best
        return name, f"L(C[{name!r}], {best!r})"

    def integer(self, file: str, stem: str) -> tuple[str, str]:
        r = self.rng
        name = self.name(stem)
        best = r.randint(4, 64)
        for _ in range(50):
            base = max(1, int(round(best * math.exp(r.choice((-1, 1)) * r.uniform(0.4, 1.4)))))
            if base != best and max(1, base // 8) <= best <= 8 * base:
                break
        self.add(file, name, base)
        self.opt[name] = best
        return name, f"L(max(C[{name!r}], 1), {best!r})"

    def fraction(self, file: str, stem: str) -> tuple[str, str]:
        r = self.rng
        name = self.name(stem)
        for _ in range(50):
            best = float(f"{r.uniform(0.05, 0.95):.3g}")
            lb = math.log(best / (1 - best)) + r.choice((-1, 1)) * r.uniform(0.6, 1.6)
            base = float(f"{1 / (1 + math.exp(-lb)):.3g}")
            if 0 < base < 1 and base / 10 <= best <= 0.999 and base != best:
                break
        self.add(file, name, base)
        self.opt[name] = best
        return name, f"LG(C[{name!r}], {best!r})"

    def smooth(self, file: str, w: float) -> None:
        kind = self.rng.choices(("positive", "integer", "fraction"), weights=(3, 2, 1))[0]
        _, d = getattr(self, kind)(file, {"positive": "RATE", "integer": "SIZE", "fraction": "FRAC"}[kind])
        self.terms.append(f"{w:.3g} * {d} ** 2")


def generate(family: str, seed: int) -> Target:
    """One instance of a family, drawn from `seed` (the same seed gives the same target)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown target family {family!r} (known: {', '.join(FAMILIES)})")
    rng = random.Random(f"evo-target:{family}:{seed}")
    noise_sd = shared_sd = 0.0
    if family in ("smooth", "noisy"):
        files = ["train.py"] if rng.random() < 0.5 else ["train.py", "model.py"]
        g = _Gen(rng, files)
        for _ in range(rng.randint(5, 8)):
            g.smooth(rng.choice(files), rng.uniform(0.2, 1.0))
        about = f"{g.n} independent constants (log/logit-distance bowls with random optima and weights) in {len(files)} file(s)"
        if family == "noisy":
            noise_sd, shared_sd = round(rng.uniform(0.05, 0.15), 3), 0.3
            about += f"; seed noise: shared sd {shared_sd} (pairing cancels it) and config-specific sd {noise_sd}, SPRT on"
    elif family == "multimodal":
        files = ["train.py", "model.py"]
        g = _Gen(rng, files)
        for _ in range(rng.randint(2, 3)):  # deceptive: a local basin downhill of the baseline, the optimum behind a ridge
            f = rng.choice(files)
            name = g.name("SCALE")
            for _ in range(100):
                best = float(f"{10 ** rng.uniform(-3, 1):.3g}")
                side = rng.choice((-1, 1))
                gap = rng.uniform(1.2, 2.0)  # the baseline is gap (log units) from the optimum ...
                base = float(f"{best * math.exp(side * gap):.3g}")
                if base >= 1 or best < 0.99:
                    break
            local = float(f"{base * math.exp(side * rng.uniform(0.3, 0.6)):.3g}")  # ... and the local basin beyond it
            depth, width = rng.uniform(0.3, 0.6), rng.uniform(0.5, 1.5)
            g.add(f, name, base)
            g.opt[name] = best
            g.terms.append(f"DECEIVE(C[{name!r}], {local!r}, {best!r}, {depth:.3g}, {width:.3g})")
        for _ in range(rng.randint(2, 3)):  # rugged: a bowl with ripples of random period
            f = rng.choice(files)
            _, d = g.positive(f, "RATE", spread=2.0)
            g.terms.append(f"({rng.uniform(0.1, 0.4):.3g} * {d} ** 2 + RIPPLE({d}, {rng.uniform(0.4, 0.9):.3g}, {rng.uniform(0.1, 0.3):.3g}))")
        for _ in range(2):
            g.smooth(rng.choice(files), rng.uniform(0.2, 0.8))
        about = "deceptive constants (a local basin downhill of the baseline, the optimum behind a ridge, random placement), rippled bowls, smooth constants"
    elif family == "epistatic":
        files = ["model.py", "data.py", "optim.py"]
        g = _Gen(rng, files)
        pairs = rng.randint(2, 3)
        for _ in range(pairs):  # switches in different files: each costs c alone, together they gain g
            fa, fb = rng.sample(files, 2)
            a, b = g.name("TRICK"), g.name("TRICK")
            c, gain = float(f"{rng.uniform(0.05, 0.2):.3g}"), float(f"{rng.uniform(0.6, 1.2):.3g}")
            g.add(fa, a, False)
            g.add(fb, b, False)
            g.opt[a] = g.opt[b] = True
            g.terms.append(f"({c!r} * (bool(C[{a!r}]) + bool(C[{b!r}])) - {gain!r} * (bool(C[{a!r}]) and bool(C[{b!r}])) + {gain!r} - 2 * {c!r})")
        for _ in range(rng.randint(1, 2)):  # coupled constants in different files: the best of one moves with the other
            fa, fb = rng.sample(files, 2)
            na, da = g.positive(fa, "RATE")
            nb, db = g.integer(fb, "SIZE")
            w = rng.uniform(1.0, 2.0)
            g.terms.append(f"{w:.3g} * ({da} - {db}) ** 2 + {0.3 * w:.3g} * {db} ** 2")
        for f in files:
            g.smooth(f, rng.uniform(0.2, 0.6))
        about = f"{pairs} pairs of switches in different files that only help together, coupled constants across files, smooth constants"
    else:  # large
        nfiles = rng.randint(3, 5)
        files = [f"part{k}.py" for k in range(1, nfiles + 1)]
        g = _Gen(rng, files)
        total = rng.randint(20, 50)
        for k in range(total - 4):
            g.smooth(rng.choice(files), 1.5 * math.exp(-k / 8) + 0.05)  # a few important constants, many minor ones
        for _ in range(2):
            fa, fb = rng.sample(files, 2)
            _, da = g.positive(fa, "RATE")
            _, db = g.positive(fb, "RATE")
            g.terms.append(f"{rng.uniform(0.5, 1.5):.3g} * ({da} - 0.5 * {db}) ** 2 + {rng.uniform(0.2, 0.6):.3g} * {db} ** 2")
        about = f"{g.n} constants over {nfiles} files: importance decays with rank, two coupled pairs across files"
    body = GEN_HELPERS + "def objective(C):\n    return (" + "\n            + ".join(g.terms) + ")\n"
    return Target(name=family, about=about, files=g.text, objective=body, optimum_at=dict(g.opt), noise_sd=noise_sd,
                  shared_sd=shared_sd, steps=10, sleep=0.0, durations=DURATION_SD)


def instance(name: str, seed: int) -> Target:
    """A family's instance for this seed, or a fixed target by name."""
    return generate(name, seed) if name in FAMILIES else TARGETS[name]
