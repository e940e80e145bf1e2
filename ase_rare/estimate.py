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
    exits_per_point: int = 10,
) -> BruteForceResult:
    """Unbiased run in A: the flux J_A and a uniform sample of exit points.

    Runs until at least ``exits_per_point × n_exit_points`` exits have been
    seen (so the sample is spread over many independent excursions; 1 keeps
    every exit, the cheapest pool for :func:`importance_roots`) after an equilibration
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
    if exits_per_point < 1:
        raise ValueError(f"exits_per_point must be >= 1; got {exits_per_point}")
    wanted = exits_per_point * n_exit_points
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


def importance_roots(
    flux: BruteForceResult,
    importance: ImportanceFunction,
    n_roots: int,
    *,
    uniform_fraction: float = 0.1,
    seed: int = 0,
    batch_size: int = 8192,
) -> BruteForceResult:
    """Draw ``n_roots`` roots from a pool of exit points in proportion to ``I``.

    ``P_AB`` is the mean committor over the exit points, and a few of them
    carry much of it (on LJ7 at 600 K the 0.5 % of exits with the largest I
    hold a third of it, the largest of all next to S2): uniform roots leave
    the error dominated by which exits happened to be drawn. Here each exit
    ``j`` of the pool of ``N`` is drawn (with replacement) with probability

        p_j = (1 − u) · v_j I(x_j) / Σ_k v_k I(x_k) + u v_j / N,

    with ``v_j`` the exit's weight (1 for an unbiased flux run; mean 1 for a
    weighted ensemble, :mod:`ase_rare.flux_splitting`), ``u = uniform_fraction``
    > 0 keeping every exit possible; its root carries the weight
    ``v_j / (N p_j)``: the estimate stays unbiased for the
    pool's mean committor whatever ``I``, and with ``I`` near ``q`` the root
    contributions are near equal. The pool's own sampling error (which no
    choice of roots removes) is estimated with ``I`` in place of ``q`` over
    the independent walkers of the flux run and carried into every rate error.

    Returns a copy of ``flux`` holding the roots, their ``root_log_weights``,
    ``root_pool_size`` and ``root_pool_relative_se``; pass it as ``flux=`` to
    :func:`estimate_rate` or :class:`ase_rare.Ensemble` with the same
    ``n_roots``. A large pool is cheap: ``measure_flux(...,
    n_exit_points=10**6, exits_per_point=1)``; one whose mean committor
    scatters far less is the weighted ensemble of
    :func:`ase_rare.flux_splitting.split_flux_run`.
    """
    import dataclasses

    if flux.root_log_weights is not None:
        raise ValueError(
            "this flux result holds roots drawn by importance_roots already; "
            "draw from the flux run's own exit points"
        )
    if flux.exit_points is None or len(flux.exit_points) < 2:
        raise ValueError("the flux run holds no pool of exit points to draw from")
    if not 0.0 < uniform_fraction <= 1.0:
        raise ValueError(
            f"uniform_fraction must lie in (0, 1] (0 would make exits with I = 0 "
            f"impossible and the estimate biased); got {uniform_fraction}"
        )
    if n_roots < 2:
        raise ValueError(f"n_roots must be >= 2; got {n_roots}")
    x = torch.as_tensor(np.asarray(flux.exit_points), dtype=torch.float64)
    n_pool = len(x)
    with torch.no_grad():
        log_i = torch.cat(
            [
                importance.log_importance(x[i : i + batch_size]).to(torch.float64)
                for i in range(0, n_pool, batch_size)
            ]
        )
    if not bool(torch.isfinite(log_i).all()):
        raise ValueError(
            "ln I is not finite at some exit points (inside A?); the pool must "
            "hold exits from a flux run of the same regions"
        )
    # Exit weights of a weighted-ensemble flux run (mean 1), else 1 each.
    if flux.exit_weights is not None:
        v = torch.as_tensor(np.asarray(flux.exit_weights), dtype=torch.float64)
        v = v / v.mean()
    else:
        v = torch.ones(n_pool, dtype=torch.float64)
    log_v = torch.log(v)
    log_vi = log_v + log_i
    log_p = torch.logaddexp(
        math.log1p(-uniform_fraction) + log_vi - torch.logsumexp(log_vi, 0)
        if uniform_fraction < 1
        else torch.full_like(log_i, -math.inf),
        math.log(uniform_fraction) + log_v - math.log(n_pool),
    )
    # Inverse-CDF draws (torch.multinomial stops at 2**24 categories).
    generator = torch.Generator().manual_seed(seed)
    cdf = torch.cumsum(torch.exp(log_p - log_p.max()), 0)
    u = torch.rand(n_roots, generator=generator, dtype=torch.float64) * cdf[-1]
    pick = torch.searchsorted(cdf, u).clamp(max=n_pool - 1)
    i = (v * torch.exp(log_i - log_i.max())).numpy()
    if flux.exit_walkers is not None and len(flux.exit_walkers) == n_pool:
        walker = np.asarray(flux.exit_walkers)
    else:
        walker = np.arange(n_pool)
    _, block = np.unique(walker, return_inverse=True)
    sums = np.bincount(block, weights=i)
    counts = np.bincount(block, weights=v.numpy())
    mean = sums.sum() / counts.sum()
    m = len(sums)
    var = m / max(m - 1, 1) * ((sums - mean * counts) ** 2).sum() / counts.sum() ** 2
    return dataclasses.replace(
        flux,
        exit_points=x[pick].numpy(),
        exit_walkers=None,
        exit_weights=None,
        root_log_weights=(log_v[pick] - math.log(n_pool) - log_p[pick]).numpy(),
        root_pool_size=n_pool,
        root_pool_relative_se=float(math.sqrt(var) / mean),
    )


def root_weights(flux: BruteForceResult, n_roots: int) -> np.ndarray:
    """The weight of each of the first ``n_roots`` roots (1 for uniform roots)."""
    if flux.root_log_weights is None:
        return np.ones(n_roots)
    return np.exp(np.asarray(flux.root_log_weights[:n_roots], dtype=np.float64))


def weighted_success_probability(
    s: np.ndarray, weights: np.ndarray, pool_relative_se: float = 0.0
) -> tuple[float, float]:
    """P_AB and its SE from per-root contributions and root weights.

    The SE adds, in quadrature, the spread over roots and the pool's own
    relative error (0 for uniform roots, whose spread contains it already).
    """
    sw = s * weights
    n = len(sw)
    p = float(sw.mean())
    p_se = float(sw.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return p, math.hypot(p_se, p * pool_relative_se)


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
    omega = root_weights(flux, n)
    p, p_se = weighted_success_probability(s, omega, flux.root_pool_relative_se)
    rate = flux.flux_per_fs * p
    rel = math.hypot(
        p_se / p if p > 0 else math.nan, flux.flux_se_per_fs / flux.flux_per_fs
    )
    i0 = np.exp(paths.log_importance_start)
    naive_p = float((omega * i0).mean())

    # ESS, relative variance and channel fractions do not change when every
    # weight is scaled by one factor: form them from ln w shifted by its
    # largest value, so that they survive weights below the double range.
    succ = paths.success
    log_s = np.where(succ, paths.log_weight, -np.inf)
    scaled = np.exp(log_s - log_s.max()) * omega if succ.any() else np.zeros(n)
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
        root_log_weights=np.log(omega).tolist() if flux.root_pool_size else [],
        root_pool_size=flux.root_pool_size,
        root_pool_relative_se=flux.root_pool_relative_se,
    )
