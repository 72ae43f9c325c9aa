"""The executor seam: where runs happen (local slots, or a Ray cluster). See base.py."""

from evo.executors.base import Done, Executor, Job, RunTemplate

__all__ = ["Done", "Executor", "Job", "RunTemplate"]
