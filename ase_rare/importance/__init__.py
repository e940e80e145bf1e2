"""Importance functions: approximations of the committor that bias the dynamics."""

from ase_rare.importance.base import (
    ImportanceFunction,
    ReversedImportance,
    load_importance,
)
from ase_rare.importance.grid import GridImportance
from ase_rare.importance.mlp import MLPImportance

#: Classes :func:`load_importance` can rebuild, by name.
REGISTRY = {cls.__name__: cls for cls in (GridImportance, MLPImportance)}

__all__ = [
    "REGISTRY",
    "GridImportance",
    "ImportanceFunction",
    "MLPImportance",
    "ReversedImportance",
    "load_importance",
]
