"""Transfer of a trained importance function down in temperature, 2D two-channel.

A function trained at 2000 K is carried to 1500 K and from there to 1000 K.
At each new temperature three starts are trained with the same loss
(residual + log-variance) until the relative variance per root measured on the
iteration's 512 paths reaches a target:

* warm start, logit rescaled by T_old / T_new (``warm_start``, the default);
* warm start, logit as it was (``rescale_logit=False``);
* from scratch (8 iterations of the variational loss, which needs no successful
  path to begin with, then the same loss as the others).

Reported per start: iterations and CPU seconds to the target (or that it was
not reached within the cap), and the trained function measured on 2000 fresh
roots: rate and upper-channel fraction against the exact grid TPT values,
relative variance per root. Δt = 0.01 fs throughout (the grid is continuous
time; at 1000 K the difference is within the errors, at 2000 K it is a few %).

    python examples/transfer_2d.py          # ~8 min on one core

Writes data/references/transfer_2d.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _training_2d import (
    TIMESTEP_FS,
    TRAINING,
    describe,
    grid,
    measure,
    new_network,
    stage,
    strict_json,
    train,
    train_from_scratch,
)

from ase_rare.training import warm_start

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--temperatures", type=float, nargs="+", default=[2000, 1500, 1000])
    p.add_argument("--target", type=float, default=3.0, help="relative variance/root")
    p.add_argument("--max-iterations", type=int, default=10)
    p.add_argument("--roots", type=int, default=2000, help="roots per measurement")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument(
        "--out", default=str(HERE.parent / "data" / "references" / "transfer_2d.json")
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    first, *lower = args.temperatures

    print(f"{first:g} K from scratch", flush=True)
    net = new_network(args.seed)
    stages = train_from_scratch(
        net, first, seed=args.seed, target=args.target,
        max_iterations=args.max_iterations,
    )  # fmt: skip
    m = measure(net, first, args.roots)
    print(describe("from scratch", m), flush=True)
    report = {
        "timestep_fs": TIMESTEP_FS,
        "training": TRAINING,
        "target_relative_variance_per_root": args.target,
        "max_iterations": args.max_iterations,
        "seed": args.seed,
        "start": {"temperature_K": first, "stages": stages, "measured": m},
        "transfers": [],
    }

    previous, t_old = net, first
    for t_new in lower:
        g = grid(t_new)
        print(
            f"{t_old:g} K -> {t_new:g} K (grid: k = {g.rate_AB_per_fs:.4e} fs⁻¹, "
            f"upper {g.channel_fractions['upper']:.3f})",
            flush=True,
        )
        starts = {
            "rescaled": warm_start(previous, t_old, t_new),
            "not_rescaled": warm_start(previous, t_old, t_new, rescale_logit=False),
            "scratch": new_network(args.seed),
        }
        entry = {"from_K": t_old, "temperature_K": t_new, "starts": {}}
        for name, start in starts.items():
            before = measure(start, t_new, args.roots) if name != "scratch" else None
            if before is not None:
                print(describe(f"{name}, untrained", before), flush=True)
            if name == "scratch":
                stages = train_from_scratch(
                    start, t_new, seed=args.seed, target=args.target,
                    max_iterations=args.max_iterations,
                )  # fmt: skip
            else:
                history, cpu = train(
                    start,
                    t_new,
                    loss="residual+logvar",
                    iterations=args.max_iterations,
                    seed=args.seed + 1,
                    target_relative_variance=args.target,
                )
                stages = [stage("residual+logvar", history, cpu)]
            after = measure(start, t_new, args.roots)
            iterations = sum(s["iterations"] for s in stages)
            cpu = sum(s["cpu_s"] for s in stages)
            reached = stages[-1]["target_reached"]
            print(
                f"  {name}: {iterations} iterations, {cpu:.0f} CPU s, target "
                f"{'reached' if reached else 'NOT reached'}",
                flush=True,
            )
            print(describe(f"{name}, trained", after), flush=True)
            entry["starts"][name] = {
                "untrained": before,
                "stages": stages,
                "iterations": iterations,
                "cpu_s": cpu,
                "target_reached": reached,
                "trained": after,
            }
        report["transfers"].append(entry)
        previous, t_old = starts["rescaled"], t_new

    report["wall_time_s"] = time.perf_counter() - t0
    report["cpu_time_s"] = time.process_time()
    Path(args.out).write_text(json.dumps(strict_json(report), indent=2))
    print(f"wrote {args.out} ({report['wall_time_s']:.0f} s)")


if __name__ == "__main__":
    main()
