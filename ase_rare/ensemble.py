"""The branching ensemble: many biased walkers, split and roulette, per-root books.

Every root starts one walker at an exit point from A with ln w = 0. Walkers move
with the biased kernel as one batch; every ``interval`` steps each walker's
predicted contribution ``v = w · I(x)`` is compared with a target ``v*``:

* split when ``v > c_hi v*`` into ``m = min(⌊v/v*⌋, m_max)`` copies of weight
  ``w/m``;
* Russian roulette when ``v < c_lo v*``: survive with probability ``p = v/v*``
  and weight ``w/p``, else die.

Both keep the expected total weight, so the estimate stays unbiased. A walker
ends on entering B (its weight counts for its root), on entering A (a failure)
or at the step cap (a failure, reported). Roots are processed in batches, each
with its own seed derived from the ensemble's seed and the batch index, so the
result does not depend on how the batches are scheduled, interrupted or
resumed.

A batch is also the unit of checkpointing: a run that is stopped (or killed)
loses only the batch in progress, which is computed again from its own seed on
resume, giving the same numbers.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from ase import Atoms, units

from ase_rare._atomic import save_atomic
from ase_rare.bruteforce import BruteForceResult
from ase_rare.channels import ChannelClassifier
from ase_rare.constraints import free_coordinates_of
from ase_rare.estimate import (
    check_flux_matches,
    root_weights,
    weighted_success_probability,
)
from ase_rare.importance.base import ImportanceFunction
from ase_rare.kernels import (
    LangevinParameters,
    check_path_options,
    check_stability,
)
from ase_rare.potentials.adapter import as_batched
from ase_rare.potentials.base import DTYPE
from ase_rare.regions import Region, check_disjoint
from ase_rare.results import RateResult, channel_fractions_by_root
from ase_rare.sampling import PathSampler

#: Targets for the predicted contribution: each root's I(x₀), or the running P̂.
TARGETS = ("root", "running")

#: Status of a walker in a recorded path, as in
#: :class:`ase_rare.dynamics.ImportanceLangevin`.
RUNNING, REACHED_B, RETURNED_TO_A, STEP_CAP = (
    "running",
    "reached B",
    "returned to A",
    "step cap",
)


@dataclass(frozen=True)
class Branching:
    """Split/roulette rule of the branching random walk.

    Parameters
    ----------
    c_lo, c_hi : float
        Roulette below ``c_lo v*``, split above ``c_hi v*``.
    m_max : int
        Most copies a walker splits into at once.
    interval : int
        Apply the rule every this many steps.
    target : {"root", "running"}
        ``v*`` is the root's ``I(x₀)``, or the running estimate of P_AB from
        the batches finished so far (the root's ``I(x₀)`` for the first batch).
    """

    c_lo: float = 0.5
    c_hi: float = 2.0
    m_max: int = 10
    interval: int = 10
    target: str = "root"

    def __post_init__(self):
        if not 0 < self.c_lo < 1 < self.c_hi:
            raise ValueError(
                f"branching needs 0 < c_lo < 1 < c_hi; got c_lo={self.c_lo}, "
                f"c_hi={self.c_hi}"
            )
        if self.m_max < 2 or self.interval < 1:
            raise ValueError(
                f"branching needs m_max >= 2 and interval >= 1; got "
                f"m_max={self.m_max}, interval={self.interval}"
            )
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}; got {self.target!r}")


def branch(
    log_v_ratio: torch.Tensor,
    rule: Branching,
    generator: torch.Generator,
    *,
    room: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Copies per walker and the log-weight change of each copy.

    Parameters
    ----------
    log_v_ratio : tensor ``(W,)``
        ``ln(v / v*)`` of every walker.
    room : int, optional
        How many extra walkers the population may still take; splits beyond it
        are not made (walkers keep their weight, which is also unbiased).

    Returns
    -------
    copies ``(W,)`` (0 = died in the roulette) and ``Δ ln w`` ``(W,)``.
    """
    ratio = torch.exp(log_v_ratio)
    copies = torch.ones_like(ratio, dtype=torch.long)
    dlogw = torch.zeros_like(ratio)

    split = ratio > rule.c_hi
    m = torch.clamp(torch.floor(ratio), max=rule.m_max).long()
    if room is not None and bool(split.any()):
        # Give the room to the walkers with the largest predicted contribution.
        extra = torch.where(split, m - 1, 0)
        order = torch.argsort(ratio, descending=True)
        allowed = torch.cumsum(extra[order], 0) <= room
        ok = torch.zeros_like(split)
        ok[order] = allowed
        split = split & ok
    copies = torch.where(split, m, copies)
    dlogw = torch.where(split, -torch.log(m.to(ratio.dtype)), dlogw)

    low = ratio < rule.c_lo
    u = torch.rand(
        ratio.shape, generator=generator, dtype=ratio.dtype, device=ratio.device
    )
    survive = u < ratio
    copies = torch.where(low & ~survive, 0, copies)
    dlogw = torch.where(low & survive, -log_v_ratio, dlogw)
    return copies, dlogw


@dataclass
class BatchResult:
    """Per-root totals of one batch of roots."""

    index: int
    contribution: np.ndarray  # (R,) S_r
    channel_contribution: np.ndarray  # (R, C)
    channel_successes: np.ndarray  # (C,) unweighted counts
    log_importance_start: np.ndarray  # (R,)
    sum_w: float
    sum_w2: float
    n_successes: int
    n_failures: int
    n_step_capped: int
    walker_steps: int
    importance_evaluations: int
    n_splits: int
    n_killed: int
    max_population: int
    wall_time_s: float

    def to_arrays(self) -> dict:
        return asdict(self)


class _Frame(NamedTuple):
    """One recorded frame of a walker and a link to the frame before it.

    A walker's history is a linked list that runs backwards from its newest
    frame. Copies made by a split start from the same newest frame, so they share
    the ancestor's history up to the split without copying it.
    """

    step: int
    positions: np.ndarray  # (N, 3) in Å
    log_weight: float
    log_importance: float
    previous: _Frame | None


@dataclass
class RecordedPath:
    """The recorded history of one finished walker, from its root to its end.

    Attributes
    ----------
    batch, root : int
        The batch and the root (index into the ensemble's exit points) the
        walker descends from.
    status : str
        How the path ended: ``"reached B"``, ``"returned to A"`` or
        ``"step cap"``.
    channel : str or None
        The channel of a success (None for failures, for successes the
        classifier could not label and without a classifier).
    steps : ndarray ``(F,)``
        Step of every frame, counted from the root (step 0).
    positions : ndarray ``(F, N, 3)``
        Positions in Å.
    log_weight : ndarray ``(F,)``
        ln w of the walker at each frame, after the branching of that step; the
        last entry is the final weight the path contributes (when a success).
    log_importance : ndarray ``(F,)``
        ln I at each frame, with the boundary values: 0 in B, −inf in A.
    """

    batch: int
    root: int
    status: str
    channel: str | None
    steps: np.ndarray
    positions: np.ndarray
    log_weight: np.ndarray
    log_importance: np.ndarray

    @property
    def success(self) -> bool:
        return self.status == REACHED_B

    @classmethod
    def _from_frames(cls, last: _Frame, **kwargs) -> RecordedPath:
        frames = []
        node = last
        while node is not None:
            frames.append(node)
            node = node.previous
        frames.reverse()
        return cls(
            steps=np.array([f.step for f in frames], dtype=np.int64),
            positions=np.stack([f.positions for f in frames]),
            log_weight=np.array([f.log_weight for f in frames]),
            log_importance=np.array([f.log_importance for f in frames]),
            **kwargs,
        )


@dataclass(frozen=True)
class _Recording:
    n_roots: int
    interval_steps: int


class _PathRecorder:
    """Histories of the recorded walkers of one batch: those of its first roots.

    ``index`` holds the recorded walkers' positions in the population and
    ``last`` their newest frames, in the same order. Only these walkers cost
    anything, and nothing once they have all ended.
    """

    def __init__(
        self,
        recording: _Recording,
        batch: int,
        first_root: int,
        roots: torch.Tensor,
        log_i0: torch.Tensor,
        channel_names: tuple[str, ...],
    ):
        k = min(recording.n_roots, len(roots))
        self.interval = recording.interval_steps
        self.batch, self.first_root = batch, first_root
        self.names = channel_names
        self.paths: list[RecordedPath] = []
        self.index = torch.arange(k, device=roots.device)
        positions = roots[:k].detach().cpu().numpy().copy()
        log_i = log_i0[:k].tolist()
        self.last = [_Frame(0, positions[j], 0.0, log_i[j], None) for j in range(k)]

    def __bool__(self) -> bool:
        return bool(self.last)

    def _end(self, j, step, positions, log_w, log_i, status, channel, root) -> None:
        frame = self.last[j]
        if frame.step != step:
            frame = _Frame(step, positions, log_w, log_i, frame)
        self.paths.append(
            RecordedPath._from_frames(
                frame,
                batch=self.batch,
                root=self.first_root + root,
                status=status,
                channel=channel,
            )
        )

    def finish(self, step, x, log_w, root, done, in_b, labels) -> None:
        """Close the paths of the recorded walkers that entered A or B."""
        ended = torch.nonzero(done[self.index]).squeeze(-1).tolist()
        if not ended:
            return
        idx = self.index[ended]
        positions = x[idx].detach().cpu().numpy()
        lw, success = log_w[idx].tolist(), in_b[idx].tolist()
        roots = root[idx].tolist()
        label = labels[idx].tolist() if labels is not None else [-1] * len(idx)
        for n, j in enumerate(ended):
            channel = None
            if success[n] and label[n] >= 0:
                channel = self.names[label[n]]
            self._end(
                j,
                step,
                positions[n],
                lw[n],
                0.0 if success[n] else -math.inf,
                REACHED_B if success[n] else RETURNED_TO_A,
                channel,
                roots[n],
            )

    def follow(self, keep_index: torch.Tensor, n_before: int) -> None:
        """The population became ``old[keep_index]``: copies share a history."""
        where = torch.full((n_before,), -1, dtype=torch.long, device=keep_index.device)
        where[self.index] = torch.arange(len(self.index), device=keep_index.device)
        source = where[keep_index]
        self.index = torch.nonzero(source >= 0).squeeze(-1)
        self.last = [self.last[j] for j in source[self.index].tolist()]

    def frame(self, step, x, log_w, importance, *, cap=False, root=None) -> None:
        """A frame of every recorded walker; with ``cap`` also end their paths."""
        xs = x[self.index]
        with torch.no_grad():
            log_i = importance.log_importance(xs).tolist()
        positions = xs.detach().cpu().numpy()
        lw = log_w[self.index].tolist()
        if cap:
            roots = root[self.index].tolist()
            for j in range(len(self.last)):
                self._end(
                    j, step, positions[j], lw[j], log_i[j], STEP_CAP, None, roots[j]
                )
            self.index, self.last = self.index[:0], []
            return
        self.last = [
            _Frame(step, positions[j], lw[j], log_i[j], prev)
            for j, prev in enumerate(self.last)
        ]


class _Population(NamedTuple):
    """References to the live walkers of a batch (not copies)."""

    batch: int
    first_root: int
    step: int
    positions: torch.Tensor
    log_weight: torch.Tensor
    root: torch.Tensor


class Ensemble:
    """A branching population of biased walkers that estimates a rate.

    Parameters
    ----------
    atoms : Atoms
        A configuration inside A with the calculator attached.
    importance : ImportanceFunction
    A, B : Region
    temperature_K : float
    timestep : float
        In ASE time units (``0.005 * ase.units.fs``).
    friction : float
        γ in eV·fs/Å².
    flux : BruteForceResult
        An unbiased run in A (:func:`ase_rare.estimate.measure_flux`) that gives
        J_A and at least ``n_roots`` exit points.
    n_roots : int
        Number of roots (exit points), taken from ``flux.exit_points``.
    roots_per_batch : int
        Roots processed together; a batch is the unit of checkpointing.
    branching : Branching or None
        None: one path per root, no splitting.
    max_population : int
        Cap on live walkers in a batch (splits beyond it are skipped).
    kernel, n_candidates, drift_refresh, max_steps
        As for :class:`ase_rare.sampling.PathSampler`.
    channels : ChannelClassifier, optional
    seed : int
    checkpoint : path, optional
        File that holds finished batches, rewritten atomically after each one;
        an interrupted run started again with the same arguments resumes from
        it and returns the identical result. Only the batch in progress is
        lost: it is computed again from its own seed.
    device : str

    Notes
    -----
    Observers attached with :meth:`attach` run after finished batches, those
    attached with :meth:`attach_step` after steps of the batch in progress;
    :mod:`ase_rare.observers` has a progress bar, a statistics logger, a path
    writer and a checkpointer. Walkers become ``Atoms`` only on demand
    (:meth:`current_walkers`, :meth:`record_paths`), never in the stepping
    loop. Observers, recording and ``current_walkers`` draw no random numbers
    and change no walker, so they leave the result unchanged.
    """

    def __init__(
        self,
        atoms: Atoms,
        importance: ImportanceFunction,
        A: Region,
        B: Region,
        *,
        temperature_K: float,
        timestep: float,
        flux: BruteForceResult,
        friction: float = 1.0,
        n_roots: int = 4096,
        roots_per_batch: int = 512,
        branching: Branching | None = Branching(),
        max_population: int = 20000,
        kernel: str = "tilt",
        n_candidates: int = 8,
        drift_refresh: int = 1,
        max_steps: int = 200_000,
        channels: ChannelClassifier | None = None,
        seed: int = 0,
        checkpoint: str | os.PathLike | None = None,
        device: str = "cpu",
        direction: str = "A->B",
    ):
        check_disjoint(A, B)
        check_path_options(
            kernel,
            n_candidates=n_candidates,
            drift_refresh=drift_refresh,
            max_steps=max_steps,
            max_population=max_population,
        )
        if direction not in ("A->B", "B->A"):
            raise ValueError(f"direction must be 'A->B' or 'B->A'; got {direction!r}")
        start = torch.as_tensor(np.asarray(atoms.positions), dtype=DTYPE).unsqueeze(0)
        if not bool(A.contains(start)[0]):
            raise ValueError(
                f"the start configuration is not inside region A ({A!r}); pass the "
                "configuration the flux run started from (for B -> A, swap the "
                "regions and start in B)"
            )
        if n_roots < 2 or roots_per_batch < 1:
            raise ValueError(
                f"n_roots must be >= 2 and roots_per_batch >= 1; got {n_roots}, "
                f"{roots_per_batch}"
            )
        if flux.exit_points is None or len(flux.exit_points) < n_roots:
            have = 0 if flux.exit_points is None else len(flux.exit_points)
            raise ValueError(
                f"the flux run holds {have} exit points, fewer than n_roots = "
                f"{n_roots}; measure it with n_exit_points >= n_roots"
            )
        self.params = LangevinParameters(timestep / units.fs, temperature_K, friction)
        self.potential = as_batched(atoms.calc, atoms)
        self.planar = bool(getattr(self.potential, "planar", False))
        # Fixed atoms (ASE constraints) get no force, noise or drift.
        self.free_coordinates = (
            free_coordinates_of(atoms, self.planar) if atoms.constraints else None
        )
        x0 = torch.as_tensor(np.asarray(atoms.positions), dtype=DTYPE)
        self.potential.check_positions(x0.unsqueeze(0))
        check_stability(self.potential, x0, self.params, self.planar)
        check_flux_matches(flux, timestep / units.fs, temperature_K, friction)
        self.importance = importance
        self.A, self.B = A, B
        self.flux = flux
        self.roots = torch.as_tensor(flux.exit_points[:n_roots], dtype=DTYPE)
        # Roots drawn in proportion to I (importance_roots) carry weights.
        self.root_weights = root_weights(flux, n_roots)
        self.n_roots = n_roots
        self.roots_per_batch = roots_per_batch
        self.branching = branching
        self.max_population = max_population
        self.kernel = kernel
        self.n_candidates = n_candidates
        self.drift_refresh = drift_refresh
        self.max_steps = max_steps
        self.channels = channels
        self.n_channels = len(channels.names) if channels is not None else 0
        self.seed = seed
        self.device = device
        self.direction = direction
        self.atoms = atoms
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.batches: dict[int, BatchResult] = {}
        self.observers: list[tuple[Callable, int, tuple, dict]] = []
        self.step_observers: list[tuple[Callable, int, tuple, dict]] = []
        self.wall_time_s = 0.0
        self._recording: _Recording | None = None
        self._recorded: list[RecordedPath] = []
        self._population: _Population | None = None
        if self.checkpoint is not None and self.checkpoint.exists():
            self.load_checkpoint()

    # -- ASE-style interface -------------------------------------------------

    def attach(self, function: Callable, interval: int = 1, *args, **kwargs):
        """Call ``function(*args, **kwargs)`` after every ``interval`` batches.

        Also after the last batch, whatever ``interval``. Batches finished in an
        earlier run (loaded from the checkpoint) are not reported again.
        """
        if not callable(function):
            raise TypeError("attach needs a callable")
        if interval < 1:
            raise ValueError(f"interval must be >= 1; got {interval}")
        self.observers.append((function, interval, args, kwargs))

    def attach_step(self, function: Callable, interval: int = 100, *args, **kwargs):
        """Call ``function(*args, **kwargs)`` after every ``interval`` steps of a
        batch, counted from its start.

        The live population is then available from :meth:`current_walkers`.
        Steps are cheap, so keep such observers light and their interval large.
        """
        if not callable(function):
            raise TypeError("attach_step needs a callable")
        if interval < 1:
            raise ValueError(f"interval must be >= 1; got {interval}")
        self.step_observers.append((function, interval, args, kwargs))

    def current_walkers(self) -> list[Atoms]:
        """The live walkers as ``Atoms``, one per walker.

        Called from a step observer (:meth:`attach_step`), these are the walkers
        of the batch in progress after that step's branching. Called at any
        other time, they are the walkers still alive at the end of the last
        batch run in this process: those stopped by the step cap, usually
        none. Before any batch has run the list is empty.

        Each ``Atoms`` has the species and cell of the start configuration and,
        in ``info``, ``batch``, ``root`` (index into the exit points), ``step``
        (since the root), ``log_weight`` (ln w) and ``log_importance`` (ln I).
        """
        pop = self._population
        if pop is None or len(pop.positions) == 0:
            return []
        with torch.no_grad():
            log_i = self.importance.log_importance(pop.positions).tolist()
        positions = pop.positions.detach().cpu().numpy()
        log_w = pop.log_weight.tolist()
        roots = (pop.root + pop.first_root).tolist()
        walkers = []
        for i in range(len(positions)):
            atoms = self.atoms_at(positions[i])
            atoms.info.update(
                batch=pop.batch,
                root=roots[i],
                step=pop.step,
                log_weight=log_w[i],
                log_importance=log_i[i],
            )
            walkers.append(atoms)
        return walkers

    def record_paths(self, n_roots: int, interval_steps: int = 10) -> None:
        """Keep the histories of the walkers of the first ``n_roots`` roots of
        every batch that starts from now on (0 stops recording).

        A frame (positions, ln w, ln I) is kept every ``interval_steps`` steps,
        at the root and at the end of each path. Copies made by a split share
        their ancestor's frames up to the split. Paths that end, in B, in A or
        at the step cap, are collected as :class:`RecordedPath` and handed out
        by :meth:`take_recorded_paths`; walkers killed in the roulette leave no
        path. Recording draws no random numbers and does not change the result;
        it costs an importance evaluation of the recorded walkers per frame,
        which is not counted in the result's ``importance_evaluations``.
        Recorded paths are not checkpointed.
        """
        if n_roots < 0 or interval_steps < 1:
            raise ValueError(
                f"record_paths needs n_roots >= 0 and interval_steps >= 1; got "
                f"{n_roots}, {interval_steps}"
            )
        self._recording = _Recording(n_roots, interval_steps) if n_roots else None

    def take_recorded_paths(self) -> list[RecordedPath]:
        """The paths recorded since the last call, in the order they ended."""
        paths, self._recorded = self._recorded, []
        return paths

    def atoms_at(self, positions: np.ndarray) -> Atoms:
        """An ``Atoms`` with the start configuration's species, cell and
        boundary conditions at ``positions`` ``(N, 3)`` in Å, without a
        calculator."""
        return Atoms(
            numbers=self.atoms.numbers,
            positions=positions,
            cell=self.atoms.cell,
            pbc=self.atoms.pbc,
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @property
    def n_batches(self) -> int:
        return math.ceil(self.n_roots / self.roots_per_batch)

    def irun(self, executor=None, *, max_workers: int | None = None, client=None):
        """Run the batches not yet finished, yielding after each one.

        Parameters
        ----------
        executor : None, "processes", distributed.Client or executor, optional
            None runs the batches here, one after the other. Otherwise they run
            in parallel (:mod:`ase_rare.execution`) and are yielded as they
            finish, in any order; the result is bitwise the same.
        max_workers : int, optional
            Processes of ``executor="processes"`` (default: number of cores).
        client : distributed.Client, optional
            Run the batches as tasks of this Dask client.
        """
        from ase_rare.execution import as_batch_executor

        runner = as_batch_executor(executor, max_workers=max_workers, client=client)
        if runner is not None:
            yield from self._irun_parallel(runner)
            return
        for b in range(self.n_batches):
            if b in self.batches:
                continue
            t0 = time.perf_counter()
            self.batches[b] = self._run_batch(b)
            self.wall_time_s += time.perf_counter() - t0
            self._batch_finished()
            yield self.batches[b]

    def _irun_parallel(self, runner):
        if self.branching is not None and self.branching.target == "running":
            raise NotImplementedError(
                "the 'running' branching target makes each batch depend on the "
                "batches finished before it, so batches cannot run in parallel; "
                "use target='root' or run without an executor"
            )
        if self.step_observers:
            raise NotImplementedError(
                "step observers need the live population, which is in another "
                "process when batches run in parallel; detach them or run "
                "without an executor"
            )
        todo = [b for b in range(self.n_batches) if b not in self.batches]
        t0 = time.perf_counter()
        for result, paths in runner.map_unordered(self, todo):
            self.batches[result.index] = result
            self._recorded.extend(paths)
            self.wall_time_s += time.perf_counter() - t0
            self._batch_finished()
            yield result
            t0 = time.perf_counter()

    def _batch_finished(self) -> None:
        if self.checkpoint is not None:
            self.save_checkpoint()
        done = len(self.batches)
        for function, interval, args, kwargs in self.observers:
            if done % interval == 0 or done == self.n_batches:
                function(*args, **kwargs)

    def run(
        self, executor=None, *, max_workers: int | None = None, client=None
    ) -> RateResult:
        """Run every batch (resuming from the checkpoint) and return the result.

        The arguments choose where the batches run, as for :meth:`irun`.
        """
        for _ in self.irun(executor, max_workers=max_workers, client=client):
            pass
        return self.result()

    # -- one batch -----------------------------------------------------------

    def batch_seed(self, b: int) -> int:
        digest = hashlib.sha256(f"{self.seed}:{b}".encode()).digest()
        return int.from_bytes(digest[:7], "little")

    def _target(self, log_i0: torch.Tensor) -> torch.Tensor:
        rule = self.branching
        if rule is not None and rule.target == "running" and self.batches:
            p = self.partial_success_probability()
            if p > 0:
                return torch.full_like(log_i0, math.log(p))
        return log_i0

    def _run_batch(self, b: int) -> BatchResult:
        t0 = time.perf_counter()
        lo = b * self.roots_per_batch
        roots = self.roots[lo : lo + self.roots_per_batch].to(self.device).clone()
        r = roots.shape[0]
        sampler = PathSampler(
            self.potential,
            self.importance,
            self.A,
            self.B,
            params=self.params,
            planar=self.planar,
            kernel=self.kernel,
            n_candidates=self.n_candidates,
            drift_refresh=self.drift_refresh,
            max_steps=self.max_steps,
            seed=self.batch_seed(b),
            device=self.device,
            free_coordinates=self.free_coordinates,
        )
        gen = sampler.generator
        free = sampler.free_mask(roots.shape[1])
        c = max(self.n_channels, 1)
        # Every per-walker tensor lives on the sampler's device; results come
        # to the host once, at the end of the batch.
        dev = roots.device
        S = torch.zeros(r, dtype=torch.float64, device=dev)
        S_c = torch.zeros((r, c), dtype=torch.float64, device=dev)
        successes_c = torch.zeros(c, dtype=torch.long, device=dev)
        sum_w = sum_w2 = 0.0
        n_succ = n_fail = 0
        n_splits = n_killed = 0
        peak = r

        with torch.no_grad():
            log_i0 = sampler.importance.log_importance(roots).to(torch.float64)
        sampler._evaluations += r
        log_target = self._target(log_i0)

        x = roots
        log_w = torch.zeros(r, dtype=torch.float64, device=dev)
        root = torch.arange(r, device=dev)
        drift = None
        tracker = self.channels.tracker(x) if self.channels is not None else None
        rule = self.branching
        recorder = None
        if self._recording is not None:
            names = self.channels.names if self.channels is not None else ()
            recorder = _PathRecorder(self._recording, b, lo, x, log_i0, names)
        watch = bool(self.step_observers)

        # An exit point can lie in B already (A and B one step apart): a success
        # with weight 1 before any step.
        _, start_in_b = sampler._regions(x)
        if bool(start_in_b.any()):
            S[start_in_b] += 1.0
            n_start = int(start_in_b.sum())
            sum_w += n_start
            sum_w2 += n_start
            n_succ += n_start
            if recorder:
                recorder.finish(0, x, log_w, root, start_in_b, start_in_b, None)
            keep_index = torch.nonzero(~start_in_b).squeeze(-1)
            if recorder:
                recorder.follow(keep_index, len(x))
            x, log_w, root = x[keep_index], log_w[keep_index], root[keep_index]
            if tracker is not None:
                tracker.take(keep_index)

        step = 0
        for step in range(self.max_steps):
            if x.shape[0] == 0:
                break
            new, dlogw, drift, energy, in_a, in_b = sampler.advance(
                x, drift, step, free
            )
            log_w = log_w + dlogw
            if tracker is not None:
                tracker.update(x, new, energy)
            x = new

            if bool(in_b.any()):
                w = torch.exp(log_w[in_b])
                S.index_add_(0, root[in_b], w)
                if tracker is not None:
                    label = tracker.labels()[in_b]
                    known = label >= 0  # an unclassified success counts in no channel
                    S_c.index_put_(
                        (root[in_b][known], label[known]), w[known], accumulate=True
                    )
                    successes_c += torch.bincount(label[known], minlength=c)
                sum_w += float(w.sum())
                sum_w2 += float((w * w).sum())
                n_succ += int(in_b.sum())
            n_fail += int(in_a.sum())
            done = in_a | in_b
            if recorder and bool(done.any()):
                labels = tracker.labels() if tracker is not None else None
                recorder.finish(step + 1, x, log_w, root, done, in_b, labels)

            keep_index = None
            if bool(done.any()):
                keep_index = torch.nonzero(~done).squeeze(-1)
            if rule is not None and (step + 1) % rule.interval == 0 and len(x):
                alive = keep_index if keep_index is not None else torch.arange(len(x))
                with torch.no_grad():
                    log_i = sampler.importance.log_importance(x[alive])
                sampler._evaluations += len(alive)
                log_ratio = log_w[alive] + log_i - log_target[root[alive]]
                copies, dw = branch(
                    log_ratio, rule, gen, room=self.max_population - len(alive)
                )
                log_w[alive] += dw
                n_splits += int((copies > 1).sum())
                n_killed += int((copies == 0).sum())
                keep_index = torch.repeat_interleave(alive, copies)
                # Copies of one walker must not share future noise: they do not,
                # because every walker draws its own noise each step.
            if keep_index is not None:
                if recorder:
                    recorder.follow(keep_index, len(x))
                x = x[keep_index]
                log_w = log_w[keep_index]
                root = root[keep_index]
                if drift is not None:
                    drift = drift[keep_index]
                if tracker is not None:
                    tracker.take(keep_index)
                peak = max(peak, len(x))
            if recorder and (step + 1) % recorder.interval == 0:
                recorder.frame(step + 1, x, log_w, sampler.importance)
            if watch:
                self._population = _Population(b, lo, step + 1, x, log_w, root)
                for function, interval, args, kwargs in self.step_observers:
                    if (step + 1) % interval == 0:
                        function(*args, **kwargs)

        capped = int(x.shape[0])
        if recorder is not None:
            if recorder:
                recorder.frame(
                    self.max_steps, x, log_w, sampler.importance, cap=True, root=root
                )
            self._recorded.extend(recorder.paths)
        steps_done = self.max_steps if capped else step
        self._population = _Population(b, lo, steps_done, x, log_w, root)
        return BatchResult(
            index=b,
            contribution=S.cpu().numpy(),
            channel_contribution=S_c[:, : self.n_channels].cpu().numpy(),
            channel_successes=successes_c[: self.n_channels].cpu().numpy(),
            log_importance_start=log_i0.cpu().numpy(),
            sum_w=sum_w,
            sum_w2=sum_w2,
            n_successes=n_succ,
            n_failures=n_fail + capped,
            n_step_capped=capped,
            walker_steps=sampler._walker_steps,
            importance_evaluations=sampler._evaluations,
            n_splits=n_splits,
            n_killed=n_killed,
            max_population=peak,
            wall_time_s=time.perf_counter() - t0,
        )

    # -- results -------------------------------------------------------------

    def _ordered(self) -> list[BatchResult]:
        return [self.batches[b] for b in sorted(self.batches)]

    def partial_success_probability(self) -> float:
        parts = self._ordered()
        s = np.concatenate([p.contribution for p in parts])
        return float((s * self._done_root_weights()).mean())

    def _done_root_weights(self) -> np.ndarray:
        """Root weights of the finished batches, in the order of ``_ordered``."""
        rpb = self.roots_per_batch
        return np.concatenate(
            [
                self.root_weights[b * rpb : b * rpb + len(self.batches[b].contribution)]
                for b in sorted(self.batches)
            ]
        )

    def result(self) -> RateResult:
        """The rate from the batches finished so far (all of them after ``run``)."""
        parts = self._ordered()
        if not parts:
            raise RuntimeError("no batch has finished yet; call run() first")
        s = np.concatenate([p.contribution for p in parts])
        n = len(s)
        omega = self._done_root_weights()
        p, p_se = weighted_success_probability(
            s, omega, self.flux.root_pool_relative_se
        )
        flux, flux_se = self.flux.flux_per_fs, self.flux.flux_se_per_fs
        rel = math.hypot(p_se / p if p > 0 else math.nan, flux_se / flux)
        log_i0 = np.concatenate([p.log_importance_start for p in parts])
        i0 = np.exp(log_i0)
        ratio = s / i0
        rel_var = (
            ratio.var(ddof=1) / ratio.mean() ** 2 if ratio.mean() > 0 else math.inf
        )
        sum_w = sum(p.sum_w for p in parts)
        sum_w2 = sum(p.sum_w2 for p in parts)
        names, fr, fr_se, naive_fr = [], [], [], []
        if self.channels is not None:
            names = list(self.channels.names)
            s_c = np.concatenate([p.channel_contribution for p in parts])
            s_c = s_c * omega[:, None]
            f, f_se = channel_fractions_by_root(s_c, seed=self.seed)
            counts = sum(p.channel_successes for p in parts)
            fr, fr_se = f.tolist(), f_se.tolist()
            naive_fr = (counts / max(counts.sum(), 1)).tolist()
        return RateResult(
            direction=self.direction,
            temperature_K=self.params.temperature_K,
            timestep_fs=self.params.timestep_fs,
            friction_eV_fs_per_A2=self.params.friction,
            kernel=self.kernel
            + ("" if self.branching is None else f"+BRW({self.branching.target})"),
            rate_per_fs=flux * p,
            rate_se_per_fs=flux * p * rel,
            success_probability=p,
            success_probability_se=p_se,
            flux_per_fs=flux,
            flux_se_per_fs=flux_se,
            naive_rate_per_fs=flux * float((omega * i0).mean()),
            naive_success_probability=float((omega * i0).mean()),
            n_roots=n,
            n_successes=sum(p.n_successes for p in parts),
            n_step_capped=sum(p.n_step_capped for p in parts),
            effective_sample_size=sum_w**2 / sum_w2 if sum_w2 > 0 else 0.0,
            relative_variance_per_root=float(rel_var),
            channel_names=names,
            channel_fractions=fr,
            channel_fractions_se=fr_se,
            naive_channel_fractions=naive_fr,
            walker_steps=sum(p.walker_steps for p in parts),
            flux_walker_steps=self.flux.walker_steps,
            importance_evaluations=sum(p.importance_evaluations for p in parts),
            wall_time_s=self.wall_time_s,
            seed=self.seed,
            root_contributions=s.tolist(),
            root_log_importance=log_i0.tolist(),
            root_log_weights=np.log(omega).tolist() if self.flux.root_pool_size else [],
            root_pool_size=self.flux.root_pool_size,
            root_pool_relative_se=self.flux.root_pool_relative_se,
        )

    # -- checkpoints ---------------------------------------------------------

    def fingerprint(self) -> str:
        """A digest of everything that determines the result."""
        h = hashlib.sha256()
        h.update(self.roots.numpy().tobytes())
        if self.flux.root_log_weights is not None:
            h.update(self.root_weights.tobytes())
        for t in self.importance.state_dict().values():
            h.update(t.detach().cpu().numpy().tobytes())
        if self.free_coordinates is not None:
            h.update(self.free_coordinates.tobytes())
        h.update(
            json.dumps(
                [
                    asdict(self.params),
                    None if self.branching is None else asdict(self.branching),
                    self.n_roots,
                    self.roots_per_batch,
                    self.max_population,
                    self.kernel,
                    self.n_candidates,
                    self.drift_refresh,
                    self.max_steps,
                    self.seed,
                    self.n_channels,
                    self.flux.flux_per_fs,
                ]
            ).encode()
        )
        return h.hexdigest()

    def save_checkpoint(self, path: str | os.PathLike | None = None) -> None:
        """Write the finished batches to ``path`` (default: ``checkpoint``).

        The file is written to a temporary file in the same folder and renamed
        over the old one, so a crash or a full disk never leaves a half-written
        checkpoint: either the new one or the previous one is on disk.

        Raises
        ------
        OSError
            When the file cannot be written; the previous checkpoint is intact
            and no temporary file is left behind.
        """
        path = Path(path) if path is not None else self.checkpoint
        if path is None:
            raise ValueError("no checkpoint path: pass one or set checkpoint=")
        data = {
            "fingerprint": self.fingerprint(),
            "batches": {b: r.to_arrays() for b, r in self.batches.items()},
            "wall_time_s": self.wall_time_s,
        }
        save_atomic(data, path, "checkpoint")

    def load_checkpoint(self, path: str | os.PathLike | None = None) -> None:
        """Take the finished batches from ``path`` (default: ``checkpoint``).

        Raises
        ------
        ValueError
            When the file is unreadable, or belongs to a run with other roots,
            importance function or settings.
        """
        path = Path(path) if path is not None else self.checkpoint
        if path is None:
            raise ValueError("no checkpoint path: pass one or set checkpoint=")
        try:
            data = torch.load(path, weights_only=False)
            fingerprint = data["fingerprint"]
            batches = data["batches"]
        except Exception as err:  # noqa: BLE001 - any unreadable file
            raise ValueError(
                f"checkpoint {path} is unreadable or corrupted ({err}); "
                "delete it to start again"
            ) from err
        if fingerprint != self.fingerprint():
            raise ValueError(
                f"checkpoint {path} belongs to a different run (other "
                "roots, importance function or settings); use another checkpoint "
                "path or delete it"
            )
        self.batches = {int(b): BatchResult(**r) for b, r in batches.items()}
        self.wall_time_s = data.get("wall_time_s", 0.0)
