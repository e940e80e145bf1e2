"""A small, deterministic training run for the kill-and-resume test.

Usage::

    python training_kill_worker.py CHECKPOINT OUT_DIR [ITERATION_DELAY_S]

Trains the MLP of :func:`build` on the hot 2D two-channel system with
``CHECKPOINT``, appends the index of every iteration this process finishes to
``OUT_DIR/iterations.txt`` and, at the end, writes the history to
``OUT_DIR/history.json`` and the network to ``OUT_DIR/network.pt``. A positive
``ITERATION_DELAY_S`` sleeps that long after every iteration, so that a kill
can land between or inside iterations; sleeping changes no number.
"""

import json
import sys
import time
from pathlib import Path

import torch
from ase import units

from ase_rare.estimate import measure_flux
from ase_rare.importance import MLPImportance
from ase_rare.systems import two_channel_system
from ase_rare.training import train_importance

T_K = 4000.0
DT = 0.02 * units.fs
ITERATIONS = 8


def build():
    """System, flux run and network; every input is seeded, so every process
    builds the same."""
    torch.set_num_threads(1)
    system = two_channel_system()
    flux = measure_flux(
        system.start_A,
        system.A,
        system.B,
        timestep=DT,
        temperature_K=T_K,
        n_exit_points=64,
        n_walkers=32,
        seed=3,
    )
    torch.manual_seed(0)
    net = MLPImportance(1, coordinates=[(0, 0), (0, 1)], hidden=(8, 8))
    return system, flux, net


def train(checkpoint=None, callback=None, **overrides):
    """The training run; returns the network and its history."""
    system, flux, net = build()
    settings = dict(
        temperature_K=T_K,
        timestep=DT,
        flux=flux,
        iterations=ITERATIONS,
        paths_per_iteration=128,
        n_candidates=4,
        lag_steps=5,
        fit_steps=40,
        learning_rate=1e-2,
        patience=ITERATIONS,
        max_steps=5000,
        seed=4,
        checkpoint=checkpoint,
        callback=callback,
    )
    settings.update(overrides)
    history = train_importance(net, system.start_A, system.A, system.B, **settings)
    return net, history


def main(argv: list[str]) -> None:
    checkpoint, out = Path(argv[0]), Path(argv[1])
    delay = float(argv[2]) if len(argv) > 2 else 0.0
    log = open(out / "iterations.txt", "a")

    def finished(iteration, history):
        log.write(f"{iteration}\n")
        log.flush()
        if delay > 0:
            time.sleep(delay)

    net, history = train(checkpoint, finished)
    log.close()
    (out / "history.json").write_text(json.dumps(history.as_dict()))
    torch.save(net.state_dict(), out / "network.pt")


if __name__ == "__main__":
    main(sys.argv[1:])
