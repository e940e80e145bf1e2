"""A small, deterministic ensemble run for the kill-and-resume test.

Usage::

    python ensemble_kill_worker.py CHECKPOINT OUT_DIR [STEP_DELAY_S]

Runs the 2D two-channel ensemble of :func:`build` with ``CHECKPOINT``, appends
the index of every batch this process computes to ``OUT_DIR/computed.txt``
and, at the end, writes the result to ``OUT_DIR/result.json``. A positive
``STEP_DELAY_S`` sleeps that long after every step, so that a kill lands in
the middle of a batch; sleeping changes no number.
"""

import sys
import time
from pathlib import Path

import torch
from ase import units

from ase_rare.ensemble import Branching, Ensemble
from ase_rare.estimate import measure_flux
from ase_rare.importance import GridImportance
from ase_rare.systems import two_channel_system
from ase_rare.theory import solve_grid_tpt

T_K = 2500.0
DT = 0.02 * units.fs
N_ROOTS, ROOTS_PER_BATCH = 48, 8  # six batches


def build(checkpoint=None) -> Ensemble:
    """The ensemble; every input is seeded, so every process builds the same."""
    torch.set_num_threads(1)
    system = two_channel_system()
    grid = solve_grid_tpt(
        system.start_A.calc,
        system.A,
        system.B,
        temperature_K=T_K,
        box=(-2.2, 2.2, -2.2, 2.2),
        spacing=0.04,
    )
    flux = measure_flux(
        system.start_A,
        system.A,
        system.B,
        timestep=DT,
        temperature_K=T_K,
        n_exit_points=N_ROOTS,
        n_walkers=48,
        seed=3,
    )
    return Ensemble(
        system.start_A,
        GridImportance.from_grid_tpt(grid),
        system.A,
        system.B,
        temperature_K=T_K,
        timestep=DT,
        flux=flux,
        n_roots=N_ROOTS,
        roots_per_batch=ROOTS_PER_BATCH,
        branching=Branching(),
        channels=system.channels,
        max_steps=20000,
        seed=7,
        checkpoint=checkpoint,
    )


def main(argv: list[str]) -> None:
    checkpoint, out = Path(argv[0]), Path(argv[1])
    delay = float(argv[2]) if len(argv) > 2 else 0.0
    ensemble = build(checkpoint)
    if delay > 0:
        ensemble.attach_step(time.sleep, 1, delay)
    with open(out / "computed.txt", "a") as log:
        for batch in ensemble.irun():
            log.write(f"{batch.index}\n")
            log.flush()
    ensemble.result().to_json(out / "result.json")


if __name__ == "__main__":
    main(sys.argv[1:])
