"""Regions A and B: sets in collective-variable space."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from ase import Atoms

from ase_rare.cv import CollectiveVariable
from ase_rare.potentials.base import DTYPE


class Region:
    """A set of configurations, decided batch-wise from positions.

    Use ``region.contains(positions)`` on a ``(W, N, 3)`` tensor for a boolean
    ``(W,)`` tensor, or ``atoms in region`` for one ``Atoms``.
    """

    cv: CollectiveVariable | None = None

    def contains(self, positions: torch.Tensor) -> torch.Tensor:
        return self.contains_values(self.cv(positions))

    def contains_values(self, values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(
            f"{type(self).__name__} must implement contains_values"
        )

    def __contains__(self, atoms: Atoms) -> bool:
        x = torch.as_tensor(np.asarray(atoms.positions), dtype=DTYPE).unsqueeze(0)
        return bool(self.contains(x)[0])

    def disjoint_from(self, other: Region) -> bool | None:
        """True if provably disjoint, False if they overlap, None if unknown."""
        return None


def _vector(values, dim: int, what: str) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(values, dtype=float))
    if arr.shape != (dim,):
        raise ValueError(f"{what} must have {dim} components; got {arr.tolist()}")
    return arr


class DiscRegion(Region):
    """Points within ``radius`` of ``center`` in the space of ``cv`` (a ball).

    Examples
    --------
    >>> from ase_rare.cv import AtomCoordinates
    >>> A = DiscRegion(AtomCoordinates(0, "xy"), center=(-1.118, 0.0), radius=0.2)
    >>> import torch
    >>> A.contains(torch.tensor([[[-1.0, 0.1, 0.0]], [[0.0, 0.0, 0.0]]]))
    tensor([ True, False])
    """

    def __init__(self, cv: CollectiveVariable, center: Sequence[float], radius: float):
        self.cv = cv
        self.center = _vector(center, cv.dim, "center")
        if not radius > 0:
            raise ValueError(f"radius must be > 0; got {radius}")
        self.radius = float(radius)
        self._center_t = torch.as_tensor(self.center, dtype=DTYPE)

    def contains_values(self, values):
        c = self._center_t.to(values.device, values.dtype)
        return ((values - c) ** 2).sum(-1) <= self.radius**2

    def disjoint_from(self, other):
        if getattr(other, "cv", None) != self.cv:
            return None
        if isinstance(other, DiscRegion):
            gap = np.linalg.norm(self.center - other.center)
            return bool(gap > self.radius + other.radius)
        if isinstance(other, BoxRegion):
            nearest = np.clip(self.center, other.lower, other.upper)
            return bool(np.linalg.norm(nearest - self.center) > self.radius)
        return None

    def __repr__(self):
        return (
            f"DiscRegion({type(self.cv).__name__}, center={self.center.tolist()}, "
            f"radius={self.radius})"
        )


class BoxRegion(Region):
    """An axis-aligned box ``lower <= cv <= upper`` in collective-variable space."""

    def __init__(
        self, cv: CollectiveVariable, lower: Sequence[float], upper: Sequence[float]
    ):
        self.cv = cv
        self.lower = _vector(lower, cv.dim, "lower")
        self.upper = _vector(upper, cv.dim, "upper")
        if np.any(self.lower >= self.upper):
            raise ValueError(
                f"box needs lower < upper in every component; got lower="
                f"{self.lower.tolist()}, upper={self.upper.tolist()}"
            )

    def contains_values(self, values):
        lo = torch.as_tensor(self.lower, dtype=values.dtype, device=values.device)
        hi = torch.as_tensor(self.upper, dtype=values.dtype, device=values.device)
        return ((values >= lo) & (values <= hi)).all(-1)

    def disjoint_from(self, other):
        if getattr(other, "cv", None) != self.cv:
            return None
        if isinstance(other, BoxRegion):
            return bool(
                np.any(self.upper < other.lower) or np.any(other.upper < self.lower)
            )
        if isinstance(other, DiscRegion):
            return other.disjoint_from(self)
        return None

    def __repr__(self):
        return (
            f"BoxRegion({type(self.cv).__name__}, lower={self.lower.tolist()}, "
            f"upper={self.upper.tolist()})"
        )


class PredicateRegion(Region):
    """A region given by a function of positions ``(W, N, 3) -> bool (W,)``.

    Overlap with another region cannot be decided in advance; the dynamics check
    every visited configuration instead and stop with an error if one lies in both.
    """

    def __init__(self, predicate: Callable[[torch.Tensor], torch.Tensor], name=""):
        self.predicate = predicate
        self.name = name or getattr(predicate, "__name__", "predicate")

    def contains(self, positions):
        return torch.as_tensor(self.predicate(positions), dtype=torch.bool)

    def __repr__(self):
        return f"PredicateRegion({self.name})"


def check_disjoint(A: Region, B: Region) -> None:
    """Raise ValueError if regions A and B provably overlap."""
    if A.disjoint_from(B) is False:
        raise ValueError(
            f"regions A and B overlap: A = {A!r}, B = {B!r}. Shrink one of them or "
            "move their centres apart; A and B must be disjoint."
        )


def check_not_both(in_a: torch.Tensor, in_b: torch.Tensor) -> None:
    """Raise ValueError if any configuration lies in both A and B."""
    if bool((in_a & in_b).any()):
        raise ValueError(
            "a configuration lies in both A and B: the regions overlap. Define A "
            "and B so that they are disjoint."
        )
