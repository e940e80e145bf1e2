"""How well an LJ7 importance function knows the committor next to the saddles.

From each saddle type (S1: modes M1/M2, S2: modes M3/M4) ``--states`` short
unbiased runs of ``--steps`` steps give states in the saddle's neighbourhood;
each state is shot ``--shots`` times (unbiased, until A or B) for a
brute-force committor q̂, and compared with the function's I. Printed per
saddle: mean q̂ and mean I, and for the undecided states (0.05 < q̂ < 0.95)
the medians of ln I and ln q̂.

    python examples/lj7_saddle_committor.py [lj7-600K] [--states 256]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ase_rare.bruteforce import shoot
from ase_rare.data import load_importance
from ase_rare.kernels import LangevinParameters, draw_noise, overdamped_step
from ase_rare.structures import lj7_cluster
from ase_rare.systems import lj7_system


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("function", nargs="?", default="lj7-600K")
    p.add_argument("--states", type=int, default=256)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--shots", type=int, default=16)
    p.add_argument("--timestep-fs", type=float, default=0.005)
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--out", default=None, help="JSON file")
    args = p.parse_args()
    torch.set_num_threads(1)
    system = lj7_system()
    potential = system.start_A.calc
    importance = load_importance(args.function)
    params = LangevinParameters(args.timestep_fs, importance.temperature_K, 1.0)
    generator = torch.Generator().manual_seed(args.seed)
    rows = []
    for name in ("S1", "S2"):
        x = torch.as_tensor(lj7_cluster(name).positions).repeat(args.states, 1, 1)
        for _ in range(args.steps):
            _, forces = potential.batch_energy_forces(x)
            x = overdamped_step(x, forces, draw_noise(x, True, generator), params)
        hits = shoot(
            potential,
            system.A,
            system.B,
            x.repeat_interleave(args.shots, 0),
            params,
            generator,
            200_000,
            planar=True,
        )
        q = hits.reshape(-1, args.shots).double().mean(1).numpy()
        with torch.no_grad():
            log_i = importance.log_importance(x).numpy()
        mid = (q > 0.05) & (q < 0.95)
        row = dict(
            saddle=name,
            n_states=len(q),
            mean_q=float(q.mean()),
            mean_importance=float(np.exp(log_i).mean()),
            n_undecided=int(mid.sum()),
            median_log_importance_undecided=float(np.median(log_i[mid])),
            median_log_q_undecided=float(np.median(np.log(q[mid]))),
        )
        rows.append(row)
        print(
            f"{name}: mean q̂ {row['mean_q']:.3f}, mean I {row['mean_importance']:.3f}; "
            f"{row['n_undecided']} states with 0.05 < q̂ < 0.95: median ln I "
            f"{row['median_log_importance_undecided']:.2f}, median ln q̂ "
            f"{row['median_log_q_undecided']:.2f}",
            flush=True,
        )
    if args.out:
        Path(args.out).write_text(
            json.dumps({"function": args.function, **vars(args), "rows": rows}) + "\n"
        )


if __name__ == "__main__":
    main()
