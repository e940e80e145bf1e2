"""The overdamped Langevin step, shared by every dynamics in the package.

Euler–Maruyama for ``dx = −γ⁻¹ ∇U dt + sqrt(2 k_B T / γ) dW``:

    x' = m(x) + σ ξ,   m(x) = x + (Δt/γ) F(x),   σ² = 2 k_B T Δt / γ,

with ``F = −∇U`` the forces. The single-walker ASE dynamics and the batched
engines both call :func:`overdamped_step`; the noise ``ξ`` is an argument, so
the kernel is deterministic and the caller owns the random stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from ase import units

#: Boltzmann constant in eV/K.
KB_EV_PER_K = units.kB


@dataclass(frozen=True)
class LangevinParameters:
    """Validated parameters of overdamped Langevin dynamics.

    Parameters
    ----------
    timestep_fs : float
        Time step Δt in fs.
    temperature_K : float
        Temperature in K.
    friction : float
        Friction γ in eV·fs/Å² (mass plays no role in overdamped dynamics; the
        benchmarks use γ = 1 eV·fs/Å²).
    """

    timestep_fs: float
    temperature_K: float
    friction: float

    def __post_init__(self):
        for name, value, unit in (
            ("timestep", self.timestep_fs, "fs"),
            ("temperature_K", self.temperature_K, "K"),
            ("friction", self.friction, "eV·fs/Å²"),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(
                    f"{name} must be a positive number ({unit}); got {value}"
                )

    @property
    def kT(self) -> float:
        """Thermal energy k_B T in eV."""
        return KB_EV_PER_K * self.temperature_K

    @property
    def mobility_step(self) -> float:
        """Δt/γ in Å²/eV: displacement per unit force in one step."""
        return self.timestep_fs / self.friction

    @property
    def noise_scale(self) -> float:
        """σ = sqrt(2 k_B T Δt / γ) in Å."""
        return math.sqrt(2.0 * self.kT * self.mobility_step)


def overdamped_step(
    positions: torch.Tensor,
    forces: torch.Tensor,
    noise: torch.Tensor,
    params: LangevinParameters,
) -> torch.Tensor:
    """One Euler–Maruyama step for a batch: ``x + (Δt/γ) F + σ ξ``.

    ``noise`` holds standard normal draws ξ with zeros in the frozen degrees of
    freedom (z for planar systems).
    """
    return positions + params.mobility_step * forces + params.noise_scale * noise


def dof_mask(n_atoms: int, planar: bool, *, dtype=torch.float64, device=None):
    """``(N, 3)`` mask of the moving degrees of freedom (z frozen when planar)."""
    mask = torch.ones((n_atoms, 3), dtype=dtype, device=device)
    if planar:
        mask[:, 2] = 0.0
    return mask


def hessian(potential, positions: torch.Tensor, *, step: float = 1e-5) -> np.ndarray:
    """Hessian ``(3N, 3N)`` in eV/Å² of one configuration ``(N, 3)``.

    Exact (autograd) when the potential's ``batch_energy`` is differentiable;
    otherwise central differences of forces with a displacement ``step`` in Å,
    all displaced configurations evaluated as one batch.
    """
    x = positions.detach().to(torch.float64).reshape(1, -1, 3)
    n = x.shape[1]
    with torch.enable_grad():
        probe = x.reshape(-1).clone().requires_grad_(True)
        differentiable = potential.batch_energy(probe.reshape(1, n, 3)).requires_grad
        if differentiable:
            h = torch.autograd.functional.hessian(
                lambda p: potential.batch_energy(p.reshape(1, n, 3)).sum(), probe
            )
            return h.detach().cpu().numpy()

    eye = torch.eye(3 * n, dtype=x.dtype).reshape(3 * n, n, 3)
    batch = torch.cat([x + step * eye, x - step * eye])
    _, forces = potential.batch_energy_forces(batch)
    fp, fm = forces[: 3 * n], forces[3 * n :]
    h = -(fp - fm).reshape(3 * n, 3 * n) / (2 * step)
    h = 0.5 * (h + h.T)
    return h.detach().cpu().numpy()


def largest_curvature(potential, positions: torch.Tensor, planar: bool) -> float:
    """Largest Hessian eigenvalue in eV/Å² at one configuration ``(N, 3)``."""
    h = hessian(potential, positions)
    if planar:
        keep = np.ones((positions.shape[-2], 3), bool)
        keep[:, 2] = False
        keep = keep.reshape(-1)
        h = h[np.ix_(keep, keep)]
    return float(np.linalg.eigvalsh(h)[-1])


def check_stability(
    potential, positions: torch.Tensor, params: LangevinParameters, planar: bool
) -> float:
    """Refuse a timestep at or above the stability bound ``2γ/λ_max``.

    Returns the bound in fs. λ_max is the largest Hessian eigenvalue at the given
    configuration (the starting point of the dynamics).
    """
    lam = largest_curvature(potential, positions, planar)
    if lam <= 0:
        return math.inf
    bound = 2.0 * params.friction / lam
    if params.timestep_fs >= bound:
        raise ValueError(
            f"timestep {params.timestep_fs:g} fs is above the stability bound "
            f"2γ/λ_max = {bound:.4g} fs (λ_max = {lam:.4g} eV/Å² at the start, "
            f"γ = {params.friction:g} eV·fs/Å²); use a timestep below "
            f"{bound:.4g} fs, ideally a few times smaller"
        )
    return bound
