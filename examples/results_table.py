"""The README's importance-sampling results table, generated from the JSON in data/.

    python examples/results_table.py            # print the Markdown
    python examples/results_table.py --write    # replace the block in README.md

The block sits between ``<!-- results:begin -->`` and ``<!-- results:end -->``;
``tests/test_results_table.py`` checks that README.md matches this script's
output, so the table cannot drift from the numbers.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFS = ROOT / "data" / "references"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _e(value: float, se: float) -> str:
    """``(4.32 ± 0.05)e-4`` style."""
    if not value:
        return f"{value:.3g} ± {se:.2g}"
    exp = int(f"{value:e}".split("e")[1])
    return f"({value / 10**exp:.2f} ± {se / 10**exp:.2f})e{exp}"


def two_d_rows() -> list[str]:
    path = REFS / "two_channel_trained.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    out = [
        "2D two-channel potential with the shipped MLP `two-channel-1000K`, carried "
        "to the other temperatures by transfer (`examples/two_channel_trained.py`, "
        f"Δt = {data['temperatures'][0]['timestep_fs']} fs, "
        f"{data['temperatures'][0]['n_roots']} roots, one tilted path per root), "
        "against the exact grid solution at the same Δt:",
        "",
        "| T (K) | rate (fs⁻¹) | grid (fs⁻¹) | deviation (SE) "
        "| upper channel (%) | grid (%) | naive (%) | rel. var. per root "
        "| CPU (s) | brute force: walker-steps per transition |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in data["temperatures"]:
        out.append(
            f"| {row['temperature_K']:.0f} "
            f"| {_e(row['rate_per_fs'], row['rate_se_per_fs'])} "
            f"| {row['grid_rate_per_fs']:.3e} "
            f"| {row['rate_deviation_in_se']:+.1f} "
            f"| {100 * row['upper_fraction']:.1f} ± "
            f"{100 * row['upper_fraction_se']:.1f} "
            f"| {100 * row['grid_upper_fraction']:.1f} "
            f"| {100 * row['naive_upper_fraction']:.1f} "
            f"| {row['relative_variance_per_root']:.2f} "
            f"| {row['cpu_s'] + row['training_cpu_s']:.0f} "
            f"| {row['bruteforce_walker_steps_per_transition']:.1e} |"
        )
    out += [
        "",
        "CPU time includes the transfer training at that temperature. The naive "
        "column is the unweighted count of successful paths; brute force would "
        "need the walker-steps in the last column for every transition it counts.",
        "",
    ]
    return out


def rugged_rows() -> list[str]:
    path = REFS / "rugged_rates.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    bf = data["bruteforce"]
    rows = data["importance_sampling"]
    out = [
        f"14D rugged potential with the shipped MLP `{data['importance']}` on all "
        "14 coordinates, carried down by transfer (`examples/rugged_rates.py`, "
        f"Δt = {data['timestep_fs']} fs, {rows[0]['n_roots']} roots, one tilted "
        "path per root); no exact solver reaches 14D, so the reference is the "
        f"package's brute force at {bf['temperature_K']:.0f} K "
        f"({bf['n_transitions']} transitions): "
        f"{_e(bf['rate_per_fs'], bf['rate_se_per_fs'])} fs⁻¹, upper channel "
        f"{100 * bf['upper_fraction']:.1f} ± {100 * bf['upper_fraction_se']:.1f} %.",
        "",
        "| T (K) | rate (fs⁻¹) | vs brute force (SE) | upper channel (%) "
        "| naive (%) | rel. var. per root | CPU (s) "
        "| brute force: walker-steps per transition |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        dev = row.get("bruteforce_deviation_in_combined_se")
        out.append(
            f"| {row['temperature_K']:.0f} "
            f"| {_e(row['rate_per_fs'], row['rate_se_per_fs'])} "
            f"| {'—' if dev is None else f'{dev:+.1f}'} "
            f"| {100 * row['upper_fraction']:.1f} ± "
            f"{100 * row['upper_fraction_se']:.1f} "
            f"| {100 * row['naive_upper_fraction']:.1f} "
            f"| {row['relative_variance_per_root']:.3g} "
            f"| {row['cpu_s'] + row['training_cpu_s']:.0f} "
            f"| {row['bruteforce_walker_steps_per_transition']:.1e} |"
        )
    note = (
        "CPU time includes the transfer training at that temperature; brute "
        f"force at {bf['temperature_K']:.0f} K took {bf['cpu_s']:.0f} CPU s."
    )
    trained = REFS / "train_rugged.json"
    if trained.exists():
        t = json.loads(trained.read_text())
        note += (
            f" Training the {t['temperature_K']:.0f} K function from scratch "
            f"(`examples/train_rugged.py`): {t['training_cpu_s']:.0f} CPU s."
        )
    out += ["", note, ""]
    return out


def lj7_rows() -> list[str]:
    path = REFS / "lj7_importance.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    pooled = any(r["forward"].get("root_pool_size") for r in data["rows"])
    how = (
        "roots drawn in proportion to I from a pool of exits, a branching random "
        "walk of tilted paths from them"
        if pooled
        else "one tilted path per root"
    )
    out = [
        "LJ7 C3 → C2 with the shipped SchNet functions "
        f"(`examples/lj7_importance.py`, Δt = {data['timestep_fs']} fs, {how}):",
        "",
        "| T (K) | rate (fs⁻¹) | HTST (fs⁻¹) | rate / HTST | naive (fs⁻¹) "
        "| M1 / M2 / M3 / M4 (%) | naive modes (%) | rel. var. per root "
        "| roots / pool of exits (its error) | production (s, cores) "
        "| efficiency vs brute force: walker-steps / core-s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in data["rows"]:
        fw = row["forward"]
        modes = " / ".join(f"{100 * f:.0f}" for f in fw["channel_fractions"])
        naive = " / ".join(f"{100 * f:.0f}" for f in fw["naive_channel_fractions"])
        pool = (
            f"{fw['root_pool_size']:.0e} ({100 * fw['root_pool_relative_se']:.1f} %)"
            if fw.get("root_pool_size")
            else "—"
        )
        core = row.get("efficiency_vs_bruteforce_core_seconds")
        out.append(
            f"| {row['temperature_K']:.0f} "
            f"| {_e(fw['rate_per_fs'], fw['rate_se_per_fs'])} "
            f"| {row['htst_rate_per_fs']:.3e} "
            f"| {row['ratio_to_htst']:.2f} ± {row['ratio_to_htst_se']:.2f} "
            f"| {fw['naive_rate_per_fs']:.3e} | {modes} | {naive} "
            f"| {fw['relative_variance_per_root']:.3g} "
            f"| {fw['n_roots']} / {pool} "
            f"| {fw['production_wall_time_s']:.0f}, {fw.get('workers', 1)} "
            f"| {row['efficiency_vs_bruteforce']:.3g}× / "
            + (f"{core:.3g}× |" if core is not None else "— |")
        )
    out += [
        "",
        "Relative variance per root: of S_r / I(x₀), the paths' part. The rate's "
        "SE adds the pool's own error, estimated with I in place of the committor "
        "over the flux run's independent walkers. Efficiency: the work-normalised "
        "variance of brute force, 1 / (k Δt) walker-steps with k from HTST, over "
        "that of importance sampling, (SE / rate)² × walker-steps (flux run and "
        "paths); then the same in core-seconds, which also counts the evaluations "
        "of I (brute force at the speed of the long 600 K run).",
    ]
    for row in data["rows"]:
        if "reverse" in row:
            rv = row["reverse"]
            out += [
                "",
                f"Reverse C2 → C3 at {row['temperature_K']:.0f} K with ln I_BA = "
                f"ln(1 − q): {_e(rv['rate_per_fs'], rv['rate_se_per_fs'])} fs⁻¹ "
                f"(HTST {row['htst_reverse_rate_per_fs']:.3e}); "
                f"r_AB / r_BA = {row['detailed_balance_ratio']:.3g} ± "
                f"{row['detailed_balance_ratio_se']:.2g} against HTST's "
                f"{row['htst_detailed_balance_ratio']:.3g}.",
            ]
            t_k = f"{row['temperature_K']:.0f}K"
            reverse_bf = REFS / f"lj7_bruteforce_{t_k}_reverse.json"
            if reverse_bf.exists():
                bf = json.loads(reverse_bf.read_text())["runs"][0]
                fw = row["forward"]
                rel = math.hypot(
                    fw["rate_se_per_fs"] / fw["rate_per_fs"],
                    bf["rate_se_per_fs"] / bf["rate_per_fs"],
                )
                ratio = fw["rate_per_fs"] / bf["rate_per_fs"]
                dev = (rv["rate_per_fs"] - bf["rate_per_fs"]) / math.hypot(
                    rv["rate_se_per_fs"], bf["rate_se_per_fs"]
                )
                out[-1] += (
                    f" Brute force C2 → C3 ({bf['n_transitions']} transitions, "
                    f"Δt = {bf['timestep_fs']} fs): "
                    f"{_e(bf['rate_per_fs'], bf['rate_se_per_fs'])} fs⁻¹, so the "
                    f"reverse importance-sampled rate is {dev:+.1f} combined SE "
                    f"from it, and r_AB (importance sampled) / r_BA (brute force) "
                    f"= {ratio:.3g} ± {ratio * rel:.2g}."
                )
        if row.get("bruteforce"):
            bf = "; ".join(
                f"Δt = {r['timestep_fs']} fs: "
                f"{_e(r['rate_per_fs'], r['rate_se_per_fs'])}"
                for r in row["bruteforce"]
            )
            out += [
                "",
                f"Package brute force at {row['temperature_K']:.0f} K: {bf} fs⁻¹; "
                "published: importance sampled (4.32 ± 0.01)e-4, brute force "
                "4.41e-4 fs⁻¹.",
            ]
            fw = row["forward"]
            ref = row["bruteforce"][0]
            dev = (fw["rate_per_fs"] - ref["rate_per_fs"]) / math.hypot(
                fw["rate_se_per_fs"], ref["rate_se_per_fs"]
            )
            out += [
                "",
                f"Importance sampling ÷ brute force (Δt = {ref['timestep_fs']} fs): "
                f"{fw['rate_per_fs'] / ref['rate_per_fs']:.2f}, {dev:+.1f} combined "
                "SE.",
            ]
            if abs(dev) > 4:
                out[-1] += (
                    " So far off, the stated SE understates the error (heavy "
                    "tails: a few exits or paths carry the estimate), and the "
                    "efficiency column above is not a measured gain."
                )
    return out


def table() -> str:
    lines = two_d_rows() + rugged_rows() + lj7_rows()
    return "\n".join([BEGIN, *lines, END])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", action="store_true", help="update README.md")
    args = p.parse_args()
    text = table()
    if not args.write:
        print(text)
        return
    readme = ROOT / "README.md"
    old = readme.read_text()
    start, end = old.index(BEGIN), old.index(END) + len(END)
    readme.write_text(old[:start] + text + old[end:])


if __name__ == "__main__":
    main()
