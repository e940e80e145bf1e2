"""Soft-core Lennard-Jones discs."""

from __future__ import annotations

import torch

from ase_rare.potentials.base import BatchedCalculator


def pair_indices(n_atoms: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(i, j)`` of all pairs ``i < j`` of ``n_atoms`` atoms."""
    i, j = torch.triu_indices(n_atoms, n_atoms, offset=1, device=device)
    return i, j


_INCIDENCE: dict[tuple, torch.Tensor] = {}


def incidence(n_atoms: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """Pair-atom incidence matrix ``(P, N)``: +1 at atom i, −1 at atom j of pair p.

    ``D @ x`` gives all pair differences and ``Dᵀ @ f`` sums pair forces onto
    atoms: both as dense matrix products, much faster on a batch than gathers
    and scatters for small clusters.
    """
    key = (n_atoms, dtype, str(device))
    if key not in _INCIDENCE:
        i, j = pair_indices(n_atoms, device)
        d = torch.zeros((len(i), n_atoms), dtype=dtype, device=device)
        rows = torch.arange(len(i), device=device)
        d[rows, i] = 1.0
        d[rows, j] = -1.0
        _INCIDENCE[key] = d
    return _INCIDENCE[key]


def pair_differences(positions: torch.Tensor, n_dims: int) -> torch.Tensor:
    """Pair differences ``(W, n_dims, P)`` of the first ``n_dims`` coordinates."""
    w, n, _ = positions.shape
    d = incidence(n, positions.dtype, positions.device)
    xt = positions[..., :n_dims].transpose(1, 2).reshape(w * n_dims, n)
    return (xt @ d.T).view(w, n_dims, -1)


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

    def _squared_distances(self, positions: torch.Tensor):
        n_dims = 2 if self.planar else 3
        diff = pair_differences(positions, n_dims)
        r2 = (diff * diff).sum(1) / (self.sigma * self.sigma)
        return diff, r2

    def batch_energy(self, positions: torch.Tensor) -> torch.Tensor:
        _, r2 = self._squared_distances(positions)
        inv = 1.0 / (self.alpha + r2 * r2 * r2)
        return 4.0 * self.epsilon * (inv * inv - inv).sum(-1)

    def batch_energy_forces(self, positions):
        w, n, _ = positions.shape
        diff, r2 = self._squared_distances(positions)
        inv = torch.reciprocal(r2 * r2 * r2 + self.alpha)
        inv2 = inv * inv
        energy = 4.0 * self.epsilon * (inv2 - inv).sum(-1)

        # -(dphi/dr)/r written in r^2 only: no square roots needed.
        g = (inv2 * (2.0 * inv - 1.0)) * r2 * r2
        g *= 24.0 * self.epsilon / (self.sigma * self.sigma)
        n_dims = diff.shape[1]
        pair_force = (g.unsqueeze(1) * diff).view(w * n_dims, -1)
        atom_force = pair_force @ incidence(n, positions.dtype, positions.device)
        forces = torch.zeros_like(positions)
        forces[..., :n_dims] = atom_force.view(w, n_dims, n).transpose(1, 2)
        return energy, forces
