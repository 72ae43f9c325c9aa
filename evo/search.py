"""The search loop: keep every worker busy, record every run, promote what the judge accepts.

It reads top to bottom: open the study (rebuilding state from the archive and refs), run the
setup once, then until the budget is spent: fill free workers with the most useful runs, wait
for one to finish, record it. Ctrl-C or SIGTERM stops the runs, records them as interrupted
and leaves a study that the same command resumes.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from evo.config import Config
from evo.errors import EvoError
from evo.lock import study_lock
from evo.report import Progress
from evo.study import Study
from evo.wiring import ExecutorFactory
from operators.base import ConflictResolver, Mutation


def search(cfg: Config, mutation: Mutation, resolver: ConflictResolver, make_executor: ExecutorFactory, out: Callable[[str], None] = print) -> dict[str, Any]:
    study = Study(cfg, mutation, resolver, log=out)
    with study_lock(study.repo.git_dir, study.name), _sigterm_as_interrupt():
        study.load()
        study.setup()
        executor = make_executor(study.repo, study.template)
        progress = Progress(study, executor, out)
        try:
            while not study.finished():
                while executor.free() and (job := study.next_job()) is not None:
                    executor.submit(job)
                if executor.busy() == 0:
                    break  # nothing running and nothing startable: the strategy has nothing more to plan
                for done in executor.wait(timeout=0.5):
                    progress.run_finished(done, study.pop[done.job.index])
                    study.record(done.job, done.result, done.worker, done.monitor_trace)
                    progress.recorded()
                progress.tick()
        except KeyboardInterrupt:
            out("stopping runs; the same command resumes this study")
            executor.cancel_all()
            for done in executor.wait(timeout=0.1):
                study.record(done.job, done.result, done.worker, done.monitor_trace)
            raise
        finally:
            executor.shutdown()
            try:
                if executor.utilisation() > 0:  # a session that ran nothing (a finished study re-run) says nothing
                    study.archive.set_attr("utilisation", round(executor.utilisation(), 4))
                study.close()
            except EvoError:
                if sys.exc_info()[0] is None:
                    raise  # the storage failed here first: say so
                # else the storage already failed (that error is on its way out): this second failure adds nothing
    summary = study.summary() | {"utilisation": executor.utilisation(), "wall_seconds": time.time() - study.started}
    progress.close(summary)
    return summary


class _sigterm_as_interrupt:
    """SIGTERM (a scheduler's stop) takes the same clean path as Ctrl-C."""

    def __enter__(self) -> None:
        self._old = signal.signal(signal.SIGTERM, self._raise)

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGTERM, self._old)

    @staticmethod
    def _raise(signum: int, frame: object) -> None:
        raise KeyboardInterrupt
