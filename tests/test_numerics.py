"""Numerical robustness at low temperature: no NaN, no weight underflowing to zero.

At 600 K the 2D committor near A is about e^-20 and at 300 K the LJ7 one about
e^-25; products of thousands of per-step weight factors would underflow in
linear space. These tests run real paths there and check that every ln-weight
stays finite and every success keeps a positive weight.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from ase import units

from ase_rare import Ensemble, estimate_rate, measure_flux
from ase_rare.importance import GridImportance, SchNetImportance
from ase_rare.systems import lj7_system, two_channel_system
from ase_rare.theory import solve_grid_tpt


def test_2d_at_600K_weights_finite_and_rate_positive():
    system = two_channel_system()
    grid = solve_grid_tpt(
        system.start_A.calc,
        system.A,
        system.B,
        temperature_K=600.0,
        box=(-2.2, 2.2, -2.2, 2.2),
        spacing=0.04,
    )
    importance = GridImportance.from_grid_tpt(grid)
    flux = measure_flux(
        system.start_A,
        system.A,
        system.B,
        timestep=0.01 * units.fs,
        temperature_K=600.0,
        n_exit_points=64,
        n_walkers=64,
        seed=1,
    )
    result = estimate_rate(
        system.start_A,
        importance,
        system.A,
        system.B,
        timestep=0.01 * units.fs,
        temperature_K=600.0,
        n_roots=64,
        flux=flux,
        max_steps=20_000,
        seed=2,
    )
    contributions = np.asarray(result.root_contributions)
    log_i0 = np.asarray(result.root_log_importance)
    assert np.isfinite(log_i0).all()
    # The answer is about 1e-9 per root, far from zero: it must not underflow.
    assert log_i0.max() < -10
    assert result.n_successes > 0
    assert np.isfinite(contributions).all()
    assert (contributions[contributions != 0] > 0).all()
    assert 0 < result.rate_per_fs < 1e-6
    assert math.isfinite(result.rate_se_per_fs)
    assert math.isfinite(result.relative_variance_per_root)


def test_lj7_at_300K_weights_finite_with_a_very_small_importance():
    system = lj7_system()
    torch.manual_seed(0)
    # An untrained network pushed to ln I ≈ -40: the paths and weights must
    # stay finite in log space even where I itself is near the double range.
    importance = SchNetImportance(
        7, n_atom_basis=8, n_interactions=1, n_rbf=8, cutoff=4.0, logit_offset=-40.0
    )
    flux = measure_flux(
        system.start_A,
        system.A,
        system.B,
        timestep=0.005 * units.fs,
        temperature_K=300.0,
        n_exit_points=32,
        n_walkers=32,
        seed=3,
    )
    assert np.isfinite(flux.exit_points).all()
    with Ensemble(
        system.start_A,
        importance,
        system.A,
        system.B,
        temperature_K=300.0,
        timestep=0.005 * units.fs,
        flux=flux,
        n_roots=32,
        max_steps=300,
        seed=4,
    ) as ensemble:
        result = ensemble.run()
    log_i0 = np.asarray(result.root_log_importance)
    assert np.isfinite(log_i0).all() and log_i0.max() < -30
    assert np.isfinite(result.root_contributions).all()
    assert result.n_roots == 32
    # Every path ended: in A, in B, or at the cap (which is reported).
    assert result.n_step_capped >= 0
    assert math.isfinite(result.success_probability)
