"""Adaptive training of the importance function on states of biased paths.

Each iteration samples biased paths with the current importance function from
exit points, measures how spread their weights are (the relative variance per
root, the quantity the estimator's error depends on), and fits the function on
the states the paths visited with a loss that is zero at the committor of the
discretised chain. The loop stops when the measured spread stops shrinking.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from ase import Atoms, units

from ase_rare.importance.base import ImportanceFunction
from ase_rare.kernels import LangevinParameters, draw_noise, overdamped_step
from ase_rare.regions import Region
from ase_rare.sampling import REACHED_B, RETURNED_TO_A, STEP_CAP, PathSampler

LOSSES = ("residual",)


@dataclass
class TrainingHistory:
    """What each iteration of :func:`train_importance` measured.

    Lists have one entry per iteration. The path statistics of iteration k
    (relative variance, ESS, P̂_AB) were measured with the importance function
    as it was *before* the fit of iteration k, so entry 0 describes the
    starting function.

    Attributes
    ----------
    loss : list of float
        Mean training loss over the optimiser steps of the iteration.
    relative_variance_per_root : list of float
        ``Var[S_r / I(x₀)] / mean²`` over the roots of the iteration, with S_r
        the weight of root r's success (0 for a failure); ``inf`` without any
        success. The estimator's relative variance is this over the number of
        roots.
    effective_sample_size : list of float
        ``(Σw)² / Σw²`` over the successful paths.
    success_probability, success_probability_se : list of float
        P̂_AB from the iteration's paths and its standard error over roots.
    n_successes, n_step_capped, n_states : list of int
        Successful paths, paths stopped by the step cap, and states fitted.
    wall_time_s, cpu_time_s : list of float
        Time spent in the iteration (sampling and fitting), in s; CPU time is
        that of the whole process.
    best_iteration : int
        The iteration whose importance function had the smallest relative
        variance; :func:`train_importance` leaves that function in place
        (``restore_best=True``).
    stopped_early : bool
        Whether the stopping rule ended the loop before ``iterations``.
    """

    loss: list[float] = field(default_factory=list)
    relative_variance_per_root: list[float] = field(default_factory=list)
    effective_sample_size: list[float] = field(default_factory=list)
    success_probability: list[float] = field(default_factory=list)
    success_probability_se: list[float] = field(default_factory=list)
    n_successes: list[int] = field(default_factory=list)
    n_step_capped: list[int] = field(default_factory=list)
    n_states: list[int] = field(default_factory=list)
    wall_time_s: list[float] = field(default_factory=list)
    cpu_time_s: list[float] = field(default_factory=list)
    best_iteration: int = -1
    stopped_early: bool = False

    @property
    def n_iterations(self) -> int:
        return len(self.loss)

    def as_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        """One line per iteration, for logs and the command line."""
        lines = [
            f"{'iter':>4} {'loss':>10} {'rel.var/root':>13} {'ESS':>7} "
            f"{'P_AB':>10} {'±SE':>9} {'succ':>5} {'states':>7} {'cpu s':>7}"
        ]
        for k in range(self.n_iterations):
            lines.append(
                f"{k:4d} {self.loss[k]:10.4g} "
                f"{self.relative_variance_per_root[k]:13.4g} "
                f"{self.effective_sample_size[k]:7.1f} "
                f"{self.success_probability[k]:10.4g} "
                f"{self.success_probability_se[k]:9.2g} "
                f"{self.n_successes[k]:5d} {self.n_states[k]:7d} "
                f"{self.cpu_time_s[k]:7.2f}"
            )
        return "\n".join(lines)


@dataclass
class PathSample:
    """Biased paths from a set of roots, with the states they visited.

    ``log_weight``, ``status`` and ``log_importance_start`` have one entry per
    root; ``states`` ``(S, N, 3)`` are positions outside A and B recorded along
    the paths, ``in_A`` and ``in_B`` the positions where paths ended in A or B.
    """

    log_weight: np.ndarray
    status: np.ndarray
    log_importance_start: np.ndarray
    states: torch.Tensor
    in_A: torch.Tensor
    in_B: torch.Tensor

    def statistics(self) -> dict:
        """Relative variance per root, ESS and P̂_AB with its standard error."""
        succ = self.status == REACHED_B
        n = len(succ)
        s = np.where(succ, np.exp(self.log_weight), 0.0)
        p = float(s.mean())
        p_se = float(s.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
        if not succ.any():
            return {"rel_var": math.inf, "ess": 0.0, "p": p, "p_se": p_se}
        # Both diagnostics are scale-free: form them from shifted ln w so that
        # they survive weights below the double range.
        log_w = self.log_weight[succ]
        w = np.exp(log_w - log_w.max())
        ess = float(w.sum() ** 2 / (w**2).sum())
        log_ratio = np.where(succ, self.log_weight - self.log_importance_start, -np.inf)
        ratio = np.exp(log_ratio - log_ratio.max())
        rel_var = float(ratio.var(ddof=1) / ratio.mean() ** 2) if n > 1 else math.nan
        return {"rel_var": rel_var, "ess": ess, "p": p, "p_se": p_se}


def sample_paths(
    sampler: PathSampler,
    roots: torch.Tensor,
    *,
    record_interval: int = 5,
    max_states: int | None = None,
    generator: torch.Generator | None = None,
) -> PathSample:
    """One biased path per root, recording visited states every few steps.

    Parameters
    ----------
    sampler : PathSampler
        Its kernel, step cap and random stream are used.
    roots : tensor ``(R, N, 3)`` in Å
    record_interval : int
        Keep the positions of every running walker every this many steps (the
        roots themselves are always kept).
    max_states : int, optional
        Keep at most this many states, a uniform subsample.
    generator : torch.Generator, optional
        For the subsample.
    """
    x = roots.to(sampler.device, torch.float64, copy=True)
    n = x.shape[0]
    free = sampler.free_mask(x.shape[1])
    with torch.no_grad():
        log_i0 = sampler.importance.log_importance(x).detach()
    log_w = torch.zeros(n, dtype=torch.float64, device=x.device)
    status = torch.zeros(n, dtype=torch.int8, device=x.device)
    states, ends_a, ends_b = [x.clone()], [], []

    idx = torch.arange(n, device=x.device)
    drift = None
    for step in range(sampler.max_steps):
        if idx.numel() == 0:
            break
        new, dlogw, drift, _, in_a, in_b = sampler.advance(x, drift, step, free)
        log_w[idx] += dlogw
        done = in_a | in_b
        if bool(done.any()):
            status[idx[in_b]] = REACHED_B
            status[idx[in_a]] = RETURNED_TO_A
            ends_a.append(new[in_a])
            ends_b.append(new[in_b])
            keep = ~done
            idx, new = idx[keep], new[keep]
            if drift is not None:
                drift = drift[keep]
        x = new
        if (step + 1) % record_interval == 0 and x.shape[0]:
            states.append(x.clone())
    status[idx] = STEP_CAP

    states = torch.cat(states)
    if max_states is not None and states.shape[0] > max_states:
        pick = torch.randperm(states.shape[0], generator=generator)[:max_states]
        states = states[pick]
    empty = roots.new_zeros((0, *roots.shape[1:]), dtype=torch.float64)
    return PathSample(
        log_weight=log_w.cpu().numpy(),
        status=status.cpu().numpy(),
        log_importance_start=log_i0.cpu().numpy(),
        states=states,
        in_A=torch.cat(ends_a) if ends_a else empty,
        in_B=torch.cat(ends_b) if ends_b else empty,
    )


def lagged_endpoints(
    sampler: PathSampler,
    states: torch.Tensor,
    *,
    n_candidates: int,
    lag_steps: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unbiased ``lag_steps``-step continuations of each state, stopped at A, B.

    Returns the endpoints ``(M, S, N, 3)`` and masks ``(M, S)`` of those that
    stopped in A and in B. They do not depend on the importance function, so
    one set serves every optimiser step of an iteration.
    """
    m, s = n_candidates, states.shape[0]
    free = sampler.free_mask(states.shape[1])
    y = states.unsqueeze(0).expand(m, *states.shape).reshape(m * s, *states.shape[1:])
    y = y.clone()
    hit_a = torch.zeros(m * s, dtype=torch.bool, device=y.device)
    hit_b = torch.zeros_like(hit_a)
    idx = torch.arange(m * s, device=y.device)
    for _ in range(lag_steps):
        if idx.numel() == 0:
            break
        x = y[idx]
        _, forces = sampler.potential.batch_energy_forces(x)
        noise = draw_noise(x, sampler.planar, sampler.generator) * free
        x = overdamped_step(x, forces, noise, sampler.params)
        y[idx] = x
        in_a, in_b = sampler._regions(x)
        hit_a[idx[in_a]] = True
        hit_b[idx[in_b & ~in_a]] = True
        idx = idx[~(in_a | in_b)]
    shape = (m, s)
    return (
        y.reshape(m, s, *states.shape[1:]),
        hit_a.reshape(shape),
        hit_b.reshape(shape),
    )


def _residual_loss(
    importance: ImportanceFunction,
    states: torch.Tensor,
    endpoints: torch.Tensor,
    hit_a: torch.Tensor,
    hit_b: torch.Tensor,
    in_a: torch.Tensor,
    in_b: torch.Tensor,
    boundary_weight: float,
    a_weight: float,
    a_margin: float,
) -> torch.Tensor:
    """Fixed-point residual in log space plus the boundary terms."""
    m, s = hit_a.shape
    with torch.no_grad():
        log_i_y = importance.log_importance(endpoints.reshape(m * s, *states.shape[1:]))
        log_i_y = log_i_y.reshape(m, s)
        log_i_y = torch.where(hit_a, -math.inf, log_i_y)
        log_i_y = torch.where(hit_b, 0.0, log_i_y)
        target = torch.logsumexp(log_i_y, 0) - math.log(m)
    # States whose every continuation fell into A carry no finite target.
    ok = torch.isfinite(target)
    log_i = importance.log_importance(states[ok])
    loss = ((log_i - target[ok]) ** 2).mean()

    if boundary_weight > 0 and in_b.shape[0]:
        loss = loss + boundary_weight * (importance.log_importance(in_b) ** 2).mean()
    if a_weight > 0 and in_a.shape[0] and bool(ok.any()):
        # Inside A, ln I should lie below the smallest target outside; a
        # one-sided, nearly linear penalty avoids a cliff at A.
        ceiling = target[ok].min() - a_margin
        log_i_a = importance.log_importance(in_a)
        loss = loss + a_weight * torch.nn.functional.softplus(log_i_a - ceiling).mean()
    return loss


def train_importance(
    importance: ImportanceFunction,
    start_atoms: Atoms,
    A: Region,
    B: Region,
    *,
    temperature_K: float,
    timestep: float,
    friction: float = 1.0,
    flux=None,
    loss: str = "residual",
    iterations: int = 10,
    paths_per_iteration: int = 512,
    n_candidates: int = 16,
    lag_steps: int = 1,
    fit_steps: int = 200,
    batch_size: int = 1024,
    max_states: int = 8192,
    record_interval: int = 5,
    learning_rate: float = 1e-3,
    boundary_weight: float = 1.0,
    a_weight: float = 0.0,
    a_margin: float = 2.0,
    patience: int = 3,
    min_improvement: float = 0.05,
    restore_best: bool = True,
    kernel: str = "tilt",
    max_steps: int = 20_000,
    n_exit_points: int = 4096,
    seed: int = 0,
    progress: bool = False,
) -> TrainingHistory:
    """Fit an importance function to the committor of the discretised chain.

    Each iteration

    1. draws ``paths_per_iteration`` roots from the exit points and runs one
       biased path from each with the current function (``kernel``), recording
       visited states every ``record_interval`` steps;
    2. measures the relative variance per root of those paths (and ESS, P̂_AB);
    3. runs ``fit_steps`` Adam steps of the fixed-point residual in log space on
       the recorded states x ∉ A∪B:

           [ln I_θ(x) − stopgrad(ln Ẑ(x))]²,
           Ẑ(x) = (1/M) Σ_k I(y_k),

       with y_k the end of an unbiased ``lag_steps``-step continuation of x
       (I = 0 if it entered A on the way, 1 if it entered B), ``M =
       n_candidates``; plus the boundary terms ``boundary_weight · (ln I)²``
       on positions in B and ``a_weight · softplus(ln I − c)`` on positions
       in A (weight ``a_weight``), with ``c`` the smallest target minus
       ``a_margin``.

    With ``lag_steps = 1`` the loss is zero exactly at the committor of the
    chain with the time step used (which is what the estimator needs); longer
    lags have the same fixed point and carry boundary information further per
    step. The loop stops after ``iterations`` or when the relative variance per
    root has not dropped by a factor ``1 − min_improvement`` below its best for
    ``patience`` iterations.

    Parameters
    ----------
    importance : ImportanceFunction
        Trained in place.
    start_atoms : Atoms
        A configuration inside A with the calculator attached.
    A, B : Region
    temperature_K : float
        In K.
    timestep : float
        In ASE time units (``0.02 * ase.units.fs``).
    friction : float
        γ in eV·fs/Å².
    flux : BruteForceResult or array ``(R, N, 3)``, optional
        A flux run (its exit points are used) or exit points in Å. Default:
        a new :func:`ase_rare.estimate.measure_flux` run with
        ``n_exit_points`` exit points.
    loss : {"residual"}
        The fixed-point residual. The log-variance of path weights is not
        implemented.
    iterations, paths_per_iteration : int
    n_candidates : int
        M, continuations per state for Ẑ.
    lag_steps : int
        Steps of each continuation.
    fit_steps, batch_size, learning_rate : int, int, float
        Adam steps per iteration, states per step, step size.
    max_states : int
        States kept per iteration (a uniform subsample of those recorded).
    record_interval : int
    boundary_weight : float
        Weight of the term ``(ln I)²`` on positions in B.
    a_weight, a_margin : float
        Weight and margin of the one-sided term in A. Off by default: the
        condition I = 0 on A already enters every target exactly (through the
        continuations that end in A), and the extra term, measured on the 2D
        two-channel system, pushed ln I down far too steeply next to A.
    patience : int
    min_improvement : float
    restore_best : bool
        Leave the function with the smallest measured relative variance.
    kernel : {"tilt", "candidates"}
        Biased kernel for the paths.
    max_steps : int
        Step cap per path.
    seed : int
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    TrainingHistory

    Notes
    -----
    The relative variance is measured on fresh paths before each fit, so the
    function left in place (the best one) has been measured, never
    extrapolated. The measurement is noisy when successes are few; increase
    ``paths_per_iteration`` when the history jumps.

    Training only sees states its own paths visit. With several channels, a
    function that has learned one of them sends almost no paths through the
    others, so it is not corrected there and the rare paths that do take them
    carry large weights: the estimate stays unbiased but heavy-tailed, and a
    relative variance measured on a few hundred roots underestimates the true
    one. On the 2D two-channel system at 2500 K the trained MLP learned the
    upper channel only, and P̂_AB from single iterations fell well below the
    brute-force value.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}; got {loss!r}")
    for name, value in (
        ("iterations", iterations),
        ("paths_per_iteration", paths_per_iteration),
        ("n_candidates", n_candidates),
        ("lag_steps", lag_steps),
        ("fit_steps", fit_steps),
        ("batch_size", batch_size),
        ("record_interval", record_interval),
        ("patience", patience),
    ):
        if value < 1:
            raise ValueError(f"{name} must be >= 1; got {value}")

    from ase_rare.potentials.adapter import as_batched

    params = LangevinParameters(timestep / units.fs, temperature_K, friction)
    potential = as_batched(start_atoms.calc, start_atoms)
    exit_points = _exit_points(
        flux,
        start_atoms,
        A,
        B,
        timestep=timestep,
        temperature_K=temperature_K,
        friction=friction,
        n_exit_points=n_exit_points,
        seed=seed,
    )
    sampler = PathSampler(
        potential,
        importance,
        A,
        B,
        params=params,
        planar=bool(getattr(potential, "planar", False)),
        kernel=kernel,
        n_candidates=n_candidates,
        max_steps=max_steps,
        seed=seed + 11,
    )
    generator = torch.Generator().manual_seed(seed + 13)
    optimizer = torch.optim.Adam(importance.parameters(), lr=learning_rate)
    history = TrainingHistory()
    best = (math.inf, -1, copy.deepcopy(importance.state_dict()))
    reference, last_improvement = math.inf, 0

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=iterations, desc="training", unit="iter")
    for iteration in range(iterations):
        t_wall, t_cpu = time.perf_counter(), time.process_time()

        pick = torch.randint(
            exit_points.shape[0], (paths_per_iteration,), generator=generator
        )
        sample = sample_paths(
            sampler,
            exit_points[pick],
            record_interval=record_interval,
            max_states=max_states,
            generator=generator,
        )
        stats = sample.statistics()
        rel_var = stats["rel_var"]
        if rel_var < best[0]:
            best = (rel_var, iteration, copy.deepcopy(importance.state_dict()))
        if rel_var < reference * (1 - min_improvement) or (
            math.isinf(reference) and math.isfinite(rel_var)
        ):
            reference, last_improvement = rel_var, iteration

        endpoints, hit_a, hit_b = lagged_endpoints(
            sampler, sample.states, n_candidates=n_candidates, lag_steps=lag_steps
        )
        losses = []
        n_states = sample.states.shape[0]
        for _ in range(fit_steps):
            batch = torch.randint(
                n_states, (min(batch_size, n_states),), generator=generator
            )
            value = _residual_loss(
                importance,
                sample.states[batch],
                endpoints[:, batch],
                hit_a[:, batch],
                hit_b[:, batch],
                _subsample(sample.in_A, batch_size, generator),
                _subsample(sample.in_B, batch_size, generator),
                boundary_weight,
                a_weight,
                a_margin,
            )
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
            losses.append(float(value.detach()))

        history.loss.append(float(np.mean(losses)))
        history.relative_variance_per_root.append(rel_var)
        history.effective_sample_size.append(stats["ess"])
        history.success_probability.append(stats["p"])
        history.success_probability_se.append(stats["p_se"])
        history.n_successes.append(int((sample.status == REACHED_B).sum()))
        history.n_step_capped.append(int((sample.status == STEP_CAP).sum()))
        history.n_states.append(n_states)
        history.wall_time_s.append(time.perf_counter() - t_wall)
        history.cpu_time_s.append(time.process_time() - t_cpu)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(rel_var=f"{rel_var:.3g}", loss=f"{history.loss[-1]:.3g}")

        if iteration - last_improvement >= patience:
            history.stopped_early = iteration + 1 < iterations
            break
    if bar is not None:
        bar.close()

    history.best_iteration = best[1]
    if restore_best and best[1] >= 0:
        importance.load_state_dict(best[2])
    return history


def _subsample(x: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    if x.shape[0] <= n:
        return x
    return x[torch.randperm(x.shape[0], generator=generator)[:n]]


def _exit_points(flux, start_atoms, A, B, **kwargs) -> torch.Tensor:
    from ase_rare.bruteforce import BruteForceResult
    from ase_rare.estimate import measure_flux

    if flux is None:
        flux = measure_flux(start_atoms, A, B, **kwargs)
    if isinstance(flux, BruteForceResult):
        if flux.exit_points is None or len(flux.exit_points) == 0:
            raise ValueError("the flux run holds no exit points")
        flux = flux.exit_points
    points = torch.as_tensor(np.asarray(flux), dtype=torch.float64)
    if points.ndim != 3 or points.shape[-1] != 3 or points.shape[0] == 0:
        raise ValueError(
            f"exit points must be an array (R, N, 3) with R >= 1; got shape "
            f"{tuple(points.shape)}"
        )
    return points
