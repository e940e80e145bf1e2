"""Train the shipped LJ7 importance functions: 600 K, then 500, 400, 300 K by transfer.

600 K: an unbiased brute-force run labels the states it visits by the region
their walker reaches next (B before A: 1, else 0) — samples of the committor —
and a SchNet network is fitted to the labels by cross-entropy
(:mod:`ase_rare.committor_data`). Then a few adaptive iterations of
:func:`ase_rare.training.train_importance` on biased paths.

Lower temperatures: a warm start from the function one step up, with its logit
rescaled by T_old / T_new (METHOD.md §4), then adaptive iterations at the new
temperature (exit points from a flux run there).

    python examples/train_lj7.py                       # all four temperatures
    python examples/train_lj7.py --temperatures 600    # 600 K only
    python examples/train_lj7.py --start-from lj7-600K # 500, 400, 300 K only

Writes ``ase_rare/data/importance/lj7-<T>K.pt`` and the training record
``data/references/lj7_training.json`` (times, losses, relative variance per root).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from ase import units

from ase_rare.bruteforce import BruteForce
from ase_rare.committor_data import committor_calibration, fit_committor, label_states
from ase_rare.data import IMPORTANCE_DIR
from ase_rare.estimate import measure_flux
from ase_rare.importance import SchNetImportance, load_importance
from ase_rare.systems import lj7_system
from ase_rare.training import train_importance, warm_start

HERE = Path(__file__).resolve().parent
DT_FS = 0.005
NETWORK = dict(n_atom_basis=32, n_interactions=3, n_rbf=20, cutoff=4.0)


def adaptive(importance, system, temperature, args, seed):
    """A few adaptive iterations at ``temperature``; returns the history dict."""
    flux = measure_flux(
        system.start_A,
        system.A,
        system.B,
        timestep=DT_FS * units.fs,
        temperature_K=temperature,
        n_exit_points=2048,
        seed=seed,
        compile=True,
    )
    history = train_importance(
        importance,
        system.start_A,
        system.A,
        system.B,
        temperature_K=temperature,
        timestep=DT_FS * units.fs,
        flux=flux,
        iterations=args.iterations,
        paths_per_iteration=args.paths,
        n_candidates=8,
        lag_steps=1,
        fit_steps=args.fit_steps,
        batch_size=128,
        max_states=4096,
        learning_rate=2e-4,
        max_steps=4000,
        patience=2,
        seed=seed,
        progress=not args.quiet,
    )
    if not args.quiet:
        print(history.table(), flush=True)
    return history.as_dict()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--temperatures", type=float, nargs="+", default=[600, 500, 400, 300]
    )
    p.add_argument("--label-steps", type=int, default=40000, help="of 4096 walkers")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--iterations", type=int, default=3, help="adaptive, per T")
    p.add_argument("--paths", type=int, default=512, help="per adaptive iteration")
    p.add_argument("--fit-steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quiet", action="store_true")
    p.add_argument(
        "--out", default=str(HERE.parent / "data" / "references" / "lj7_training.json")
    )
    p.add_argument(
        "--start-from",
        default=None,
        help="skip the labelled 600 K fit: transfer down from this shipped name "
        "or file (e.g. lj7-600K); the record goes to lj7_transfer.json",
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    system = lj7_system()
    temperatures = sorted(args.temperatures, reverse=True)
    record = {"timestep_fs": DT_FS, "network": NETWORK, "steps": []}
    previous = None
    if args.start_from is not None:
        from ase_rare.data import load_importance as load_shipped

        previous = load_shipped(args.start_from)
        record["start_from"] = args.start_from
        temperatures = [t for t in temperatures if t < previous.temperature_K]
        if args.out == p.get_default("out"):
            args.out = str(Path(args.out).with_name("lj7_transfer.json"))
    for t in temperatures:
        t0, c0 = time.perf_counter(), time.process_time()
        step = {"temperature_K": t}
        if previous is None:
            if t != 600:
                raise SystemExit("the first temperature must be 600 K (labelled run)")
            engine = BruteForce(
                system.start_A,
                system.A,
                system.B,
                timestep=DT_FS * units.fs,
                temperature_K=t,
                n_walkers=4096,
                seed=args.seed,
                compile=True,
            )
            engine.run(2000)
            engine.reset_statistics()
            data = label_states(
                engine,
                args.label_steps,
                record_interval=2,
                min_steps=16,
                early_fraction=0.05,
                max_records=128,
                seed=args.seed + 1,
                progress=not args.quiet,
            )
            importance = SchNetImportance(7, temperature_K=t, **NETWORK)
            losses = fit_committor(
                importance, data, epochs=args.epochs, seed=args.seed + 2
            )
            calib = committor_calibration(importance, data)
            step.update(
                labelled_states=len(data),
                labelled_successes=int(data.labels.sum()),
                labelled_transitions=data.n_transitions,
                labelled_walker_steps=data.walker_steps,
                cross_entropy=losses,
                calibration=calib.tolist(),
            )
            del data
        else:
            importance = warm_start(previous, previous.temperature_K, t)
        step["adaptive"] = adaptive(importance, system, t, args, args.seed + int(t))
        step["wall_time_s"] = time.perf_counter() - t0
        step["cpu_time_s"] = time.process_time() - c0
        name = f"lj7-{t:.0f}K"
        IMPORTANCE_DIR.mkdir(exist_ok=True)
        importance.save(IMPORTANCE_DIR / f"{name}.pt")
        step["file"] = f"ase_rare/data/importance/{name}.pt"
        record["steps"].append(step)
        previous = load_importance(IMPORTANCE_DIR / f"{name}.pt")
        print(f"{name}: {step['wall_time_s']:.0f} s", flush=True)
        Path(args.out).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
