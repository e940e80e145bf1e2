"""The importance-sampled rate: flux from an unbiased run, P from biased paths."""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from ase import Atoms, units

from ase_rare.bruteforce import BruteForce, BruteForceResult
from ase_rare.channels import ChannelClassifier
from ase_rare.constraints import free_coordinates_of
from ase_rare.importance.base import ImportanceFunction
from ase_rare.kernels import check_path_options
from ase_rare.regions import Region
from ase_rare.results import RateResult, weighted_channel_fractions
from ase_rare.sampling import STEP_CAP, PathResults, PathSampler


def measure_flux(
    start: Atoms,
    A: Region,
    B: Region,
    *,
    timestep: float,
    temperature_K: float,
    friction: float = 1.0,
    n_exit_points: int = 4096,
    n_walkers: int = 256,
    equilibrate_fs: float = 5.0,
    seed: int = 0,
    compile: bool = False,
    device: str = "cpu",
    progress: bool = False,
) -> BruteForceResult:
    """Unbiased run in A: the flux J_A and a uniform sample of exit points.

    Runs until at least ``10 × n_exit_points`` exits have been seen (so the
    sample is spread over many independent excursions) after an equilibration
    period whose statistics are discarded. Walkers that reach B are put back in
    A. The result's ``exit_points`` holds ``n_exit_points`` exit points.

    ``device`` is the torch device of the walkers; ``progress`` draws a tqdm
    bar of the exits counted (on standard error). Neither changes the result.
    """
    engine = BruteForce(
        start,
        A,
        B,
        timestep=timestep,
        temperature_K=temperature_K,
        friction=friction,
        n_walkers=n_walkers,
        seed=seed,
        max_exit_points=n_exit_points,
        compile=compile,
        device=device,
    )
    dt_fs = timestep / units.fs
    engine.run(max(1, int(round(equilibrate_fs / dt_fs))))
    engine.reset_statistics()
    wanted = 10 * n_exit_points
    bar = None
    if progress:
        import sys

        from tqdm import tqdm

        bar = tqdm(total=wanted, unit="exit", desc="flux run in A", file=sys.stderr)
    while (seen := int(engine.n_exit.sum())) < wanted:
        if bar is not None:
            bar.update(min(seen, wanted) - bar.n)
        engine.run(200, check_interval=200)
    if bar is not None:
        bar.update(wanted - bar.n)
        bar.close()
    return engine.result()


def check_flux_matches(
    flux: BruteForceResult, timestep_fs: float, temperature_K: float, friction: float
) -> None:
    """Refuse a flux run made at another time step, temperature or friction.

    J_A and the exit points depend on all three, so a flux run can only be
    combined with paths run at the same values.
    """
    for name, have, want, unit in (
        ("timestep", flux.timestep_fs, timestep_fs, "fs"),
        ("temperature", flux.temperature_K, temperature_K, "K"),
        ("friction", flux.friction_eV_fs_per_A2, friction, "eV·fs/Å²"),
    ):
        if not math.isclose(have, want, rel_tol=1e-9):
            raise ValueError(
                f"the flux run was made at {name} {have:g} {unit}, but the paths "
                f"run at {want:g} {unit}; measure the flux at the same {name}"
            )


def estimate_rate(
    start: Atoms,
    importance: ImportanceFunction,
    A: Region,
    B: Region,
    *,
    timestep: float,
    temperature_K: float,
    friction: float = 1.0,
    n_roots: int = 4096,
    kernel: str = "tilt",
    n_candidates: int = 8,
    drift_refresh: int = 1,
    max_steps: int = 200_000,
    channels: ChannelClassifier | None = None,
    flux: BruteForceResult | None = None,
    flux_walkers: int = 256,
    batch_size: int = 4096,
    seed: int = 0,
    direction: str = "A->B",
) -> RateResult:
    """Rate A -> B by importance sampling: r = J_A · P_AB.

    1. An unbiased run started in A gives the flux J_A and exit points x₀
       (:func:`measure_flux`; pass ``flux=`` to reuse one).
    2. From each exit point (a root) one path runs with the biased kernel until
       it reaches B or returns to A; it carries its exact weight W.
    3. P_AB = mean over roots of W·1{B}, with its standard error over roots.

    For the reverse rate B -> A call it with ``start`` in B, the regions swapped
    and ``importance.reversed()``.

    Parameters
    ----------
    start : Atoms
        A configuration inside A with the calculator attached.
    importance : ImportanceFunction
    A, B : Region
    timestep : float
        In ASE time units (``0.005 * ase.units.fs``).
    temperature_K, friction
        In K and eV·fs/Å².
    n_roots : int
        Number of exit points, one biased path each.
    kernel, n_candidates, drift_refresh, max_steps
        See :class:`ase_rare.sampling.PathSampler`.
    channels : ChannelClassifier, optional
    """
    t0 = time.perf_counter()
    check_path_options(
        kernel,
        n_candidates=n_candidates,
        drift_refresh=drift_refresh,
        max_steps=max_steps,
    )
    if flux is not None:
        check_flux_matches(flux, timestep / units.fs, temperature_K, friction)
    if flux is None:
        flux = measure_flux(
            start,
            A,
            B,
            timestep=timestep,
            temperature_K=temperature_K,
            friction=friction,
            n_exit_points=n_roots,
            n_walkers=flux_walkers,
            seed=seed,
        )
    roots = torch.as_tensor(flux.exit_points[:n_roots], dtype=torch.float64)
    if roots.shape[0] < n_roots:
        raise ValueError(
            f"the flux run holds {roots.shape[0]} exit points, fewer than n_roots = "
            f"{n_roots}; run it with n_exit_points >= n_roots"
        )

    from ase_rare.kernels import LangevinParameters
    from ase_rare.potentials.adapter import as_batched

    potential = as_batched(start.calc, start)
    params = LangevinParameters(timestep / units.fs, temperature_K, friction)
    sampler = PathSampler(
        potential,
        importance,
        A,
        B,
        params=params,
        planar=bool(getattr(potential, "planar", False)),
        kernel=kernel,
        n_candidates=n_candidates,
        drift_refresh=drift_refresh,
        max_steps=max_steps,
        channels=channels,
        seed=seed + 7,
        free_coordinates=(
            free_coordinates_of(start, bool(getattr(potential, "planar", False)))
            if start.constraints
            else None
        ),
    )
    paths = sampler.run(roots, batch_size=batch_size)
    return combine(
        flux,
        paths,
        direction=direction,
        kernel=kernel,
        channel_names=list(channels.names) if channels is not None else [],
        wall_time_s=time.perf_counter() - t0,
        seed=seed,
    )


def combine(
    flux: BruteForceResult,
    paths: PathResults,
    *,
    direction: str,
    kernel: str,
    channel_names: list[str],
    wall_time_s: float,
    seed: int | None,
) -> RateResult:
    """Rate, errors, naive estimate and diagnostics from a flux run and paths."""
    s = paths.contribution
    n = len(s)
    p = s.mean()
    p_se = s.std(ddof=1) / math.sqrt(n)
    rate = flux.flux_per_fs * p
    rel = math.hypot(
        p_se / p if p > 0 else math.nan, flux.flux_se_per_fs / flux.flux_per_fs
    )
    i0 = np.exp(paths.log_importance_start)
    naive_p = i0.mean()

    # ESS, relative variance and channel fractions do not change when every
    # weight is scaled by one factor: form them from ln w shifted by its
    # largest value, so that they survive weights below the double range.
    succ = paths.success
    log_s = np.where(succ, paths.log_weight, -np.inf)
    scaled = np.exp(log_s - log_s.max()) if succ.any() else np.zeros(n)
    w = scaled[succ]
    ess = w.sum() ** 2 / (w**2).sum() if len(w) else 0.0
    log_ratio = log_s - paths.log_importance_start
    ratio = np.exp(log_ratio - log_ratio.max()) if succ.any() else np.zeros(n)
    rel_var = ratio.var(ddof=1) / ratio.mean() ** 2 if ratio.mean() > 0 else math.nan

    fr, fr_se, naive_fr = [], [], []
    if channel_names:
        k = len(channel_names)
        f, f_se = weighted_channel_fractions(scaled, paths.channel, k, seed=seed or 0)
        counts = np.array([(paths.channel[succ] == c).sum() for c in range(k)])
        fr, fr_se = f.tolist(), f_se.tolist()
        naive_fr = (counts / max(counts.sum(), 1)).tolist()

    return RateResult(
        direction=direction,
        temperature_K=flux.temperature_K,
        timestep_fs=flux.timestep_fs,
        friction_eV_fs_per_A2=flux.friction_eV_fs_per_A2,
        kernel=kernel,
        rate_per_fs=rate,
        rate_se_per_fs=rate * rel,
        success_probability=p,
        success_probability_se=p_se,
        flux_per_fs=flux.flux_per_fs,
        flux_se_per_fs=flux.flux_se_per_fs,
        naive_rate_per_fs=flux.flux_per_fs * naive_p,
        naive_success_probability=naive_p,
        n_roots=n,
        n_successes=int(succ.sum()),
        n_step_capped=int((paths.status == STEP_CAP).sum()),
        effective_sample_size=float(ess),
        relative_variance_per_root=float(rel_var),
        channel_names=channel_names,
        channel_fractions=fr,
        channel_fractions_se=fr_se,
        naive_channel_fractions=naive_fr,
        walker_steps=paths.walker_steps,
        flux_walker_steps=flux.walker_steps,
        importance_evaluations=paths.importance_evaluations,
        wall_time_s=wall_time_s,
        seed=seed,
        root_contributions=s.tolist(),
        root_log_importance=paths.log_importance_start.tolist(),
    )
