"""Rates and channels of rare transitions under overdamped Langevin dynamics.

``ase_rare`` estimates the rate of a transition A -> B, with error bars and the
fraction taken by each channel, from inside an ordinary ASE script. Potentials are
ASE calculators, dynamics are ASE dynamics objects, and every number carries its
unit: energies in eV, lengths in Å, times in fs, temperatures in K.
"""

__version__ = "0.1.0"

from ase_rare.bruteforce import BruteForce, BruteForceResult, brute_force_rate
from ase_rare.cv import AtomCoordinates, CollectiveVariable, CoordinationMoments
from ase_rare.dynamics import ImportanceLangevin, OverdampedLangevin
from ase_rare.ensemble import Branching, Ensemble
from ase_rare.estimate import estimate_rate, importance_roots, measure_flux
from ase_rare.importance import (
    GridImportance,
    ImportanceFunction,
    MLPImportance,
    load_importance,
)
from ase_rare.observers import Checkpointer, PathWriter, ProgressBar, StatisticsLogger
from ase_rare.potentials import (
    BatchedCalculator,
    CalculatorAdapter,
    RuggedPotential,
    SoftCoreLJ,
    TwoChannelPotential,
    as_batched,
)
from ase_rare.regions import BoxRegion, DiscRegion, PredicateRegion, Region
from ase_rare.results import RateResult
from ase_rare.structures import lj7_cluster

__all__ = [
    "AtomCoordinates",
    "Branching",
    "BruteForce",
    "BruteForceResult",
    "Checkpointer",
    "Ensemble",
    "GridImportance",
    "ImportanceFunction",
    "ImportanceLangevin",
    "MLPImportance",
    "PathWriter",
    "ProgressBar",
    "RateResult",
    "StatisticsLogger",
    "brute_force_rate",
    "estimate_rate",
    "importance_roots",
    "load_importance",
    "measure_flux",
    "BatchedCalculator",
    "BoxRegion",
    "CalculatorAdapter",
    "CollectiveVariable",
    "CoordinationMoments",
    "DiscRegion",
    "OverdampedLangevin",
    "PredicateRegion",
    "Region",
    "RuggedPotential",
    "SoftCoreLJ",
    "TwoChannelPotential",
    "as_batched",
    "lj7_cluster",
]
