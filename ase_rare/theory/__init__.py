"""Reference theories that validate a rate calculation.

Each module's public names are re-exported here with explicit ``name as name``
imports, so every module adds its own lines without touching the others'.
"""

from ase_rare.theory.grid import GridBoxWarning as GridBoxWarning
from ase_rare.theory.grid import GridConvergence as GridConvergence
from ase_rare.theory.grid import GridTPTResult as GridTPTResult
from ase_rare.theory.grid import grid_convergence as grid_convergence
from ase_rare.theory.grid import solve_grid_tpt as solve_grid_tpt
from ase_rare.theory.htst import HarmonicTST as HarmonicTST
from ase_rare.theory.htst import HTSTResult as HTSTResult
from ase_rare.theory.htst import StationaryPoint as StationaryPoint
from ase_rare.theory.htst import harmonic_analysis as harmonic_analysis
from ase_rare.theory.htst import htst_rate as htst_rate
from ase_rare.theory.htst import htst_rates as htst_rates
