"""Importance-sampled rates of the 2D two-channel potential, checked four ways.

1. At 1000 K with the near-exact grid committor as importance function (with
   the time-step boundary correction of GridImportance.for_discrete_chain), both
   kernels, several time steps: rate and channel split against the exact grid
   TPT values after extrapolating Δt → 0, and the relative variance per root.
2. The same with a deliberately wrong importance function (the grid committor
   of another temperature): the estimator stays unbiased.
3. At 2000 K: importance sampling against brute force at the same Δt.
4. The reverse rate B -> A with the same importance function, and detailed
   balance r_AB / r_BA = P(B) / P(A).

    python examples/two_channel_importance.py            # the full set (~15 min)
    python examples/two_channel_importance.py --roots 300 --timesteps 0.02 0.01

Writes data/references/two_channel_importance.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from ase import units

from ase_rare.analysis import weighted_line_fit
from ase_rare.bruteforce import BruteForce
from ase_rare.estimate import estimate_rate, measure_flux
from ase_rare.importance import GridImportance
from ase_rare.systems import two_channel_system
from ase_rare.theory import solve_grid_tpt

HERE = Path(__file__).resolve().parent
BOX_A = (-2.2, 2.2, -2.2, 2.2)


def grid(system, temperature_K, spacing):
    return solve_grid_tpt(
        system.start_A.calc,
        system.A,
        system.B,
        temperature_K=temperature_K,
        box=BOX_A,
        spacing=spacing,
    )


def row(label, r) -> dict:
    d = r.to_dict()
    d["label"] = label
    up = r.channel_names.index("upper")
    print(
        f"  {label:<24} Δt={r.timestep_fs:<7g} k = {r.rate_per_fs:.4e} ± "
        f"{r.rate_se_per_fs:.1e} fs⁻¹  naive {r.naive_rate_per_fs:.3e}  "
        f"upper {r.channel_fractions[up]:.3f} ± {r.channel_fractions_se[up]:.3f} "
        f"(naive {r.naive_channel_fractions[up]:.3f})  rel.var/root "
        f"{r.relative_variance_per_root:.3g}  ESS {r.effective_sample_size:.0f}/"
        f"{r.n_successes}  {r.wall_time_s:.0f} s",
        flush=True,
    )
    return d


def extrapolate(rows, reference, reference_upper) -> dict:
    dts = [r["timestep_fs"] for r in rows]
    fit = weighted_line_fit(
        dts, [r["rate_per_fs"] for r in rows], [r["rate_se_per_fs"] for r in rows]
    )
    up = [r["channel_fractions"][r["channel_names"].index("upper")] for r in rows]
    up_se = [r["channel_fractions_se"][r["channel_names"].index("upper")] for r in rows]
    ffit = weighted_line_fit(dts, up, up_se)
    out = {
        "rate_per_fs": fit["intercept"],
        "rate_se_per_fs": fit["intercept_se"],
        "chi2": fit["chi2"],
        "dof": fit["dof"],
        "grid_rate_per_fs": reference,
        "deviation_in_se": (fit["intercept"] - reference) / fit["intercept_se"],
        "upper_fraction": ffit["intercept"],
        "upper_fraction_se": ffit["intercept_se"],
        "grid_upper_fraction": reference_upper,
        "upper_deviation_in_se": (ffit["intercept"] - reference_upper)
        / ffit["intercept_se"],
    }
    print(
        f"  Δt → 0: k0 = {out['rate_per_fs']:.4e} ± {out['rate_se_per_fs']:.1e} "
        f"fs⁻¹ vs grid {reference:.4e} ({out['deviation_in_se']:+.2f} SE, "
        f"χ² {fit['chi2']:.2f}/{fit['dof']}); upper {out['upper_fraction']:.3f} ± "
        f"{out['upper_fraction_se']:.3f} vs grid {reference_upper:.3f} "
        f"({out['upper_deviation_in_se']:+.2f} SE)",
        flush=True,
    )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--temperature", type=float, default=1000.0)
    p.add_argument("--wrong-temperature", type=float, default=2000.0)
    p.add_argument("--check-temperature", type=float, default=2000.0)
    p.add_argument(
        "--timesteps", type=float, nargs="+", default=[0.02, 0.01, 0.005, 0.0025]
    )
    p.add_argument("--roots", type=int, default=4000)
    p.add_argument("--spacing", type=float, default=0.005, help="grid spacing, Å")
    p.add_argument("--check-transitions", type=int, default=1500)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: keep)")
    p.add_argument(
        "--out",
        default=str(
            HERE.parent / "data" / "references" / "two_channel_importance.json"
        ),
    )
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    system = two_channel_system()
    T = args.temperature
    exact = grid(system, T, args.spacing)
    wrong = grid(system, args.wrong_temperature, args.spacing)
    wrong_importance = GridImportance.from_grid_tpt(wrong)
    k_grid = exact.rate_AB_per_fs
    f_grid = exact.channel_fractions["upper"]
    print(
        f"grid TPT at {T:g} K: k_AB = {k_grid:.5e} fs⁻¹, upper {f_grid:.4f}, "
        f"P(A) = {exact.prob_A_history:.4f}, P(B) = {exact.prob_B_history:.4f}"
    )

    runs = {"tilt": [], "candidates": [], "wrong_tilt": [], "reverse_tilt": []}
    for dt in args.timesteps:
        # The grid committor with the time-step boundary correction: close to
        # the committor of the chain that is actually simulated.
        importance = GridImportance.for_discrete_chain(
            system.start_A.calc,
            system.A,
            system.B,
            temperature_K=T,
            timestep_fs=dt,
            box=BOX_A,
            spacing=args.spacing,
        )
        common = dict(
            timestep=dt * units.fs,
            temperature_K=T,
            n_roots=args.roots,
            channels=system.channels,
            seed=args.seed,
        )
        flux = measure_flux(
            system.start_A,
            system.A,
            system.B,
            timestep=dt * units.fs,
            temperature_K=T,
            n_exit_points=args.roots,
            seed=args.seed,
        )
        for kernel in ("tilt", "candidates"):
            r = estimate_rate(
                system.start_A,
                importance,
                system.A,
                system.B,
                kernel=kernel,
                n_candidates=8,
                flux=flux,
                **common,
            )
            runs[kernel].append(row(f"{kernel}, exact I", r))
        r = estimate_rate(
            system.start_A,
            wrong_importance,
            system.A,
            system.B,
            flux=flux,
            **common,
        )
        runs["wrong_tilt"].append(row(f"tilt, I of {args.wrong_temperature:g} K", r))
        r = estimate_rate(
            system.start_B,
            importance.reversed(),
            system.B,
            system.A,
            direction="B->A",
            **common,
        )
        runs["reverse_tilt"].append(row("tilt, reverse B->A", r))

    print(f"\nextrapolation to Δt → 0 at {T:g} K")
    fits = {}
    for name, rows in runs.items():
        print(f" {name}")
        fits[name] = extrapolate(rows, k_grid, f_grid)
    ratio = fits["tilt"]["rate_per_fs"] / fits["reverse_tilt"]["rate_per_fs"]
    ratio_se = (
        ratio
        * (
            (fits["tilt"]["rate_se_per_fs"] / fits["tilt"]["rate_per_fs"]) ** 2
            + (
                fits["reverse_tilt"]["rate_se_per_fs"]
                / fits["reverse_tilt"]["rate_per_fs"]
            )
            ** 2
        )
        ** 0.5
    )
    balance = exact.prob_B_history / exact.prob_A_history
    print(
        f"\ndetailed balance: r_AB/r_BA = {ratio:.4f} ± {ratio_se:.4f}, "
        f"P(B)/P(A) = {balance:.4f} ({(ratio - balance) / ratio_se:+.2f} SE)"
    )

    # Importance sampling against brute force at the same Δt, at a temperature
    # where brute force is cheap.
    Tc, dt = args.check_temperature, 0.01
    check_importance = GridImportance.for_discrete_chain(
        system.start_A.calc,
        system.A,
        system.B,
        temperature_K=Tc,
        timestep_fs=dt,
        box=BOX_A,
        spacing=args.spacing,
    )
    r_is = estimate_rate(
        system.start_A,
        check_importance,
        system.A,
        system.B,
        timestep=dt * units.fs,
        temperature_K=Tc,
        n_roots=args.roots,
        channels=system.channels,
        seed=args.seed,
    )
    engine = BruteForce(
        system.start_A,
        system.A,
        system.B,
        timestep=dt * units.fs,
        temperature_K=Tc,
        n_walkers=4096,
        seed=args.seed,
        channels=system.channels,
    )
    engine.run(500)
    engine.reset_statistics()
    r_bf = engine.run(transitions=args.check_transitions, check_interval=200)
    diff = (r_is.rate_per_fs - r_bf.rate_per_fs) / (
        r_is.rate_se_per_fs**2 + r_bf.rate_se_per_fs**2
    ) ** 0.5
    print(
        f"\n{Tc:g} K, Δt = {dt} fs: importance sampled {r_is.rate_per_fs:.4e} ± "
        f"{r_is.rate_se_per_fs:.1e} fs⁻¹, brute force {r_bf.rate_per_fs:.4e} ± "
        f"{r_bf.rate_se_per_fs:.1e} fs⁻¹ ({r_bf.n_transitions} transitions): "
        f"{diff:+.2f} combined SE"
    )

    out = {
        "temperature_K": T,
        "grid": {
            "spacing_A": args.spacing,
            "rate_AB_per_fs": k_grid,
            "rate_BA_per_fs": exact.rate_BA_per_fs,
            "upper_fraction": f_grid,
            "prob_A_history": exact.prob_A_history,
            "prob_B_history": exact.prob_B_history,
        },
        "wrong_importance_temperature_K": args.wrong_temperature,
        "runs": runs,
        "extrapolated": fits,
        "detailed_balance": {
            "rate_ratio": ratio,
            "rate_ratio_se": ratio_se,
            "basin_ratio": balance,
        },
        "check_against_bruteforce": {
            "temperature_K": Tc,
            "timestep_fs": dt,
            "importance_sampled": r_is.to_dict(),
            "bruteforce": r_bf.to_dict(),
            "difference_in_combined_se": diff,
        },
        "wall_time_s": time.perf_counter() - t0,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out} ({out['wall_time_s']:.0f} s)")


if __name__ == "__main__":
    main()
