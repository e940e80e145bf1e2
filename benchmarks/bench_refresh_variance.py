"""What refreshing the drift only every k steps costs in variance.

The drift-tilt kernel may keep the drift ``σ ∇ln I`` for k steps before it
asks the network again (``drift_refresh=k``): each step stays exactly weighted,
so the estimate stays unbiased, but a stale drift pushes less well and the
weights spread more. This script measures, for each k, the variance of the
estimate of P_AB and the work it took, on the same roots and seed:

* ``relative_variance`` = n_roots · (SE(P̂)/P̂)²: the relative variance one
  root contributes;
* ``walker_steps_per_root`` and ``cpu_s_per_root`` (the process CPU time of
  the biased paths, flux run excluded);
* work-normalised variances: ``relative_variance × walker_steps_per_root``
  and ``relative_variance × cpu_s_per_root`` (the relative variance of an
  estimate that took one walker-step or one CPU-second; smaller is better).

Systems: ``2d`` (two-channel potential at 1000 K, Δt = 0.01 fs, the shipped
``two-channel-1000K`` MLP) and ``lj7`` (LJ7 C3 → C2 at 600 K, Δt = 0.005 fs,
the shipped ``lj7-600K`` SchNet network). Writes
``benchmarks/results/refresh_variance_<system>.json``.

    python benchmarks/bench_refresh_variance.py --system 2d [--roots 2000]
    python benchmarks/bench_refresh_variance.py --system lj7 --roots 300 --k 1 10 20
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import torch
from ase import units

from ase_rare.data import load_importance
from ase_rare.estimate import estimate_rate, measure_flux
from ase_rare.systems import lj7_system, two_channel_system

SYSTEMS = {
    "2d": dict(
        build=two_channel_system,
        importance="two-channel-1000K",
        temperature_K=1000.0,
        timestep_fs=0.01,
        max_steps=200_000,
    ),
    "lj7": dict(
        build=lambda: lj7_system(modes=True),
        importance="lj7-600K",
        temperature_K=600.0,
        timestep_fs=0.005,
        max_steps=4000,
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", choices=sorted(SYSTEMS), default="2d")
    parser.add_argument("--roots", type=int, default=2000)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2, 5, 10, 20, 50])
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = SYSTEMS[args.system]
    system = spec["build"]()
    importance = load_importance(spec["importance"])
    dt = spec["timestep_fs"] * units.fs
    temperature = spec["temperature_K"]
    flux = measure_flux(
        system.start_A,
        system.A,
        system.B,
        timestep=dt,
        temperature_K=temperature,
        n_exit_points=args.roots,
        seed=args.seed,
    )
    rows = []
    for k in args.k:
        c0, t0 = time.process_time(), time.perf_counter()
        r = estimate_rate(
            system.start_A,
            importance,
            system.A,
            system.B,
            timestep=dt,
            temperature_K=temperature,
            flux=flux,
            n_roots=args.roots,
            drift_refresh=k,
            max_steps=spec["max_steps"],
            channels=system.channels,
            seed=args.seed + 1,
        )
        cpu = time.process_time() - c0
        rel_var = r.n_roots * (r.success_probability_se / r.success_probability) ** 2
        steps = r.walker_steps / r.n_roots
        row = dict(
            k=k,
            success_probability=r.success_probability,
            success_probability_se=r.success_probability_se,
            rate_per_fs=r.rate_per_fs,
            rate_se_per_fs=r.rate_se_per_fs,
            relative_variance=rel_var,
            relative_variance_of_ratio_per_root=r.relative_variance_per_root,
            effective_sample_size=r.effective_sample_size,
            walker_steps_per_root=steps,
            importance_evaluations_per_root=r.importance_evaluations / r.n_roots,
            cpu_s_per_root=cpu / r.n_roots,
            wall_s=time.perf_counter() - t0,
            work_normalised_variance_steps=rel_var * steps,
            work_normalised_variance_cpu_s=rel_var * cpu / r.n_roots,
            channel_fractions=r.channel_fractions,
        )
        rows.append(row)
        print(
            f"k={k:3d}  P = {r.success_probability:.4g} ± "
            f"{r.success_probability_se:.2g}  rel.var {rel_var:.3g}  "
            f"steps/root {steps:.0f}  CPU {cpu:.1f} s  "
            f"var×CPU-s/root {row['work_normalised_variance_cpu_s']:.3g}",
            flush=True,
        )
    base = rows[0]
    for row in rows:
        row["work_normalised_variance_cpu_s_vs_first_k"] = (
            row["work_normalised_variance_cpu_s"]
            / base["work_normalised_variance_cpu_s"]
        )
    out = {
        "system": args.system,
        "importance": spec["importance"],
        "temperature_K": temperature,
        "timestep_fs": spec["timestep_fs"],
        "friction_eV_fs_per_A2": 1.0,
        "n_roots": args.roots,
        "seed": args.seed,
        "flux_per_fs": flux.flux_per_fs,
        "torch_threads": args.threads,
        "note": "same roots and seed for every k; relative_variance = "
        "n_roots (SE/P)^2; smaller work-normalised variance is better",
        "rows": rows,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
    }
    path = Path(
        args.out
        or Path(__file__).parent / "results" / f"refresh_variance_{args.system}.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    if not math.isfinite(base["relative_variance"]):
        raise SystemExit("no success at the first k: the variance is not measured")


if __name__ == "__main__":
    main()
