"""Brute-force LJ7 C3 -> C2 rate at 600 K, at two time steps.

Runs the batched unbiased engine until at least ``--transitions`` A -> B
transitions have been seen at each time step, after an equilibration period
whose statistics are discarded, and writes the results to JSON.

    python examples/lj7_bruteforce.py                # 600 K, dt = 0.005, 0.0025 fs
    python examples/lj7_bruteforce.py --transitions 50 --walkers 512   # quick look

The long reference ``data/references/lj7_bruteforce_600K_long.json`` (2002
transitions, 26 min on one core)::

    OMP_NUM_THREADS=1 python examples/lj7_bruteforce.py --timesteps 0.005 \
        --transitions 2000 --seed 4242 --modes \
        --out data/references/lj7_bruteforce_600K_long.json

The reverse C2 -> C3 reference ``data/references/lj7_bruteforce_600K_reverse.json``::

    OMP_NUM_THREADS=1 python examples/lj7_bruteforce.py --reverse --timesteps 0.005 \
        --transitions 100 --seed 99 \
        --out data/references/lj7_bruteforce_600K_reverse.json

Published brute-force value: 4.41e-4 fs⁻¹ (HTST: 4.59e-4 fs⁻¹).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ase import units

from ase_rare.bruteforce import BruteForce
from ase_rare.systems import lj7_system

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--temperature", type=float, default=600.0, help="K")
    p.add_argument("--timesteps", type=float, nargs="+", default=[0.005, 0.0025])
    p.add_argument("--transitions", type=int, default=400)
    p.add_argument("--walkers", type=int, default=4096)
    p.add_argument("--equilibrate-fs", type=float, default=20.0)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument(
        "--modes", action="store_true", help="classify transitions into M1-M4"
    )
    p.add_argument(
        "--reverse",
        action="store_true",
        help="C2 -> C3: start in B (around C2) and count arrivals in A",
    )
    p.add_argument(
        "--out",
        default=str(HERE.parent / "data" / "references" / "lj7_bruteforce_600K.json"),
    )
    args = p.parse_args()

    system = lj7_system(modes=args.modes and not args.reverse)
    start, A, B = system.start_A, system.A, system.B
    if args.reverse:
        start, A, B = system.start_B, system.B, system.A
    runs = []
    for dt in args.timesteps:
        engine = BruteForce(
            start,
            A,
            B,
            timestep=dt * units.fs,
            temperature_K=args.temperature,
            n_walkers=args.walkers,
            seed=args.seed,
            compile=not args.no_compile,
            channels=system.channels,
        )
        engine.run(int(round(args.equilibrate_fs / dt)))
        engine.reset_statistics()
        result = engine.run(transitions=args.transitions)
        print(f"\nΔt = {dt} fs\n{result.summary()}", flush=True)
        runs.append(result.to_dict())

    out = {
        "system": ("LJ7 C2 -> C3" if args.reverse else "LJ7 C3 -> C2")
        + " (A: disc 0.03 around C3, B: disc 0.05 around C2 in (mu2, mu3))",
        "direction": "B->A" if args.reverse else "A->B",
        "temperature_K": args.temperature,
        "friction_eV_fs_per_A2": 1.0,
        "equilibration_fs": args.equilibrate_fs,
        **(
            {}
            if args.reverse
            else {
                "published_bruteforce_rate_per_fs": 4.41e-4,
                "htst_mode_fractions": {
                    "M1": 0.318,
                    "M2": 0.318,
                    "M3": 0.182,
                    "M4": 0.182,
                },
            }
        ),
        "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
