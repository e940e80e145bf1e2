"""Rugged 14D potential: 2D barriers kept, committor coupled to the extra modes.

Refines the 14D stationary points from the 2D ones and compares energies and
channel barriers, then estimates by shooting the committor at two points with the
same (x1, x2) on the x1 = 0 dividing line but different extra coordinates:

* relaxed  every u_k = x_k − c_k x1 = 0 (where the 2D system would sit);
* side +   u_k = +u* sign(c_k): every extra coordinate in its first side well of
           V, on the side from which relaxing pushes x1 towards B;
* side −   the mirror image, u_k = −u* sign(c_k).

The side states have the same energy and the same forces on (x1, x2), yet their
committors differ by many standard errors: the committor of the 14D system is not
a function of (x1, x2) alone. Writes a JSON summary.

    python examples/rugged_committor_coupling.py            # ~1 min on one core
    python examples/rugged_committor_coupling.py --walkers 500   # quick look
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from ase_rare import RuggedPotential, TwoChannelPotential
from ase_rare.bruteforce import shoot
from ase_rare.kernels import (
    KB_EV_PER_K,
    LangevinParameters,
    check_stability,
    free_coordinates,
    hessian,
    largest_curvature,
)
from ase_rare.structures import refine_stationary_point
from ase_rare.systems import rugged_system

HERE = Path(__file__).resolve().parent

#: 2D stationary points (x1, x2) in Å, METHOD.md §8.1.
POINTS_2D = {
    "minimum A": (-1.11802, -0.00462),
    "minimum B": (1.11802, -0.00462),
    "upper saddle": (0.0, 0.99749),
    "lower saddle": (-0.07604, -0.99768),
    "lower well": (0.0, -1.00249),
}

#: Points on the x1 = 0 dividing line where the committor is measured.
SHOOTING_POINTS = ("upper saddle", "lower well")


def comoving_positions(pot: RuggedPotential, x1: float, x2: float, u) -> np.ndarray:
    """Positions ``(7, 3)`` from (x1, x2) and the co-moving coordinates u_k."""
    q = np.zeros(14)
    q[0], q[1] = x1, x2
    q[2:] = np.asarray(pot.couplings) * x1 + np.asarray(u)
    return pot.to_positions(torch.as_tensor(q).unsqueeze(0))[0].numpy()


def energy(pot, positions: np.ndarray) -> float:
    return float(pot.batch_energy(torch.as_tensor(positions).unsqueeze(0))[0])


def stationary_points(pot: RuggedPotential) -> dict:
    """Energies and Hessian indices of the stationary points in 2D and in 14D."""
    base = TwoChannelPotential(pot.base.tilt)
    free = free_coordinates(7, True)
    out = {}
    for name, (x1, x2) in POINTS_2D.items():
        p2 = refine_stationary_point(
            base, np.array([[x1, x2, 0.0]]), planar=True, rigid=False
        )
        p14 = refine_stationary_point(
            pot, comoving_positions(pot, x1, x2, np.zeros(12)), planar=True, rigid=False
        )
        h = hessian(pot, torch.as_tensor(p14), free=free)
        out[name] = {
            "x1_A": float(p14[0, 0]),
            "x2_A": float(p14[0, 1]),
            "energy_2d_eV": energy(base, p2),
            "energy_14d_eV": energy(pot, p14),
            "index_14d": int((np.linalg.eigvalsh(h) < 0).sum()),
            "positions_A": p14,
        }
    return out


def side_well(pot: RuggedPotential) -> tuple[float, float]:
    """First side-well minimum u* and the ridge u_b of V, in Å (refined in 14D)."""
    x1, x2 = POINTS_2D["minimum A"]
    found = []
    for start in (pot.period, pot.period / 2):
        u = np.zeros(12)
        u[0] = start
        x = refine_stationary_point(
            pot, comoving_positions(pot, x1, x2, u), planar=True, rigid=False
        )
        found.append(float(x[1, 0] - pot.couplings[0] * x[0, 0]))
    return found[0], found[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--temperatures", type=float, nargs="+", default=[1000.0, 1500.0])
    p.add_argument("--timestep", type=float, default=0.005, help="fs")
    p.add_argument("--walkers", type=int, default=2000, help="per point and state")
    p.add_argument("--max-steps", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument(
        "--out",
        default=str(
            HERE.parent / "data" / "references" / "rugged_committor_coupling.json"
        ),
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    t_start = time.perf_counter()

    pot = RuggedPotential()
    system = rugged_system()
    points = stationary_points(pot)
    e_a = points["minimum A"]

    print("Stationary points (energies in eV; 14D refined from u_k = 0)")
    print(f"{'point':<14} {'x1 Å':>9} {'x2 Å':>9} {'E 2D':>10} {'E 14D':>10} index")
    for name, s in points.items():
        print(
            f"{name:<14} {s['x1_A']:9.5f} {s['x2_A']:9.5f} "
            f"{s['energy_2d_eV']:10.5f} {s['energy_14d_eV']:10.5f} {s['index_14d']:5d}"
        )
    barriers = {}
    for channel, saddle in (("upper", "upper saddle"), ("lower", "lower saddle")):
        b2 = points[saddle]["energy_2d_eV"] - e_a["energy_2d_eV"]
        b14 = points[saddle]["energy_14d_eV"] - e_a["energy_14d_eV"]
        barriers[channel] = {"barrier_2d_eV": b2, "barrier_14d_eV": b14}
        print(f"{channel} channel barrier: 2D {b2:.5f} eV, 14D {b14:.5f} eV")

    lam = largest_curvature(pot, torch.as_tensor(e_a["positions_A"]), planar=True)
    bound = 2.0 / lam
    u_star, u_ridge = side_well(pot)
    k = math.pi / pot.period

    def v(u):
        return 0.5 * pot.kappa * u * u + pot.roughness * math.sin(k * u) ** 2

    print(
        f"λ_max at the minimum {lam:.2f} eV/Å² -> Δt < 2γ/λ_max = {bound:.4f} fs "
        f"(γ = 1 eV·fs/Å²)"
    )
    print(
        f"side well u* = {u_star:.4f} Å at V = {v(u_star):.4f} eV; ridge "
        f"u_b = {u_ridge:.4f} Å at V = {v(u_ridge):.4f} eV"
    )
    roughness = []
    for T in args.temperatures:
        kT = KB_EV_PER_K * T
        roughness.append(
            {
                "temperature_K": T,
                "roughness_kT": pot.roughness / kT,
                "side_well_escape_kT": (v(u_ridge) - v(u_star)) / kT,
            }
        )
        print(
            f"  {T:.0f} K: a_r = {pot.roughness / kT:.2f} k_BT, escape from a side "
            f"well {(v(u_ridge) - v(u_star)) / kT:.2f} k_BT"
        )

    sign = np.sign(pot.couplings)
    states = {
        "relaxed": np.zeros(12),
        "side +": u_star * sign,
        "side -": -u_star * sign,
    }
    generator = torch.Generator().manual_seed(args.seed)
    rows = []
    print(f"\nCommittors by shooting, Δt = {args.timestep} fs, A/B = discs 0.2 Å")
    print(f"{'T K':>6} {'point':<13} {'state':<8} {'q':>7} {'SE':>7} {'N':>6}")
    for T in args.temperatures:
        params = LangevinParameters(args.timestep, T, 1.0)
        for point in SHOOTING_POINTS:
            x1, x2 = points[point]["x1_A"], points[point]["x2_A"]
            single = [comoving_positions(pot, x1, x2, u) for u in states.values()]
            for x in single:
                check_stability(pot, torch.as_tensor(x), params, planar=True)
            start = torch.cat(
                [torch.as_tensor(x).expand(args.walkers, 7, 3) for x in single]
            )
            hits = shoot(
                pot, system.A, system.B, start, params, generator, args.max_steps
            )
            for i, state in enumerate(states):
                h = hits[i * args.walkers : (i + 1) * args.walkers].double()
                q = float(h.mean())
                se = math.sqrt(q * (1 - q) / args.walkers)
                rows.append(
                    {
                        "temperature_K": T,
                        "point": point,
                        "x1_A": x1,
                        "x2_A": x2,
                        "state": state,
                        "committor": q,
                        "committor_se": se,
                        "n_walkers": args.walkers,
                    }
                )
                print(
                    f"{T:6.0f} {point:<13} {state:<8} {q:7.4f} {se:7.4f} "
                    f"{args.walkers:6d}"
                )
            plus, minus = rows[-2], rows[-1]
            diff = plus["committor"] - minus["committor"]
            se = math.hypot(plus["committor_se"], minus["committor_se"])
            print(f"{'':6} {'':<13} q(+) − q(−) = {diff:.4f} ± {se:.4f}")

    wall = time.perf_counter() - t_start
    print(f"\nwall time {wall:.1f} s")
    out = {
        "potential": {
            "tilt_eV_per_A": pot.base.tilt,
            "kappa_eV_per_A2": pot.kappa,
            "roughness_eV": pot.roughness,
            "period_A": pot.period,
            "couplings": list(pot.couplings),
        },
        "stationary_points": {
            name: {k: val for k, val in s.items() if k != "positions_A"}
            for name, s in points.items()
        },
        "barriers": barriers,
        "lambda_max_eV_per_A2": lam,
        "timestep_bound_fs": bound,
        "side_well_u_A": u_star,
        "side_well_ridge_u_A": u_ridge,
        "roughness": roughness,
        "timestep_fs": args.timestep,
        "friction_eV_fs_per_A2": 1.0,
        "region_radius_A": 0.2,
        "seed": args.seed,
        "committors": rows,
        "wall_time_s": wall,
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
