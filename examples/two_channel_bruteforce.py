"""Brute-force rates of the 2D two-channel potential against the exact grid solution.

At each temperature the batched unbiased engine runs at several time steps until
it has seen a target number of A -> B transitions (walkers restart in A after
each), and the rate and channel split are compared with the continuous-time
values of grid transition-path theory. Euler–Maruyama is weakly first order, so
the rate at step Δt is k(Δt) = k0 + k1·Δt + O(Δt²); a weighted least-squares
line through the runs gives k0, the Δt → 0 limit, with its standard error.

    python examples/two_channel_bruteforce.py                    # 2000 K and 1500 K
    python examples/two_channel_bruteforce.py --transitions 50   # quick look

The full run does about 1.4e9 walker-steps, 80 % of them at 1500 K (5 min at
5e6 walker-steps/s).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from ase import units

from ase_rare.analysis import weighted_line_fit
from ase_rare.bruteforce import BruteForce, BruteForceResult
from ase_rare.systems import two_channel_system
from ase_rare.theory import solve_grid_tpt

HERE = Path(__file__).resolve().parent
BOX_A = (-2.2, 2.2, -2.2, 2.2)
#: Transitions per time step when --transitions is not given, by temperature.
DEFAULT_TRANSITIONS = {2000.0: 2000, 1500.0: 1000}


def upper_fraction(result: BruteForceResult) -> tuple[float, float]:
    """Fraction of transitions through the upper channel and its binomial SE."""
    n = result.n_transitions
    if n == 0:
        return math.nan, math.nan
    f = result.channel_fractions["upper"]
    # Floored at one count's worth, so a short run that saw one channel only
    # still carries an error (and a finite weight in the fit).
    return f, math.sqrt(max(f * (1 - f), 1.0 / n) / n)


def run_one(
    system, temperature_K, dt_fs, transitions, seed, args, expected_rate_per_fs
) -> BruteForceResult:
    engine = BruteForce(
        system.start_A,
        system.A,
        system.B,
        timestep=dt_fs * units.fs,
        temperature_K=temperature_K,
        n_walkers=args.walkers,
        seed=seed,
        restart_in_A=True,
        channels=system.channels,
        compile=not args.no_compile,
    )
    # The walkers relax from the minimum into the well (about 1 fs) before
    # counting, so every counted escape starts from the well's local equilibrium.
    # This run also pays for compilation, which is left out of the wall time.
    engine.run(max(1, round(args.equilibrate_fs / dt_fs)))
    engine.reset_statistics()

    # Check the count often enough that the run overshoots the target by about
    # 2 % at most; each check costs one synchronisation, nothing else.
    per_step = expected_rate_per_fs * dt_fs * args.walkers
    check_interval = int(np.clip(0.02 * transitions / per_step, 10, 1000))
    return engine.run(transitions=transitions, check_interval=check_interval)


def table(temperature_K: float, grid, results: list[BruteForceResult]) -> str:
    k_grid = grid.rate_AB_per_fs
    head = (
        f"{'Δt (fs)':>8} {'trans.':>7} {'walker-steps':>12} "
        f"{'k (fs⁻¹)':>11} {'± SE':>9} {'k/k_grid-1':>10} {'(k-k_grid)/SE':>13} "
        f"{'upper':>7} {'± SE':>6} {'J_A (fs⁻¹)':>10} {'P_AB':>9} {'wall (s)':>8}"
    )
    rows = [f"T = {temperature_K:g} K", head]
    for r in results:
        f, f_se = upper_fraction(r)
        rows.append(
            f"{r.timestep_fs:>8g} {r.n_transitions:>7d} {r.walker_steps:>12.3e} "
            f"{r.rate_per_fs:>11.4e} {r.rate_se_per_fs:>9.2e} "
            f"{100 * (r.rate_per_fs / k_grid - 1):>9.1f}% "
            f"{(r.rate_per_fs - k_grid) / r.rate_se_per_fs:>13.2f} "
            f"{f:>7.4f} {f_se:>6.4f} {r.flux_per_fs:>10.4g} "
            f"{r.success_probability:>9.3e} {r.wall_time_s:>8.1f}"
        )
    f_grid = grid.channel_fractions["upper"]
    rows.append(
        f"{'grid':>8} {'':>7} {'':>12} {k_grid:>11.4e} {'':>9} {'':>10} {'':>13} "
        f"{f_grid:>7.4f}   (h = {grid.spacing_A:g} Å, continuous time)"
    )
    return "\n".join(rows)


def extrapolate(grid, results: list[BruteForceResult]) -> dict | None:
    """Δt → 0 limits of the rate and the upper-channel fraction."""
    usable = [r for r in results if r.n_transitions > 1]
    if len({r.timestep_fs for r in usable}) < 2:
        return None
    dts = [r.timestep_fs for r in usable]
    rate = weighted_line_fit(
        dts, [r.rate_per_fs for r in usable], [r.rate_se_per_fs for r in usable]
    )
    fractions = [upper_fraction(r) for r in usable]
    frac = weighted_line_fit(dts, *zip(*fractions, strict=True))
    k_grid = grid.rate_AB_per_fs
    f_grid = grid.channel_fractions["upper"]
    return {
        "rate_per_fs": rate["intercept"],
        "rate_se_per_fs": rate["intercept_se"],
        "slope_per_fs2": rate["slope"],
        "slope_se_per_fs2": rate["slope_se"],
        "chi2": rate["chi2"],
        "dof": rate["dof"],
        "deviation_from_grid_in_se": (rate["intercept"] - k_grid)
        / rate["intercept_se"],
        "upper_fraction": frac["intercept"],
        "upper_fraction_se": frac["intercept_se"],
        "upper_fraction_slope_per_fs": frac["slope"],
        "upper_fraction_deviation_from_grid_in_se": (frac["intercept"] - f_grid)
        / frac["intercept_se"],
    }


def describe(fit: dict, grid) -> str:
    k_grid = grid.rate_AB_per_fs
    return (
        f"  Δt → 0 (weighted line, χ² = {fit['chi2']:.2f} for {fit['dof']} dof): "
        f"k0 = {fit['rate_per_fs']:.4e} ± {fit['rate_se_per_fs']:.2e} fs⁻¹ "
        f"({fit['rate_per_fs'] / units.fs * units.s:.4g} s⁻¹), "
        f"k0/k_grid − 1 = {100 * (fit['rate_per_fs'] / k_grid - 1):+.1f} %, "
        f"{fit['deviation_from_grid_in_se']:+.2f} SE\n"
        f"  slope k1 = {fit['slope_per_fs2']:.3e} ± {fit['slope_se_per_fs2']:.2e} "
        f"fs⁻²; upper fraction at Δt → 0 = {fit['upper_fraction']:.4f} ± "
        f"{fit['upper_fraction_se']:.4f} (grid {grid.channel_fractions['upper']:.4f}"
        f", {fit['upper_fraction_deviation_from_grid_in_se']:+.2f} SE)"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--temperatures", type=float, nargs="+", default=[2000.0, 1500.0])
    p.add_argument(
        "--timesteps", type=float, nargs="+", default=[0.04, 0.02, 0.01], help="fs"
    )
    p.add_argument(
        "--transitions",
        type=int,
        default=None,
        help="target A -> B transitions per run "
        "(default: 2000 at 2000 K, 1000 at 1500 K, 1000 otherwise)",
    )
    p.add_argument("--walkers", type=int, default=4096)
    p.add_argument("--equilibrate-fs", type=float, default=5.0)
    p.add_argument("--grid-spacing", type=float, default=0.01, help="Å")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument(
        "--out",
        default=str(
            HERE.parent / "data" / "references" / "two_channel_bruteforce.json"
        ),
    )
    args = p.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    system = two_channel_system()
    t_start = time.perf_counter()
    seed = args.seed
    report = []
    for temperature_K in args.temperatures:
        grid = solve_grid_tpt(
            system.start_A.calc,
            system.A,
            system.B,
            temperature_K=temperature_K,
            box=BOX_A,
            spacing=args.grid_spacing,
        )
        transitions = args.transitions or DEFAULT_TRANSITIONS.get(temperature_K, 1000)
        results = []
        for dt_fs in args.timesteps:
            expected = transitions / (grid.rate_AB_per_fs * dt_fs)
            print(
                f"T = {temperature_K:g} K, Δt = {dt_fs:g} fs: {transitions} "
                f"transitions, about {expected:.2e} walker-steps ...",
                flush=True,
            )
            results.append(
                run_one(
                    system,
                    temperature_K,
                    dt_fs,
                    transitions,
                    seed,
                    args,
                    grid.rate_AB_per_fs,
                )
            )
            seed += 1
            r = results[-1]
            print(
                f"  {r.n_transitions} transitions in {r.wall_time_s:.1f} s "
                f"({r.walker_steps / max(r.wall_time_s, 1e-9):.3g} walker-steps/s)",
                flush=True,
            )

        fit = extrapolate(grid, results)
        print("\n" + table(temperature_K, grid, results))
        if fit is not None:
            print(describe(fit, grid))
        print(flush=True)
        report.append(
            {
                "temperature_K": temperature_K,
                "target_transitions": transitions,
                "grid": {
                    "spacing_A": grid.spacing_A,
                    "box_A": list(BOX_A),
                    "rate_AB_per_fs": grid.rate_AB_per_fs,
                    "channel_fractions": dict(grid.channel_fractions),
                },
                "runs": [r.to_dict() for r in results],
                "extrapolation_to_zero_timestep": fit,
            }
        )

    out = {
        "system": "two-channel 2D potential, tilt 0.02 eV/Å; A, B: discs of 0.2 Å "
        "around the minima (∓1.11802, −0.00462) Å; channel = sign of y where the "
        "path last crossed x = 0",
        "friction_eV_fs_per_A2": 1.0,
        "n_walkers": args.walkers,
        "restart_in_A": True,
        "equilibration_fs": args.equilibrate_fs,
        "compile": not args.no_compile,
        "total_wall_time_s": time.perf_counter() - t_start,
        "temperatures": report,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out} ({out['total_wall_time_s']:.0f} s in all)")


if __name__ == "__main__":
    main()
