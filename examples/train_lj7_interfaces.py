"""Refine the LJ7 600 K function on interface-splitting data next to A.

The cross-entropy fit of ``examples/train_lj7.py`` leaves ln I next to A
unshaped (every label there is 0). Each round here splits from the exit points
on levels of the function's own ln I (:mod:`ase_rare.interfaces`: unbiased
trials from each level to the next, the crossing points seed the next level,
the committor above the last level is shot) and fits ln I to the crossing
counts by their binomial likelihood. Before and after, the function is
measured on the same 4000 roots (``examples/compare_lj7_functions.py``'s
measurement); the result replaces ``--save`` only if its relative variance per
root is smaller.

    python examples/train_lj7_interfaces.py [--rounds 8]

Writes ``ase_rare/data/importance/lj7-600K.pt`` (when improved) and
``data/references/lj7_interfaces.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from ase import units
from compare_lj7_functions import measure

from ase_rare.data import IMPORTANCE_DIR, load_importance
from ase_rare.estimate import measure_flux
from ase_rare.interfaces import train_on_interfaces
from ase_rare.systems import lj7_system

HERE = Path(__file__).resolve().parent
DT_FS = 0.005


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--start", default="lj7-600K")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--fit-steps", type=int, default=300)
    p.add_argument("--learning-rate", type=float, default=3e-4)
    p.add_argument("--roots", type=int, default=4000, help="for the measurement")
    p.add_argument("--seed", type=int, default=31)
    p.add_argument("--save", default=str(IMPORTANCE_DIR / "lj7-600K.pt"))
    p.add_argument(
        "--out",
        default=str(HERE.parent / "data" / "references" / "lj7_interfaces.json"),
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    system = lj7_system(modes=True)
    importance = load_importance(args.start)
    temperature = importance.temperature_K
    dt = DT_FS * units.fs

    def flux(n, seed):
        return measure_flux(
            system.start_A,
            system.A,
            system.B,
            timestep=dt,
            temperature_K=temperature,
            n_exit_points=n,
            seed=seed,
            compile=True,
        )

    check = flux(args.roots, 77)
    before = measure(importance, system, check, args.roots, 78)
    print(f"before: {before}", flush=True)
    training_flux = flux(4096, args.seed)
    t_train = time.perf_counter()
    rounds = train_on_interfaces(
        importance,
        system.start_A,
        system.A,
        system.B,
        training_flux.exit_points,
        temperature_K=temperature,
        timestep=dt,
        rounds=args.rounds,
        fit_steps=args.fit_steps,
        learning_rate=args.learning_rate,
        seed=args.seed,
        trials=args.trials,
    )
    train_s = time.perf_counter() - t_train
    for r in rounds:
        print(
            f"round {r['round']}: P_AB (forward flux) {r['success_probability']:.3e}, "
            f"{len(r['interfaces'])} levels, loss {r['loss']:.4f}, "
            f"{r['wall_time_s']:.0f} s",
            flush=True,
        )
    after = measure(importance, system, check, args.roots, 78)
    print(f"after: {after}", flush=True)
    improved = bool(after["relative_variance"] < before["relative_variance"])
    if improved:
        importance.save(args.save)
    record = {
        "start": args.start,
        "temperature_K": temperature,
        "timestep_fs": DT_FS,
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "before": before,
        "after": after,
        "rounds": rounds,
        "training_wall_time_s": train_s,
        "wall_time_s": time.perf_counter() - t0,
        "saved": improved,
    }
    Path(args.out).write_text(json.dumps(record, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
