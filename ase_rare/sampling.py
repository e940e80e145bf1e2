"""Importance-sampled paths from exit points, with exact path weights."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from ase_rare.channels import ChannelClassifier
from ase_rare.importance.base import ImportanceFunction
from ase_rare.kernels import (
    LangevinParameters,
    candidate_step,
    check_path_options,
    draw_noise,
    free_coordinates,
    tilted_step,
)
from ase_rare.regions import Region, check_not_both

#: Status codes of a finished path.
RUNNING, REACHED_B, RETURNED_TO_A, STEP_CAP = 0, 1, 2, 3


@dataclass
class PathResults:
    """Per-root outcome of one biased path per exit point.

    Arrays have one entry per root. ``log_weight`` is the path's ln W in float64;
    the root's contribution to P_AB is ``exp(log_weight)`` if it reached B and 0
    otherwise.
    """

    status: np.ndarray
    log_weight: np.ndarray
    steps: np.ndarray
    channel: np.ndarray
    log_importance_start: np.ndarray
    walker_steps: int
    importance_evaluations: int
    wall_time_s: float

    @property
    def success(self) -> np.ndarray:
        return self.status == REACHED_B

    @property
    def contribution(self) -> np.ndarray:
        """S_r: the weight of each root's success (0 for a failure)."""
        return np.where(self.success, np.exp(self.log_weight), 0.0)


class PathSampler:
    """Biased overdamped paths, many at once, each carrying its exact weight.

    Every root starts a walker at its exit point with ln w = 0; the walker is
    moved with the biased kernel until it enters B (success), enters A (failure)
    or reaches ``max_steps`` (counted as a failure and reported).

    Parameters
    ----------
    potential : BatchedCalculator
    importance : ImportanceFunction
    A, B : Region
    params : LangevinParameters
    planar : bool
    kernel : {"tilt", "candidates"}
        Drift tilt (default) or candidate resampling.
    n_candidates : int
        M, the number of candidates per step for ``kernel="candidates"``.
    drift_refresh : int
        Re-evaluate the drift ``∇ ln I`` every this many steps (tilt only); the
        weights stay exact because they use the drift actually applied.
    max_steps : int
        Step cap per path.
    channels : ChannelClassifier, optional
    seed : int
    device : str
    free_coordinates : boolean array ``(N, 3)``, optional
        The coordinates that move; the others (fixed atoms) get no force, noise
        or drift. Default: the potential's own ``free_coordinates`` (a
        :class:`~ase_rare.potentials.CalculatorAdapter` takes them from the
        constraints of its atoms), else every coordinate (no z when planar).
    """

    def __init__(
        self,
        potential,
        importance: ImportanceFunction,
        A: Region,
        B: Region,
        *,
        params: LangevinParameters,
        planar: bool,
        kernel: str = "tilt",
        n_candidates: int = 8,
        drift_refresh: int = 1,
        max_steps: int = 100_000,
        channels: ChannelClassifier | None = None,
        seed: int = 0,
        device: str = "cpu",
        free_coordinates: np.ndarray | None = None,
    ):
        check_path_options(
            kernel,
            n_candidates=n_candidates,
            drift_refresh=drift_refresh,
            max_steps=max_steps,
        )
        if free_coordinates is None:
            free_coordinates = getattr(potential, "free_coordinates", None)
        self.free_coordinates = (
            None if free_coordinates is None else np.asarray(free_coordinates, bool)
        )
        self.potential = potential
        self.importance = importance
        self.A, self.B = A, B
        self.params = params
        self.planar = planar
        self.kernel = kernel
        self.n_candidates = n_candidates
        self.drift_refresh = drift_refresh
        self.max_steps = max_steps
        self.channels = channels
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self._evaluations = 0
        self._walker_steps = 0

    def _regions(self, x):
        A, B = self.A, self.B
        if A.cv is not None and A.cv == B.cv:
            v = A.cv(x)
            return A.contains_values(v), B.contains_values(v)
        return A.contains(x), B.contains(x)

    def bounded_log_importance(self, x: torch.Tensor) -> torch.Tensor:
        """ln I with the boundary conditions: −inf inside A, 0 inside B."""
        # No gradient is needed here; a graph through the network's parameters
        # would leak into the path weights.
        with torch.no_grad():
            log_i = self.importance.log_importance(x)
        in_a, in_b = self._regions(x)
        log_i = torch.where(in_a, -math.inf, log_i)
        return torch.where(in_b, 0.0, log_i)

    def move(
        self,
        x: torch.Tensor,
        forces: torch.Tensor,
        drift: torch.Tensor | None,
        *,
        refresh: bool,
        free: torch.Tensor,
    ):
        """One biased step of every walker in ``x``.

        Returns the new positions, the log-weight increments and the drift used
        (tilt kernel; re-evaluated when ``refresh`` or when there is none yet).
        """
        if self.kernel == "tilt":
            if refresh or drift is None:
                _, grad = self.importance.log_importance_and_gradient(x)
                drift = grad * free
                self._evaluations += x.shape[0]
            noise = draw_noise(x, self.planar, self.generator)
            if self.free_coordinates is not None:
                noise = noise * free
            new, dlogw = tilted_step(x, forces, noise, drift, self.params)
            return new, dlogw, drift
        noise = torch.stack(
            [
                draw_noise(x, self.planar, self.generator)
                for _ in range(self.n_candidates)
            ]
        )
        if self.free_coordinates is not None:
            noise = noise * free
        new, dlogw, _ = candidate_step(
            x, forces, noise, self.bounded_log_importance, self.params, self.generator
        )
        self._evaluations += self.n_candidates * x.shape[0]
        return new, dlogw, None

    def advance(
        self,
        x: torch.Tensor,
        drift: torch.Tensor | None,
        step: int,
        free,
        *,
        return_forces: bool = False,
    ) -> tuple:
        """Forces, one biased step and the region tests for a population.

        Returns ``(new, Δ ln w, drift, energy at x, in A, in B)``, and the
        forces at ``x`` last when ``return_forces`` (training recomputes path
        weights from the displacement ``new − x − (Δt/γ) F``).
        """
        energy, forces = self.potential.batch_energy_forces(x)
        if self.free_coordinates is not None:
            forces = forces * free
        new, dlogw, drift = self.move(
            x, forces, drift, refresh=step % self.drift_refresh == 0, free=free
        )
        if not torch.isfinite(new).all():
            raise FloatingPointError(
                f"walker positions became NaN or inf at step {step}; the timestep "
                f"({self.params.timestep_fs:g} fs) is too large for the forces plus "
                "the importance drift σ²∇ln I"
            )
        self._walker_steps += x.shape[0]
        in_a, in_b = self._regions(new)
        check_not_both(in_a, in_b)
        if return_forces:
            return new, dlogw, drift, energy, in_a, in_b, forces
        return new, dlogw, drift, energy, in_a, in_b

    def free_mask(self, n_atoms: int) -> torch.Tensor:
        """``(N, 3)`` mask of the moving coordinates, as a float tensor."""
        if self.free_coordinates is not None:
            if self.free_coordinates.shape != (n_atoms, 3):
                raise ValueError(
                    f"free_coordinates has shape {self.free_coordinates.shape}, "
                    f"but the walkers have {n_atoms} atoms"
                )
            mask = self.free_coordinates.copy()
            if self.planar:
                mask[:, 2] = False
            return torch.as_tensor(mask, dtype=torch.float64, device=self.device)
        return torch.as_tensor(
            free_coordinates(n_atoms, self.planar),
            dtype=torch.float64,
            device=self.device,
        ).reshape(n_atoms, 3)

    def run(self, roots: torch.Tensor, batch_size: int = 4096) -> PathResults:
        """One biased path from each root ``(R, N, 3)``, in batches."""
        t0 = time.perf_counter()
        # A private copy: the paths move their walkers in place.
        roots = roots.to(self.device, torch.float64, copy=True)
        n = roots.shape[0]
        out = {
            "status": np.zeros(n, np.int8),
            "log_weight": np.zeros(n),
            "steps": np.zeros(n, np.int64),
            "channel": np.full(n, -1, np.int64),
            "log_importance_start": np.zeros(n),
        }
        self._walker_steps = 0
        self._evaluations = 0
        for start in range(0, n, batch_size):
            part = self._run_batch(roots[start : start + batch_size])
            for key, value in part.items():
                out[key][start : start + batch_size] = value
        return PathResults(
            **out,
            walker_steps=self._walker_steps,
            importance_evaluations=self._evaluations,
            wall_time_s=time.perf_counter() - t0,
        )

    def _run_batch(self, x: torch.Tensor) -> dict:
        # Walkers move in a copy: the roots may share memory with the caller's
        # exit points (a view of ``run``'s input, or a numpy array).
        x = x.clone()
        w = x.shape[0]
        dev = self.device
        free = self.free_mask(x.shape[1])
        log_w = torch.zeros(w, dtype=torch.float64, device=dev)
        status = torch.zeros(w, dtype=torch.int8, device=dev)
        steps = torch.zeros(w, dtype=torch.long, device=dev)
        channel = torch.full((w,), -1, dtype=torch.long, device=dev)
        log_i0 = self.importance.log_importance(x).detach()
        self._evaluations += w
        tracker = self.channels.tracker(x) if self.channels is not None else None

        # An exit point can lie in B already (A and B one step apart): a success
        # with weight 1 before any step.
        _, start_in_b = self._regions(x)
        status[start_in_b] = REACHED_B
        idx = torch.nonzero(~start_in_b).squeeze(-1)  # walkers still running
        xa = x[idx].clone()
        drift = None
        for step in range(self.max_steps):
            if idx.numel() == 0:
                break
            new, dlogw, drift, energy, in_a, in_b = self.advance(xa, drift, step, free)
            log_w[idx] += dlogw
            steps[idx] += 1
            if tracker is not None:
                old_full = x.clone()
                x[idx] = new
                # Finished walkers do not move; they get no energy either.
                e_full = torch.full((w,), -math.inf, dtype=energy.dtype, device=dev)
                e_full[idx] = energy
                tracker.update(old_full, x, e_full)
            else:
                x[idx] = new
            done = in_a | in_b
            if bool(done.any()):
                status[idx[in_b]] = REACHED_B
                status[idx[in_a]] = RETURNED_TO_A
                if tracker is not None:
                    channel[idx[in_b]] = tracker.labels()[idx[in_b]]
                keep = ~done
                idx = idx[keep]
                new = new[keep]
                if drift is not None:
                    drift = drift[keep]
            xa = new
        status[idx] = STEP_CAP
        return {
            "status": status.cpu().numpy(),
            "log_weight": log_w.cpu().numpy(),
            "steps": steps.cpu().numpy(),
            "channel": channel.cpu().numpy(),
            "log_importance_start": log_i0.cpu().numpy(),
        }
