"""The two-channel 2D model potential."""

from __future__ import annotations

import torch

from ase_rare.potentials.base import BatchedCalculator


class TwoChannelPotential(BatchedCalculator):
    """Two minima joined by an upper and a lower channel, acting on one atom's x, y.

    .. math::

        U(x, y) = a y + \\tfrac16\\left[4(1 - x^2 - y^2)^2 + 2(x^2 - 2)^2
        + ((x + y)^2 - 1)^2 + ((x - y)^2 - 1)^2 - 2\\right]

    in eV with x, y in Å. For the default tilt ``a = 0.02`` eV/Å the minima sit at
    (∓1.11802, −0.00462) Å at −0.08338 eV, the upper channel crosses at 1.01997 eV
    and the lower one at 0.98002 eV.

    Parameters
    ----------
    tilt : float
        The tilt ``a`` in eV/Å; it makes the lower channel the cheaper one.
    """

    planar = True
    n_atoms = 1

    def __init__(self, tilt: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        self.tilt = float(tilt)

    def batch_energy(self, positions: torch.Tensor) -> torch.Tensor:
        return self.energy_xy(positions[:, 0, 0], positions[:, 0, 1])

    def energy_xy(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Energy in eV at arrays of x, y in Å (any common shape)."""
        x2, y2 = x * x, y * y
        p, m = (x + y) ** 2, (x - y) ** 2
        return (
            self.tilt * y
            + (
                4 * (1 - x2 - y2) ** 2
                + 2 * (x2 - 2) ** 2
                + (p - 1) ** 2
                + (m - 1) ** 2
                - 2
            )
            / 6.0
        )

    def gradient_xy(self, x: torch.Tensor, y: torch.Tensor):
        """Gradient (dU/dx, dU/dy) in eV/Å at arrays of x, y in Å."""
        r = 1 - x * x - y * y
        p, m = x + y, x - y
        gp = 4 * (p * p - 1) * p
        gm = 4 * (m * m - 1) * m
        dx = (-16 * r * x + 8 * (x * x - 2) * x + gp + gm) / 6.0
        dy = self.tilt + (-16 * r * y + gp - gm) / 6.0
        return dx, dy

    def batch_energy_forces(self, positions):
        x, y = positions[:, 0, 0], positions[:, 0, 1]
        dx, dy = self.gradient_xy(x, y)
        forces = torch.zeros_like(positions)
        forces[:, 0, 0] = -dx
        forces[:, 0, 1] = -dy
        return self.energy_xy(x, y), forces
