"""The four LJ7 C3 -> C2 transition modes (METHOD.md §8.3) and their classifier."""

import math

import numpy as np
import pytest
import torch

from ase_rare import lj7_cluster
from ase_rare import lj7_modes as lm
from ase_rare.kernels import hessian
from ase_rare.lj7_modes import (
    LJ7_MODE_NAMES,
    LJ7Modes,
    aligned_rmsd,
    lj7_mode_saddles,
    match_labels,
)
from ase_rare.structures import rigid_modes
from ase_rare.systems import lj7_system

#: Saddle energies in eV (METHOD.md table, 5 decimals) of M1-M4.
MODE_ENERGY = {"M1": -11.05090, "M2": -11.05090, "M3": -11.01769, "M4": -11.01769}


def as_tensor(atoms) -> torch.Tensor:
    return torch.as_tensor(atoms.positions, dtype=torch.float64)


def turn(x: torch.Tensor, angle: float, shift=(0.0, 0.0)) -> torch.Tensor:
    """Rotate ``(..., N, 3)`` by ``angle`` (radians) about z, then translate in xy."""
    c, s = math.cos(angle), math.sin(angle)
    rot = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=x.dtype)
    return x @ rot.T + torch.tensor([*shift, 0.0], dtype=x.dtype)


@pytest.fixture(scope="module")
def system():
    return lj7_system(modes=True)


@pytest.fixture(scope="module")
def modes(system) -> LJ7Modes:
    return system.channels


@pytest.fixture(scope="module")
def saddles() -> torch.Tensor:
    """Labelled saddles ``(4, 7, 3)`` of M1-M4."""
    return torch.stack([as_tensor(a) for a in lj7_mode_saddles().values()])


@pytest.fixture(scope="module")
def c3() -> torch.Tensor:
    return as_tensor(lj7_cluster("C3"))


@pytest.fixture(scope="module")
def products(saddles, system):
    """For each mode: unit unstable mode pointing to C2, and the labelled C2."""
    out = []
    for s in saddles.numpy():
        mode = lm._unstable_mode(system.start_A.calc, s)
        ends = [lm._descend(system.start_A.calc, s + k * 0.05 * mode) for k in (1, -1)]
        into_b = [system.B.contains(torch.as_tensor(e)[None])[0] for e in ends]
        assert sum(bool(b) for b in into_b) == 1
        k = 0 if into_b[0] else 1
        out.append((torch.as_tensor((1, -1)[k] * mode), torch.as_tensor(ends[k])))
    return out


def internal_eigenvalues(x: np.ndarray, calc) -> np.ndarray:
    """Hessian eigenvalues in the plane, without rigid translations and rotation."""
    n = len(x)
    h = hessian(calc, torch.as_tensor(x))
    in_plane = np.eye(3 * n)[:, np.arange(3 * n) % 3 != 2]
    rigid = rigid_modes(x, planar=True)
    u, s, _ = np.linalg.svd(in_plane - rigid.T @ (rigid @ in_plane), 0)
    basis = u[:, s > 1e-8]
    return np.linalg.eigvalsh(basis.T @ h @ basis)


@pytest.mark.parametrize("name", LJ7_MODE_NAMES)
def test_mode_saddle_is_first_order_saddle(name):
    atoms = lj7_mode_saddles()[name]
    # Newton-refined to 1e-10 eV/Å; the table rounds energies to 5 decimals.
    assert np.abs(atoms.get_forces()).max() < 1e-8
    assert atoms.get_potential_energy() == pytest.approx(MODE_ENERGY[name], abs=1e-5)
    eigenvalues = internal_eigenvalues(atoms.positions, atoms.calc)
    # The softest internal modes of S1/S2 have |λ| > 1 eV/Å²: no sign is ambiguous.
    assert np.abs(eigenvalues).min() > 1.0
    assert (eigenvalues < 0).sum() == 1


def test_mirror_pairs_equal_energy_and_distinct(saddles):
    energy = {k: a.get_potential_energy() for k, a in lj7_mode_saddles().items()}
    assert energy["M1"] == pytest.approx(energy["M2"], abs=1e-9)
    assert energy["M3"] == pytest.approx(energy["M4"], abs=1e-9)
    rmsd = aligned_rmsd(saddles[:, None], saddles[None])
    off_diagonal = rmsd[~torch.eye(4, dtype=torch.bool)]
    # Thermal spread at the saddles is ~0.05 Å RMSD; distinct saddles are ≥ 0.19 Å
    # apart, so 0.1 Å separates "the same" from "different" with room on both sides.
    assert off_diagonal.min() > 0.1
    assert rmsd.diagonal().max() < 1e-6


def test_mirror_partner_is_reflection_with_mirror_labels(saddles, c3):
    """M2 (M4) is M1 (M3) reflected across x = 0 and relabelled like C3's mirror."""
    mirror = torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    perm, rmsd = match_labels((c3 * mirror)[None], c3)
    assert rmsd[0] < 1e-8
    for a, b in ((0, 1), (2, 3)):
        reflected = lm._relabel((saddles[a] * mirror)[None], perm)
        assert aligned_rmsd(reflected, saddles[b])[0] < 1e-6


def test_apex_moves_to_positive_x_in_odd_modes(saddles, c3):
    apex = int(c3[:, 0].abs().argmin())
    assert apex == 0
    for k, sign in enumerate((1, -1, 1, -1)):
        shift = lm._superpose(saddles[k].numpy(), c3.numpy(), saddles[k].numpy())
        assert sign * (shift[apex, 0] - c3[apex, 0]) > 0.05


def test_match_labels_recovers_permutation_and_motion(c3, rng):
    """Atom i of ``c3[p]`` is reference atom ``p[i]``, whatever the motion."""
    perms = torch.stack([torch.as_tensor(rng.permutation(7)) for _ in range(5)])
    xs = torch.stack(
        [turn(c3[p], rng.uniform(0, 2 * math.pi), rng.normal(size=2)) for p in perms]
    )
    found, rmsd = match_labels(xs, c3)
    # Exact copies: what is left is round-off of the rotation.
    assert rmsd.max() < 1e-12
    assert torch.equal(found, perms)


def test_each_saddle_classifies_as_itself(modes, saddles):
    assert modes.classify(saddles).tolist() == [0, 1, 2, 3]


def test_displaced_toward_c2_classifies_as_its_mode(modes, saddles, products):
    # 0.1 Å along the unstable mode is past the thermal crossing region but still
    # nearer its own saddle (≥ 0.19 Å from the others).
    moved = torch.stack(
        [s + 0.1 * d for s, (d, _) in zip(saddles, products, strict=True)]
    )
    assert modes.classify(moved).tolist() == [0, 1, 2, 3]


def test_classification_invariant_under_rigid_motion(modes, saddles, rng):
    for _ in range(3):
        moved = turn(saddles, rng.uniform(0, 2 * math.pi), rng.normal(size=2))
        assert modes.classify(moved).tolist() == [0, 1, 2, 3]


def test_classification_follows_anchor_labels(modes, saddles, c3, rng):
    """Relabel saddle and anchor alike: the mode is unchanged."""
    for _ in range(3):
        p = torch.as_tensor(rng.permutation(7))
        angle = rng.uniform(0, 2 * math.pi)
        x = turn(saddles[:, p], angle)
        anchor = turn(c3[p], angle + 0.3).expand(4, 7, 3)
        assert modes.classify(x, anchors=anchor).tolist() == [0, 1, 2, 3]


def test_reflection_swaps_mirror_modes(modes, saddles, c3):
    """Reflecting the whole path (saddle and the C3 it left) maps M1<->M2, M3<->M4."""
    mirror = torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64)
    anchor = (c3 * mirror).expand(4, 7, 3)
    assert modes.classify(saddles * mirror, anchors=anchor).tolist() == [1, 0, 3, 2]


def linear_path(points, frames: int = 30) -> torch.Tensor:
    """Piecewise-linear path through ``points`` ``(W, 7, 3)``: ``(T, W, 7, 3)``."""
    t = torch.linspace(0, 1, frames + 1, dtype=torch.float64)[:-1, None, None, None]
    legs = [a + t * (b - a) for a, b in zip(points[:-1], points[1:], strict=True)]
    return torch.cat([*legs, points[-1][None]])


def feed(tracker, path, energies: bool):
    calc = lj7_cluster("C3").calc
    for old, new in zip(path[:-1], path[1:], strict=True):
        tracker.update(old, new, calc.batch_energy(old) if energies else None)


@pytest.mark.parametrize("energies", [True, False])
def test_tracker_labels_synthetic_paths(modes, saddles, products, c3, energies):
    """C3 -> saddle k -> C2 for k = 0..3 as one batch, each rotated differently."""
    c2 = torch.stack([end for _, end in products])
    angles = (0.0, 1.0, 2.5, -2.0)
    path = linear_path(
        [
            torch.stack([turn(c3, a) for a in angles]),
            torch.stack([turn(s, a) for s, a in zip(saddles, angles, strict=True)]),
            torch.stack([turn(e, a) for e, a in zip(c2, angles, strict=True)]),
        ]
    )
    tracker = modes.tracker(path[0])
    assert tracker.names == LJ7_MODE_NAMES
    assert tracker.labels().tolist() == [-1] * 4
    feed(tracker, path, energies)
    assert tracker.labels().tolist() == [0, 1, 2, 3]


def test_tracker_forgets_failed_excursion(modes, saddles, products, c3):
    """A first excursion over M3 that returns to A does not count for the next."""
    _, c2 = products[0]
    first = linear_path([c3[None], saddles[2][None], c3[None]])
    second = linear_path([c3[None], saddles[0][None], c2[None]])
    tracker = modes.tracker(c3[None])
    feed(tracker, torch.cat([first, second]), energies=True)
    assert tracker.labels().tolist() == [0]


def test_tracker_from_relabelled_start(modes, saddles, products, c3, rng):
    """Walkers that start at a relabelled C3 get the mode of the relabelled path."""
    p = torch.as_tensor(rng.permutation(7))
    path = linear_path(
        [turn(x[p], 0.7)[None] for x in (c3, saddles[3], products[3][1])]
    )
    tracker = modes.tracker(path[0])
    feed(tracker, path, energies=True)
    assert tracker.labels().tolist() == [3]


def test_restart_clears(modes, saddles, products, c3):
    path = linear_path(
        [c3.expand(4, 7, 3), saddles, torch.stack([e for _, e in products])]
    )
    tracker = modes.tracker(path[0])
    feed(tracker, path, energies=True)
    tracker.restart(torch.tensor([True, False, True, False]))
    assert tracker.labels().tolist() == [-1, 1, -1, 3]


def test_take_keeps_path_memory_of_copies(modes, saddles, products, c3):
    """Split and killed walkers: each copy keeps the mode of the walker it copies."""
    path = linear_path(
        [c3.expand(4, 7, 3), saddles, torch.stack([e for _, e in products])]
    )
    tracker = modes.tracker(path[0])
    feed(tracker, path, energies=True)
    tracker.take(torch.tensor([3, 3, 0, 2]))
    assert tracker.labels().tolist() == [3, 3, 0, 2]


def test_tracker_refuses_start_away_from_c3(modes):
    c2 = as_tensor(lj7_cluster("C2"))[None]
    with pytest.raises(ValueError, match="starts .* from C3"):
        modes.tracker(c2)


def test_lj7_system_modes():
    assert lj7_system().channels is None
    channels = lj7_system(modes=True).channels
    assert isinstance(channels, LJ7Modes)
    assert channels.names == ("M1", "M2", "M3", "M4")
