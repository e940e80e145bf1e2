"""Committor data next to A from interface splitting, and a fit to it.

Next to A the committor is exponentially small: labels "B before A" of an
unbiased run are all 0 there and say nothing about ln q, which is where the
variance of an importance-sampled rate arises. Splitting on interfaces of the
importance function itself (as in forward flux sampling) measures it:

* the interfaces are levels ``λ_0 < λ_1 < … < λ_K`` of ``ln I``;
* from states on level k (the exit points for k = 0) ``trials`` unbiased
  runs each go until they cross ``λ_{k+1}`` (or enter B) or fall back into A;
  the fraction that crossed is a binomial sample of
  ``p_k(x) = q(x) / q̄_{k+1}``, the probability of reaching the next level;
* the crossing points are the states of level k + 1; above the last level the
  committor ``q̄`` is shot directly (runs to A or B).

The product of the mean crossing fractions is the forward-flux estimate of
P_AB, and ``ln q̄_{k+1}`` turns every crossing count into information on
``ln q(x)`` of its own state. :func:`fit_interface_states` fits ``ln I`` by
the binomial likelihood of those counts. The interfaces need not be good for
the data to be right — unbiased runs decide where they go, through every
channel — but the better ``ln I`` orders states, the less each level costs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms, units

from ase_rare.bruteforce import shoot
from ase_rare.importance.base import ImportanceFunction
from ase_rare.kernels import LangevinParameters, draw_noise, overdamped_step
from ase_rare.regions import Region


@dataclass
class InterfaceStates:
    """States on interfaces of ``ln I`` with their crossing counts.

    Attributes
    ----------
    states : tensor ``(S, N, 3)``
        Positions in Å, level by level.
    n_crossed : tensor ``(S,)``
        Of ``trials`` unbiased runs from each state, how many crossed the next
        level (or entered B) before A.
    trials : int
    log_q_next : tensor ``(S,)``
        ``ln q̄`` of the crossing points of the state's level: the committor
        the crossing fraction is relative to.
    level : tensor ``(S,)``
    interfaces : list of float
        The levels of ``ln I``.
    crossing_fractions : list of float
        Mean crossing fraction of each level.
    top_committor : float
        Shot committor above the last level.
    walker_steps : int
        Unbiased steps of the level trials (the top shots are not counted).
    """

    states: torch.Tensor
    n_crossed: torch.Tensor
    trials: int
    log_q_next: torch.Tensor
    level: torch.Tensor
    interfaces: list[float]
    crossing_fractions: list[float]
    top_committor: float
    walker_steps: int

    @property
    def log_success_probability(self) -> float:
        """ln P_AB from the exit points: the forward-flux product."""
        return sum(math.log(p) for p in self.crossing_fractions) + math.log(
            self.top_committor
        )

    def __len__(self) -> int:
        return len(self.states)


def interface_states(
    importance: ImportanceFunction,
    start_atoms: Atoms,
    A: Region,
    B: Region,
    exit_points,
    *,
    temperature_K: float,
    timestep: float,
    friction: float = 1.0,
    trials: int = 8,
    states_per_level: int = 2048,
    spacing: float = 1.5,
    first_quantile: float = 0.9,
    top: float = -1.0,
    top_states: int = 1024,
    top_shots: int = 8,
    max_steps: int = 20_000,
    seed: int = 0,
) -> InterfaceStates:
    """Split from the exit points on interfaces of ``ln I`` (see the module).

    Parameters
    ----------
    importance : ImportanceFunction
        Its ``ln I`` defines the interfaces (not changed).
    start_atoms : Atoms
        A configuration in A with the calculator attached.
    A, B : Region
    exit_points : array ``(R, N, 3)``
        Exit points of a flux run, in Å (:func:`ase_rare.estimate.measure_flux`).
    temperature_K, timestep, friction
        In K, ASE time units and eV·fs/Å².
    trials : int
        Unbiased runs per state and level.
    states_per_level : int
        States drawn (uniformly) from each level's crossing points.
    spacing : float
        Distance of the levels in ``ln I``; the first lies ``spacing`` above
        the ``first_quantile`` of ``ln I`` over the exit points, the last at
        ``top``.
    top_states, top_shots : int
        Crossing points of the last level shot to A or B, and shots each.
    max_steps : int
        Step cap of a trial; one still undecided after it counts as not crossed.
    seed : int
    """
    from ase_rare.potentials.adapter import as_batched

    if trials < 1 or states_per_level < 1 or not spacing > 0:
        raise ValueError(
            f"interface splitting needs trials >= 1, states_per_level >= 1 and "
            f"spacing > 0; got {trials}, {states_per_level}, {spacing}"
        )
    potential = as_batched(start_atoms.calc, start_atoms)
    planar = bool(getattr(potential, "planar", False))
    params = LangevinParameters(timestep / units.fs, temperature_K, friction)
    generator = torch.Generator().manual_seed(seed)
    x0 = torch.as_tensor(np.asarray(exit_points), dtype=torch.float64)
    with torch.no_grad():
        log_i0 = importance.log_importance(x0)
    first = float(torch.quantile(log_i0, first_quantile)) + spacing
    levels = [float(v) for v in np.arange(first, top, spacing)] + [float(top)]

    steps = 0
    kept, counts, level_of, fractions = [], [], [], []
    states = x0
    for k, target in enumerate(levels):
        pick = torch.randperm(len(states), generator=generator)[:states_per_level]
        start = states[pick]
        y = start.repeat_interleave(trials, 0).clone()
        with torch.no_grad():
            crossed = importance.log_importance(y) >= target
        alive = ~crossed
        for _ in range(max_steps):
            idx = alive.nonzero().squeeze(1)
            if len(idx) == 0:
                break
            ya = y[idx]
            _, forces = potential.batch_energy_forces(ya)
            ya = overdamped_step(ya, forces, draw_noise(ya, planar, generator), params)
            steps += len(idx)
            y[idx] = ya
            in_a, in_b = A.contains(ya), B.contains(ya)
            with torch.no_grad():
                up = (importance.log_importance(ya) >= target) | in_b
            crossed[idx[up & ~in_a]] = True
            alive[idx[up | in_a]] = False
        n = crossed.reshape(-1, trials).sum(1)
        kept.append(start)
        counts.append(n)
        level_of.append(torch.full((len(start),), k))
        fractions.append(float(n.sum()) / (len(start) * trials))
        if fractions[-1] == 0.0:
            raise RuntimeError(
                f"no trial crossed level {k} (ln I = {target:.2f}); use a smaller "
                "spacing or more trials"
            )
        states = y[crossed]

    pick = torch.randperm(len(states), generator=generator)[:top_states]
    shots = states[pick].repeat_interleave(top_shots, 0)
    reached_b = shoot(potential, A, B, shots, params, generator, 400_000, planar=planar)
    q_top = float(reached_b.double().mean())
    if q_top == 0.0:
        raise RuntimeError(
            f"no shot from above ln I = {top} reached B; raise top (closer to 0)"
        )
    # ln q̄ of each level's crossing points, from the top down.
    log_q_next, acc = [0.0] * len(levels), math.log(q_top)
    for k in reversed(range(len(levels))):
        log_q_next[k] = acc
        acc += math.log(fractions[k])
    return InterfaceStates(
        states=torch.cat(kept),
        n_crossed=torch.cat(counts),
        trials=trials,
        log_q_next=torch.cat(
            [torch.full((len(s),), log_q_next[k]) for k, s in enumerate(kept)]
        ).to(torch.float64),
        level=torch.cat(level_of),
        interfaces=levels,
        crossing_fractions=fractions,
        top_committor=q_top,
        walker_steps=steps,
    )


def interface_log_likelihood(
    importance: ImportanceFunction, data: InterfaceStates, index: torch.Tensor
) -> torch.Tensor:
    """Mean binomial log-likelihood per trial of the crossing counts in ``index``.

    The probability to cross is ``p(x) = I(x) / q̄_next``, capped below 1.
    """
    log_i = importance.log_importance(data.states[index])
    log_p = torch.clamp(log_i - data.log_q_next[index], max=-1e-9)
    log_not = torch.log(-torch.expm1(log_p))
    n = data.n_crossed[index].to(torch.float64)
    return (n * log_p + (data.trials - n) * log_not).mean() / data.trials


def fit_interface_states(
    importance: ImportanceFunction,
    data: InterfaceStates,
    *,
    steps: int = 300,
    batch_size: int = 512,
    learning_rate: float = 3e-4,
    seed: int = 0,
) -> list[float]:
    """Adam on the negative binomial log-likelihood of the crossing counts.

    Returns the loss of every step. The importance function is fitted in place.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(importance.parameters(), lr=learning_rate)
    losses = []
    for _ in range(steps):
        batch = torch.randint(
            len(data), (min(batch_size, len(data)),), generator=generator
        )
        loss = -interface_log_likelihood(importance, data, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                "the interface likelihood became NaN or inf; lower the learning rate"
            )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def train_on_interfaces(
    importance: ImportanceFunction,
    start_atoms: Atoms,
    A: Region,
    B: Region,
    exit_points,
    *,
    temperature_K: float,
    timestep: float,
    friction: float = 1.0,
    rounds: int = 4,
    fit_steps: int = 300,
    learning_rate: float = 3e-4,
    seed: int = 0,
    **splitting,
) -> list[dict]:
    """Rounds of :func:`interface_states` with the current function, then a fit.

    ``splitting`` goes to :func:`interface_states`. Returns a record per round:
    the forward-flux estimate of P_AB, the crossing fractions, the final loss,
    walker-steps and seconds.
    """
    record = []
    for r in range(rounds):
        t0 = time.perf_counter()
        data = interface_states(
            importance,
            start_atoms,
            A,
            B,
            exit_points,
            temperature_K=temperature_K,
            timestep=timestep,
            friction=friction,
            seed=seed + 1000 * r,
            **splitting,
        )
        losses = fit_interface_states(
            importance,
            data,
            steps=fit_steps,
            learning_rate=learning_rate,
            seed=seed + 1000 * r + 1,
        )
        record.append(
            dict(
                round=r,
                success_probability=math.exp(data.log_success_probability),
                interfaces=data.interfaces,
                crossing_fractions=data.crossing_fractions,
                top_committor=data.top_committor,
                n_states=len(data),
                walker_steps=data.walker_steps,
                loss=losses[-1] if losses else math.nan,
                wall_time_s=time.perf_counter() - t0,
            )
        )
    return record
