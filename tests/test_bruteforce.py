"""Brute-force rates: the ratio estimator, the exit-point reservoir, the engine.

Statistical tests use fixed seeds and tolerances of a few standard errors (SE),
each derived next to the test; with the seed fixed they are deterministic, and
with any other seed they would fail with the stated (small) probability.
"""

import json
import math

import numpy as np
import pytest
import torch
from ase import units

from ase_rare import AtomCoordinates, DiscRegion
from ase_rare.bruteforce import (
    BruteForce,
    BruteForceResult,
    _ExitReservoir,
    brute_force_rate,
    ratio_with_error,
)
from ase_rare.channels import CrossingChannels
from ase_rare.systems import TWO_CHANNEL_MINIMA, two_channel_system
from ase_rare.theory import solve_grid_tpt

# Hot enough (k_B T = 0.34 eV against a 1.1 eV barrier) that 100 walkers see tens
# of transitions in a few hundred steps: the engine's bookkeeping is exercised
# without waiting for rare events.
HOT_K = 4000.0
HOT_DT_FS = 0.05


@pytest.fixture(scope="module")
def system():
    return two_channel_system()


def hot_engine(system, **kwargs) -> BruteForce:
    args = dict(
        timestep=HOT_DT_FS * units.fs,
        temperature_K=HOT_K,
        n_walkers=96,
        seed=3,
        channels=system.channels,
    )
    args.update(kwargs)
    return BruteForce(system.start_A, system.A, system.B, **args)


# --------------------------------------------------------------------------
# The ratio estimator
# --------------------------------------------------------------------------


def test_ratio_with_error_matches_spread_of_poisson_walkers(rng):
    """Walkers with fixed, unequal times T_i and Poisson counts N_i ~ P(λ T_i).

    Then r̂ = ΣN/ΣT is unbiased with variance λ/ΣT exactly, and the estimator's
    SE² has expectation (λ/ΣT) · n/(n−1) · (1 − ΣT²/(ΣT)²), a fraction of a
    percent below it for these times.
    """
    rate, n, reps = 0.3, 64, 4000
    times = rng.uniform(1.0, 10.0, size=n)
    counts = rng.poisson(rate * times, size=(reps, n))
    est = np.array([ratio_with_error(c, times) for c in counts])
    r_hat, se = est[:, 0], est[:, 1]
    total = times.sum()

    # Mean of 4000 unbiased estimates: its SE is sqrt(λ/ΣT / reps); 4 SE.
    assert abs(r_hat.mean() - rate) < 4 * math.sqrt(rate / total / reps)

    # The claim under test: the reported SE equals the spread of the estimator
    # over repetitions. The empirical standard deviation of 4000 near-Gaussian
    # values has a relative SE of 1/sqrt(2·3999) = 1.1 %; the bias of the SE
    # (computed exactly below) is 0.3 %. A 5 % tolerance is about 4 SE.
    assert np.sqrt(np.mean(se**2)) / r_hat.std(ddof=1) == pytest.approx(1, abs=0.05)

    # Expected SE², exactly; mean of 4000 SE² values, relative SE about 1 %.
    expected = rate / total * n / (n - 1) * (1 - (times**2).sum() / total**2)
    assert np.mean(se**2) == pytest.approx(expected, rel=0.05)


def test_ratio_with_error_does_not_assume_poisson_counts(rng):
    """Renewal processes with Gamma(2) gaps count more regularly than Poisson.

    Their counts in a long window have a variance about half their mean (Fano
    factor 1/2), so the Poisson error sqrt(ΣN)/ΣT overstates the spread by about
    40 %; the per-walker estimator must not.
    """
    n, reps, window = 32, 3000, 20.0
    gaps = rng.gamma(shape=2.0, scale=0.5, size=(reps, n, 50))  # mean gap 1
    # 50 gaps sum to less than the window with probability below 1e-12.
    counts = (np.cumsum(gaps, axis=-1) < window).sum(-1)
    times = np.full(n, window)
    est = np.array([ratio_with_error(c, times) for c in counts])
    spread = est[:, 0].std(ddof=1)

    # Relative SE of the spread over 3000 repetitions: 1.3 %; 5 % is ~4 SE.
    assert np.sqrt(np.mean(est[:, 1] ** 2)) / spread == pytest.approx(1, abs=0.05)
    poisson = np.sqrt(counts.sum(-1)) / (n * window)
    assert np.sqrt(np.mean(poisson**2)) / spread > 1.25


def test_ratio_with_error_edge_cases():
    assert all(math.isnan(v) for v in ratio_with_error([], []))
    assert all(math.isnan(v) for v in ratio_with_error([0, 0], [0.0, 0.0]))
    rate, se = ratio_with_error([3], [2.0])
    assert rate == 1.5 and math.isnan(se)
    # Identical walkers: no spread, no error.
    assert ratio_with_error([2, 2, 2], [4.0, 4.0, 4.0]) == (0.5, 0.0)


# --------------------------------------------------------------------------
# The exit-point reservoir
# --------------------------------------------------------------------------


def _items(start: int, stop: int) -> torch.Tensor:
    """Points ``(m, 1, 3)`` whose x coordinate is their index in the stream."""
    x = torch.zeros((stop - start, 1, 3), dtype=torch.float64)
    x[:, 0, 0] = torch.arange(start, stop, dtype=torch.float64)
    return x


def _sample(capacity: int, n_items: int, batches: list[int], seed: int):
    res = _ExitReservoir(capacity, (1, 3), torch.Generator().manual_seed(seed))
    start = 0
    for size in batches:
        res.add(_items(start, start + size), torch.arange(start, start + size) % 7)
        start += size
    assert start == n_items
    kept = res.points()[:, 0, 0].astype(int)
    # Each kept point keeps the walker it came from.
    np.testing.assert_array_equal(res.walkers(), kept % 7)
    return kept


def _random_batches(rng, total: int, largest: int) -> list[int]:
    sizes = []
    while sum(sizes) < total:
        sizes.append(int(min(rng.integers(1, largest + 1), total - sum(sizes))))
    return sizes


def test_reservoir_keeps_everything_under_capacity():
    res = _ExitReservoir(10, (1, 3), torch.Generator().manual_seed(0))
    assert res.points().shape == (0, 1, 3)
    for a, b in ((0, 3), (3, 3), (3, 7), (7, 10)):  # includes an empty batch
        res.add(_items(a, b), torch.arange(a, b))
    np.testing.assert_array_equal(res.points()[:, 0, 0], np.arange(10))
    assert res.seen == 10

    res.add(_items(10, 15), torch.arange(10, 15))
    assert res.seen == 15 and res.points().shape == (10, 1, 3)

    empty = _ExitReservoir(0, (1, 3), torch.Generator().manual_seed(0))
    empty.add(_items(0, 5), torch.arange(5))
    assert empty.points().shape == (0, 1, 3)


@pytest.mark.parametrize("mode", ["random batches", "one batch"])
def test_reservoir_sample_is_uniform(rng, mode):
    """Every item of the stream is kept with probability K/M, whatever the batching.

    Over R independent streams item j is kept c_j ~ Binomial(R, p) times,
    p = K/M. The statistic X = Σ (c_j − Rp)² / (Rp(1 − p)) has mean M exactly and
    standard deviation about sqrt(2M); the tolerance is 4 of those. The share of
    kept items from the first half of the stream is tested on its own, because
    a bias towards early or late items is the likeliest failure; per stream it
    is hypergeometric, whose variance gives the 4-SE tolerance.
    """
    capacity, n_items, reps = 20, 200, 1000
    counts = np.zeros(n_items)
    first_half = 0
    for seed in range(reps):
        if mode == "one batch":
            batches = [n_items]
        else:
            batches = _random_batches(rng, n_items, 40)
        kept = _sample(capacity, n_items, batches, seed)
        assert len(kept) == capacity and len(set(kept.tolist())) == capacity
        counts[kept] += 1
        first_half += int((kept < n_items // 2).sum())

    p = capacity / n_items
    x2 = ((counts - reps * p) ** 2).sum() / (reps * p * (1 - p))
    assert abs(x2 - n_items) < 4 * math.sqrt(2 * n_items)

    var_half = capacity * 0.25 * (n_items - capacity) / (n_items - 1)
    assert abs(first_half - reps * capacity / 2) < 4 * math.sqrt(reps * var_half)


def test_reservoir_is_deterministic_with_seed(rng):
    batches = _random_batches(rng, 500, 60)
    first = _sample(25, 500, batches, seed=11)
    np.testing.assert_array_equal(first, _sample(25, 500, batches, seed=11))
    assert not np.array_equal(first, _sample(25, 500, batches, seed=12))


# --------------------------------------------------------------------------
# Channels
# --------------------------------------------------------------------------


def test_crossing_channels_on_hand_made_steps():
    def walkers(*xy):
        x = torch.zeros((len(xy), 1, 3), dtype=torch.float64)
        x[:, 0, :2] = torch.tensor(xy, dtype=torch.float64)
        return x

    channels = CrossingChannels()
    assert channels.names == ("upper", "lower")
    old = walkers((-0.1, 1.0), (-0.1, -1.0), (-0.5, 0.2), (-0.1, 0.3), (-0.3, 0.5))
    tracker = channels.tracker(old)
    np.testing.assert_array_equal(tracker.labels(), [-1] * 5)

    # Walker 0 crosses above, 1 below, 2 not at all; 3 and 4 cross where the
    # linearly interpolated y has the opposite sign of their end point (3) or
    # of their start point (4).
    new = walkers((0.1, 1.0), (0.1, -1.0), (-0.2, 0.2), (0.3, -0.5), (0.1, -0.3))
    tracker.update(old, new)
    np.testing.assert_array_equal(tracker.labels(), [0, 1, -1, 0, 1])

    # The last crossing wins: walker 0 goes back below; a step that stays on
    # one side (walker 1) or is x-stationary at the line (walker 2 moves onto
    # it, then along it) keeps the label from the step onto the line.
    newer = walkers((-0.1, -3.0), (0.4, 1.0), (0.0, 0.7), (0.3, -0.5), (0.1, -0.3))
    tracker.update(new, newer)
    np.testing.assert_array_equal(tracker.labels(), [1, 1, 0, 0, 1])
    along = walkers((-0.1, -3.0), (0.4, 1.0), (0.0, -0.7), (0.3, -0.5), (0.1, -0.3))
    tracker.update(newer, along)
    np.testing.assert_array_equal(tracker.labels(), [1, 1, 0, 0, 1])

    tracker.restart(torch.tensor([True, False, True, False, False]))
    np.testing.assert_array_equal(tracker.labels(), [-1, 1, -1, 0, 1])


def test_crossing_channels_other_line_and_names():
    """The line y = 0.5 crossed by atom 1, sides named by the sign of x."""
    channels = CrossingChannels(
        atom=1, axis=1, side_axis=0, at=0.5, names=("east", "west")
    )
    old = torch.zeros((2, 2, 3), dtype=torch.float64)
    new = old.clone()
    old[:, 1, 1], new[:, 1, 1] = 0.0, 1.0
    old[:, 1, 0] = new[:, 1, 0] = torch.tensor([2.0, -2.0])
    new[:, 0, 1] = 5.0  # atom 0 crossing the line is ignored
    tracker = channels.tracker(old)
    tracker.update(old, new)
    assert tracker.names == ("east", "west")
    np.testing.assert_array_equal(tracker.labels(), [0, 1])


# --------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------


def test_same_seed_same_result_bitwise(system):
    def run(seed):
        engine = hot_engine(system, seed=seed)
        result = engine.run(200)
        return engine, result

    (e1, r1), (e2, r2) = run(5), run(5)
    assert r1.n_transitions > 0 and r1.n_exits > 0
    assert torch.equal(e1.x, e2.x)
    np.testing.assert_array_equal(r1.exit_points, r2.exit_points)
    d1, d2 = r1.to_dict(), r2.to_dict()
    for d in (d1, d2):
        d.pop("wall_time_s")
    assert json.dumps(d1) == json.dumps(d2)

    e3, r3 = run(6)
    assert not torch.equal(e1.x, e3.x)
    assert r3.n_exits != r1.n_exits


def test_brute_force_rate_is_engine_plus_run(system):
    kwargs = dict(
        timestep=HOT_DT_FS * units.fs, temperature_K=HOT_K, n_walkers=32, seed=9
    )
    direct = BruteForce(system.start_A, system.A, system.B, **kwargs).run(100)
    short = brute_force_rate(system.start_A, system.A, system.B, steps=100, **kwargs)
    assert short.n_exits == direct.n_exits
    np.testing.assert_array_equal(short.exit_points, direct.exit_points)


def test_restart_in_A_puts_arrivals_back_at_the_start(system):
    engine = hot_engine(system, n_walkers=128, restart_in_A=True)
    start = engine.start.clone()
    for _ in range(300):
        before = engine.n_ab.clone()
        engine.step()
        arrived = engine.n_ab > before
        assert torch.equal(engine.x[arrived], start[arrived])
        assert not bool(system.B.contains(engine.x).any())
    result = engine.result()

    assert result.n_transitions > 20
    assert sum(result.channel_counts) == result.n_transitions
    # Every step counts as time from A, none from B.
    assert result.time_from_A_fs == pytest.approx(result.simulated_time_fs, rel=1e-12)
    assert result.time_from_B_fs == 0.0 and result.n_reverse_transitions == 0
    assert math.isnan(result.reverse_rate_per_fs)
    # Hill relation, exact by construction: rate = J_A · P_AB.
    assert result.rate_per_fs == pytest.approx(
        result.flux_per_fs * result.success_probability, rel=1e-12
    )


def test_without_restart_walkers_go_back_and_forth(system):
    engine = hot_engine(system, n_walkers=128, restart_in_A=False)
    result = engine.run(300)

    assert result.n_transitions > 20 and result.n_reverse_transitions > 0
    # A walker alternates A -> B -> A ...: its A -> B count exceeds its B -> A
    # count by one exactly when B is the last region it visited.
    assert torch.equal(engine.n_ab - engine.n_ba, engine.history.long())
    assert bool(system.B.contains(engine.x).any())
    assert result.time_from_A_fs + result.time_from_B_fs == pytest.approx(
        result.simulated_time_fs, rel=1e-12
    )
    assert math.isfinite(result.reverse_rate_per_fs)
    assert sum(result.channel_counts) == result.n_transitions
    assert result.rate_per_fs == pytest.approx(
        result.flux_per_fs * result.success_probability, rel=1e-12
    )
    assert "rate B→A" in result.summary()


def test_reset_statistics_keeps_walkers_and_forgets_counts(system):
    reference = hot_engine(system)
    reference.run(150)
    counts_at_150 = reference.n_ab.clone(), reference.n_exit.clone()
    reference.run(150)

    engine = hot_engine(system)
    engine.run(150)
    x = engine.x.clone()
    engine.reset_statistics()
    assert torch.equal(engine.x, x)
    empty = engine.result()
    assert empty.walker_steps == 0 and empty.n_transitions == 0
    assert empty.n_exits == 0 and sum(empty.channel_counts) == 0
    assert empty.exit_points.shape == (0, 1, 3)

    # The same noise stream continues: the second half counts only its own events.
    engine.run(150)
    assert torch.equal(engine.x, reference.x)
    assert torch.equal(engine.n_ab, reference.n_ab - counts_at_150[0])
    assert torch.equal(engine.n_exit, reference.n_exit - counts_at_150[1])
    assert engine.result().steps_per_walker == 150


def test_result_json_round_trip_and_summary(system, tmp_path):
    result = hot_engine(system).run(200)
    assert result.n_transitions > 0
    path = tmp_path / "bf.json"
    text = result.to_json(path)
    loaded = BruteForceResult.from_json(path)

    # The text compares NaN fields (the unmeasured B -> A rate) as equal too.
    assert loaded.to_json() == text
    assert loaded.exit_points is None
    assert loaded.channel_fractions == result.channel_fractions
    assert loaded.mean_first_passage_time_fs == result.mean_first_passage_time_fs
    assert json.loads(path.read_text())["rate_per_fs"] == result.rate_per_fs

    summary = result.summary()
    for unit in ("fs⁻¹", "s⁻¹", " K", " fs", "eV·fs/Å²", "upper", "lower"):
        assert unit in summary
    # 1 fs⁻¹ is 1e15 s⁻¹.
    assert f"{result.rate_per_fs * 1e15:.4g} s⁻¹" in summary


# --------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------


def test_rejects_start_outside_A(system):
    with pytest.raises(ValueError, match="region A"):
        BruteForce(
            system.start_B,
            system.A,
            system.B,
            timestep=0.01 * units.fs,
            temperature_K=2000.0,
        )


def test_rejects_overlapping_regions(system):
    cv = AtomCoordinates(0, "xy")
    xa, ya = TWO_CHANNEL_MINIMA[0]
    A = DiscRegion(cv, (xa, ya), 0.2)
    B = DiscRegion(cv, (xa + 0.3, ya), 0.2)
    with pytest.raises(ValueError, match="overlap"):
        BruteForce(system.start_A, A, B, timestep=0.01 * units.fs, temperature_K=2000.0)


def test_rejects_unstable_timestep(system):
    """The well at the start has λ_max ≈ 13.3 eV/Å², so 2γ/λ_max ≈ 0.15 fs."""
    with pytest.raises(ValueError, match="stability bound") as info:
        hot_engine(system, timestep=0.2 * units.fs)
    assert "0.15 fs" in str(info.value)

    engine = hot_engine(system, timestep=0.1 * units.fs)
    assert engine.stability_bound_fs == pytest.approx(0.15, rel=1e-3)
    # Switched off, the engine runs until the positions blow up, then says so.
    engine = hot_engine(system, timestep=5 * units.fs, check_timestep=False)
    assert engine.stability_bound_fs is None
    with pytest.raises(FloatingPointError, match="timestep"):
        engine.run(50, check_interval=50)


def test_rejects_bad_walkers_positions_and_run_arguments(system):
    with pytest.raises(ValueError, match="n_walkers"):
        hot_engine(system, n_walkers=0)
    with pytest.raises(ValueError, match="no starting configuration"):
        BruteForce(
            [], system.A, system.B, timestep=0.01 * units.fs, temperature_K=2000.0
        )

    atoms = system.start_A.copy()
    atoms.calc = system.start_A.calc
    atoms.positions[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        BruteForce(
            atoms, system.A, system.B, timestep=0.01 * units.fs, temperature_K=2000.0
        )

    with pytest.raises(ValueError, match="steps=, transitions="):
        hot_engine(system).run()


# --------------------------------------------------------------------------
# Physics against the exact grid solution (slow)
# --------------------------------------------------------------------------


@pytest.mark.slow
def test_rate_and_channels_match_grid_after_timestep_extrapolation(system):
    """2D two-channel potential at 2000 K against grid TPT (continuous time).

    Euler–Maruyama is weakly first order, k(Δt) = k0 + k1 Δt + O(Δt²); here
    k(0.02 fs) lies about 6 % above k0, two SE of a run this size. The line
    through Δt = 0.01 and 0.02 fs gives k0 ≈ 2 k(0.01) − k(0.02) with SE
    sqrt(4 SE₁² + SE₂²) (independent seeds), about 7 % of k0. Its remaining
    bias is −k2 Δt₁ Δt₂. Separate runs at 0.04, 0.02, 0.01 and 0.005 fs
    (1000-4000 transitions each) lie on a straight line (χ² = 0.4 for 2 dof)
    and put that bias at (1 ± 2) % of k0, so it is small against the SE and
    4 SE is the tolerance. The grid at h = 0.02 Å is 3e-4 below its h → 0
    limit, negligible here. The transition counts split √2 : 1 between the
    two steps, which minimises the SE of k0 per walker-step.
    """
    grid = solve_grid_tpt(
        system.start_A.calc,
        system.A,
        system.B,
        temperature_K=2000.0,
        box=(-2.2, 2.2, -2.2, 2.2),
        spacing=0.02,
    )
    runs = {}
    for dt, target, seed in ((0.01, 1200, 101), (0.02, 850, 102)):
        engine = BruteForce(
            system.start_A,
            system.A,
            system.B,
            timestep=dt * units.fs,
            temperature_K=2000.0,
            n_walkers=4096,
            seed=seed,
            channels=system.channels,
        )
        runs[dt] = engine.run(transitions=target, check_interval=250)

    for r in runs.values():
        n = r.n_transitions
        # Each walker's escapes from the minimum form a renewal process with
        # exponential waiting times, so the counts are Poisson and the SE is
        # k/sqrt(n) to within the estimate's own noise (about 1/sqrt(2n) ≈ 3 %);
        # 15 % is 5 of those.
        assert r.rate_se_per_fs == pytest.approx(r.rate_per_fs / math.sqrt(n), rel=0.15)

        # Independent transitions: the upper count is binomial; 4 SE.
        f = grid.channel_fractions["upper"]
        assert abs(r.channel_fractions["upper"] - f) < 4 * math.sqrt(f * (1 - f) / n)

    fine, coarse = runs[0.01], runs[0.02]
    k0 = 2 * fine.rate_per_fs - coarse.rate_per_fs
    se = math.sqrt(4 * fine.rate_se_per_fs**2 + coarse.rate_se_per_fs**2)
    assert abs(k0 - grid.rate_AB_per_fs) < 4 * se, (k0, se, grid.rate_AB_per_fs)


@pytest.mark.slow
def test_compiled_step_matches_eager_step(system):
    """``compile=True`` changes only the order of floating-point operations."""
    try:
        torch.compile(lambda t: 2.0 * t + 1.0)(torch.ones(3))
    except Exception as exc:  # no C++ compiler, unsupported platform, ...
        pytest.skip(f"torch.compile is not usable here: {exc}")

    eager = hot_engine(system, compile=False)
    compiled = hot_engine(system, compile=True)
    r_eager, r_compiled = eager.run(40), compiled.run(40)
    # 40 steps of x + (Δt/γ)F + σξ on O(1) Å values: round-off ~1e-14 Å.
    torch.testing.assert_close(compiled.x, eager.x, rtol=0, atol=1e-11)
    assert r_compiled.n_exits == r_eager.n_exits
    assert r_compiled.n_transitions == r_eager.n_transitions
    assert r_compiled.channel_counts == r_eager.channel_counts
