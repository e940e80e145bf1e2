"""Overdamped Langevin dynamics as an ASE dynamics object."""

from __future__ import annotations

import math

import numpy as np
import torch
from ase import Atoms, units
from ase.md.md import MolecularDynamics

from ase_rare.constraints import free_coordinates_of
from ase_rare.kernels import (
    LangevinParameters,
    candidate_step,
    check_path_options,
    dof_mask,
    overdamped_step,
    tilted_step,
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
        if atoms.constraints:
            # Fixed atoms get no noise (nor drift, for the biased dynamics).
            free = free_coordinates_of(atoms, self.planar)
            self.mask = self.mask * torch.as_tensor(free, dtype=self.mask.dtype)
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


class ImportanceLangevin(OverdampedLangevin):
    """Overdamped Langevin dynamics biased by an importance function.

    The path carries its exact likelihood-ratio weight ``ln w`` (float64) and
    stops by itself on entering B ("reached B") or A ("returned to A"); ``run``
    with a step count caps it ("step cap"), and a later ``run`` continues the
    capped path. Each trajectory frame records
    ``log_weight``, ``log_importance`` and ``status`` in ``atoms.info``.

    The biased step is the same kernel the batched sampler uses
    (:func:`ase_rare.kernels.tilted_step` or
    :func:`ase_rare.kernels.candidate_step`) applied to a batch of one.

    Parameters
    ----------
    atoms : Atoms
        Start (usually an exit point from A) with a calculator attached.
    importance : ImportanceFunction
    A, B : Region
    timestep : float
        In ASE time units, e.g. ``0.005 * ase.units.fs``.
    temperature_K : float
    friction : float
        γ in eV·fs/Å².
    kernel : {"tilt", "candidates"}
        Drift tilt (default) or candidate resampling with ``n_candidates``.
    drift_refresh : int
        Re-evaluate ``∇ ln I`` every this many steps (tilt kernel).
    rng, planar, check_stability, trajectory, logfile, loginterval
        As for :class:`OverdampedLangevin`.
    """

    STATUSES = ("running", "reached B", "returned to A", "step cap")

    def __init__(
        self,
        atoms: Atoms,
        importance,
        A,
        B,
        timestep: float,
        temperature_K: float,
        friction: float = 1.0,
        *,
        kernel: str = "tilt",
        n_candidates: int = 8,
        drift_refresh: int = 1,
        **kwargs,
    ):
        from ase_rare.regions import check_disjoint

        check_path_options(
            kernel, n_candidates=n_candidates, drift_refresh=drift_refresh
        )
        check_disjoint(A, B)
        self.importance = importance
        self.A, self.B = A, B
        self.kernel = kernel
        self.n_candidates = n_candidates
        self.drift_refresh = drift_refresh
        self.log_weight = 0.0
        self.status = "running"
        self._drift = None
        super().__init__(atoms, timestep, temperature_K, friction, **kwargs)
        self._torch_gen = torch.Generator().manual_seed(int(self.rng.integers(2**62)))
        x = self._positions()
        if bool(A.contains(x)[0]) or bool(B.contains(x)[0]):
            raise ValueError(
                "the start lies inside A or B; start a biased path outside both "
                "regions (for example at an exit point from A)"
            )
        self._free = self.mask
        self._record(x)

    def _positions(self) -> torch.Tensor:
        return torch.as_tensor(self.atoms.get_positions(), dtype=DTYPE).unsqueeze(0)

    def _record(self, x: torch.Tensor) -> None:
        info = self.atoms.info
        info["log_weight"] = float(self.log_weight)
        info["log_importance"] = float(self._bounded_log_importance(x)[0])
        info["status"] = self.status

    def _bounded_log_importance(self, x: torch.Tensor) -> torch.Tensor:
        log_i = self.importance.log_importance(x).detach()
        log_i = torch.where(self.A.contains(x), -torch.inf, log_i)
        return torch.where(self.B.contains(x), 0.0, log_i)

    def _noise(self, shape) -> torch.Tensor:
        return torch.as_tensor(self.rng.standard_normal(shape), dtype=DTYPE) * self.mask

    def step(self, forces=None):
        if self.status != "running":
            return self.atoms.get_forces()
        x = self._positions()
        if forces is None:
            forces = self.atoms.get_forces()
        f = torch.as_tensor(np.asarray(forces), dtype=DTYPE).unsqueeze(0)
        if self.kernel == "tilt":
            if self._drift is None or self.nsteps % self.drift_refresh == 0:
                _, grad = self.importance.log_importance_and_gradient(x)
                self._drift = grad * self._free
            noise = self._noise(x.shape)
            new, dlogw = tilted_step(x, f, noise, self._drift, self.params)
        else:
            noise = self._noise((self.n_candidates, *x.shape))
            new, dlogw, _ = candidate_step(
                x,
                f,
                noise,
                self._bounded_log_importance,
                self.params,
                self._torch_gen,
            )
        if not torch.isfinite(new).all():
            raise FloatingPointError(
                f"positions became NaN or inf after step {self.nsteps}; the "
                f"timestep ({self.params.timestep_fs:g} fs) is too large"
            )
        self.log_weight += float(dlogw[0])
        if bool(self.B.contains(new)[0]):
            self.status = "reached B"
        elif bool(self.A.contains(new)[0]):
            self.status = "returned to A"
        self.atoms.set_positions(new[0].numpy())
        self._record(new)
        return self.atoms.get_forces()

    def irun(self, steps=50):
        """Like ASE's ``irun``, but the path ends on reaching A or B.

        A path stopped only by the step count goes on where it stopped, so
        running in chunks gives the same path as one long run.
        """
        if self.status == "step cap":
            self.status = "running"
            self.atoms.info["status"] = self.status
        for converged in super().irun(steps):
            if self.status != "running":
                yield True
                return
            yield converged
        if self.status == "running":
            self.status = "step cap"
            self.atoms.info["status"] = self.status

    @property
    def weight(self) -> float:
        """The path weight w = exp(ln w)."""
        return math.exp(self.log_weight)
