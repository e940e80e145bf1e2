"""LJ7 C3 -> C2 rates by importance sampling with the shipped SchNet functions.

For each temperature: a flux run in A (J_A and a pool of ``--pool`` exit
points; a weighted ensemble binned on the function's ln I,
:mod:`ase_rare.flux_splitting`, or with ``--plain-pool`` an unbiased run),
roots drawn from the pool in proportion to ``lj7-<T>K``
(:func:`ase_rare.estimate.importance_roots`: a few exits next to S2 carry much
of P_AB, and uniform roots miss them), then a branching random walk of tilted
paths from the roots on ``--workers`` processes, giving the rate with its
standard error (the pool's own error included), the naive (non-reweighted)
estimate, the mode fractions M1-M4 and the ratio to harmonic TST. At 600 K
also the package's brute-force reference and the reverse C2 -> C3 rate with
the same network (ln I_BA = ln(1 − q)), and the detailed-balance ratio
against HTST's.

    python examples/lj7_importance.py                      # 600 500 400 300 K
    python examples/lj7_importance.py --temperatures 600 --pool 1000000 --roots 8000

Writes ``data/references/lj7_importance.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from ase import units

from ase_rare import Branching, Ensemble
from ase_rare.data import load_importance
from ase_rare.estimate import importance_roots, measure_flux
from ase_rare.flux_splitting import FluxSplitting, split_flux_run
from ase_rare.structures import lj7_cluster
from ase_rare.systems import lj7_system
from ase_rare.theory import HarmonicTST

HERE = Path(__file__).resolve().parent
DT_FS = 0.005


def htst(temperature):
    forward = HarmonicTST(
        lj7_cluster("C3"), [lj7_cluster("S1"), lj7_cluster("S2")], multiplicities=[2, 2]
    )
    backward = forward.reverse(lj7_cluster("C2"), multiplicities=[1, 1])
    return forward.rate(temperature), backward.rate(temperature)


def one_direction(system, importance, temperature, args, seed, reverse=False):
    start, A, B = system.start_A, system.A, system.B
    if reverse:
        start, A, B = system.start_B, system.B, system.A
        importance = importance.reversed()
    t0 = time.perf_counter()
    pool = args.pool_now if not reverse else args.reverse_pool
    if args.plain_pool:
        flux = measure_flux(
            start,
            A,
            B,
            timestep=DT_FS * units.fs,
            temperature_K=temperature,
            n_exit_points=pool,
            n_walkers=args.flux_walkers,
            exits_per_point=1,
            equilibrate_fs=10.0,
            seed=seed,
            compile=True,
        )
    else:
        flux = split_flux_run(
            start,
            A,
            B,
            FluxSplitting(importance, every=25, walkers_per_bin=8, groups=32),
            timestep=DT_FS * units.fs,
            temperature_K=temperature,
            n_exit_points=pool,
            equilibrate_fs=20.0,
            seed=seed,
        )
    t_flux = time.perf_counter() - t0
    torch.set_num_threads(args.workers)
    n_roots = args.reverse_roots if reverse else args.roots_now
    roots = importance_roots(flux, importance, n_roots, seed=seed + 2)
    torch.set_num_threads(1)
    del flux
    t_roots = time.perf_counter() - t0 - t_flux
    with Ensemble(
        start,
        importance,
        A,
        B,
        temperature_K=temperature,
        timestep=DT_FS * units.fs,
        flux=roots,
        n_roots=n_roots,
        branching=Branching(),
        channels=None if reverse else system.channels,
        max_steps=args.max_steps,
        seed=seed + 1,
        direction="B->A" if reverse else "A->B",
    ) as ensemble:
        result = ensemble.run(
            "processes" if args.workers > 1 else None, max_workers=args.workers
        )
    if not args.quiet:
        print(result.summary(), flush=True)
    row = result.to_dict()
    for key in ("root_contributions", "root_log_importance", "root_log_weights"):
        row.pop(key, None)
    row["flux_wall_time_s"] = t_flux
    row["root_selection_wall_time_s"] = t_roots
    row["production_wall_time_s"] = time.perf_counter() - t0
    row["workers"] = args.workers
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--temperatures", type=float, nargs="+", default=[600, 500, 400, 300]
    )
    p.add_argument(
        "--roots",
        type=int,
        nargs="+",
        default=[100_000, 40_000, 40_000, 40_000],
        help="roots per temperature (one value: all)",
    )
    p.add_argument(
        "--pool",
        type=int,
        nargs="+",
        default=[4_000_000, 2_000_000, 2_000_000, 2_000_000],
        help="exits the roots are drawn from, per temperature (one value: all)",
    )
    p.add_argument("--reverse-pool", type=int, default=1_000_000)
    p.add_argument("--reverse-roots", type=int, default=20_000)
    p.add_argument(
        "--plain-pool",
        action="store_true",
        help="an unbiased flux run for the pool (default: a weighted ensemble)",
    )
    p.add_argument(
        "--flux-walkers", type=int, default=4096, help="of the plain pool's run"
    )
    p.add_argument("--max-steps", type=int, default=4000)
    p.add_argument("--seed", type=int, default=101)
    p.add_argument("--workers", type=int, default=2, help="processes")
    p.add_argument("--no-reverse", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.add_argument(
        "--out",
        default=str(HERE.parent / "data" / "references" / "lj7_importance.json"),
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    system = lj7_system(modes=True)
    # The long run (2000 transitions) first: it is the reference compared with.
    refs = HERE.parent / "data" / "references"
    brute = {"runs": []}
    for name in ("lj7_bruteforce_600K_long.json", "lj7_bruteforce_600K.json"):
        if (refs / name).exists():
            brute["runs"] += json.loads((refs / name).read_text())["runs"]
    long_run = refs / "lj7_bruteforce_600K_long.json"
    bf_speed = 0.0
    if long_run.exists():
        run = json.loads(long_run.read_text())["runs"][0]
        bf_speed = run["walker_steps"] / run["wall_time_s"]
    rows = []
    for name in ("roots", "pool"):
        given = getattr(args, name)
        if len(given) == 1:
            setattr(args, name, given * len(args.temperatures))
        elif len(given) < len(args.temperatures):
            p.error(f"--{name} needs one value or one per temperature")
    for k, t in enumerate(args.temperatures):
        args.roots_now, args.pool_now = args.roots[k], args.pool[k]
        importance = load_importance(f"lj7-{t:.0f}K")
        fw_htst, bw_htst = htst(t)
        row = {
            "temperature_K": t,
            "importance": f"lj7-{t:.0f}K",
            "htst_rate_per_fs": fw_htst.rate_per_fs,
            "htst_reverse_rate_per_fs": bw_htst.rate_per_fs,
            "forward": one_direction(system, importance, t, args, args.seed + int(t)),
        }
        fw = row["forward"]
        row["ratio_to_htst"] = fw["rate_per_fs"] / fw_htst.rate_per_fs
        row["ratio_to_htst_se"] = fw["rate_se_per_fs"] / fw_htst.rate_per_fs
        # Work-normalised variance: relative variance of the rate times the
        # walker-steps it took. Brute force counting N transitions has relative
        # variance 1/N after N / (k Δt) walker-steps: 1 / (k Δt), with k taken
        # from HTST (brute force cannot be run at the low temperatures).
        steps = fw["walker_steps"] + fw["flux_walker_steps"]
        is_wnv = (fw["rate_se_per_fs"] / fw["rate_per_fs"]) ** 2 * steps
        bf_wnv = 1.0 / (fw_htst.rate_per_fs * DT_FS)
        row["work_normalised_variance"] = is_wnv
        row["bruteforce_work_normalised_variance"] = bf_wnv
        row["efficiency_vs_bruteforce"] = bf_wnv / is_wnv
        # The same in core-seconds, which also counts the evaluations of I
        # (on the pool and along the paths): brute force at the measured speed
        # of the long 600 K run (walker-steps per second on one core).
        core_s = fw["production_wall_time_s"] * args.workers
        is_cnv = (fw["rate_se_per_fs"] / fw["rate_per_fs"]) ** 2 * core_s
        bf_cnv = bf_wnv / bf_speed if bf_speed else float("nan")
        row["core_seconds"] = core_s
        row["bruteforce_core_seconds_per_transition"] = bf_cnv
        row["efficiency_vs_bruteforce_core_seconds"] = bf_cnv / is_cnv
        if t == 600:
            row["bruteforce"] = [
                {k: r[k] for k in ("timestep_fs", "rate_per_fs", "rate_se_per_fs")}
                for r in brute.get("runs", [])
            ]
            if not args.no_reverse:
                rev = one_direction(
                    system, importance, t, args, args.seed + 7, reverse=True
                )
                row["reverse"] = rev
                ratio = fw["rate_per_fs"] / rev["rate_per_fs"]
                rel = (
                    (fw["rate_se_per_fs"] / fw["rate_per_fs"]) ** 2
                    + (rev["rate_se_per_fs"] / rev["rate_per_fs"]) ** 2
                ) ** 0.5
                row["detailed_balance_ratio"] = ratio
                row["detailed_balance_ratio_se"] = ratio * rel
                row["htst_detailed_balance_ratio"] = (
                    fw_htst.rate_per_fs / bw_htst.rate_per_fs
                )
        rows.append(row)
        Path(args.out).write_text(
            json.dumps({"timestep_fs": DT_FS, "rows": rows}, indent=1)
        )
    for row in rows:
        fw = row["forward"]
        print(
            f"{row['temperature_K']:.0f} K: rate {fw['rate_per_fs']:.3e} ± "
            f"{fw['rate_se_per_fs']:.1e} fs⁻¹, HTST {row['htst_rate_per_fs']:.3e} "
            f"fs⁻¹, ratio {row['ratio_to_htst']:.3f} ± {row['ratio_to_htst_se']:.3f}, "
            f"production {fw['production_wall_time_s']:.0f} s"
        )


if __name__ == "__main__":
    main()
