"""kill -9 through the Ray executor: the shipped shape of tests/test_faults.py, its runs on Ray.

The search is the one that ships (a population, the statistics on, two workers) with
`[executor] kind = "ray"`, connected to a local Ray instance this test starts (as a cluster
would be: evo only connects and disconnects). Each attempt is forked from a warm interpreter
that has imported evo and Ray, connects, and is killed with SIGKILL at a moment aimed at a phase
(start-up, a run going on a Ray worker, a run reported and not recorded), then at moments of any
kind, as in tests/test_faults.py. After every kill the archive and the refs must be consistent;
before the next attempt starts, the runs of the killed one and the processes they left in
sessions of their own must be gone (Ray ends a dead driver's tasks; evo's watchdog on the worker
is there for what Ray leaves); at the end the resumed study must be complete.

EVO_FAULT_RAY_KILLS (default 6) sets how many kills at the least; EVO_FAULT_SEED the draw.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from conftest import ROOT, write_config  # noqa: E402
from test_faults import (SEED, SHIPPED, Disk, Plain, Zygote, assert_complete, lingering_target, parent, ray_runs,  # noqa: E402
                         search_with_kills, shipped_delay, steer, wait_until)

pytestmark = pytest.mark.slow

RAY_KILLS = int(os.environ.get("EVO_FAULT_RAY_KILLS", "6"))
WANTED = ("startup", "run", "record")


@pytest.mark.timeout(900)
def test_kill_9_through_the_ray_executor(make_repo, tmp_path: Path) -> None:
    from evo.executors.ray import _keep_signal_handlers

    rng = random.Random(SEED + 2)
    # a driver that connects by address to a cluster with token authentication must say so (docs/ray.md)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "token"}
    zygote = Zygote(env, imports=("evo.executors.ray",))  # imports while Ray starts
    if ray.is_initialized():
        ray.shutdown()
    try:
        with _keep_signal_handlers():  # Ray's SIGTERM handler would outlive the test in this pytest process
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        address = ray.get_runtime_context().gcs_address
        repo = make_repo(files={"target.py": lingering_target(0.4)})  # each run leaves a process of its own session
        cfg = write_config(tmp_path / "evo.toml", repo, tmp_path / "evo.db", **SHIPPED,  # type: ignore[arg-type]
                           executor={"kind": "ray", "ray_address": address})
        cache = str(tmp_path / "results" / "cache")  # every run of this study has EVO_CACHE set to it
        disk = Disk(repo, tmp_path / "evo.db", "toy")

        def nothing_left() -> None:
            assert wait_until(lambda: not ray_runs(cache), 60, 0.05), f"runs of the killed search outlived it: {who(ray_runs(cache))}"

        def who(runs: dict[int, tuple[int, int, str]]) -> dict[int, str]:
            """Each stray run process with its command line, parent and the watchdogs still alive (this failure is
            rare: what it shows is what the next one needs to be understood)."""
            def read(path: str) -> str:
                try:
                    return Path(path).read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                except OSError:
                    return "?"
            dogs = [n for n in os.listdir("/proc") if n.isdigit() and "evo-ray-watchdog" in read(f"/proc/{n}/cmdline")]
            return {pid: f"{run} cmd={read(f'/proc/{pid}/cmdline')[:80]!r} ppid={parent(pid)} "
                         f"watchdogs alive={len(dogs)}" for pid, run in runs.items()}

        killed = search_with_kills(zygote.ready(), Plain(env), cfg, tmp_path, disk, rng, steer(WANTED, RAY_KILLS, rng),
                                   unit=disk.mean_run, delay=shipped_delay, limit=lambda u: 30 * u + 10,
                                   runs=lambda pid: ray_runs(cache), before=nothing_left, max_attempts=30, grow=1)
        nothing_left()
    finally:
        zygote.close()
        ray.shutdown()
    print(f"\n{killed.kills} kills in {killed.seconds:.0f}s ({killed.generations} generations); phases {dict(killed.phases)}; "
          f"modes {dict(killed.modes)}\n{' '.join(killed.log)}")
    assert_complete(disk, 4, killed.generations)
    assert killed.kills >= RAY_KILLS
    assert all(killed.phases[p] >= 1 for p in WANTED), killed.phases
