"""Roots drawn in proportion to I from a pool of exits, with exact weights."""

import math

import numpy as np
import pytest
import torch
from setups import HOT_2D_DT, HOT_2D_K, hot_2d_inputs

from ase_rare import Branching, Ensemble, estimate_rate, importance_roots
from ase_rare.bruteforce import shoot
from ase_rare.estimate import measure_flux
from ase_rare.kernels import LangevinParameters

torch.set_num_threads(1)


def pool_of(system, n=3000, seed=8):
    return measure_flux(
        system.start_A,
        system.A,
        system.B,
        timestep=HOT_2D_DT,
        temperature_K=HOT_2D_K,
        n_exit_points=n,
        n_walkers=64,
        exits_per_point=1,
        seed=seed,
    )


def rate(system, importance, flux, n, seed):
    return estimate_rate(
        system.start_A,
        importance,
        system.A,
        system.B,
        timestep=HOT_2D_DT,
        temperature_K=HOT_2D_K,
        flux=flux,
        n_roots=n,
        channels=system.channels,
        seed=seed,
    )


def test_pool_keeps_every_exit_and_its_walker():
    system, _, _ = hot_2d_inputs()
    pool = pool_of(system, n=500)
    assert pool.n_exits >= 500 and len(pool.exit_points) == 500
    walkers = pool.exit_walkers
    assert walkers.shape == (500,) and walkers.min() >= 0 and walkers.max() < 64
    assert len(np.unique(walkers)) > 32  # exits come from many walkers


def test_weights_are_one_over_pool_size_times_probability():
    """ln ω = −ln(N p_j) for the drawn exits, with p_j recomputed from I."""
    system, importance, _ = hot_2d_inputs()
    pool = pool_of(system, n=400)
    roots = importance_roots(pool, importance, 200, uniform_fraction=0.2, seed=1)
    x = torch.as_tensor(pool.exit_points)
    with torch.no_grad():
        i = torch.exp(importance.log_importance(x).double()).numpy()
    p = 0.8 * i / i.sum() + 0.2 / len(i)
    # Match each root to its exit in the pool (exit points are distinct).
    flat = pool.exit_points.reshape(len(i), -1)
    index = [
        int(np.argmin(((flat - r.ravel()) ** 2).sum(1))) for r in roots.exit_points
    ]
    assert np.allclose(roots.root_log_weights, -np.log(len(i) * p[index]), atol=1e-9)
    # The weights average to 1 under p: Σ_j p_j / (N p_j) = 1.
    assert math.isclose((p / (len(i) * p)).sum(), 1.0)
    assert roots.root_pool_size == 400 and 0 < roots.root_pool_relative_se < 1


def test_drawn_roots_agree_with_uniform_roots():
    """Both estimate the mean committor over exits of the same flux run.

    1500 uniform roots (the pool's first exits) against 1500 drawn in
    proportion to I from the pool of 3000; they agree within 4 combined SE
    (false alarm below 1e-4; the estimates share the pool, which only makes
    the check stricter). Here, where the committor varies little over the
    exits and I is that of another temperature, drawing does not lower the
    variance (it does on LJ7, where a few exits carry much of P_AB; see
    ``examples/lj7_importance.py``), but it must not move the estimate.
    """
    system, importance, _ = hot_2d_inputs()
    pool = pool_of(system)
    uniform = rate(system, importance, pool, 1500, seed=4)
    roots = importance_roots(pool, importance, 1500, seed=2)
    drawn = rate(system, importance, roots, 1500, seed=4)
    se = math.hypot(uniform.success_probability_se, drawn.success_probability_se)
    assert abs(drawn.success_probability - uniform.success_probability) < 4 * se
    assert drawn.root_pool_size == 3000 and len(drawn.root_log_weights) == 1500
    # The naive estimate of drawn roots is the pool's mean I, exactly.
    with torch.no_grad():
        mean_i = float(
            importance.log_importance(torch.as_tensor(pool.exit_points)).exp().mean()
        )
    assert math.isclose(drawn.naive_success_probability, mean_i, rel_tol=0.2)


def test_branching_ensemble_weighs_its_roots():
    """The Ensemble's P is the weighted mean of its per-root contributions."""
    system, importance, _ = hot_2d_inputs()
    roots = importance_roots(pool_of(system, n=800), importance, 256, seed=5)
    with Ensemble(
        system.start_A,
        importance,
        system.A,
        system.B,
        temperature_K=HOT_2D_K,
        timestep=HOT_2D_DT,
        flux=roots,
        n_roots=256,
        roots_per_batch=64,
        branching=Branching(),
        channels=system.channels,
        seed=3,
    ) as ens:
        r = ens.run()
    w = np.exp(r.root_log_weights)
    s = np.asarray(r.root_contributions)
    assert math.isclose(r.success_probability, float((w * s).mean()), rel_tol=1e-12)
    se_roots = (w * s).std(ddof=1) / math.sqrt(len(s))
    expected = math.hypot(se_roots, r.success_probability * r.root_pool_relative_se)
    assert math.isclose(r.success_probability_se, expected, rel_tol=1e-9)
    assert math.isclose(sum(r.channel_fractions), 1.0, rel_tol=1e-9)
    assert "pool of" in r.summary()


def test_refuses_bad_requests():
    system, importance, _ = hot_2d_inputs()
    pool = pool_of(system, n=100)
    roots = importance_roots(pool, importance, 10)
    with pytest.raises(ValueError, match="drawn by importance_roots already"):
        importance_roots(roots, importance, 10)
    with pytest.raises(ValueError, match="uniform_fraction"):
        importance_roots(pool, importance, 10, uniform_fraction=0.0)
    with pytest.raises(ValueError, match="exits_per_point"):
        measure_flux(
            system.start_A,
            system.A,
            system.B,
            timestep=HOT_2D_DT,
            temperature_K=HOT_2D_K,
            n_exit_points=10,
            exits_per_point=0,
        )


def test_shoot_can_count_undecided_walkers_as_failures():
    system, _, _ = hot_2d_inputs()
    params = LangevinParameters(HOT_2D_DT, HOT_2D_K, 1.0)
    mid = torch.zeros((4, 1, 3), dtype=torch.float64)  # between A and B
    potential = system.start_A.calc
    g = torch.Generator().manual_seed(0)
    with pytest.raises(RuntimeError, match="undecided"):
        shoot(potential, system.A, system.B, mid, params, g, 1)
    hit = shoot(potential, system.A, system.B, mid, params, g, 1, undecided="fail")
    assert hit.dtype == torch.bool and not bool(hit.any())
