"""Importance functions: approximations of the committor that bias the dynamics."""

from ase_rare.importance.base import (
    ImportanceFunction,
    ReversedImportance,
    load_importance,
)
from ase_rare.importance.grid import GridImportance
from ase_rare.importance.mlp import MLPImportance
from ase_rare.importance.schnet import SchNetImportance

#: Classes :func:`load_importance` can rebuild, by name.
REGISTRY = {
    cls.__name__: cls for cls in (GridImportance, MLPImportance, SchNetImportance)
}

__all__ = [
    "REGISTRY",
    "GridImportance",
    "ImportanceFunction",
    "MLPImportance",
    "ReversedImportance",
    "SchNetImportance",
    "load_importance",
]
