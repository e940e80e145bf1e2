"""Shared pieces of the 14D rugged training examples (not a script).

The rugged system, seeded flux runs, a fresh MLP on all 14 coordinates, training
with shared settings and the importance-sampled measurement of a function.
"""

from __future__ import annotations

import time
from functools import cache

import torch
from _training_2d import stage
from ase import units

from ase_rare.estimate import estimate_rate, measure_flux
from ase_rare.importance import MLPImportance
from ase_rare.systems import rugged_system
from ase_rare.training import TrainingHistory, train_importance, unbiased_states

SYSTEM = rugged_system()
#: Δt of every 14D run here, fs: the extra modes are stiff (stable below 0.0178).
TIMESTEP_FS = 0.005
TRAINING = dict(
    paths_per_iteration=512,
    n_candidates=8,
    lag_steps=20,
    fit_steps=100,
    learning_rate=3e-3,
)


@cache
def flux(temperature_K: float, n_exit_points: int = 4096, seed: int = 3):
    return measure_flux(
        SYSTEM.start_A,
        SYSTEM.A,
        SYSTEM.B,
        timestep=TIMESTEP_FS * units.fs,
        temperature_K=temperature_K,
        n_exit_points=n_exit_points,
        seed=seed,
    )


#: CPU seconds of each :func:`hot_states` run, by temperature.
HOT_STATES_CPU_S: dict[float, float] = {}


@cache
def hot_states(temperature_K: float = 3000.0, n_states: int = 20_000, seed: int = 1):
    """States of an unbiased run at a high temperature, out of A for 0.5 fs or
    more (``train_importance(extra_states=...)``)."""
    cpu = time.process_time()
    states = unbiased_states(
        SYSTEM.start_A,
        SYSTEM.A,
        SYSTEM.B,
        temperature_K=temperature_K,
        timestep=TIMESTEP_FS * units.fs,
        n_states=n_states,
        min_steps_out=100,
        seed=seed,
    )
    HOT_STATES_CPU_S[temperature_K] = time.process_time() - cpu
    return states


def new_network(seed: int = 0) -> MLPImportance:
    """An MLP on (x, y) of the 7 pseudo-atoms: x1 ... x14."""
    torch.manual_seed(seed)
    return MLPImportance(7, hidden=(48, 48))


def train(
    importance, temperature_K: float, *, loss: str, iterations: int, seed: int, **kw
) -> tuple[TrainingHistory, float]:
    settings = dict(TRAINING, patience=iterations)
    settings.update(kw)
    cpu = time.process_time()
    history = train_importance(
        importance,
        SYSTEM.start_A,
        SYSTEM.A,
        SYSTEM.B,
        temperature_K=temperature_K,
        timestep=TIMESTEP_FS * units.fs,
        flux=flux(temperature_K),
        loss=loss,
        iterations=iterations,
        seed=seed,
        **settings,
    )
    return history, time.process_time() - cpu


def train_from_scratch(
    importance,
    temperature_K,
    *,
    seed,
    target,
    max_iterations,
    hot_temperature_K: float = 3000.0,
):
    """Variational loss for 8 iterations, then residual + log-variance with the
    states of an unbiased run at ``hot_temperature_K`` added to the residual."""
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


def measure(importance, temperature_K: float, n_roots: int = 2000, seed: int = 11):
    """Importance-sampled rate and channel split; ``cpu_s`` of the paths only."""
    roots = flux(temperature_K, 4096, 5)
    cpu = time.process_time()
    r = estimate_rate(
        SYSTEM.start_A,
        importance,
        SYSTEM.A,
        SYSTEM.B,
        timestep=TIMESTEP_FS * units.fs,
        temperature_K=temperature_K,
        n_roots=n_roots,
        flux=roots,
        channels=SYSTEM.channels,
        seed=seed,
    )
    up = r.channel_names.index("upper")
    return {
        "temperature_K": temperature_K,
        "timestep_fs": TIMESTEP_FS,
        "n_roots": n_roots,
        "rate_per_fs": r.rate_per_fs,
        "rate_se_per_fs": r.rate_se_per_fs,
        "flux_per_fs": r.flux_per_fs,
        "success_probability": r.success_probability,
        "upper_fraction": r.channel_fractions[up],
        "upper_fraction_se": r.channel_fractions_se[up],
        "naive_upper_fraction": r.naive_channel_fractions[up],
        "naive_rate_per_fs": r.naive_rate_per_fs,
        "relative_variance_per_root": r.relative_variance_per_root,
        "effective_sample_size": r.effective_sample_size,
        "n_successes": r.n_successes,
        "n_step_capped": r.n_step_capped,
        "walker_steps": r.walker_steps,
        "cpu_s": time.process_time() - cpu,
    }


def describe(label: str, m: dict) -> str:
    return (
        f"  {label:<24} k = {m['rate_per_fs']:.4e} ± {m['rate_se_per_fs']:.1e} fs⁻¹ "
        f" upper {m['upper_fraction']:.3f} ± {m['upper_fraction_se']:.3f} "
        f"(naive {m['naive_upper_fraction']:.3f})  rel.var/root "
        f"{m['relative_variance_per_root']:.3g}  paths {m['cpu_s']:.0f} CPU s"
    )
