"""Looking at studies: the `evo studies/trials/best/show/lineage/mainline/compare/plot/dashboard`
commands and the Python API behind them (`evo.load_study`).

Everything here only reads: the Optuna storage (trials and study attrs, see docs/archive.md)
and the study's git repository (diffs, the mainline's first-parent log). See docs/inspect.md.
The package imports nothing heavy until used, so `evo --help` stays fast.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EvoStudy", "Member", "TreeNode", "load_study", "study_names"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from evo.inspect import api

        return getattr(api, name)
    raise AttributeError(f"module 'evo.inspect' has no attribute {name!r}")
