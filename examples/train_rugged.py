"""Train the shipped 14D importance function ``rugged-2000K``.

An MLP on all 14 coordinates of the rugged potential (x, y of its 7
pseudo-atoms) is trained from scratch at 2000 K (the variational loss for 8
iterations, then up to 16 of residual + log-variance with the states of an
unbiased 3000 K run added to the residual) until the relative variance per
root measured on 512 paths reaches the target; Δt = 0.005 fs. The function is
saved as ``ase_rare/data/importance/rugged-2000K.pt`` and measured on 2000
fresh roots. ``--ladder 2000 1500 1000`` carries it further down by warm
starts (logit rescaled by T_old / T_new) and saves the last; with 8 iterations
per step that ladder ended at a relative variance of 370 and one channel at
1000 K, so the shipped function stops at 2000 K and ``examples/rugged_rates.py``
does the transfer with its own measurement.

    python examples/train_rugged.py        # about 6 min on one core

Load the result with ``ase_rare.data.load_importance("rugged-2000K")``.
Writes data/references/train_rugged.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _training_2d import stage, strict_json
from _training_14d import (
    TIMESTEP_FS,
    TRAINING,
    describe,
    measure,
    new_network,
    train,
    train_from_scratch,
)

from ase_rare.data import IMPORTANCE_DIR
from ase_rare.training import warm_start

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ladder", type=float, nargs="+", default=[2000])
    p.add_argument("--target", type=float, default=3.0, help="relative variance/root")
    p.add_argument("--max-iterations", type=int, default=16)
    p.add_argument("--roots", type=int, default=2000)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--out", default=str(IMPORTANCE_DIR / "rugged-2000K.pt"))
    p.add_argument(
        "--json", default=str(HERE.parent / "data" / "references" / "train_rugged.json")
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    t0, cpu0 = time.perf_counter(), time.process_time()

    first, *lower = args.ladder
    net = new_network(args.seed)
    print(f"{first:g} K from scratch", flush=True)
    stages = train_from_scratch(
        net, first, seed=args.seed, target=args.target,
        max_iterations=args.max_iterations,
    )  # fmt: skip
    for s in stages:
        print(f"  {s['loss']}: {s['iterations']} iterations, {s['cpu_s']:.0f} CPU s")
    steps = [{"temperature_K": first, "stages": stages}]
    t_old = first
    for t_new in lower:
        print(f"{t_old:g} K -> {t_new:g} K", flush=True)
        net = warm_start(net, t_old, t_new)
        history, cpu = train(
            net,
            t_new,
            loss="residual+logvar",
            iterations=args.max_iterations,
            seed=args.seed + 1,
            target_relative_variance=args.target,
        )
        print(history.table(), flush=True)
        steps.append(
            {"temperature_K": t_new, "stages": [stage("residual+logvar", history, cpu)]}
        )
        t_old = t_new
    training_cpu = time.process_time() - cpu0

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    net.save(args.out)
    m = measure(net, t_old, args.roots)
    print(describe(f"{t_old:g} K, {args.roots} roots", m), flush=True)
    report = {
        "file": Path(args.out).name,
        "temperature_K": t_old,
        "timestep_fs": TIMESTEP_FS,
        "hparams": net.hparams,
        "training": TRAINING,
        "target_relative_variance_per_root": args.target,
        "seed": args.seed,
        "ladder": steps,
        "training_cpu_s": training_cpu,
        "measured": m,
        "wall_time_s": time.perf_counter() - t0,
    }
    Path(args.json).write_text(json.dumps(strict_json(report), indent=2))
    print(f"wrote {args.out} and {args.json} ({report['wall_time_s']:.0f} s)")


if __name__ == "__main__":
    main()
