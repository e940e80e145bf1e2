"""Wall time of one ensemble run: sequential, a local process pool, Dask.

Writes ``benchmarks/results/execution.json``. The run is the two-channel 2D
system at 1000 K, Δt = 0.01 fs, 8 batches of 128 roots (``--roots-per-batch``)
with branching. Every timing includes starting the workers: the pool is started
per run, the Dask cluster once and reused, as a user with a cluster would (its
start-up is reported apart). Each number is the median of ``--repeats`` runs,
and every run's result is checked to be bitwise the sequential one.

    python benchmarks/bench_execution.py [--repeats 3] [--workers 2] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from ase import units

from ase_rare.ensemble import Branching, Ensemble
from ase_rare.estimate import measure_flux
from ase_rare.importance import GridImportance
from ase_rare.systems import two_channel_system
from ase_rare.theory import solve_grid_tpt

T_K = 1000.0
DT = 0.01 * units.fs
N_BATCHES, ROOTS_PER_BATCH = 8, 128


def build(roots_per_batch: int = ROOTS_PER_BATCH):
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
        n_exit_points=N_BATCHES * roots_per_batch,
        n_walkers=256,
        seed=3,
    )
    importance = GridImportance.from_grid_tpt(grid)

    def make() -> Ensemble:
        return Ensemble(
            system.start_A,
            importance,
            system.A,
            system.B,
            temperature_K=T_K,
            timestep=DT,
            flux=flux,
            n_roots=N_BATCHES * roots_per_batch,
            roots_per_batch=roots_per_batch,
            channels=system.channels,
            branching=Branching(),
            seed=11,
        )

    return make


def timed(make, **run_kwargs) -> tuple[float, dict]:
    ens = make()
    start = time.perf_counter()
    result = ens.run(**run_kwargs)
    return time.perf_counter() - start, result.to_dict() | {"wall_time_s": 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--roots-per-batch", type=int, default=ROOTS_PER_BATCH)
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "execution.json")
    )
    args = parser.parse_args()
    torch.set_num_threads(1)  # as in every worker: like for like
    make = build(args.roots_per_batch)

    import distributed

    times: dict[str, list[float]] = {"sequential": [], "processes": [], "dask": []}
    start = time.perf_counter()
    cluster = distributed.LocalCluster(
        n_workers=args.workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    client = distributed.Client(cluster)
    client.wait_for_workers(args.workers)
    cluster_start_s = time.perf_counter() - start

    reference = None
    for _ in range(args.repeats):
        for name, kwargs in (
            ("sequential", {}),
            ("processes", dict(executor="processes", max_workers=args.workers)),
            ("dask", dict(client=client)),
        ):
            seconds, result = timed(make, **kwargs)
            reference = reference or result
            assert result == reference, f"{name} differs from the sequential run"
            times[name].append(seconds)
    client.close()
    cluster.close()

    median = {k: statistics.median(v) for k, v in times.items()}
    out = {
        "system": "two_channel_system (2D)",
        "temperature_K": T_K,
        "timestep_fs": DT / units.fs,
        "n_batches": N_BATCHES,
        "roots_per_batch": args.roots_per_batch,
        "workers": args.workers,
        "torch_threads_per_worker": 1,
        "repeats": args.repeats,
        "walker_steps": reference["walker_steps"],
        "seconds": times,
        "median_seconds": median,
        "speedup_processes": median["sequential"] / median["processes"],
        "speedup_dask": median["sequential"] / median["dask"],
        "dask_over_pool": median["dask"] / median["processes"],
        "dask_cluster_start_s": cluster_start_s,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "distributed": distributed.__version__,
        },
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(
        json.dumps(median),
        f"processes x{out['speedup_processes']:.2f}",
        f"dask x{out['speedup_dask']:.2f}",
    )


if __name__ == "__main__":
    main()
