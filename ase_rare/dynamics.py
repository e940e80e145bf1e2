"""Overdamped Langevin dynamics as an ASE dynamics object."""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms, units
from ase.md.md import MolecularDynamics

from ase_rare.kernels import (
    LangevinParameters,
    dof_mask,
    overdamped_step,
)
from ase_rare.kernels import check_stability as stability_bound
from ase_rare.potentials.adapter import as_batched
from ase_rare.potentials.base import DTYPE


def make_rng(rng) -> np.random.Generator:
    """A numpy Generator from None, a seed, or anything with ``standard_normal``."""
    if rng is None or isinstance(rng, int | np.integer):
        return np.random.default_rng(rng)
    if not hasattr(rng, "standard_normal"):
        raise TypeError(
            f"rng must be a seed (int), None, or a numpy Generator; got "
            f"{type(rng).__name__}"
        )
    return rng


class OverdampedLangevin(MolecularDynamics):
    """Overdamped (Brownian) Langevin dynamics for one ``Atoms``.

    Each step moves the atoms by ``(Δt/γ) F + sqrt(2 k_B T Δt/γ) ξ`` with
    ``ξ ~ N(0, 1)``; masses and momenta play no role. The step is the same
    batched kernel (:func:`ase_rare.kernels.overdamped_step`) that the batched
    engines use, applied to a batch of one.

    Parameters
    ----------
    atoms : Atoms
        The atoms to move; any ASE calculator attached to them supplies forces.
    timestep : float
        Time step in ASE time units, e.g. ``0.005 * ase.units.fs``.
    temperature_K : float
        Temperature in K.
    friction : float
        Friction γ in eV·fs/Å² (a force of 1 eV/Å moves an atom 1/γ Å per fs).
    rng : int, numpy Generator or None
        Seed or generator for the noise.
    planar : bool or None
        Move only x and y. None takes the calculator's ``planar`` attribute
        (True for the LJ7 and 2D benchmark potentials).
    check_stability : bool
        Refuse a timestep at or above ``2γ/λ_max`` at the starting configuration.
    trajectory, logfile, loginterval, append_trajectory
        As for every ASE dynamics; frames written to ``trajectory`` open in
        ``ase gui``.

    Examples
    --------
    >>> from ase import units
    >>> from ase_rare import OverdampedLangevin, lj7_cluster
    >>> atoms = lj7_cluster("C3")
    >>> with OverdampedLangevin(atoms, 0.005 * units.fs, temperature_K=600,
    ...                         rng=1) as dyn:
    ...     dyn.run(10)
    True
    >>> float(abs(atoms.positions[:, 2]).max())
    0.0
    """

    def __init__(
        self,
        atoms: Atoms,
        timestep: float,
        temperature_K: float,
        friction: float = 1.0,
        *,
        rng=None,
        planar: bool | None = None,
        check_stability: bool = True,
        trajectory=None,
        logfile=None,
        loginterval: int = 1,
        append_trajectory: bool = False,
    ):
        self.params = LangevinParameters(timestep / units.fs, temperature_K, friction)
        if atoms.calc is None:
            raise ValueError(
                "atoms have no calculator; attach one first, e.g. "
                "atoms.calc = SoftCoreLJ()"
            )
        self.planar = bool(
            getattr(atoms.calc, "planar", False) if planar is None else planar
        )
        self.rng = make_rng(rng)
        self.mask = dof_mask(len(atoms), self.planar)
        self.stability_bound_fs = None
        x0 = torch.as_tensor(atoms.get_positions(), dtype=DTYPE)
        potential = as_batched(atoms.calc, atoms)
        potential.check_positions(x0.unsqueeze(0))
        if check_stability:
            self.stability_bound_fs = stability_bound(
                potential, x0, self.params, self.planar
            )
        super().__init__(
            atoms,
            timestep,
            trajectory=trajectory,
            logfile=logfile,
            loginterval=loginterval,
            append_trajectory=append_trajectory,
        )

    @property
    def temperature_K(self) -> float:
        return self.params.temperature_K

    @property
    def friction(self) -> float:
        """Friction γ in eV·fs/Å²."""
        return self.params.friction

    def todict(self):
        d = super().todict()
        d.update(temperature_K=self.temperature_K, friction=self.friction)
        return d

    def step(self, forces=None):
        atoms = self.atoms
        if forces is None:
            forces = atoms.get_forces()
        x = torch.as_tensor(atoms.get_positions(), dtype=DTYPE).unsqueeze(0)
        f = torch.as_tensor(np.asarray(forces), dtype=DTYPE).unsqueeze(0)
        noise = (
            torch.as_tensor(self.rng.standard_normal(x.shape), dtype=DTYPE) * self.mask
        )
        new = overdamped_step(x, f, noise, self.params)[0]
        if not torch.isfinite(new).all():
            raise FloatingPointError(
                f"positions became NaN or inf after step {self.nsteps}; the "
                f"timestep ({self.params.timestep_fs:g} fs) is too large for this "
                "potential"
            )
        atoms.set_positions(new.numpy())
        return atoms.get_forces()
