"""Reference structures of the benchmark systems."""

from __future__ import annotations

from functools import cache

import numpy as np
import torch
from ase import Atoms

from ase_rare.kernels import hessian
from ase_rare.potentials.base import DTYPE
from ase_rare.potentials.softcore_lj import SoftCoreLJ

# Approximate stationary points of the 2D soft-core LJ7 cluster (Å, x1 y1 ... x7 y7);
# lj7_cluster refines them to machine precision with the package's own potential.
_LJ7_START = {
    "C0": "0.00000 0.00000 1.06100 0.00002 0.53049 0.91886 -0.53051 0.91884 "
    "-1.06100 -0.00002 -0.53049 -0.91886 0.53051 -0.91884",
    "C1": "0.18399 -0.34124 -0.00610 -1.37445 -0.82115 -0.67934 -0.60142 0.36103 "
    "-0.36934 1.39651 0.42033 0.68724 1.19370 -0.04975",
    "C2": "0.15607 -0.24518 -0.28761 -1.20714 -0.89870 -0.33262 -0.43777 0.62614 "
    "0.05053 1.56803 0.63942 0.68204 0.77806 -1.09128",
    "C3": "0.52546 0.00000 -0.39267 -1.58799 -0.39989 -0.52686 -0.39989 0.52686 "
    "-0.39267 1.58799 0.52983 1.05653 0.52983 -1.05653",
    "S1": "0.35047 0.12535 -0.17711 -1.62830 -0.42990 -0.59758 -0.64729 0.43801 "
    "-0.34689 1.43979 0.65230 1.12195 0.59842 -0.89922",
    "S2": "0.72460 0.14418 -0.25101 -1.63919 -0.53246 -0.61252 -0.28900 0.39665 "
    "-0.58795 1.41236 0.44990 1.16909 0.48592 -0.87057",
}

#: Names accepted by :func:`lj7_cluster`: minima C0-C3 and saddles S1, S2.
LJ7_NAMES = tuple(_LJ7_START)


def rigid_modes(positions: np.ndarray, planar: bool) -> np.ndarray:
    """Orthonormal translation and rotation modes ``(k, 3N)`` of a cluster."""
    x = positions - positions.mean(0)
    n = len(x)
    modes = []
    axes = (0, 1) if planar else (0, 1, 2)
    for a in axes:
        t = np.zeros((n, 3))
        t[:, a] = 1.0
        modes.append(t.ravel())
    rot_axes = ((0, 0, 1),) if planar else ((1, 0, 0), (0, 1, 0), (0, 0, 1))
    for axis in rot_axes:
        modes.append(np.cross(np.asarray(axis, float), x).ravel())
    q, _ = np.linalg.qr(np.array(modes).T)
    return q.T


def refine_stationary_point(
    potential,
    positions: np.ndarray,
    *,
    planar: bool,
    rigid: bool = True,
    gtol: float = 1e-10,
) -> np.ndarray:
    """Newton–Raphson to the nearest stationary point (minimum or saddle).

    The Hessian (exact where autograd applies) is restricted to the internal
    degrees of freedom: z removed when ``planar``, and rigid translations and
    rotations removed when ``rigid`` (set ``rigid=False`` for model potentials
    that are not invariant under them, such as the two-channel potential), so
    saddles converge as readily as minima. ``gtol`` is in eV/Å.
    """
    x = np.array(positions, dtype=float)
    n = len(x)
    free = np.ones((n, 3), bool)
    if planar:
        free[:, 2] = False
        x[:, 2] = 0.0
    free = free.ravel()
    for _ in range(50):
        t = torch.as_tensor(x, dtype=DTYPE).unsqueeze(0)
        _, forces = potential.batch_energy_forces(t)
        g = -forces[0].numpy().ravel()
        if np.abs(g[free]).max() < gtol:
            return x
        h = hessian(potential, t[0])
        # Internal basis: the free coordinates orthogonal to rigid motions.
        basis = np.eye(3 * n)[:, free]
        if rigid:
            modes = rigid_modes(x, planar)
            basis = basis - modes.T @ (modes @ basis)
        u, s, _ = np.linalg.svd(basis, full_matrices=False)
        basis = u[:, s > 1e-8]
        hi = basis.T @ h @ basis
        dx = basis @ np.linalg.solve(hi, -(basis.T @ g))
        x = x + dx.reshape(n, 3)
    raise RuntimeError(
        "Newton refinement did not converge in 50 iterations; start closer to a "
        "stationary point"
    )


def principal_axes(positions: np.ndarray) -> np.ndarray:
    """Centre a planar cluster and rotate it onto its principal axes in xy."""
    x = positions - positions.mean(0)
    xy = x[:, :2]
    _, vecs = np.linalg.eigh(xy.T @ xy)
    rotated = xy @ vecs[:, ::-1]
    out = np.zeros_like(x)
    out[:, :2] = rotated
    return out


@cache
def _refined_lj7(name: str) -> np.ndarray:
    xy = np.array(_LJ7_START[name].split(), float).reshape(7, 2)
    start = np.zeros((7, 3))
    start[:, :2] = xy
    pot = SoftCoreLJ()
    x = refine_stationary_point(pot, start, planar=True)
    x = principal_axes(x)
    # Polishing once more removes the round-off of the rotation.
    return refine_stationary_point(pot, x, planar=True)


def lj7_cluster(name: str = "C3", *, symbol: str = "Ar") -> Atoms:
    """A stationary point of the 2D soft-core LJ7 cluster, with its calculator.

    Parameters
    ----------
    name : {"C0", "C1", "C2", "C3", "S1", "S2"}
        Minima C0 (hexagon, global minimum), C1, C2 (capped), C3 (trapezoid), and
        the C3 -> C2 saddles S1 and S2.
    symbol : str
        Chemical symbol for the discs (only used for display).

    Returns
    -------
    Atoms
        Seven atoms in the xy plane (z = 0), centred and on principal axes,
        refined until every force component is below 1e-10 eV/Å, with
        ``SoftCoreLJ()`` (ε = 1 eV, σ = 1 Å, α = 0.5) attached.

    Examples
    --------
    >>> atoms = lj7_cluster("C0")
    >>> round(atoms.get_potential_energy(), 5)
    -12.71121
    """
    if name not in _LJ7_START:
        raise ValueError(
            f"unknown LJ7 structure {name!r}; choose one of {', '.join(LJ7_NAMES)}"
        )
    atoms = Atoms(f"{symbol}7", positions=_refined_lj7(name).copy())
    atoms.calc = SoftCoreLJ()
    atoms.info["name"] = f"LJ7-{name}"
    return atoms
