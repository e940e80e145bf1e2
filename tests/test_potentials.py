"""Potentials: forces, the ASE and batched paths, and each model's known physics.

Every potential goes through the same property checkers (forces are −∇E, the ASE
path equals the batched path, a batch equals its members evaluated one by one);
the model-specific tests then pin the numbers that METHOD.md states.
"""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones

from ase_rare import (
    BatchedCalculator,
    CalculatorAdapter,
    RuggedPotential,
    SoftCoreLJ,
    TwoChannelPotential,
    as_batched,
    lj7_cluster,
)
from ase_rare.kernels import hessian

F64 = torch.float64

#: Finite-difference step in Å. Central differences at h and h/2 combined by
#: Richardson extrapolation, (4 D(h/2) − D(h)) / 3, cancel the O(h²) truncation
#: term and leave O(h⁴) ≈ 1e-16 |∂⁵E| (negligible here); round-off is about
#: ε|E|/(h/2) ≈ 2e-16 · 100 eV / 5e-5 Å = 4e-10 eV/Å. FD_ATOL keeps a margin of 25
#: over that; a wrong force term (a missing pair, a sign) would be off by ≳ 1e-3.
FD_STEP = 1e-4
FD_ATOL = 1e-8

#: The ASE path and the batched path run the same float64 arithmetic, up to the
#: order of summation: they must agree to round-off, far below 1e-10.
PATH_ATOL = 1e-10


# --------------------------------------------------------------------------
# Reusable property checkers
# --------------------------------------------------------------------------


def moving_axes(calc) -> tuple[int, ...]:
    return (0, 1) if getattr(calc, "planar", False) else (0, 1, 2)


def assert_forces_are_minus_gradient(atoms: Atoms) -> None:
    """Forces from ``atoms.get_forces()`` equal −∇E by finite differences."""
    x0 = atoms.get_positions()
    forces = atoms.get_forces()
    fd = np.zeros_like(forces)
    for i in range(len(atoms)):
        for a in moving_axes(atoms.calc):
            d = []
            for h in (FD_STEP, FD_STEP / 2):
                energies = []
                for sign in (1.0, -1.0):
                    x = x0.copy()
                    x[i, a] += sign * h
                    atoms.set_positions(x)
                    energies.append(atoms.get_potential_energy())
                d.append(-(energies[0] - energies[1]) / (2 * h))
            fd[i, a] = (4 * d[1] - d[0]) / 3
    atoms.set_positions(x0)

    np.testing.assert_allclose(forces, fd, rtol=0, atol=FD_ATOL)
    if getattr(atoms.calc, "planar", False):
        assert np.all(forces[:, 2] == 0.0), "planar potential with a z force"


def assert_ase_path_matches_batch(atoms: Atoms, stack: np.ndarray) -> None:
    """ASE single evaluations, batches of one and one batch of W all agree."""
    calc = atoms.calc
    energies, forces = calc.batch_energy_forces(torch.as_tensor(stack, dtype=F64))
    assert energies.shape == (len(stack),)
    assert forces.shape == stack.shape
    assert energies.dtype == F64 and forces.dtype == F64

    x0 = atoms.get_positions()
    for w, positions in enumerate(stack):
        atoms.set_positions(positions)
        np.testing.assert_allclose(
            atoms.get_potential_energy(), energies[w].item(), rtol=0, atol=PATH_ATOL
        )
        np.testing.assert_allclose(
            atoms.get_forces(), forces[w].numpy(), rtol=0, atol=PATH_ATOL
        )

        e1, f1 = calc.batch_energy_forces(torch.as_tensor(positions[None], dtype=F64))
        np.testing.assert_allclose(e1[0], energies[w], rtol=0, atol=PATH_ATOL)
        np.testing.assert_allclose(f1[0], forces[w], rtol=0, atol=PATH_ATOL)
    atoms.set_positions(x0)


def assert_autograd_matches_analytic(calc: BatchedCalculator, stack) -> None:
    """Analytic forces equal the base class's autograd forces of batch_energy."""
    x = torch.as_tensor(stack, dtype=F64)
    e_analytic, f_analytic = calc.batch_energy_forces(x)
    e_auto, f_auto = BatchedCalculator.batch_energy_forces(calc, x)
    torch.testing.assert_close(e_analytic, calc.batch_energy(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(e_auto, e_analytic, rtol=0, atol=PATH_ATOL)
    torch.testing.assert_close(f_auto, f_analytic, rtol=0, atol=PATH_ATOL)


# --------------------------------------------------------------------------
# The systems every checker is applied to
# --------------------------------------------------------------------------


def planar(xy: np.ndarray) -> np.ndarray:
    out = np.zeros(xy.shape[:-1] + (3,))
    out[..., :2] = xy
    return out


def softcore_planar(rng):
    stack = planar(rng.uniform(-1.5, 1.5, size=(4, 7, 2)))
    atoms = Atoms("Ar7", positions=stack[0])
    atoms.calc = SoftCoreLJ()
    return atoms, stack


def softcore_3d(rng):
    stack = rng.uniform(-1.2, 1.2, size=(4, 7, 3))
    atoms = Atoms("Ar7", positions=stack[0])
    atoms.calc = SoftCoreLJ(epsilon=0.7, sigma=1.1, alpha=0.3, planar=False)
    return atoms, stack


def two_channel(rng):
    stack = planar(rng.uniform(-1.5, 1.5, size=(6, 1, 2)))
    atoms = Atoms("H", positions=stack[0])
    atoms.calc = TwoChannelPotential()
    return atoms, stack


def rugged(rng):
    pot = RuggedPotential()
    q = np.empty((4, 14))
    q[:, 0] = rng.uniform(-1.5, 1.5, 4)
    q[:, 1] = rng.uniform(-1.2, 1.2, 4)
    # Extra coordinates scattered over a few wells of the rough landscape.
    q[:, 2:] = np.outer(q[:, 0], pot.couplings) + rng.uniform(-0.5, 0.5, (4, 12))
    stack = pot.to_positions(torch.as_tensor(q)).numpy()
    atoms = Atoms("H7", positions=stack[0])
    atoms.calc = pot
    return atoms, stack


def adapter_lj(rng):
    # A compact 3D cluster near LJ spacing, so every pair is in the smooth region.
    base = lj7_cluster("C0").positions * 2 ** (1 / 6) / 1.5 ** (1 / 6)
    stack = base + rng.normal(scale=0.03, size=(3, 7, 3))
    atoms = Atoms("Ar7", positions=stack[0])
    atoms.calc = CalculatorAdapter(
        LennardJones(sigma=1.0, epsilon=1.0, rc=3.0, smooth=True), atoms
    )
    return atoms, stack


def emt_cluster(rng):
    # Six fcc sites of Cu (a = 3.6 Å), two of them Al.
    sites = np.array(
        [
            [0.0, 0.0, 0.0],
            [0.0, 1.8, 1.8],
            [1.8, 0.0, 1.8],
            [1.8, 1.8, 0.0],
            [3.6, 0.0, 0.0],
            [0.0, 0.0, 3.6],
        ]
    )
    stack = sites + rng.normal(scale=0.05, size=(3, 6, 3))
    atoms = Atoms("Cu4Al2", positions=stack[0])
    atoms.calc = CalculatorAdapter(EMT(), atoms)
    return atoms, stack


SYSTEMS = {
    "softcore_lj_planar": softcore_planar,
    "softcore_lj_3d": softcore_3d,
    "two_channel": two_channel,
    "rugged": rugged,
    "adapter_lj": adapter_lj,
    "adapter_emt": emt_cluster,
}
NATIVE = ["softcore_lj_planar", "softcore_lj_3d", "two_channel", "rugged"]


@pytest.mark.parametrize("name", SYSTEMS)
def test_forces_are_minus_gradient(name, rng):
    atoms, stack = SYSTEMS[name](rng)
    for positions in stack[:2]:
        atoms.set_positions(positions)
        assert_forces_are_minus_gradient(atoms)


@pytest.mark.parametrize("name", SYSTEMS)
def test_ase_path_matches_batch(name, rng):
    atoms, stack = SYSTEMS[name](rng)
    assert_ase_path_matches_batch(atoms, stack)


@pytest.mark.parametrize("name", NATIVE)
def test_autograd_forces_match_analytic(name, rng):
    atoms, stack = SYSTEMS[name](rng)
    assert_autograd_matches_analytic(atoms.calc, stack)


# --------------------------------------------------------------------------
# Soft-core Lennard-Jones
# --------------------------------------------------------------------------

SOFTCORE_PARAMS = [(1.0, 1.0, 0.5), (0.7, 1.3, 0.3)]


def dimer_energy(calc: SoftCoreLJ, r: float) -> float:
    atoms = Atoms("Ar2", positions=[[0.0, 0.0, 0.0], [r, 0.0, 0.0]])
    atoms.calc = calc
    return atoms.get_potential_energy()


def test_softcore_value_at_zero_separation():
    assert dimer_energy(SoftCoreLJ(), 0.0) == pytest.approx(8.0, abs=1e-12)
    eps, sigma, alpha = SOFTCORE_PARAMS[1]
    expected = 4 * eps * (1 - alpha) / alpha**2
    calc = SoftCoreLJ(eps, sigma, alpha)
    assert dimer_energy(calc, 0.0) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("eps, sigma, alpha", SOFTCORE_PARAMS)
def test_softcore_minimum(eps, sigma, alpha):
    calc = SoftCoreLJ(eps, sigma, alpha)
    r_min = sigma * (2 - alpha) ** (1 / 6)
    atoms = Atoms("Ar2", positions=[[0.0, 0.0, 0.0], [r_min, 0.0, 0.0]])
    atoms.calc = calc
    assert atoms.get_potential_energy() == pytest.approx(-eps, abs=1e-12)
    assert np.abs(atoms.get_forces()).max() < 1e-12

    # A minimum, not a maximum: both neighbours lie higher.
    for dr in (-1e-3, 1e-3):
        assert dimer_energy(calc, r_min + dr) > -eps


def random_rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def test_softcore_invariance(rng):
    """Energy invariant, forces equivariant under rotation, translation, permutation."""
    x = rng.uniform(-1.2, 1.2, size=(7, 3))
    rot = random_rotation(rng)
    shift = rng.normal(size=3)
    perm = rng.permutation(7)
    moved = np.stack([x, x @ rot.T + shift, x[perm]])
    calc = SoftCoreLJ(planar=False)
    e, f = calc.batch_energy_forces(torch.as_tensor(moved))
    f = f.numpy()

    np.testing.assert_allclose(e[1:], e[0].expand(2), rtol=1e-13, atol=0)
    np.testing.assert_allclose(f[1], f[0] @ rot.T, rtol=0, atol=1e-12)
    np.testing.assert_allclose(f[2], f[0][perm], rtol=0, atol=1e-12)


def test_softcore_rejects_bad_parameters():
    with pytest.raises(ValueError, match="epsilon > 0"):
        SoftCoreLJ(epsilon=0.0)
    with pytest.raises(ValueError, match="sigma > 0"):
        SoftCoreLJ(sigma=-1.0)


# --------------------------------------------------------------------------
# Two-channel 2D potential: stationary points of METHOD.md §8.1
# --------------------------------------------------------------------------

# (x, y) in Å, energy in eV, number of negative Hessian eigenvalues.
TWO_CHANNEL_POINTS = {
    "minimum_A": ((-1.11802, -0.00462), -0.08338, 0),
    "minimum_B": ((1.11802, -0.00462), -0.08338, 0),
    "upper_saddle": ((0.0, 0.99749), 1.01997, 1),
    "lower_saddle_left": ((-0.07604, -0.99768), 0.98002, 1),
    "lower_saddle_right": ((0.07604, -0.99768), 0.98002, 1),
    "shallow_well": ((0.0, -1.00249), 0.97998, 0),
}


def newton_2d(pot: TwoChannelPotential, xy) -> tuple[np.ndarray, np.ndarray]:
    """Stationary point nearest ``xy`` and the 2x2 Hessian there."""
    x = torch.tensor([[[xy[0], xy[1], 0.0]]], dtype=F64)
    for _ in range(20):
        h = hessian(pot, x[0])[:2, :2]
        _, f = pot.batch_energy_forces(x)
        x[0, 0, :2] += torch.as_tensor(np.linalg.solve(h, f[0, 0, :2].numpy()))
    return x[0, 0, :2].numpy(), hessian(pot, x[0])[:2, :2]


@pytest.mark.parametrize("name", TWO_CHANNEL_POINTS)
def test_two_channel_stationary_points(name):
    (xy, energy, index) = TWO_CHANNEL_POINTS[name]
    pot = TwoChannelPotential()
    atoms = Atoms("H", positions=[[xy[0], xy[1], 0.0]])
    atoms.calc = pot

    # The table rounds energies to 5 decimals: |error| <= 5e-6 eV.
    assert atoms.get_potential_energy() == pytest.approx(energy, abs=1e-5)

    # Coordinates rounded to 5 decimals are off by <= 5e-6 Å per axis, so the
    # gradient there is at most λ_max · 5e-6 · √2.
    exact, h = newton_2d(pot, xy)
    lam = np.linalg.eigvalsh(h)
    grad_bound = np.abs(lam).max() * 5e-6 * np.sqrt(2)
    assert np.linalg.norm(atoms.get_forces()) <= grad_bound
    np.testing.assert_allclose(exact, xy, rtol=0, atol=5e-6 + 1e-12)
    assert (lam < 0).sum() == index


def test_two_channel_mirror_symmetry(rng):
    """U(x, y) = U(−x, y): the tilt acts along y only."""
    pot = TwoChannelPotential()
    x, y = torch.as_tensor(rng.uniform(-2, 2, (2, 50)))
    torch.testing.assert_close(pot.energy_xy(x, y), pot.energy_xy(-x, y))


# --------------------------------------------------------------------------
# Rugged 14D potential
# --------------------------------------------------------------------------


def test_rugged_reduces_to_2d_on_comoving_axis(rng):
    """With every u_k = x_k − c_k x1 = 0 the 14D potential is the 2D one."""
    pot = RuggedPotential()
    q = np.zeros((8, 14))
    q[:, 0] = rng.uniform(-1.5, 1.5, 8)
    q[:, 1] = rng.uniform(-1.2, 1.2, 8)
    q[:, 2:] = np.outer(q[:, 0], pot.couplings)
    x = pot.to_positions(torch.as_tensor(q))
    energy, forces = pot.batch_energy_forces(x)

    x1, x2 = x[:, 0, 0], x[:, 0, 1]
    dx, dy = pot.base.gradient_xy(x1, x2)
    torch.testing.assert_close(energy, pot.base.energy_xy(x1, x2), rtol=0, atol=1e-12)
    torch.testing.assert_close(forces[:, 0, 0], -dx, rtol=0, atol=1e-12)
    torch.testing.assert_close(forces[:, 0, 1], -dy, rtol=0, atol=1e-12)
    # At u = 0 each extra coordinate sits at the bottom of its own well.
    assert forces[:, 1:].abs().max() < 1e-12


def test_rugged_coordinates_round_trip(rng):
    q = torch.as_tensor(rng.normal(size=(5, 14)))
    x = RuggedPotential.to_positions(q)
    assert x.shape == (5, 7, 3)
    assert torch.all(x[..., 2] == 0)
    torch.testing.assert_close(RuggedPotential.to_coordinates(x), q, rtol=0, atol=0)
    torch.testing.assert_close(
        RuggedPotential.to_positions(RuggedPotential.to_coordinates(x)),
        x,
        rtol=0,
        atol=0,
    )


def test_rugged_rejects_bad_parameters():
    with pytest.raises(ValueError, match="12 couplings"):
        RuggedPotential(couplings=(0.1,) * 11)
    with pytest.raises(ValueError, match="kappa > 0"):
        RuggedPotential(kappa=0.0)


# --------------------------------------------------------------------------
# Adapter for foreign calculators
# --------------------------------------------------------------------------


class EnergyOnly(Calculator):
    implemented_properties = ["energy"]


def test_as_batched_returns_batched_calculator_itself():
    calc = SoftCoreLJ()
    assert as_batched(calc, Atoms("Ar2")) is calc


def test_as_batched_wraps_other_calculators():
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [2.5, 0, 0]])
    emt = EMT()
    wrapped = as_batched(emt, atoms)
    assert isinstance(wrapped, CalculatorAdapter)
    assert wrapped.calc is emt
    assert wrapped.n_atoms == 2


def test_as_batched_without_calculator():
    with pytest.raises(ValueError, match="no calculator"):
        as_batched(None, Atoms("Ar"))


def test_adapter_refuses_calculator_without_forces():
    with pytest.raises(ValueError, match="forces"):
        CalculatorAdapter(EnergyOnly(), Atoms("Ar"))
    with pytest.raises(ValueError, match="forces"):
        as_batched(EnergyOnly(), Atoms("Ar"))


def test_adapter_equals_wrapped_calculator(rng):
    """The adapter returns exactly what the wrapped calculator computes."""
    atoms, stack = emt_cluster(rng)
    energies, forces = atoms.calc.batch_energy_forces(torch.as_tensor(stack))
    direct = Atoms("Cu4Al2")
    direct.calc = EMT()
    for w, positions in enumerate(stack):
        direct.set_positions(positions)
        assert energies[w].item() == direct.get_potential_energy()
        np.testing.assert_array_equal(forces[w].numpy(), direct.get_forces())


def test_adapter_planar_zeroes_z_forces():
    atoms = Atoms("Ar3", positions=[[0, 0, 0], [1.1, 0, 0], [0, 1.2, 0]])
    adapter = CalculatorAdapter(LennardJones(), atoms, planar=True)
    _, forces = adapter.batch_energy_forces(torch.as_tensor(atoms.positions[None]))
    assert torch.all(forces[..., 2] == 0)
    with pytest.raises(ValueError, match="non-zero z"):
        adapter.check_positions(torch.ones((1, 3, 3), dtype=F64))
