"""Brute-force rates: many unbiased walkers stepped as one torch batch."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from ase import Atoms, units

from ase_rare.channels import ChannelClassifier
from ase_rare.constraints import free_coordinates_of, free_mask_tensor
from ase_rare.kernels import (
    LangevinParameters,
    check_stability,
    draw_noise,
    overdamped_step,
)
from ase_rare.potentials.adapter import as_batched
from ase_rare.potentials.base import DTYPE
from ase_rare.regions import Region, check_disjoint, check_not_both
from ase_rare.results import JSONResult, json_safe


def ratio_with_error(events: np.ndarray, times: np.ndarray) -> tuple[float, float]:
    """Rate ``Σ events / Σ times`` and its standard error over independent walkers.

    The error is the delta-method (ratio-estimator) error with one independent
    sample per walker: ``SE² = n/(n−1) Σ (N_i − r T_i)² / (Σ T_i)²``. It needs no
    assumption that events are Poisson, only that walkers are independent.
    """
    events = np.asarray(events, float)
    times = np.asarray(times, float)
    total = times.sum()
    if total <= 0:
        return math.nan, math.nan
    rate = events.sum() / total
    n = len(events)
    if n < 2:
        return rate, math.nan
    resid = events - rate * times
    se = math.sqrt(n / (n - 1) * (resid**2).sum()) / total
    return rate, se


@dataclass
class BruteForceResult(JSONResult):
    """Rates and fluxes measured by unbiased dynamics.

    Every time is in fs and every rate in fs⁻¹. Errors are standard errors over
    independent walkers (delta-method ratio estimator, see
    :func:`ratio_with_error`). "Time from A" is the time during which a walker's
    last visited region was A; the A -> B rate is transitions per unit time from
    A, which equals flux × probability of success (``J_A · P_AB``).

    ``exit_points`` (Å) and ``exit_walkers`` are a uniform sample of the exits
    and the walker each came from. A weighted-ensemble flux run
    (:mod:`ase_rare.flux_splitting`) keeps every exit with its weight
    (``exit_weights``, mean 1; None means 1 each), the sub-ensemble it came
    from in ``exit_walkers``, its bin edges in ``splitting_levels``, the
    evaluations of I it made, and as ``n_transitions`` the (unweighted)
    arrivals in B. A result passed through
    :func:`ase_rare.estimate.importance_roots` holds the drawn roots instead,
    with ``root_log_weights`` (ln of each root's weight ``1 / (N p)``), the
    size of the pool they were drawn from and the relative standard error of
    the pool's own mean committor (estimated with ``I`` in its place).
    """

    temperature_K: float
    timestep_fs: float
    friction_eV_fs_per_A2: float
    n_walkers: int
    steps_per_walker: int
    walker_steps: int
    simulated_time_fs: float
    time_from_A_fs: float
    n_transitions: int
    rate_per_fs: float
    rate_se_per_fs: float
    n_exits: int
    flux_per_fs: float
    flux_se_per_fs: float
    success_probability: float
    restart_in_A: bool
    time_from_B_fs: float = 0.0
    n_reverse_transitions: int = 0
    reverse_rate_per_fs: float = math.nan
    reverse_rate_se_per_fs: float = math.nan
    channel_names: list[str] = field(default_factory=list)
    channel_counts: list[int] = field(default_factory=list)
    wall_time_s: float = 0.0
    seed: int | None = None
    exit_points: np.ndarray | None = field(default=None, repr=False)
    exit_walkers: np.ndarray | None = field(default=None, repr=False)
    exit_weights: np.ndarray | None = field(default=None, repr=False)
    root_log_weights: np.ndarray | None = field(default=None, repr=False)
    root_pool_size: int = 0
    root_pool_relative_se: float = 0.0
    splitting_levels: list[float] = field(default_factory=list)
    importance_evaluations: int = 0

    @property
    def mean_first_passage_time_fs(self) -> float:
        """1 / rate, in fs."""
        return 1.0 / self.rate_per_fs if self.rate_per_fs > 0 else math.inf

    @property
    def channel_fractions(self) -> dict[str, float]:
        total = sum(self.channel_counts)
        return {
            n: (c / total if total else math.nan)
            for n, c in zip(self.channel_names, self.channel_counts, strict=True)
        }

    def to_dict(self) -> dict:
        """JSON-ready dictionary (exit points are left out; save them separately)."""
        d = asdict(self)
        for key in ("exit_points", "exit_walkers", "exit_weights", "root_log_weights"):
            d.pop(key)
        return json_safe(d)

    def summary(self) -> str:
        rows = [
            ("temperature", f"{self.temperature_K:g} K"),
            ("timestep", f"{self.timestep_fs:g} fs"),
            ("friction", f"{self.friction_eV_fs_per_A2:g} eV·fs/Å²"),
            ("walkers × steps", f"{self.n_walkers} × {self.steps_per_walker}"),
            ("simulated time", f"{self.simulated_time_fs:.4g} fs"),
            ("transitions A→B", f"{self.n_transitions}"),
            (
                "rate A→B",
                f"{self.rate_per_fs:.4g} ± {self.rate_se_per_fs:.2g} fs⁻¹ "
                f"({self.rate_per_fs / units.fs * units.s:.4g} s⁻¹)",
            ),
            (
                "flux out of A, J_A",
                f"{self.flux_per_fs:.4g} ± {self.flux_se_per_fs:.2g} fs⁻¹",
            ),
            ("exits from A", f"{self.n_exits}"),
            ("P_AB = transitions/exits", f"{self.success_probability:.4g}"),
        ]
        if not self.restart_in_A:
            rows.append(
                (
                    "rate B→A",
                    f"{self.reverse_rate_per_fs:.4g} ± "
                    f"{self.reverse_rate_se_per_fs:.2g} fs⁻¹ "
                    f"({self.n_reverse_transitions} transitions)",
                )
            )
        for name, frac in self.channel_fractions.items():
            rows.append((f"channel {name}", f"{100 * frac:.1f} %"))
        rows.append(("wall time", f"{self.wall_time_s:.1f} s"))
        return self.table(rows)


class _ExitReservoir:
    """A uniform random sample of fixed size from a stream of exit points.

    Each point keeps the index of the walker it came from: exits of one walker
    are correlated, those of different walkers independent.
    """

    def __init__(self, capacity: int, shape, generator: torch.Generator):
        self.capacity = int(capacity)
        self.buffer = torch.empty((self.capacity, *shape), dtype=DTYPE)
        self.walker = torch.empty(self.capacity, dtype=torch.long)
        self.seen = 0
        self.generator = generator

    def add(self, points: torch.Tensor, walkers: torch.Tensor) -> None:
        m = points.shape[0]
        if m == 0 or self.capacity == 0:
            return
        points = points.detach().cpu()
        walkers = walkers.detach().cpu()
        fill = min(max(self.capacity - self.seen, 0), m)
        if fill:
            self.buffer[self.seen : self.seen + fill] = points[:fill]
            self.walker[self.seen : self.seen + fill] = walkers[:fill]
        rest, rest_walkers = points[fill:], walkers[fill:]
        if rest.shape[0]:
            # Reservoir sampling: item t replaces a random slot with prob K/(t+1);
            # the latest accepted item per slot wins, as in the sequential scheme.
            t = torch.arange(self.seen + fill, self.seen + m, dtype=torch.float64)
            u = torch.rand(len(t), generator=self.generator, dtype=torch.float64)
            accept = u * (t + 1) < self.capacity
            slots = torch.randint(self.capacity, (len(t),), generator=self.generator)[
                accept
            ]
            idx = torch.arange(len(t))[accept]
            if len(idx):
                winner = torch.full((self.capacity,), -1, dtype=torch.long)
                winner.scatter_reduce_(0, slots, idx, reduce="amax")
                hit = winner >= 0
                self.buffer[hit] = rest[winner[hit]]
                self.walker[hit] = rest_walkers[winner[hit]]
        self.seen += m

    def points(self) -> np.ndarray:
        return self.buffer[: min(self.seen, self.capacity)].numpy().copy()

    def walkers(self) -> np.ndarray:
        return self.walker[: min(self.seen, self.capacity)].numpy().copy()


class BruteForce:
    """Unbiased overdamped Langevin dynamics of many walkers as one batch.

    Every walker starts in A. Each step all forces are evaluated in one batched
    call, the shared kernel moves every walker, and regions A and B are checked.
    The engine counts A -> B transitions against the time spent with A as the
    last visited region, counts exits from A (the flux J_A) and keeps a random
    sample of exit points (the first configuration outside A), and, when given a
    channel classifier, which channel each transition took.

    Parameters
    ----------
    atoms : Atoms or sequence of Atoms
        Starting configuration(s), each inside A, with a calculator attached to
        the first. One ``Atoms`` is copied to every walker; a sequence is used
        cyclically.
    A, B : Region
        Disjoint regions.
    timestep : float
        Time step in ASE time units (e.g. ``0.005 * ase.units.fs``).
    temperature_K : float
        Temperature in K.
    friction : float
        Friction γ in eV·fs/Å².
    n_walkers : int
        Number of walkers stepped together.
    seed : int
        Seed of the noise; the same seed gives the same result.
    restart_in_A : bool
        If True (default), a walker that reaches B is put back at its starting
        configuration, so every walker measures A -> B first passages. If False,
        walkers run on and the B -> A rate is measured too (useful when B is a
        basin the walkers come back from within the run).
    channels : ChannelClassifier, optional
        Labels each transition with a channel.
    max_exit_points : int
        Size of the uniform random sample of exit points kept.
    device : str
        Torch device of the batch.
    check_timestep : bool
        Refuse a timestep at or above the stability bound ``2γ/λ_max``.
    compile : bool
        Compile the arithmetic of a step (forces, kernel, region tests) with
        ``torch.compile``. Several times faster for the built-in potentials at
        large batches; the first step then takes tens of seconds to compile
        (cached afterwards) and needs a C++ compiler. Results are the same to
        round-off.
    """

    def __init__(
        self,
        atoms: Atoms | Sequence[Atoms],
        A: Region,
        B: Region,
        *,
        timestep: float,
        temperature_K: float,
        friction: float = 1.0,
        n_walkers: int = 1024,
        seed: int = 0,
        restart_in_A: bool = True,
        channels: ChannelClassifier | None = None,
        max_exit_points: int = 10000,
        device: str = "cpu",
        check_timestep: bool = True,
        compile: bool = False,
    ):
        starts = [atoms] if isinstance(atoms, Atoms) else list(atoms)
        if not starts:
            raise ValueError("no starting configuration given")
        if n_walkers < 1:
            raise ValueError(f"n_walkers must be >= 1; got {n_walkers}")
        self.params = LangevinParameters(timestep / units.fs, temperature_K, friction)
        self.potential = as_batched(starts[0].calc, starts[0])
        self.planar = bool(getattr(self.potential, "planar", False))
        self.A, self.B = A, B
        check_disjoint(A, B)
        self.device = torch.device(device)

        x0 = torch.stack(
            [torch.as_tensor(np.asarray(a.positions), dtype=DTYPE) for a in starts]
        )
        self.potential.check_positions(x0)
        in_a = A.contains(x0)
        if not bool(in_a.all()):
            bad = int(torch.nonzero(~in_a)[0, 0])
            raise ValueError(
                f"starting configuration {bad} is not inside region A ({A!r}); "
                "start every walker in A (e.g. at the minimum that A surrounds)"
            )
        check_not_both(in_a, B.contains(x0))
        self.stability_bound_fs = (
            check_stability(self.potential, x0[0], self.params, self.planar)
            if check_timestep
            else None
        )

        # Frozen coordinates get neither force nor noise.
        self._free = None
        if starts[0].constraints:
            self._free = free_mask_tensor(
                free_coordinates_of(starts[0], self.planar), device=self.device
            )

        idx = torch.arange(n_walkers) % len(starts)
        self.start = x0[idx].to(self.device)
        self.x = self.start.clone()
        self.n_walkers = n_walkers
        self.seed = seed
        self.restart_in_A = restart_in_A
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        cpu_gen = torch.Generator().manual_seed(seed + 1)
        self.exits = _ExitReservoir(max_exit_points, x0.shape[1:], cpu_gen)
        self.channels = channels
        self.tracker = channels.tracker(self.x) if channels is not None else None
        n_ch = len(channels.names) if channels is not None else 0

        w = n_walkers
        zeros = lambda dtype=torch.long: torch.zeros(  # noqa: E731
            w, dtype=dtype, device=self.device
        )
        self.history = zeros(torch.int8)  # 0: last in A, 1: last in B
        self.in_a = torch.ones(w, dtype=torch.bool, device=self.device)
        self.steps_from_a = zeros()
        self.steps_from_b = zeros()
        self.n_ab = zeros()
        self.n_ba = zeros()
        self.n_exit = zeros()
        self.channel_counts = torch.zeros(
            (w, max(n_ch, 1)), dtype=torch.long, device=self.device
        )
        self.nsteps = 0
        self.wall_time_s = 0.0
        self._advance = (
            torch.compile(self._move, dynamic=False) if compile else self._move
        )

    def reset_statistics(self) -> None:
        """Forget all counts and times, keeping the walkers where they are.

        Call it after an equilibration run so that the statistics do not feel
        the walkers' common starting point.
        """
        for t in (
            self.steps_from_a,
            self.steps_from_b,
            self.n_ab,
            self.n_ba,
            self.n_exit,
            self.channel_counts,
        ):
            t.zero_()
        self.exits = _ExitReservoir(
            self.exits.capacity, self.x.shape[1:], self.exits.generator
        )
        self.nsteps = 0
        self.wall_time_s = 0.0

    def _regions(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        A, B = self.A, self.B
        if A.cv is not None and A.cv == B.cv:
            values = A.cv(x)
            return A.contains_values(values), B.contains_values(values)
        return A.contains(x), B.contains(x)

    def _move(self, x: torch.Tensor, noise: torch.Tensor):
        """Forces, the kernel and the region tests: the arithmetic of a step."""
        energy, forces = self.potential.batch_energy_forces(x)
        if self._free is not None:
            forces = forces * self._free
        new = overdamped_step(x, forces, noise, self.params)
        in_a, in_b = self._regions(new)
        return new, in_a, in_b, energy

    def step(self) -> None:
        """Advance every walker by one step."""
        x = self.x
        noise = draw_noise(x, self.planar, self.generator)
        if self._free is not None:
            noise = noise * self._free
        new, in_a, in_b, energy = self._advance(x, noise)
        check_not_both(in_a, in_b)

        from_a = self.history == 0
        from_b = ~from_a
        self.steps_from_a += from_a
        self.steps_from_b += from_b

        exit_a = self.in_a & ~in_a
        if bool(exit_a.any()):
            self.n_exit += exit_a
            self.exits.add(new[exit_a], exit_a.nonzero().squeeze(1))

        if self.tracker is not None:
            self.tracker.update(x, new, energy)

        arrive_b = from_a & in_b
        if bool(arrive_b.any()):
            self.n_ab += arrive_b
            if self.tracker is not None:
                label = self.tracker.labels()
                hit = arrive_b & (label >= 0)
                self.channel_counts[hit, label[hit]] += 1
                self.tracker.restart(arrive_b)
            if self.restart_in_A:
                new = torch.where(arrive_b[:, None, None], self.start, new)
                in_a = in_a | arrive_b
            else:
                self.history[arrive_b] = 1

        arrive_a = from_b & in_a
        if bool(arrive_a.any()):
            self.n_ba += arrive_a
            if self.tracker is not None:
                self.tracker.restart(arrive_a)
        self.history[in_a] = 0

        self.in_a = in_a
        self.x = new
        self.nsteps += 1

    def run(
        self,
        steps: int | None = None,
        *,
        transitions: int | None = None,
        max_steps: int | None = None,
        check_interval: int = 1000,
    ) -> BruteForceResult:
        """Run for ``steps`` steps, or until ``transitions`` A -> B transitions.

        With ``transitions`` the run stops at the first multiple of
        ``check_interval`` steps at which the count is reached (or at
        ``max_steps``), so the result does not depend on timing.
        """
        if steps is None and transitions is None:
            raise ValueError("give steps=, transitions=, or both")
        t0 = time.perf_counter()
        done = 0
        limit = steps if steps is not None else max_steps
        while True:
            if limit is not None and done >= limit:
                break
            chunk = (
                check_interval if limit is None else min(check_interval, limit - done)
            )
            for _ in range(chunk):
                self.step()
            if not torch.isfinite(self.x).all():
                raise FloatingPointError(
                    f"walker positions became NaN or inf by step {self.nsteps}; "
                    f"the timestep ({self.params.timestep_fs:g} fs) is too large"
                )
            done += chunk
            if transitions is not None and int(self.n_ab.sum()) >= transitions:
                break
        self.wall_time_s += time.perf_counter() - t0
        return self.result()

    def result(self) -> BruteForceResult:
        """Rates, fluxes and counts accumulated so far."""
        dt = self.params.timestep_fs
        t_a = self.steps_from_a.cpu().numpy() * dt
        t_b = self.steps_from_b.cpu().numpy() * dt
        n_ab = self.n_ab.cpu().numpy()
        rate, rate_se = ratio_with_error(n_ab, t_a)
        flux, flux_se = ratio_with_error(self.n_exit.cpu().numpy(), t_a)
        rev, rev_se = ratio_with_error(self.n_ba.cpu().numpy(), t_b)
        n_exits = int(self.n_exit.sum())
        names = list(self.channels.names) if self.channels is not None else []
        counts = self.channel_counts.sum(0).cpu().tolist() if names else []
        return BruteForceResult(
            temperature_K=self.params.temperature_K,
            timestep_fs=dt,
            friction_eV_fs_per_A2=self.params.friction,
            n_walkers=self.n_walkers,
            steps_per_walker=self.nsteps,
            walker_steps=self.nsteps * self.n_walkers,
            simulated_time_fs=self.nsteps * self.n_walkers * dt,
            time_from_A_fs=float(t_a.sum()),
            n_transitions=int(n_ab.sum()),
            rate_per_fs=rate,
            rate_se_per_fs=rate_se,
            n_exits=n_exits,
            flux_per_fs=flux,
            flux_se_per_fs=flux_se,
            success_probability=int(n_ab.sum()) / n_exits if n_exits else math.nan,
            restart_in_A=self.restart_in_A,
            time_from_B_fs=float(t_b.sum()),
            n_reverse_transitions=int(self.n_ba.sum()),
            reverse_rate_per_fs=rev,
            reverse_rate_se_per_fs=rev_se,
            channel_names=names,
            channel_counts=[int(c) for c in counts],
            wall_time_s=self.wall_time_s,
            seed=self.seed,
            exit_points=self.exits.points(),
            exit_walkers=self.exits.walkers(),
        )


def brute_force_rate(atoms, A, B, **kwargs) -> BruteForceResult:
    """Convenience: build a :class:`BruteForce` engine and run it.

    Keyword arguments ``steps``, ``transitions``, ``max_steps`` and
    ``check_interval`` go to :meth:`BruteForce.run`, the rest to the engine.
    """
    run_keys = ("steps", "transitions", "max_steps", "check_interval")
    run_kwargs = {k: kwargs.pop(k) for k in run_keys if k in kwargs}
    return BruteForce(atoms, A, B, **kwargs).run(**run_kwargs)


def shoot(
    potential,
    A: Region,
    B: Region,
    starts: torch.Tensor,
    params: LangevinParameters,
    generator: torch.Generator,
    max_steps: int,
    *,
    planar: bool | None = None,
    undecided: str = "raise",
) -> torch.Tensor:
    """Run unbiased walkers from ``starts`` ``(W, N, 3)`` until each enters A or B.

    Returns a boolean ``(W,)`` tensor, True where B was reached first: its mean is
    a brute-force estimate of the committor of the starting configurations (of
    the discrete chain at ``params.timestep_fs``), with binomial error. A walker
    still undecided after ``max_steps`` raises RuntimeError, or with
    ``undecided="fail"`` counts as not having reached B.
    """
    if undecided not in ("raise", "fail"):
        raise ValueError(f"undecided must be 'raise' or 'fail'; got {undecided!r}")
    if planar is None:
        planar = bool(getattr(potential, "planar", False))
    x = starts.clone()
    reached_b = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    alive = torch.ones(len(x), dtype=torch.bool, device=x.device)
    for _ in range(max_steps):
        idx = alive.nonzero().squeeze(1)
        if len(idx) == 0:
            return reached_b
        xa = x[idx]
        _, forces = potential.batch_energy_forces(xa)
        xa = overdamped_step(xa, forces, draw_noise(xa, planar, generator), params)
        x[idx] = xa
        in_a, in_b = A.contains(xa), B.contains(xa)
        reached_b[idx[in_b]] = True
        alive[idx[in_a | in_b]] = False
    if undecided == "fail":
        return reached_b
    raise RuntimeError(
        f"{int(alive.sum())} walkers are undecided after {max_steps} steps; raise "
        "max_steps"
    )
