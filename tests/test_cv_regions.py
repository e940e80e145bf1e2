"""Collective variables and the regions A and B built on them."""

import numpy as np
import pytest
import torch
from ase import Atoms

from ase_rare import (
    AtomCoordinates,
    BoxRegion,
    CoordinationMoments,
    DiscRegion,
    PredicateRegion,
    lj7_cluster,
)
from ase_rare.regions import check_disjoint, check_not_both

F64 = torch.float64

#: μ₂, μ₃ of the LJ7 stationary points, METHOD.md §8.3 (rounded to 4 decimals).
LJ7_MOMENTS = {
    "C0": (0.7262, 1.2631),
    "C1": (0.9672, 0.3118),
    "C2": (0.7736, 0.3520),
    "C3": (0.6339, -0.1243),
    "S1": (0.6141, 0.1153),
    "S2": (0.6016, -0.0751),
}


def moments_by_loop(positions: np.ndarray, r0: float) -> tuple[float, float]:
    """μ₂, μ₃ of one configuration, straight from the definition."""
    n = len(positions)
    c = np.zeros(n)
    for i in range(n):
        for j in range(n):
            if i != j:
                r = np.linalg.norm(positions[i] - positions[j])
                c[i] += 1.0 / (1.0 + (r / r0) ** 8)
    d = c - c.mean()
    return float(np.mean(d**2)), float(np.mean(d**3))


def random_rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def assert_invariant(cv, positions: np.ndarray, transform, atol=1e-12) -> None:
    """``cv`` gives the same values before and after ``transform`` of positions."""
    x = torch.as_tensor(positions, dtype=F64)
    y = torch.as_tensor(transform(positions), dtype=F64)
    torch.testing.assert_close(cv(y), cv(x), rtol=0, atol=atol)


# --------------------------------------------------------------------------
# CoordinationMoments
# --------------------------------------------------------------------------


@pytest.mark.parametrize("r0", [1.5, 1.1])
def test_moments_match_direct_loop(r0, rng):
    positions = rng.uniform(-1.5, 1.5, size=(4, 7, 3))
    values = CoordinationMoments(r0)(torch.as_tensor(positions)).numpy()
    assert values.shape == (4, 2)
    expected = [moments_by_loop(p, r0) for p in positions]
    np.testing.assert_allclose(values, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "name",
    ["rotation", "reflection", "translation", "permutation"],
)
def test_moments_invariance(name, rng):
    positions = rng.uniform(-1.5, 1.5, size=(3, 7, 3))
    rot = random_rotation(rng)
    shift = rng.normal(size=3) * 5
    perm = rng.permutation(7)
    transform = {
        "rotation": lambda x: x @ (rot * np.linalg.det(rot)).T,
        "reflection": lambda x: x * np.array([-1.0, 1.0, 1.0]),
        "translation": lambda x: x + shift,
        "permutation": lambda x: x[:, perm],
    }[name]
    assert_invariant(CoordinationMoments(), positions, transform)


def test_moments_gradcheck(rng):
    x = torch.as_tensor(rng.uniform(-1.0, 1.0, size=(2, 4, 3)), dtype=F64)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(CoordinationMoments(), (x,))


@pytest.mark.parametrize("name", LJ7_MOMENTS)
def test_moments_of_lj7_structures(name):
    values = CoordinationMoments(1.5).of(lj7_cluster(name))
    assert values.shape == (2,)
    # The table rounds to 4 decimals: |error| <= 5e-5.
    np.testing.assert_allclose(values, LJ7_MOMENTS[name], rtol=0, atol=1e-4)


def test_cv_equality_decides_comparability():
    assert CoordinationMoments(1.5) == CoordinationMoments(1.5)
    assert CoordinationMoments(1.5) != CoordinationMoments(1.2)
    assert AtomCoordinates(0, "xy") == AtomCoordinates(0, "xy")
    assert AtomCoordinates(0, "xy") != AtomCoordinates(1, "xy")
    assert AtomCoordinates(0, "xy") != CoordinationMoments()


def test_cv_rejects_bad_parameters():
    with pytest.raises(ValueError, match="r0 must be > 0"):
        CoordinationMoments(0.0)
    with pytest.raises(ValueError, match="axes"):
        AtomCoordinates(0, "xw")


# --------------------------------------------------------------------------
# Regions
# --------------------------------------------------------------------------


def one_atom(x: float, y: float) -> Atoms:
    return Atoms("H", positions=[[x, y, 0.0]])


def test_disc_contains():
    disc = DiscRegion(AtomCoordinates(0, "xy"), center=(1.0, -1.0), radius=0.5)
    points = torch.tensor(
        [[[1.0, -1.0, 0.0]], [[1.5, -1.0, 0.0]], [[1.5 + 1e-9, -1, 0]], [[0, 0, 0]]],
        dtype=F64,
    )
    # (1.5, -1) is at distance 0.5 exactly: the boundary belongs to the disc.
    assert disc.contains(points).tolist() == [True, True, False, False]
    assert one_atom(1.1, -1.1) in disc
    assert one_atom(2.0, 0.0) not in disc


def test_box_contains():
    box = BoxRegion(AtomCoordinates(0, "xy"), lower=(-1.0, 0.0), upper=(1.0, 0.5))
    points = torch.tensor(
        [[[0.0, 0.2, 0.0]], [[1.0, 0.5, 0.0]], [[1.01, 0.2, 0.0]], [[0, -0.1, 0]]],
        dtype=F64,
    )
    assert box.contains(points).tolist() == [True, True, False, False]
    assert one_atom(0.5, 0.25) in box
    assert one_atom(0.5, 0.75) not in box


def test_predicate_region():
    right = PredicateRegion(lambda x: x[:, 0, 0] > 0, name="right")
    assert one_atom(0.3, 0.0) in right
    assert one_atom(-0.3, 0.0) not in right
    # Overlap of a predicate region cannot be decided in advance.
    disc = DiscRegion(AtomCoordinates(0, "xy"), center=(0, 0), radius=1)
    assert disc.disjoint_from(right) is None
    check_disjoint(disc, right)


def test_check_disjoint_raises_for_overlapping_discs():
    cv = AtomCoordinates(0, "xy")
    A = DiscRegion(cv, center=(0.0, 0.0), radius=0.5)
    B = DiscRegion(cv, center=(0.8, 0.0), radius=0.5)
    assert A.disjoint_from(B) is False
    with pytest.raises(ValueError, match="overlap"):
        check_disjoint(A, B)

    far = DiscRegion(cv, center=(1.2, 0.0), radius=0.5)
    assert A.disjoint_from(far) is True
    check_disjoint(A, far)

    # Regions on different collective variables cannot be compared in advance.
    other_cv = DiscRegion(AtomCoordinates(0, "xz"), center=(0.0, 0.0), radius=0.5)
    assert A.disjoint_from(other_cv) is None


def test_check_disjoint_disc_and_box():
    cv = AtomCoordinates(0, "xy")
    disc = DiscRegion(cv, center=(0.0, 0.0), radius=0.5)
    touching = BoxRegion(cv, lower=(0.4, -1.0), upper=(1.0, 1.0))
    apart = BoxRegion(cv, lower=(0.6, -1.0), upper=(1.0, 1.0))
    for a, b in [(disc, touching), (touching, disc)]:
        with pytest.raises(ValueError, match="overlap"):
            check_disjoint(a, b)
    check_disjoint(disc, apart)
    check_disjoint(apart, disc)
    with pytest.raises(ValueError, match="overlap"):
        check_disjoint(touching, BoxRegion(cv, lower=(0.9, 0.9), upper=(2, 2)))


@pytest.fixture(scope="module")
def lj7_regions():
    """Regions A (around C3) and B (around C2) of METHOD.md §8.3."""
    cv = CoordinationMoments(1.5)
    A = DiscRegion(cv, center=cv.of(lj7_cluster("C3")), radius=0.03)
    B = DiscRegion(cv, center=cv.of(lj7_cluster("C2")), radius=0.05)
    return A, B


def test_lj7_regions_are_disjoint(lj7_regions):
    A, B = lj7_regions
    check_disjoint(A, B)
    check_disjoint(B, A)


@pytest.mark.parametrize(
    "name, in_a, in_b",
    [
        ("C3", True, False),
        ("C2", False, True),
        ("C0", False, False),
        ("C1", False, False),
        ("S1", False, False),
        ("S2", False, False),
    ],
)
def test_lj7_regions_contain_their_minima_only(lj7_regions, name, in_a, in_b):
    A, B = lj7_regions
    atoms = lj7_cluster(name)
    assert (atoms in A) is in_a
    assert (atoms in B) is in_b


def test_check_not_both():
    in_a = torch.tensor([True, False, False])
    check_not_both(in_a, torch.tensor([False, True, False]))
    with pytest.raises(ValueError, match="both A and B"):
        check_not_both(in_a, torch.tensor([True, False, False]))


def test_regions_reject_bad_input():
    cv = CoordinationMoments()
    with pytest.raises(ValueError, match="center must have 2 components"):
        DiscRegion(cv, center=(0.1, 0.2, 0.3), radius=0.1)
    for radius in (0.0, -0.1):
        with pytest.raises(ValueError, match="radius must be > 0"):
            DiscRegion(cv, center=(0.1, 0.2), radius=radius)
    with pytest.raises(ValueError, match="lower must have 2 components"):
        BoxRegion(cv, lower=(0.0,), upper=(1.0, 1.0))
    with pytest.raises(ValueError, match="lower < upper"):
        BoxRegion(cv, lower=(0.0, 1.0), upper=(1.0, 1.0))
    with pytest.raises(ValueError, match="lower < upper"):
        BoxRegion(cv, lower=(2.0, 0.0), upper=(1.0, 1.0))
