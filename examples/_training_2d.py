"""Shared pieces of the 2D training examples (not a script).

The 2D two-channel system, the exact grid TPT references, seeded flux runs, a
fresh MLP importance function, the recipe that trains it from scratch, and the
importance-sampled measurement of a trained function (rate, channel split,
relative variance per root) against the grid.
"""

from __future__ import annotations

import math
import time
from functools import cache

import torch
from ase import units

from ase_rare.estimate import estimate_rate, measure_flux
from ase_rare.importance import MLPImportance
from ase_rare.systems import two_channel_system
from ase_rare.theory import solve_grid_tpt
from ase_rare.training import TrainingHistory, train_importance, unbiased_states

SYSTEM = two_channel_system()
BOX = (-2.2, 2.2, -2.2, 2.2)
#: Time step of every 2D training and measurement here, fs.
TIMESTEP_FS = 0.01
#: Hyper-parameters shared by every training run.
TRAINING = dict(
    paths_per_iteration=512,
    n_candidates=8,
    lag_steps=10,
    fit_steps=100,
    learning_rate=3e-3,
)


@cache
def grid(temperature_K: float, spacing: float = 0.01):
    """Exact (continuous-time) grid TPT solution."""
    return solve_grid_tpt(
        SYSTEM.start_A.calc,
        SYSTEM.A,
        SYSTEM.B,
        temperature_K=temperature_K,
        box=BOX,
        spacing=spacing,
    )


@cache
def flux(
    temperature_K: float,
    n_exit_points: int = 4096,
    seed: int = 3,
    timestep_fs: float = TIMESTEP_FS,
):
    """An unbiased run in A: J_A and exit points (the roots)."""
    return measure_flux(
        SYSTEM.start_A,
        SYSTEM.A,
        SYSTEM.B,
        timestep=timestep_fs * units.fs,
        temperature_K=temperature_K,
        n_exit_points=n_exit_points,
        seed=seed,
    )


@cache
def hot_states(temperature_K: float = 3000.0, n_states: int = 20_000, seed: int = 1):
    """States of an unbiased run at a high temperature, out of A for 0.5 fs or
    more: they cover both channels (``train_importance(extra_states=...)``)."""
    cpu = time.process_time()
    states = unbiased_states(
        SYSTEM.start_A,
        SYSTEM.A,
        SYSTEM.B,
        temperature_K=temperature_K,
        timestep=TIMESTEP_FS * units.fs,
        n_states=n_states,
        min_steps_out=50,
        seed=seed,
    )
    HOT_STATES_CPU_S[temperature_K] = time.process_time() - cpu
    return states


#: CPU seconds of each :func:`hot_states` run, by temperature.
HOT_STATES_CPU_S: dict[float, float] = {}


def new_network(seed: int = 0) -> MLPImportance:
    torch.manual_seed(seed)
    return MLPImportance(1, coordinates=[(0, 0), (0, 1)], hidden=(32, 32))


def train(
    importance,
    temperature_K: float,
    *,
    loss: str,
    iterations: int,
    seed: int,
    timestep_fs: float = TIMESTEP_FS,
    **kw,
) -> tuple[TrainingHistory, float]:
    """One :func:`train_importance` run with the shared settings; (history, CPU s)."""
    settings = dict(TRAINING, patience=iterations)
    settings.update(kw)
    cpu = time.process_time()
    history = train_importance(
        importance,
        SYSTEM.start_A,
        SYSTEM.A,
        SYSTEM.B,
        temperature_K=temperature_K,
        timestep=timestep_fs * units.fs,
        flux=flux(temperature_K, timestep_fs=timestep_fs),
        loss=loss,
        iterations=iterations,
        seed=seed,
        **settings,
    )
    return history, time.process_time() - cpu


def train_from_scratch(
    importance,
    temperature_K: float,
    *,
    seed: int,
    target: float,
    max_iterations: int,
    hot_temperature_K: float = 3000.0,
) -> list[dict]:
    """The from-scratch recipe: 8 iterations of the variational loss (it needs
    no successful path to start), then residual + log-variance, with the states
    of an unbiased run at ``hot_temperature_K`` added to the residual, until the
    measured relative variance per root reaches ``target``."""
    stages = []
    history, cpu = train(
        importance, temperature_K, loss="variational", iterations=8, seed=seed
    )
    stages.append(stage("variational", history, cpu))
    history, cpu = train(
        importance,
        temperature_K,
        loss="residual+logvar",
        iterations=max_iterations,
        seed=seed + 1,
        target_relative_variance=target,
        extra_states=hot_states(hot_temperature_K),
    )
    stages.append(stage("residual+logvar", history, cpu))
    stages[-1]["extra_states"] = {
        "temperature_K": hot_temperature_K,
        "n_states": len(hot_states(hot_temperature_K)),
        "cpu_s": HOT_STATES_CPU_S.get(hot_temperature_K),
    }
    return stages


def stage(loss: str, history: TrainingHistory, cpu_s: float) -> dict:
    return {
        "loss": loss,
        "iterations": history.n_iterations,
        "fitted_iterations": sum(v == v for v in history.loss),  # nan: no fit
        "target_reached": history.target_reached,
        "cpu_s": cpu_s,
        "history": history.as_dict(),
    }


def measure(
    importance,
    temperature_K: float,
    n_roots: int = 2000,
    seed: int = 11,
    timestep_fs: float = TIMESTEP_FS,
) -> dict:
    """Importance-sampled rate and channel split against the grid.

    ``cpu_s`` is the CPU time of the biased paths (the flux run and the grid are
    made, or taken from the cache, before the clock starts).
    """
    g = grid(temperature_K)
    roots = flux(temperature_K, 4096, 5, timestep_fs)
    cpu = time.process_time()
    r = estimate_rate(
        SYSTEM.start_A,
        importance,
        SYSTEM.A,
        SYSTEM.B,
        timestep=timestep_fs * units.fs,
        temperature_K=temperature_K,
        n_roots=n_roots,
        flux=roots,
        channels=SYSTEM.channels,
        seed=seed,
    )
    cpu = time.process_time() - cpu
    up = r.channel_names.index("upper")
    return {
        "timestep_fs": timestep_fs,
        "n_roots": n_roots,
        "rate_per_fs": r.rate_per_fs,
        "rate_se_per_fs": r.rate_se_per_fs,
        "grid_rate_per_fs": g.rate_AB_per_fs,
        "rate_deviation_in_se": (r.rate_per_fs - g.rate_AB_per_fs) / r.rate_se_per_fs
        if r.rate_se_per_fs > 0
        else float("nan"),
        "upper_fraction": r.channel_fractions[up],
        "upper_fraction_se": r.channel_fractions_se[up],
        "grid_upper_fraction": g.channel_fractions["upper"],
        "naive_upper_fraction": r.naive_channel_fractions[up],
        "naive_rate_per_fs": r.naive_rate_per_fs,
        "relative_variance_per_root": r.relative_variance_per_root,
        "effective_sample_size": r.effective_sample_size,
        "n_successes": r.n_successes,
        "n_step_capped": r.n_step_capped,
        "cpu_s": cpu,
    }


def describe(label: str, m: dict) -> str:
    return (
        f"  {label:<28} k = {m['rate_per_fs']:.4e} ± {m['rate_se_per_fs']:.1e} fs⁻¹ "
        f"(grid {m['grid_rate_per_fs']:.4e}, {m['rate_deviation_in_se']:+.1f} SE)  "
        f"upper {m['upper_fraction']:.3f} ± {m['upper_fraction_se']:.3f} "
        f"(grid {m['grid_upper_fraction']:.3f}, naive {m['naive_upper_fraction']:.3f})"
        f"  rel.var/root {m['relative_variance_per_root']:.3g}"
    )


def strict_json(value):
    """NaN and ±inf as None (strict JSON), recursively; numpy scalars as floats."""
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
