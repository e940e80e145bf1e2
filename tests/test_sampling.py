"""Importance-sampled paths: kernel weights, unbiasedness, the sampler, estimators.

Statistical tests use fixed seeds and tolerances of a few standard errors (SE),
each derived next to the test; with the seeds fixed they are deterministic, and
with any other seed they would fail with the stated (small) probability.

Most checks run on the two-channel 2D potential at 4000 K (k_B T = 0.34 eV
against a 1.1 eV barrier) with Δt = 0.05 fs: paths from the saddle region end
in a few tens of steps, so thousands of them cost well under a second.
"""

import json
import math

import numpy as np
import pytest
import torch
from ase import units
from scipy import stats

from ase_rare import SoftCoreLJ, TwoChannelPotential
from ase_rare.bruteforce import BruteForce, BruteForceResult
from ase_rare.estimate import combine, estimate_rate
from ase_rare.importance import GridImportance, ImportanceFunction, MLPImportance
from ase_rare.kernels import (
    LangevinParameters,
    candidate_step,
    draw_noise,
    overdamped_step,
    tilted_step,
)
from ase_rare.results import RateResult
from ase_rare.sampling import (
    REACHED_B,
    RETURNED_TO_A,
    STEP_CAP,
    PathResults,
    PathSampler,
)
from ase_rare.systems import two_channel_system
from ase_rare.theory import solve_grid_tpt

# The test tensors are tiny; a second thread only adds hand-off cost.
torch.set_num_threads(1)

F64 = torch.float64
HOT_K = 4000.0
HOT_DT_FS = 0.05
HOT = LangevinParameters(HOT_DT_FS, HOT_K, 1.0)
#: Box of the grid solutions: its edge lies > 40 k_B T above the saddles at 4000 K.
BOX = (-2.5, 2.5, -2.5, 2.5)
#: A start in the lower channel, short of its saddle: q ≈ 0.3 at 4000 K.
START_XY = (-0.3, -0.8)


def at(x: float, y: float, n: int = 1) -> torch.Tensor:
    """``n`` copies of the one-atom configuration (x, y, 0), shape ``(n, 1, 3)``."""
    return torch.tensor([[[x, y, 0.0]]], dtype=F64).expand(n, -1, -1).clone()


class LinearLogit(ImportanceFunction):
    """Logit ``offset + slope · (x − x_ref)`` on atom 0's x, y: a toy importance.

    With a very negative offset it puts ln I ≈ −200 at the start, where I itself
    is ~1e-87: a test of the log-space bookkeeping.
    """

    def __init__(self, offset: float, slope=(2.0, 0.0), ref=START_XY):
        super().__init__()
        self.hparams = {}
        self.offset = offset
        self.register_buffer("slope", torch.tensor(slope, dtype=F64))
        self.register_buffer("ref", torch.tensor(ref, dtype=F64))

    def forward(self, positions):
        return self.offset + ((positions[:, 0, :2] - self.ref) * self.slope).sum(-1)


@pytest.fixture(scope="module")
def system():
    return two_channel_system()


@pytest.fixture(scope="module")
def potential():
    return TwoChannelPotential()


def grid_importance(system, temperature_K: float) -> GridImportance:
    res = solve_grid_tpt(
        TwoChannelPotential(),
        system.A,
        system.B,
        temperature_K=temperature_K,
        box=BOX,
        spacing=0.02,
    )
    return GridImportance.from_grid_tpt(res)


@pytest.fixture(scope="module")
def grid_hot(system):
    """The grid committor at the dynamics' temperature: a near-ideal importance."""
    return grid_importance(system, HOT_K)


@pytest.fixture(scope="module")
def importances(system, grid_hot):
    """Importance functions of very different quality, by name."""
    torch.manual_seed(11)
    return {
        "grid-4000K": grid_hot,
        # Twice too cold: ln I twice as steep as the committor's near A.
        "grid-2000K": grid_importance(system, 2000.0),
        "untrained-mlp": MLPImportance(1, hidden=(16,), temperature_K=HOT_K),
        # Correct only in that it grows towards B; ln I(x₀) = −200.
        "log-space": LinearLogit(-200.0),
    }


def shoot_committor(
    potential, system, start: torch.Tensor, n: int, seed: int, max_steps: int = 5000
) -> tuple[float, float]:
    """Plain unbiased shooting: the discrete-time committor at ``start`` ± its SE.

    Written directly on :func:`overdamped_step`, independently of the sampler.
    """
    gen = torch.Generator().manual_seed(seed)
    x = start.expand(n, -1, -1).clone()
    alive = torch.ones(n, dtype=torch.bool)
    hit_b = torch.zeros(n, dtype=torch.bool)
    for _ in range(max_steps):
        idx = torch.nonzero(alive)[:, 0]
        if idx.numel() == 0:
            break
        xa = x[idx]
        _, forces = potential.batch_energy_forces(xa)
        new = overdamped_step(xa, forces, draw_noise(xa, True, gen), HOT)
        in_a, in_b = system.A.contains(new), system.B.contains(new)
        x[idx] = new
        hit_b[idx[in_b]] = True
        alive[idx[in_a | in_b]] = False
    assert not alive.any(), "reference paths hit the step cap; raise max_steps"
    q = hit_b.double().mean().item()
    return q, math.sqrt(q * (1 - q) / n)


@pytest.fixture(scope="module")
def reference_committor(potential, system):
    """q(START) of the Δt = 0.05 fs chain from 200 000 unbiased paths (SE 0.001)."""
    return shoot_committor(potential, system, at(*START_XY), 200_000, seed=5)


def hot_sampler(potential, system, importance, **kwargs) -> PathSampler:
    args = dict(params=HOT, planar=True, max_steps=5000, seed=3)
    args.update(kwargs)
    return PathSampler(potential, importance, system.A, system.B, **args)


# --------------------------------------------------------------------------
# Drift tilt: the weight is the ratio of the two Gaussian densities
# --------------------------------------------------------------------------


def _two_channel_case(gen):
    """Five one-atom walkers around the saddles, planar (z frozen)."""
    pot = TwoChannelPotential()
    x = torch.tensor(
        [[[-0.3, -0.8, 0]], [[0.0, 1.0, 0]], [[0.2, -1.0, 0]], [[-0.9, 0.1, 0]]],
        dtype=F64,
    )
    x = torch.cat([x, at(0.6, 0.4)])
    g = 3.0 * torch.randn(x.shape, generator=gen, dtype=F64)
    g[..., 2] = 0.0
    free = np.array([True, True, False])
    return pot, x, g, True, HOT, free


def _lj_3d_case(gen):
    """Four 3-atom soft-core LJ clusters, moving in all three dimensions."""
    pot = SoftCoreLJ(planar=False)
    tri = torch.tensor([[0.0, 0, 0], [1.1, 0, 0.1], [0.5, 0.95, -0.1]], dtype=F64)
    x = tri + 0.1 * torch.randn((4, 3, 3), generator=gen, dtype=F64)
    g = 2.0 * torch.randn(x.shape, generator=gen, dtype=F64)
    free = np.ones(3, bool)
    return pot, x, g, False, LangevinParameters(0.005, 600.0, 1.0), free


@pytest.mark.parametrize("case", [_two_channel_case, _lj_3d_case])
def test_tilt_weight_is_the_ratio_of_the_gaussian_densities(case, torch_gen):
    pot, x, g, planar, params, free_axes = case(torch_gen)
    _, forces = pot.batch_energy_forces(x)
    noise = draw_noise(x, planar, torch_gen)
    new, dlogw = tilted_step(x, forces, noise, g, params)
    assert dlogw.dtype == F64 and dlogw.shape == (x.shape[0],)

    # The step taken: unbiased mean, shifted by σ² g, plus σ ξ.
    sigma2 = params.noise_scale**2
    mean = x + params.mobility_step * forces
    torch.testing.assert_close(
        new, mean + sigma2 * g + params.noise_scale * noise, rtol=0, atol=1e-13
    )

    # ln K − ln K_I from the two densities N(m, σ² I) and N(m + σ² g, σ² I) over
    # the moving coordinates, evaluated independently by scipy. Both terms are of
    # order the number of coordinates; 1e-12 is a thousand times their round-off.
    for w in range(x.shape[0]):
        y = new[w].numpy()[:, free_axes].ravel()
        m = mean[w].numpy()[:, free_axes].ravel()
        shift = sigma2 * g[w].numpy()[:, free_axes].ravel()
        cov = sigma2 * np.eye(len(y))
        direct = stats.multivariate_normal.logpdf(
            y, m, cov
        ) - stats.multivariate_normal.logpdf(y, m + shift, cov)
        assert float(dlogw[w]) == pytest.approx(direct, rel=1e-12, abs=1e-12)
    if planar:
        assert torch.equal(new[..., 2], x[..., 2])


def test_tilt_with_zero_drift_is_plain_dynamics(torch_gen):
    pot, x, _, planar, params, _ = _two_channel_case(torch_gen)
    _, forces = pot.batch_energy_forces(x)
    noise = draw_noise(x, planar, torch_gen)
    new, dlogw = tilted_step(x, forces, noise, torch.zeros_like(x), params)
    assert torch.equal(new, overdamped_step(x, forces, noise, params))
    assert torch.equal(dlogw, torch.zeros_like(dlogw))


# --------------------------------------------------------------------------
# Candidate resampling
# --------------------------------------------------------------------------


def ladder(log_values, n_walkers: int, params=HOT):
    """Candidates at known places: y_k = σ k along x from the origin, for every
    walker, and an ``ln I`` that reads ``log_values[k]`` off the position.

    Returns positions, forces, noise ``(M, W, 1, 3)`` and the ``ln I`` callable.
    """
    m = len(log_values)
    x = torch.zeros((n_walkers, 1, 3), dtype=F64)
    forces = torch.zeros_like(x)
    noise = torch.zeros((m, n_walkers, 1, 3), dtype=F64)
    noise[:, :, 0, 0] = torch.arange(m, dtype=F64)[:, None]
    table = torch.tensor(log_values, dtype=F64)

    def log_importance(y):
        k = torch.round(y[:, 0, 0] / params.noise_scale).long()
        return table[k]

    return x, forces, noise, log_importance


def chosen_index(new: torch.Tensor, params=HOT) -> np.ndarray:
    return torch.round(new[:, 0, 0] / params.noise_scale).long().numpy()


def test_candidate_weight_is_mean_importance_over_chosen(torch_gen):
    pot, x, _, planar, params, _ = _two_channel_case(torch_gen)
    _, forces = pot.batch_energy_forces(x)
    m = 6
    noise = torch.stack([draw_noise(x, planar, torch_gen) for _ in range(m)])

    def log_importance(y):
        return -torch.nn.functional.softplus(-(3 * y[:, 0, 0] + y[:, 0, 1]))

    new, dlogw, chosen = candidate_step(
        x, forces, noise, log_importance, params, torch_gen
    )
    cand = x + params.mobility_step * forces + params.noise_scale * noise
    for w in range(x.shape[0]):
        log_i = log_importance(cand[:, w]).numpy()
        j = [k for k in range(m) if torch.equal(cand[k, w], new[w])]
        assert len(j) == 1, "the new position is not one of the candidates"
        expected = math.log(np.exp(log_i).mean()) - log_i[j[0]]
        assert float(dlogw[w]) == pytest.approx(expected, rel=1e-12, abs=1e-12)
        assert float(chosen[w]) == pytest.approx(log_i[j[0]], rel=1e-14)


def test_candidate_choice_frequency_is_proportional_to_importance(torch_gen):
    # Five candidates with I ∝ (1, 2, 3, 4) and one inside A (ln I = −inf).
    probs = np.array([0.1, 0.2, 0.3, 0.4])
    log_values = [*np.log(probs) - 3.0, -math.inf]
    n = 40_000
    x, forces, noise, log_importance = ladder(log_values, n)
    new, dlogw, _ = candidate_step(x, forces, noise, log_importance, HOT, torch_gen)
    counts = np.bincount(chosen_index(new), minlength=5)

    assert counts[4] == 0, "a candidate inside A was chosen"
    # Multinomial counts against n·p: Pearson's χ² with 3 degrees of freedom.
    # A p-value below 1e-4 happens by chance once in 10 000 seeds.
    assert stats.chisquare(counts[:4], n * probs).pvalue > 1e-4
    # Ẑ / I(y_j) with Ẑ = (1/5) Σ I_k: the candidate in A counts in the mean.
    z = np.exp(log_values[:4]).sum() / 5
    expected = np.log(z) - np.array(log_values)[chosen_index(new)]
    np.testing.assert_allclose(dlogw.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_one_candidate_is_the_unbiased_step(torch_gen):
    pot, x, _, planar, params, _ = _two_channel_case(torch_gen)
    _, forces = pot.batch_energy_forces(x)
    noise = draw_noise(x, planar, torch_gen)

    def log_importance(y):
        return -torch.nn.functional.softplus(-y[:, 0, 0])

    new, dlogw, _ = candidate_step(
        x, forces, noise.unsqueeze(0), log_importance, params, torch_gen
    )
    assert torch.equal(new, overdamped_step(x, forces, noise, params))
    assert torch.equal(dlogw, torch.zeros_like(dlogw))


def test_candidates_all_in_A_give_a_finite_zero_increment(torch_gen):
    x, forces, noise, log_importance = ladder([-math.inf] * 4, 3)
    new, dlogw, chosen = candidate_step(
        x, forces, noise, log_importance, HOT, torch_gen
    )
    assert torch.equal(dlogw, torch.zeros_like(dlogw))
    assert torch.isfinite(new).all()
    assert torch.isneginf(chosen).all()


def test_candidates_in_log_space_when_importance_underflows(torch_gen):
    # ln I = −800 (I = 0 in float64) for three candidates, one in B (ln I = 0):
    # B is chosen and Ẑ/I = (1 + 3e−800)/4, so Δ ln w = −ln 4 to round-off.
    x, forces, noise, log_importance = ladder([-800.0, 0.0, -800.0, -801.0], 5)
    new, dlogw, _ = candidate_step(x, forces, noise, log_importance, HOT, torch_gen)
    assert (chosen_index(new) == 1).all()
    np.testing.assert_allclose(dlogw.numpy(), -math.log(4.0), rtol=1e-14)

    # Without B, the choice and the increment stay exact far below exp's range.
    x, forces, noise, log_importance = ladder([-800.0, -801.0], 4000)
    new, dlogw, _ = candidate_step(x, forces, noise, log_importance, HOT, torch_gen)
    assert torch.isfinite(dlogw).all()
    j = chosen_index(new)
    z = -800.0 + math.log((1 + math.exp(-1.0)) / 2)
    np.testing.assert_allclose(
        dlogw.numpy(), z - np.where(j == 0, -800.0, -801.0), rtol=1e-12
    )
    # P(j = 0) = 1/(1 + e⁻¹) = 0.731; binomial SE over 4000 draws is 0.007: 4 SE.
    assert abs((j == 0).mean() - 1 / (1 + math.exp(-1))) < 4 * 0.007


# --------------------------------------------------------------------------
# Unbiasedness: E[W · 1{B}] = q(x₀) for any importance function and kernel
# --------------------------------------------------------------------------


def assert_unbiased(
    kernel: str,
    importance: ImportanceFunction,
    *,
    potential,
    system,
    start: torch.Tensor,
    reference: tuple[float, float],
    n_roots: int = 3000,
    drift_refresh: int = 1,
    n_candidates: int = 4,
    seed: int = 0,
    n_se: float = 4.0,
) -> tuple[float, float]:
    """Check E[W · 1{B}] over biased paths from ``start`` against the committor.

    ``reference`` is ``(q, SE)`` of the same discrete-time chain from unbiased
    shooting. The importance-sampled mean over ``n_roots`` independent paths
    must lie within ``n_se`` combined standard errors of it; returns the
    estimate and its SE.
    """
    sampler = PathSampler(
        potential,
        importance,
        system.A,
        system.B,
        params=HOT,
        planar=True,
        kernel=kernel,
        n_candidates=n_candidates,
        drift_refresh=drift_refresh,
        max_steps=5000,
        seed=seed,
    )
    paths = sampler.run(start.expand(n_roots, -1, -1))
    assert not (paths.status == STEP_CAP).any(), "paths hit the step cap"
    assert np.isfinite(paths.log_weight).all()
    s = paths.contribution
    estimate, se = s.mean(), s.std(ddof=1) / math.sqrt(n_roots)
    q, q_se = reference
    combined = math.hypot(se, q_se)
    assert abs(estimate - q) < n_se * combined, (
        f"{kernel} (refresh {drift_refresh}): E[W 1{{B}}] = {estimate:.5f} ± "
        f"{se:.5f}, committor {q:.5f} ± {q_se:.5f}"
    )
    return estimate, se


KERNELS = [("tilt", 1), ("tilt", 5), ("candidates", 1)]


@pytest.mark.parametrize(
    "name, kernel, drift_refresh",
    [
        (name, *kernel)
        for name in ("grid-4000K", "grid-2000K", "untrained-mlp")
        for kernel in KERNELS
    ]
    # Only the drift tilt for ln I ≈ −200: the candidate kernel sets ln I = 0 in
    # B, so next to B a candidate outside is picked with probability ~e^−197
    # and then weighs ~e^197. Unbiased, but with a variance no sample reveals
    # (measured: 0.10 ± 0.004 against q = 0.30 with 3000 roots).
    + [("log-space", "tilt", 1), ("log-space", "tilt", 5)],
)
def test_estimator_is_unbiased_whatever_the_importance(
    name, kernel, drift_refresh, importances, potential, system, reference_committor
):
    # Both sides are means of independent samples (3000 roots here, 200 000
    # reference paths): 4 combined SE is exceeded with probability 6e-5 per
    # check, about 1e-3 over the eleven. A bias would show: the importances
    # disagree with the committor by up to 0.3 at the start.
    assert_unbiased(
        kernel,
        importances[name],
        potential=potential,
        system=system,
        start=at(*START_XY),
        reference=reference_committor,
        drift_refresh=drift_refresh,
        seed=17,
    )


def test_good_importance_reduces_the_variance(importances, potential, system):
    # Same roots, same kernel: the near-exact committor gives a far smaller
    # spread of the per-root contributions than an untrained network (measured
    # ratio of SEs about 3; the check asks for 1.5).
    se = {}
    for name in ("grid-4000K", "untrained-mlp"):
        paths = hot_sampler(potential, system, importances[name]).run(
            at(*START_XY, 2000)
        )
        se[name] = paths.contribution.std(ddof=1)
    assert se["grid-4000K"] * 1.5 < se["untrained-mlp"]


# --------------------------------------------------------------------------
# PathSampler: bookkeeping
# --------------------------------------------------------------------------


def test_sampler_status_codes_and_arrays(potential, system, importances):
    # The untrained network leaves both outcomes likely (the near-exact
    # committor would send almost every path to B).
    n = 300
    importance = importances["untrained-mlp"]
    paths = hot_sampler(potential, system, importance, channels=system.channels).run(
        at(*START_XY, n)
    )
    for name in ("status", "log_weight", "steps", "channel", "log_importance_start"):
        assert getattr(paths, name).shape == (n,), name
    assert paths.log_weight.dtype == np.float64
    assert set(np.unique(paths.status)) == {REACHED_B, RETURNED_TO_A}
    assert (paths.steps >= 1).all()

    # Every path starts at x < 0 and B lies at x > 0, so a success crossed x = 0
    # and has a channel; failures have none.
    assert set(np.unique(paths.channel[paths.success])) <= {0, 1}
    assert (paths.channel[~paths.success] == -1).all()
    np.testing.assert_array_equal(
        paths.contribution,
        np.where(paths.status == REACHED_B, np.exp(paths.log_weight), 0.0),
    )
    with torch.no_grad():
        expected = float(importance.log_importance(at(*START_XY))[0])
    np.testing.assert_allclose(paths.log_importance_start, expected, rtol=1e-15)


def test_sampler_without_channels_labels_nothing(potential, system, grid_hot):
    paths = hot_sampler(potential, system, grid_hot).run(at(*START_XY, 50))
    assert (paths.channel == -1).all()


def test_sampler_step_cap(potential, system, grid_hot):
    paths = hot_sampler(potential, system, grid_hot, max_steps=2).run(
        at(*START_XY, 200)
    )
    capped = paths.status == STEP_CAP
    # From the saddle region hardly any path ends within two steps.
    assert capped.mean() > 0.9
    assert (paths.steps[capped] == 2).all()
    assert (paths.steps <= 2).all()
    assert np.isfinite(paths.log_weight).all()
    assert (paths.contribution[capped] == 0).all()


@pytest.mark.parametrize(
    "kernel, drift_refresh", [("tilt", 1), ("tilt", 5), ("candidates", 1)]
)
def test_sampler_counts_walker_steps_and_evaluations(
    kernel, drift_refresh, potential, system, grid_hot
):
    n, m = 150, 3
    paths = hot_sampler(
        potential,
        system,
        grid_hot,
        kernel=kernel,
        drift_refresh=drift_refresh,
        n_candidates=m,
    ).run(at(*START_XY, n), batch_size=64)
    assert paths.walker_steps == paths.steps.sum()

    # One evaluation per root at the start; then per walker alive at a drift
    # refresh (tilt), or M per walker-step (candidates). A walker that took s
    # steps was alive at steps 0 … s − 1 of its batch.
    if kernel == "tilt":
        refresh = sum(
            int((paths.steps > k).sum())
            for k in range(0, int(paths.steps.max()), drift_refresh)
        )
        assert paths.importance_evaluations == n + refresh
    else:
        assert paths.importance_evaluations == n + m * paths.steps.sum()
    assert paths.wall_time_s > 0


@pytest.mark.parametrize("kernel", ["tilt", "candidates"])
def test_sampler_is_deterministic_for_a_seed(kernel, potential, system, grid_hot):
    def run(seed):
        return hot_sampler(
            potential, system, grid_hot, kernel=kernel, n_candidates=3, seed=seed
        ).run(at(*START_XY, 64))

    a, b, c = run(4), run(4), run(5)
    for name in ("status", "log_weight", "steps", "channel"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.log_weight, c.log_weight)


def test_sampler_batch_size_changes_draws_not_statistics(potential, system, grid_hot):
    # The random stream is shared by a batch, so splitting the roots into other
    # batches changes every path (not a bug: results are reproducible for a
    # given seed and batch size). The estimate only changes within its error:
    # two effectively independent means, 4 combined SE.
    roots = at(*START_XY, 1200)
    whole = hot_sampler(potential, system, grid_hot).run(roots)
    split = hot_sampler(potential, system, grid_hot).run(roots, batch_size=300)
    assert not np.array_equal(whole.log_weight, split.log_weight)
    s1, s2 = whole.contribution, split.contribution
    se = math.hypot(s1.std(ddof=1), s2.std(ddof=1)) / math.sqrt(len(s1))
    assert abs(s1.mean() - s2.mean()) < 4 * se


def test_sampler_leaves_the_roots_untouched(potential, system, grid_hot):
    # Exit points often arrive as a tensor sharing memory with a numpy array.
    points = np.tile(np.array([[[START_XY[0], START_XY[1], 0.0]]]), (20, 1, 1))
    roots = torch.as_tensor(points)
    hot_sampler(potential, system, grid_hot).run(roots, batch_size=7)
    assert (points[:, 0, :2] == START_XY).all()


def test_sampler_candidates_with_a_trainable_network(potential, system):
    # The network's parameters require gradients; the weights must not.
    torch.manual_seed(2)
    mlp = MLPImportance(1, hidden=(8,))
    paths = hot_sampler(
        potential, system, mlp, kernel="candidates", n_candidates=2, max_steps=100
    ).run(at(*START_XY, 10))
    assert paths.log_weight.dtype == np.float64
    assert np.isfinite(paths.log_weight).all()


def test_sampler_rejects_bad_arguments(potential, system, grid_hot):
    with pytest.raises(ValueError, match="kernel must be one of"):
        hot_sampler(potential, system, grid_hot, kernel="metropolis")
    for bad in ({"n_candidates": 0}, {"drift_refresh": 0}, {"max_steps": 0}):
        with pytest.raises(ValueError, match=">= 1"):
            hot_sampler(potential, system, grid_hot, **bad)


# --------------------------------------------------------------------------
# Log space: ln I(x₀) ≈ −200
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", ["tilt", "candidates"])
@pytest.mark.parametrize("shape", ["constant", "sloped"])
def test_paths_stay_finite_when_importance_is_tiny(kernel, shape, potential, system):
    if shape == "constant":
        axis = np.linspace(-2.5, 2.5, 11)
        importance = GridImportance(axis, axis, np.full((11, 11), -200.0))
    else:
        importance = LinearLogit(-200.0)
    # Two candidates: with I flat off B, more of them mostly steer walkers
    # away from A and only lengthen the paths.
    paths = hot_sampler(
        potential, system, importance, kernel=kernel, n_candidates=2
    ).run(at(*START_XY, 100))
    np.testing.assert_allclose(paths.log_importance_start, -200.0, rtol=1e-12)
    assert np.isfinite(paths.log_weight).all()
    assert paths.success.any()
    if shape == "constant" and kernel == "tilt":
        # No drift (to round-off in the interpolation): plain dynamics, W = 1.
        assert np.abs(paths.log_weight).max() < 1e-10

    result = combine(
        hand_made_flux(),
        paths,
        direction="A->B",
        kernel=kernel,
        channel_names=[],
        wall_time_s=0.0,
        seed=0,
    )
    assert 0 < result.success_probability < 1
    assert math.isfinite(result.success_probability_se)
    assert math.isfinite(result.relative_variance_per_root)
    # I(x₀) = e^−200 ≈ 1.4e−87 is still a normal double.
    assert result.naive_success_probability == pytest.approx(math.exp(-200.0))


# --------------------------------------------------------------------------
# combine and RateResult
# --------------------------------------------------------------------------


def hand_made_flux(flux=0.05, flux_se=0.002) -> BruteForceResult:
    """A flux run's result with J_A = 0.05 ± 0.002 fs⁻¹ (other fields nominal)."""
    return BruteForceResult(
        temperature_K=HOT_K,
        timestep_fs=HOT_DT_FS,
        friction_eV_fs_per_A2=1.0,
        n_walkers=10,
        steps_per_walker=1000,
        walker_steps=10_000,
        simulated_time_fs=500.0,
        time_from_A_fs=480.0,
        n_transitions=3,
        rate_per_fs=0.006,
        rate_se_per_fs=0.003,
        n_exits=24,
        flux_per_fs=flux,
        flux_se_per_fs=flux_se,
        success_probability=0.125,
        restart_in_A=True,
    )


def hand_made_paths(log_importance_start=None) -> PathResults:
    """Five roots: three successes with weights 0.2, 0.5, 0.3, a return to A and
    a step cap (their ln w is irrelevant)."""
    if log_importance_start is None:
        log_importance_start = np.log([0.25, 0.1, 0.4, 0.05, 0.2])
    return PathResults(
        status=np.array([REACHED_B, RETURNED_TO_A, REACHED_B, STEP_CAP, REACHED_B]),
        log_weight=np.log([0.2, 7.0, 0.5, 3.0, 0.3]),
        steps=np.array([10, 3, 20, 50, 7]),
        channel=np.array([0, -1, 1, -1, 0]),
        log_importance_start=np.asarray(log_importance_start, float),
        walker_steps=90,
        importance_evaluations=95,
        wall_time_s=1.5,
    )


def combine_hand_made(**kwargs) -> RateResult:
    args = dict(
        direction="A->B",
        kernel="tilt",
        channel_names=["upper", "lower"],
        wall_time_s=2.0,
        seed=1,
    )
    args.update(kwargs)
    paths = args.pop("paths", None) or hand_made_paths()
    return combine(hand_made_flux(), paths, **args)


def test_combine_hand_made_numbers():
    r = combine_hand_made()
    s = np.array([0.2, 0.0, 0.5, 0.0, 0.3])
    p = s.mean()
    p_se = s.std(ddof=1) / math.sqrt(5)
    assert r.success_probability == pytest.approx(0.2, rel=1e-14)
    assert r.success_probability_se == pytest.approx(p_se, rel=1e-14)
    assert r.rate_per_fs == pytest.approx(0.05 * p, rel=1e-14)
    rel = math.hypot(p_se / p, 0.002 / 0.05)
    assert r.rate_se_per_fs == pytest.approx(0.05 * p * rel, rel=1e-14)
    assert r.relative_se == pytest.approx(rel, rel=1e-14)

    i0 = np.array([0.25, 0.1, 0.4, 0.05, 0.2])
    assert r.naive_success_probability == pytest.approx(i0.mean(), rel=1e-14)
    assert r.naive_rate_per_fs == pytest.approx(0.05 * i0.mean(), rel=1e-14)
    assert r.effective_sample_size == pytest.approx(1.0 / 0.38, rel=1e-14)
    ratio = s / i0
    assert r.relative_variance_per_root == pytest.approx(
        ratio.var(ddof=1) / ratio.mean() ** 2, rel=1e-12
    )

    # Weighted: upper holds 0.2 + 0.3 of the 1.0 total; naive: 2 of 3 successes.
    assert r.channel_fractions == pytest.approx([0.5, 0.5], rel=1e-14)
    assert r.naive_channel_fractions == pytest.approx([2 / 3, 1 / 3], rel=1e-14)
    assert all(math.isfinite(se) and se >= 0 for se in r.channel_fractions_se)

    assert (r.n_roots, r.n_successes, r.n_step_capped) == (5, 3, 1)
    assert (r.walker_steps, r.flux_walker_steps) == (90, 10_000)
    assert r.importance_evaluations == 95
    assert (r.temperature_K, r.timestep_fs, r.kernel) == (HOT_K, HOT_DT_FS, "tilt")


def test_combine_without_channels():
    r = combine_hand_made(channel_names=[])
    assert r.channel_fractions == r.channel_fractions_se == []
    assert r.naive_channel_fractions == []


def test_combine_with_no_success_is_strict_json():
    paths = hand_made_paths()
    paths.status[:] = RETURNED_TO_A
    r = combine_hand_made(paths=paths)
    assert r.success_probability == 0.0 and r.rate_per_fs == 0.0
    assert r.n_successes == 0 and r.effective_sample_size == 0.0
    # Undefined relative quantities are NaN, written as null: strict JSON.
    text = json.dumps(r.to_dict(), allow_nan=False)
    back = RateResult.from_dict(json.loads(text))
    assert math.isnan(back.rate_se_per_fs)
    assert math.isnan(back.relative_variance_per_root)


def test_combine_in_log_space_when_importance_underflows():
    # ln I(x₀) around −800: I(x₀) is 0 in float64, the naive estimate underflows
    # to 0, but the per-root ratios W/I(x₀) are formed in log space.
    log_i0 = np.log([0.25, 0.1, 0.4, 0.05, 0.2]) - 800.0
    paths = hand_made_paths(log_i0)
    paths.log_weight = paths.log_weight - 800.0
    with np.errstate(divide="raise", invalid="raise", over="raise"):
        r = combine_hand_made(paths=paths)
    assert r.naive_success_probability == 0.0
    assert r.success_probability == 0.0  # exp(−800) underflows, reported as is
    ratio = np.array([0.2, 0.0, 0.5, 0.0, 0.3]) / np.array([0.25, 0.1, 0.4, 0.05, 0.2])
    assert r.relative_variance_per_root == pytest.approx(
        ratio.var(ddof=1) / ratio.mean() ** 2, rel=1e-10
    )


def test_rate_result_json_round_trip_and_summary(tmp_path):
    r = combine_hand_made()
    path = tmp_path / "rate.json"
    r.to_json(path)
    json.loads(path.read_text())  # valid JSON
    assert RateResult.from_json(path) == r
    assert RateResult.from_dict(json.loads(r.to_json())) == r

    text = r.summary()
    assert "fs⁻¹" in text and "s⁻¹" in text
    per_s = r.rate_per_fs * 1e15
    assert f"{per_s:.4g} s⁻¹" in text
    for word in ("reweighted", "naive", "upper", "lower", "step cap", "4000 K"):
        assert word in text


# --------------------------------------------------------------------------
# End to end against brute force at the same Δt
# --------------------------------------------------------------------------


@pytest.mark.slow
def test_estimate_rate_matches_brute_force_at_the_same_timestep(system):
    """2D system at 2500 K, Δt = 0.01 fs: the rate of the discretised chain.

    The comparison is with brute force at the same Δt and temperature, not with
    the grid, because the Euler–Maruyama rate differs from the continuous-time
    one by O(Δt). Reweighted rate ± SE (flux and P errors in quadrature) and the
    brute-force rate ± SE are independent estimates: 4 combined SE (probability
    6e-5 by chance). The same for the upper-channel fraction, with the bootstrap
    SE of the weighted fraction and the binomial SE of the brute-force count.
    """
    temperature, dt = 2500.0, 0.01
    res = solve_grid_tpt(
        TwoChannelPotential(),
        system.A,
        system.B,
        temperature_K=temperature,
        box=BOX,
        spacing=0.02,
    )
    importance = GridImportance.from_grid_tpt(res)
    ours = estimate_rate(
        system.start_A,
        importance,
        system.A,
        system.B,
        timestep=dt * units.fs,
        temperature_K=temperature,
        n_roots=600,
        channels=system.channels,
        seed=21,
    )
    assert ours.n_step_capped == 0
    assert ours.n_successes > 300

    engine = BruteForce(
        system.start_A,
        system.A,
        system.B,
        timestep=dt * units.fs,
        temperature_K=temperature,
        n_walkers=512,
        seed=22,
        channels=system.channels,
    )
    engine.run(2000)  # 20 fs to leave the common start behind
    engine.reset_statistics()
    brute = engine.run(transitions=300, check_interval=1000, max_steps=100_000)
    assert brute.n_transitions >= 300

    se = math.hypot(ours.rate_se_per_fs, brute.rate_se_per_fs)
    assert abs(ours.rate_per_fs - brute.rate_per_fs) < 4 * se, (
        ours.summary(),
        brute.summary(),
    )
    # Flux from the same kind of unbiased run: equal within errors as well.
    flux_se = math.hypot(ours.flux_se_per_fs, brute.flux_se_per_fs)
    assert abs(ours.flux_per_fs - brute.flux_per_fs) < 4 * flux_se

    f_bf = brute.channel_fractions["upper"]
    f_bf_se = math.sqrt(f_bf * (1 - f_bf) / brute.n_transitions)
    f_se = math.hypot(ours.channel_fractions_se[0], f_bf_se)
    assert abs(ours.channel_fractions[0] - f_bf) < 4 * f_se
    assert sum(ours.channel_fractions) == pytest.approx(1.0, rel=1e-12)
