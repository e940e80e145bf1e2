"""ImportanceLangevin: one biased path as an ASE dynamics object.

The runs use the two-channel 2D potential at 4000 K with Δt = 0.05 fs, where a
path from next to A ends within a few tens of steps. Every test is
deterministic (fixed seeds); none is statistical.
"""

import math

import numpy as np
import pytest
import torch
from ase import units
from ase.io import read

from ase_rare import TwoChannelPotential
from ase_rare.dynamics import ImportanceLangevin
from ase_rare.importance import GridImportance
from ase_rare.kernels import LangevinParameters, candidate_step, tilted_step
from ase_rare.systems import two_channel_system
from ase_rare.theory import solve_grid_tpt

# The test tensors are tiny; a second thread only adds hand-off cost.
torch.set_num_threads(1)

F64 = torch.float64
HOT_K = 4000.0
HOT_DT_FS = 0.05
#: Just outside A (0.27 Å from its centre; radius 0.2 Å): where exit points lie.
NEAR_A_XY = (-0.85, 0.0)
#: In the lower channel, far from A and B: no path ends within a few steps.
MIDWAY_XY = (-0.3, -0.8)
DONE = ("reached B", "returned to A")


@pytest.fixture(scope="module")
def system():
    return two_channel_system()


@pytest.fixture(scope="module")
def committor(system):
    """The grid committor at 4000 K: drives paths to B (Doob transform)."""
    res = solve_grid_tpt(
        TwoChannelPotential(),
        system.A,
        system.B,
        temperature_K=HOT_K,
        box=(-2.5, 2.5, -2.5, 2.5),
        spacing=0.02,
    )
    return GridImportance.from_grid_tpt(res)


def atoms_at(system, xy):
    atoms = system.start_A.copy()
    atoms.positions[0, :2] = xy
    atoms.calc = TwoChannelPotential()
    return atoms


def make_dyn(system, importance, xy=NEAR_A_XY, **kwargs):
    args = dict(rng=0)
    args.update(kwargs)
    return ImportanceLangevin(
        atoms_at(system, xy),
        importance,
        system.A,
        system.B,
        HOT_DT_FS * units.fs,
        HOT_K,
        **args,
    )


def record(dyn, every: int = 1) -> list:
    """Attach an observer that stores (step, positions, ln w, status)."""
    log = []

    def observer():
        log.append(
            (
                dyn.nsteps,
                dyn.atoms.get_positions().copy(),
                dyn.log_weight,
                dyn.status,
            )
        )

    dyn.attach(observer, interval=every)
    return log


# --------------------------------------------------------------------------
# Running and stopping
# --------------------------------------------------------------------------


def test_runs_as_a_context_manager_with_observers(system, committor):
    with make_dyn(system, committor) as dyn:
        every_step = record(dyn)
        every_fifth = record(dyn, every=5)
        dyn.run(2000)
    assert dyn.status in DONE
    n = dyn.nsteps
    assert 0 < n < 2000
    # ASE calls observers once before the first step and after every step.
    assert [entry[0] for entry in every_step] == list(range(n + 1))
    assert [entry[0] for entry in every_fifth] == list(range(0, n + 1, 5))
    assert every_step[0][2] == 0.0 and every_step[0][3] == "running"
    assert every_step[-1][2] == dyn.log_weight
    assert every_step[-1][3] == dyn.status
    assert all(entry[3] == "running" for entry in every_step[:-1])
    assert dyn.weight == pytest.approx(math.exp(dyn.log_weight), rel=1e-15)
    assert (dyn.atoms.positions[:, 2] == 0).all()


def test_stops_on_reaching_B(system, committor):
    # The committor as importance is the Doob transform: nearly every path goes
    # to B (seed 0 does, in 43 steps).
    dyn = make_dyn(system, committor)
    dyn.run(2000)
    assert dyn.status == "reached B"
    assert dyn.atoms in system.B
    assert dyn.atoms.info["status"] == "reached B"
    assert dyn.atoms.info["log_importance"] == 0.0
    assert math.isfinite(dyn.log_weight)

    # A finished path stays where it ended.
    positions, steps, log_w = dyn.atoms.get_positions(), dyn.nsteps, dyn.log_weight
    dyn.run(50)
    assert np.array_equal(dyn.atoms.get_positions(), positions)
    assert (dyn.nsteps, dyn.log_weight, dyn.status) == (steps, log_w, "reached B")


def test_stops_on_returning_to_A(system, committor):
    # 1 − q pushes the walker back into A, 0.02 Å away.
    dyn = make_dyn(system, committor.reversed(), xy=(-0.9, 0.0))
    dyn.run(2000)
    assert dyn.status == "returned to A"
    assert dyn.atoms in system.A
    assert dyn.atoms.info["status"] == "returned to A"
    assert dyn.atoms.info["log_importance"] == -math.inf


def test_step_cap_when_run_ends_first(system, committor):
    dyn = make_dyn(system, committor, xy=MIDWAY_XY)
    dyn.run(3)
    assert dyn.nsteps == 3
    assert dyn.status == "step cap"
    assert dyn.atoms.info["status"] == "step cap"


def test_a_capped_path_continues_on_the_next_run(system, committor):
    # run(3) then run(4) is the same path as run(7): ASE users run in chunks.
    chunked = make_dyn(system, committor, xy=MIDWAY_XY, drift_refresh=2)
    chunked.run(3)
    chunked.run(4)
    whole = make_dyn(system, committor, xy=MIDWAY_XY, drift_refresh=2)
    whole.run(7)
    assert chunked.nsteps == whole.nsteps == 7
    assert chunked.status == whole.status == "step cap"
    assert chunked.log_weight == whole.log_weight
    assert np.array_equal(chunked.atoms.positions, whole.atoms.positions)


def test_candidate_kernel_runs_to_an_end(system, committor):
    dyn = make_dyn(system, committor, kernel="candidates", n_candidates=4)
    dyn.run(2000)
    assert dyn.status in DONE
    assert math.isfinite(dyn.log_weight)
    assert (dyn.atoms.positions[:, 2] == 0).all()


# --------------------------------------------------------------------------
# The weight is the sum of the shared kernel's increments
# --------------------------------------------------------------------------


def replay(system, importance, xy, seed, n_steps, kernel, drift_refresh, m):
    """The same path stepped directly with the batched kernels.

    The dynamics draw, from ``numpy.random.default_rng(seed)``, first the seed of
    the torch generator of the candidate choice, then each step's noise.
    """
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    params = LangevinParameters(HOT_DT_FS, HOT_K, 1.0)
    potential = TwoChannelPotential()
    mask = torch.tensor([[1.0, 1.0, 0.0]], dtype=F64)
    x = torch.tensor([[[xy[0], xy[1], 0.0]]], dtype=F64)

    def bounded(y):
        log_i = importance.log_importance(y).detach()
        log_i = torch.where(system.A.contains(y), -math.inf, log_i)
        return torch.where(system.B.contains(y), 0.0, log_i)

    positions, log_w, total = [x[0].numpy().copy()], [0.0], 0.0
    for step in range(n_steps):
        _, forces = potential.batch_energy_forces(x)
        if kernel == "tilt":
            if step % drift_refresh == 0:
                _, grad = importance.log_importance_and_gradient(x)
                drift = grad * mask
            noise = torch.as_tensor(rng.standard_normal(x.shape)) * mask
            x, dlogw = tilted_step(x, forces, noise, drift, params)
        else:
            noise = torch.as_tensor(rng.standard_normal((m, *x.shape))) * mask
            x, dlogw, _ = candidate_step(x, forces, noise, bounded, params, gen)
        total += float(dlogw[0])
        positions.append(x[0].numpy().copy())
        log_w.append(total)
    return np.array(positions), np.array(log_w)


@pytest.mark.parametrize(
    "kernel, drift_refresh", [("tilt", 1), ("tilt", 3), ("candidates", 1)]
)
def test_log_weight_is_the_sum_of_kernel_increments(
    kernel, drift_refresh, system, committor
):
    dyn = make_dyn(
        system,
        committor,
        rng=7,
        kernel=kernel,
        drift_refresh=drift_refresh,
        n_candidates=3,
    )
    log = record(dyn)
    dyn.run(2000)
    assert dyn.status in DONE and dyn.nsteps > 5

    positions, log_w = replay(
        system, committor, NEAR_A_XY, 7, dyn.nsteps, kernel, drift_refresh, 3
    )
    # Same arithmetic on the same numbers: equal to round-off (1e-12 leaves room
    # for a different summation order, none is expected).
    np.testing.assert_allclose(
        np.array([entry[1] for entry in log]), positions, rtol=0, atol=1e-12
    )
    np.testing.assert_allclose(
        np.array([entry[2] for entry in log]), log_w, rtol=0, atol=1e-12
    )


# --------------------------------------------------------------------------
# Trajectory files
# --------------------------------------------------------------------------


def test_trajectory_frames_carry_weight_importance_and_status(
    tmp_path, system, committor
):
    path = tmp_path / "path.traj"
    with make_dyn(system, committor, trajectory=str(path)) as dyn:
        log = record(dyn)
        dyn.run(2000)
    assert dyn.status == "reached B"

    frames = read(path, ":")
    assert len(frames) == dyn.nsteps + 1
    for frame, (_, positions, log_w, status) in zip(frames, log, strict=True):
        assert np.array_equal(frame.positions, positions)
        assert frame.info["log_weight"] == log_w
        assert frame.info["status"] == status
        assert math.isfinite(frame.info["log_importance"])
        assert frame.info["log_importance"] <= 0.0
    assert frames[0].info["log_weight"] == 0.0
    assert frames[-1].info["status"] == "reached B"
    assert frames[-1].info["log_importance"] == 0.0

    # ln I recorded off A and B is the importance function's own value.
    x = torch.as_tensor(frames[1].positions, dtype=F64).unsqueeze(0)
    expected = float(committor.log_importance(x)[0])
    assert frames[1].info["log_importance"] == pytest.approx(expected, rel=1e-14)


# --------------------------------------------------------------------------
# Refused set-ups
# --------------------------------------------------------------------------


@pytest.mark.parametrize("inside", ["A", "B"])
def test_start_inside_a_region_is_refused(inside, system, committor):
    xy = system.A.center if inside == "A" else system.B.center
    with pytest.raises(ValueError, match="inside A or B"):
        make_dyn(system, committor, xy=xy)


def test_bad_kernel_settings_are_refused(system, committor):
    with pytest.raises(ValueError, match="kernel must be"):
        make_dyn(system, committor, kernel="metropolis")
    with pytest.raises(ValueError, match=">= 1"):
        make_dyn(system, committor, kernel="candidates", n_candidates=0)
    with pytest.raises(ValueError, match=">= 1"):
        make_dyn(system, committor, drift_refresh=0)
