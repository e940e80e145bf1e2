"""Observers of an :class:`~ase_rare.ensemble.Ensemble`: progress, logs, paths.

Each observer is a callable without arguments, attached the ASE way and called
after finished batches of roots::

    ens = Ensemble(...)
    ens.attach(ProgressBar(ens))
    ens.attach(StatisticsLogger(ens, "rate.log"))
    ens.attach(PathWriter(ens, "paths.traj", max_paths=50))
    ens.attach(Checkpointer(ens, "run.ckpt"), interval=10)
    result = ens.run()

The library itself prints nothing; these are where progress and summaries come
from.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import IO

from ase.io import Trajectory
from ase.parallel import world
from ase.utils import IOContext

from ase_rare.ensemble import RUNNING, Ensemble, RecordedPath


class ProgressBar:
    """A tqdm progress bar over the ensemble's batches of roots.

    The bar counts finished batches (starting from those already loaded from a
    checkpoint, so that the ETA covers only the work left) and shows the running
    rate ± SE in fs⁻¹ from :meth:`Ensemble.result`. It closes itself after the
    last batch.

    Parameters
    ----------
    ensemble : Ensemble
    file : file object, optional
        Where the bar is drawn; standard error by default.
    **tqdm_kwargs
        Passed to :class:`tqdm.tqdm` (for example ``disable=True``).
    """

    def __init__(self, ensemble: Ensemble, file: IO | None = None, **tqdm_kwargs):
        from tqdm import tqdm

        self.ensemble = ensemble
        options = dict(
            total=ensemble.n_batches,
            initial=len(ensemble.batches),
            unit="batch",
            desc=f"rate {ensemble.direction}",
            file=sys.stderr if file is None else file,
        )
        options.update(tqdm_kwargs)
        self.bar = tqdm(**options)
        self.closed = False

    def __call__(self) -> None:
        if self.closed:
            return
        done = len(self.ensemble.batches)
        result = self.ensemble.result()
        self.bar.set_postfix_str(
            f"rate {result.rate_per_fs:.3g} ± {result.rate_se_per_fs:.2g} fs⁻¹",
            refresh=False,
        )
        self.bar.update(done - self.bar.n)
        if done >= self.ensemble.n_batches:
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.bar.close()
            self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class StatisticsLogger(IOContext):
    """Writes the running statistics of the ensemble, one line per call.

    Columns: batches finished, roots, rate and its SE (fs⁻¹), P_AB and its SE,
    effective sample size of the successes, number of successes, walkers
    stopped by the step cap, walker-steps and the ensemble's wall time (s). The
    numbers are those of :meth:`Ensemble.result` over all finished batches.

    Parameters
    ----------
    ensemble : Ensemble
    logfile : str, path or file object
        File name, open file, or ``"-"`` for standard output.
    header : bool
        Write the column header first.
    mode : str
        How a named file is opened: ``"a"`` (append, the default, as
        :class:`ase.md.MDLogger`) or ``"w"``.
    """

    columns = (
        ("batches", "{:>8d}"),
        ("roots", "{:>8d}"),
        ("rate[1/fs]", "{:>12.5e}"),
        ("rate_SE[1/fs]", "{:>14.3e}"),
        ("P_AB", "{:>12.5e}"),
        ("P_AB_SE", "{:>11.3e}"),
        ("ESS", "{:>9.1f}"),
        ("successes", "{:>10d}"),
        ("step_capped", "{:>12d}"),
        ("walker_steps", "{:>13d}"),
        ("wall[s]", "{:>10.1f}"),
    )

    def __init__(
        self,
        ensemble: Ensemble,
        logfile: str | os.PathLike | IO = "-",
        *,
        header: bool = True,
        mode: str = "a",
    ):
        self.ensemble = ensemble
        if isinstance(logfile, os.PathLike):
            logfile = os.fspath(logfile)
        self.logfile = self.openfile(file=logfile, mode=mode, comm=world)
        if header:
            # Names right-aligned over their columns; "#" marks the header line.
            names = [f"{name:>{len(fmt.format(0))}}" for name, fmt in self.columns]
            self.logfile.write("#" + " ".join(names)[1:] + "\n")
            self.logfile.flush()

    def __call__(self) -> None:
        result = self.ensemble.result()
        values = (
            len(self.ensemble.batches),
            result.n_roots,
            result.rate_per_fs,
            result.rate_se_per_fs,
            result.success_probability,
            result.success_probability_se,
            result.effective_sample_size,
            result.n_successes,
            result.n_step_capped,
            result.walker_steps,
            result.wall_time_s,
        )
        line = " ".join(
            fmt.format(v) for (_, fmt), v in zip(self.columns, values, strict=True)
        )
        self.logfile.write(line + "\n")
        self.logfile.flush()


class PathWriter:
    """Writes recorded paths as an ASE trajectory that ``ase gui`` opens.

    The writer asks the ensemble to record the paths of the first roots of each
    batch (:meth:`Ensemble.record_paths`). Attached to the ensemble
    (``ens.attach(writer)``), it is called after each batch and appends the
    successful paths — up to ``max_paths`` in all — and up to ``failures``
    failed ones to ``filename``, in the order they ended. Once both quotas are
    full it switches the recording off.

    Every frame is an ``Atoms`` with the species and cell of the ensemble's
    start configuration and, in ``atoms.info``:

    ``path``
        Number of the path in the file (0, 1, ...).
    ``root``, ``batch``
        The root (index into the exit points) and batch it descends from.
    ``step``
        Steps since the root; frames are ``interval_steps`` apart, plus the
        path's last step.
    ``log_weight``
        ln w of the walker after that step's branching; on the last frame of a
        success, the weight it contributes to P_AB.
    ``log_importance``
        ln I, with 0 in B and −inf in A.
    ``status``
        ``"running"``, and on the last frame how the path ended:
        ``"reached B"``, ``"returned to A"`` or ``"step cap"``.
    ``outcome``
        How the path ended, on every frame (to pick paths in ``ase gui``).
    ``channel``
        The channel name of a success, else None.

    Parameters
    ----------
    ensemble : Ensemble
    filename : str or path
    max_paths : int
        Most successful paths written.
    failures : int
        Most failed paths (back in A, or at the step cap) written.
    interval_steps : int
        Steps between frames.
    roots_per_batch : int, optional
        Roots of each batch whose paths are recorded; by default
        ``max_paths + failures`` (at most the batch size). With branching one
        root can give many paths, so fewer roots often suffice.
    append : bool
        Add to an existing file (continuing its path numbers and quotas, as
        when a run is resumed) instead of replacing it.

    Notes
    -----
    Paths reach the writer when their batch has finished, so an interrupted
    batch leaves none in the file, and a resumed run, which computes it again,
    writes its paths once. With ``append=True`` a resumed run continues the
    file where it stopped; the paths of a batch finished but not yet written
    when the run was killed are missing from it (finished batches are not
    computed again).
    """

    def __init__(
        self,
        ensemble: Ensemble,
        filename: str | os.PathLike,
        *,
        max_paths: int = 100,
        failures: int = 0,
        interval_steps: int = 10,
        roots_per_batch: int | None = None,
        append: bool = False,
    ):
        if max_paths < 0 or failures < 0:
            raise ValueError(
                f"max_paths and failures must be >= 0; got {max_paths}, {failures}"
            )
        self.ensemble = ensemble
        self.filename = Path(filename)
        self.max_paths, self.max_failures = max_paths, failures
        self.n_paths = self.n_successes = self.n_failures = 0
        if append and self.filename.exists() and self.filename.stat().st_size:
            self._count_existing()
        elif self.filename.exists():
            self.filename.unlink()
        if roots_per_batch is None:
            roots_per_batch = min(ensemble.roots_per_batch, max_paths + failures)
        self.roots_per_batch = roots_per_batch
        if not self._full():
            ensemble.record_paths(roots_per_batch, interval_steps)

    def _count_existing(self) -> None:
        from ase.io import read

        seen = {}
        for atoms in read(self.filename, ":"):
            seen[atoms.info["path"]] = atoms.info["outcome"]
        self.n_paths = max(seen, default=-1) + 1
        self.n_successes = sum(o == "reached B" for o in seen.values())
        self.n_failures = len(seen) - self.n_successes

    def _full(self) -> bool:
        return (
            self.n_successes >= self.max_paths and self.n_failures >= self.max_failures
        )

    def __call__(self) -> None:
        chosen = []
        for path in self.ensemble.take_recorded_paths():
            if path.success and self.n_successes < self.max_paths:
                self.n_successes += 1
            elif not path.success and self.n_failures < self.max_failures:
                self.n_failures += 1
            else:
                continue
            chosen.append(path)
        if chosen:
            with Trajectory(self.filename, "a") as traj:
                for path in chosen:
                    for atoms in self._frames(path, self.n_paths):
                        traj.write(atoms)
                    self.n_paths += 1
        if self._full():
            self.ensemble.record_paths(0)

    def _frames(self, path: RecordedPath, number: int):
        last = len(path.steps) - 1
        for f in range(len(path.steps)):
            atoms = self.ensemble.atoms_at(path.positions[f])
            atoms.info.update(
                path=number,
                root=path.root,
                batch=path.batch,
                step=int(path.steps[f]),
                log_weight=float(path.log_weight[f]),
                log_importance=float(path.log_importance[f]),
                status=path.status if f == last else RUNNING,
                outcome=path.status,
                channel=path.channel,
            )
            yield atoms

    def close(self) -> None:
        """Write what is still recorded and stop the recording."""
        self()
        self.ensemble.record_paths(0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Checkpointer:
    """Saves the ensemble's finished batches to ``filename`` when called.

    The ensemble's own ``checkpoint=`` saves after every batch; attach this
    with an ``interval`` to save less often, or to keep a second copy. Resume
    with ``Ensemble(..., checkpoint=filename)`` or
    :meth:`Ensemble.load_checkpoint`. Files are replaced atomically.
    """

    def __init__(self, ensemble: Ensemble, filename: str | os.PathLike):
        self.ensemble = ensemble
        self.filename = Path(filename)

    def __call__(self) -> None:
        self.ensemble.save_checkpoint(self.filename)
