"""Running the batches of roots of an ensemble in parallel: processes or Dask.

A batch of roots is a pure function of its index given the ensemble's fixed
inputs (potential, importance function, regions, roots, flux, settings): its
random stream is seeded from the ensemble's seed and the batch index. Batches
can therefore run anywhere, in any order and any number at a time, and the
combined result is bitwise the one of the sequential run::

    result = ensemble.run()                                   # in this process
    result = ensemble.run(executor="processes", max_workers=2)  # local pool
    result = ensemble.run(client=dask_client)                 # Dask cluster

The ensemble's inputs travel to each worker once; then each task is a batch
index and brings back one :class:`~ase_rare.ensemble.BatchResult`. Results are
stored by batch index as they arrive, the checkpoint is rewritten and the
observers are called after each; :meth:`Ensemble.result` combines batches in
index order, so arrival order does not matter.

Notes
-----
Each worker runs torch with one thread (``torch.set_num_threads(1)``, or the
``torch_threads`` given): the tensors of a batch are small, and several
workers each using every core would only fight over them. Give more workers,
not more threads. Keep the thread count equal to that of a sequential run you
compare with: torch may sum in another order with more threads, which can
change the last bits of a result.

The local pool starts its processes with ``"spawn"`` (a fresh interpreter that
imports the package): forking a process that has already used torch's thread
pools can deadlock, and ``"spawn"`` behaves the same on Linux, macOS and
Windows. Starting each worker costs an import of torch and ASE (a few seconds):
for many short runs, keep one :class:`ProcessPool` open across them.

A lost Dask worker (killed, out of memory, node gone) is no loss: the scheduler
runs its unfinished tasks again on another worker, up to
``distributed.scheduler.allowed-failures`` times. As a batch is a pure function
of its index and results are kept by index, a batch run twice is counted once,
with the same numbers. Tasks that raise are retried ``retries`` times.

Not supported with an executor (``NotImplementedError``): the ``"running"``
branching target, which makes a batch depend on the batches finished before
it, and step observers (:meth:`Ensemble.attach_step`), which need the live
population of a batch running in another process. Recorded paths
(:meth:`Ensemble.record_paths`) come back with their batch.
"""

from __future__ import annotations

import concurrent.futures
import copy
import multiprocessing
import os
import pickle
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:
    from ase_rare.ensemble import BatchResult, Ensemble, RecordedPath

#: What a worker hands back for one batch: its totals and its recorded paths.
Outcome = tuple["BatchResult", list["RecordedPath"]]


def worker_state(ensemble: Ensemble) -> Ensemble:
    """A copy of ``ensemble`` holding only what a batch needs, for shipping.

    Observers (often closures over open files), finished batches, the
    checkpoint path and the live population stay behind; the tensors are
    shared with ``ensemble`` until the copy is pickled.
    """
    state = copy.copy(ensemble)
    state.observers = []
    state.step_observers = []
    state.batches = {}
    state.checkpoint = None
    state.wall_time_s = 0.0
    state._recorded = []
    state._population = None
    return state


def run_batch(state: Ensemble, b: int, torch_threads: int = 1) -> Outcome:
    """Run batch ``b`` of the ensemble ``state`` (from :func:`worker_state`).

    The function a worker runs. ``state`` is not changed, so several threads
    of one worker may share it.
    """
    if torch.get_num_threads() != torch_threads:
        torch.set_num_threads(torch_threads)
    # A private copy: _run_batch keeps its last population and recorded paths.
    own = copy.copy(state)
    own._recorded = []
    result = own._run_batch(b)
    return result, own.take_recorded_paths()


class BatchExecutor(Protocol):
    """Runs batches of an ensemble and yields their outcomes as they finish."""

    def map_unordered(
        self, ensemble: Ensemble, batches: Iterable[int]
    ) -> Iterator[Outcome]: ...


# -- local process pool ------------------------------------------------------

#: The ensemble a pool worker holds, with the token of the run it belongs to.
_STATE: tuple[str, Ensemble] | None = None


def _warm_up(torch_threads: int) -> int:
    """Pay a new worker's start-up (imports, torch threads) before any batch."""
    import ase_rare.ensemble  # noqa: F401

    torch.set_num_threads(torch_threads)
    return os.getpid()


def _run_shipped_batch(path: str, token: str, b: int, torch_threads: int) -> Outcome:
    """Run batch ``b`` of the ensemble in ``path``, read once per worker and run."""
    global _STATE
    if _STATE is None or _STATE[0] != token:
        with open(path, "rb") as fh:
            _STATE = (token, pickle.load(fh))
    return run_batch(_STATE[1], b, torch_threads)


class ProcessPool:
    """A pool of local processes: for one run, or kept for many.

    Given as ``executor="processes"`` the pool is started for that run and
    closed after it. Used as a context manager, its processes start once and
    serve every run inside the block, which saves their start-up::

        with ProcessPool(2) as pool:
            for ensemble in ensembles:
                results.append(ensemble.run(executor=pool))

    Parameters
    ----------
    max_workers : int, optional
        Number of processes; by default the number of cores.
    mp_context : str
        Start method, ``"spawn"`` (default) or ``"forkserver"``; ``"fork"`` is
        refused, as forking a process that uses torch can deadlock.
    torch_threads : int
        Torch threads in each worker.

    Notes
    -----
    Each run pickles the ensemble once, to a temporary file; every worker
    reads it at its first batch of that run and keeps it for the others, so
    the inputs travel to each worker once per run, not once per batch.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        mp_context: str = "spawn",
        torch_threads: int = 1,
    ):
        if mp_context not in ("spawn", "forkserver"):
            raise ValueError(
                f"mp_context must be 'spawn' or 'forkserver'; got {mp_context!r} "
                "(a forked process that uses torch can deadlock)"
            )
        if max_workers is not None and max_workers < 1:
            raise ValueError(f"max_workers must be >= 1; got {max_workers}")
        self.max_workers = max_workers
        self.mp_context = mp_context
        self.torch_threads = torch_threads
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    @property
    def workers(self) -> int:
        return self.max_workers or multiprocessing.cpu_count()

    def start(self) -> ProcessPool:
        """Start every worker now and wait until each has imported the package."""
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context(self.mp_context),
            )
            # One task per worker: the executor starts a process for each.
            warm = [
                self._pool.submit(_warm_up, self.torch_threads)
                for _ in range(self.workers)
            ]
            for future in warm:
                future.result()
        return self

    def close(self) -> None:
        """Stop the workers (batches not started are dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> ProcessPool:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def map_unordered(
        self, ensemble: Ensemble, batches: Iterable[int]
    ) -> Iterator[Outcome]:
        batches = list(batches)
        if not batches:
            return
        owned = self._pool is None
        pool = self
        if owned:
            # For one run: no more processes than batches.
            pool = copy.copy(self)
            pool.max_workers = min(self.workers, len(batches))
            pool.start()
        folder = tempfile.mkdtemp(prefix="ase_rare-pool-")
        path = os.path.join(folder, "ensemble.pkl")
        futures = []
        try:
            with open(path, "wb") as fh:
                pickle.dump(worker_state(ensemble), fh, pickle.HIGHEST_PROTOCOL)
            token = uuid.uuid4().hex
            futures = [
                pool._pool.submit(
                    _run_shipped_batch, path, token, b, pool.torch_threads
                )
                for b in batches
            ]
            for future in concurrent.futures.as_completed(futures):
                yield future.result()
        finally:
            # Also when the caller stops early: drop the batches not started and
            # let the running ones finish before their input file goes.
            for future in futures:
                future.cancel()
            concurrent.futures.wait(futures)
            shutil.rmtree(folder, ignore_errors=True)
            if owned:
                pool.close()


class FuturesExecutor:
    """Any :class:`concurrent.futures.Executor` the caller owns (not closed).

    The ensemble travels with every task, as such an executor has no per-worker
    state; prefer :class:`ProcessPool` or Dask for large inputs.
    """

    def __init__(self, executor: concurrent.futures.Executor, *, torch_threads=1):
        self.executor = executor
        self.torch_threads = torch_threads

    def map_unordered(
        self, ensemble: Ensemble, batches: Iterable[int]
    ) -> Iterator[Outcome]:
        state = worker_state(ensemble)
        futures = [
            self.executor.submit(run_batch, state, b, self.torch_threads)
            for b in batches
        ]
        try:
            for future in concurrent.futures.as_completed(futures):
                yield future.result()
        finally:
            for future in futures:
                future.cancel()


# -- Dask ----------------------------------------------------------------------


class DaskExecutor:
    """Batches as tasks of a ``dask.distributed`` client the caller owns.

    Parameters
    ----------
    client : distributed.Client
    retries : int
        Times a task that raised is run again. A lost worker does not count:
        the scheduler re-runs its tasks by itself.
    torch_threads : int
        Torch threads in each worker process. With several threads per Dask
        worker, each task still uses this many.

    Notes
    -----
    The ensemble is scattered to every worker once (``broadcast=True``) and
    released after the run; each task is then a batch index.
    """

    def __init__(self, client: Any, *, retries: int = 0, torch_threads: int = 1):
        self.client = client
        self.retries = retries
        self.torch_threads = torch_threads

    def map_unordered(
        self, ensemble: Ensemble, batches: Iterable[int]
    ) -> Iterator[Outcome]:
        from distributed import as_completed

        batches = list(batches)
        if not batches:
            return
        client = self.client
        [state] = client.scatter([worker_state(ensemble)], broadcast=True, hash=False)
        futures = [
            client.submit(
                run_batch,
                state,
                b,
                self.torch_threads,
                retries=self.retries,
                key=f"ase_rare-batch-{b}-{state.key}",
            )
            for b in batches
        ]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            client.cancel(futures)
            client.cancel([state])


def as_batch_executor(
    executor: Any = None,
    *,
    max_workers: int | None = None,
    client: Any = None,
) -> BatchExecutor | None:
    """The :class:`BatchExecutor` for what :meth:`Ensemble.run` was given.

    ``executor`` may be None (sequential, in this process), ``"processes"``
    (a :class:`ProcessPool` of ``max_workers``), a ``distributed.Client``, a
    :class:`concurrent.futures.Executor`, or a :class:`BatchExecutor`; a
    Dask ``client`` may also be given on its own.
    """
    if client is not None:
        if executor is not None:
            raise ValueError("give either executor= or client=, not both")
        executor = client
    if executor is None:
        if max_workers is not None:
            raise ValueError('max_workers needs executor="processes"')
        return None
    if isinstance(executor, str):
        if executor != "processes":
            raise ValueError(
                f"executor must be 'processes' or an object; got {executor!r}"
            )
        return ProcessPool(max_workers)
    if max_workers is not None:
        raise ValueError('max_workers applies only to executor="processes"')
    distributed = sys.modules.get("distributed")
    if distributed is not None and isinstance(executor, distributed.Client):
        return DaskExecutor(executor)
    if isinstance(executor, concurrent.futures.Executor):
        return FuturesExecutor(executor)
    if hasattr(executor, "map_unordered"):
        return executor
    raise TypeError(
        "executor must be None, 'processes', a distributed.Client, a "
        f"concurrent.futures.Executor or a BatchExecutor; got {type(executor)!r}"
    )
