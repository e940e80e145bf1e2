"""Small setups shared by several test modules (importable: tests/ is on the path)."""

from functools import cache

from ase import units

from ase_rare.estimate import measure_flux
from ase_rare.importance import GridImportance
from ase_rare.systems import two_channel_system
from ase_rare.theory import solve_grid_tpt

#: Temperature (K) and time step (ASE units) of the small, hot 2D ensembles.
HOT_2D_K = 2500.0
HOT_2D_DT = 0.02 * units.fs


@cache
def hot_2d_inputs(
    n_exit_points: int = 64, n_walkers: int = 64, spacing: float = 0.04
) -> tuple:
    """System, imperfect importance function and flux run of a small 2D ensemble.

    The importance function is the grid committor of 3000 K used at 2500 K, so
    branching has work to do. Cached: several test modules share one flux run.
    The returned objects must not be modified.
    """
    system = two_channel_system()
    grid = solve_grid_tpt(
        system.start_A.calc,
        system.A,
        system.B,
        temperature_K=3000.0,
        box=(-2.2, 2.2, -2.2, 2.2),
        spacing=spacing,
    )
    flux = measure_flux(
        system.start_A,
        system.A,
        system.B,
        timestep=HOT_2D_DT,
        temperature_K=HOT_2D_K,
        n_exit_points=n_exit_points,
        n_walkers=n_walkers,
        seed=3,
    )
    return system, GridImportance.from_grid_tpt(grid), flux


#: A complete run configuration on the hot 2D system, small enough for a test:
#: the exact grid committor (coarse) as importance function, 32 roots.
SMALL_2D_CONFIG = """
[system]
builtin = "two-channel"

[dynamics]
temperature_K = 2500
timestep_fs = 0.02

[importance]
{importance}

[flux]
n_walkers = 32

[ensemble]
n_roots = 32
roots_per_batch = 16
max_steps = 20000
branching = {{ interval = 10 }}

[output]
folder = "out"
paths = 3
failures = 1
"""


def write_small_2d_config(folder, importance="grid = { spacing = 0.1 }", extra=""):
    """Write :data:`SMALL_2D_CONFIG` to ``folder/run.toml`` and return its path."""
    path = folder / "run.toml"
    path.write_text(SMALL_2D_CONFIG.format(importance=importance) + extra)
    return path
