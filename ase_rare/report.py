"""Plots and a Markdown summary of finished runs (``ase-rare report``).

:func:`make_report` reads ``result.json`` files written by ``ase-rare run``
(:class:`~ase_rare.RateResult` JSON) and writes, into a folder:

``arrhenius.png``
    ln k against 1000/T with error bars: the reweighted estimate, the naive
    one, brute-force references and the harmonic TST line when the results
    carry it.
``channels*.png``
    Channel fractions, reweighted against naive (and references), per result
    with channels.
``weights*.png``
    How the root contributions S_r are spread: S_r / I(x₀) (all equal for a
    perfect importance function) and the share of P_AB the largest ones carry.
``committor*.png``
    For a 2D potential, the importance function over the potential's contours,
    with A, B and sampled paths.
``summary.md``
    The numbers with units: rate ± SE in fs⁻¹ and s⁻¹, P_AB, J_A, channels,
    references, cost.

Figures are drawn with matplotlib's object interface on an Agg canvas, so no
display is needed and no global backend is changed.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import units

from ase_rare.kernels import KB_EV_PER_K
from ase_rare.results import RateResult

#: Multiply a rate in fs⁻¹ by this for s⁻¹.
PER_S = units.s / units.fs

_COLORS = {
    "reweighted": "#1f77b4",
    "naive": "#ff7f0e",
    "bruteforce": "#2ca02c",
    "htst": "#555555",
}


def load_results(files: Sequence[str | os.PathLike]) -> list[tuple[Path, RateResult]]:
    """Read ``result.json`` files (or folders holding one).

    Raises
    ------
    FileNotFoundError
        For a missing file.
    ValueError
        For a file that is not a :class:`~ase_rare.RateResult` JSON.
    """
    if not files:
        raise ValueError("give at least one result.json file")
    out = []
    for f in files:
        path = Path(f)
        if path.is_dir():
            path = path / "result.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"result file {path} not found; give result.json files written by "
                "`ase-rare run` (or their folders)"
            )
        try:
            out.append((path, RateResult.from_json(path)))
        except (ValueError, TypeError, KeyError) as err:
            raise ValueError(
                f"{path} is not a RateResult JSON ({type(err).__name__}: {err}); "
                "give result.json files written by `ase-rare run`"
            ) from None
    return out


def _figure(width: float = 6.4, height: float = 4.6, ncols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols)
    return fig, axes


def _label(result: RateResult, many: bool) -> str:
    return f"_T{result.temperature_K:g}K" if many else ""


def _title(result: RateResult) -> str:
    system = result.info.get("system", "")
    return f"{system}, {result.direction}, {result.temperature_K:g} K".lstrip(", ")


# -- Arrhenius -------------------------------------------------------------------


def _ln_with_error(rate: float, se: float) -> tuple[float, float]:
    if not rate > 0:
        return math.nan, math.nan
    return math.log(rate), (se / rate if se == se else math.nan)


def htst_curve(htst: dict, temperatures_K: np.ndarray) -> np.ndarray:
    """k(T) in fs⁻¹ = Σ_s m_s ν_s exp(−ΔE_s / k_B T) from a stored HTST reference."""
    nu = np.asarray(htst["prefactors_per_fs"])
    m = np.asarray(htst["multiplicities"])
    de = np.asarray(htst["barriers_eV"])
    beta = 1.0 / (KB_EV_PER_K * np.asarray(temperatures_K)[:, None])
    return (m * nu * np.exp(-beta * de)).sum(axis=1)


def plot_arrhenius(results: list[tuple[Path, RateResult]], path: Path) -> Path:
    """ln k against 1000/T: reweighted, naive, brute force and harmonic TST."""
    fig, ax = _figure(height=5.2)
    temps = np.array([r.temperature_K for _, r in results])
    x = 1000.0 / temps
    # Markers at one temperature are set a little apart so that none hides
    # another: naive to the left, references to the right.
    shift = 0.006 * max(np.ptp(x), 0.25 * x.max())

    ln_k, err = zip(
        *(_ln_with_error(r.rate_per_fs, r.rate_se_per_fs) for _, r in results),
        strict=True,
    )
    ax.errorbar(
        x,
        ln_k,
        yerr=err,
        fmt="o",
        ms=7,
        capsize=4,
        color=_COLORS["reweighted"],
        label="importance sampling, reweighted (± 1 SE)",
        zorder=3,
    )
    naive = [
        math.log(r.naive_rate_per_fs) if r.naive_rate_per_fs > 0 else math.nan
        for _, r in results
    ]
    ax.plot(
        x - shift,
        naive,
        "s",
        ms=7,
        mfc="none",
        mew=1.6,
        color=_COLORS["naive"],
        label="naive (importance function taken as committor)",
        zorder=3,
    )

    bf_x, bf_y, bf_e = [], [], []
    for _, r in results:
        for ref in r.info.get("references", {}).get("bruteforce", []):
            y, e = _ln_with_error(ref["rate_per_fs"], ref["rate_se_per_fs"] or math.nan)
            bf_x.append(1000.0 / ref["temperature_K"])
            bf_y.append(y)
            bf_e.append(e)
    if bf_x:
        # Several reference runs at one temperature are spread a little sideways.
        offsets = shift + _spread(bf_x, width=0.5 * shift)
        ax.errorbar(
            np.array(bf_x) + offsets,
            bf_y,
            yerr=bf_e,
            fmt="^",
            ms=7,
            capsize=4,
            color=_COLORS["bruteforce"],
            label="brute force (± 1 SE)",
            zorder=2,
        )

    htst = next(
        (
            r.info["references"]["htst"]
            for _, r in results
            if "htst" in r.info.get("references", {})
        ),
        None,
    )
    lo, hi = x.min(), x.max()
    pad = max(0.08 * (hi - lo), 0.04 * hi)
    xs = np.linspace(lo - pad, hi + pad, 200)
    if htst is not None:
        k = htst_curve(htst, 1000.0 / xs)
        ax.plot(
            xs,
            np.log(k),
            "--",
            color=_COLORS["htst"],
            label="harmonic TST (continuous time)",
            zorder=1,
        )
    ax.set_xlim(xs[0], xs[-1])
    ax.set_xlabel("1000 / T (K⁻¹)")
    ax.set_ylabel("ln (k / fs⁻¹)")
    top = ax.secondary_xaxis("top", functions=(_thousand_over, _thousand_over))
    top.set_xlabel("temperature T (K)")
    _, first = results[0]
    ax.set_title(
        f"{first.info.get('system', '')} {first.direction}: rate against "
        f"temperature (Δt = {first.timestep_fs:g} fs)",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: _LEGEND_ORDER.index(labels[i]))
    fig.legend(
        [handles[i] for i in order],
        [labels[i] for i in order],
        fontsize=8,
        loc="outside lower center",
        ncols=2,
    )
    fig.savefig(path)
    return path


_LEGEND_ORDER = [
    "importance sampling, reweighted (± 1 SE)",
    "naive (importance function taken as committor)",
    "brute force (± 1 SE)",
    "harmonic TST (continuous time)",
]


def _thousand_over(v):
    with np.errstate(divide="ignore"):
        return 1000.0 / np.asarray(v, float)


def _spread(xs: list[float], width: float) -> np.ndarray:
    xs = np.asarray(xs)
    out = np.zeros(len(xs))
    for value in np.unique(xs):
        idx = np.flatnonzero(xs == value)
        if len(idx) > 1:
            out[idx] = np.linspace(-width, width, len(idx))
    return out


# -- channels --------------------------------------------------------------------


def plot_channels(result: RateResult, path: Path) -> Path:
    """Channel fractions: reweighted (± SE) against naive, with references."""
    names = result.channel_names
    bars = [
        (
            "reweighted (± 1 SE)",
            np.array(result.channel_fractions),
            np.array(result.channel_fractions_se),
            _COLORS["reweighted"],
        ),
        (
            "naive (unweighted counts)",
            np.array(result.naive_channel_fractions),
            None,
            _COLORS["naive"],
        ),
    ]
    refs = result.info.get("references", {})
    htst = refs.get("htst", {}).get("channel_fractions")
    if htst and set(htst) == set(names):
        bars.append(
            ("harmonic TST", np.array([htst[n] for n in names]), None, _COLORS["htst"])
        )
    for ref in refs.get("bruteforce", []):
        counts = np.array(ref.get("channel_counts") or [], float)
        if list(ref.get("channel_names") or []) == list(names) and counts.sum() > 0:
            n = counts.sum()
            f = counts / n
            bars.append(
                (
                    f"brute force, {int(n)} transitions (± 1 SE)",
                    f,
                    np.sqrt(f * (1 - f) / n),
                    _COLORS["bruteforce"],
                )
            )
            break

    fig, ax = _figure(width=max(5.5, 1.4 * len(names) + 3.5), height=5.0)
    width = 0.8 / len(bars)
    centers = np.arange(len(names))
    for i, (label, values, errors, color) in enumerate(bars):
        pos = centers - 0.4 + width * (i + 0.5)
        ax.bar(
            pos,
            100 * values,
            width,
            yerr=None if errors is None else 100 * errors,
            capsize=3,
            color=color,
            alpha=0.85 if i else 1.0,
            label=label,
        )
    ax.set_xticks(centers, names)
    ax.set_xlabel("channel")
    ax.set_ylabel("fraction of transitions (%)")
    tops = [
        np.nan_to_num(b[1] + (0 if b[2] is None else np.nan_to_num(b[2])), nan=0.0)
        for b in bars
    ]
    top = max(float(t.max()) if len(t) else 0.0 for t in tops)
    ax.set_ylim(0, max(100 * top * 1.15, 10))
    if not np.isfinite(result.channel_fractions).any():
        ax.text(
            0.5,
            0.95,
            "no path reached B: the fractions of this run are undefined",
            transform=ax.transAxes,
            ha="center",
            va="top",
            fontsize=10,
            bbox={"facecolor": "white", "edgecolor": "0.7"},
        )
    ax.set_title(f"channel fractions: {_title(result)}", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.legend(fontsize=8, loc="outside lower center", ncols=2)
    fig.savefig(path)
    return path


# -- weights ---------------------------------------------------------------------


def weight_statistics(result: RateResult) -> dict:
    """Spread of the root contributions: the numbers the weight plot shows."""
    s = np.asarray(result.root_contributions, float)
    log_i = np.asarray(result.root_log_importance, float)
    ok = s > 0
    ratio = np.log10(s[ok]) - log_i[ok] / math.log(10)
    ranked = np.sort(s)[::-1]
    total = ranked.sum()
    top = max(1, int(math.ceil(0.01 * len(s))))
    return {
        "n_roots": len(s),
        "n_contributing": int(ok.sum()),
        "log10_ratio": ratio,
        "cumulative_share": np.cumsum(ranked) / total if total > 0 else ranked * 0,
        "top_1_percent_share": float(ranked[:top].sum() / total) if total > 0 else 0,
    }


def plot_weights(result: RateResult, path: Path) -> Path:
    """S_r / I(x₀) per contributing root, and the share of P_AB by rank."""
    stats = weight_statistics(result)
    fig, (left, right) = _figure(width=10.5, height=4.4, ncols=2)
    ratio = stats["log10_ratio"]
    if len(ratio):
        counts, _, _ = left.hist(
            ratio, bins=min(40, max(8, len(ratio) // 5)), color=_COLORS["reweighted"]
        )
        # Head room for the statistics box above the bars.
        left.set_ylim(0, 1.55 * counts.max())
    left.axvline(0.0, color="k", ls="--", lw=1, label="perfect importance function")
    left.set_xlabel("log₁₀ [ S_r / I(x₀) ]  (root weight ÷ predicted committor)")
    left.set_ylabel("number of roots")
    left.set_title("root weights relative to the prediction", fontsize=10)
    text = (
        f"roots: {stats['n_roots']}, with a success: {stats['n_contributing']} "
        f"({100 * stats['n_contributing'] / max(stats['n_roots'], 1):.1f} %)\n"
        f"effective sample size: {result.effective_sample_size:.1f}\n"
        f"relative variance per root: {result.relative_variance_per_root:.3g}"
    )
    left.text(
        0.02,
        0.97,
        text,
        transform=left.transAxes,
        va="top",
        fontsize=8,
        bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "0.7"},
    )
    left.legend(fontsize=8, loc="upper right")

    share = stats["cumulative_share"]
    frac = np.arange(1, len(share) + 1) / max(len(share), 1)
    right.plot(100 * frac, 100 * share, color=_COLORS["reweighted"], lw=2)
    right.plot(100 * frac, 100 * frac, ":", color="0.5", label="all roots equal")
    right.set_xscale("log")
    right.set_xlim(100 / max(len(share), 1), 100)
    right.set_ylim(0, 102)
    right.set_xlabel("roots, largest contribution first (% of all roots)")
    right.set_ylabel("share of P_AB (%)")
    right.set_title(
        f"top 1 % of roots carry {100 * stats['top_1_percent_share']:.0f} % of P_AB"
        if stats["n_contributing"]
        else "no root reached B",
        fontsize=10,
    )
    right.grid(alpha=0.3, which="both")
    right.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"weight distribution: {_title(result)}", fontsize=11)
    fig.savefig(path)
    return path


# -- committor map ---------------------------------------------------------------


def _map_inputs(result_path: Path, result: RateResult):
    """Potential, regions, importance function and box of a 2D run, or None."""
    from ase_rare.config import parse_config

    info = result.info
    raw = info.get("config")
    if not raw or info.get("n_atoms") != 1:
        return None
    base = Path(info["config_file"]).parent if info.get("config_file") else Path(".")
    try:
        from ase_rare.config import build_system

        config = parse_config(raw, base=base, source=str(info.get("config_file")))
        system = build_system(config.system)
    except (ValueError, OSError):
        return None
    potential = system.start_A.calc
    if not hasattr(potential, "energy_xy"):
        return None
    importance = _load_importance(result_path, info.get("importance", {}))
    if importance is None:
        return None
    box = (
        config.importance.grid.box if config.importance.grid else (-2.2, 2.2, -2.2, 2.2)
    )
    return potential, system, importance, box


def _load_importance(result_path: Path, info: dict):
    from ase_rare.importance import load_importance

    try:
        if "file" in info:
            file = Path(info["file"])
            if not file.is_absolute():
                file = result_path.parent / file
            return load_importance(file)
        if "name" in info:
            from ase_rare.data import load_importance as load_shipped

            return load_shipped(info["name"])
    except (OSError, ValueError):
        return None
    return None


def plot_committor_map(
    result_path: Path, result: RateResult, path: Path
) -> Path | None:
    """The importance function I(x, y) over the contours of a 2D potential."""
    import torch

    inputs = _map_inputs(result_path, result)
    if inputs is None:
        return None
    potential, system, importance, box = inputs
    xs = np.linspace(box[0], box[1], 221)
    ys = np.linspace(box[2], box[3], 221)
    X, Y = np.meshgrid(xs, ys, indexing="xy")
    with torch.no_grad():
        energy = potential.energy_xy(torch.as_tensor(X), torch.as_tensor(Y)).numpy()
        positions = torch.zeros((X.size, 1, 3), dtype=torch.float64)
        positions[:, 0, 0] = torch.as_tensor(X.ravel())
        positions[:, 0, 1] = torch.as_tensor(Y.ravel())
        committor = torch.exp(importance.log_importance(positions)).numpy()
    committor = committor.reshape(X.shape)

    fig, ax = _figure(width=6.6, height=6.2)
    image = ax.imshow(
        committor,
        origin="lower",
        extent=box,
        cmap="viridis",
        vmin=0,
        vmax=1,
        aspect="equal",
    )
    bar = fig.colorbar(image, ax=ax, shrink=0.85)
    bar.set_label("importance function I (estimated committor, 0 to 1)")
    e_min = float(energy.min())
    step = 0.2
    levels = e_min + np.arange(step, 1.6 + step / 2, step)
    ax.contour(X, Y, energy, levels=levels, colors="white", linewidths=0.7)
    ax.contour(X, Y, committor, levels=[0.5], colors="red", linestyles="--")
    ax.plot([], [], "--", color="red", label="I = 1/2")
    ax.plot(
        [],
        [],
        color="white",
        lw=0.7,
        label=f"potential energy: contours every {step:g} eV above its minimum",
    )

    from matplotlib.patches import Circle

    for name, region in (("A", system.A), ("B", system.B)):
        center = getattr(region, "center", None)
        radius = getattr(region, "radius", None)
        if center is not None and radius is not None and len(center) == 2:
            ax.add_patch(Circle(center, radius, fill=False, color="k", lw=1.5))
            ax.annotate(
                name,
                (center[0], center[1] + radius),
                xytext=(0, 6),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=10,
                weight="bold",
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none"},
            )
    _overlay_paths(ax, result_path, result)
    ax.set_xlabel("x (Å)")
    ax.set_ylabel("y (Å)")
    ax.set_xlim(box[0], box[1])
    ax.set_ylim(box[2], box[3])
    ax.set_title(f"importance function: {_title(result)}", fontsize=10)
    # A grey legend background, so that the white contour sample shows.
    fig.legend(fontsize=8, loc="outside lower center", ncols=2, facecolor="0.75")
    fig.savefig(path)
    return path


def _overlay_paths(ax, result_path: Path, result: RateResult, n: int = 8) -> None:
    name = result.info.get("paths_file")
    file = result_path.parent / name if name else None
    if file is None or not file.is_file():
        return
    from ase.io import read

    try:
        frames = read(file, ":")
    except Exception:  # noqa: BLE001 - a damaged trajectory only loses the overlay
        return
    paths: dict[int, list] = {}
    for atoms in frames:
        if atoms.info.get("outcome") == "reached B":
            paths.setdefault(atoms.info["path"], []).append(atoms.positions[0, :2])
    for k, (_, points) in enumerate(sorted(paths.items())[:n]):
        points = np.array(points)
        ax.plot(
            points[:, 0],
            points[:, 1],
            color="orange",
            lw=0.8,
            alpha=0.9,
            label="successful paths (paths.traj)" if k == 0 else None,
        )


# -- summary ---------------------------------------------------------------------


def _pm(value: float, se: float) -> str:
    """``(4.32 ± 0.05)e-04``: value and error on one power of ten."""
    if not (math.isfinite(value) and value != 0):
        return f"{value:.4g} ± {se:.2g}"
    exp = math.floor(math.log10(abs(value)))
    return f"({value / 10**exp:.3f} ± {se / 10**exp:.3f})e{exp:+03d}"


def _rate(value: float, se: float | None = None) -> str:
    if se is None or se != se:
        return f"{value:.4g} fs⁻¹ ({value * PER_S:.4g} s⁻¹)"
    return f"{_pm(value, se)} fs⁻¹ = {_pm(value * PER_S, se * PER_S)} s⁻¹"


def summary_markdown(results: list[tuple[Path, RateResult]], images=()) -> str:
    """The Markdown summary of one or more results."""
    lines = ["# ase_rare report", ""]
    for path, r in results:
        lines += _summary_one(path, r)
    if images:
        lines += ["## Plots", ""]
        lines += [f"![{Path(i).stem}]({Path(i).name})" for i in images]
        lines.append("")
    return "\n".join(lines)


def _summary_one(path: Path, r: RateResult) -> list[str]:
    info = r.info
    timings = info.get("timings_s", {})
    rows = [
        ("system", info.get("system", "—")),
        ("direction", r.direction),
        ("temperature", f"{r.temperature_K:g} K"),
        (
            "dynamics",
            f"Δt = {r.timestep_fs:g} fs, γ = {r.friction_eV_fs_per_A2:g} eV·fs/Å², "
            f"{r.kernel} kernel",
        ),
        ("importance function", info.get("importance", {}).get("source", "—")),
        ("**rate k_AB (reweighted)**", f"**{_rate(r.rate_per_fs, r.rate_se_per_fs)}**"),
        ("rate (naive: I taken as committor)", _rate(r.naive_rate_per_fs)),
        (
            "P_AB (reweighted / naive)",
            f"{r.success_probability:.4g} ± {r.success_probability_se:.2g} / "
            f"{r.naive_success_probability:.4g}",
        ),
        ("flux J_A", f"({r.flux_per_fs:.4g} ± {r.flux_se_per_fs:.2g}) fs⁻¹"),
        (
            "roots / successful paths (with branching) / stopped at the step cap",
            f"{r.n_roots} / {r.n_successes} / {r.n_step_capped}",
        ),
        *(
            [
                (
                    "roots drawn ∝ I from a pool of exits / the pool's own error",
                    f"{r.root_pool_size} / {100 * r.root_pool_relative_se:.2g} % "
                    "(in the rate's SE)",
                )
            ]
            if r.root_pool_size
            else []
        ),
        (
            "effective sample size / relative variance per root",
            f"{r.effective_sample_size:.1f} / {r.relative_variance_per_root:.3g}",
        ),
        (
            "cost",
            f"{r.flux_walker_steps + r.walker_steps:.3g} walker-steps "
            f"(flux {r.flux_walker_steps:.3g}, ensemble {r.walker_steps:.3g}), "
            f"{r.importance_evaluations:.3g} importance evaluations",
        ),
    ]
    if timings:
        parts = ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
        rows.append(("wall time", f"{sum(timings.values()):.1f} s ({parts})"))
    else:
        rows.append(("wall time (ensemble)", f"{r.wall_time_s:.1f} s"))
    out = [
        f"## {info.get('system', 'run')}, {r.temperature_K:g} K",
        "",
        f"From `{path}`.",
        "",
        "| quantity | value |",
        "|---|---|",
    ]
    out += [f"| {k} | {v} |" for k, v in rows]
    out.append("")
    out += _channel_table(r)
    out += _reference_table(r)
    return out


def _channel_table(r: RateResult) -> list[str]:
    if not r.channel_names:
        return []
    refs = r.info.get("references", {})
    htst = refs.get("htst", {}).get("channel_fractions") or {}
    bf = next(
        (
            b
            for b in refs.get("bruteforce", [])
            if list(b.get("channel_names") or []) == list(r.channel_names)
            and sum(b.get("channel_counts") or []) > 0
        ),
        None,
    )
    head = "| channel | reweighted (%) | naive (%) |"
    rule = "|---|---|---|"
    if htst:
        head += " harmonic TST (%) |"
        rule += "---|"
    if bf:
        n = sum(bf["channel_counts"])
        head += f" brute force, {n} transitions (%) |"
        rule += "---|"
    lines = ["### Channel fractions", "", head, rule]
    for i, name in enumerate(r.channel_names):
        row = (
            f"| {name} | {100 * r.channel_fractions[i]:.1f} ± "
            f"{100 * r.channel_fractions_se[i]:.1f} | "
            f"{100 * r.naive_channel_fractions[i]:.1f} |"
        )
        if htst:
            row += f" {100 * htst.get(name, math.nan):.1f} |"
        if bf:
            f = bf["channel_counts"][i] / n
            row += f" {100 * f:.1f} ± {100 * math.sqrt(f * (1 - f) / n):.1f} |"
        lines.append(row)
    return [*lines, ""]


def _reference_table(r: RateResult) -> list[str]:
    refs = r.info.get("references", {})
    rows = []
    if "htst" in refs:
        h = refs["htst"]
        ratio = r.rate_per_fs / h["rate_per_fs"]
        rows.append(
            (
                "harmonic TST",
                "continuous time",
                _rate(h["rate_per_fs"]),
                f"{ratio:.3f} ± {r.rate_se_per_fs / h['rate_per_fs']:.3f}",
                "—",
            )
        )
    for b in refs.get("bruteforce", []):
        se = b.get("rate_se_per_fs") or math.nan
        combined = math.hypot(r.rate_se_per_fs, se)
        z = (r.rate_per_fs - b["rate_per_fs"]) / combined if combined > 0 else math.nan
        src = Path(str(b.get("source", ""))).name or "brute force"
        rows.append(
            (
                f"brute force ({src}; {b.get('n_transitions', '?')} transitions, "
                f"{b.get('walker_steps', 0):.3g} walker-steps)",
                f"Δt = {b['timestep_fs']:g} fs",
                _rate(b["rate_per_fs"], se),
                f"{r.rate_per_fs / b['rate_per_fs']:.3f}",
                f"{z:+.1f}",
            )
        )
    if not rows:
        return []
    lines = [
        "### References",
        "",
        "| reference | time step | rate | k / k_ref | (k − k_ref) / combined SE |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    return [*lines, ""]


# -- everything ------------------------------------------------------------------


def make_report(
    files: Sequence[str | os.PathLike], out: str | os.PathLike | None = None
) -> list[Path]:
    """Write the plots and ``summary.md`` of ``files`` into ``out``.

    Parameters
    ----------
    files : sequence of paths
        ``result.json`` files (or folders holding one).
    out : path, optional
        Output folder; default the folder of the first file.

    Returns
    -------
    The files written.
    """
    results = load_results(files)
    folder = Path(out) if out is not None else results[0][0].parent
    folder.mkdir(parents=True, exist_ok=True)
    many = len(results) > 1
    images = [plot_arrhenius(results, folder / "arrhenius.png")]
    for path, r in results:
        tag = _label(r, many)
        if r.channel_names:
            images.append(plot_channels(r, folder / f"channels{tag}.png"))
        if r.root_contributions:
            images.append(plot_weights(r, folder / f"weights{tag}.png"))
        committor = plot_committor_map(path, r, folder / f"committor{tag}.png")
        if committor is not None:
            images.append(committor)
    summary = folder / "summary.md"
    summary.write_text(summary_markdown(results, images))
    return [*images, summary]


def dump_json(results: list[tuple[Path, RateResult]]) -> str:
    """The results as one JSON document (for ``ase-rare --json report``)."""
    return json.dumps({str(p): r.to_dict() for p, r in results}, indent=2)
