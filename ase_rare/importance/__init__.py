"""Importance functions: approximations of the committor that bias the dynamics.

``SchNetImportance`` is imported on first use: SchNetPack takes seconds to import
and the model potentials do not need it.
"""

from ase_rare.importance.base import (
    ImportanceFunction,
    ReversedImportance,
    load_importance,
)
from ase_rare.importance.grid import GridImportance
from ase_rare.importance.mlp import MLPImportance


class _Registry(dict):
    """Classes :func:`load_importance` can rebuild, by name (SchNet loaded lazily)."""

    _lazy = {"SchNetImportance": ("ase_rare.importance.schnet", "SchNetImportance")}

    def _fill(self):
        import importlib

        for name, (module, attr) in self._lazy.items():
            if not dict.__contains__(self, name):
                self[name] = getattr(importlib.import_module(module), attr)

    def get(self, key, default=None):
        if key in self._lazy:
            self._fill()
        return dict.get(self, key, default)

    def __iter__(self):
        self._fill()
        return dict.__iter__(self)

    def keys(self):
        self._fill()
        return dict.keys(self)

    def names(self) -> list[str]:
        """Every known class name, without importing the lazy ones."""
        return sorted({*dict.keys(self), *self._lazy})


REGISTRY = _Registry({cls.__name__: cls for cls in (GridImportance, MLPImportance)})


def __getattr__(name):
    if name == "SchNetImportance":
        from ase_rare.importance.schnet import SchNetImportance

        return SchNetImportance
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "REGISTRY",
    "GridImportance",
    "ImportanceFunction",
    "MLPImportance",
    "ReversedImportance",
    "SchNetImportance",
    "load_importance",
]
