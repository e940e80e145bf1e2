"""Potentials as ASE calculators with a batched torch evaluation."""

from ase_rare.potentials.adapter import CalculatorAdapter, as_batched
from ase_rare.potentials.base import BatchedCalculator
from ase_rare.potentials.rugged import RuggedPotential
from ase_rare.potentials.softcore_lj import SoftCoreLJ
from ase_rare.potentials.two_channel import TwoChannelPotential

__all__ = [
    "BatchedCalculator",
    "CalculatorAdapter",
    "RuggedPotential",
    "SoftCoreLJ",
    "TwoChannelPotential",
    "as_batched",
]
