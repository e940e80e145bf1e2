"""Cost of the biased LJ7 step with a SchNet importance function, per walker-step.

Writes ``benchmarks/results/biased_step.json``. At one batch size (4096 walkers
by default) it times, interleaved in every repeat so that drifts in machine
load hit all alike:

* the unbiased batched step (``BruteForce.step``: forces, noise, kernel, region
  tests and the engine's bookkeeping);
* the biased drift-tilt step (``PathSampler.advance``: forces, ``∇ ln I``,
  noise, kernel with its exact weight, region tests) with ``SchNetImportance``
  on SchNetPack's generic neighbour-list path and on the lean path, the drift
  refreshed every k steps (k = 1, 2, 5, 10, 20; the network's cost amortised
  over k steps), and with a float32 and a float64 network;
* the parts: forces alone, ``log_importance_and_gradient`` alone on each path
  and precision (per walker and evaluation).

Every timed run starts from the same exit-like points. A biased run with the
drift refreshed every k steps makes ``--evaluations`` network evaluations in
``evaluations · k`` steps, so the network's cost is amortised exactly over k;
cheap variants run ten times as many steps. Each number is the median (and
the minimum) over ``--repeats`` interleaved repeats; ratios to the unbiased
step are formed from this one run. The network is untrained (weights at
SchNetPack's initialisation): its cost does not depend on the weights.

    python benchmarks/bench_biased_step.py [--repeats 9] [--walkers 4096]
    python benchmarks/bench_biased_step.py --profile   # torch.profiler tables
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from ase import units

from ase_rare import lj7_cluster
from ase_rare.bruteforce import BruteForce
from ase_rare.importance import SchNetImportance
from ase_rare.kernels import LangevinParameters
from ase_rare.potentials import SoftCoreLJ
from ase_rare.sampling import PathSampler
from ase_rare.systems import lj7_system

REFRESH = (1, 2, 5, 10, 20)
TEMPERATURE_K = 600.0
TIMESTEP_FS = 0.005


def exit_like_points(n: int, seed: int = 0) -> torch.Tensor:
    """C3 with in-plane displacements of 0.05 Å: where biased paths start."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(lj7_cluster("C3").positions).repeat(n, 1, 1)
    noise = 0.05 * torch.randn(x.shape, generator=gen, dtype=torch.float64)
    noise[..., 2] = 0.0
    return x + noise


def make_network(dtype: str, evaluation: str) -> SchNetImportance:
    torch.manual_seed(0)
    return SchNetImportance(
        7, dtype=dtype, temperature_K=TEMPERATURE_K, evaluation=evaluation
    )


def make_sampler(importance, drift_refresh: int) -> PathSampler:
    system = lj7_system()
    return PathSampler(
        SoftCoreLJ(),
        importance,
        system.A,
        system.B,
        params=LangevinParameters(TIMESTEP_FS, TEMPERATURE_K, 1.0),
        planar=True,
        drift_refresh=drift_refresh,
        seed=1,
    )


def seconds(fn, *args) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of one call ``fn(*args)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--walkers", type=int, default=4096)
    parser.add_argument(
        "--evaluations",
        type=int,
        default=2,
        help="network evaluations per timed run (k steps apart)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "biased_step.json")
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.profile:
        profile(args.walkers)
        return

    w, evaluations = args.walkers, args.evaluations
    x0 = exit_like_points(w)
    system = lj7_system()
    potential = SoftCoreLJ()

    unbiased = BruteForce(
        system.start_A,
        system.A,
        system.B,
        timestep=TIMESTEP_FS * units.fs,
        temperature_K=TEMPERATURE_K,
        n_walkers=w,
        seed=1,
        check_timestep=False,
    )

    def run_unbiased(n_steps):
        unbiased.x = x0.clone()
        for _ in range(n_steps):
            unbiased.step()

    def biased(importance, k):
        sampler = make_sampler(importance, k)
        free = sampler.free_mask(7)

        def run(n_steps):
            x, drift = x0, None
            for step in range(n_steps):
                x, _, drift, *_ = sampler.advance(x, drift, step, free)

        return run

    def importance_gradient(net):
        def run(n_calls):
            for _ in range(n_calls):
                net.log_importance_and_gradient(x0)

        return run

    def forces(n_calls):
        for _ in range(n_calls):
            potential.batch_energy_forces(x0)

    networks = {
        (dtype, path): make_network(dtype, path)
        for dtype in ("float32", "float64")
        for path in ("generic", "lean")
    }
    # name -> (function of a count, count): each biased run covers the same
    # number of network evaluations, k steps apart (refresh at 0, k, 2k, ...).
    cheap = 10 * evaluations
    variants = {"unbiased": (run_unbiased, cheap)}
    for k in REFRESH:
        variants[f"biased_lean_float32_k{k}"] = (
            biased(networks[("float32", "lean")], k),
            evaluations * k,
        )
    for dtype, path in (("float32", "generic"), ("float64", "lean")):
        variants[f"biased_{path}_{dtype}_k1"] = (
            biased(networks[(dtype, path)], 1),
            evaluations,
        )
    variants["forces_only"] = (forces, cheap)
    for (dtype, path), net in networks.items():
        variants[f"importance_gradient_{path}_{dtype}"] = (
            importance_gradient(net),
            evaluations,
        )

    for fn, _ in variants.values():
        fn(1)  # warm-up: caches, allocator, lazy imports
    load_before = os.getloadavg()
    times = {name: [] for name in variants}
    cpu_times = {name: [] for name in variants}
    for _ in range(args.repeats):
        # Interleaved, so that drifts in machine load hit all variants alike.
        for name, (fn, count) in variants.items():
            wall, cpu = seconds(fn, count)
            times[name].append(wall)
            cpu_times[name].append(cpu)
    load_after = os.getloadavg()

    def per_walker_step(samples, statistic):
        return {
            name: 1e6 * statistic(samples[name]) / (count * w)
            for name, (_, count) in variants.items()
        }

    def ratios(values):
        return {name: v / values["unbiased"] for name, v in values.items()}

    median_us = per_walker_step(times, statistics.median)
    min_us = per_walker_step(times, min)
    cpu_us = per_walker_step(cpu_times, statistics.median)
    refresh_ratio = {
        k: median_us[f"biased_lean_float32_k{k}"] / median_us["unbiased"]
        for k in REFRESH
    }
    reaching = [k for k, ratio in refresh_ratio.items() if ratio <= 3.0]
    result = {
        "description": (
            f"LJ7 (2D soft-core) at {TEMPERATURE_K:g} K, dt = {TIMESTEP_FS} fs, "
            f"{w} walkers: cost per walker-step (or per walker and network "
            "evaluation, importance_gradient_*) in microseconds of the unbiased "
            "batched step and of the biased drift-tilt step with "
            "SchNetImportance (defaults: 32 features, 3 interactions, 20 "
            "Gaussians, cutoff 5 Å), generic and lean evaluation, drift "
            "refreshed every k steps, float32 and float64 network. Median (and "
            "minimum) of wall-clock repeats, median of process CPU time; ratios "
            "to the unbiased step from this one run"
        ),
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "load_average_before": load_before,
            "load_average_after": load_after,
        },
        "n_walkers": w,
        "network_evaluations_per_timing": evaluations,
        "count_per_timing": {name: count for name, (_, count) in variants.items()},
        "repeats": args.repeats,
        "network": networks[("float32", "lean")].hparams,
        "per_walker_step_us": median_us,
        "ratio_to_unbiased": ratios(median_us),
        "min_per_walker_step_us": min_us,
        "min_ratio_to_unbiased": ratios(min_us),
        # Process CPU time (all threads): less sensitive to other processes
        # taking the cores, but it counts threads waiting for each other.
        "cpu_per_walker_step_us": cpu_us,
        "cpu_ratio_to_unbiased": ratios(cpu_us),
        "lean_float32_refresh_ratio": refresh_ratio,
        "smallest_refresh_within_3x_unbiased": min(reaching) if reaching else None,
        "all_repeats_wall_s": times,
        "all_repeats_cpu_s": cpu_times,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")

    print(
        f"{w} walkers, {args.threads} threads, {args.repeats} repeats: µs per "
        "walker-step, and as a ratio to the unbiased step"
    )
    print(f"  {'':36s} {'median':>9s} {'ratio':>7s} {'min':>9s} {'ratio':>7s}", end="")
    print(f" {'CPU':>9s} {'ratio':>7s}")
    for name in variants:
        row = [
            (table[name], table[name] / table["unbiased"])
            for table in (median_us, min_us, cpu_us)
        ]
        print(f"  {name:36s}" + "".join(f" {v:9.3f} {r:7.2f}" for v, r in row))
    k = result["smallest_refresh_within_3x_unbiased"]
    print(f"smallest k with the lean biased step within 3x the unbiased one: {k}")
    print(f"wrote {args.out}")


def profile(n_walkers: int) -> None:
    """torch.profiler tables of one biased step on each path (printed)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    x0 = exit_like_points(n_walkers)
    for path in ("generic", "lean"):
        sampler = make_sampler(make_network("float32", path), 1)
        free = sampler.free_mask(7)
        sampler.advance(x0, None, 0, free)
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for step in range(3):
                sampler.advance(x0, None, step, free)
        print(f"\n## {path} path, {n_walkers} walkers, 3 biased steps (k = 1)\n")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
