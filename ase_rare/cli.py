"""The ``ase-rare`` command line.

ase-rare demo [--quick]          rates of the benchmark systems, end to end
ase-rare htst [-T 600 500 ...]   harmonic TST for LJ7 C3 <-> C2
ase-rare bruteforce SYSTEM ...   brute-force rate with error bars
ase-rare grid [-T ...]           exact grid TPT for the 2D potential
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ase import units

#: Systems the ``bruteforce`` command knows by name.
SYSTEMS = ("lj7", "two-channel", "rugged")


def _system(name: str, channels: bool = True):
    """A benchmark system by name, with its channel classifier if asked for."""
    from ase_rare import systems

    if name == "lj7":
        return systems.lj7_system(modes=channels)
    system = {
        "two-channel": systems.two_channel_system,
        "rugged": systems.rugged_system,
    }[name]()
    if not channels:
        system.channels = None
    return system


def _lj7_htst(temperatures):
    from ase_rare.structures import lj7_cluster
    from ase_rare.theory import HarmonicTST

    saddles = [lj7_cluster("S1"), lj7_cluster("S2")]
    forward = HarmonicTST(lj7_cluster("C3"), saddles, multiplicities=[2, 2])
    backward = forward.reverse(lj7_cluster("C2"), multiplicities=[1, 1])
    return [(forward.rate(t), backward.rate(t)) for t in temperatures]


def cmd_htst(args) -> dict:
    rows = []
    for t, (fw, bw) in zip(
        args.temperatures, _lj7_htst(args.temperatures), strict=True
    ):
        f_s1 = fw.fractions[0] / 2
        f_s2 = fw.fractions[1] / 2
        rows.append(
            {
                "temperature_K": t,
                "rate_AB_per_fs": fw.rate_per_fs,
                "rate_BA_per_fs": bw.rate_per_fs,
                "mode_fraction_M1_M2": f_s1,
                "mode_fraction_M3_M4": f_s2,
            }
        )
    if not args.json:
        print("LJ7 C3 -> C2, overdamped harmonic TST, γ = 1 eV·fs/Å²")
        print(
            f"{'T (K)':>7} {'k_AB (fs⁻¹)':>13} {'M1=M2':>7} {'M3=M4':>7} "
            f"{'k_BA (fs⁻¹)':>13}"
        )
        for r in rows:
            print(
                f"{r['temperature_K']:>7g} {r['rate_AB_per_fs']:>13.4e} "
                f"{r['mode_fraction_M1_M2']:>7.3f} {r['mode_fraction_M3_M4']:>7.3f} "
                f"{r['rate_BA_per_fs']:>13.4e}"
            )
    return {"htst": rows}


def _run_bruteforce(
    system,
    *,
    temperature,
    timestep_fs,
    walkers,
    transitions,
    max_fs,
    seed,
    compile,
    quiet,
    equilibrate_fs=10.0,
):
    from tqdm import tqdm

    from ase_rare.bruteforce import BruteForce

    engine = BruteForce(
        system.start_A,
        system.A,
        system.B,
        timestep=timestep_fs * units.fs,
        temperature_K=temperature,
        n_walkers=walkers,
        seed=seed,
        channels=system.channels,
        compile=compile,
    )
    engine.run(max(1, int(round(equilibrate_fs / timestep_fs))))
    engine.reset_statistics()
    max_steps = int(max_fs / timestep_fs) if max_fs else None
    chunk = 200
    with tqdm(
        total=transitions,
        disable=quiet,
        unit="transition",
        file=sys.stderr,
        desc=f"brute force {system.name} {temperature:g} K",
    ) as bar:
        while True:
            result = engine.run(chunk, check_interval=chunk)
            bar.n = min(result.n_transitions, transitions)
            bar.set_postfix_str(
                f"rate {result.rate_per_fs:.3g} ± {result.rate_se_per_fs:.2g} fs⁻¹"
            )
            bar.refresh()
            if result.n_transitions >= transitions:
                break
            if max_steps is not None and engine.nsteps >= max_steps:
                break
    return engine.result()


def cmd_bruteforce(args) -> dict:
    system = _system(args.system, channels=not args.no_channels)
    result = _run_bruteforce(
        system,
        temperature=args.temperature,
        timestep_fs=args.timestep,
        walkers=args.walkers,
        transitions=args.transitions,
        max_fs=args.max_time,
        seed=args.seed,
        compile=args.compile,
        quiet=args.quiet,
    )
    if not args.json:
        print(result.summary())
    return {"bruteforce": result.to_dict()}


def cmd_grid(args) -> dict:
    from ase_rare.systems import two_channel_system
    from ase_rare.theory import solve_grid_tpt

    system = two_channel_system()
    rows = []
    for t in args.temperatures:
        r = solve_grid_tpt(
            system.start_A.calc,
            system.A,
            system.B,
            temperature_K=t,
            box=(-2.2, 2.2, -2.2, 2.2),
            spacing=args.spacing,
        )
        rows.append(
            {
                "temperature_K": t,
                "spacing_A": args.spacing,
                "rate_AB_per_fs": r.rate_AB_per_fs,
                "rate_BA_per_fs": r.rate_BA_per_fs,
                "channel_fractions": dict(r.channel_fractions),
            }
        )
    if not args.json:
        print(
            "Two-channel 2D potential, exact grid TPT (continuous time), "
            f"h = {args.spacing} Å, γ = 1 eV·fs/Å²"
        )
        print(f"{'T (K)':>7} {'k_AB (fs⁻¹)':>13} {'upper':>7} {'lower':>7}")
        for r in rows:
            f = r["channel_fractions"]
            print(
                f"{r['temperature_K']:>7g} {r['rate_AB_per_fs']:>13.4e} "
                f"{f['upper']:>7.3f} {f['lower']:>7.3f}"
            )
    return {"grid": rows}


def cmd_demo(args) -> dict:
    """HTST and a brute-force run for LJ7 at 600 K, and the 2D grid reference."""
    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    transitions = 20 if args.quick else 100
    print("== LJ7 C3 -> C2 at 600 K ==")
    fw, bw = _lj7_htst([600.0])[0]
    print(
        f"harmonic TST:   k_AB = {fw.rate_per_fs:.3e} fs⁻¹, "
        f"k_BA = {bw.rate_per_fs:.3e} fs⁻¹"
    )
    system = _system("lj7")
    bf = _run_bruteforce(
        system,
        temperature=600.0,
        timestep_fs=0.005,
        walkers=1024 if args.quick else 4096,
        transitions=transitions,
        max_fs=None,
        seed=args.seed,
        compile=not args.quick,
        quiet=args.quiet,
    )
    print(
        f"brute force:    k_AB = {bf.rate_per_fs:.3e} ± {bf.rate_se_per_fs:.1e} "
        f"fs⁻¹ ({bf.n_transitions} transitions, {bf.walker_steps:.3g} walker-steps, "
        f"Δt = {bf.timestep_fs} fs)"
    )
    print(
        f"ratio brute force / HTST = {bf.rate_per_fs / fw.rate_per_fs:.3f} ± "
        f"{bf.rate_se_per_fs / fw.rate_per_fs:.3f}"
    )
    htst_modes = [fw.fractions[0] / 2] * 2 + [fw.fractions[1] / 2] * 2
    pairs = zip(bf.channel_fractions.items(), htst_modes, strict=True)
    print(
        "mode fractions, brute force vs HTST: "
        + ", ".join(f"{n} {100 * f:.0f} % vs {100 * h:.1f} %" for (n, f), h in pairs)
    )
    print("\n== Two-channel 2D potential at 1000 K: exact grid TPT ==")
    grid = cmd_grid(
        argparse.Namespace(temperatures=[1000.0], spacing=0.02, json=False)
    )["grid"]
    result = {
        "lj7_600K": {
            "htst_forward": fw.to_dict(),
            "htst_backward": bw.to_dict(),
            "bruteforce": bf.to_dict(),
        },
        "two_channel_grid": grid,
        "wall_time_s": time.perf_counter() - t0,
    }
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out / 'result.json'} ({result['wall_time_s']:.0f} s)")
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ase-rare",
        description="Rates of rare transitions under overdamped Langevin dynamics.",
    )
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--seed", type=int, default=2026)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="LJ7 at 600 K and the 2D grid reference")
    d.add_argument("--quick", action="store_true", help="a smoke run (< 1 min)")
    d.add_argument("--out", default="ase-rare-demo", help="output folder")
    d.set_defaults(func=cmd_demo)

    h = sub.add_parser("htst", help="harmonic TST for LJ7 C3 <-> C2")
    h.add_argument(
        "-T",
        "--temperatures",
        type=float,
        nargs="+",
        default=[600.0, 500.0, 400.0, 300.0],
        help="K",
    )
    h.set_defaults(func=cmd_htst)

    g = sub.add_parser("grid", help="exact grid TPT for the 2D two-channel potential")
    g.add_argument(
        "-T",
        "--temperatures",
        type=float,
        nargs="+",
        default=[2000.0, 1500.0, 1000.0],
        help="K",
    )
    g.add_argument("--spacing", type=float, default=0.01, help="grid spacing in Å")
    g.set_defaults(func=cmd_grid)

    b = sub.add_parser("bruteforce", help="brute-force rate with error bars")
    b.add_argument("system", choices=SYSTEMS)
    b.add_argument("-T", "--temperature", type=float, default=600.0, help="K")
    b.add_argument("--timestep", type=float, default=0.005, help="fs")
    b.add_argument("--walkers", type=int, default=4096)
    b.add_argument("--transitions", type=int, default=100)
    b.add_argument(
        "--max-time",
        type=float,
        default=None,
        help="stop after this much time per walker, in fs",
    )
    b.add_argument("--compile", action="store_true", help="torch.compile the step")
    b.add_argument(
        "--no-channels",
        action="store_true",
        help="skip channel classification (LJ7 modes cost about one extra force "
        "evaluation per step)",
    )
    b.set_defaults(func=cmd_bruteforce)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"ase-rare: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
