"""The training losses compared on the 2D two-channel system, by variance reduction.

Two parts, each starting every loss from the same MLP, with the same seeds and
the same number of iterations (512 paths each), then measuring the trained
function on 2000 fresh roots (relative variance per root, rate and upper-channel
fraction against the exact grid TPT values):

1. *Channel lock, 2500 K, Δt = 0.02 fs* (the setting of the tests). The
   residual loss from scratch learns one channel only; from there each loss
   gets six more iterations.
2. *An imperfect start, 2000 K, Δt = 0.01 fs*: eight iterations of the
   variational loss from scratch; from there each loss gets six iterations.

Each part also runs the residual and residual + log-variance with the states
of an unbiased run at a high temperature (4000 K, 3000 K; 20000 states out of
A for at least 0.5 fs) added to the residual's states (``extra_states``): the
fix for a channel that the function's own paths never visit. And each runs
the residual with tilted continuations (``continuations="tilted"``: the
continuations biased by the current function, with exact weights), alone and
with the hot states.

Efficiency is ``log10(start / end)`` of the measured relative variance per root
over the training CPU seconds (negative when the loss made things worse). Read
it together with the rate's deviation from the grid: a function that misses a
channel shows a small measured relative variance and a rate far too low (the
paths through the missing channel are too rare to be seen in 2000 roots).

    python examples/compare_losses.py        # ~6 min on one core

Writes data/references/compare_losses.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch
from _training_2d import (
    HOT_STATES_CPU_S,
    TRAINING,
    describe,
    hot_states,
    measure,
    new_network,
    stage,
    strict_json,
    train,
)

HERE = Path(__file__).resolve().parent

#: Part 1: (name, loss, options) continued from the residual's channel lock;
#: ``hot_states_K``: states of an unbiased run at that temperature are added to
#: the residual (``extra_states``).
LOCK_VARIANTS = [
    ("residual", "residual", {}),
    ("logvar", "logvar", {}),
    ("cross_entropy", "cross_entropy", {}),
    ("variational", "variational", {}),
    ("residual+logvar", "residual+logvar", {}),
    ("residual, hot states", "residual", {"hot_states_K": 4000.0}),
    ("residual+logvar, hot states", "residual+logvar", {"hot_states_K": 4000.0}),
    ("residual, tilted", "residual", {"continuations": "tilted"}),
    (
        "residual, tilted, hot states",
        "residual",
        {"continuations": "tilted", "hot_states_K": 4000.0},
    ),
]
#: Part 2: from the imperfect start.
START_VARIANTS = [
    ("residual", "residual", {}),
    ("residual, no ln Ẑ bias corr.", "residual", {"log_bias_correction": False}),
    ("logvar", "logvar", {}),
    ("cross_entropy", "cross_entropy", {}),
    ("variational", "variational", {}),
    ("residual+logvar", "residual+logvar", {}),
    ("residual, hot states", "residual", {"hot_states_K": 3000.0}),
    ("residual+logvar, hot states", "residual+logvar", {"hot_states_K": 3000.0}),
    ("residual, tilted", "residual", {"continuations": "tilted"}),
    (
        "residual, tilted, hot states",
        "residual",
        {"continuations": "tilted", "hot_states_K": 3000.0},
    ),
]


def efficiency(start: dict, end: dict, cpu_s: float) -> float:
    a, b = start["relative_variance_per_root"], end["relative_variance_per_root"]
    if not (a > 0 and b > 0 and math.isfinite(a) and math.isfinite(b)):
        return math.nan
    return math.log10(a / b) / cpu_s


def compare(
    label, start_net, temperature_K, timestep_fs, variants, iterations, seed, roots
):
    start = measure(start_net, temperature_K, roots, timestep_fs=timestep_fs)
    print(describe("start", start), flush=True)
    rows = []
    for name, loss, options in variants:
        extra = dict(options)
        hot = extra.pop("hot_states_K", None)
        if hot is not None:
            extra["extra_states"] = hot_states(hot)
        net = copy.deepcopy(start_net)
        history, cpu = train(
            net,
            temperature_K,
            loss=loss,
            iterations=iterations,
            seed=seed,
            timestep_fs=timestep_fs,
            **extra,
        )
        end = measure(net, temperature_K, roots, timestep_fs=timestep_fs)
        # The fix's own cost, the unbiased run, counts against it.
        cpu += HOT_STATES_CPU_S.get(hot, 0.0) if hot else 0.0
        gain = efficiency(start, end, cpu)
        print(describe(name, end) + f"  {cpu:.0f} CPU s, {gain:+.4f}/s", flush=True)
        rows.append(
            {
                "variant": name,
                "loss": loss,
                "options": options,
                "hot_states_cpu_s": HOT_STATES_CPU_S.get(hot) if hot else None,
                "training": stage(loss, history, cpu),
                "measured": end,
                "log10_variance_reduction_per_cpu_s": gain,
            }
        )
    return {
        "part": label,
        "temperature_K": temperature_K,
        "timestep_fs": timestep_fs,
        "start": start,
        "variants": rows,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=6)
    p.add_argument("--roots", type=int, default=2000, help="roots per measurement")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument(
        "--out",
        default=str(HERE.parent / "data" / "references" / "compare_losses.json"),
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    report = {"training": TRAINING, "iterations": args.iterations, "parts": []}

    print("1. channel lock at 2500 K: the residual from scratch", flush=True)
    net = new_network(args.seed)
    history, cpu = train(
        net, 2500.0, loss="residual", iterations=8, seed=args.seed, timestep_fs=0.02
    )
    part = compare(
        "channel lock",
        net,
        2500.0,
        0.02,
        LOCK_VARIANTS,
        args.iterations,
        args.seed + 1,
        args.roots,
    )
    part["start_training"] = stage("residual", history, cpu)
    report["parts"].append(part)

    print("2. an imperfect start at 2000 K: the variational loss from scratch")
    net = new_network(args.seed)
    history, cpu = train(net, 2000.0, loss="variational", iterations=8, seed=args.seed)
    part = compare(
        "imperfect start",
        net,
        2000.0,
        0.01,
        START_VARIANTS,
        args.iterations,
        args.seed + 1,
        args.roots,
    )
    part["start_training"] = stage("variational", history, cpu)
    report["parts"].append(part)

    report["wall_time_s"] = time.perf_counter() - t0
    report["cpu_time_s"] = time.process_time()
    Path(args.out).write_text(json.dumps(strict_json(report), indent=2))
    print(f"wrote {args.out} ({report['wall_time_s']:.0f} s)")


if __name__ == "__main__":
    main()
