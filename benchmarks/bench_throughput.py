"""Throughput of the batched unbiased LJ7 engine against ASE's own Langevin loop.

Writes ``benchmarks/results/throughput.json``. Each number is the median of
``--repeats`` timings made in this one run, so ratios compare like with like on
a shared, noisy machine. The batched number is a full engine step: forces, the
overdamped kernel, noise, and the region checks in (μ₂, μ₃).

    python benchmarks/bench_throughput.py [--repeats 5] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.constraints import FixCartesian
from ase.md.langevin import Langevin

from ase_rare import CoordinationMoments, DiscRegion, OverdampedLangevin, lj7_cluster
from ase_rare.bruteforce import BruteForce

BATCHES = (1, 8, 64, 512, 2048, 4096, 8192)


def time_call(fn, min_seconds: float) -> float:
    """Seconds per call of ``fn``, timed over at least ``min_seconds``."""
    fn()
    n, elapsed = 0, 0.0
    start = time.perf_counter()
    while elapsed < min_seconds:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
    return elapsed / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--min-seconds", type=float, default=0.5)
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "throughput.json")
    )
    args = parser.parse_args()

    cv = CoordinationMoments()
    A = DiscRegion(cv, cv.of(lj7_cluster("C3")), 0.03)
    B = DiscRegion(cv, cv.of(lj7_cluster("C2")), 0.05)
    dt = 0.005 * units.fs

    def ase_langevin_steps_per_s():
        atoms = lj7_cluster("C3")
        # The cluster is planar: ASE's Langevin keeps it so through a constraint.
        atoms.set_constraint(FixCartesian(range(len(atoms)), mask=(False, False, True)))
        dyn = Langevin(
            atoms, dt, temperature_K=600, friction=0.01, rng=np.random.default_rng(1)
        )
        return 10 / time_call(lambda: dyn.run(10), args.min_seconds)

    def ours_single_steps_per_s():
        atoms = lj7_cluster("C3")
        dyn = OverdampedLangevin(atoms, dt, temperature_K=600, rng=1)
        return 10 / time_call(lambda: dyn.run(10), args.min_seconds)

    engines = {}

    def batched_walker_steps_per_s(w, compiled):
        key = (w, compiled)
        if key not in engines:
            engines[key] = BruteForce(
                lj7_cluster("C3"),
                A,
                B,
                timestep=dt,
                temperature_K=600,
                n_walkers=w,
                seed=1,
                check_timestep=False,
                compile=compiled,
            )
        engine = engines[key]
        steps = max(1, 20000 // w)

        def run():
            for _ in range(steps):
                engine.step()

        return w * steps / time_call(run, args.min_seconds)

    variants = [(w, c) for c in (False, True) for w in BATCHES]
    name = {v: f"{'compiled' if v[1] else 'eager'}_{v[0]}" for v in variants}
    rows = {"ase_langevin": [], "overdamped_langevin_single": []}
    rows.update({name[v]: [] for v in variants})
    for _ in range(args.repeats):
        # Interleave the measurements so drifts in machine load hit all alike.
        rows["ase_langevin"].append(ase_langevin_steps_per_s())
        rows["overdamped_langevin_single"].append(ours_single_steps_per_s())
        for v in variants:
            rows[name[v]].append(batched_walker_steps_per_s(*v))

    median = {k: statistics.median(v) for k, v in rows.items()}
    base = median["ase_langevin"]
    result = {
        "description": (
            "LJ7 (2D soft-core) unbiased overdamped steps at 600 K, dt = 0.005 fs: "
            "walker-steps per second, median of repeats, and ratio to "
            "ase.md.langevin.Langevin stepping one Atoms with the same calculator"
        ),
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "repeats": args.repeats,
        "ase_langevin_steps_per_s": base,
        "overdamped_langevin_single_steps_per_s": median["overdamped_langevin_single"],
        "batched": [
            {
                "n_walkers": w,
                "torch_compile": c,
                "walker_steps_per_s": median[name[(w, c)]],
                "ratio_to_ase_langevin": median[name[(w, c)]] / base,
                "all_repeats": rows[name[(w, c)]],
            }
            for (w, c) in variants
        ],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"ASE Langevin, one Atoms: {base:10.0f} steps/s")
    print(
        "OverdampedLangevin, one Atoms: "
        f"{median['overdamped_langevin_single']:10.0f} steps/s"
    )
    for row in result["batched"]:
        print(
            f"batched{' (compiled)' if row['torch_compile'] else ''}, "
            f"{row['n_walkers']:5d} walkers: "
            f"{row['walker_steps_per_s']:12.0f} walker-steps/s "
            f"({row['ratio_to_ase_langevin']:7.1f}x ASE)"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
