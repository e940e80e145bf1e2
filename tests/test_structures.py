"""Reference structures of the LJ7 benchmark (METHOD.md §8.3)."""

import numpy as np
import pytest
import torch

from ase_rare import SoftCoreLJ, lj7_cluster
from ase_rare.kernels import hessian
from ase_rare.structures import LJ7_NAMES, rigid_modes

#: Energy in eV (METHOD.md table, rounded to 5 decimals) and Hessian index.
LJ7_POINTS = {
    "C0": (-12.71121, 0),
    "C1": (-11.67307, 0),
    "C2": (-11.64269, 0),
    "C3": (-11.53889, 0),
    "S1": (-11.05090, 1),
    "S2": (-11.01769, 1),
}


def internal_hessian_eigenvalues(atoms) -> np.ndarray:
    """Hessian eigenvalues of a planar cluster without z and rigid motions.

    The 2N in-plane coordinates minus two translations and one rotation leave
    2N − 3 internal modes; the Hessian is projected onto their orthonormal basis.
    """
    x = atoms.get_positions()
    n = len(x)
    h = hessian(atoms.calc, torch.as_tensor(x))
    in_plane = np.eye(3 * n)[:, np.arange(3 * n) % 3 != 2]
    rigid = rigid_modes(x, planar=True)
    basis = in_plane - rigid.T @ (rigid @ in_plane)
    u, s, _ = np.linalg.svd(basis, full_matrices=False)
    basis = u[:, s > 1e-8]
    assert basis.shape[1] == 2 * n - 3
    # Rigid motions cost no energy: they are exact zero modes of the Hessian.
    assert np.abs(h @ rigid.T).max() < 1e-8
    return np.linalg.eigvalsh(basis.T @ h @ basis)


def test_names():
    assert set(LJ7_NAMES) == set(LJ7_POINTS)


@pytest.mark.parametrize("name", LJ7_POINTS)
def test_lj7_is_stationary_planar_centred(name):
    atoms = lj7_cluster(name)
    assert len(atoms) == 7
    assert isinstance(atoms.calc, SoftCoreLJ)
    assert np.all(atoms.positions[:, 2] == 0.0)
    np.testing.assert_allclose(atoms.positions.mean(0), 0.0, atol=1e-12)
    # Refined by Newton's method to 1e-10 eV/Å; 1e-8 leaves room for round-off.
    assert np.abs(atoms.get_forces()).max() < 1e-8


@pytest.mark.parametrize("name", LJ7_POINTS)
def test_lj7_energy_matches_table(name):
    energy, _ = LJ7_POINTS[name]
    # The table rounds to 5 decimals: |error| <= 5e-6 eV.
    assert lj7_cluster(name).get_potential_energy() == pytest.approx(energy, abs=1e-5)


@pytest.mark.parametrize("name", LJ7_POINTS)
def test_lj7_hessian_index(name):
    """Minima have no negative internal eigenvalue, saddles exactly one."""
    _, index = LJ7_POINTS[name]
    eigenvalues = internal_hessian_eigenvalues(lj7_cluster(name))
    # The softest internal modes have |λ| ≥ 5 eV/Å²: no sign is ambiguous.
    assert np.abs(eigenvalues).min() > 1.0
    assert (eigenvalues < 0).sum() == index


def test_lj7_barriers():
    """C3 → C2 barriers through S1 and S2 as in METHOD.md (0.4880 and 0.5212 eV)."""
    e = {name: lj7_cluster(name).get_potential_energy() for name in LJ7_POINTS}
    assert e["S1"] - e["C3"] == pytest.approx(0.4880, abs=1e-4)
    assert e["S2"] - e["C3"] == pytest.approx(0.5212, abs=1e-4)
    assert e["S1"] - e["C2"] == pytest.approx(0.5918, abs=1e-4)
    assert e["S2"] - e["C2"] == pytest.approx(0.6250, abs=1e-4)


def test_lj7_returns_independent_copies():
    a, b = lj7_cluster("C3"), lj7_cluster("C3")
    a.positions[0, 0] += 1.0
    assert b.positions[0, 0] != a.positions[0, 0]
    np.testing.assert_array_equal(lj7_cluster("C3").positions, b.positions)


def test_lj7_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown LJ7 structure 'C4'") as info:
        lj7_cluster("C4")
    for name in LJ7_NAMES:
        assert name in str(info.value)
