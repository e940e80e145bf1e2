"""Batched, differentiable collective variables."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from ase import Atoms

from ase_rare.potentials.base import DTYPE
from ase_rare.potentials.softcore_lj import incidence, pair_differences


class CollectiveVariable:
    """A map from positions ``(W, N, 3)`` in Å to values ``(W, d)``.

    Subclasses implement :meth:`forward`; the map must be written in torch so it
    is batched and differentiable. Call it on a tensor, or on an ``Atoms`` through
    :meth:`of`. Two collective variables compare equal when they compute the same
    thing, which lets regions on the same variable be checked for overlap.
    """

    #: Names of the components, one per output column.
    names: tuple[str, ...] = ()

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement forward")

    def __call__(self, positions: torch.Tensor) -> torch.Tensor:
        return self.forward(positions)

    @property
    def dim(self) -> int:
        return len(self.names)

    def of(self, atoms: Atoms) -> np.ndarray:
        """Values ``(d,)`` for one ``Atoms``."""
        x = torch.as_tensor(np.asarray(atoms.positions), dtype=DTYPE).unsqueeze(0)
        return self.forward(x)[0].detach().cpu().numpy()

    def _key(self) -> tuple:
        return (type(self),)

    def __eq__(self, other) -> bool:
        return isinstance(other, CollectiveVariable) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


class AtomCoordinates(CollectiveVariable):
    """Cartesian coordinates of one atom, e.g. ``x, y`` of atom 0 (in Å).

    Examples
    --------
    >>> import torch
    >>> AtomCoordinates(0, "xy")(torch.tensor([[[1.0, 2.0, 0.0]]]))
    tensor([[1., 2.]])
    """

    def __init__(self, atom: int = 0, axes: str = "xy"):
        if not axes or set(axes) - set("xyz"):
            raise ValueError(f"axes must be letters from 'xyz'; got {axes!r}")
        self.atom = int(atom)
        self.axes = axes
        self._cols = ["xyz".index(a) for a in axes]
        self.names = tuple(f"{a}{self.atom}" for a in axes)

    def forward(self, positions):
        return positions[:, self.atom, self._cols]

    def _key(self):
        return (type(self), self.atom, self.axes)


class CoordinationMoments(CollectiveVariable):
    """Second and third moments (μ₂, μ₃) of the coordination numbers.

    ``c_i = Σ_{j≠i} 1 / (1 + (r_ij / r0)^8)``, ``c̄`` their mean,
    ``μ₂ = mean (c_i − c̄)²`` and ``μ₃ = mean (c_i − c̄)³``.

    Parameters
    ----------
    r0 : float
        Switching distance in Å (1.5 σ = 1.5 Å for the LJ7 benchmark).
    """

    names = ("mu2", "mu3")

    def __init__(self, r0: float = 1.5):
        if r0 <= 0:
            raise ValueError(f"r0 must be > 0 Å; got {r0}")
        self.r0 = float(r0)

    def coordination(self, positions: torch.Tensor) -> torch.Tensor:
        """Coordination numbers ``(W, N)``."""
        n = positions.shape[1]
        diff = pair_differences(positions, 3)
        t = (diff * diff).sum(1) * (1.0 / (self.r0 * self.r0))
        t = t * t
        t = t * t
        s = torch.reciprocal(t + 1.0)
        return s @ incidence(n, positions.dtype, positions.device).abs()

    def forward(self, positions):
        c = self.coordination(positions)
        d = c - c.mean(-1, keepdim=True)
        d2 = d * d
        return torch.stack([d2.mean(-1), (d2 * d).mean(-1)], dim=-1)

    def _key(self):
        return (type(self), self.r0)


class FunctionCV(CollectiveVariable):
    """A user's torch function of positions as a collective variable.

    Parameters
    ----------
    fn : callable
        ``fn(positions (W, N, 3)) -> (W, d)`` written with torch operations.
    names : sequence of str
        Names of the ``d`` components.
    """

    def __init__(
        self, fn: Callable[[torch.Tensor], torch.Tensor], names: Sequence[str]
    ):
        self.fn = fn
        self.names = tuple(names)

    def forward(self, positions):
        out = self.fn(positions)
        if out.ndim == 1:
            out = out.unsqueeze(-1)
        return out

    def _key(self):
        return (type(self), self.fn, self.names)
