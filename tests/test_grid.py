"""Tests of the exact grid committor / transition-path-theory solver."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from ase_rare import AtomCoordinates, BoxRegion, DiscRegion, TwoChannelPotential
from ase_rare.kernels import KB_EV_PER_K
from ase_rare.theory import (
    GridBoxWarning,
    grid_convergence,
    solve_grid_tpt,
)

MINIMUM_A = (-1.11802, -0.00462)
MINIMUM_B = (1.11802, -0.00462)
BOX = (-2.2, 2.2, -2.2, 2.2)


@pytest.fixture
def xy():
    return AtomCoordinates(0, "xy")


@pytest.fixture
def discs(xy):
    """Regions A and B of the two-channel benchmark: 0.2 Å discs at the minima."""
    return DiscRegion(xy, MINIMUM_A, 0.2), DiscRegion(xy, MINIMUM_B, 0.2)


@pytest.fixture
def two_channel():
    return TwoChannelPotential(tilt=0.02)


def tilted_two_channel(x, y):
    """The two-channel potential plus 0.05 eV/Å · x: B lies 0.11 eV above A."""
    pot = TwoChannelPotential(tilt=0.02)
    energy = pot.energy_xy(torch.as_tensor(x), torch.as_tensor(y)).numpy()
    return energy + 0.05 * x


def test_committor_boundary_values_and_bounds(two_channel, discs):
    res = solve_grid_tpt(
        two_channel, *discs, temperature_K=1500.0, box=BOX, spacing=0.05
    )
    q = res.committor
    inside = res.domain
    assert np.all(q[res.in_A & inside] == 0.0)
    assert np.all(q[res.in_B & inside] == 1.0)
    assert np.all((q[inside] >= 0.0) & (q[inside] <= 1.0))
    assert np.all(np.isnan(q[~inside]))
    assert np.all(res.density_per_A2[~inside] == 0.0)
    # The density is normalised over the grid cells of area h².
    assert math.isclose(res.density_per_A2.sum() * res.spacing_A**2, 1.0)
    # Off A and B the logs come from two separate solves; they must agree.
    free = inside & ~res.in_A & ~res.in_B
    np.testing.assert_allclose(
        np.exp(res.log_committor[free]) + np.exp(res.log_backward_committor[free]),
        1.0,
        rtol=0,
        atol=1e-12,
    )


def test_detailed_balance_with_unequal_basins(discs):
    # A tilt along x makes the basins unequal, so the check is not trivial.
    res = solve_grid_tpt(
        tilted_two_channel, *discs, temperature_K=1500.0, box=BOX, spacing=0.05
    )
    assert res.prob_A_history > 0.6
    assert math.isclose(res.prob_A_history + res.prob_B_history, 1.0, rel_tol=1e-12)
    assert math.isclose(
        res.rate_AB_per_fs * res.prob_A_history,
        res.rate_BA_per_fs * res.prob_B_history,
        rel_tol=1e-12,
    )
    assert res.rate_BA_per_fs > res.rate_AB_per_fs


def test_channel_fluxes_sum_to_reactive_flux(two_channel, discs):
    res = solve_grid_tpt(
        two_channel, *discs, temperature_K=1000.0, box=BOX, spacing=0.05
    )
    flux = res.reactive_flux_per_fs
    # Current is conserved off A and B, so any cut carries the whole flux; the
    # sums differ only by round-off, about 1e-15 relative.
    assert math.isclose(sum(res.channel_flux_per_fs.values()), flux, rel_tol=1e-10)
    assert math.isclose(res.crossing_flux_per_fs.sum(), flux, rel_tol=1e-10)
    assert math.isclose(res.reactive_flux_into_B_per_fs, flux, rel_tol=1e-10)
    assert math.isclose(sum(res.channel_fractions.values()), 1.0, rel_tol=1e-12)
    # The tilt a·y with a > 0 makes the lower channel the cheaper one.
    assert res.channel_fractions["lower"] > res.channel_fractions["upper"]


def test_untilted_potential_splits_evenly(discs, xy):
    # With a = 0 the potential is symmetric under y -> -y; the discs are centred
    # on y = 0 so that A and B share the symmetry.
    A = DiscRegion(xy, (-1.118, 0.0), 0.2)
    B = DiscRegion(xy, (1.118, 0.0), 0.2)
    res = solve_grid_tpt(
        TwoChannelPotential(tilt=0.0), A, B, temperature_K=1500.0, box=BOX, spacing=0.05
    )
    assert res.channel_fractions["upper"] == pytest.approx(0.5, abs=1e-12)
    assert res.channel_fractions["lower"] == pytest.approx(0.5, abs=1e-12)


def _separable(x, y):
    """A double well in x (barrier 0.3 eV) times a harmonic y (1 eV/Å²)."""
    return 0.3 * (x * x - 1.0) ** 2 + 0.5 * y * y


@pytest.fixture
def slabs(xy):
    """A = {x <= -0.8 Å}, B = {x >= 0.8 Å}: whole columns of the grid."""
    return BoxRegion(xy, (-5, -5), (-0.8, 5)), BoxRegion(xy, (0.8, -5), (5, 5))


def test_separable_potential_matches_1d_integral(slabs):
    # For U = u(x) + k y²/2 and A, B made of whole columns, the committor does
    # not depend on y and equals q(x) = ∫_a^x e^{βu} / ∫_a^b e^{βu}.
    T = 1000.0
    beta = 1.0 / (KB_EV_PER_K * T)
    errors = []
    for h in (0.04, 0.02):
        with pytest.warns(GridBoxWarning):
            res = solve_grid_tpt(
                _separable,
                *slabs,
                temperature_K=T,
                box=(-1.6, 1.6, -0.6, 0.6),
                spacing=h,
                cutoff_kT=60.0,
            )
        q = res.committor
        assert np.nanmax(np.abs(q - q[:, [res.y_A.size // 2]])) < 1e-13

        xs = res.x_A
        a, b = xs[res.in_A[:, 0]].max(), xs[res.in_B[:, 0]].min()

        def boltzmann_inverse(t):
            return math.exp(beta * 0.3 * (t * t - 1.0) ** 2)

        total = quad(boltzmann_inverse, a, b, epsrel=1e-13)[0]
        sel = (xs > a) & (xs < b)
        exact = [
            quad(boltzmann_inverse, a, t, epsrel=1e-13)[0] / total for t in xs[sel]
        ]
        errors.append(np.max(np.abs(q[sel, 0] - exact)))

    # Second order: the error drops by 4 when h halves (measured 2.7e-5 at
    # h = 0.04 Å, 6.8e-6 at 0.02 Å).
    assert errors[1] < 1e-5
    assert 3.5 < errors[0] / errors[1] < 4.5


def test_tiny_committor_keeps_relative_precision(slabs):
    # At 50 K, βΔE = 70: q next to A is ~1e-26 and 1 - q rounds to 1. The
    # discrete committor of the separable problem is a chain of resistances in
    # series, known in closed form in log space.
    T = 50.0
    beta = 1.0 / (KB_EV_PER_K * T)
    with pytest.warns(GridBoxWarning):
        res = solve_grid_tpt(
            _separable,
            *slabs,
            temperature_K=T,
            box=(-1.2, 1.2, -0.3, 0.3),
            spacing=0.02,
            cutoff_kT=500.0,
        )
    xs = res.x_A
    u = 0.3 * (xs**2 - 1.0) ** 2
    ia, ib = np.flatnonzero(res.in_A[:, 0])[-1], np.flatnonzero(res.in_B[:, 0])[0]
    log_r = beta * (u[ia:ib] + u[ia + 1 : ib + 1]) / 2
    log_cum = np.logaddexp.accumulate(log_r)
    log_q_exact = log_cum[:-1] - log_cum[-1]
    log_p_exact = np.logaddexp.accumulate(log_r[::-1])[::-1]
    log_p_exact = log_p_exact[1:] - log_p_exact[0]

    mid = res.y_A.size // 2
    assert math.exp(log_q_exact[0]) < 1e-25
    # Double precision over a few hundred well-conditioned operations.
    np.testing.assert_allclose(
        res.log_committor[ia + 1 : ib, mid], log_q_exact, rtol=0, atol=1e-12
    )
    np.testing.assert_allclose(
        res.log_backward_committor[ia + 1 : ib, mid], log_p_exact, rtol=0, atol=1e-12
    )


def _eliminate_without_subtraction(res):
    """Reference committor by Gaussian elimination that never subtracts.

    Eliminating a node of a conductance network (star-mesh transform) only adds
    and multiplies positive numbers, so every entry keeps full relative
    precision however small it gets: an independent check of the sparse solve.
    Dense, for small grids only.
    """
    beta = 1.0 / (KB_EV_PER_K * res.temperature_K)
    energy = res.energy_eV
    nodes = np.flatnonzero(res.domain & ~res.in_A & ~res.in_B)
    n = nodes.size
    where = {k: m for m, k in enumerate(nodes)}
    ny = energy.shape[1]
    flat_u = energy.ravel()
    u_min = energy[res.domain].min()
    in_A = (res.in_A & res.domain).ravel()
    in_B = (res.in_B & res.domain).ravel()
    domain = res.domain.ravel()
    cond = np.zeros((n, n))
    to_A, to_B = np.zeros(n), np.zeros(n)
    for m, k in enumerate(nodes):
        for nb in (k - ny, k + ny, k - 1, k + 1):
            if nb < 0 or nb >= flat_u.size or not domain[nb]:
                continue
            if abs(nb - k) == 1 and nb // ny != k // ny:
                continue
            c = math.exp(-beta * (flat_u[k] + flat_u[nb]) / 2 + beta * u_min)
            if in_A[nb]:
                to_A[m] += c
            elif in_B[nb]:
                to_B[m] += c
            else:
                cond[m, where[nb]] = c

    pivots = np.zeros(n)
    rows = []
    for k in range(n):
        pivots[k] = cond[k, k + 1 :].sum() + to_A[k] + to_B[k]
        row = cond[k, k + 1 :].copy()
        rows.append((row, to_B[k]))
        share = cond[k + 1 :, k] / pivots[k]
        cond[k + 1 :, k + 1 :] += np.outer(share, row)
        np.fill_diagonal(cond[k + 1 :, k + 1 :], 0.0)
        to_A[k + 1 :] += share * to_A[k]
        to_B[k + 1 :] += share * to_B[k]
    q = np.zeros(n)
    for k in range(n - 1, -1, -1):
        row, b = rows[k]
        q[k] = (b + row @ q[k + 1 :]) / pivots[k]
    return nodes, q


def test_small_committor_matches_subtraction_free_elimination(two_channel, discs):
    # At 200 K the committor next to A is ~1e-37 on the two-channel potential.
    res = solve_grid_tpt(two_channel, *discs, temperature_K=200.0, box=BOX, spacing=0.1)
    nodes, q_ref = _eliminate_without_subtraction(res)
    assert q_ref.min() < 1e-30
    log_q = res.log_committor.ravel()[nodes]
    # Both are accurate to ~1e-14 relative; 1e-10 leaves room for a few hundred
    # accumulated roundings.
    np.testing.assert_allclose(log_q, np.log(q_ref), rtol=0, atol=1e-10)


def test_reactive_flux_obeys_dirichlet_bound(two_channel, discs):
    # Thomson's principle: the discrete committor minimises the Dirichlet form,
    # so any trial function, here one that depends on the column x alone, gives
    # a larger flux. The bound is a series of column conductances.
    res = solve_grid_tpt(
        two_channel, *discs, temperature_K=1000.0, box=BOX, spacing=0.05
    )
    beta = 1.0 / (KB_EV_PER_K * res.temperature_K)
    u = np.where(res.domain, res.energy_eV, np.inf)
    u_min = u.min()
    column = np.exp(-beta * ((u[:-1] + u[1:]) / 2 - u_min)).sum(axis=1)
    first = np.flatnonzero(res.in_A.any(axis=1))[-1]
    last = np.flatnonzero(res.in_B.any(axis=1))[0]
    partition = np.exp(-beta * (u - u_min)).sum()
    scale = res.diffusion_A2_per_fs / res.spacing_A**2 / partition
    bound = scale / np.sum(1.0 / column[first:last])
    assert res.reactive_flux_per_fs < bound
    # The x-only trial function is a fair guess: within a factor 2.
    assert res.reactive_flux_per_fs > bound / 2


def test_rate_converges_with_spacing(two_channel, discs):
    conv = grid_convergence(
        two_channel,
        *discs,
        temperature_K=2000.0,
        box=BOX,
        spacings=(0.08, 0.04, 0.02),
    )
    kab = conv.rate_AB_per_fs
    # Measured: 1.3104e-3, 1.31315e-3, 1.31420e-3 fs⁻¹; successive changes
    # shrink by ~4 (second order), and h = 0.02 Å is within 0.03 % of the
    # extrapolated rate.
    assert abs(kab[2] - kab[1]) < 1e-3 * kab[2]
    assert conv.observed_order == pytest.approx(2.0, abs=0.5)
    assert conv.rate_AB_extrapolated_per_fs == pytest.approx(kab[2], rel=5e-4)
    for frac in conv.channel_fractions:
        assert frac["upper"] == pytest.approx(0.4525, abs=2e-4)
    assert "h -> 0" in conv.table()
    assert "k_AB" in conv.results[-1].summary()


def test_result_independent_of_larger_box(two_channel, discs):
    small = solve_grid_tpt(
        two_channel, *discs, temperature_K=2000.0, box=BOX, spacing=0.05
    )
    large = solve_grid_tpt(
        two_channel,
        *discs,
        temperature_K=2000.0,
        box=(-2.8, 2.8, -2.8, 2.8),
        spacing=0.05,
    )
    # Every node below the cutoff already lies inside the smaller box, so the
    # problems are identical up to the order of summation.
    assert small.n_nodes == large.n_nodes
    assert large.rate_AB_per_fs == pytest.approx(small.rate_AB_per_fs, rel=1e-10)
    assert large.channel_fractions["upper"] == pytest.approx(
        small.channel_fractions["upper"], rel=1e-10
    )


def test_small_box_warns(two_channel, discs):
    with pytest.warns(GridBoxWarning):
        solve_grid_tpt(
            two_channel,
            *discs,
            temperature_K=2000.0,
            box=(-1.6, 1.6, -1.6, 1.6),
            spacing=0.05,
        )


def test_log_committor_interpolator(two_channel, discs):
    res = solve_grid_tpt(
        two_channel, *discs, temperature_K=1000.0, box=BOX, spacing=0.05
    )
    log_q = res.log_committor_interpolator()
    X, Y = np.meshgrid(res.x_A, res.y_A, indexing="ij")
    free = res.domain & ~res.in_A
    # Exact at the nodes, finite everywhere (also inside A and outside the box).
    np.testing.assert_allclose(
        log_q(X[free], Y[free]), res.log_committor[free], rtol=1e-12
    )
    assert np.all(np.isfinite(log_q(X, Y)))
    assert np.isfinite(log_q(np.array([5.0]), np.array([0.0]))).all()
    # Between nodes on the x axis the value lies between its neighbours.
    ix = np.searchsorted(res.x_A, 0.0)
    iy = np.searchsorted(res.y_A, 0.99)
    mid = log_q(res.x_A[ix] + 0.5 * res.spacing_A, res.y_A[iy])
    ends = res.log_committor[ix : ix + 2, iy]
    assert ends.min() <= mid <= ends.max()
    assert res.committor_at(1.11802, -0.00462) == pytest.approx(1.0)


def test_rejects_unusable_setups(two_channel, discs, xy):
    A, B = discs
    outside = DiscRegion(xy, (5.0, 5.0), 0.2)
    with pytest.raises(ValueError, match="region A contains no grid node"):
        solve_grid_tpt(
            two_channel, outside, B, temperature_K=1000.0, box=BOX, spacing=0.1
        )
    with pytest.raises(ValueError, match="share grid nodes"):
        solve_grid_tpt(two_channel, A, A, temperature_K=1000.0, box=BOX, spacing=0.1)
    with pytest.raises(ValueError, match="crossing"):
        solve_grid_tpt(
            two_channel,
            A,
            B,
            temperature_K=1000.0,
            box=BOX,
            spacing=0.1,
            crossing_x=1.5,
        )
    with pytest.raises(TypeError, match="energy_xy"):
        solve_grid_tpt(object(), A, B, temperature_K=1000.0, box=BOX, spacing=0.1)
