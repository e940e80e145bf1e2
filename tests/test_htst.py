"""Harmonic transition-state theory: the LJ7 reference table, symmetries, limits."""

import json
import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms

from ase_rare import SoftCoreLJ, TwoChannelPotential
from ase_rare.kernels import KB_EV_PER_K
from ase_rare.structures import lj7_cluster
from ase_rare.theory import (
    HarmonicTST,
    HTSTResult,
    harmonic_analysis,
    htst_rate,
    htst_rates,
)

# METHOD.md §8.3 quotes three or four significant figures, i.e. rounding up to 0.2 %;
# the 1 % tolerance leaves room for that and nothing else.
TABLE_RTOL = 0.01

# Rows of METHOD.md §8.3: T (K), k_AB (fs⁻¹), M1 = M2, M3 = M4, k_BA (fs⁻¹).
LJ7_TABLE = [
    (600, 4.59e-4, 0.318, 0.182, 2.86e-5),
    (500, 6.65e-5, 0.333, 0.167, 2.77e-6),
    (400, 3.69e-6, 0.354, 0.146, 8.42e-8),
    (300, 3.03e-8, 0.384, 0.116, 2.53e-10),
]


@pytest.fixture(scope="module")
def lj7():
    """LJ7 forward (from C3, two mirror copies) and backward (from C2) HTST."""
    saddles = [lj7_cluster("S1"), lj7_cluster("S2")]
    forward = HarmonicTST(lj7_cluster("C3"), saddles, multiplicities=[2, 2])
    backward = forward.reverse(lj7_cluster("C2"), multiplicities=[1, 1])
    return forward, backward


def test_lj7_prefactors_match_method_table(lj7):
    forward, backward = lj7
    assert forward.prefactors_per_fs == pytest.approx([1.834, 1.991], rel=TABLE_RTOL)
    assert backward.prefactors_per_fs == pytest.approx([1.703, 1.848], rel=TABLE_RTOL)
    assert forward.barriers_eV == pytest.approx([0.4880, 0.5212], abs=1e-4)
    assert backward.barriers_eV == pytest.approx([0.5918, 0.6250], abs=1e-4)


@pytest.mark.parametrize(("T", "k_ab", "m12", "m34", "k_ba"), LJ7_TABLE)
def test_lj7_rates_and_mode_fractions_match_method_table(lj7, T, k_ab, m12, m34, k_ba):
    forward, backward = lj7
    fwd, bwd = forward.rate(T), backward.rate(T)

    assert fwd.rate_per_fs == pytest.approx(k_ab, rel=TABLE_RTOL)
    assert bwd.rate_per_fs == pytest.approx(k_ba, rel=TABLE_RTOL)
    modes = fwd.mode_fractions
    assert list(modes) == ["LJ7-S1#1", "LJ7-S1#2", "LJ7-S2#1", "LJ7-S2#2"]
    assert list(modes.values()) == pytest.approx([m12, m12, m34, m34], rel=TABLE_RTOL)
    assert sum(fwd.fractions) == pytest.approx(1.0, abs=1e-12)


def test_htst_rates_gives_both_directions(lj7):
    forward, backward = lj7
    names = ("S1", "S2")
    fwd, bwd = htst_rates(
        lj7_cluster("C3"),
        lj7_cluster("C2"),
        [lj7_cluster(n) for n in names],
        temperature_K=450,
        multiplicities_ab=[2, 2],
    )
    assert fwd.rate_per_fs == pytest.approx(forward.rate(450).rate_per_fs, rel=1e-12)
    assert bwd.rate_per_fs == pytest.approx(backward.rate(450).rate_per_fs, rel=1e-12)
    assert bwd.multiplicities == (1, 1)


def _moved(atoms: Atoms, angle_deg: float, shift, order) -> Atoms:
    """A rotated (about z), translated and relabelled copy with its calculator."""
    out = atoms[list(order)]
    out.rotate(angle_deg, "z", center=(0.3, -0.2, 0.0))
    out.translate(shift)
    out.calc = SoftCoreLJ()
    return out


def test_rate_invariant_under_rigid_motion_and_relabelling(rng, lj7):
    forward, _ = lj7
    structures = [lj7_cluster(n) for n in ("C3", "S1", "S2")]
    moved = [
        _moved(a, rng.uniform(0, 360), [*rng.normal(size=2), 0.0], rng.permutation(7))
        for a in structures
    ]
    result = htst_rate(moved[0], [(moved[1], 2), (moved[2], 2)], temperature_K=400)
    reference = forward.rate(400)

    # Only round-off separates the two; the eigenvalues agree to ~1e-12 relative.
    assert result.rate_per_fs == pytest.approx(reference.rate_per_fs, rel=1e-8)
    assert result.fractions == pytest.approx(reference.fractions, rel=1e-8)


def test_rigid_modes_detected_for_each_kind_of_system():
    lj = harmonic_analysis(lj7_cluster("C3"))
    assert (lj.n_translations, lj.n_rotations) == (2, 1)
    assert len(lj.eigenvalues_eV_per_A2) == 2 * 7 - 3
    # Planar, one rotation: the volume factor is sqrt(Σ |r_i − r_c|²).
    x = lj7_cluster("C3").positions
    inertia = np.sum((x - x.mean(0)) ** 2)
    assert lj.log_rotational_volume == pytest.approx(0.5 * math.log(inertia))

    atom = Atoms("H", positions=[[-1.1180220, -0.0046155, 0.0]])
    atom.calc = TwoChannelPotential()
    point = harmonic_analysis(atom, fmax=1e-5)
    assert (point.n_translations, point.n_rotations) == (0, 0)
    assert len(point.eigenvalues_eV_per_A2) == 2


def test_rotational_volume_in_3d_is_sqrt_of_principal_moments():
    # fmax=inf: only the removed modes and their volume are tested, so the
    # structures need not be stationary.
    cluster = Atoms(
        "Cu4",
        positions=[[0, 0, 0], [2.5, 0.1, 0], [1.2, 2.2, 0.2], [1.3, 0.8, 2.1]],
    )
    cluster.calc = EMT()
    point = harmonic_analysis(cluster, fmax=np.inf)
    assert (point.n_translations, point.n_rotations) == (3, 3)
    unit_mass = cluster.copy()
    unit_mass.set_masses([1.0] * 4)
    moments = unit_mass.get_moments_of_inertia()
    assert point.log_rotational_volume == pytest.approx(
        0.5 * np.sum(np.log(moments)), rel=1e-12
    )

    dimer = Atoms("Cu2", positions=[[0, 0, 0], [1.4, 1.4, 1.4]])
    dimer.calc = EMT()
    point = harmonic_analysis(dimer, fmax=np.inf)
    assert (point.n_translations, point.n_rotations) == (3, 2)
    assert len(point.eigenvalues_eV_per_A2) == 1


def test_fixed_atoms_are_frozen_and_break_rigid_motions():
    cluster = Atoms(
        "Cu4",
        positions=[[0, 0, 0], [2.5, 0.1, 0], [1.2, 2.2, 0.2], [1.3, 0.8, 2.1]],
        constraint=FixAtoms(indices=[0]),
    )
    cluster.calc = EMT()
    point = harmonic_analysis(cluster, fmax=np.inf)
    # One atom pinned: nothing rigid is left, and its three coordinates are gone.
    assert (point.n_translations, point.n_rotations) == (0, 0)
    assert len(point.eigenvalues_eV_per_A2) == 3 * 3


class _ForeignSoftCoreLJ(Calculator):
    """The LJ7 potential behind a plain ASE calculator (no batched interface)."""

    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        inner = self.atoms.copy()
        inner.calc = SoftCoreLJ()
        self.results = {
            "energy": inner.get_potential_energy(),
            "forces": inner.get_forces(),
        }


def test_foreign_calculator_uses_finite_difference_hessian(lj7):
    forward, _ = lj7
    structures = [lj7_cluster(n) for n in ("C3", "S1", "S2")]
    for atoms in structures:
        atoms.calc = _ForeignSoftCoreLJ()
    htst = HarmonicTST(
        structures[0], structures[1:], multiplicities=[2, 2], planar=True
    )
    # Central differences with a 1e-5 Å step: truncation ~1e-10 and round-off
    # ~1e-10 eV/Å² against eigenvalues above 5 eV/Å².
    assert htst.prefactors_per_fs == pytest.approx(forward.prefactors_per_fs, rel=1e-6)


def _refine_2d(potential: TwoChannelPotential, xy) -> Atoms:
    """Newton iteration on (x, y) with an analytic Hessian of the 2D potential."""
    x, y = map(float, xy)
    for _ in range(30):
        gx, gy = potential.gradient_xy(torch.tensor(x), torch.tensor(y))
        h = _hessian_2d(potential, x, y)
        dx, dy = np.linalg.solve(h, [-float(gx), -float(gy)])
        x, y = x + dx, y + dy
    atoms = Atoms("H", positions=[[x, y, 0.0]])
    atoms.calc = TwoChannelPotential(potential.tilt)
    return atoms


def _hessian_2d(potential: TwoChannelPotential, x: float, y: float) -> np.ndarray:
    """Central differences of the analytic gradient, independent of the package."""
    h = 1e-5
    rows = []
    for ex, ey in ((h, 0.0), (0.0, h)):
        gp = potential.gradient_xy(torch.tensor(x + ex), torch.tensor(y + ey))
        gm = potential.gradient_xy(torch.tensor(x - ex), torch.tensor(y - ey))
        rows.append(
            [(float(a) - float(b)) / (2 * h) for a, b in zip(gp, gm, strict=True)]
        )
    hess = np.array(rows)
    return 0.5 * (hess + hess.T)


def test_two_channel_rate_equals_hand_formula():
    pot = TwoChannelPotential()
    minimum = _refine_2d(pot, (-1.11802, -0.00462))
    upper = _refine_2d(pot, (0.0, 0.99749))
    lower = _refine_2d(pot, (-0.07604, -0.99768))
    temperature_K, friction = 1500.0, 2.0

    result = htst_rate(
        minimum, [upper, lower], temperature_K=temperature_K, friction=friction
    )

    beta = 1.0 / (KB_EV_PER_K * temperature_K)
    lam_a = np.linalg.eigvalsh(_hessian_2d(pot, *minimum.positions[0, :2]))
    expected = []
    for saddle in (upper, lower):
        lam_u, lam_s = np.linalg.eigvalsh(_hessian_2d(pot, *saddle.positions[0, :2]))
        barrier = saddle.get_potential_energy() - minimum.get_potential_energy()
        nu = (
            abs(lam_u)
            / (2 * np.pi * friction)
            * np.sqrt(np.prod(lam_a) / abs(lam_u * lam_s))
        )
        expected.append(nu * np.exp(-beta * barrier))

    # The hand Hessian is a finite difference (error ~1e-10 eV/Å²) against
    # |λ_u| ≥ 0.03 eV/Å²: agreement to ~1e-8 relative.
    assert result.saddle_rates_per_fs == pytest.approx(expected, rel=1e-6)
    assert result.rate_per_fs == pytest.approx(sum(expected), rel=1e-6)
    assert result.barriers_eV == pytest.approx([1.10335, 1.06340], abs=1e-5)


def test_minimum_given_as_saddle_is_refused():
    with pytest.raises(ValueError, match=r"saddle LJ7-C2 has 0 negative"):
        HarmonicTST(lj7_cluster("C3"), [lj7_cluster("C2")])


def test_saddle_given_as_minimum_is_refused():
    with pytest.raises(ValueError, match=r"minimum LJ7-S1 has 1 negative"):
        HarmonicTST(lj7_cluster("S1"), [lj7_cluster("S2")])


def test_non_stationary_structure_is_refused(rng):
    saddle = lj7_cluster("S1")
    positions = saddle.positions.copy()
    positions[:, :2] += 0.01 * rng.normal(size=(7, 2))
    saddle.positions = positions
    with pytest.raises(ValueError, match="not a stationary point.*refine_stationary"):
        htst_rate(lj7_cluster("C3"), [saddle], temperature_K=500)


def test_multiplicities_given_twice_are_refused():
    with pytest.raises(ValueError, match="given twice"):
        HarmonicTST(lj7_cluster("C3"), [(lj7_cluster("S1"), 2)], multiplicities=[2])


def test_result_summary_and_json_round_trip(lj7):
    forward, _ = lj7
    result = forward.rate(600)
    text = result.summary()
    assert "fs⁻¹" in text and "eV" in text and "LJ7-S2" in text

    data = json.loads(json.dumps(result.to_dict()))
    assert HTSTResult.from_dict(data) == result
