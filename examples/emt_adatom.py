"""A rate with a calculator the package did not write: ASE's EMT.

A Cu adatom hops between the hollow sites of a Cu(100) surface. The slab
(2x2 surface cell, two layers) is held fixed with ``FixAtoms``; only the adatom
moves, under overdamped Langevin dynamics with γ = 1 eV·fs/Å². EMT is an
ordinary ASE calculator, so the batched engines call it through
``CalculatorAdapter``, one walker at a time (about 2.3 ms per walker-step on
the 2-core test machine, with one EMT instance per walker slot).

* A: the adatom within 0.15 Å (laterally) of its starting hollow.
* B: the adatom 2.25 Å or more from it, i.e. in one of the four neighbouring
  hollows (2.55 Å away). The A -> B rate is the total hop rate out of a hollow.
* Channels: the direction of the hop (+x, +y, −x, −y); by symmetry each
  carries a quarter.
* Importance function: the committor of a radially symmetric model of the
  hop, U(r) = ΔE sin²(π r / d) with the EMT barrier ΔE and hollow spacing d,
  solved exactly in one dimension. It ignores the fourfold anisotropy and the
  adatom's height, so it is only approximate; the reweighted estimate is
  unbiased all the same.

References: brute force at a high temperature, at the same time step (the
same discrete chain), and overdamped harmonic TST over the four bridge saddles
(continuous time) at a lower temperature where brute force through the
adapter would take hours. The 2x2 cell gives the same barrier as a 3x3 cell
to 1e-4 eV (0.4324 against 0.4325 eV).

Run:  python examples/emt_adatom.py [--quick]
Writes data/references/emt_adatom.json.
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
from ase.build import add_adsorbate, fcc100
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms, FixCartesian
from ase.optimize import BFGS

from ase_rare import (
    BoxRegion,
    Branching,
    BruteForce,
    CalculatorAdapter,
    DiscRegion,
    Ensemble,
    ImportanceFunction,
    ProgressBar,
    measure_flux,
)
from ase_rare.channels import ChannelClassifier, ChannelTracker
from ase_rare.cv import FunctionCV
from ase_rare.importance.grid import BOUNDARY_SHIFT
from ase_rare.kernels import KB_EV_PER_K, LangevinParameters
from ase_rare.theory import HarmonicTST

torch.set_num_threads(1)

FRICTION = 1.0  # eV·fs/Å²
TIMESTEP_FS = 0.05  # the stability bound 2γ/λ_max is 0.22 fs at the saddle
RADIUS_A = 0.15  # Å
MARGIN_B = 0.3  # Å: B starts this far before the neighbouring hollow


def slab_with_adatom(site: str):
    """2x2x2 Cu(100) with a Cu adatom (atom 0) on ``site``; slab atoms fixed."""
    slab = fcc100("Cu", size=(2, 2, 2), vacuum=6.0)
    add_adsorbate(slab, "Cu", 1.7, site)
    atoms = slab[-1:] + slab[:-1]  # the adatom first
    atoms.set_constraint(FixAtoms(indices=list(range(1, len(atoms)))))
    atoms.calc = EMT()
    return atoms


def stationary_points():
    """The hollow minimum, relaxed, and the bridge saddle, relaxed in z only
    (the lateral forces vanish there by symmetry)."""
    minimum = slab_with_adatom("hollow")
    BFGS(minimum, logfile=None).run(fmax=1e-6)
    saddle = slab_with_adatom("bridge")
    fixed = saddle.constraints[0]
    saddle.set_constraint([fixed, FixCartesian(0, mask=(True, True, False))])
    BFGS(saddle, logfile=None).run(fmax=1e-6)
    saddle.set_constraint(fixed)
    minimum.info["name"], saddle.info["name"] = "hollow", "bridge"
    return minimum, saddle


class RadialCommittor(ImportanceFunction):
    """Committor of a radially symmetric hop model, as an importance function.

    For U(r) = ΔE sin²(π r / d) around the start hollow (two lateral
    dimensions, overdamped), the committor between the circles r_A and r_B
    solves q'' + (1/r − β U') q' = 0, so

        q(r) = ∫_{r_A}^{r} e^{βU(s)} / s ds  /  ∫_{r_A}^{r_B} e^{βU(s)} / s ds.

    The circles are moved by 0.5826 σ (inward for A, outward for B), the
    correction for regions that a chain of step σ checks only at its steps
    (see :meth:`ase_rare.importance.GridImportance.for_discrete_chain`). The
    logit is tabulated on a fine grid in r and interpolated linearly.
    """

    def __init__(
        self,
        center,
        barrier_eV: float,
        spacing: float,
        radius_A: float,
        radius_B: float,
        temperature_K: float,
        sigma: float,
    ):
        super().__init__()
        self.hparams = dict(
            center=list(map(float, center)),
            barrier_eV=barrier_eV,
            spacing=spacing,
            radius_A=radius_A,
            radius_B=radius_B,
            temperature_K=temperature_K,
            sigma=sigma,
        )
        self.temperature_K = temperature_K
        beta = 1.0 / (KB_EV_PER_K * temperature_K)
        r_a = radius_A - BOUNDARY_SHIFT * sigma
        r_b = radius_B + BOUNDARY_SHIFT * sigma
        r = np.linspace(r_a, r_b, 4001)
        integrand = np.exp(beta * barrier_eV * np.sin(np.pi * r / spacing) ** 2) / r
        steps = 0.5 * (integrand[1:] + integrand[:-1]) * np.diff(r)
        cumulative = np.concatenate([[0.0], np.cumsum(steps)])
        q = np.clip(cumulative / cumulative[-1], 1e-300, 1.0)
        one_minus = np.clip(1.0 - q, 1e-300, 1.0)
        # Near r_A, 1 − q is 1 to round-off; near r_B use the tail sum instead.
        tail = (cumulative[-1] - cumulative) / cumulative[-1]
        one_minus = np.where(q > 0.5, np.clip(tail, 1e-300, 1.0), one_minus)
        logit = np.log(q) - np.log(one_minus)
        logit[0] = logit[1] - (logit[2] - logit[1])  # finite at r_A itself
        self.register_buffer("center", torch.tensor(center, dtype=torch.float64))
        self.register_buffer("r", torch.tensor(r))
        self.register_buffer("logit_table", torch.tensor(logit))

    def forward(self, positions):
        d = positions[:, 0, :2].to(torch.float64) - self.center
        r = torch.sqrt((d * d).sum(-1) + 1e-24)
        r0, h = self.r[0], self.r[1] - self.r[0]
        u = torch.clamp((r - r0) / h, 0.0, len(self.r) - 1 - 1e-9)
        i = u.detach().floor().long()
        t = u - i
        return (1 - t) * self.logit_table[i] + t * self.logit_table[i + 1]


class HopDirection(ChannelClassifier):
    """Channel = direction of the hop: the side of the start hollow where the
    adatom enters B."""

    names = ("+x", "+y", "-x", "-y")

    def __init__(self, center):
        self.center = torch.as_tensor(center, dtype=torch.float64)

    def tracker(self, positions):
        return _HopTracker(self.center, positions)


class _HopTracker(ChannelTracker):
    names = HopDirection.names

    def __init__(self, center, positions):
        self.center = center
        self.last = positions[:, 0, :2].clone()

    def update(self, old, new, energy=None):
        self.last = new[:, 0, :2].clone()

    def labels(self):
        d = self.last - self.center
        quarter = torch.round(torch.atan2(d[:, 1], d[:, 0]) / (math.pi / 2)).long()
        return quarter % 4

    def restart(self, mask):
        pass

    def take(self, index):
        self.last = self.last[index]


def regions(start, spacing):
    center = torch.as_tensor(start.positions[0, :2].copy(), dtype=torch.float64)

    def lateral_distance(positions):
        d = positions[:, 0, :2] - center.to(positions.dtype)
        return torch.sqrt((d * d).sum(-1, keepdim=True))

    cv = FunctionCV(lateral_distance, ["r"])
    A = DiscRegion(cv, [0.0], RADIUS_A)
    B = BoxRegion(cv, [spacing - MARGIN_B], [100.0])
    return A, B, center.numpy()


def importance_sampled(start, A, B, center, htst, temperature, n_roots, seed):
    t0 = time.perf_counter()
    dt = TIMESTEP_FS * units.fs
    flux = measure_flux(
        start,
        A,
        B,
        timestep=dt,
        temperature_K=temperature,
        friction=FRICTION,
        n_exit_points=n_roots,
        n_walkers=16,
        equilibrate_fs=2.0,
        seed=seed,
        progress=True,
    )
    t_flux = time.perf_counter() - t0
    sigma = LangevinParameters(TIMESTEP_FS, temperature, FRICTION).noise_scale
    spacing = float(start.cell[0, 0]) / 2
    importance = RadialCommittor(
        center,
        htst.barriers_eV[0],
        spacing,
        RADIUS_A,
        spacing - MARGIN_B,
        temperature,
        sigma,
    )
    with Ensemble(
        start,
        importance,
        A,
        B,
        temperature_K=temperature,
        timestep=dt,
        friction=FRICTION,
        flux=flux,
        n_roots=n_roots,
        roots_per_batch=64,
        branching=Branching(interval=5),
        max_steps=20_000,
        channels=HopDirection(center),
        seed=seed,
    ) as ensemble:
        ensemble.attach(ProgressBar(ensemble, desc=f"ensemble {temperature:g} K"))
        result = ensemble.run()
    return result, t_flux, time.perf_counter() - t0


def brute_force(start, A, B, center, temperature, transitions, seed):
    engine = BruteForce(
        start,
        A,
        B,
        timestep=TIMESTEP_FS * units.fs,
        temperature_K=temperature,
        friction=FRICTION,
        n_walkers=16,
        seed=seed,
        channels=HopDirection(center),
    )
    engine.run(40)  # 2 fs: the walkers spread over the hollow
    engine.reset_statistics()
    return engine.run(transitions=transitions, check_interval=100)


def compare(rate, se, ref, ref_se=0.0) -> dict:
    combined = math.hypot(se, ref_se)
    return {
        "ratio": rate / ref,
        "ratio_se": se / ref,
        "difference_in_combined_se": (rate - ref) / combined,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer roots and transitions")
    p.add_argument("--hot", type=float, default=1200.0, help="K, with brute force")
    p.add_argument("--cold", type=float, default=600.0, help="K, against HTST")
    p.add_argument("--out", default="data/references/emt_adatom.json")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    n_roots = 64 if args.quick else 256
    transitions = 10 if args.quick else 40
    t_start = time.perf_counter()

    minimum, saddle = stationary_points()
    htst = HarmonicTST(minimum, [saddle], multiplicities=[4], friction=FRICTION)
    spacing = float(minimum.cell[0, 0]) / 2
    start = minimum.copy()
    # One EMT per walker slot: each keeps its neighbour list for one walker.
    start.calc = CalculatorAdapter(EMT(), start, per_walker=True)
    A, B, center = regions(start, spacing)
    print(
        f"EMT Cu adatom on Cu(100): barrier {htst.barriers_eV[0]:.4f} eV, HTST "
        f"prefactor 4 × {htst.prefactors_per_fs[0]:.4f} fs⁻¹, hollow spacing "
        f"{spacing:.4f} Å, Δt = {TIMESTEP_FS} fs"
    )

    runs = []
    for temperature, with_bf in ((args.hot, True), (args.cold, False)):
        result, t_flux, t_is = importance_sampled(
            start, A, B, center, htst, temperature, n_roots, args.seed
        )
        h = htst.rate(temperature)
        entry = {
            "temperature_K": temperature,
            "importance_sampling": {
                k: v
                for k, v in result.to_dict().items()
                if k not in ("root_contributions", "root_log_importance", "info")
            },
            "importance_sampling_wall_time_s": t_is,
            "flux_wall_time_s": t_flux,
            "htst_rate_per_fs": h.rate_per_fs,
            "vs_htst": compare(
                result.rate_per_fs, result.rate_se_per_fs, h.rate_per_fs
            ),
        }
        if with_bf:
            t0 = time.perf_counter()
            bf = brute_force(start, A, B, center, temperature, transitions, args.seed)
            entry["bruteforce"] = bf.to_dict()
            entry["bruteforce_wall_time_s"] = time.perf_counter() - t0
            entry["vs_bruteforce"] = compare(
                result.rate_per_fs,
                result.rate_se_per_fs,
                bf.rate_per_fs,
                bf.rate_se_per_fs,
            )
        runs.append(entry)

    print()
    print(
        f"{'T (K)':>6} {'method':<22} {'rate (fs⁻¹)':>22} {'walker-steps':>13} "
        f"{'wall (s)':>9}  channels +x/+y/-x/-y (%)"
    )
    for e in runs:
        r = e["importance_sampling"]
        fr = "/".join(f"{100 * f:.0f}" for f in r["channel_fractions"])
        print(
            f"{e['temperature_K']:>6g} {'importance sampling':<22} "
            f"{r['rate_per_fs']:>11.4e} ± {r['rate_se_per_fs']:.2e} "
            f"{r['walker_steps'] + r['flux_walker_steps']:>13.3g} "
            f"{e['importance_sampling_wall_time_s']:>9.0f}  {fr}"
        )
        if "bruteforce" in e:
            b = e["bruteforce"]
            total = sum(b["channel_counts"]) or 1
            fb = "/".join(f"{100 * c / total:.0f}" for c in b["channel_counts"])
            print(
                f"{'':>6} {'brute force':<22} {b['rate_per_fs']:>11.4e} ± "
                f"{b['rate_se_per_fs']:.2e} {b['walker_steps']:>13.3g} "
                f"{e['bruteforce_wall_time_s']:>9.0f}  {fb} "
                f"({b['n_transitions']} transitions)"
            )
            c = e["vs_bruteforce"]
            print(
                f"{'':>6} IS / brute force = {c['ratio']:.3f}, "
                f"{c['difference_in_combined_se']:+.1f} combined SE"
            )
        print(
            f"{'':>6} {'harmonic TST':<22} {e['htst_rate_per_fs']:>11.4e}"
            f"{'':>35}  25/25/25/25"
        )
        print(
            f"{'':>6} IS / HTST = {e['vs_htst']['ratio']:.3f} ± "
            f"{e['vs_htst']['ratio_se']:.3f}"
        )

    data = {
        "system": "EMT Cu adatom on a fixed 2x2x2 Cu(100) slab; A: lateral "
        f"distance <= {RADIUS_A} Å from the start hollow, B: >= "
        f"{spacing - MARGIN_B:.4f} Å (any neighbouring hollow)",
        "friction_eV_fs_per_A2": FRICTION,
        "timestep_fs": TIMESTEP_FS,
        "barrier_eV": htst.barriers_eV[0],
        "htst_prefactor_per_saddle_per_fs": htst.prefactors_per_fs[0],
        "htst_multiplicity": 4,
        "quick": args.quick,
        "seed": args.seed,
        "torch_threads": torch.get_num_threads(),
        "runs": runs,
        "wall_time_s": time.perf_counter() - t_start,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"\nwrote {out} ({data['wall_time_s']:.0f} s)")


if __name__ == "__main__":
    main()
