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

    Each extra coordinate is rough (``V`` has a lattice of local wells about ``ℓ``
    apart with barriers of order ``a_r``) and coupled: its preferred position moves
    with ``x1``, it pushes on ``x1`` with a force ``c_k V'(x_k − c_k x1)``, and a
    coordinate that hops between wells of ``V`` drags ``x1`` along. The committor
    therefore depends on the extra coordinates, not on ``(x1, x2)`` alone.

    Notes
    -----
    Parameters (defaults): ``kappa = 2`` eV/Å², ``roughness = 0.4`` eV,
    ``period = 0.4`` Å, and couplings ``c_k = ±(0.10 ... 0.45)`` alternating in
    sign (:data:`DEFAULT_COUPLINGS`; Σ|c_k| = 3.30, Σc_k² = 1.052).

    *Barriers.* The roughness is written in the co-moving coordinate
    ``u_k = x_k − c_k x1`` rather than in ``x_k`` itself. Then ``min_u V(u) =
    V(0) = 0`` for every ``x1``, so each stationary point of the 2D potential,
    with all ``u_k = 0``, is a stationary point of ``U14`` with the same energy
    and the same index (Newton refinement in 14D, also from starts with every
    ``u_k`` displaced, returns the 2D minima at −0.08338 eV, the upper saddle at
    1.01997 eV and the lower saddles at 0.98002 eV, with Hessian index 0 and 1
    over the 14 coordinates). The channel barriers from a minimum, 1.10335 eV
    (upper) and 1.06340 eV (lower), equal the 2D ones to round-off, well within
    the 0.05 eV asked for. No path is cheaper: ``U14 ≥ U(x1, x2)`` everywhere.
    Even the equilibrium density of ``(x1, x2)`` is the 2D Boltzmann one,
    because ``∫ exp(−V(x_k − c_k x1)/k_B T) dx_k`` does not depend on ``x1``; what
    the extra coordinates change is the dynamics.

    *Roughness.* ``V`` has side wells at ``u* = ±0.3843`` Å (0.1537 eV; further
    ones near ±0.77, ±1.15, ±1.52 Å), behind ridges at ``u_b = ±0.2085`` Å
    (0.4417 eV). With one ``u_k`` in a side well the configuration is a genuine
    14D minimum (index 0), with it on the ridge a 14D saddle (index 1). In units
    of k_B T: ``a_r`` is 4.64 at 1000 K and 3.09 at 1500 K; the escape barrier
    from a side well back to ``u = 0`` (0.288 eV) is 3.34 and 2.23.

    *Coupling.* The committor is not a function of ``(x1, x2)``. At the upper
    saddle ``(0, 0.99749)`` Å, shooting 2000 walkers per state at 1000 K
    (Δt = 0.005 fs, A and B discs of 0.2 Å) gives q = 0.520 ± 0.011 with every
    ``u_k = 0`` (1/2 exactly, by the symmetry ``x → −x``), 0.773 ± 0.009 with
    ``u_k = +u* sign(c_k)`` and 0.241 ± 0.010 with ``u_k = −u* sign(c_k)``:
    q(+) − q(−) = 0.532 ± 0.013, 40 standard errors, although the two side
    states have the same ``(x1, x2)``, the same energy and the same force on
    ``x1`` (``V'(u*) = 0``). The forces from ``V`` are orthogonal to
    ``(1, c_3, ..., c_14)``, so while the ``u_k`` relax ``x1 + Σ c_k x_k`` stays
    put and ``x1`` moves by ``−Σ c_k Δu_k / (1 + Σ c_k²)``: 0.62 Å towards B
    when every ``u_k`` of the "+" state returns to 0. These numbers are from the
    example's seed; the test finds 0.521 ± 0.014 with its own. The same holds
    at the lower well (0.523 ± 0.014), at Δt = 0.0025 fs (0.522 ± 0.014) and
    more strongly at 1500 K (0.704 ± 0.011); see
    ``examples/rugged_committor_coupling.py``.

    *Time step.* The extra modes are stiff: ``V''(0) = κ + 2 a_r (π/ℓ)² =
    51.3`` eV/Å², and the coupling raises the largest Hessian eigenvalue at the
    minima to λ_max = 112.6 eV/Å² (≈ ``V''(0)(1 + Σc_k²)``). Euler–Maruyama is
    stable only for Δt < 2γ/λ_max = 0.0178 fs (γ = 1 eV·fs/Å²), and it inflates
    the variance of the stiffest mode by ``1/(1 − λ_max Δt/2)``: 1.39 at
    0.005 fs, 1.16 at 0.0025 fs. Use Δt ≤ 0.005 fs, not the 0.01 fs that suits
    the 2D potential.
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
