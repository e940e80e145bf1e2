"""Overdamped Langevin dynamics: the one-step kernel and the ASE dynamics object.

Statistical tests use fixed seeds and tolerances of a few standard errors (SE),
each derived next to the test; with the seed fixed they are deterministic, and
with any other seed they would fail with the stated (tiny) probability.
"""

import math

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.io import read

from ase_rare import (
    BatchedCalculator,
    OverdampedLangevin,
    SoftCoreLJ,
    TwoChannelPotential,
    lj7_cluster,
)
from ase_rare.kernels import (
    KB_EV_PER_K,
    LangevinParameters,
    dof_mask,
    largest_curvature,
    overdamped_step,
)

F64 = torch.float64


class HarmonicWell(BatchedCalculator):
    """U = ½ k |x|² for every atom, in 3D; k in eV/Å²."""

    planar = False

    def __init__(self, k: float):
        super().__init__()
        self.k = k

    def batch_energy(self, positions):
        return 0.5 * self.k * (positions * positions).sum((-2, -1))

    def batch_energy_forces(self, positions):
        return self.batch_energy(positions), -self.k * positions


def harmonic_variance(k: float, params: LangevinParameters) -> float:
    """Stationary ⟨x²⟩ per coordinate of the Euler–Maruyama chain in a harmonic well.

    The chain x' = a x + σ ξ with a = 1 − kΔt/γ is an AR(1) process with variance
    σ² / (1 − a²) = (k_B T / k) / (1 − kΔt / (2γ)): the Boltzmann value k_B T / k
    times a discretisation factor that tends to 1 as Δt → 0.
    """
    a = 1.0 - k * params.mobility_step
    return params.noise_scale**2 / (1.0 - a * a)


def rattled_c3(rng, scale=0.05) -> Atoms:
    """LJ7 C3 with its atoms moved off the minimum, so forces are not zero."""
    atoms = lj7_cluster("C3")
    x = atoms.get_positions()
    x[:, :2] += rng.normal(scale=scale, size=(7, 2))
    atoms.set_positions(x)
    return atoms


# --------------------------------------------------------------------------
# The one-step kernel
# --------------------------------------------------------------------------


def test_kernel_parameters():
    # ASE's k_B (CODATA 2014) differs from the CODATA 2018 value in METHOD.md by
    # 3.4e-7 relative: a rate change of βΔE · 3.4e-7 < 1e-5, far below any SE.
    assert KB_EV_PER_K == pytest.approx(8.617333262e-5, rel=1e-6)
    params = LangevinParameters(timestep_fs=0.005, temperature_K=600, friction=2.0)
    assert params.kT == pytest.approx(KB_EV_PER_K * 600, rel=1e-15)
    assert params.mobility_step == pytest.approx(0.0025)
    assert params.noise_scale == pytest.approx(math.sqrt(2 * params.kT * 0.0025))


def test_kernel_one_step_statistics(rng, torch_gen):
    """Displacements have mean (Δt/γ) F and variance 2 k_B T Δt/γ per coordinate.

    From one fixed configuration, n one-step displacements are independent
    Gaussians. The sample mean has SE σ/√n and the sample variance SE
    σ² √(2/(n−1)); 5 SE is exceeded with probability 6e-7 per coordinate, so the
    test is stable for any seed, while the drift itself is ≳ 20 SE (a wrong sign
    or a missing 1/γ would fail).
    """
    atoms = rattled_c3(rng)
    params = LangevinParameters(timestep_fs=0.005, temperature_K=600, friction=0.5)
    x = torch.as_tensor(atoms.get_positions(), dtype=F64)
    forces = torch.as_tensor(atoms.get_forces(), dtype=F64)

    n = 20_000
    mask = dof_mask(7, planar=True)
    noise = torch.randn((n, 7, 3), generator=torch_gen, dtype=F64) * mask
    new = overdamped_step(x.expand(n, 7, 3), forces.expand(n, 7, 3), noise, params)
    displacement = (new - x)[..., :2].reshape(n, 14)

    assert torch.all(new[..., 2] == 0)
    drift = (params.mobility_step * forces[:, :2]).reshape(14)
    sigma2 = params.noise_scale**2
    se_mean = math.sqrt(sigma2 / n)
    se_var = sigma2 * math.sqrt(2 / (n - 1))
    assert drift.abs().max() > 20 * se_mean

    assert (displacement.mean(0) - drift).abs().max() < 5 * se_mean
    assert (displacement.var(0) - sigma2).abs().max() < 5 * se_var


def test_dynamics_one_step_statistics():
    """The ASE object's steps have the kernel's mean and variance.

    n one-step runs from the same point with one random stream; same SE argument
    as for the kernel test. The run is short because each ASE step costs ~1 ms.
    """
    start = np.array([[0.5, 0.3, 0.0]])
    atoms = Atoms("H", positions=start)
    atoms.calc = TwoChannelPotential()
    force = atoms.get_forces()[0, :2]
    dyn = OverdampedLangevin(atoms, 0.05 * units.fs, temperature_K=1000, rng=11)

    n = 1000
    displacement = np.empty((n, 2))
    for i in range(n):
        atoms.set_positions(start)
        dyn.run(1)
        assert atoms.positions[0, 2] == 0.0
        displacement[i] = atoms.positions[0, :2] - start[0, :2]

    drift = dyn.params.mobility_step * force
    sigma2 = dyn.params.noise_scale**2
    se_mean = math.sqrt(sigma2 / n)
    se_var = sigma2 * math.sqrt(2 / (n - 1))
    assert np.abs(drift).max() > 10 * se_mean
    assert np.abs(displacement.mean(0) - drift).max() < 5 * se_mean
    assert np.abs(displacement.var(0, ddof=1) - sigma2).max() < 5 * se_var


# --------------------------------------------------------------------------
# Equilibrium in a harmonic well
# --------------------------------------------------------------------------

# kΔt/γ = 0.5: the discrete chain's variance is 4/3 of the Boltzmann value, a
# difference far larger than the statistical error, so the test also proves that
# the chain, not just "roughly k_B T / k", is reproduced.
WELL_K = 1.0
WELL_PARAMS = LangevinParameters(timestep_fs=0.5, temperature_K=1000, friction=1.0)

# For an AR(1) chain with coefficient a the autocorrelation of x² decays as
# a^{2t}; the integrated factor is (1 + a²)/(1 − a²) = 5/3 at a = 0.5. With
# Var(x²) = 2 v², the SE of the mean of m samples of x² is v √(2 · 5/3 / m).
CORRELATION_FACTOR = 5 / 3


def assert_equilibrium_variance(samples: np.ndarray) -> None:
    v = harmonic_variance(WELL_K, WELL_PARAMS)
    boltzmann = WELL_PARAMS.kT / WELL_K
    assert v == pytest.approx(boltzmann / (1 - WELL_K * 0.5 / 2))
    se = v * math.sqrt(2 * CORRELATION_FACTOR / samples.size)
    # The two candidate values lie > 8 SE apart, so an estimate within 4 SE of
    # the chain's value rules out the plain Boltzmann value.
    assert abs(v - boltzmann) > 8 * se
    estimate = float(np.mean(samples**2))
    assert abs(estimate - v) < 4 * se


def test_kernel_harmonic_equilibrium(torch_gen):
    """Many walkers in a 3D harmonic well, stepped with the batched kernel."""
    well = HarmonicWell(WELL_K)
    walkers, burn_in, steps = 2000, 40, 200
    x = torch.zeros((walkers, 1, 3), dtype=F64)
    samples = []
    for t in range(burn_in + steps):
        _, forces = well.batch_energy_forces(x)
        noise = torch.randn(x.shape, generator=torch_gen, dtype=F64)
        x = overdamped_step(x, forces, noise, WELL_PARAMS)
        # After 40 steps the start is forgotten: a^{80} = 2^{-80}.
        if t >= burn_in:
            samples.append(x.numpy().copy())
    assert_equilibrium_variance(np.array(samples))


def test_dynamics_harmonic_equilibrium():
    """One long ASE trajectory in the same well samples the same variance."""
    atoms = Atoms("H", positions=[[0.0, 0.0, 0.0]])
    atoms.calc = HarmonicWell(WELL_K)
    dyn = OverdampedLangevin(
        atoms,
        WELL_PARAMS.timestep_fs * units.fs,
        temperature_K=WELL_PARAMS.temperature_K,
        friction=WELL_PARAMS.friction,
        rng=3,
    )
    assert dyn.stability_bound_fs == pytest.approx(2 * 1.0 / WELL_K)
    samples = []
    dyn.attach(lambda: samples.append(atoms.get_positions()[0].copy()), interval=1)
    dyn.run(2040)
    assert_equilibrium_variance(np.array(samples[40:]))


# --------------------------------------------------------------------------
# The ASE dynamics object
# --------------------------------------------------------------------------


def test_attach_run_and_context_manager():
    atoms = lj7_cluster("C3")
    calls = []
    with OverdampedLangevin(atoms, 0.005 * units.fs, temperature_K=600, rng=1) as dyn:
        dyn.attach(lambda: calls.append(dyn.nsteps), interval=5)
        assert dyn.run(20)
    assert calls == [0, 5, 10, 15, 20]
    assert dyn.get_time() == pytest.approx(20 * 0.005 * units.fs)
    assert dyn.todict()["temperature_K"] == 600
    assert dyn.todict()["friction"] == 1.0


def test_planar_system_stays_in_plane():
    atoms = lj7_cluster("C3")
    x0 = atoms.get_positions()
    OverdampedLangevin(atoms, 0.005 * units.fs, temperature_K=600, rng=2).run(50)
    assert np.all(atoms.positions[:, 2] == 0.0)
    assert np.abs(atoms.positions[:, :2] - x0[:, :2]).max() > 1e-3


def test_nonplanar_system_moves_in_3d():
    atoms = lj7_cluster("C3")
    atoms.calc = SoftCoreLJ(planar=False)
    OverdampedLangevin(atoms, 0.005 * units.fs, temperature_K=600, rng=2).run(5)
    assert np.abs(atoms.positions[:, 2]).min() > 0.0


def test_same_seed_same_trajectory():
    def trajectory(seed):
        atoms = lj7_cluster("C3")
        frames = []
        dyn = OverdampedLangevin(
            atoms, 0.005 * units.fs, temperature_K=600, rng=seed, check_stability=False
        )
        dyn.attach(lambda: frames.append(atoms.get_positions()), interval=1)
        dyn.run(10)
        return np.array(frames)

    first = trajectory(7)
    np.testing.assert_array_equal(first, trajectory(7))
    np.testing.assert_array_equal(
        first, trajectory(np.random.default_rng(7))
    )  # a seed and a Generator with that seed are the same stream
    assert not np.array_equal(first, trajectory(8))


def test_trajectory_file(tmp_path):
    path = tmp_path / "md.traj"
    atoms = lj7_cluster("C3")
    with OverdampedLangevin(
        atoms,
        0.005 * units.fs,
        temperature_K=600,
        rng=5,
        trajectory=str(path),
        loginterval=2,
    ) as dyn:
        positions = []
        dyn.attach(lambda: positions.append(atoms.get_positions()), interval=2)
        dyn.run(10)

    frames = read(path, ":")
    assert len(frames) == 6  # steps 0, 2, ..., 10
    for frame, expected in zip(frames, positions, strict=True):
        np.testing.assert_array_equal(frame.positions, expected)
    np.testing.assert_array_equal(frames[-1].positions, atoms.positions)
    assert frames[-1].get_potential_energy() == pytest.approx(
        atoms.get_potential_energy(), abs=1e-12
    )


# --------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature_K": 0.0}, "temperature_K must be a positive number"),
        ({"temperature_K": -300.0}, "temperature_K must be a positive number"),
        ({"friction": 0.0}, "friction must be a positive number"),
        ({"friction": -1.0}, "friction must be a positive number"),
        ({"timestep": 0.0}, "timestep must be a positive number"),
        ({"timestep": -0.005 * units.fs}, "timestep must be a positive number"),
        ({"timestep": math.nan}, "timestep must be a positive number"),
    ],
)
def test_rejects_nonpositive_parameters(kwargs, message):
    args = {"timestep": 0.005 * units.fs, "temperature_K": 600.0, "friction": 1.0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        OverdampedLangevin(lj7_cluster("C3"), **args)


def test_rejects_unstable_timestep():
    """LJ7 needs Δt below 2γ/λ_max ≈ 0.011-0.012 fs (METHOD.md §8.3)."""
    atoms = lj7_cluster("C3")
    x0 = torch.as_tensor(atoms.get_positions())
    bound = 2.0 / largest_curvature(atoms.calc, x0, planar=True)
    assert 2 / 180 < bound < 2 / 160

    with pytest.raises(ValueError, match="stability bound") as info:
        OverdampedLangevin(atoms, 0.02 * units.fs, temperature_K=600)
    assert f"{bound:.4g} fs" in str(info.value)

    dyn = OverdampedLangevin(atoms, 0.99 * bound * units.fs, temperature_K=600)
    assert dyn.stability_bound_fs == pytest.approx(bound, rel=1e-12)
    # The check can be switched off, at the user's risk.
    OverdampedLangevin(atoms, 0.02 * units.fs, temperature_K=600, check_stability=False)


def test_rejects_nan_positions():
    atoms = lj7_cluster("C3")
    x = atoms.get_positions()
    x[3, 0] = np.nan
    atoms.set_positions(x)
    with pytest.raises(ValueError, match="NaN"):
        OverdampedLangevin(atoms, 0.005 * units.fs, temperature_K=600)
    with pytest.raises(ValueError, match="NaN"):
        OverdampedLangevin(
            atoms, 0.005 * units.fs, temperature_K=600, check_stability=False
        )


def test_rejects_nonplanar_positions_for_planar_potential():
    atoms = lj7_cluster("C3")
    x = atoms.get_positions()
    x[0, 2] = 0.1
    atoms.set_positions(x)
    with pytest.raises(ValueError, match="non-zero z"):
        OverdampedLangevin(atoms, 0.005 * units.fs, temperature_K=600)


def test_rejects_atoms_without_calculator():
    with pytest.raises(ValueError, match="no calculator"):
        OverdampedLangevin(Atoms("Ar7"), 0.005 * units.fs, temperature_K=600)
