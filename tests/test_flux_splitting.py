"""The weighted-ensemble flux run: exact resampling, and the same J_A and pool."""

import math

import numpy as np
import pytest
import torch
from setups import HOT_2D_DT, HOT_2D_K, hot_2d_inputs

from ase_rare import estimate_rate, importance_roots
from ase_rare.estimate import measure_flux
from ase_rare.flux_splitting import FluxSplitting, _resample, split_flux_run

torch.set_num_threads(1)


def test_resampling_keeps_each_bins_weight_and_is_unbiased():
    key = torch.tensor([0, 0, 0, 2, 2, 5])
    weight = torch.tensor([0.5, 0.25, 0.25, 1e-3, 3e-3, 0.7], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    copies = torch.zeros(6, dtype=torch.float64)
    draws = 4000
    for _ in range(draws):
        parent, new_w = _resample(key, weight, 4, g)
        assert len(parent) == 12  # 4 per occupied key
        for k in (0, 2, 5):
            here = key[parent] == k
            assert int(here.sum()) == 4
            assert math.isclose(
                float(new_w[here].sum()), float(weight[key == k].sum()), rel_tol=1e-12
            )
        given = torch.zeros(6, dtype=torch.float64).index_add_(0, parent, new_w)
        copies += given / weight
    # Expected copies × new weight = the walker's weight; systematic
    # resampling keeps each count within one of its mean, so 4000 draws pin
    # the mean to about 1 %.
    assert torch.allclose(copies / draws, torch.ones(6, dtype=torch.float64), atol=0.05)


def _runs(n_exit_points=4000):
    system, importance, _ = hot_2d_inputs()
    we = split_flux_run(
        system.start_A,
        system.A,
        system.B,
        FluxSplitting(importance, every=10, walkers_per_bin=4, groups=16, spacing=1.0),
        timestep=HOT_2D_DT,
        temperature_K=HOT_2D_K,
        n_exit_points=n_exit_points,
        equilibrate_fs=2.0,
        seed=1,
    )
    plain = measure_flux(
        system.start_A,
        system.A,
        system.B,
        timestep=HOT_2D_DT,
        temperature_K=HOT_2D_K,
        n_exit_points=n_exit_points,
        n_walkers=64,
        exits_per_point=1,
        seed=2,
    )
    return system, importance, we, plain


def test_weighted_ensemble_gives_the_flux_and_pool_of_the_plain_run():
    """J_A and the pool's mean I agree with a plain run within 4 combined SE.

    The pool means' SEs are those importance_roots carries (over groups for
    the weighted ensemble, over walkers for the plain run); 4 SE keeps a
    false alarm below 1e-4.
    """
    system, importance, we, plain = _runs()
    assert len(we.exit_points) == len(we.exit_weights) == we.n_exits
    assert math.isclose(float(np.mean(we.exit_weights)), 1.0, rel_tol=1e-9)
    assert we.splitting_levels and we.importance_evaluations > 0
    se = math.hypot(we.flux_se_per_fs, plain.flux_se_per_fs)
    assert abs(we.flux_per_fs - plain.flux_per_fs) < 4 * se
    a = importance_roots(we, importance, 100)
    b = importance_roots(plain, importance, 100)

    def pool_mean(flux):
        x = torch.as_tensor(flux.exit_points)
        with torch.no_grad():
            i = torch.exp(importance.log_importance(x).double()).numpy()
        v = flux.exit_weights if flux.exit_weights is not None else np.ones(len(i))
        return float((v * i).sum() / v.sum())

    ma, mb = pool_mean(we), pool_mean(plain)
    se = math.hypot(ma * a.root_pool_relative_se, mb * b.root_pool_relative_se)
    assert abs(ma - mb) < 4 * se, (ma, mb, se)


def test_rate_from_a_weighted_pool_agrees_with_a_plain_one():
    system, importance, we, plain = _runs()
    rates = []
    for pool in (we, plain):
        roots = importance_roots(pool, importance, 1000, seed=3)
        rates.append(
            estimate_rate(
                system.start_A,
                importance,
                system.A,
                system.B,
                timestep=HOT_2D_DT,
                temperature_K=HOT_2D_K,
                flux=roots,
                n_roots=1000,
                seed=4,
            )
        )
    a, b = rates
    se = math.hypot(a.rate_se_per_fs, b.rate_se_per_fs)
    assert abs(a.rate_per_fs - b.rate_per_fs) < 4 * se


def test_refuses_bad_settings():
    system, importance, _ = hot_2d_inputs()
    with pytest.raises(ValueError, match="groups >= 2"):
        FluxSplitting(importance, groups=1)
    with pytest.raises(ValueError, match="levels must increase"):
        FluxSplitting(importance, levels=(-3.0, -5.0))
    with pytest.raises(ValueError, match="not inside region A"):
        split_flux_run(
            system.start_B,
            system.A,
            system.B,
            FluxSplitting(importance),
            timestep=HOT_2D_DT,
            temperature_K=HOT_2D_K,
            n_exit_points=10,
        )
