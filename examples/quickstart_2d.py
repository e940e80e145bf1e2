"""Quick start: an importance-sampled rate with branching, in plain ASE style."""

from ase import units

from ase_rare import Branching, Ensemble, GridImportance, ProgressBar, measure_flux
from ase_rare.systems import two_channel_system
from ase_rare.theory import solve_grid_tpt

s = two_channel_system()  # 2D two-channel potential: start, A, B, channels
dt, T = 0.01 * units.fs, 1000
grid = solve_grid_tpt(
    s.start_A.calc, s.A, s.B, temperature_K=T, box=(-2.2, 2.2, -2.2, 2.2), spacing=0.01
)
importance = GridImportance.from_grid_tpt(grid)  # or a trained MLP / SchNet network
flux = measure_flux(
    s.start_A, s.A, s.B, timestep=dt, temperature_K=T, n_exit_points=2000
)  # J_A and exit points (roots)
with Ensemble(
    s.start_A,
    importance,
    s.A,
    s.B,
    temperature_K=T,
    timestep=dt,
    flux=flux,
    n_roots=2000,
    branching=Branching(),
    channels=s.channels,
) as ens:
    ens.attach(ProgressBar(ens))
    result = ens.run()
print(result.summary())
