"""Variance reduction from branching, side by side in one run (2D, 1000 K).

The importance function is deliberately imperfect: the grid committor of a
warmer temperature with its logit rescaled by T_warm / T, the warm start that
METHOD.md suggests for transfer between temperatures. For each setting the
same exit points are used with several seeds; the figure of merit is the
relative standard error times the square root of the CPU time (lower is
better; it does not depend on how long one runs).

    python examples/brw_efficiency.py            # about 3 minutes
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from ase import units

from ase_rare.ensemble import Branching, Ensemble
from ase_rare.estimate import measure_flux
from ase_rare.importance import GridImportance
from ase_rare.systems import two_channel_system
from ase_rare.theory import solve_grid_tpt

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--temperature", type=float, default=1000.0)
    p.add_argument("--warm-temperature", type=float, default=1250.0)
    p.add_argument("--timestep", type=float, default=0.01, help="fs")
    p.add_argument("--roots", type=int, default=2000)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument(
        "--out",
        default=str(HERE.parent / "data" / "references" / "brw_efficiency.json"),
    )
    args = p.parse_args()
    torch.set_num_threads(1)  # CPU seconds then measure one core's work

    system = two_channel_system()
    T, Tw, dt = args.temperature, args.warm_temperature, args.timestep * units.fs
    warm = solve_grid_tpt(
        system.start_A.calc,
        system.A,
        system.B,
        temperature_K=Tw,
        box=(-2.2, 2.2, -2.2, 2.2),
        spacing=0.01,
    )
    logit = (warm.log_committor - warm.log_backward_committor) * (Tw / T)
    logit = np.where(warm.in_A | warm.in_B, np.nan, logit)
    importance = GridImportance(warm.x_A, warm.y_A, logit, temperature_K=T)
    flux = measure_flux(
        system.start_A,
        system.A,
        system.B,
        timestep=dt,
        temperature_K=T,
        n_exit_points=args.roots,
        seed=1,
    )
    settings = {
        "no branching": None,
        "BRW, v* = I(x0), every step": Branching(interval=1),
        "BRW, v* = I(x0), every 5 steps": Branching(interval=5),
        "BRW, v* = running P, every 5 steps": Branching(interval=5, target="running"),
    }
    rows = {}
    for name, rule in settings.items():
        runs = []
        for seed in args.seeds:
            t0 = time.process_time()
            result = Ensemble(
                system.start_A,
                importance,
                system.A,
                system.B,
                temperature_K=T,
                timestep=dt,
                flux=flux,
                n_roots=args.roots,
                roots_per_batch=500,
                branching=rule,
                channels=system.channels,
                seed=seed,
            ).run()
            cpu = time.process_time() - t0
            merit = result.relative_se * cpu**0.5
            runs.append(
                {
                    "seed": seed,
                    "rate_per_fs": result.rate_per_fs,
                    "rate_se_per_fs": result.rate_se_per_fs,
                    "cpu_s": cpu,
                    "relative_se_times_sqrt_cpu_s": merit,
                    "walker_steps": result.walker_steps,
                }
            )
            print(
                f"{name:<36} seed {seed}: k = {result.rate_per_fs:.4e} ± "
                f"{result.rate_se_per_fs:.1e} fs⁻¹, CPU {cpu:5.1f} s, "
                f"rel. SE × √CPU = {merit:.3f} s^½",
                flush=True,
            )
        rows[name] = {
            "runs": runs,
            "median_merit": statistics.median(
                r["relative_se_times_sqrt_cpu_s"] for r in runs
            ),
        }
    base = rows["no branching"]["median_merit"]
    print("\nmedian relative SE × √(CPU s), and the gain over no branching:")
    for name, row in rows.items():
        row["gain_over_no_branching"] = base / row["median_merit"]
        print(
            f"  {name:<36} {row['median_merit']:.3f}  "
            f"({row['gain_over_no_branching']:.1f}×)"
        )
    out = {
        "temperature_K": T,
        "importance": f"grid committor of {Tw:g} K, logit × {Tw / T:g}",
        "timestep_fs": args.timestep,
        "n_roots": args.roots,
        "settings": rows,
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
