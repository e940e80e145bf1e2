"""Exact committor and transition-path theory on a grid, for 2D potentials.

The generator of overdamped Langevin dynamics,

    L = (k_B T / γ) e^{βU} ∇·(e^{−βU} ∇ ·),

is discretised on a square grid of spacing h by the square-root approximation
(a finite-volume scheme): a walker on node i jumps to each neighbouring node j
with rate

    k_ij = (D / h²) exp(−β (U_j − U_i) / 2),   D = k_B T / γ  (Å²/fs).

The jump process is reversible with respect to π_i ∝ e^{−βU_i} and converges to
the continuous dynamics as h → 0. Committor, rates and the reactive current of
transition-path theory (TPT) then follow from one sparse linear solve.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import scipy.sparse as sp
import torch
from scipy.interpolate import RegularGridInterpolator
from scipy.ndimage import distance_transform_edt
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import splu

from ase_rare.kernels import KB_EV_PER_K
from ase_rare.potentials.base import DTYPE
from ase_rare.regions import Region

__all__ = [
    "GridBoxWarning",
    "GridConvergence",
    "GridTPTResult",
    "grid_convergence",
    "solve_grid_tpt",
]


class PlanarEnergy(Protocol):
    """A 2D potential such as :class:`~ase_rare.potentials.TwoChannelPotential`."""

    def energy_xy(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Energies in eV at tensors of x, y in Å of a common shape."""
        ...


#: What the grid solver accepts as a potential: an object with ``energy_xy``
#: (torch tensors in Å to eV) or a numpy callable ``energy(x, y)`` (Å to eV).
Potential2D = PlanarEnergy | Callable[[np.ndarray, np.ndarray], np.ndarray]


class GridBoxWarning(UserWarning):
    """The grid box cuts through the low-energy region it should contain."""


@dataclass(frozen=True)
class GridTPTResult:
    """Committor, rates and channel fluxes of a 2D potential, exact on a grid.

    Arrays over the grid have shape ``(nx, ny)`` and are indexed ``[ix, iy]``
    (``indexing="ij"``); transpose them for ``imshow``. Nodes outside the kept
    domain (energy more than ``cutoff_kT`` k_B T above the level at which A and
    B connect, or not connected to A and B) hold NaN in the committor arrays
    and 0 in the density.

    Attributes
    ----------
    x_A, y_A : numpy.ndarray
        Grid axes in Å, shapes ``(nx,)`` and ``(ny,)``.
    spacing_A : float
        Grid spacing h in Å.
    temperature_K : float
        Temperature in K.
    friction : float
        Friction γ in eV·fs/Å².
    diffusion_A2_per_fs : float
        Diffusion coefficient D = k_B T / γ in Å²/fs.
    energy_eV : numpy.ndarray
        Potential energy U on every node in eV.
    domain : numpy.ndarray
        Boolean mask of the nodes kept in the calculation.
    in_A, in_B : numpy.ndarray
        Boolean masks of the nodes inside regions A and B.
    committor : numpy.ndarray
        Forward committor q = Prob[reach B before A]: 0 on A, 1 on B.
    log_committor : numpy.ndarray
        ln q, accurate to a relative error of about 1e-12 even where q is far below
        the double-precision resolution of 1 − q (−inf on A).
    log_backward_committor : numpy.ndarray
        ln(1 − q), from its own solve, equally accurate near B (−inf on B).
    density_per_A2 : numpy.ndarray
        Equilibrium density e^{−βU} / Z in Å⁻², normalised so that its sum times
        h² is 1 over the kept domain.
    reactive_flux_per_fs : float
        Reactive flux F in fs⁻¹: the number of A → B transitions per fs in
        equilibrium (equal to the number of B → A transitions), from the
        forward committor on the edges that leave A.
    reactive_flux_into_B_per_fs : float
        The same flux from the backward committor on the edges that enter B.
        Equal in exact arithmetic; both sums rest on the smallest committor
        values, so their agreement measures the solver's relative precision.
    prob_A_history, prob_B_history : float
        Equilibrium probabilities ρ_A = Σ π (1 − q) and ρ_B = Σ π q of having last
        visited A, respectively B; they sum to 1.
    rate_AB_per_fs, rate_BA_per_fs : float
        Rates k_AB = F / ρ_A and k_BA = F / ρ_B in fs⁻¹. They satisfy detailed
        balance k_AB ρ_A = k_BA ρ_B by construction.
    channel_names : tuple of str
        Names of the channels: y above, then y below the split value.
    channel_flux_per_fs : dict of str to float
        Reactive current across the crossing line x = ``crossing_x_A`` on each
        side of y = ``split_y_A`` in fs⁻¹; the channels sum to the reactive flux.
    channel_fractions : dict of str to float
        ``channel_flux_per_fs`` divided by its sum.
    crossing_x_A, split_y_A : float
        The crossing line x = crossing_x_A and the split value of y, in Å.
    crossing_flux_per_fs : numpy.ndarray
        Reactive current in fs⁻¹ through each grid edge of the crossing line,
        shape ``(ny,)``, indexed like ``y_A``.
    connection_energy_eV : float
        Lowest energy U* in eV such that nodes with U ≤ U* connect A to B: the
        grid estimate of the lowest saddle between them.
    cutoff_kT : float
        Nodes more than ``cutoff_kT`` k_B T above ``connection_energy_eV`` were
        dropped.
    """

    x_A: np.ndarray
    y_A: np.ndarray
    spacing_A: float
    temperature_K: float
    friction: float
    diffusion_A2_per_fs: float
    energy_eV: np.ndarray
    domain: np.ndarray
    in_A: np.ndarray
    in_B: np.ndarray
    committor: np.ndarray
    log_committor: np.ndarray
    log_backward_committor: np.ndarray
    density_per_A2: np.ndarray
    reactive_flux_per_fs: float
    reactive_flux_into_B_per_fs: float
    prob_A_history: float
    prob_B_history: float
    rate_AB_per_fs: float
    rate_BA_per_fs: float
    channel_names: tuple[str, str]
    channel_flux_per_fs: dict[str, float]
    channel_fractions: dict[str, float]
    crossing_x_A: float
    split_y_A: float
    crossing_flux_per_fs: np.ndarray
    connection_energy_eV: float
    cutoff_kT: float

    @property
    def n_nodes(self) -> int:
        """Number of grid nodes kept in the calculation."""
        return int(self.domain.sum())

    def log_committor_interpolator(
        self, method: str = "linear"
    ) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """A function ``f(x, y) -> ln q`` at arbitrary points (x, y in Å).

        The grid values of ln q are interpolated with
        :class:`scipy.interpolate.RegularGridInterpolator`. Nodes without a
        finite ln q (inside A, outside the kept domain) take the value of the
        nearest node that has one, so the interpolant is finite and continuous
        everywhere in the box and correct up to the edge of A. Points outside
        the box take the value of the nearest box point.

        Parameters
        ----------
        method : str
            Interpolation method of ``RegularGridInterpolator`` (``"linear"``,
            ``"cubic"``, ...).

        Returns
        -------
        callable
            ``f(x, y)`` taking arrays of x and y in Å of a common shape and
            returning ln q of that shape. It does not know A and B; callers that
            need q = 0 on A and q = 1 on B apply the regions themselves.
        """
        values = self.log_committor.copy()
        values[self.in_B & self.domain] = 0.0
        bad = ~np.isfinite(values)
        if bad.any():
            nearest = distance_transform_edt(
                bad, return_distances=False, return_indices=True
            )
            values = values[tuple(nearest)]
        interp = RegularGridInterpolator(
            (self.x_A, self.y_A), values, method=method, bounds_error=True
        )
        lo = np.array([self.x_A[0], self.y_A[0]])
        hi = np.array([self.x_A[-1], self.y_A[-1]])

        def log_q(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            x, y = np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float))
            pts = np.clip(np.stack([x.ravel(), y.ravel()], axis=-1), lo, hi)
            return interp(pts).reshape(x.shape)

        return log_q

    def committor_at(
        self, x: np.ndarray, y: np.ndarray, method: str = "linear"
    ) -> np.ndarray:
        """Committor q at arbitrary points (x, y in Å), via ln q.

        Convenience wrapper around :meth:`log_committor_interpolator`; build the
        interpolator once when calling this many times.
        """
        return np.exp(self.log_committor_interpolator(method)(x, y))

    def summary(self) -> str:
        """A short human-readable table of the rates and channel fractions."""
        lines = [
            f"grid TPT at {self.temperature_K:g} K, h = {self.spacing_A:g} Å, "
            f"{self.n_nodes} nodes",
            f"  k_AB = {self.rate_AB_per_fs:.6e} fs^-1",
            f"  k_BA = {self.rate_BA_per_fs:.6e} fs^-1",
            f"  reactive flux = {self.reactive_flux_per_fs:.6e} fs^-1",
            f"  P(A history) = {self.prob_A_history:.6f}, "
            f"P(B history) = {self.prob_B_history:.6f}",
        ]
        for name in self.channel_names:
            lines.append(f"  channel {name}: {self.channel_fractions[name]:.6f}")
        return "\n".join(lines)


def _energy_on_grid(potential: Potential2D, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Energies in eV at the grid points, from a potential or a callable."""
    if hasattr(potential, "energy_xy"):
        with torch.no_grad():
            energy = potential.energy_xy(
                torch.as_tensor(X, dtype=DTYPE), torch.as_tensor(Y, dtype=DTYPE)
            )
        energy = energy.detach().cpu().numpy()
    elif callable(potential):
        energy = np.asarray(potential(X, Y), dtype=float)
    else:
        raise TypeError(
            "potential must have an energy_xy(x, y) method (like "
            "TwoChannelPotential) or be a callable energy(x, y) -> eV; got "
            f"{type(potential).__name__}"
        )
    return np.broadcast_to(energy, X.shape).astype(float)


def _region_mask(region: Region, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Which grid points lie in ``region``, as positions of a one-atom system."""
    positions = torch.zeros((X.size, 1, 3), dtype=DTYPE)
    positions[:, 0, 0] = torch.as_tensor(X.ravel())
    positions[:, 0, 1] = torch.as_tensor(Y.ravel())
    with torch.no_grad():
        inside = region.contains(positions)
    return np.asarray(torch.as_tensor(inside).cpu(), dtype=bool).reshape(X.shape)


#: Largest β ΔE kept on the grid; e^{-745} is the smallest double.
_MAX_EXPONENT = 700.0


def _grid_edges(mask: np.ndarray) -> np.ndarray:
    """Pairs ``(i, j)``, i < j, of neighbouring grid nodes that are both in mask.

    Nodes are numbered ``ix * ny + iy``.
    """
    nx, ny = mask.shape
    index = np.arange(nx * ny).reshape(nx, ny)
    flat = mask.ravel()
    pairs = []
    for a, b in ((index[:-1, :], index[1:, :]), (index[:, :-1], index[:, 1:])):
        a, b = a.ravel(), b.ravel()
        both = flat[a] & flat[b]
        pairs.append(np.stack([a[both], b[both]], axis=1))
    return np.concatenate(pairs)


def _component_labels(edges: np.ndarray, n_nodes: int) -> np.ndarray:
    """Connected-component label of every node of the graph given by edges."""
    graph = sp.coo_matrix(
        (np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n_nodes, n_nodes)
    )
    return connected_components(graph, directed=False)[1]


def _connection_level(
    edges: np.ndarray, level: np.ndarray, in_A: np.ndarray, in_B: np.ndarray
) -> float:
    """Lowest energy in eV at which nodes below it connect A to B.

    ``level`` is the higher energy of the two ends of each edge; bisection over
    the sorted levels finds the minimax path between A and B, whose top is the
    grid estimate of the lowest saddle between them.
    """
    n_nodes = in_A.size
    order = np.argsort(level)

    def connected(k: int) -> bool:
        label = _component_labels(edges[order[: k + 1]], n_nodes)
        return np.intersect1d(label[in_A], label[in_B]).size > 0

    if not connected(len(order) - 1):
        raise ValueError(
            "A and B are not connected through grid nodes of finite energy; "
            "enlarge the box so that it contains a path between them"
        )
    lo, hi = -1, len(order) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if connected(mid):
            hi = mid
        else:
            lo = mid
    return float(level[order[hi]])


def _axis(lo: float, hi: float, h: float, name: str) -> np.ndarray:
    if not hi > lo:
        raise ValueError(f"box needs {name}min < {name}max; got {lo}, {hi} Å")
    n = int(math.floor((hi - lo) / h + 1e-9)) + 1
    if n < 3:
        raise ValueError(
            f"spacing {h} Å leaves fewer than 3 grid points along {name}; "
            "make the spacing smaller or the box larger"
        )
    # On a box edge that is a whole number of spacings, build nodes as k·h so
    # that a box symmetric about 0 gives an exactly symmetric grid through 0.
    start = round(lo / h)
    if abs(lo / h - start) < 1e-9:
        return h * (start + np.arange(n))
    return lo + h * np.arange(n)


def solve_grid_tpt(
    potential: Potential2D,
    A: Region,
    B: Region,
    *,
    temperature_K: float,
    box: Sequence[float],
    spacing: float,
    friction: float = 1.0,
    cutoff_kT: float = 40.0,
    crossing_x: float = 0.0,
    split_y: float = 0.0,
    channel_names: tuple[str, str] = ("upper", "lower"),
) -> GridTPTResult:
    """Solve for the committor, rates and channel fluxes of a 2D potential.

    The potential acts on the x, y coordinates of one atom. The committor
    q (0 on A, 1 on B) solves ``Σ_j k_ij (q_j − q_i) = 0`` on every other node,
    and transition-path theory gives the reactive flux

        F = Σ_{i ∈ A, j ∉ A} π_i k_ij q_j,

    the rate k_AB = F / ρ_A with ρ_A = Σ π_i (1 − q_i) the probability of having
    last visited A (and k_BA = F / ρ_B, ρ_B = Σ π_i q_i). This is the rate a long
    trajectory measures as the number of A → B transitions divided by the time
    spent with A as the last region visited. The reactive current on a grid edge
    is ``f_ij = π_i k_ij (q_j − q_i)``; summed over the edges that cross the line
    x = ``crossing_x`` it gives the flux of each channel.

    Parameters
    ----------
    potential : TwoChannelPotential or callable
        Either an object with a method ``energy_xy(x, y)`` taking torch tensors
        of x and y in Å and returning energies in eV (such as
        :class:`~ase_rare.potentials.TwoChannelPotential`), or a callable
        ``energy(x, y)`` taking numpy arrays in Å and returning eV.
    A, B : Region
        Reactant and product regions of the package, decided on positions of a
        one-atom system ``(M, 1, 3)`` with z = 0; for example
        ``DiscRegion(AtomCoordinates(0, "xy"), center, radius)``.
    temperature_K : float
        Temperature in K.
    box : sequence of 4 floats
        ``(xmin, xmax, ymin, ymax)`` in Å. It should contain every point whose
        energy is below the cutoff (see ``cutoff_kT``); the box edge is a
        reflecting wall.
    spacing : float
        Grid spacing h in Å. The rates converge as h² for smooth potentials;
        h must resolve the thermal length, roughly h · |∇U| ≲ k_B T.
    friction : float
        Friction γ in eV·fs/Å².
    cutoff_kT : float
        Nodes more than ``cutoff_kT`` k_B T above the lowest level at which A and
        B connect (the lowest saddle between them) are dropped, and the boundary
        of the kept domain is reflecting. Those nodes carry a fraction of order
        e^{−cutoff_kT} of the equilibrium weight and of the reactive flux, so
        the default 40 changes no reported digit.
    crossing_x : float
        The line x = crossing_x in Å across which channels are told apart; it
        must separate A (smaller x) from B (larger x).
    split_y : float
        Channel 0 crosses at y > split_y, channel 1 at y < split_y (Å). An edge
        exactly at y = split_y counts half to each.
    channel_names : tuple of 2 str
        Names of the channel above and below ``split_y``.

    Returns
    -------
    GridTPTResult

    Raises
    ------
    ValueError
        If A or B holds no grid node, they share a node, no path in the box
        connects them, the crossing line does not separate them, or the kept
        energies span more than 700 k_B T (Boltzmann factors would underflow).

    Warns
    -----
    GridBoxWarning
        If a node on the box edge lies below the energy cutoff, so that the box
        wall, not the potential, confines the dynamics there.

    Notes
    -----
    Everything is computed without overflow in double precision: the symmetric
    conductances ``c_ij = exp(−β(U_i + U_j)/2 + βU_min)`` (so that
    ``π_i k_ij = (D/h²) c_ij / Z``) define a weighted graph Laplacian, factorised
    once with SuperLU (diagonal pivots, minimum-degree ordering). The forward
    committor q and the backward committor 1 − q are two separate solves with
    that factorisation. The Laplacian restricted to the nodes outside A and B is
    an M-matrix and both right-hand sides are non-negative, so each solve keeps
    relative accuracy in the small values of its committor: on the two-channel
    potential at 200 K, ln q agrees to 1e-14 with a subtraction-free elimination
    where q is 1e-38 and 1 − q rounds to 1. The reactive flux is taken from the
    edges leaving A (small q), ρ_A from the backward solve and ρ_B from the
    forward one. Energies kept on the grid may span at most 700 k_B T.

    Examples
    --------
    With no tilt the two-channel potential is symmetric in y, so both channels
    carry half of the reactive flux:

    >>> from ase_rare import AtomCoordinates, DiscRegion, TwoChannelPotential
    >>> cv = AtomCoordinates(0, "xy")
    >>> A = DiscRegion(cv, center=(-1.118, 0.0), radius=0.2)
    >>> B = DiscRegion(cv, center=(1.118, 0.0), radius=0.2)
    >>> res = solve_grid_tpt(TwoChannelPotential(tilt=0.0), A, B,
    ...                      temperature_K=2000.0, box=(-2.4, 2.4, -2.4, 2.4),
    ...                      spacing=0.08, cutoff_kT=25.0)
    >>> print(f"{res.channel_fractions['upper']:.6f}")
    0.500000
    >>> bool(abs(res.rate_AB_per_fs * res.prob_A_history
    ...          - res.rate_BA_per_fs * res.prob_B_history)
    ...      <= 1e-12 * res.reactive_flux_per_fs)
    True
    """
    if not (math.isfinite(temperature_K) and temperature_K > 0):
        raise ValueError(
            f"temperature_K must be a positive number; got {temperature_K}"
        )
    if not (math.isfinite(friction) and friction > 0):
        raise ValueError(
            f"friction must be a positive number (eV·fs/Å²); got {friction}"
        )
    if not (math.isfinite(spacing) and spacing > 0):
        raise ValueError(f"spacing must be a positive number (Å); got {spacing}")
    if not cutoff_kT > 0:
        raise ValueError(f"cutoff_kT must be > 0; got {cutoff_kT}")
    if len(box) != 4:
        raise ValueError(f"box must be (xmin, xmax, ymin, ymax) in Å; got {box}")
    if len(channel_names) != 2:
        raise ValueError(f"channel_names needs two names; got {channel_names}")

    kT = KB_EV_PER_K * temperature_K
    beta = 1.0 / kT
    diffusion = kT / friction
    h = float(spacing)
    xs = _axis(float(box[0]), float(box[1]), h, "x")
    ys = _axis(float(box[2]), float(box[3]), h, "y")
    nx, ny = xs.size, ys.size
    X, Y = np.meshgrid(xs, ys, indexing="ij")

    energy = _energy_on_grid(potential, X, Y)
    finite = np.isfinite(energy)
    in_A = _region_mask(A, X, Y) & finite
    in_B = _region_mask(B, X, Y) & finite
    if (in_A & in_B).any():
        raise ValueError(
            "regions A and B share grid nodes; define them so they are disjoint"
        )
    for name, mask in (("A", in_A), ("B", in_B)):
        if not mask.any():
            raise ValueError(
                f"region {name} contains no grid node with a finite energy; refine "
                f"the spacing or check that {name} lies inside the box"
            )

    # The cutoff counts from the lowest level at which A and B connect, so the
    # saddle region that carries the reactive flux is always kept.
    edges = _grid_edges(finite)
    level = np.maximum(energy.ravel()[edges[:, 0]], energy.ravel()[edges[:, 1]])
    connection = _connection_level(edges, level, in_A.ravel(), in_B.ravel())
    threshold = connection + cutoff_kT * kT
    kept = finite & (energy <= threshold)
    edges = edges[level <= threshold]

    # Keep only the connected pieces of the domain that hold both A and B nodes.
    label = _component_labels(edges, nx * ny)
    shared = np.intersect1d(label[in_A.ravel()], label[in_B.ravel()])
    flat_domain = kept.ravel() & np.isin(label, shared)
    domain = flat_domain.reshape(nx, ny)
    edges = edges[flat_domain[edges[:, 0]]]

    u_min = float(energy[domain].min())
    span_kT = beta * (float(energy[domain].max()) - u_min)
    if span_kT > _MAX_EXPONENT:
        raise ValueError(
            f"at {temperature_K:g} K the energies kept on the grid span "
            f"{span_kT:.0f} k_B T: Boltzmann factors across them underflow in double "
            "precision. Lower cutoff_kT or raise the temperature."
        )

    boundary = np.zeros_like(domain)
    boundary[[0, -1], :] = True
    boundary[:, [0, -1]] = True
    if (domain & boundary).any():
        warnings.warn(
            f"grid nodes on the box edge lie less than {cutoff_kT:g} k_B T above the "
            f"A-B connection level ({connection:.4g} eV), so the box wall, not the "
            "potential, confines the dynamics there; enlarge the box or lower "
            "cutoff_kT",
            GridBoxWarning,
            stacklevel=2,
        )

    conductance = np.exp(
        -beta * (energy.ravel()[edges[:, 0]] + energy.ravel()[edges[:, 1]]) / 2
        + beta * u_min
    )
    weight = np.where(domain, np.exp(-beta * (energy - u_min)), 0.0)
    partition = weight.sum()
    # π_i k_ij = flux_scale · c_ij, with π normalised over the domain.
    flux_scale = diffusion / h**2 / partition
    n_all = nx * ny

    flat_A = in_A.ravel() & flat_domain
    flat_B = in_B.ravel() & flat_domain
    free = flat_domain & ~flat_A & ~flat_B
    n_free = int(free.sum())
    position = np.full(n_all, -1)
    position[free] = np.arange(n_free)

    # Laplacian on the free nodes; edges to A or B move to the right-hand sides.
    i, j = edges[:, 0], edges[:, 1]
    diag = np.zeros(n_free)
    rhs_B = np.zeros(n_free)
    rhs_A = np.zeros(n_free)
    for src, dst in ((i, j), (j, i)):
        on = free[src]
        np.add.at(diag, position[src[on]], conductance[on])
        to_B = on & flat_B[dst]
        to_A = on & flat_A[dst]
        np.add.at(rhs_B, position[src[to_B]], conductance[to_B])
        np.add.at(rhs_A, position[src[to_A]], conductance[to_A])
    inner = free[i] & free[j]
    pi_, pj = position[i[inner]], position[j[inner]]
    laplacian = sp.coo_matrix(
        (
            np.concatenate([diag, -conductance[inner], -conductance[inner]]),
            (
                np.concatenate([np.arange(n_free), pi_, pj]),
                np.concatenate([np.arange(n_free), pj, pi_]),
            ),
        ),
        shape=(n_free, n_free),
    ).tocsc()
    # Diagonal pivots keep the factors of the M-matrix sign-definite, which is
    # what preserves relative accuracy in small committor values.
    lu = splu(
        laplacian,
        permc_spec="MMD_AT_PLUS_A",
        diag_pivot_thresh=0.0,
        options={"SymmetricMode": True},
    )
    q_free = lu.solve(rhs_B)
    p_free = lu.solve(rhs_A)

    q = np.full(n_all, np.nan)
    p = np.full(n_all, np.nan)
    q[flat_domain] = 0.0
    p[flat_domain] = 1.0
    q[flat_B], p[flat_B] = 1.0, 0.0
    q[free], p[free] = q_free, p_free
    # Round-off can put values next to B a few ulp above 1.
    np.clip(q, 0.0, 1.0, out=q)
    np.clip(p, 0.0, 1.0, out=p)

    with np.errstate(divide="ignore"):
        log_q = np.log(q)
        log_p = np.log(p)

    pi = weight.ravel() / partition
    prob_A = float(np.sum(pi[flat_domain] * p[flat_domain]))
    prob_B = float(np.sum(pi[flat_domain] * q[flat_domain]))

    # Reactive flux out of A: the small-q side, computed without subtraction.
    leaves_A = flat_A[i] ^ flat_A[j]
    outer = np.where(flat_A[i[leaves_A]], j[leaves_A], i[leaves_A])
    flux = float(flux_scale * np.sum(conductance[leaves_A] * q[outer]))
    enters_B = flat_B[i] ^ flat_B[j]
    outer = np.where(flat_B[i[enters_B]], j[enters_B], i[enters_B])
    flux_B = float(flux_scale * np.sum(conductance[enters_B] * p[outer]))

    # Channel split: horizontal edges with x_i < crossing_x <= x_j.
    horizontal = (j - i) == ny
    ix_left = i // ny
    crosses = horizontal & (xs[ix_left] < crossing_x)
    crosses &= xs[np.minimum(ix_left + 1, nx - 1)] >= crossing_x
    if (flat_A[i[crosses]] | flat_A[j[crosses]] | flat_B[i[crosses]]).any() or (
        flat_B[j[crosses]].any()
    ):
        raise ValueError(
            f"the crossing line x = {crossing_x} Å passes through A or B; choose a "
            "crossing_x between them"
        )
    current = flux_scale * conductance[crosses] * (q[j[crosses]] - q[i[crosses]])
    iy_cross = i[crosses] % ny
    crossing_flux = np.zeros(ny)
    np.add.at(crossing_flux, iy_cross, current)
    # A node within rounding of the split line counts half to each channel.
    offset = ys - split_y
    side = np.where(np.abs(offset) <= 1e-9 * h, 0.0, np.sign(offset))
    upper_flux = float(np.sum(crossing_flux * (1 + side) / 2))
    lower_flux = float(np.sum(crossing_flux * (1 - side) / 2))
    total = upper_flux + lower_flux
    if not (abs(total - flux) <= 1e-6 * abs(flux)):
        raise ValueError(
            f"the current across x = {crossing_x} Å ({total:.6e} fs^-1) differs "
            f"from the reactive flux out of A ({flux:.6e} fs^-1); the crossing line "
            "must separate A (at smaller x) from B (at larger x)"
        )
    names = (str(channel_names[0]), str(channel_names[1]))

    return GridTPTResult(
        x_A=xs,
        y_A=ys,
        spacing_A=h,
        temperature_K=float(temperature_K),
        friction=float(friction),
        diffusion_A2_per_fs=diffusion,
        energy_eV=energy,
        domain=domain,
        in_A=in_A,
        in_B=in_B,
        committor=q.reshape(nx, ny),
        log_committor=np.where(domain, log_q.reshape(nx, ny), np.nan),
        log_backward_committor=np.where(domain, log_p.reshape(nx, ny), np.nan),
        density_per_A2=pi.reshape(nx, ny) / h**2,
        reactive_flux_per_fs=flux,
        reactive_flux_into_B_per_fs=flux_B,
        prob_A_history=prob_A,
        prob_B_history=prob_B,
        rate_AB_per_fs=flux / prob_A,
        rate_BA_per_fs=flux / prob_B,
        channel_names=names,
        channel_flux_per_fs={names[0]: upper_flux, names[1]: lower_flux},
        channel_fractions={names[0]: upper_flux / total, names[1]: lower_flux / total},
        crossing_x_A=float(crossing_x),
        split_y_A=float(split_y),
        crossing_flux_per_fs=crossing_flux,
        connection_energy_eV=connection,
        cutoff_kT=float(cutoff_kT),
    )


@dataclass(frozen=True)
class GridConvergence:
    """Rates and channel fractions at a sequence of grid spacings.

    Attributes
    ----------
    spacings_A : tuple of float
        Grid spacings h in Å, coarsest first.
    rate_AB_per_fs, rate_BA_per_fs : tuple of float
        Rates in fs⁻¹ at each spacing.
    channel_fractions : tuple of dict
        Channel fractions at each spacing.
    rate_AB_extrapolated_per_fs, rate_BA_extrapolated_per_fs : float
        Richardson extrapolation to h → 0 from the two finest spacings, assuming
        the error scales as h^order.
    observed_order : float or None
        The order log(|e₁/e₂|)/log(h₁/h₂) from three successive spacings of k_AB
        (None with fewer than three spacings or when the differences change sign);
        close to ``order`` when the extrapolation can be trusted.
    order : float
        The order assumed for the extrapolation.
    results : tuple of GridTPTResult
        The full solutions, coarsest first.
    """

    spacings_A: tuple[float, ...]
    rate_AB_per_fs: tuple[float, ...]
    rate_BA_per_fs: tuple[float, ...]
    channel_fractions: tuple[dict[str, float], ...]
    rate_AB_extrapolated_per_fs: float
    rate_BA_extrapolated_per_fs: float
    observed_order: float | None
    order: float
    results: tuple[GridTPTResult, ...]

    def table(self) -> str:
        """The convergence table as text, one row per spacing."""
        names = self.results[0].channel_names
        head = f"{'h (Å)':>8} {'k_AB (fs^-1)':>14} {'k_BA (fs^-1)':>14}"
        head += "".join(f" {n:>10}" for n in names)
        rows = [head]
        for h, kab, kba, frac in zip(
            self.spacings_A,
            self.rate_AB_per_fs,
            self.rate_BA_per_fs,
            self.channel_fractions,
            strict=True,
        ):
            row = f"{h:>8.4g} {kab:>14.6e} {kba:>14.6e}"
            rows.append(row + "".join(f" {frac[n]:>10.6f}" for n in names))
        rows.append(
            f"{'h -> 0':>8} {self.rate_AB_extrapolated_per_fs:>14.6e} "
            f"{self.rate_BA_extrapolated_per_fs:>14.6e}"
        )
        return "\n".join(rows)


def _richardson(coarse: float, fine: float, ratio: float, order: float) -> float:
    factor = ratio**order
    return fine + (fine - coarse) / (factor - 1.0)


def grid_convergence(
    potential: Potential2D,
    A: Region,
    B: Region,
    *,
    temperature_K: float,
    box: Sequence[float],
    spacings: Sequence[float] = (0.04, 0.02, 0.01),
    order: float = 2.0,
    **kwargs,
) -> GridConvergence:
    """Solve at several grid spacings and extrapolate the rates to h → 0.

    Parameters
    ----------
    potential, A, B, temperature_K, box
        As for :func:`solve_grid_tpt`.
    spacings : sequence of float
        At least two grid spacings in Å, in any order; a constant ratio between
        successive ones (such as halving) makes ``observed_order`` meaningful.
    order : float
        Convergence order assumed for Richardson extrapolation (2 for the
        square-root approximation on a smooth potential).
    **kwargs
        Passed on to :func:`solve_grid_tpt` (friction, cutoff_kT, ...).

    Returns
    -------
    GridConvergence

    Notes
    -----
    Regions with a curved boundary (discs) gain or lose whole grid nodes as h
    changes, which adds an irregular part to the error; ``observed_order`` shows
    whether the error is in the asymptotic h^order regime.
    """
    hs = sorted((float(h) for h in spacings), reverse=True)
    if len(hs) < 2:
        raise ValueError("grid_convergence needs at least two spacings")
    results = tuple(
        solve_grid_tpt(
            potential, A, B, temperature_K=temperature_K, box=box, spacing=h, **kwargs
        )
        for h in hs
    )
    kab = tuple(r.rate_AB_per_fs for r in results)
    kba = tuple(r.rate_BA_per_fs for r in results)
    ratio = hs[-2] / hs[-1]

    observed = None
    if len(hs) >= 3:
        d1, d2 = kab[-3] - kab[-2], kab[-2] - kab[-1]
        if d1 * d2 > 0:
            observed = math.log(d1 / d2) / math.log(hs[-3] / hs[-2])

    return GridConvergence(
        spacings_A=tuple(hs),
        rate_AB_per_fs=kab,
        rate_BA_per_fs=kba,
        channel_fractions=tuple(dict(r.channel_fractions) for r in results),
        rate_AB_extrapolated_per_fs=_richardson(kab[-2], kab[-1], ratio, order),
        rate_BA_extrapolated_per_fs=_richardson(kba[-2], kba[-1], ratio, order),
        observed_order=observed,
        order=float(order),
        results=results,
    )
