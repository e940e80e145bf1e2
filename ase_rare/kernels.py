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

#: Boltzmann constant in eV/K (CODATA 2018, exact; ``ase.units.kB`` is the
#: CODATA 2014 value, 3.4e-7 smaller in relative terms).
KB_EV_PER_K = 8.617333262e-5


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


#: The biased kernels: drift tilt and candidate resampling.
KERNELS = ("tilt", "candidates")


def check_path_options(kernel: str, **counts: int) -> None:
    """Refuse an unknown biased kernel or a count below 1, naming them."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}; got {kernel!r}")
    if min(counts.values()) < 1:
        names = list(counts)
        joined = (
            ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
        )
        raise ValueError(
            f"{joined} must be >= 1; got {', '.join(str(v) for v in counts.values())}"
        )


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


def draw_noise(
    like: torch.Tensor,
    planar: bool,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal noise shaped like ``like`` (zeros in z when planar).

    The draws are made in ``dtype`` (float32 by default: several times faster
    than float64 and statistically indistinguishable for the step; its
    Box–Muller tails are cut at about 5.8 standard deviations) and returned in
    the dtype of ``like``. Every consumer uses the returned tensor, so path
    weights computed from it stay exact.
    """
    n_dims = 2 if planar else 3
    draws = torch.randn(
        (*like.shape[:-1], n_dims), generator=generator, dtype=dtype, device=like.device
    )
    if not planar:
        return draws.to(like.dtype)
    noise = torch.zeros_like(like)
    noise[..., :2] = draws
    return noise


def hessian(
    potential,
    positions: torch.Tensor,
    *,
    free: np.ndarray | None = None,
    step: float = 1e-5,
) -> np.ndarray:
    """Hessian in eV/Å² of one configuration ``(N, 3)``.

    Parameters
    ----------
    potential : BatchedCalculator
    positions : tensor ``(N, 3)`` in Å
    free : boolean array ``(3N,)``, optional
        The coordinates to differentiate along (e.g. x and y only for a planar
        system); the result is ``(n_free, n_free)``. Default: all ``3N``.
    step : float
        Displacement in Å for the finite-difference fallback.

    Notes
    -----
    Exact (autograd) when the potential's ``batch_energy`` is differentiable;
    otherwise central differences of forces along the free coordinates only
    (frozen coordinates are never displaced), all displaced configurations
    evaluated as one batch.
    """
    x = positions.detach().to(torch.float64).reshape(1, -1, 3)
    n = x.shape[1]
    idx = np.arange(3 * n) if free is None else np.flatnonzero(free)
    with torch.enable_grad():
        probe = x.reshape(-1).clone().requires_grad_(True)
        differentiable = potential.batch_energy(probe.reshape(1, n, 3)).requires_grad
        if differentiable:
            h = torch.autograd.functional.hessian(
                lambda p: potential.batch_energy(p.reshape(1, n, 3)).sum(), probe
            )
            return h.detach().cpu().numpy()[np.ix_(idx, idx)]

    m = len(idx)
    displacement = torch.zeros((m, 3 * n), dtype=x.dtype)
    displacement[torch.arange(m), torch.as_tensor(idx)] = step
    flat = x.reshape(1, -1)
    batch = torch.cat([flat + displacement, flat - displacement]).reshape(2 * m, n, 3)
    _, forces = potential.batch_energy_forces(batch)
    forces = forces.reshape(2 * m, -1)[:, idx].detach().cpu().numpy()
    h = -(forces[:m] - forces[m:]) / (2 * step)
    return 0.5 * (h + h.T)


def free_coordinates(n_atoms: int, planar: bool) -> np.ndarray:
    """Boolean ``(3N,)`` mask of the moving coordinates (no z when planar)."""
    free = np.ones((n_atoms, 3), bool)
    if planar:
        free[:, 2] = False
    return free.reshape(-1)


def largest_curvature(potential, positions: torch.Tensor, planar: bool) -> float:
    """Largest Hessian eigenvalue in eV/Å² at one configuration ``(N, 3)``."""
    free = free_coordinates(positions.shape[-2], planar)
    h = hessian(potential, positions, free=free)
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


def tilted_step(
    positions: torch.Tensor,
    forces: torch.Tensor,
    noise: torch.Tensor,
    grad_log_importance: torch.Tensor,
    params: LangevinParameters,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One drift-tilted step and its exact log-weight increment.

    The biased kernel moves ``x' = m(x) + σ² g + σ ξ`` with ``g = ∇ ln I`` (the
    dynamics on ``U − 2 k_B T ln I``). The weight factor is the ratio of the
    unbiased and biased Gaussian densities of the step actually taken,

        ln K/K_I = −|x' − m|²/(2σ²) + |ξ|²/2 = −σ ξ·g − σ²|g|²/2,

    so it is exact whatever ``g`` is — also when ``g`` was computed some steps
    earlier and frozen. ``noise`` and ``g`` must be zero in frozen coordinates.

    Returns
    -------
    new positions ``(W, N, 3)`` and ``Δ ln w`` ``(W,)`` in float64.
    """
    sigma = params.noise_scale
    shift = sigma * grad_log_importance
    new = positions + params.mobility_step * forces + sigma * (shift + noise)
    dims = tuple(range(1, positions.ndim))
    dlogw = -((shift * noise).sum(dims) + 0.5 * (shift * shift).sum(dims))
    return new, dlogw.to(torch.float64)


def candidate_step(
    positions: torch.Tensor,
    forces: torch.Tensor,
    noise: torch.Tensor,
    log_importance,
    params: LangevinParameters,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One candidate-resampling step and its exact log-weight increment.

    ``M`` candidates ``y_k = m(x) + σ ξ_k`` are drawn from the unbiased kernel
    (``noise`` has shape ``(M, W, N, 3)``); one is picked with probability
    ``∝ I(y_k)`` and the weight is multiplied by ``Ẑ / I(y_j)`` with
    ``Ẑ = (1/M) Σ_k I(y_k)``. This is unbiased for every ``M ≥ 1`` and needs no
    gradient of the importance function.

    Parameters
    ----------
    log_importance : callable
        ``(K, N, 3) -> ln I (K,)``, with ``−inf`` inside A and ``0`` inside B.

    Returns
    -------
    new positions ``(W, N, 3)``, ``Δ ln w`` ``(W,)`` and ln I of the chosen
    candidate ``(W,)``.
    """
    m_cand, w = noise.shape[0], noise.shape[1]
    mean = positions + params.mobility_step * forces
    cand = mean.unsqueeze(0) + params.noise_scale * noise
    log_i = log_importance(cand.reshape(m_cand * w, *cand.shape[2:]))
    log_i = log_i.reshape(m_cand, w).to(torch.float64)

    # Gumbel-max draws j with probability I_j / Σ I.
    u = torch.rand(
        (m_cand, w), generator=generator, dtype=torch.float64, device=log_i.device
    )
    gumbel = -torch.log(-torch.log(u.clamp_min(1e-300)))
    all_in_a = torch.isneginf(log_i).all(0)
    j = torch.where(all_in_a, 0, (log_i + gumbel).argmax(0))
    cols = torch.arange(w, device=log_i.device)
    chosen = log_i[j, cols]
    log_z = torch.logsumexp(log_i, 0) - math.log(m_cand)
    # With every candidate in A the path has failed; its weight no longer matters.
    dlogw = torch.where(all_in_a, 0.0, log_z - chosen)
    return cand[j, cols], dlogw, chosen
