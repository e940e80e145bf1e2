"""Soft-core Lennard-Jones discs."""

from __future__ import annotations

import torch

from ase_rare.potentials.base import BatchedCalculator


def pair_indices(n_atoms: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(i, j)`` of all pairs ``i < j`` of ``n_atoms`` atoms."""
    i, j = torch.triu_indices(n_atoms, n_atoms, offset=1, device=device)
    return i, j


class SoftCoreLJ(BatchedCalculator):
    """Soft-core Lennard-Jones pair potential, finite at zero separation.

    .. math::

        \\varphi(r) = 4\\varepsilon\\left[\\frac{1}{(\\alpha + (r/\\sigma)^6)^2}
        - \\frac{1}{\\alpha + (r/\\sigma)^6}\\right]

    with :math:`\\varphi(0) = 4\\varepsilon(1 - \\alpha)/\\alpha^2` (8 eV for the
    defaults) and its minimum :math:`-\\varepsilon` at
    :math:`r = \\sigma(2 - \\alpha)^{1/6}`. No cutoff: every pair interacts.

    Parameters
    ----------
    epsilon : float
        Well depth in eV.
    sigma : float
        Length scale in Å.
    alpha : float
        Softening, dimensionless; ``alpha = 0`` is ordinary Lennard-Jones.
    planar : bool
        If True (the LJ7 benchmark), atoms live in the xy plane.

    Examples
    --------
    >>> from ase import Atoms
    >>> atoms = Atoms("Ar2", positions=[[0, 0, 0], [1.5 ** (1 / 6), 0, 0]])
    >>> atoms.calc = SoftCoreLJ()
    >>> round(atoms.get_potential_energy(), 12)
    -1.0
    """

    def __init__(
        self,
        epsilon: float = 1.0,
        sigma: float = 1.0,
        alpha: float = 0.5,
        *,
        planar: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if epsilon <= 0 or sigma <= 0 or alpha < 0:
            raise ValueError(
                f"SoftCoreLJ needs epsilon > 0 eV, sigma > 0 Å and alpha >= 0; got "
                f"epsilon={epsilon}, sigma={sigma}, alpha={alpha}"
            )
        self.epsilon = float(epsilon)
        self.sigma = float(sigma)
        self.alpha = float(alpha)
        self.planar = bool(planar)
        self._pairs: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def _pair_terms(self, positions: torch.Tensor):
        n = positions.shape[1]
        key = (n, str(positions.device))
        if key not in self._pairs:
            self._pairs[key] = pair_indices(n, positions.device)
        i, j = self._pairs[key]
        diff = positions[:, i] - positions[:, j]
        r2 = (diff * diff).sum(-1) / (self.sigma * self.sigma)
        s = r2 * r2 * r2
        inv = 1.0 / (self.alpha + s)
        return i, j, diff, r2, inv

    def batch_energy(self, positions: torch.Tensor) -> torch.Tensor:
        _, _, _, _, inv = self._pair_terms(positions)
        return 4.0 * self.epsilon * (inv * inv - inv).sum(-1)

    def batch_energy_forces(self, positions):
        i, j, diff, r2, inv = self._pair_terms(positions)
        energy = 4.0 * self.epsilon * (inv * inv - inv).sum(-1)

        # dphi/dr divided by r, written in r^2 only: no square roots needed.
        inv2 = inv * inv
        g = (
            4.0
            * self.epsilon
            * (inv2 - 2.0 * inv2 * inv)
            * 6.0
            * r2
            * r2
            / (self.sigma * self.sigma)
        )
        pair_force = -g.unsqueeze(-1) * diff
        forces = torch.zeros_like(positions)
        forces.index_add_(1, i, pair_force)
        forces.index_add_(1, j, -pair_force)
        return energy, forces
