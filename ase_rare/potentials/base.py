"""The base class shared by every potential written for the batched engine."""

from __future__ import annotations

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes

#: Default floating-point type of positions, energies and forces.
DTYPE = torch.float64


class BatchedCalculator(Calculator):
    """An ASE calculator that can also evaluate a whole stack of configurations.

    Subclasses implement :meth:`batch_energy` (differentiable, used for Hessians)
    and usually :meth:`batch_energy_forces` with analytic forces. The ASE interface
    (``atoms.get_potential_energy()``, ``atoms.get_forces()``) evaluates a batch of
    one, so the single-configuration and batched paths share all of their code.

    Attributes
    ----------
    planar : bool
        True when the potential lives in the xy plane: it refuses positions with a
        non-zero z and the dynamics move only x and y.
    n_atoms : int or None
        The number of atoms the potential is defined for, or None for any number.
    """

    implemented_properties = ["energy", "forces"]
    planar: bool = False
    n_atoms: int | None = None

    def batch_energy(self, positions: torch.Tensor) -> torch.Tensor:
        """Energies in eV of positions ``(W, N, 3)`` in Å, shape ``(W,)``."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement batch_energy(positions)"
        )

    def batch_energy_forces(
        self, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Energies ``(W,)`` in eV and forces ``(W, N, 3)`` in eV/Å.

        The default differentiates :meth:`batch_energy` with autograd; subclasses
        with analytic forces override it.
        """
        with torch.enable_grad():
            x = positions.detach().requires_grad_(True)
            energy = self.batch_energy(x)
            (grad,) = torch.autograd.grad(energy.sum(), x)
        forces = -grad
        if self.planar:
            forces[..., 2] = 0.0
        return energy.detach(), forces

    def check_positions(self, positions: torch.Tensor) -> None:
        """Raise a ValueError naming the problem if positions are unusable here."""
        if positions.ndim != 3 or positions.shape[-1] != 3:
            raise ValueError(
                f"positions must have shape (walkers, atoms, 3); got "
                f"{tuple(positions.shape)}"
            )
        if self.n_atoms is not None and positions.shape[1] != self.n_atoms:
            raise ValueError(
                f"{type(self).__name__} is defined for {self.n_atoms} atoms; got "
                f"{positions.shape[1]}. Build the Atoms with {self.n_atoms} atoms."
            )
        if not torch.isfinite(positions).all():
            raise ValueError(
                "positions contain NaN or inf; check the structure (or, during "
                "dynamics, lower the timestep)"
            )
        if self.planar and positions[..., 2].abs().max() > 0.0:
            raise ValueError(
                f"{type(self).__name__} is planar but positions have non-zero z "
                f"(largest |z| = {positions[..., 2].abs().max():.3g} Å); set every "
                "z coordinate to 0"
            )

    def calculate(
        self,
        atoms=None,
        properties=("energy", "forces"),
        system_changes=all_changes,
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        positions = torch.as_tensor(
            np.asarray(self.atoms.positions), dtype=DTYPE
        ).unsqueeze(0)
        self.check_positions(positions)
        energy, forces = self.batch_energy_forces(positions)
        self.results = {
            "energy": float(energy[0]),
            "free_energy": float(energy[0]),
            "forces": forces[0].detach().cpu().numpy().copy(),
        }
