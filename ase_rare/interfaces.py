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
    committor : tensor ``(S,)``
        Each state's own committor estimate from its descendants: trials into
        B count 1, trials across the level the mean estimate of the state's
        kept crossing points, down to the shots above the last level. It is
        unbiased whatever the interfaces (the labels of
        :func:`fit_interface_committors`), unlike ``exp(log_q_next)``, the
        level mean that the binomial fit assumes for every crossing point.
    top_states : tensor ``(T, N, 3)``
        Crossing points of the last level that were shot, in Å.
    top_committors : tensor ``(T,)``
        Their shot committors.
    orphans : int
        States with crossings of which none was kept (their children's
        estimate is the level mean instead); 0 unless ``states_per_level``
        is below the number of states with a crossing.
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
    committor: torch.Tensor
    top_states: torch.Tensor
    top_committors: torch.Tensor
    orphans: int

    @property
    def log_forward_flux_probability(self) -> float:
        """ln P_AB as the forward-flux product of the crossing fractions."""
        return sum(math.log(p) for p in self.crossing_fractions) + math.log(
            self.top_committor
        )

    @property
    def log_success_probability(self) -> float:
        """ln P_AB: the mean tree committor of the exit points (level 0)."""
        return math.log(float(self.committor[self.level == 0].mean()))

    def level_committor(self, k: int) -> float:
        """Mean tree committor of the states on level ``k``."""
        return float(self.committor[self.level == k].mean())

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
    max_steps: int = 50_000,
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
        Step cap of a trial or shot; one still undecided after it counts as not
        crossed (not reaching B).
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
    # Genealogy for the per-state committor estimates: for every level, the
    # parent (index in the level below) of each state, and per state the number
    # of its trials that entered B and that crossed the level (not into B).
    parent_of, n_into_b, n_level = [torch.full((0,), -1)], [], []
    states, parents = x0, None
    for k, target in enumerate(levels):
        if k == 0:
            pick = torch.randperm(len(states), generator=generator)[:states_per_level]
        else:
            pick = _pick_spread(parents, states_per_level, generator)
            parent_of.append(parents[pick])
        start = states[pick]
        y = start.repeat_interleave(trials, 0).clone()
        with torch.no_grad():
            crossed = importance.log_importance(y) >= target
        into_b = B.contains(y)
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
            into_b[idx[in_b & ~in_a]] = True
            alive[idx[up | in_a]] = False
        n = crossed.reshape(-1, trials).sum(1)
        nb = (crossed & into_b).reshape(-1, trials).sum(1)
        kept.append(start)
        counts.append(n)
        n_into_b.append(nb)
        n_level.append(n - nb)
        level_of.append(torch.full((len(start),), k))
        fractions.append(float(n.sum()) / (len(start) * trials))
        if fractions[-1] == 0.0:
            raise RuntimeError(
                f"no trial crossed level {k} (ln I = {target:.2f}); use a smaller "
                "spacing or more trials"
            )
        onward = crossed & ~into_b
        states = y[onward]
        parents = onward.nonzero().squeeze(1) // trials
        if len(states) == 0:
            raise RuntimeError(
                f"every trial that crossed level {k} went straight into B; "
                "lower top (further from 0) or use a larger spacing"
            )

    pick = _pick_spread(parents, top_states, generator)
    top_x = states[pick]
    shots = top_x.repeat_interleave(top_shots, 0)
    # A shot may wander into another basin (C0, C1) and stay: after the cap
    # it counts as not reaching B, a bias of at most the (tiny) undecided share.
    reached_b = shoot(
        potential,
        A,
        B,
        shots,
        params,
        generator,
        max_steps,
        planar=planar,
        undecided="fail",
    )
    q_top = float(reached_b.double().mean())
    if q_top == 0.0:
        raise RuntimeError(
            f"no shot from above ln I = {levels[-1]} reached B; raise top (closer to 0)"
        )
    top_q = reached_b.reshape(-1, top_shots).double().mean(1)
    # ln q̄ of each level's crossing points, from the top down.
    log_q_next, acc = [0.0] * len(levels), math.log(q_top)
    for k in reversed(range(len(levels))):
        log_q_next[k] = acc
        acc += math.log(fractions[k])
    # Per-state committors from the tree, from the top down: a state's trials
    # into B count 1 each, those across its level the mean committor of its
    # children that were kept (drawn uniformly among its own crossings).
    committors = [None] * len(levels)
    above, above_parent, fallback = top_q, parents[pick], 0
    for k in reversed(range(len(levels))):
        size = len(kept[k])
        total = torch.zeros(size, dtype=torch.float64).index_add_(
            0, above_parent, above
        )
        count = torch.zeros(size, dtype=torch.float64).index_add_(
            0, above_parent, torch.ones_like(above)
        )
        m = n_level[k].to(torch.float64)
        orphan = (count == 0) & (m > 0)
        fallback += int(orphan.sum())
        mean_child = torch.where(count > 0, total / count.clamp(min=1), above.mean())
        committors[k] = (n_into_b[k] + m * mean_child) / trials
        above, above_parent = committors[k], parent_of[k]
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
        committor=torch.cat(committors),
        top_states=top_x,
        top_committors=top_q,
        orphans=fallback,
    )


def _pick_spread(parents: torch.Tensor, size: int, generator) -> torch.Tensor:
    """Up to ``size`` indices of candidates, one per parent first, uniform within.

    Whether a candidate is kept depends only on its parent, never on its own
    future, so the mean over a parent's kept children is an unbiased estimate
    of the mean over all its children.
    """
    order = torch.randperm(len(parents), generator=generator)
    p = parents[order]
    sorted_p, by_parent = torch.sort(p, stable=True)
    first = torch.ones(len(p), dtype=torch.bool)
    first[1:] = sorted_p[1:] != sorted_p[:-1]
    primary = order[by_parent[first]]
    rest = order[by_parent[~first]]
    rest = rest[torch.randperm(len(rest), generator=generator)]
    if len(primary) >= size:
        return primary[torch.randperm(len(primary), generator=generator)[:size]]
    return torch.cat([primary, rest[: size - len(primary)]])


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
    return _adam(
        importance,
        len(data),
        lambda batch: -interface_log_likelihood(importance, data, batch),
        "the interface likelihood",
        steps=steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
    )


def _adam(importance, n, loss_of, what, *, steps, batch_size, learning_rate, seed):
    """Adam on ``loss_of(batch)`` over random batches of ``range(n)``."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(importance.parameters(), lr=learning_rate)
    losses = []
    for _ in range(steps):
        batch = torch.randint(n, (min(batch_size, n),), generator=generator)
        loss = loss_of(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{what} became NaN or inf; lower the learning rate"
            )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


@dataclass
class CommittorLabels:
    """States with unbiased committor estimates and the scale of their level.

    Built from one or more :class:`InterfaceStates` (rounds may be pooled: the
    tree estimates are unbiased whatever function set the interfaces).
    """

    states: torch.Tensor
    committor: torch.Tensor
    scale: torch.Tensor

    @classmethod
    def from_interfaces(cls, *data: InterfaceStates) -> CommittorLabels:
        states, q, scale = [], [], []
        for d in data:
            for k in range(len(d.interfaces)):
                on = d.level == k
                states.append(d.states[on])
                q.append(d.committor[on])
                scale.append(torch.full((int(on.sum()),), d.level_committor(k)))
            states.append(d.top_states)
            q.append(d.top_committors)
            scale.append(torch.full((len(d.top_states),), d.top_committor))
        scale = torch.cat(scale).to(torch.float64)
        if not bool((scale > 0).all()):
            raise ValueError("a level has no state with a committor above 0")
        return cls(torch.cat(states), torch.cat(q).to(torch.float64), scale)

    def __len__(self) -> int:
        return len(self.states)


def committor_deviance(
    importance: ImportanceFunction, labels: CommittorLabels, index: torch.Tensor
) -> torch.Tensor:
    """Mean Poisson deviance of ``I`` from the committor estimates, per level scale.

    ``[I − q̂ − q̂ ln(I / q̂)] / q̄_level``: for each state its minimum over
    ``I`` is at ``I = q̂``, so on average at the true committor (the estimates
    are unbiased); dividing by the level's mean committor weighs the levels
    alike although they lie decades apart. Estimates of 0 pull ``I`` down
    only by ``I / q̄``, which is what keeps this finite where a log loss is not.
    """
    log_i = importance.log_importance(labels.states[index])
    q, s = labels.committor[index], labels.scale[index]
    q_log_q = torch.where(q > 0, q * torch.log(q.clamp(min=1e-300)), 0.0)
    return ((torch.exp(log_i) - q - q * log_i + q_log_q) / s).mean()


def fit_interface_committors(
    importance: ImportanceFunction,
    labels: CommittorLabels,
    *,
    steps: int = 300,
    batch_size: int = 512,
    learning_rate: float = 3e-4,
    seed: int = 0,
) -> list[float]:
    """Adam on :func:`committor_deviance`; returns the loss of every step."""
    return _adam(
        importance,
        len(labels),
        lambda batch: committor_deviance(importance, labels, batch),
        "the committor deviance",
        steps=steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
    )


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
    labels: str = "binomial",
    pool: bool = True,
    callback=None,
    **splitting,
) -> list[dict]:
    """Rounds of :func:`interface_states` with the current function, then a fit.

    ``labels="tree"`` fits every state's own committor estimate
    (:func:`fit_interface_committors`, on the data of all rounds so far when
    ``pool``); ``"binomial"`` fits the crossing counts against the level means
    (:func:`fit_interface_states`, this round's data). ``splitting`` goes to
    :func:`interface_states`. Returns a record per round: the tree and
    forward-flux estimates of P_AB, the crossing fractions, the final loss,
    walker-steps and seconds. ``callback(record)``, if given, is called with
    each round's record as it is finished (it may add keys to it).
    """
    if labels not in ("tree", "binomial"):
        raise ValueError(f"labels must be 'tree' or 'binomial', not {labels!r}")
    record, rounds_data = [], []
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
        fit = dict(
            steps=fit_steps, learning_rate=learning_rate, seed=seed + 1000 * r + 1
        )
        if labels == "tree":
            rounds_data = [*rounds_data, data] if pool else [data]
            target = CommittorLabels.from_interfaces(*rounds_data)
            losses = fit_interface_committors(importance, target, **fit)
        else:
            losses = fit_interface_states(importance, data, **fit)
        record.append(
            dict(
                round=r,
                success_probability=math.exp(data.log_success_probability),
                forward_flux_probability=math.exp(data.log_forward_flux_probability),
                level_committors=[
                    data.level_committor(k) for k in range(len(data.interfaces))
                ],
                orphans=data.orphans,
                interfaces=data.interfaces,
                crossing_fractions=data.crossing_fractions,
                top_committor=data.top_committor,
                n_states=len(data),
                walker_steps=data.walker_steps,
                loss=losses[-1] if losses else math.nan,
                wall_time_s=time.perf_counter() - t0,
            )
        )
        if callback is not None:
            callback(record[-1])
    return record
