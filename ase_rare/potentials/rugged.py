"""The two-channel potential embedded in 14 dimensions with rough, coupled modes."""

from __future__ import annotations

import math

import torch

from ase_rare.potentials.base import BatchedCalculator
from ase_rare.potentials.two_channel import TwoChannelPotential

#: Coupling of each extra coordinate to x1 (dimensionless), alternating in sign.
DEFAULT_COUPLINGS = tuple((-1) ** k * round(0.10 + 0.35 * k / 11, 4) for k in range(12))


class RuggedPotential(BatchedCalculator):
    """The 2D two-channel potential in 14 dimensions, on 7 pseudo-atoms in a plane.

    Atom 0 carries the two reactive coordinates ``(x1, x2)``; atoms 1-6 carry the
    twelve extra coordinates ``x3 ... x14`` as their x and y. The energy in eV is

    .. math::

        U_{14}(x) = U(x_1, x_2) + \\sum_{k=3}^{14} V(x_k - c_k x_1),\\qquad
        V(u) = \\tfrac12 \\kappa u^2 + a_r \\sin^2(\\pi u / \\ell).

    Each extra coordinate is rough (``V`` has a lattice of local wells ``ℓ`` apart
    with barriers of order ``a_r``) and coupled: its preferred position moves with
    ``x1``, and a coordinate stuck in a side well pushes on ``x1`` with a force
    ``κ c_k (x_k − c_k x1)``. The committor therefore depends on the extra
    coordinates, not on ``(x1, x2)`` alone.

    Notes
    -----
    Parameters (defaults): ``kappa = 2`` eV/Å², ``roughness = 0.4`` eV,
    ``period = 0.4`` Å, and couplings ``c_k = ±(0.10 ... 0.45)`` alternating in
    sign (:data:`DEFAULT_COUPLINGS`). The roughness is 4.6 k_B T at 1000 K and
    3.1 k_B T at 1500 K.

    The roughness is written in the co-moving coordinate ``u_k = x_k − c_k x1``
    rather than in ``x_k`` itself. Then ``min_u V(u) = V(0) = 0`` for every ``x1``,
    so each stationary point of the 2D potential, with all ``u_k = 0``, is a
    stationary point of ``U14`` with the same energy and the same index: the two
    channel barriers (1.02 and 0.98 eV above the minima) are preserved exactly,
    while the dynamics, and hence the rate and the committor, are not those of
    the 2D system (the change of variables is not orthogonal, so the noise and
    the forces couple ``x1`` to every ``u_k``).
    """

    planar = True
    n_atoms = 7

    def __init__(
        self,
        tilt: float = 0.02,
        *,
        kappa: float = 2.0,
        roughness: float = 0.4,
        period: float = 0.4,
        couplings: tuple[float, ...] = DEFAULT_COUPLINGS,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if len(couplings) != 12:
            raise ValueError(
                f"RuggedPotential needs 12 couplings (x3 ... x14); got {len(couplings)}"
            )
        if kappa <= 0 or period <= 0 or roughness < 0:
            raise ValueError(
                "RuggedPotential needs kappa > 0 eV/Å², period > 0 Å and "
                f"roughness >= 0 eV; got kappa={kappa}, period={period}, "
                f"roughness={roughness}"
            )
        self.base = TwoChannelPotential(tilt)
        self.kappa = float(kappa)
        self.roughness = float(roughness)
        self.period = float(period)
        self.couplings = tuple(float(c) for c in couplings)

    @staticmethod
    def to_coordinates(positions: torch.Tensor) -> torch.Tensor:
        """The 14 coordinates ``(W, 14)`` from positions ``(W, 7, 3)``."""
        return positions[..., :2].reshape(positions.shape[0], 14)

    @staticmethod
    def to_positions(coordinates: torch.Tensor) -> torch.Tensor:
        """Positions ``(W, 7, 3)`` with z = 0 from coordinates ``(W, 14)``."""
        w = coordinates.shape[0]
        out = coordinates.new_zeros((w, 7, 3))
        out[..., :2] = coordinates.reshape(w, 7, 2)
        return out

    def _c(self, like: torch.Tensor) -> torch.Tensor:
        return torch.tensor(self.couplings, dtype=like.dtype, device=like.device)

    def batch_energy(self, positions: torch.Tensor) -> torch.Tensor:
        q = self.to_coordinates(positions)
        x1 = q[:, 0]
        u = q[:, 2:] - self._c(q) * x1.unsqueeze(-1)
        k = math.pi / self.period
        extra = 0.5 * self.kappa * u * u + self.roughness * torch.sin(k * u) ** 2
        return self.base.energy_xy(x1, q[:, 1]) + extra.sum(-1)

    def batch_energy_forces(self, positions):
        q = self.to_coordinates(positions)
        x1, x2 = q[:, 0], q[:, 1]
        c = self._c(q)
        u = q[:, 2:] - c * x1.unsqueeze(-1)
        k = math.pi / self.period
        sin_ku = torch.sin(k * u)
        extra = 0.5 * self.kappa * u * u + self.roughness * sin_ku * sin_ku
        energy = self.base.energy_xy(x1, x2) + extra.sum(-1)

        dv = self.kappa * u + self.roughness * k * torch.sin(2 * k * u)
        dx, dy = self.base.gradient_xy(x1, x2)
        grad = torch.empty_like(q)
        grad[:, 0] = dx - (dv * c).sum(-1)
        grad[:, 1] = dy
        grad[:, 2:] = dv
        return energy, self.to_positions(-grad)
