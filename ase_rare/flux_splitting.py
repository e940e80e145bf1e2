"""The flux run in A as a weighted ensemble: exits next to the saddles, often.

``P_AB`` is the mean committor over exit points, and on LJ7 a small share of
the exits carries much of it: those a walker makes while it lingers next to a
saddle, inside A in the collective variables but high in energy. An unbiased
flux run meets such episodes rarely and in bursts, so the mean committor of
its pool of exits scatters from run to run far more than the pool's size
suggests, and no choice of roots within the pool removes that.

Here the flux run is a weighted ensemble (Huber & Kim, 1996): every ``every``
steps the walkers are binned on levels of the importance function's ``ln I``
(its network is defined inside A too) and, within each bin, resampled to
``walkers_per_bin`` walkers of equal weight — heavy walkers are split, light
ones merged by systematic resampling. Resampling keeps every walker's expected
weight, so the weighted ensemble follows the unbiased dynamics in expectation
at every time: weighted exit counts and weighted times give ``J_A`` and a
weighted pool of exits whose mean committor is that of the unbiased run, with
the rare bins populated as richly as the common one. Walkers are resampled in
``groups`` independent sub-ensembles, whose spread gives the errors.

The dynamics are the package's unbiased kernel; only the bookkeeping differs
from :class:`ase_rare.bruteforce.BruteForce`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms, units

from ase_rare.bruteforce import BruteForceResult, ratio_with_error
from ase_rare.importance.base import ImportanceFunction
from ase_rare.kernels import LangevinParameters, draw_noise, overdamped_step
from ase_rare.potentials.base import DTYPE
from ase_rare.regions import Region


@dataclass
class FluxSplitting:
    """Settings of a weighted-ensemble flux run (see the module).

    Attributes
    ----------
    importance : ImportanceFunction
        Its ``ln I`` sets the bins.
    levels : sequence of float, optional
        Bin edges on ``ln I``; by default from ``first_quantile`` of ``ln I``
        over the walkers after equilibration up to ``top`` in steps of
        ``spacing``.
    every : int
        Steps between resamplings (each costs one evaluation of ``I`` per
        walker).
    walkers_per_bin : int
        Walkers each occupied bin of each group is resampled to.
    groups : int
        Independent sub-ensembles; errors are over groups.
    """

    importance: ImportanceFunction
    levels: tuple[float, ...] | None = None
    every: int = 25
    walkers_per_bin: int = 8
    groups: int = 32
    first_quantile: float = 0.5
    spacing: float = 1.5
    top: float = -1.0

    def __post_init__(self):
        if self.every < 1 or self.walkers_per_bin < 1 or self.groups < 2:
            raise ValueError(
                f"FluxSplitting needs every >= 1, walkers_per_bin >= 1 and "
                f"groups >= 2 (errors are over groups); got {self.every}, "
                f"{self.walkers_per_bin}, {self.groups}"
            )
        if self.levels is not None:
            lv = [float(v) for v in self.levels]
            if any(b <= a for a, b in zip(lv, lv[1:], strict=False)):
                raise ValueError(f"levels must increase; got {lv}")
            self.levels = tuple(lv)


def _resample(key, weight, per_key, generator):
    """Systematic resampling to ``per_key`` walkers in every occupied key.

    Returns (index of the parent of each new walker, new weights). Each
    walker's expected number of copies times the new weight is its weight.
    """
    order = torch.argsort(key, stable=True)
    k, w = key[order], weight[order]
    uniq, inverse, counts = torch.unique_consecutive(
        k, return_inverse=True, return_counts=True
    )
    total = torch.zeros(len(uniq), dtype=w.dtype).index_add_(0, inverse, w)
    start = torch.cumsum(counts, 0) - counts
    cum = torch.cumsum(w, 0)
    before = torch.cat([torch.zeros(1, dtype=w.dtype), cum])[start]
    c = (cum - before[inverse]) / total[inverse] * per_key
    u = torch.rand(len(uniq), generator=generator, dtype=w.dtype)[inverse]
    # The last walker of a key ends its cumulative share exactly, so that
    # rounding never loses a copy.
    c[start + counts - 1] = float(per_key)
    c_prev = torch.cat([torch.zeros(1, dtype=w.dtype), c[:-1]])
    c_prev[start] = 0.0
    copies = (torch.floor(c + u) - torch.floor(c_prev + u)).clamp(min=0).long()
    parent = torch.repeat_interleave(order, copies)
    new_w = torch.repeat_interleave(total[inverse] / per_key, copies)
    return parent, new_w


def split_flux_run(
    start: Atoms,
    A: Region,
    B: Region,
    splitting: FluxSplitting,
    *,
    timestep: float,
    temperature_K: float,
    friction: float = 1.0,
    n_exit_points: int = 1_000_000,
    equilibrate_fs: float = 20.0,
    seed: int = 0,
) -> BruteForceResult:
    """Flux J_A and a weighted pool of exit points from a weighted ensemble.

    Runs, after ``equilibrate_fs`` of weighted-ensemble equilibration, until
    ``n_exit_points`` exits have been recorded; every exit is kept with its
    weight (``exit_weights``, normalised to mean 1) and group
    (``exit_walkers``). Pass the result to
    :func:`ase_rare.estimate.importance_roots`.
    """
    from ase_rare.potentials.adapter import as_batched

    potential = as_batched(start.calc, start)
    planar = bool(getattr(potential, "planar", False))
    params = LangevinParameters(timestep / units.fs, temperature_K, friction)
    dt_fs = timestep / units.fs
    imp = splitting.importance
    generator = torch.Generator().manual_seed(seed)
    x0 = torch.as_tensor(np.asarray(start.positions), dtype=DTYPE).unsqueeze(0)
    if not bool(A.contains(x0)[0]):
        raise ValueError(f"the start configuration is not inside region A ({A!r})")
    m, g_n = splitting.walkers_per_bin, splitting.groups
    x = x0.repeat(m * g_n, 1, 1)
    weight = torch.full((len(x),), 1.0 / m, dtype=torch.float64)
    group = torch.arange(g_n).repeat_interleave(m)
    in_a = torch.ones(len(x), dtype=torch.bool)
    levels = (
        torch.tensor(splitting.levels, dtype=torch.float64)
        if splitting.levels is not None
        else None
    )

    def log_i(pos):
        with torch.no_grad():
            return imp.log_importance(pos).to(torch.float64)

    def resample():
        nonlocal x, weight, group, in_a
        b = torch.bucketize(log_i(x), levels)
        key = group * (len(levels) + 1) + b
        parent, weight = _resample(key, weight, m, generator)
        x, group, in_a = x[parent], group[parent], in_a[parent]

    exits_t, exits_w, exits_g = [], [], []
    n_exits = 0
    exit_weight = np.zeros(g_n)
    a_time = np.zeros(g_n)
    transitions = np.zeros(g_n)
    arrivals = 0
    steps = walker_steps = evaluations = 0
    t0 = time.perf_counter()
    n_eq = max(1, int(round(equilibrate_fs / dt_fs)))
    recording = False
    while True:
        _, forces = potential.batch_energy_forces(x)
        new = overdamped_step(x, forces, draw_noise(x, planar, generator), params)
        walker_steps += len(x)
        now_a, now_b = A.contains(new), B.contains(new)
        if recording:
            # Every walker's last region is A: one reaching B restarts in A.
            a_time += np.bincount(group.numpy(), weight.numpy(), g_n) * dt_fs
            out = in_a & ~now_a
            if bool(out.any()):
                exits_t.append(new[out])
                exits_w.append(weight[out])
                exits_g.append(group[out])
                n_exits += int(out.sum())
                exit_weight += np.bincount(group[out].numpy(), weight[out].numpy(), g_n)
            if bool(now_b.any()):
                arrivals += int(now_b.sum())
                transitions += np.bincount(
                    group[now_b].numpy(), weight[now_b].numpy(), g_n
                )
        if bool(now_b.any()):
            new = torch.where(now_b[:, None, None], x0, new)
            now_a = now_a | now_b
        x, in_a = new, now_a
        steps += 1
        if steps == n_eq and levels is None:
            li = log_i(x)
            first = float(torch.quantile(li, splitting.first_quantile))
            lv = np.arange(first, splitting.top, splitting.spacing)
            levels = torch.tensor(
                list(lv) + [splitting.top] if len(lv) else [splitting.top],
                dtype=torch.float64,
            )
        if steps % splitting.every == 0 and levels is not None:
            resample()
            evaluations += len(x)
        if steps == n_eq:
            recording = True
        if recording and n_exits >= n_exit_points:
            break

    points = torch.cat(exits_t)
    w = torch.cat(exits_w)
    w = w / w.mean()
    flux, flux_se = ratio_with_error(exit_weight, a_time)
    rate, rate_se = ratio_with_error(transitions, a_time)
    time_a = float(a_time.sum())
    return BruteForceResult(
        temperature_K=temperature_K,
        timestep_fs=dt_fs,
        friction_eV_fs_per_A2=friction,
        n_walkers=len(x),
        steps_per_walker=steps,
        walker_steps=walker_steps,
        simulated_time_fs=time_a,
        time_from_A_fs=time_a,
        n_transitions=arrivals,
        rate_per_fs=rate,
        rate_se_per_fs=rate_se,
        n_exits=n_exits,
        flux_per_fs=flux,
        flux_se_per_fs=flux_se,
        success_probability=rate / flux if flux > 0 else math.nan,
        restart_in_A=True,
        wall_time_s=time.perf_counter() - t0,
        seed=seed,
        exit_points=points.numpy(),
        exit_walkers=torch.cat(exits_g).numpy(),
        exit_weights=w.numpy(),
        splitting_levels=[float(v) for v in levels],
        importance_evaluations=evaluations,
    )
