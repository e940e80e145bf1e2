"""14D rugged potential: importance-sampled rates against brute force, and below.

Brute force (unbiased, 4096 walkers, put back in A after each transition) gives
the rate and channel split at 2000 K, where transitions are frequent enough.
The shipped ``rugged-2000K`` MLP is carried down to 1500 and 1000 K by warm
starts (logit rescaled by T_old / T_new, a few iterations of residual +
log-variance; ``--start``, ``--ladder``) and the rate is estimated by
importance sampling at every temperature: at
2000 K against brute force at the same Δt, at 1500 K and 1000 K where brute
force would need 1/(k Δt) walker-steps per transition. Δt = 0.005 fs.

    python examples/rugged_rates.py          # a few minutes on one core

Writes data/references/rugged_rates.json.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from _training_2d import stage, strict_json
from _training_14d import SYSTEM, TIMESTEP_FS, describe, measure, train
from ase import units

from ase_rare.bruteforce import BruteForce
from ase_rare.data import load_importance
from ase_rare.training import warm_start

HERE = Path(__file__).resolve().parent


def brute_force(temperature_K: float, transitions: int, args) -> dict:
    cpu = time.process_time()
    engine = BruteForce(
        SYSTEM.start_A,
        SYSTEM.A,
        SYSTEM.B,
        timestep=TIMESTEP_FS * units.fs,
        temperature_K=temperature_K,
        n_walkers=args.walkers,
        seed=args.seed,
        restart_in_A=True,
        channels=SYSTEM.channels,
        compile=args.compile,
    )
    # Walkers relax into the well before counting (and compilation is paid).
    engine.run(round(args.equilibrate_fs / TIMESTEP_FS))
    engine.reset_statistics()
    cpu_counted = time.process_time()
    r = engine.run(transitions=transitions, check_interval=200)
    n = r.n_transitions
    f = r.channel_fractions["upper"]
    return {
        "temperature_K": temperature_K,
        "timestep_fs": TIMESTEP_FS,
        "n_walkers": args.walkers,
        "n_transitions": n,
        "rate_per_fs": r.rate_per_fs,
        "rate_se_per_fs": r.rate_se_per_fs,
        "flux_per_fs": r.flux_per_fs,
        "upper_fraction": f,
        "upper_fraction_se": math.sqrt(f * (1 - f) / n) if n else math.nan,
        "walker_steps": r.walker_steps,
        "cpu_s": time.process_time() - cpu_counted,
        "cpu_s_with_equilibration": time.process_time() - cpu,
        "compile": args.compile,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bruteforce-temperature", type=float, default=2000.0)
    p.add_argument("--transitions", type=int, default=400)
    p.add_argument("--walkers", type=int, default=4096)
    p.add_argument("--equilibrate-fs", type=float, default=5.0)
    p.add_argument("--compile", action="store_true", help="torch.compile the engine")
    p.add_argument("--start", default="rugged-2000K", help="shipped name or file")
    p.add_argument(
        "--ladder",
        type=float,
        nargs="*",
        default=[1500, 1000],
        help="temperatures to carry the function to, in order (K)",
    )
    p.add_argument("--target", type=float, default=3.0, help="relative variance/root")
    p.add_argument("--max-iterations", type=int, default=4)
    p.add_argument("--roots", type=int, default=2000)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument(
        "--out", default=str(HERE.parent / "data" / "references" / "rugged_rates.json")
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()

    print(f"brute force at {args.bruteforce_temperature:g} K", flush=True)
    bf = brute_force(args.bruteforce_temperature, args.transitions, args)
    print(
        f"  k = {bf['rate_per_fs']:.4e} ± {bf['rate_se_per_fs']:.1e} fs⁻¹, upper "
        f"{bf['upper_fraction']:.3f} ± {bf['upper_fraction_se']:.3f} "
        f"({bf['n_transitions']} transitions, {bf['walker_steps']:.2e} walker-steps, "
        f"{bf['cpu_s']:.0f} CPU s)",
        flush=True,
    )

    shipped = load_importance(args.start, n_atoms=7)
    rows = []
    m = measure(shipped, shipped.temperature_K, args.roots, seed=args.seed)
    m.update(trained_from_K=None, training=[], training_cpu_s=0.0)
    print(describe(f"{shipped.temperature_K:g} K", m), flush=True)
    rows.append(m)
    net, t_old = shipped, shipped.temperature_K
    for t_new in args.ladder:
        net = warm_start(net, t_old, t_new)
        history, cpu = train(
            net,
            t_new,
            loss="residual+logvar",
            iterations=args.max_iterations,
            seed=args.seed + 1,
            target_relative_variance=args.target,
        )
        m = measure(net, t_new, args.roots, seed=args.seed)
        m.update(
            trained_from_K=t_old,
            training=[stage("residual+logvar", history, cpu)],
            training_cpu_s=cpu,
        )
        print(describe(f"{t_new:g} K", m), flush=True)
        rows.append(m)
        t_old = t_new
    for m in rows:
        m["bruteforce_walker_steps_per_transition"] = 1.0 / (
            m["rate_per_fs"] * TIMESTEP_FS
        )
        if m["temperature_K"] == bf["temperature_K"]:
            se = math.hypot(m["rate_se_per_fs"], bf["rate_se_per_fs"])
            m["bruteforce_deviation_in_combined_se"] = (
                m["rate_per_fs"] - bf["rate_per_fs"]
            ) / se
            fse = math.hypot(m["upper_fraction_se"], bf["upper_fraction_se"])
            m["bruteforce_upper_deviation_in_combined_se"] = (
                m["upper_fraction"] - bf["upper_fraction"]
            ) / fse
            m["work_ratio_bruteforce_over_importance"] = (
                bf["walker_steps"] * (bf["rate_se_per_fs"] / bf["rate_per_fs"]) ** 2
            ) / (m["walker_steps"] * (m["rate_se_per_fs"] / m["rate_per_fs"]) ** 2)
            print(
                f"  {m['temperature_K']:g} K: importance sampling − brute force = "
                f"{m['bruteforce_deviation_in_combined_se']:+.2f} combined SE (rate), "
                f"{m['bruteforce_upper_deviation_in_combined_se']:+.2f} (upper "
                "fraction); walker-steps × relative variance, brute force / "
                f"importance sampling: {m['work_ratio_bruteforce_over_importance']:.3g}"
            )
    rows.sort(key=lambda r: -r["temperature_K"])
    report = {
        "importance": args.start,
        "timestep_fs": TIMESTEP_FS,
        "bruteforce": bf,
        "importance_sampling": rows,
        "seed": args.seed,
        "wall_time_s": time.perf_counter() - t0,
        "cpu_time_s": time.process_time(),
    }
    Path(args.out).write_text(json.dumps(strict_json(report), indent=2))
    print(f"wrote {args.out} ({report['wall_time_s']:.0f} s)")


if __name__ == "__main__":
    main()
