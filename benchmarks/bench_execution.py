"""Wall time of one ensemble run: sequential, local process pools, Dask.

Writes ``benchmarks/results/execution.json``. The run is the two-channel 2D
system at 1000 K, Δt = 0.01 fs, 16 batches of 64 roots (``--batches``,
``--roots-per-batch``) with branching, timed five ways: in this process; on a
:class:`~ase_rare.execution.ProcessPool` kept open across runs; on a pool
started for the run (``executor="processes"``, start-up included); on a Dask
``LocalCluster`` of one worker and of ``--workers`` workers (clusters started
once and reused, as a user with a cluster would). Start-ups are reported
apart. The modes take turns within each repeat and every ratio is the median
over repeats of the ratio within one repeat; every run's result is checked to
be bitwise the sequential one.

    python benchmarks/bench_execution.py [--repeats 5] [--workers 2] [--out PATH]
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
from ase_rare.execution import ProcessPool
from ase_rare.importance import GridImportance
from ase_rare.systems import two_channel_system
from ase_rare.theory import solve_grid_tpt

T_K = 1000.0
DT = 0.01 * units.fs
N_BATCHES, ROOTS_PER_BATCH = 16, 64


def build(n_batches: int = N_BATCHES, roots_per_batch: int = ROOTS_PER_BATCH):
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
        n_exit_points=n_batches * roots_per_batch,
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
            n_roots=n_batches * roots_per_batch,
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


def start_cluster(workers: int):
    import distributed

    start = time.perf_counter()
    cluster = distributed.LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    client = distributed.Client(cluster)
    client.wait_for_workers(workers)
    return cluster, client, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=N_BATCHES)
    parser.add_argument("--roots-per-batch", type=int, default=ROOTS_PER_BATCH)
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "execution.json")
    )
    args = parser.parse_args()
    torch.set_num_threads(1)  # as in every worker: like for like
    make = build(args.batches, args.roots_per_batch)

    import distributed

    n = args.workers
    cluster_1, client_1, start_dask_1 = start_cluster(1)
    cluster_n, client_n, start_dask_n = start_cluster(n)
    t0 = time.perf_counter()
    pool = ProcessPool(n).start()
    start_pool = time.perf_counter() - t0

    modes = {
        "sequential": {},
        "pool_kept": dict(executor=pool),
        "pool_per_run": dict(executor="processes", max_workers=n),
        "dask_1_worker": dict(client=client_1),
        f"dask_{n}_workers": dict(client=client_n),
    }
    times: dict[str, list[float]] = {name: [] for name in modes}
    reference = None
    # Modes take turns within each repeat, so a slow spell of the shared
    # machine hits all of them alike; ratios are formed within one repeat.
    for _ in range(args.repeats):
        for name, kwargs in modes.items():
            seconds, result = timed(make, **kwargs)
            reference = reference or result
            assert result == reference, f"{name} differs from the sequential run"
            times[name].append(seconds)
    pool.close()
    for client, cluster in ((client_1, cluster_1), (client_n, cluster_n)):
        client.close()
        cluster.close()

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))

    dask_n = f"dask_{n}_workers"
    out = {
        "system": "two_channel_system (2D)",
        "temperature_K": T_K,
        "timestep_fs": DT / units.fs,
        "n_batches": args.batches,
        "roots_per_batch": args.roots_per_batch,
        "workers": n,
        "torch_threads_per_worker": 1,
        "repeats": args.repeats,
        "walker_steps": reference["walker_steps"],
        "seconds": times,
        "median_seconds": {k: statistics.median(v) for k, v in times.items()},
        "start_up_seconds": {
            "pool": start_pool,
            "dask_1_worker": start_dask_1,
            dask_n: start_dask_n,
        },
        # Medians over repeats of ratios formed within one repeat.
        "ratios": {
            f"dask_{n}_over_1_worker_speedup": ratio("dask_1_worker", dask_n),
            f"dask_{n}_vs_sequential_speedup": ratio("sequential", dask_n),
            f"pool_kept_{n}_vs_sequential_speedup": ratio("sequential", "pool_kept"),
            f"pool_per_run_{n}_vs_sequential_speedup": ratio(
                "sequential", "pool_per_run"
            ),
            "dask_over_pool_kept_time": ratio(dask_n, "pool_kept"),
            "dask_over_pool_per_run_time": ratio(dask_n, "pool_per_run"),
        },
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
    print(json.dumps(out["median_seconds"]), json.dumps(out["ratios"], indent=1))


if __name__ == "__main__":
    main()
