"""Measure LJ7 600 K importance functions side by side on the same exits.

One flux run and one tilted path per root with each function, the same seeds
for all: rate ± SE, relative variance per root of P̂ (n · (SE/P̂)², less the
pool's part), naive estimate, mode fractions M1-M4 reweighted and naive,
successes, walker-steps per root and CPU seconds. With ``--pool N`` the roots
are drawn in proportion to each function's I from a pool of N exits
(:func:`ase_rare.estimate.importance_roots`); without it they are the flux
run's exits, uniformly (how the refinements of ``examples/refine_lj7.py`` were
judged). The training loop's own 512-path measurement is too noisy for
heavy-tailed weights.

    python examples/compare_lj7_functions.py lj7-600K my.pt [--pool 1000000]

Prints a line per function and writes ``--out`` (JSON) when given.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from ase import units

from ase_rare.data import load_importance
from ase_rare.estimate import estimate_rate, importance_roots, measure_flux
from ase_rare.systems import lj7_system

DT_FS = 0.005


def measure(importance, system, flux, n_roots, seed, *, temperature_K=None) -> dict:
    """One tilted path per root from ``flux``'s exit points; the numbers above.

    A pool (``flux`` with more exits than ``n_roots``) is drawn from in
    proportion to ``I``; otherwise the first ``n_roots`` exits are the roots.
    """
    cpu = time.process_time()
    pool = len(flux.exit_points) > n_roots
    if pool:
        flux = importance_roots(flux, importance, n_roots, seed=seed)
    r = estimate_rate(
        system.start_A,
        importance,
        system.A,
        system.B,
        timestep=DT_FS * units.fs,
        temperature_K=temperature_K or importance.temperature_K,
        flux=flux,
        n_roots=n_roots,
        max_steps=4000,
        channels=system.channels,
        seed=seed,
    )
    p_rel = float(r.success_probability_se / r.success_probability)
    return dict(
        rate_per_fs=float(r.rate_per_fs),
        rate_se_per_fs=float(r.rate_se_per_fs),
        relative_variance=r.n_roots * (p_rel**2 - r.root_pool_relative_se**2),
        root_pool_size=r.root_pool_size,
        root_pool_relative_se=r.root_pool_relative_se,
        naive_success_probability=float(r.naive_success_probability),
        channel_fractions=r.channel_fractions,
        naive_channel_fractions=r.naive_channel_fractions,
        n_successes=r.n_successes,
        walker_steps_per_root=r.walker_steps / r.n_roots,
        cpu_s=time.process_time() - cpu,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("functions", nargs="+", help="shipped names or .pt files")
    p.add_argument("--roots", type=int, default=4000)
    p.add_argument(
        "--pool", type=int, default=0, help="exits to draw the roots from (0: none)"
    )
    p.add_argument("--temperature", type=float, default=600.0, help="K")
    p.add_argument("--seed", type=int, default=77)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    system = lj7_system(modes=True)
    dt = DT_FS * units.fs
    flux = measure_flux(
        system.start_A,
        system.A,
        system.B,
        timestep=dt,
        temperature_K=args.temperature,
        n_exit_points=max(args.roots, args.pool),
        n_walkers=4096 if args.pool else 256,
        exits_per_point=1 if args.pool else 10,
        seed=args.seed,
        compile=True,
    )
    rows = []
    for name in args.functions:
        row = measure(
            load_importance(name, n_atoms=7),
            system,
            flux,
            args.roots,
            args.seed + 1,
            temperature_K=args.temperature,
        )
        row = {"function": name, **row}
        rows.append(row)
        modes = " / ".join(f"{100 * f:.1f}" for f in row["channel_fractions"])
        print(
            f"{name}: rate ({row['rate_per_fs']:.3e} ± {row['rate_se_per_fs']:.2e}) "
            f"fs⁻¹, relative variance {row['relative_variance']:.1f} per root, "
            f"naive P {row['naive_success_probability']:.2e}, M1-M4 {modes} %, "
            f"{row['n_successes']} successes, {row['cpu_s']:.0f} CPU s",
            flush=True,
        )
    if args.out:
        Path(args.out).write_text(
            json.dumps(
                {
                    "temperature_K": args.temperature,
                    "timestep_fs": DT_FS,
                    "n_roots": args.roots,
                    "seed": args.seed,
                    "flux_per_fs": flux.flux_per_fs,
                    "rows": rows,
                },
                indent=1,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
