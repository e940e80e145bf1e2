"""Adaptive training of the importance function on biased paths.

Each iteration samples biased paths with the current importance function from
exit points, measures how spread their weights are (the relative variance per
root, the quantity the estimator's error depends on), and fits the function
with one of three losses that vanish, or are smallest, at the committor:

* ``"residual"``: the fixed-point residual in log space on the visited states;
* ``"logvar"``: the variance of ``ln W(Γ) − ln I(x₀)`` over the successful
  paths, with ``ln W`` recomputed as a differentiable function of the network
  from the recorded steps;
* ``"cross_entropy"``: the mean of ``ln W`` over the successful paths drawn in
  proportion to their weights (the KL divergence of the biased path measure
  from the zero-variance one, up to a constant);
* ``"variational"``: the Kolmogorov functional ``∫ |∇I|² e^{−βU}`` on the
  visited states, reweighted to the equilibrium density;
* sums of these, e.g. ``"residual+logvar"`` (the best measured on the 2D
  two-channel system; see :func:`train_importance`).

The loop stops when the measured spread stops shrinking. A run can write a
checkpoint after every iteration and resume from it bit for bit, and a function
trained at one temperature is a warm start at another (:func:`warm_start`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from ase import Atoms, units

from ase_rare._atomic import save_atomic
from ase_rare.importance.base import ImportanceFunction
from ase_rare.kernels import LangevinParameters, draw_noise, overdamped_step
from ase_rare.regions import Region
from ase_rare.sampling import REACHED_B, RETURNED_TO_A, STEP_CAP, PathSampler

LOSSES = ("residual", "logvar", "cross_entropy", "variational")

#: Losses fitted on every step of the successful paths.
PATH_LOSSES = ("logvar", "cross_entropy")
#: How the residual's continuations run: unbiased, or tilted with exact weights.
CONTINUATIONS = ("unbiased", "tilted")

#: Version of the checkpoint written by :func:`train_importance`.
CHECKPOINT_VERSION = 1


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
        Mean training loss over the optimiser steps of the iteration (``nan``
        when the iteration had nothing to fit, see :func:`train_importance`).
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
    target_reached : bool
        Whether it stopped because the relative variance per root reached
        ``target_relative_variance`` (that iteration fitted nothing).
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
    target_reached: bool = False

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
class SuccessPaths:
    """Every step of the successful paths of a :class:`PathSample`.

    The steps of path p are ``offsets[p]:offsets[p + 1]``, in order. Step n
    moved ``positions[n]`` (x_n, Å) to x_{n+1} = m(x_n) + σ ``displacement[n]``,
    with m(x) = x + (Δt/γ) F(x) the unbiased mean: the displacement is the
    noise the *unbiased* kernel would have needed for that step, whatever kernel
    took it. That is all :func:`path_log_weights` needs to give the weight of
    the path under the drift tilt of any importance function.

    Attributes
    ----------
    positions, displacement : tensor ``(T, N, 3)``
    path : tensor ``(T,)``
        Path index of each step.
    offsets : tensor ``(P + 1,)``
    log_weight : tensor ``(P,)``
        ln W of each path as sampled.
    log_importance_start : tensor ``(P,)``
        ln I(x₀) of the function that sampled the paths.
    """

    positions: torch.Tensor
    displacement: torch.Tensor
    path: torch.Tensor
    offsets: torch.Tensor
    log_weight: torch.Tensor
    log_importance_start: torch.Tensor

    @property
    def n_paths(self) -> int:
        return int(self.offsets.shape[0] - 1)

    @property
    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]


@dataclass
class PathSample:
    """Biased paths from a set of roots, with the states they visited.

    ``log_weight``, ``status`` and ``log_importance_start`` have one entry per
    root; ``states`` ``(S, N, 3)`` are positions outside A and B recorded along
    the paths and ``state_log_weight`` ``(S,)`` the ln w their paths had
    reached there; ``in_A`` and ``in_B`` are the positions where paths ended in
    A or B; ``paths`` holds every step of the successful paths when they were
    recorded.
    """

    log_weight: np.ndarray
    status: np.ndarray
    log_importance_start: np.ndarray
    states: torch.Tensor
    in_A: torch.Tensor
    in_B: torch.Tensor
    state_log_weight: torch.Tensor | None = None
    paths: SuccessPaths | None = None

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


def _nan_error(importance, what: str) -> FloatingPointError:
    return FloatingPointError(
        f"{type(importance).__name__} returned NaN ({what}); the importance "
        "function's parameters or inputs are broken — a diverged fit needs a "
        "smaller learning_rate, a restart from an earlier state, or a check of "
        "the network on these positions"
    )


def sample_paths(
    sampler: PathSampler,
    roots: torch.Tensor,
    *,
    record_interval: int = 5,
    max_states: int | None = None,
    generator: torch.Generator | None = None,
    record_paths: bool = False,
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
    record_paths : bool
        Also keep every step of the successful paths (:class:`SuccessPaths`).
        Memory grows with the total length of all paths until they end.
    """
    x = roots.to(sampler.device, torch.float64, copy=True)
    n = x.shape[0]
    free = sampler.free_mask(x.shape[1])
    with torch.no_grad():
        log_i0 = sampler.importance.log_importance(x).detach()
    if bool(torch.isnan(log_i0).any()):
        raise _nan_error(sampler.importance, "ln I at the roots")
    log_w = torch.zeros(n, dtype=torch.float64, device=x.device)
    status = torch.zeros(n, dtype=torch.int8, device=x.device)
    ends_a, ends_b = [], []
    steps_idx, steps_x, steps_d = [], [], []
    mobility = sampler.params.mobility_step
    sigma = sampler.params.noise_scale

    # An exit point can lie in B already: a success with weight 1, no step.
    _, start_in_b = sampler._regions(x)
    status[start_in_b] = REACHED_B
    idx = torch.nonzero(~start_in_b).squeeze(-1)
    x = x[idx]
    states, state_log_w = [x.clone()], [log_w[idx]]
    drift = None
    for step in range(sampler.max_steps):
        if idx.numel() == 0:
            break
        new, dlogw, drift, _, in_a, in_b, forces = sampler.advance(
            x, drift, step, free, return_forces=True
        )
        if bool(torch.isnan(dlogw).any()):
            raise _nan_error(sampler.importance, f"path weights at step {step}")
        if record_paths:
            steps_idx.append(idx)
            steps_x.append(x)
            steps_d.append((new - x - mobility * forces) / sigma)
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
            state_log_w.append(log_w[idx].clone())
    status[idx] = STEP_CAP

    states = torch.cat(states)
    state_log_w = torch.cat(state_log_w)
    if max_states is not None and states.shape[0] > max_states:
        pick = torch.randperm(states.shape[0], generator=generator)[:max_states]
        states, state_log_w = states[pick], state_log_w[pick]
    paths = None
    if record_paths:
        paths = _success_paths(
            steps_idx, steps_x, steps_d, status, log_w, log_i0, roots
        )
    empty = roots.new_zeros((0, *roots.shape[1:]), dtype=torch.float64)
    return PathSample(
        log_weight=log_w.cpu().numpy(),
        status=status.cpu().numpy(),
        log_importance_start=log_i0.cpu().numpy(),
        states=states,
        in_A=torch.cat(ends_a) if ends_a else empty,
        in_B=torch.cat(ends_b) if ends_b else empty,
        state_log_weight=state_log_w,
        paths=paths,
    )


def _success_paths(
    steps_idx, steps_x, steps_d, status, log_w, log_i0, roots
) -> SuccessPaths:
    """Gather the steps of the successful paths, path by path, in order."""
    shape = roots.shape[1:]
    if not steps_idx:
        zero = torch.zeros((0, *shape), dtype=torch.float64)
        none = torch.zeros(0, dtype=torch.float64)
        return SuccessPaths(
            zero, zero.clone(), torch.zeros(0, dtype=torch.long),
            torch.zeros(1, dtype=torch.long), none, none.clone(),
        )  # fmt: skip
    root = torch.cat(steps_idx)
    success = (status == REACHED_B)[root]
    root = root[success]
    # A stable sort keeps each path's steps in the order they were taken.
    order = torch.argsort(root, stable=True)
    root = root[order]
    positions = torch.cat(steps_x)[success][order]
    displacement = torch.cat(steps_d)[success][order]
    ids, counts = torch.unique_consecutive(root, return_counts=True)
    offsets = torch.zeros(ids.shape[0] + 1, dtype=torch.long, device=root.device)
    offsets[1:] = torch.cumsum(counts, 0)
    path = torch.repeat_interleave(
        torch.arange(ids.shape[0], device=root.device), counts
    )
    return SuccessPaths(
        positions, displacement, path, offsets, log_w[ids].clone(), log_i0[ids].clone()
    )


def path_log_weights(
    importance: ImportanceFunction,
    paths: SuccessPaths,
    select: torch.Tensor,
    params: LangevinParameters,
    free: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ln W of recorded paths under the drift tilt of ``importance``, and ln I(x₀).

    For a step x → x' = m(x) + σ d, the tilt with drift g = ∇ ln I(x) has

        ln K/K_I = −σ d·g + σ²|g|²/2,

    so a recorded path's weight is a differentiable function of the network's
    parameters (through g along the path), with the path itself held fixed.
    With the function that sampled the paths (tilt kernel, drift refreshed
    every step) this returns the recorded weights.

    Parameters
    ----------
    select : tensor of int
        The paths to evaluate.
    free : tensor ``(N, 3)``
        Mask of the moving coordinates.

    Returns
    -------
    ln W ``(P,)`` and ln I at each path's first position ``(P,)``, float64,
    both carrying gradients to the parameters.
    """
    starts = paths.offsets[select]
    lengths = paths.offsets[select + 1] - starts
    first = torch.cumsum(lengths, 0) - lengths  # position of each path in the batch
    steps = torch.repeat_interleave(starts - first, lengths) + torch.arange(
        int(lengths.sum()), device=starts.device
    )
    local = torch.repeat_interleave(torch.arange(len(select)), lengths)
    x = paths.positions[steps]
    d = paths.displacement[steps]
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        log_i = importance.log_importance(xg)
        (g,) = torch.autograd.grad(log_i.sum(), xg, create_graph=True)
    g = g.to(torch.float64) * free
    sigma = params.noise_scale
    dims = tuple(range(1, x.ndim))
    per_step = sigma * (-(d * g).sum(dims) + 0.5 * sigma * (g * g).sum(dims))
    log_w = torch.zeros(len(select), dtype=torch.float64, device=x.device)
    log_w = log_w.index_add(0, local, per_step)
    return log_w, log_i[first]


def lagged_endpoints(
    sampler: PathSampler,
    states: torch.Tensor,
    *,
    n_candidates: int,
    lag_steps: int,
    tilted: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``lag_steps``-step continuations of each state, stopped at A and B.

    Unbiased by default. With ``tilted`` they are biased by the sampler's
    kernel and importance function (as they stand now) and each carries its
    exact log-weight, so that ``mean_k W_k I(y_k)`` is still an unbiased
    estimate of the lagged committor ``E[I(y)]`` — and one of small relative
    variance where that is exponentially small, next to A, because the
    continuations are pushed away from A instead of falling back into it.

    Returns the endpoints ``(M, S, N, 3)``, masks ``(M, S)`` of those that
    stopped in A and in B, and the log-weights ``(M, S)`` (zero when
    unbiased). They are made once per iteration and serve every optimiser
    step of it: only ``I(y)`` is evaluated anew.
    """
    m, s = n_candidates, states.shape[0]
    free = sampler.free_mask(states.shape[1])
    y = states.unsqueeze(0).expand(m, *states.shape).reshape(m * s, *states.shape[1:])
    y = y.clone()
    hit_a = torch.zeros(m * s, dtype=torch.bool, device=y.device)
    hit_b = torch.zeros_like(hit_a)
    log_w = torch.zeros(m * s, dtype=torch.float64, device=y.device)
    idx = torch.arange(m * s, device=y.device)
    for _ in range(lag_steps):
        if idx.numel() == 0:
            break
        x = y[idx]
        if tilted:
            x, dlogw, _, _, in_a, in_b = sampler.advance(x, None, 0, free)
            log_w[idx] += dlogw
        else:
            _, forces = sampler.potential.batch_energy_forces(x)
            if getattr(sampler, "free_coordinates", None) is not None:
                forces = forces * free  # fixed atoms do not move
            noise = draw_noise(x, sampler.planar, sampler.generator) * free
            x = overdamped_step(x, forces, noise, sampler.params)
            in_a, in_b = sampler._regions(x)
        y[idx] = x
        hit_a[idx[in_a]] = True
        hit_b[idx[in_b & ~in_a]] = True
        idx = idx[~(in_a | in_b)]
    shape = (m, s)
    return (
        y.reshape(m, s, *states.shape[1:]),
        hit_a.reshape(shape),
        hit_b.reshape(shape),
        log_w.reshape(shape),
    )


def _residual_loss(
    importance: ImportanceFunction,
    states: torch.Tensor,
    endpoints: torch.Tensor,
    hit_a: torch.Tensor,
    hit_b: torch.Tensor,
    log_weight: torch.Tensor,
    in_a: torch.Tensor,
    in_b: torch.Tensor,
    boundary_weight: float,
    a_weight: float,
    a_margin: float,
    log_bias_correction: bool = True,
) -> torch.Tensor:
    """Fixed-point residual in log space plus the boundary terms.

    The target is ``ln (1/M) Σ_k W_k I(y_k)`` over the continuations of
    :func:`lagged_endpoints` (``W_k = 1`` when they are unbiased).
    """
    m, s = hit_a.shape
    with torch.no_grad():
        log_i_y = importance.log_importance(endpoints.reshape(m * s, *states.shape[1:]))
        log_i_y = log_i_y.reshape(m, s)
        log_i_y = torch.where(hit_a, -math.inf, log_i_y)
        log_i_y = torch.where(hit_b, 0.0, log_i_y)
        log_i_y = log_i_y + log_weight
        target = torch.logsumexp(log_i_y, 0) - math.log(m)
        if log_bias_correction and m > 1:
            # ln of an M-sample mean is low by Var[I(y)] / (2 M Ẑ²) on average
            # (delta method); without this the fit settles on a logit that is
            # too steep where the continuations disagree.
            ratio = torch.exp(log_i_y - target)
            target = target + 0.5 * ratio.var(0) / m
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


def _log_variance_loss(
    importance: ImportanceFunction,
    paths: SuccessPaths,
    select: torch.Tensor,
    params: LangevinParameters,
    free: torch.Tensor,
    in_b: torch.Tensor,
    boundary_weight: float,
) -> torch.Tensor:
    """Var[ln W(Γ) − ln I(x₀)] over successful paths, plus (ln I)² on B.

    The variance does not see a constant added to ln I; the term on B fixes it.
    """
    log_w, log_i0 = path_log_weights(importance, paths, select, params, free)
    loss = (log_w - log_i0).var()
    if boundary_weight > 0 and in_b.shape[0]:
        loss = loss + boundary_weight * (importance.log_importance(in_b) ** 2).mean()
    return loss


def _cross_entropy_loss(
    importance: ImportanceFunction,
    paths: SuccessPaths,
    select: torch.Tensor,
    params: LangevinParameters,
    free: torch.Tensor,
    in_b: torch.Tensor,
    boundary_weight: float,
) -> torch.Tensor:
    """Mean ``ln W_θ(Γ) − ln I_ref(x₀)`` over paths drawn in proportion to their
    weight ratio ``W_ref / I_ref(x₀)``, plus (ln I)² on B.

    The paths so drawn are (approximately) paths of the zero-variance process;
    the mean estimates KL(zero-variance path measure ‖ tilt of I_θ) up to the
    error of ``ln I_ref(x₀)``, which does not depend on θ.
    """
    log_w, _ = path_log_weights(importance, paths, select, params, free)
    loss = (log_w - paths.log_importance_start[select]).mean()
    if boundary_weight > 0 and in_b.shape[0]:
        loss = loss + boundary_weight * (importance.log_importance(in_b) ** 2).mean()
    return loss


def _variational_loss(
    importance: ImportanceFunction,
    states: torch.Tensor,
    weights: torch.Tensor,
    free: torch.Tensor,
    in_a: torch.Tensor,
    in_b: torch.Tensor,
    boundary_weight: float,
) -> torch.Tensor:
    """Σ w |∇I|² / Σ w on states with equilibrium weights, plus I² on A and
    (1 − I)² on B."""
    with torch.enable_grad():
        x = states.detach().requires_grad_(True)
        q = torch.sigmoid(importance.logit(x).to(torch.float64))
        (g,) = torch.autograd.grad(q.sum(), x, create_graph=True)
    g = g.to(torch.float64) * free
    dims = tuple(range(1, states.ndim))
    loss = (weights * (g * g).sum(dims)).sum() / weights.sum()
    if boundary_weight > 0:
        if in_a.shape[0]:
            s_a = importance.logit(in_a).to(torch.float64)
            loss = loss + boundary_weight * (torch.sigmoid(s_a) ** 2).mean()
        if in_b.shape[0]:
            s_b = importance.logit(in_b).to(torch.float64)
            loss = loss + boundary_weight * (torch.sigmoid(-s_b) ** 2).mean()
    return loss


def equilibrium_state_weights(
    importance: ImportanceFunction, sample: PathSample, *, max_log_ratio: float = 20.0
) -> torch.Tensor:
    """Weights that make the visited states of a sample a Boltzmann sample.

    Unbiased excursions from the exit points of A, followed until they reach A
    or B, spend time at x in proportion to ``e^{−βU(x)} (1 − q(x))`` (for
    reversible dynamics, the equilibrium density of states last in A). A state
    recorded on a biased path carries the likelihood ratio ``w`` of its path so
    far; ``w / (1 − I(x))`` with the current I then weights it as a sample of
    ``e^{−βU}``. The ratio is capped at ``e^{max_log_ratio}`` times the median,
    a bias traded for a bounded variance; the weights are normalised to mean 1.
    """
    with torch.no_grad():
        log_one_minus = -torch.nn.functional.softplus(
            importance.logit(sample.states).to(torch.float64)
        )
    log_w = sample.state_log_weight - log_one_minus
    log_w = torch.clamp(log_w, max=float(log_w.median()) + max_log_ratio)
    w = torch.exp(log_w - log_w.max())
    return w / w.mean()


def _settings_digest(data) -> str:
    """A short digest of an array, a dict of tensors or plain JSON data."""
    h = hashlib.sha256()
    if isinstance(data, torch.Tensor):
        data = data.detach().cpu().numpy()
    if isinstance(data, np.ndarray):
        h.update(np.ascontiguousarray(data).tobytes())
    elif isinstance(data, dict) and all(
        isinstance(v, torch.Tensor) for v in data.values()
    ):
        for key in sorted(data):
            h.update(key.encode())
            h.update(np.ascontiguousarray(data[key].detach().cpu().numpy()).tobytes())
    else:
        h.update(json.dumps(data, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _read_checkpoint(path: Path, settings: dict) -> dict:
    try:
        data = torch.load(path, map_location="cpu", weights_only=False)
        saved = data["settings"]
        data["state"]
    except Exception as err:  # noqa: BLE001 - any unreadable file
        raise ValueError(
            f"training checkpoint {path} is unreadable or corrupted ({err}); delete "
            "it to start the training again"
        ) from err
    if data.get("version", 0) > CHECKPOINT_VERSION:
        raise ValueError(
            f"training checkpoint {path} was written by a newer ase_rare "
            f"(version {data['version']}); upgrade ase_rare or delete it"
        )
    if saved != settings:
        differ = sorted(
            k for k in settings.keys() | saved.keys() if saved.get(k) != settings.get(k)
        )
        detail = ", ".join(
            f"{k}: {saved.get(k, '(absent)')!r} in the checkpoint, "
            f"{settings.get(k, '(absent)')!r} now"
            for k in differ
        )
        raise ValueError(
            f"training checkpoint {path} belongs to a training run with other "
            f"arguments ({detail}); call train_importance with the arguments and "
            "the starting importance function of that run to resume it, or use "
            "another checkpoint path (or delete it) to start a new one"
        )
    return data


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
    paths_per_batch: int = 64,
    max_states: int = 8192,
    extra_states=None,
    record_interval: int = 5,
    learning_rate: float = 1e-3,
    boundary_weight: float = 1.0,
    a_weight: float = 0.0,
    a_margin: float = 2.0,
    log_bias_correction: bool = True,
    continuations: str = "unbiased",
    patience: int = 3,
    min_improvement: float = 0.05,
    target_relative_variance: float | None = None,
    restore_best: bool = True,
    kernel: str = "tilt",
    max_steps: int = 20_000,
    n_exit_points: int = 4096,
    seed: int = 0,
    checkpoint: str | os.PathLike | None = None,
    callback: Callable[[int, TrainingHistory], None] | None = None,
    progress: bool = False,
) -> TrainingHistory:
    """Fit an importance function to the committor of the discretised chain.

    Each iteration

    1. draws ``paths_per_iteration`` roots from the exit points and runs one
       biased path from each with the current function (``kernel``), recording
       visited states every ``record_interval`` steps;
    2. measures the relative variance per root of those paths (and ESS, P̂_AB);
    3. runs ``fit_steps`` Adam steps of the chosen loss.

    Losses (``loss=``):

    ``"residual"``
        The fixed-point residual in log space on the recorded states
        x ∉ A∪B::

            [ln I_θ(x) − stopgrad(ln Ẑ(x))]²,   Ẑ(x) = (1/M) Σ_k I(y_k),

        with y_k the end of an unbiased ``lag_steps``-step continuation of x
        (I = 0 if it entered A on the way, 1 if it entered B), ``M =
        n_candidates`` (and ``ln Ẑ`` corrected for its bias, see
        ``log_bias_correction``); plus ``boundary_weight · (ln I)²`` on positions in B
        and ``a_weight · softplus(ln I − c)`` on positions in A, with ``c`` the
        smallest target minus ``a_margin``. With ``lag_steps = 1`` it is zero
        exactly at the committor of the chain with the time step used; longer
        lags have the same fixed point and carry boundary information further
        per step. ``batch_size`` states per optimiser step.
    ``"logvar"``
        The log-variance of path weights over the iteration's successful
        paths, ``Var[ln W_θ(Γ) − ln I_θ(x₀)]``, with ``ln W_θ`` the weight the
        drift tilt of the current parameters gives the recorded path
        (:func:`path_log_weights`), plus ``boundary_weight · (ln I)²`` on B.
        At the committor every successful path of the continuous dynamics
        carries the weight q(x₀), so the loss vanishes there up to the time
        discretisation. It uses the weights, so paths through a channel the
        function underrates (large weights) pull hardest. Alone it is not
        enough: it sees only successes, and a constant I (no drift: unbiased
        paths, all of weight 1) gives it zero too. Trained alone it drifts that
        way — on the 2D system at 2500 K the successes per 512 paths fell from
        318 to 3 in six iterations. Use it with the residual,
        ``"residual+logvar"``, which pins I through the continuations (that
        brought the relative variance per root from 160 to 2.4 there, with the
        channel split of the grid, where the residual alone had learned one
        channel). It needs successful paths: with fewer than two it is left out
        of the iteration (a ``RuntimeWarning`` says so). ``paths_per_batch``
        paths per optimiser step.
    ``"cross_entropy"``
        ``mean ln W_θ(Γ) − ln I_ref(x₀)`` over ``paths_per_batch`` successful
        paths drawn with probability ∝ ``W_ref / I_ref(x₀)`` (``ref``: the
        function that sampled them), plus the term on B. The drawn paths stand
        for paths of the zero-variance process, and the loss estimates the KL
        divergence of the tilt of I_θ from it (up to a θ-free constant); in the
        drift it is a weighted least-squares fit of ``σ ∇ln I`` to the
        recorded displacements. Unlike the log-variance it penalises failures
        (through the normalisation of the biased measure), but its minibatches
        are as noisy as the weights are spread.
    ``"variational"``
        The Kolmogorov functional ``Σ w |∇I|² / Σ w`` on the recorded states,
        with ``w`` from :func:`equilibrium_state_weights`, plus
        ``boundary_weight`` times ``I²`` on A and ``(1 − I)²`` on B. Its
        minimiser is the committor, but it weighs errors in I, not in ln I:
        where q is exponentially small (next to A, where the estimator's
        variance arises) it barely constrains ln I.

    The loop stops after ``iterations`` or when the relative variance per root
    has not dropped by a factor ``1 − min_improvement`` below its best for
    ``patience`` iterations, or, with ``target_relative_variance``, as soon as
    an iteration measures at most that.

    Parameters
    ----------
    importance : ImportanceFunction
        Trained in place (any importance function with parameters: an MLP, a
        SchNet network, ...). Its ``temperature_K`` is set to ``temperature_K``.
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
    loss : {"residual", "logvar", "cross_entropy", "variational"} or a sum
        Several joined by "+" are added (the term on B counted once).
    iterations, paths_per_iteration : int
    n_candidates : int
        M, continuations per state for Ẑ (``"residual"``; also the candidates
        per step of ``kernel="candidates"``).
    lag_steps : int
        Steps of each continuation (``"residual"``).
    fit_steps, learning_rate : int, float
        Adam steps per iteration and step size.
    batch_size : int
        States per optimiser step (``"residual"``, ``"variational"``).
    paths_per_batch : int
        Successful paths per optimiser step (``"logvar"``).
    max_states : int
        States kept per iteration (a uniform subsample of those recorded).
    extra_states : array ``(S, N, 3)`` in Å, optional
        More states for the residual: each iteration up to ``max_states`` of
        them, drawn anew, are fitted beside the recorded ones (those in A or B
        are dropped). States from an unbiased run at a higher temperature
        (:func:`unbiased_states`) cover channels the function's own paths do not
        visit; without them the residual cannot learn such a channel.
    record_interval : int
    boundary_weight : float
        Weight of the boundary terms (see the losses).
    a_weight, a_margin : float
        Weight and margin of the one-sided term in A (``"residual"``). Off by
        default: the condition I = 0 on A already enters every target exactly
        (through the continuations that end in A), and the extra term,
        measured on the 2D two-channel system, pushed ln I down far too steeply
        next to A.
    log_bias_correction : bool
        Add ``Var[I(y)] / (2 M Ẑ²)`` to the target ``ln Ẑ`` (``"residual"``):
        the logarithm of an average of M samples is low by that much on
        average, and without the correction the fixed point of the loss is not
        the committor (on the 2D system at 2500 K it sat at a logit 1.2-1.3
        times too large with 10-step continuations).
    continuations : {"unbiased", "tilted"}
        How the residual's continuations run. ``"unbiased"``: plain dynamics,
        so where q is tiny (next to A) nearly every continuation falls into A
        and the target ``ln Ẑ`` is noisy or, when all M do, missing — such
        states are left out of the fit. ``"tilted"``: biased by the kernel and
        the function as it stands at the start of the iteration, each with
        its exact weight, ``Ẑ = (1/M) Σ W_k I(y_k)``: the same expectation,
        with a relative variance that vanishes as I approaches the committor.
        Each step of a tilted continuation costs a network gradient.
    patience : int
    min_improvement : float
    target_relative_variance : float, optional
        Stop as soon as the measured relative variance per root is at most
        this (the function that measured it is left in place).
    restore_best : bool
        Leave the function with the smallest measured relative variance.
    kernel : {"tilt", "candidates"}
        Biased kernel for the paths.
    max_steps : int
        Step cap per path.
    n_exit_points : int
        Exit points of the flux run made when ``flux`` is not given.
    seed : int
    checkpoint : str or Path, optional
        After every iteration, write the whole state of the training here
        (network, optimiser, random streams, history, best function) to a
        temporary file renamed over the old one. If the file exists when the
        training starts, the training resumes from it and ends exactly as an
        uninterrupted run would (the same history apart from the times, and
        bitwise the same network, on the same machine and thread count). A
        checkpoint written with other arguments or another starting function
        is refused. Pass the importance function as it was when that training
        started (rebuilt with the same seed), not as a killed run left it.
    callback : callable, optional
        ``callback(iteration, history)`` after every iteration (and after its
        checkpoint).
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    TrainingHistory

    Raises
    ------
    FloatingPointError
        When the importance function returns NaN (at the roots, along the paths
        or in the loss), naming where.

    Notes
    -----
    The relative variance is measured on fresh paths before each fit, so the
    function left in place (the best one) has been measured, never
    extrapolated. The measurement is noisy when successes are few; increase
    ``paths_per_iteration`` when the history jumps.

    Training only sees states its own paths visit. With several channels, a
    function that has learned one of them sends few paths through the others;
    the path losses do not correct it there, and the rare paths that take them
    carry large weights: the estimate stays unbiased but heavy-tailed, and a
    relative variance measured on a few hundred roots underestimates the true
    one (on the 2D system at 2500 K a function that had learned the lower
    channel only measured 17 per root on 2000 roots, and its rate was half the
    true one). When the missing channel still gets a few paths per iteration,
    the log-variance term pulls it back through their large weights; when it
    gets none, nothing in the paths can. Then give the residual states from an
    unbiased run at a higher temperature (``extra_states``,
    :func:`unbiased_states`), or start from a function trained at a higher
    temperature (:func:`warm_start`), where the channels are found by the
    dynamics themselves. ``examples/compare_losses.py`` measures both.
    """
    if not loss or any(part not in LOSSES for part in loss.split("+")):
        raise ValueError(
            f"loss must be one of {LOSSES}, or several joined by '+'; got {loss!r}"
        )
    for name, value in (
        ("iterations", iterations),
        ("paths_per_iteration", paths_per_iteration),
        ("n_candidates", n_candidates),
        ("lag_steps", lag_steps),
        ("fit_steps", fit_steps),
        ("batch_size", batch_size),
        ("paths_per_batch", paths_per_batch),
        ("record_interval", record_interval),
        ("patience", patience),
    ):
        if value < 1:
            raise ValueError(f"{name} must be >= 1; got {value}")
    if continuations not in CONTINUATIONS:
        raise ValueError(
            f"continuations must be one of {CONTINUATIONS}; got {continuations!r}"
        )
    if not any(p.requires_grad for p in importance.parameters()):
        raise ValueError(
            f"{type(importance).__name__} has no trainable parameters; train an "
            "MLPImportance, a SchNetImportance or another network"
        )

    from ase_rare.potentials.adapter import as_batched

    params = LangevinParameters(timestep / units.fs, temperature_K, friction)
    potential = as_batched(start_atoms.calc, start_atoms)
    checkpoint = Path(checkpoint) if checkpoint is not None else None

    settings = {
        "importance": type(importance).__name__,
        "importance_hparams": _settings_digest(importance.hparams),
        "initial_state": _settings_digest(importance.state_dict()),
        "start_positions": _settings_digest(start_atoms.positions),
        "flux": "measured" if flux is None else _settings_digest(_as_points(flux)),
        "temperature_K": temperature_K,
        "timestep_fs": params.timestep_fs,
        "friction": friction,
        "loss": loss,
        "iterations": iterations,
        "paths_per_iteration": paths_per_iteration,
        "n_candidates": n_candidates,
        "lag_steps": lag_steps,
        "fit_steps": fit_steps,
        "batch_size": batch_size,
        "paths_per_batch": paths_per_batch,
        "max_states": max_states,
        "extra_states": None
        if extra_states is None
        else _settings_digest(np.asarray(extra_states, dtype=np.float64)),
        "record_interval": record_interval,
        "learning_rate": learning_rate,
        "boundary_weight": boundary_weight,
        "a_weight": a_weight,
        "a_margin": a_margin,
        "log_bias_correction": log_bias_correction,
        "continuations": continuations,
        "patience": patience,
        "min_improvement": min_improvement,
        "target_relative_variance": target_relative_variance,
        "restore_best": restore_best,
        "kernel": kernel,
        "max_steps": max_steps,
        "n_exit_points": n_exit_points if flux is None else None,
        "seed": seed,
    }
    saved = None
    if checkpoint is not None and checkpoint.exists():
        saved = _read_checkpoint(checkpoint, settings)
    if saved is not None:
        # The exit points of the interrupted run: no second flux run.
        exit_points = saved["exit_points"]
    else:
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
    free = sampler.free_mask(exit_points.shape[1])
    extra = _checked_extra_states(extra_states, exit_points, sampler)
    generator = torch.Generator().manual_seed(seed + 13)
    optimizer = torch.optim.Adam(importance.parameters(), lr=learning_rate)
    history = TrainingHistory()
    best = (math.inf, -1, copy.deepcopy(importance.state_dict()))
    reference, last_improvement = math.inf, 0
    first_iteration, stopped = 0, False
    if saved is not None:
        state = saved["state"]
        importance.load_state_dict(state["importance"])
        optimizer.load_state_dict(state["optimizer"])
        sampler.generator.set_state(state["sampler_rng"])
        generator.set_state(state["rng"])
        history = TrainingHistory(**state["history"])
        best = tuple(state["best"])
        reference, last_improvement = state["reference"], state["last_improvement"]
        first_iteration, stopped = state["next_iteration"], state["stopped"]
        if state["finished"]:
            importance.temperature_K = temperature_K
            return history

    def save(next_iteration: int, finished: bool = False) -> None:
        if checkpoint is None:
            return
        state = {
            "importance": importance.state_dict(),
            "optimizer": optimizer.state_dict(),
            "sampler_rng": sampler.generator.get_state(),
            "rng": generator.get_state(),
            "history": history.as_dict(),
            "best": best,
            "reference": reference,
            "last_improvement": last_improvement,
            "next_iteration": next_iteration,
            "stopped": stopped,
            "finished": finished,
        }
        save_atomic(
            {
                "version": CHECKPOINT_VERSION,
                "settings": settings,
                "exit_points": exit_points,
                "state": state,
            },
            checkpoint,
            "training checkpoint",
        )

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=iterations, initial=first_iteration, desc="training", unit="iter"
        )
    iteration = first_iteration
    while iteration < iterations and not stopped:
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
            record_paths=any(part in PATH_LOSSES for part in loss.split("+")),
        )
        stats = sample.statistics()
        rel_var = stats["rel_var"]
        if rel_var < best[0]:
            best = (rel_var, iteration, copy.deepcopy(importance.state_dict()))
        if rel_var < reference * (1 - min_improvement) or (
            math.isinf(reference) and math.isfinite(rel_var)
        ):
            reference, last_improvement = rel_var, iteration
        reached = (
            target_relative_variance is not None and rel_var <= target_relative_variance
        )

        # A function that already meets the target is left as it is.
        step, skipped = None, []
        if not reached:
            step, skipped = _fitter(
                loss,
                importance,
                sampler,
                sample,
                params=params,
                free=free,
                generator=generator,
                n_candidates=n_candidates,
                lag_steps=lag_steps,
                batch_size=batch_size,
                paths_per_batch=paths_per_batch,
                boundary_weight=boundary_weight,
                a_weight=a_weight,
                a_margin=a_margin,
                log_bias_correction=log_bias_correction,
                extra=None
                if extra is None
                else _subsample(extra, max_states, generator),
                continuations_kind=continuations,
            )
        losses = []
        if skipped:
            warnings.warn(
                f"iteration {iteration}: {_n_successes(sample)} successful "
                f"path(s); the {' and '.join(skipped)} loss needs at least 2, so "
                f"{'nothing was' if step is None else 'only the rest was'} "
                "fitted. Start from a function that reaches B (trained with "
                "loss='residual', or warm_start from a higher temperature) or "
                "sample more paths_per_iteration.",
                RuntimeWarning,
                stacklevel=2,
            )
        for j in range(fit_steps if step is not None else 0):
            value = step()
            if not bool(torch.isfinite(value)):
                raise _nan_error(
                    importance,
                    f"the {loss} loss is {float(value.detach())} at iteration "
                    f"{iteration}, optimiser step {j}",
                )
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
            losses.append(float(value.detach()))

        history.loss.append(float(np.mean(losses)) if losses else math.nan)
        history.relative_variance_per_root.append(rel_var)
        history.effective_sample_size.append(stats["ess"])
        history.success_probability.append(stats["p"])
        history.success_probability_se.append(stats["p_se"])
        history.n_successes.append(_n_successes(sample))
        history.n_step_capped.append(int((sample.status == STEP_CAP).sum()))
        history.n_states.append(int(sample.states.shape[0]))
        history.wall_time_s.append(time.perf_counter() - t_wall)
        history.cpu_time_s.append(time.process_time() - t_cpu)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(rel_var=f"{rel_var:.3g}", loss=f"{history.loss[-1]:.3g}")

        if reached or iteration - last_improvement >= patience:
            history.stopped_early = iteration + 1 < iterations
            history.target_reached = reached
            stopped = True
        iteration += 1
        save(iteration)
        if callback is not None:
            callback(iteration - 1, history)
    if bar is not None:
        bar.close()

    history.best_iteration = best[1]
    if restore_best and best[1] >= 0:
        importance.load_state_dict(best[2])
    importance.temperature_K = temperature_K
    save(iteration, finished=True)
    return history


def _n_successes(sample: PathSample) -> int:
    return int((sample.status == REACHED_B).sum())


def _fitter(
    loss: str,
    importance: ImportanceFunction,
    sampler: PathSampler,
    sample: PathSample,
    *,
    params: LangevinParameters,
    free: torch.Tensor,
    generator: torch.Generator,
    n_candidates: int,
    lag_steps: int,
    batch_size: int,
    paths_per_batch: int,
    boundary_weight: float,
    a_weight: float,
    a_margin: float,
    log_bias_correction: bool,
    extra: torch.Tensor | None = None,
    continuations_kind: str = "unbiased",
) -> tuple[Callable[[], torch.Tensor] | None, list[str]]:
    """The iteration's data for ``loss`` and a function giving one minibatch loss.

    A loss of several parts joined by "+" is their sum (the term on B counted
    once). Returns the function (None when no part has anything to fit) and
    the parts left out for want of successful paths.
    """
    n_states = sample.states.shape[0]
    # The residual may fit more states than the paths recorded.
    residual_states = (
        sample.states if extra is None else torch.cat([sample.states, extra])
    )

    def boundary(positions):
        return _subsample(positions, batch_size, generator)

    def state_batch(n=n_states):
        return torch.randint(n, (min(batch_size, n),), generator=generator)

    steps, skipped = [], []
    for k, part in enumerate(loss.split("+")):
        b_weight = boundary_weight if k == 0 else 0.0
        if part == "residual":
            continuations = lagged_endpoints(
                sampler,
                residual_states,
                n_candidates=n_candidates,
                lag_steps=lag_steps,
                tilted=continuations_kind == "tilted",
            )

            def step(continuations=continuations, b_weight=b_weight):
                batch = state_batch(residual_states.shape[0])
                endpoints, hit_a, hit_b, log_w = continuations
                return _residual_loss(
                    importance,
                    residual_states[batch],
                    endpoints[:, batch],
                    hit_a[:, batch],
                    hit_b[:, batch],
                    log_w[:, batch],
                    boundary(sample.in_A),
                    boundary(sample.in_B),
                    b_weight,
                    a_weight,
                    a_margin,
                    log_bias_correction,
                )

        elif part in PATH_LOSSES:
            paths = sample.paths
            if paths.n_paths < 2:
                skipped.append(part)
                continue
            if part == "logvar":

                def step(paths=paths, b_weight=b_weight):
                    select = torch.randperm(paths.n_paths, generator=generator)
                    return _log_variance_loss(
                        importance,
                        paths,
                        select[:paths_per_batch],
                        params,
                        free,
                        boundary(sample.in_B),
                        b_weight,
                    )

            else:
                log_ratio = paths.log_weight - paths.log_importance_start
                ratio = torch.exp(log_ratio - log_ratio.max())

                def step(paths=paths, ratio=ratio, b_weight=b_weight):
                    select = torch.multinomial(
                        ratio, paths_per_batch, replacement=True, generator=generator
                    )
                    return _cross_entropy_loss(
                        importance,
                        paths,
                        select,
                        params,
                        free,
                        boundary(sample.in_B),
                        b_weight,
                    )

        else:
            weights = equilibrium_state_weights(importance, sample)

            def step(weights=weights, b_weight=b_weight):
                batch = state_batch()
                return _variational_loss(
                    importance,
                    sample.states[batch],
                    weights[batch],
                    free,
                    boundary(sample.in_A),
                    boundary(sample.in_B),
                    b_weight,
                )

        steps.append(step)
    if not steps:
        return None, skipped
    if len(steps) == 1:
        return steps[0], skipped
    return (lambda: sum(step() for step in steps)), skipped


def _checked_extra_states(extra_states, exit_points, sampler) -> torch.Tensor | None:
    if extra_states is None:
        return None
    x = torch.as_tensor(np.asarray(extra_states), dtype=torch.float64)
    if x.ndim != 3 or x.shape[1:] != exit_points.shape[1:]:
        raise ValueError(
            f"extra_states must be positions (S, {exit_points.shape[1]}, 3) like the "
            f"exit points; got shape {tuple(x.shape)}"
        )
    in_a, in_b = sampler._regions(x)
    x = x[~(in_a | in_b)]
    if x.shape[0] == 0:
        raise ValueError("every one of the extra_states lies in A or B")
    return x


def unbiased_states(
    start_atoms: Atoms,
    A: Region,
    B: Region,
    *,
    temperature_K: float,
    timestep: float,
    friction: float = 1.0,
    n_states: int = 20_000,
    n_walkers: int = 256,
    record_interval: int = 20,
    min_steps_out: int = 0,
    max_steps: int = 1_000_000,
    seed: int = 0,
) -> torch.Tensor:
    """States outside A and B visited by unbiased dynamics started in A.

    For ``train_importance(extra_states=...)``: at a temperature where
    transitions are frequent, they cover every channel. Walkers that reach B are
    put back in A. Every ``record_interval`` steps the positions of the walkers
    that have been out of A for at least ``min_steps_out`` steps are kept (a
    positive value skips the many states just outside A), until ``n_states``
    are collected or after ``max_steps`` steps.

    Parameters
    ----------
    start_atoms : Atoms
        A configuration inside A with the calculator attached.
    temperature_K, timestep, friction
        In K, ASE time units and eV·fs/Å².

    Returns
    -------
    tensor ``(S, N, 3)`` in Å, ``S <= n_states``.
    """
    from ase_rare.bruteforce import BruteForce

    engine = BruteForce(
        start_atoms,
        A,
        B,
        timestep=timestep,
        temperature_K=temperature_K,
        friction=friction,
        n_walkers=n_walkers,
        seed=seed,
        restart_in_A=True,
    )
    out_of_a = torch.zeros(n_walkers, dtype=torch.long)
    kept, count = [], 0
    for step in range(max_steps):
        engine.step()
        out_of_a = torch.where(engine.in_a, 0, out_of_a + 1)
        if (step + 1) % record_interval:
            continue
        _, in_b = engine._regions(engine.x)
        pick = (out_of_a >= max(min_steps_out, 1)) & ~in_b
        if bool(pick.any()):
            kept.append(engine.x[pick].clone())
            count += int(pick.sum())
        if count >= n_states:
            break
    if not kept:
        raise ValueError(
            f"no walker spent {min_steps_out} steps out of A in {max_steps} steps; "
            "raise the temperature or lower min_steps_out"
        )
    return torch.cat(kept)[:n_states]


def rescale_logit(importance: ImportanceFunction, factor: float) -> None:
    """Multiply the logit ``s(x)`` of an importance function by ``factor``, in place.

    Supported: functions with ``output_scale`` and ``output_offset`` parameters
    (:class:`~ase_rare.importance.SchNetImportance`), a final ``nn.Linear``
    in ``net`` (:class:`~ase_rare.importance.MLPImportance`), a ``grid`` of
    logits (:class:`~ase_rare.importance.GridImportance`) and the reverse of any
    of these.
    """
    from ase_rare.importance.base import ReversedImportance

    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"the logit factor must be a positive number; got {factor}")
    with torch.no_grad():
        if isinstance(importance, ReversedImportance):
            rescale_logit(importance.forward_function, factor)
        elif hasattr(importance, "output_scale") and hasattr(
            importance, "output_offset"
        ):
            importance.output_scale.mul_(factor)
            importance.output_offset.mul_(factor)
        elif isinstance(getattr(importance, "net", None), torch.nn.Sequential) and (
            isinstance(importance.net[-1], torch.nn.Linear)
        ):
            importance.net[-1].weight.mul_(factor)
            importance.net[-1].bias.mul_(factor)
        elif isinstance(getattr(importance, "grid", None), torch.Tensor):
            importance.grid.mul_(factor)
        else:
            raise TypeError(
                f"cannot rescale the logit of a {type(importance).__name__}: it has "
                "no output_scale/output_offset parameters, no final nn.Linear in "
                "`net` and no `grid`; warm-start it with rescale_logit=False"
            )


def warm_start(
    importance: ImportanceFunction,
    temperature_K_old: float | None,
    temperature_K_new: float,
    *,
    rescale_logit: bool = True,
) -> ImportanceFunction:
    """A copy of a trained importance function, prepared for another temperature.

    Near A the committor is as small as ``exp(−βΔE)``, so its logit scales
    roughly with β = 1/k_B T; with ``rescale_logit`` the logit of the copy is
    the old one times ``T_old / T_new``. Train the copy with a few iterations of
    :func:`train_importance` at ``temperature_K_new`` before production.

    Parameters
    ----------
    importance : ImportanceFunction
        Left unchanged.
    temperature_K_old : float or None
        The temperature it was trained at, in K; None takes
        ``importance.temperature_K``.
    temperature_K_new : float
        In K.
    rescale_logit : bool

    Examples
    --------
    >>> from ase_rare.importance import MLPImportance
    >>> f = MLPImportance(1, coordinates=[(0, 0), (0, 1)], hidden=(4,),
    ...                   temperature_K=2000.0)
    >>> g = warm_start(f, None, 1000.0)
    >>> import torch
    >>> x = torch.zeros((1, 1, 3), dtype=torch.float64)
    >>> bool(torch.isclose(g.logit(x), 2 * f.logit(x))), g.temperature_K
    (True, 1000.0)
    """
    old = importance.temperature_K if temperature_K_old is None else temperature_K_old
    if old is None and rescale_logit:
        raise ValueError(
            f"the {type(importance).__name__} does not say which temperature it "
            "was trained at; pass temperature_K_old"
        )
    for name, value in (
        ("temperature_K_old", old),
        ("temperature_K_new", temperature_K_new),
    ):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive temperature in K; got {value}")
    new = copy.deepcopy(importance)
    if rescale_logit:
        _rescale(new, old / temperature_K_new)
    new.temperature_K = temperature_K_new
    return new


_rescale = rescale_logit


def _subsample(x: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    if x.shape[0] <= n:
        return x
    return x[torch.randperm(x.shape[0], generator=generator)[:n]]


def _as_points(flux) -> np.ndarray:
    from ase_rare.bruteforce import BruteForceResult

    if isinstance(flux, BruteForceResult):
        if flux.exit_points is None or len(flux.exit_points) == 0:
            raise ValueError("the flux run holds no exit points")
        return np.asarray(flux.exit_points)
    return np.asarray(flux)


def _exit_points(flux, start_atoms, A, B, **kwargs) -> torch.Tensor:
    from ase_rare.estimate import measure_flux

    if flux is None:
        flux = measure_flux(start_atoms, A, B, **kwargs)
    points = torch.as_tensor(_as_points(flux), dtype=torch.float64)
    if points.ndim != 3 or points.shape[-1] != 3 or points.shape[0] == 0:
        raise ValueError(
            f"exit points must be an array (R, N, 3) with R >= 1; got shape "
            f"{tuple(points.shape)}"
        )
    return points
