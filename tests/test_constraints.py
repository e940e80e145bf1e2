"""Fixed atoms (ASE constraints) stay fixed in every engine of the package."""

import numpy as np
import pytest
import torch
from ase import units
from ase.build import add_adsorbate, fcc100
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms, FixBondLength, FixCartesian

from ase_rare import (
    BruteForce,
    CalculatorAdapter,
    Ensemble,
    ImportanceLangevin,
    MLPImportance,
    OverdampedLangevin,
    lj7_cluster,
    measure_flux,
)
from ase_rare.constraints import free_coordinates_of
from ase_rare.systems import lj7_system

torch.set_num_threads(1)


def emt_adatom():
    """A Cu adatom on a 2x2x2 Cu(100) slab; only the adatom may move."""
    slab = fcc100("Cu", size=(2, 2, 2), vacuum=6.0)
    add_adsorbate(slab, "Cu", 1.7, "hollow")
    slab.set_constraint(FixAtoms(indices=list(range(len(slab) - 1))))
    slab.calc = EMT()
    return slab


def lj7_with_fixed(indices=(0, 1)):
    atoms = lj7_cluster("C3")
    atoms.set_constraint(FixAtoms(indices=list(indices)))
    return atoms


def test_free_coordinates_from_constraints():
    atoms = lj7_cluster("C3")
    atoms.set_constraint([FixAtoms(indices=[0]), FixCartesian(2, mask=(1, 0, 0))])
    free = free_coordinates_of(atoms, planar=True)
    assert not free[0].any()
    assert free[2].tolist() == [False, True, False]
    assert free[3].tolist() == [True, True, False]


def test_unsupported_constraint_is_refused():
    atoms = lj7_cluster("C3")
    atoms.set_constraint(FixBondLength(0, 1))
    with pytest.raises(NotImplementedError, match="FixAtoms and FixCartesian"):
        free_coordinates_of(atoms)


def test_adapter_reports_free_coordinates():
    slab = emt_adatom()
    adapter = CalculatorAdapter(slab.calc, slab)
    free = adapter.free_coordinates
    assert free[-1].all() and not free[:-1].any()
    slab.set_constraint()
    assert CalculatorAdapter(slab.calc, slab).free_coordinates is None


def test_bruteforce_keeps_fixed_atoms_of_a_foreign_calculator():
    slab = emt_adatom()
    start = slab.get_positions()
    engine = BruteForce(
        slab,
        *_adatom_regions(slab),
        timestep=0.05 * units.fs,
        temperature_K=800,
        n_walkers=3,
        seed=1,
    )
    engine.run(20)
    x = engine.x.numpy()
    # Fixed atoms are bitwise where they started; the adatom moved.
    assert np.array_equal(x[:, :-1], np.broadcast_to(start[:-1], x[:, :-1].shape))
    assert np.abs(x[:, -1] - start[-1]).min() > 0


def test_bruteforce_keeps_fixed_atoms_of_a_batched_potential():
    """The package's own potentials return forces on fixed atoms; the engine
    must drop them."""
    system = lj7_system()
    atoms = lj7_with_fixed()
    engine = BruteForce(
        atoms,
        system.A,
        system.B,
        timestep=0.005 * units.fs,
        temperature_K=600,
        n_walkers=4,
        seed=2,
    )
    engine.run(30)
    x = engine.x.numpy()
    assert np.array_equal(x[:, :2], np.broadcast_to(atoms.positions[:2], (4, 2, 3)))
    assert np.abs(x[:, 2:] - atoms.positions[2:]).max() > 0


def test_ensemble_paths_keep_fixed_atoms():
    system = lj7_system()
    atoms = lj7_with_fixed()
    flux = measure_flux(
        atoms,
        system.A,
        system.B,
        timestep=0.005 * units.fs,
        temperature_K=600,
        n_exit_points=8,
        n_walkers=8,
        equilibrate_fs=0.1,
        seed=3,
    )
    assert np.array_equal(
        flux.exit_points[:, :2], np.broadcast_to(atoms.positions[:2], (8, 2, 3))
    )
    importance = MLPImportance(7, hidden=(4,))
    ens = Ensemble(
        atoms,
        importance,
        system.A,
        system.B,
        temperature_K=600,
        timestep=0.005 * units.fs,
        flux=flux,
        n_roots=8,
        roots_per_batch=8,
        max_steps=40,
        seed=4,
    )
    ens.record_paths(8, interval_steps=5)
    ens.run()
    paths = ens.take_recorded_paths()
    assert paths
    for path in paths:
        fixed = path.positions[:, :2]
        assert np.array_equal(fixed, np.broadcast_to(atoms.positions[:2], fixed.shape))


def test_single_walker_dynamics_keep_fixed_atoms():
    atoms = lj7_with_fixed([3])
    start = atoms.get_positions()
    with OverdampedLangevin(atoms, 0.005 * units.fs, 600, rng=5) as dyn:
        dyn.run(20)
    assert np.array_equal(atoms.positions[3], start[3])

    system = lj7_system()
    walker = lj7_with_fixed([3])
    walker.positions[:, :2] += 0.05 * np.random.default_rng(6).standard_normal((7, 2))
    dyn = ImportanceLangevin(
        walker,
        MLPImportance(7, hidden=(4,)),
        system.A,
        system.B,
        0.005 * units.fs,
        600,
        rng=7,
        check_stability=False,
    )
    fixed = walker.positions[3].copy()
    dyn.run(10)
    assert np.array_equal(walker.positions[3], fixed)


def _adatom_regions(slab):
    from ase_rare import BoxRegion, DiscRegion
    from ase_rare.cv import AtomCoordinates

    cv = AtomCoordinates(len(slab) - 1, "xy")
    x, y = slab.positions[-1, :2]
    step = np.linalg.norm(slab.cell[0]) / 2
    A = DiscRegion(cv, (x, y), 0.3)
    B = BoxRegion(cv, (x + step - 0.3, y - 0.3), (x + step + 0.3, y + 0.3))
    return A, B


def test_adapter_with_a_calculator_per_walker_gives_the_same_forces():
    slab = emt_adatom()
    rng = np.random.default_rng(8)
    x = np.repeat(slab.positions[None], 3, axis=0)
    x[:, -1] += 0.2 * rng.standard_normal((3, 3))
    x = torch.as_tensor(x)
    shared = CalculatorAdapter(slab.calc, slab)
    own = CalculatorAdapter(EMT(), slab, per_walker=True)
    for _ in range(2):  # the second call reuses the per-walker calculators
        e1, f1 = shared.batch_energy_forces(x)
        e2, f2 = own.batch_energy_forces(x)
        assert torch.allclose(e1, e2, rtol=0, atol=1e-12)
        assert torch.allclose(f1, f2, rtol=0, atol=1e-12)
        x = x.clone()
        x[:, -1, 0] += 0.01
    assert len(own._slots) == 3
