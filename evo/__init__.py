"""evo: evolutionary search over git branches with an Optuna archive."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def load_study(name: str, storage: str | None = None) -> Any:
    """The Optuna study of an evo search, with evo's helpers (lineage, mainline, dataframe)."""
    from evo.inspect.api import load_study as _load

    return _load(name, storage)
