"""Any ASE calculator in the batched engine, one walker at a time."""

from __future__ import annotations

import copy

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import BaseCalculator

from ase_rare.constraints import free_coordinates_of
from ase_rare.potentials.base import BatchedCalculator


class CalculatorAdapter(BatchedCalculator):
    """Wrap an ordinary ASE calculator so the batched engine can use it.

    The batch is evaluated walker by walker: for each configuration the wrapped
    calculator is called once on a copy of ``atoms``. This is the slow path — its
    cost is the calculator's cost times the number of walkers, plus Python
    overhead — but it is correct for every calculator that returns forces (EMT,
    a SchNetPack ``SpkCalculator``, MACE, DFT codes, ...). Potentials written for
    ``ase_rare`` evaluate the whole batch in one torch call instead.

    Parameters
    ----------
    calc : ase calculator
        Any calculator implementing ``"energy"`` and ``"forces"``.
    atoms : Atoms
        The template: species, cell and periodic boundary conditions of every
        walker. Only its positions change.
    planar : bool
        Set True if the system must stay in the xy plane.
    per_walker : bool
        Give every walker slot of a batch its own copy of the calculator
        (``copy.deepcopy``), so that a calculator which keeps state for the
        configuration it saw last (a neighbour list, a wave function used as
        the next starting guess) follows one walker instead of jumping between
        walkers. For EMT on a 9-atom slab this makes a walker-step 2.6× faster
        (2.3 against 6.0 ms) at the price of one calculator per walker.

    Notes
    -----
    ``FixAtoms`` and ``FixCartesian`` constraints of ``atoms`` are honoured:
    the wrapped calculator's forces come through ``Atoms.get_forces``, which
    zeroes them on fixed atoms, and :attr:`free_coordinates` tells the engines
    which coordinates get noise and drift.
    """

    def __init__(
        self,
        calc: BaseCalculator,
        atoms: Atoms,
        *,
        planar: bool = False,
        per_walker: bool = False,
    ):
        super().__init__()
        implemented = getattr(calc, "implemented_properties", ())
        if "forces" not in implemented:
            raise ValueError(
                f"{type(calc).__name__} does not implement forces "
                f"(implemented_properties = {list(implemented)}); the dynamics "
                "needs a calculator that returns forces"
            )
        self.calc = calc
        self.template = atoms.copy()
        self.template.calc = calc
        self.n_atoms = len(atoms)
        self.planar = bool(planar)
        self.per_walker = bool(per_walker)
        self._slots: list[Atoms] = []

    @property
    def free_coordinates(self) -> np.ndarray | None:
        """Boolean ``(N, 3)`` mask of the coordinates the template's
        constraints leave free, or None when it has no constraint."""
        if not self.template.constraints:
            return None
        return free_coordinates_of(self.template, self.planar)

    def _slot(self, w: int) -> Atoms:
        """The ``Atoms`` (with its own calculator) that evaluates walker slot w."""
        while len(self._slots) <= w:
            atoms = self.template.copy()
            atoms.calc = copy.deepcopy(self.calc)
            self._slots.append(atoms)
        return self._slots[w]

    def batch_energy_forces(self, positions: torch.Tensor):
        energies = np.empty(positions.shape[0])
        forces = np.empty(tuple(positions.shape))
        for w, pos in enumerate(positions.detach().cpu().numpy()):
            work = self._slot(w) if self.per_walker else self.template
            work.positions = pos
            energies[w] = work.get_potential_energy()
            forces[w] = work.get_forces()
        if self.planar:
            forces[..., 2] = 0.0
        as_tensor = lambda a: torch.as_tensor(a, dtype=positions.dtype).to(  # noqa: E731
            positions.device
        )
        return as_tensor(energies), as_tensor(forces)

    def batch_energy(self, positions: torch.Tensor) -> torch.Tensor:
        return self.batch_energy_forces(positions)[0]


def as_batched(calc: BaseCalculator, atoms: Atoms) -> BatchedCalculator:
    """The calculator itself if it is batched, else a :class:`CalculatorAdapter`."""
    if calc is None:
        raise ValueError(
            "atoms have no calculator; attach one first (atoms.calc = SoftCoreLJ())"
        )
    if isinstance(calc, BatchedCalculator):
        return calc
    return CalculatorAdapter(calc, atoms)
