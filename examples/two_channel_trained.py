"""2D two-channel rates from the trained importance function, 2000 K down to 600 K.

Starts from the shipped ``two-channel-1000K`` MLP and carries it up and down in
temperature (1000 → 1500 → 2000 K and 1000 → 800 → 600 K): at each new
temperature a warm start with the logit rescaled by T_old / T_new, refined with
residual + log-variance until the relative variance per root on 512 paths is at
most 3 (at most a few iterations). Then the rate and the channel split by
importance sampling (one path per root, 4000 roots) against the exact grid TPT
values. Brute force would need 1/(k Δt) walker-steps per transition: about
5e10 at 1000 K and 2e13 at 600 K.

Δt = 0.01 fs; the grid is continuous time (at 2000 K the discrete chain's rate
lies a few % above it, see two_channel_bruteforce.json; below 1500 K the
difference is within the errors).

    python examples/two_channel_trained.py        # ~4 min on one core

Writes data/references/two_channel_trained.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _training_2d import (
    TIMESTEP_FS,
    describe,
    grid,
    measure,
    stage,
    strict_json,
    train,
)

from ase_rare.data import load_importance
from ase_rare.training import warm_start

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--up", type=float, nargs="*", default=[1500, 2000])
    p.add_argument("--down", type=float, nargs="*", default=[800, 600])
    p.add_argument("--target", type=float, default=3.0, help="relative variance/root")
    p.add_argument("--max-iterations", type=int, default=6)
    p.add_argument("--roots", type=int, default=4000)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument(
        "--out",
        default=str(HERE.parent / "data" / "references" / "two_channel_trained.json"),
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()

    shipped = load_importance("two-channel-1000K", n_atoms=1)
    t_shipped = shipped.temperature_K
    rows = []

    def run(importance, temperature_K, trained_from, stages):
        m = measure(importance, temperature_K, args.roots, seed=args.seed)
        g = grid(temperature_K)
        m.update(
            temperature_K=temperature_K,
            trained_from_K=trained_from,
            training=stages,
            training_cpu_s=sum(s["cpu_s"] for s in stages),
            bruteforce_walker_steps_per_transition=1.0
            / (g.rate_AB_per_fs * TIMESTEP_FS),
        )
        print(describe(f"{temperature_K:g} K", m), flush=True)
        rows.append(m)

    run(shipped, t_shipped, None, [])
    for ladder in (args.up, args.down):
        net, t_old = shipped, t_shipped
        for t_new in ladder:
            net = warm_start(net, t_old, t_new)
            history, cpu = train(
                net,
                t_new,
                loss="residual+logvar",
                iterations=args.max_iterations,
                seed=args.seed + 1,
                target_relative_variance=args.target,
            )
            run(net, t_new, t_old, [stage("residual+logvar", history, cpu)])
            t_old = t_new
    rows.sort(key=lambda r: -r["temperature_K"])

    print(f"{'T (K)':>6} {'k (fs⁻¹)':>11} {'± SE':>8} {'grid':>11} {'dev/SE':>7} "
          f"{'upper':>6} {'± SE':>5} {'grid':>6} {'naive':>6} {'rv/root':>7} "
          f"{'train s':>7} {'est. s':>6}")  # fmt: skip
    for r in rows:
        print(
            f"{r['temperature_K']:6.0f} {r['rate_per_fs']:11.4e} "
            f"{r['rate_se_per_fs']:8.1e} {r['grid_rate_per_fs']:11.4e} "
            f"{r['rate_deviation_in_se']:+7.2f} {r['upper_fraction']:6.3f} "
            f"{r['upper_fraction_se']:5.3f} {r['grid_upper_fraction']:6.3f} "
            f"{r['naive_upper_fraction']:6.3f} "
            f"{r['relative_variance_per_root']:7.2f} {r['training_cpu_s']:7.0f} "
            f"{r['cpu_s']:6.0f}"
        )
    report = {
        "importance": "two-channel-1000K",
        "timestep_fs": TIMESTEP_FS,
        "n_roots": args.roots,
        "target_relative_variance_per_root": args.target,
        "seed": args.seed,
        "temperatures": rows,
        "wall_time_s": time.perf_counter() - t0,
        "cpu_time_s": time.process_time(),
    }
    Path(args.out).write_text(json.dumps(strict_json(report), indent=2))
    print(f"wrote {args.out} ({report['wall_time_s']:.0f} s)")


if __name__ == "__main__":
    main()
