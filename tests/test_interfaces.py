"""Interface splitting: the forward-flux P_AB and a fit to the crossing counts."""

import math

import torch
from setups import HOT_2D_DT, HOT_2D_K, hot_2d_inputs

from ase_rare import estimate_rate
from ase_rare.importance import MLPImportance
from ase_rare.interfaces import (
    CommittorLabels,
    committor_deviance,
    fit_interface_committors,
    fit_interface_states,
    interface_log_likelihood,
    interface_states,
)

torch.set_num_threads(1)


def splitting(system, importance, flux, seed):
    return interface_states(
        importance,
        system.start_A,
        system.A,
        system.B,
        flux.exit_points,
        temperature_K=HOT_2D_K,
        timestep=HOT_2D_DT,
        trials=8,
        states_per_level=256,
        spacing=1.0,
        top=-0.7,
        top_states=256,
        seed=seed,
    )


def test_forward_flux_product_matches_importance_sampling():
    """Two unbiased estimators of P_AB of the same chain agree.

    Splitting on the 3000 K grid committor's levels versus one tilted path per
    root with it, on the same 64 exit points. The spread of the splitting
    estimate is measured over 6 seeds (its SE is not computed per run); the
    two agree within 4 combined SE, a false alarm below 1e-4.
    """
    system, importance, flux = hot_2d_inputs()
    logs = [
        splitting(system, importance, flux, s).log_success_probability for s in range(6)
    ]
    p = torch.tensor([math.exp(v) for v in logs], dtype=torch.float64)
    p_mean, p_se = float(p.mean()), float(p.std() / math.sqrt(len(p)))
    r = estimate_rate(
        system.start_A,
        importance,
        system.A,
        system.B,
        timestep=HOT_2D_DT,
        temperature_K=HOT_2D_K,
        flux=flux,
        n_roots=len(flux.exit_points),
        seed=2,
    )
    se = math.hypot(p_se, r.success_probability_se)
    assert abs(p_mean - r.success_probability) < 4 * se, (
        p.tolist(),
        r.success_probability,
        se,
    )


def test_fit_raises_the_likelihood_of_the_crossings():
    system, importance, flux = hot_2d_inputs()
    data = splitting(system, importance, flux, 0)
    assert data.n_crossed.max() <= data.trials and len(data) == len(data.level)
    torch.manual_seed(0)
    net = MLPImportance(1, coordinates=[(0, 0), (0, 1)], hidden=(16, 16))
    every = torch.arange(len(data))
    with torch.no_grad():
        before = float(interface_log_likelihood(net, data, every))
    losses = fit_interface_states(net, data, steps=200, learning_rate=3e-3)
    with torch.no_grad():
        after = float(interface_log_likelihood(net, data, every))
    assert after > before and math.isfinite(losses[-1])


def test_tree_committors_are_consistent_and_fit():
    """Each state's own committor from its descendants, and a fit to them.

    The level means of the tree estimates fall from the top down (each level
    is harder to leave toward B than the next), the exit points' mean is the
    P_AB of the splitting, and the Poisson deviance falls under the fit.
    """
    system, importance, flux = hot_2d_inputs()
    data = splitting(system, importance, flux, 1)
    levels = [data.level_committor(k) for k in range(len(data.interfaces))]
    assert all(a < b for a, b in zip(levels, levels[1:], strict=False))
    assert levels[-1] < data.top_committor
    assert float(data.committor.max()) <= 1.0 and float(data.committor.min()) >= 0.0
    assert math.isclose(
        math.exp(data.log_success_probability), levels[0], rel_tol=1e-12
    )
    labels = CommittorLabels.from_interfaces(data, data)
    assert len(labels) == 2 * (len(data) + len(data.top_states))
    torch.manual_seed(0)
    net = MLPImportance(1, coordinates=[(0, 0), (0, 1)], hidden=(16, 16))
    every = torch.arange(len(labels))
    with torch.no_grad():
        before = float(committor_deviance(net, labels, every))
    fit_interface_committors(net, labels, steps=200, learning_rate=3e-3)
    with torch.no_grad():
        after = float(committor_deviance(net, labels, every))
    assert after < before and math.isfinite(after)
