"""The branching ensemble: split/roulette, per-root books, checkpoints."""

import copy
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from setups import HOT_2D_DT, HOT_2D_K, hot_2d_inputs

from ase_rare.ensemble import Branching, Ensemble, branch
from ase_rare.estimate import measure_flux
from ase_rare.kernels import LangevinParameters
from ase_rare.sampling import REACHED_B, PathSampler

torch.set_num_threads(1)

T_K, DT = HOT_2D_K, HOT_2D_DT


@pytest.fixture(scope="module")
def setup():
    return hot_2d_inputs()


def make(setup, **kwargs):
    system, importance, flux = setup
    options = dict(
        temperature_K=T_K,
        timestep=DT,
        flux=flux,
        n_roots=64,
        roots_per_batch=16,
        channels=system.channels,
        seed=11,
        max_steps=20000,
    )
    options.update(kwargs)
    return Ensemble(system.start_A, importance, system.A, system.B, **options)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-6.0, 4.0), min_size=1, max_size=40),
    st.integers(0, 2**31 - 1),
)
def test_branching_conserves_expected_weight(log_ratios, seed):
    """Split keeps the weight exactly; roulette keeps it in expectation.

    For each walker the expected total weight after the rule, Σ copies · w',
    equals w. Splits are checked exactly; roulette survivors carry w/p, so over
    many draws the mean total weight is w to within the binomial error (5 SE).
    """
    rule = Branching()
    lr = torch.tensor(log_ratios, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    copies, dlogw = branch(lr, rule, gen)
    ratio = torch.exp(lr)
    split = ratio > rule.c_hi
    kept = copies[split] * torch.exp(dlogw[split])
    assert torch.allclose(kept, torch.ones_like(kept), rtol=1e-12)
    assert bool((copies[~split] <= 1).all())
    assert int(copies.max()) <= rule.m_max
    middle = (ratio >= rule.c_lo) & ~split
    assert bool((copies[middle] == 1).all()) and bool((dlogw[middle] == 0).all())

    low = ratio < rule.c_lo
    if bool(low.any()):
        n = 4000
        lr_low = lr[low].repeat(n)
        c, d = branch(lr_low, rule, gen)
        total = (c * torch.exp(d)).reshape(n, -1).mean(0)
        p = torch.exp(lr[low])
        se = torch.sqrt((1 - p) / (p * n))
        assert bool(((total - 1).abs() <= 5 * se + 1e-12).all())


def test_population_cap_is_respected():
    rule = Branching(m_max=10)
    lr = torch.full((50,), math.log(8.0), dtype=torch.float64)
    copies, dlogw = branch(lr, rule, torch.Generator().manual_seed(0), room=30)
    assert int(copies.sum()) - 50 <= 30
    # Walkers not split keep their weight: still unbiased.
    assert torch.allclose(
        copies * torch.exp(dlogw), torch.ones(50, dtype=torch.float64)
    )


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.floats(-8.0, 6.0), min_size=1, max_size=60),
    st.integers(0, 200),
    st.integers(2, 12),
    st.integers(0, 2**31 - 1),
)
def test_population_cap_holds_for_random_populations(log_ratios, room, m_max, seed):
    """Whatever the weights: at most ``room`` extra walkers, none lost by the cap.

    Every walker ends with 0 copies (roulette), or copies whose weights sum to
    its own (split, or kept whole when the cap leaves no room).
    """
    rule = Branching(m_max=m_max)
    lr = torch.tensor(log_ratios, dtype=torch.float64)
    copies, dlogw = branch(lr, rule, torch.Generator().manual_seed(seed), room=room)
    assert int(copies.sum()) - len(lr) <= room
    assert int(copies.min()) >= 0 and int(copies.max()) <= m_max
    survived = copies > 0
    roulette = survived & (torch.exp(lr) < rule.c_lo)
    whole = survived & ~roulette
    total = copies[whole] * torch.exp(dlogw[whole])
    assert torch.allclose(total, torch.ones_like(total), rtol=1e-12)
    # A roulette survivor carries w / p: its log-weight rises by -ln(v/v*).
    assert torch.allclose(dlogw[roulette], -lr[roulette], rtol=1e-12)


def test_bad_branching_rules_are_refused():
    for kwargs in (dict(c_lo=1.5), dict(c_hi=0.9), dict(m_max=1), dict(target="x")):
        with pytest.raises(ValueError):
            Branching(**kwargs)


def test_same_seed_same_result_and_batches_independent(setup):
    a = make(setup, branching=Branching()).run()
    b = make(setup, branching=Branching()).run()
    assert a.to_dict() | {"wall_time_s": 0} == b.to_dict() | {"wall_time_s": 0}
    # Batch results depend only on the batch index: running batches in another
    # order gives the same per-root numbers.
    e1 = make(setup, branching=Branching())
    e2 = make(setup, branching=Branching())
    r1 = e1._run_batch(2)
    e2._run_batch(0)
    r2 = e2._run_batch(2)
    np.testing.assert_array_equal(r1.contribution, r2.contribution)


def test_different_seeds_agree_statistically(setup):
    """Five seeds give five different estimates, consistent within their SE.

    The spread is tested by chi-square on 4 degrees of freedom against its
    0.9999 quantile (23.5), so a fixed-seed false alarm has odds below 1e-4.
    The runs share their exit points, which only narrows the spread: the check
    errs towards passing, yet still catches a seed that biases the estimate.
    """
    runs = [make(setup, branching=Branching(), seed=s).run() for s in range(5)]
    p = np.array([r.success_probability for r in runs])
    se = np.array([r.success_probability_se for r in runs])
    assert len(set(p.tolist())) == len(p), "seeds must change the result"
    assert np.all(se > 0)
    w = 1.0 / se**2
    mean = (w * p).sum() / w.sum()
    chi2 = float((((p - mean) / se) ** 2).sum())
    assert chi2 < 23.5, f"chi2 = {chi2:.1f} on 4 dof for p = {p}, se = {se}"


def test_checkpoint_resume_is_identical(setup, tmp_path):
    path = tmp_path / "run.ckpt"
    full = make(setup, branching=Branching()).run()

    first = make(setup, branching=Branching(), checkpoint=path)
    runner = first.irun()
    next(runner)
    next(runner)  # two of four batches finished and saved, then "killed"
    del runner, first

    resumed = make(setup, branching=Branching(), checkpoint=path)
    assert sorted(resumed.batches) == [0, 1]
    computed = []
    resumed.attach(lambda: computed.append(len(resumed.batches)))
    result = resumed.run()
    assert computed == [3, 4]  # only the unfinished batches ran
    keep = {"wall_time_s": 0}
    assert result.to_dict() | keep == full.to_dict() | keep


def test_checkpoint_of_another_run_or_corrupted_is_refused(setup, tmp_path):
    path = tmp_path / "run.ckpt"
    e = make(setup, branching=Branching(), checkpoint=path)
    next(e.irun())
    with pytest.raises(ValueError, match="different run"):
        make(setup, branching=Branching(), checkpoint=path, seed=12)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupted"):
        make(setup, branching=Branching(), checkpoint=path)


def test_unwritable_checkpoint_is_a_clear_error(setup, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    e = make(setup, branching=None, checkpoint=blocker / "sub" / "run.ckpt")
    with pytest.raises(OSError, match="checkpoint"):
        next(e.irun())


def test_too_few_exit_points_is_refused(setup):
    with pytest.raises(ValueError, match="exit points"):
        make(setup, n_roots=1000)


@pytest.mark.slow
def test_branching_estimate_agrees_with_plain_paths(setup):
    """Both estimators are unbiased: they agree within 4 combined SE.

    Four SE keep the false-alarm rate of this fixed-seed check below 1e-4.
    """
    system, importance, _ = setup
    flux = measure_flux(
        system.start_A,
        system.A,
        system.B,
        timestep=DT,
        temperature_K=T_K,
        n_exit_points=600,
        n_walkers=128,
        seed=4,
    )
    kw = dict(flux=flux, n_roots=600, roots_per_batch=200)
    plain = make(setup, branching=None, **kw).run()
    brw = make(setup, branching=Branching(), **kw).run()
    diff = abs(plain.rate_per_fs - brw.rate_per_fs)
    assert diff < 4 * math.hypot(plain.rate_se_per_fs, brw.rate_se_per_fs)


def test_root_already_in_B_is_an_immediate_success(setup):
    """An exit point inside B counts with weight 1, in both estimators."""
    system, importance, flux = setup
    flux = copy.deepcopy(flux)
    flux.exit_points[0] = system.start_B.positions
    for rule in (None, Branching()):
        e = make(setup, flux=flux, branching=rule)
        batch = e._run_batch(0)
        assert batch.contribution[0] == 1.0
    sampler = PathSampler(
        system.start_A.calc,
        importance,
        system.A,
        system.B,
        params=LangevinParameters(0.02, T_K, 1.0),
        planar=True,
        seed=1,
    )
    paths = sampler.run(torch.as_tensor(flux.exit_points[:4]))
    assert paths.status[0] == REACHED_B and paths.log_weight[0] == 0.0
    assert paths.steps[0] == 0
