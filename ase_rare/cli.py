"""The ``ase-rare`` command line.

ase-rare run CONFIG.toml          the whole pipeline for any system (a TOML file)
ase-rare report RESULT.json ...   plots and a Markdown summary of finished runs
ase-rare demo [--quick]           LJ7 C3 -> C2 at 600 K with the shipped importance
                                  function: `run` on a packaged config, then `report`
ase-rare demo --references        the references alone: HTST, brute force, 2D grid
ase-rare htst [-T 600 500 ...]    harmonic TST for LJ7 C3 <-> C2
ase-rare bruteforce SYSTEM ...    brute-force rate with error bars
ase-rare grid [-T ...]            exact grid TPT for the 2D potential

Errors in the input (a bad configuration, a missing file, an unusable value)
end the command with exit status 2 and one line on standard error that names
the problem and the fix.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

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


def cmd_bruteforce(args) -> dict:
    from ase_rare.pipeline import check_device, run_bruteforce

    system = _system(args.system, channels=not args.no_channels)
    result = run_bruteforce(
        system,
        temperature=args.temperature,
        timestep_fs=args.timestep,
        walkers=args.walkers,
        transitions=args.transitions,
        max_fs=args.max_time,
        seed=_seed(args),
        compile=args.compile,
        quiet=args.quiet,
        device=check_device(args.device or "cpu"),
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


def cmd_references_demo(args) -> dict:
    """HTST and a brute-force run for LJ7 at 600 K, and the 2D grid reference."""
    from ase_rare.pipeline import run_bruteforce

    t0 = time.perf_counter()
    out = Path(args.out or "ase-rare-demo")
    out.mkdir(parents=True, exist_ok=True)
    transitions = 20 if args.quick else 100
    print("== LJ7 C3 -> C2 at 600 K ==")
    fw, bw = _lj7_htst([600.0])[0]
    print(
        f"harmonic TST:   k_AB = {fw.rate_per_fs:.3e} fs⁻¹, "
        f"k_BA = {bw.rate_per_fs:.3e} fs⁻¹"
    )
    system = _system("lj7")
    bf = run_bruteforce(
        system,
        temperature=600.0,
        timestep_fs=0.005,
        walkers=1024 if args.quick else 4096,
        transitions=transitions,
        max_fs=None,
        seed=_seed(args),
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


def _seed(args) -> int:
    from ase_rare.pipeline import DEFAULT_SEED

    return DEFAULT_SEED if args.seed is None else args.seed


def _brief(result) -> dict:
    """A result for ``--json`` output: without the per-root lists (they are in
    result.json)."""
    d = result.to_dict()
    d.pop("root_contributions", None)
    d.pop("root_log_importance", None)
    return d


def _run(config, args, *, out=None) -> dict:
    from ase_rare.pipeline import run_config
    from ase_rare.report import summary_markdown

    t0 = time.perf_counter()
    outputs = run_config(
        config,
        out=out,
        seed=args.seed,
        device=args.device,
        quiet=args.quiet,
        plots=False if getattr(args, "no_plots", False) else None,
    )
    wall = time.perf_counter() - t0
    files = [str(f) for o in outputs for f in o.files]
    if not args.json:
        print(summary_markdown([(o.folder / "result.json", o.result) for o in outputs]))
        folder = outputs[0].folder if len(outputs) == 1 else outputs[0].folder.parent
        print(f"Output in {folder} ({wall:.0f} s in all):")
        for f in files:
            print(f"  {f}")
        print(f"Look at the paths with: ase gui {outputs[0].folder / 'paths.traj'}")
    return {
        "results": [_brief(o.result) for o in outputs],
        "folders": [str(o.folder) for o in outputs],
        "files": files,
        "wall_time_s": wall,
    }


def cmd_run(args) -> dict:
    """The whole pipeline of a configuration file."""
    from ase_rare.config import load_config

    return _run(load_config(args.config), args, out=args.out)


def cmd_report(args) -> dict:
    """Plots and the Markdown summary of finished runs."""
    from ase_rare.report import load_results, make_report

    written = make_report(args.results, args.out)
    if not args.json:
        print((Path(written[-1])).read_text())
        print("Wrote:")
        for f in written:
            print(f"  {f}")
    return {
        "files": [str(f) for f in written],
        "results": {str(p): _brief(r) for p, r in load_results(args.results)},
    }


#: The configuration ``ase-rare demo`` runs.
DEMO_CONFIG = Path(__file__).with_name("configs") / "lj7_600K.toml"


def _quick(raw: dict) -> dict:
    """A smaller copy of a configuration for ``demo --quick`` (about a minute)."""
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    ens = raw.setdefault("ensemble", {})
    n = min(ens.get("n_roots", 4096), 128)
    ens["n_roots"] = n
    ens["roots_per_batch"] = min(ens.get("roots_per_batch", 512), 64)
    flux = raw.setdefault("flux", {})
    if "n_exit_points" in flux:
        flux["n_exit_points"] = max(n, min(flux["n_exit_points"], n))
    if "root_pool" in flux:
        flux["root_pool"] = min(flux["root_pool"], 20_000)
    out = raw.setdefault("output", {})
    out["paths"] = min(out.get("paths", 20), 5)
    refs = raw.get("references")
    if isinstance(refs, dict):
        raw["references"] = {k: v for k, v in refs.items() if k != "bruteforce"}
    imp = raw.get("importance", {})
    if isinstance(imp.get("train"), dict):
        train = dict(imp["train"])
        train["iterations"] = min(train.get("iterations", 10), 2)
        raw["importance"] = {**imp, "train": train}
    return raw


def cmd_demo(args) -> dict:
    """LJ7 C3 -> C2 at 600 K: `run` on the packaged configuration, then `report`."""
    if args.references:
        return cmd_references_demo(args)
    import tomllib

    from ase_rare.config import parse_config

    path = Path(args.config).expanduser().resolve() if args.config else DEMO_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"configuration file {path} not found")
    raw = tomllib.loads(path.read_text())
    # Reference files live in the source tree (data/references); an installed
    # copy of the package may not have them.
    refs = raw.get("references", {})
    files = refs.get("bruteforce_files", []) if isinstance(refs, dict) else []
    present = [f for f in files if (path.parent / f).is_file()]
    if isinstance(files, list) and len(present) < len(files) and not args.json:
        missing = sorted(set(files) - set(present))
        print(f"note: brute-force reference files not found, skipped: {missing}")
    if isinstance(refs, dict) and files:
        raw["references"] = {**refs, "bruteforce_files": present}
    if args.quick:
        raw = _quick(raw)
    config = parse_config(raw, base=path.parent, source=str(path))
    if not args.json:
        print(
            f"ase-rare demo: {path.name}"
            + (" (--quick: fewer roots)" if args.quick else "")
        )
    return _run(config, args, out=args.out or "ase-rare-demo")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ase-rare",
        description="Rates of rare transitions under overdamped Langevin dynamics.",
    )
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="random seed (default: the configuration's, else 2026)",
    )
    p.add_argument(
        "--device",
        default=None,
        help="torch device: cpu (default) or cuda[:N]; `bruteforce` runs on it, "
        "the branching ensemble of `run` and `demo` needs cpu",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of this process (default 1: the tensors are small and "
        "extra threads mostly wait on each other; use [execution] workers for "
        "parallel batches)",
    )
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="the whole pipeline of a TOML configuration")
    r.add_argument("config", help="configuration file (TOML)")
    r.add_argument("--out", default=None, help="output folder (overrides [output])")
    r.add_argument("--no-plots", action="store_true", help="skip the PNG report")
    r.set_defaults(func=cmd_run)

    rep = sub.add_parser("report", help="plots and summary of result.json files")
    rep.add_argument("results", nargs="+", help="result.json files or their folders")
    rep.add_argument(
        "--out", default=None, help="folder for the report (default: the first's)"
    )
    rep.set_defaults(func=cmd_report)

    d = sub.add_parser(
        "demo", help="LJ7 C3 -> C2 at 600 K with the shipped importance function"
    )
    d.add_argument("--quick", action="store_true", help="a smoke run (< 1 min)")
    d.add_argument("--out", default=None, help="output folder (ase-rare-demo)")
    d.add_argument(
        "--config",
        default=None,
        help="run this configuration instead of the packaged LJ7 one",
    )
    d.add_argument(
        "--references",
        action="store_true",
        help="only the references: LJ7 HTST and brute force, 2D grid TPT",
    )
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
    if args.threads < 1:
        print(
            f"ase-rare: error: --threads must be >= 1; got {args.threads}",
            file=sys.stderr,
        )
        return 2
    import torch

    torch.set_num_threads(args.threads)
    try:
        result = args.func(args)
    except (ValueError, OSError, NotImplementedError) as err:
        print(f"ase-rare: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
