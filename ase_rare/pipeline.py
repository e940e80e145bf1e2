"""The whole rate calculation of a configuration file, stage by stage.

:func:`run_config` takes a :class:`~ase_rare.config.RunConfig` through

1. the system: start structure with its calculator, regions A and B, channels;
2. the flux run in A (J_A and the exit points, the roots);
3. the importance function: shipped, loaded from a file, the exact grid
   committor of a 2D potential, or trained here on biased paths;
4. the branching ensemble, with a progress bar, a statistics log and a path
   writer attached;
5. the references (harmonic TST, brute-force results or a brute-force run);

and writes ``result.json`` (a :class:`~ase_rare.RateResult` whose ``info``
records the configuration, the importance function and the references),
``paths.traj`` (for ``ase gui``), ``run.log``, ``importance.pt`` when the
function was made here, and the report (PNG plots and ``summary.md``, see
:mod:`ase_rare.report`). With several temperatures each gets its own folder
``T<temperature>K`` and the report over all of them goes in the output folder.

The functions here print nothing; progress bars go to standard error and can
be switched off with ``quiet``.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import units

from ase_rare.config import (
    BuiltSystem,
    ConfigError,
    HTSTConfig,
    RunConfig,
    build_system,
    import_object,
)
from ase_rare.results import RateResult

#: Seed used when neither the command line nor the configuration gives one.
DEFAULT_SEED = 2026


@dataclass
class RunOutput:
    """What one temperature of a run produced."""

    temperature_K: float
    folder: Path
    result: RateResult
    files: list[Path] = field(default_factory=list)


def check_device(device: str) -> str:
    """A torch device name that exists here; a clear error otherwise."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"device {device!r} is not a torch device; use 'cpu' or 'cuda' "
            f"(or 'cuda:N') ({err})"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} was asked for, but CUDA is not available on this "
            "machine (torch.cuda.is_available() is False); use --device cpu"
        )
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]'; got {device!r}")
    return device


def prepare_folder(folder: Path) -> Path:
    """Create the output folder and check that files can be written in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".ase-rare-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise OSError(
            f"cannot write to the output folder {folder} ({err.strerror or err}); "
            "choose another folder with [output] folder = '...' or --out"
        ) from err
    return folder


def run_config(
    config: RunConfig,
    *,
    out: str | os.PathLike | None = None,
    seed: int | None = None,
    device: str | None = None,
    quiet: bool = False,
    plots: bool | None = None,
) -> list[RunOutput]:
    """Run every stage of ``config``; one :class:`RunOutput` per temperature.

    Parameters
    ----------
    config : RunConfig
    out : path, optional
        Output folder instead of ``[output] folder``.
    seed : int, optional
        Instead of the configuration's ``seed`` (default 2026). The flux run,
        the training and the ensemble derive their streams from it.
    device : str, optional
        Torch device instead of ``[execution] device``.
    quiet : bool
        No progress bars.
    plots : bool, optional
        Instead of ``[output] plots``.
    """
    folder = prepare_folder(Path(out) if out is not None else config.output.folder)
    if seed is None:
        seed = config.seed if config.seed is not None else DEFAULT_SEED
    device = check_device(device or config.execution.device)
    if device != "cpu":
        raise NotImplementedError(
            f"the branching ensemble runs on the CPU only (its per-root books are "
            f"kept in CPU memory), so `run` cannot use --device {device}; run it "
            "with --device cpu (`ase-rare bruteforce --device` does use the GPU)"
        )
    make_plots = config.output.plots if plots is None else plots

    system = build_system(config.system)
    htst = htst_reference(config, system)
    bf_files = [load_bruteforce_file(p) for p in config.references.bruteforce_files]
    importance = _first_importance(config, system)

    temperatures = config.dynamics.temperatures_K
    outputs = []
    for i, temperature in enumerate(temperatures):
        sub = folder if len(temperatures) == 1 else folder / f"T{temperature:g}K"
        prepare_folder(sub)
        output, importance = _run_temperature(
            config,
            system,
            temperature,
            sub,
            seed=seed + 1000 * i,
            device=device,
            quiet=quiet,
            importance=importance,
            htst=htst,
            bf_files=bf_files,
        )
        outputs.append(output)
        if make_plots:
            from ase_rare.report import make_report

            output.files += make_report([sub / "result.json"], sub)

    if make_plots and len(outputs) > 1:
        from ase_rare.report import make_report

        make_report([o.folder / "result.json" for o in outputs], folder)
    return outputs


def _first_importance(config: RunConfig, system: BuiltSystem):
    """The importance function the first temperature starts from: the named or
    saved one, or a new model to train (made here, so that bad model options
    are reported before any dynamics runs); None for the grid committor."""
    imp = config.importance
    n_atoms = len(system.start_A)
    if imp.train is not None:
        return new_model(imp.train.model, imp.train.model_options, system.start_A)
    if imp.name is not None:
        from ase_rare.data import load_importance

        return load_importance(imp.name, n_atoms=n_atoms)
    if imp.path is not None:
        from ase_rare.importance import load_importance

        return load_importance(imp.path, n_atoms=n_atoms)
    return None


def _run_temperature(
    config: RunConfig,
    system: BuiltSystem,
    temperature: float,
    folder: Path,
    *,
    seed: int,
    device: str,
    quiet: bool,
    importance,
    htst,
    bf_files: list[dict],
):
    from ase_rare.ensemble import Branching, Ensemble
    from ase_rare.estimate import importance_roots, measure_flux
    from ase_rare.observers import PathWriter, ProgressBar, StatisticsLogger

    dyn, ens_cfg = config.dynamics, config.ensemble
    dt = dyn.timestep_fs * units.fs
    timings = {}

    t0 = time.perf_counter()
    if config.flux.weighted_ensemble:
        from ase_rare.flux_splitting import FluxSplitting, split_flux_run

        flux = split_flux_run(
            system.start_A,
            system.A,
            system.B,
            FluxSplitting(importance),
            timestep=dt,
            temperature_K=temperature,
            friction=dyn.friction,
            n_exit_points=config.flux.root_pool,
            equilibrate_fs=config.flux.equilibrate_fs,
            seed=seed,
        )
    else:
        flux = measure_flux(
            system.start_A,
            system.A,
            system.B,
            timestep=dt,
            temperature_K=temperature,
            friction=dyn.friction,
            n_exit_points=config.flux.root_pool
            or config.flux.n_exit_points
            or ens_cfg.n_roots,
            n_walkers=config.flux.n_walkers,
            equilibrate_fs=config.flux.equilibrate_fs,
            seed=seed,
            compile=config.flux.compile,
            device=device,
            progress=not quiet,
            exits_per_point=1 if config.flux.root_pool else 10,
        )
    timings["flux"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    importance_file, training = None, None
    if config.importance.grid is not None:
        importance = _grid_importance(config, system, temperature)
    elif config.importance.train is not None:
        importance, training = _train(
            config, system, temperature, flux, importance, seed, quiet
        )
    if config.importance.grid is not None or config.importance.train is not None:
        importance_file = folder / "importance.pt"
        importance.save(importance_file)
    timings["importance"] = time.perf_counter() - t0

    if config.flux.root_pool:
        t0 = time.perf_counter()
        flux = importance_roots(flux, importance, ens_cfg.n_roots, seed=seed + 1)
        timings["roots"] = time.perf_counter() - t0

    branching = None if ens_cfg.branching is None else Branching(**ens_cfg.branching)
    checkpoint = folder / "run.ckpt" if ens_cfg.checkpoint else None
    paths_file = folder / "paths.traj"
    t0 = time.perf_counter()
    with Ensemble(
        system.start_A,
        importance,
        system.A,
        system.B,
        temperature_K=temperature,
        timestep=dt,
        friction=dyn.friction,
        flux=flux,
        n_roots=ens_cfg.n_roots,
        roots_per_batch=ens_cfg.roots_per_batch,
        branching=branching,
        max_population=ens_cfg.max_population,
        kernel=ens_cfg.kernel,
        n_candidates=ens_cfg.n_candidates,
        drift_refresh=ens_cfg.drift_refresh,
        max_steps=ens_cfg.max_steps,
        channels=system.channels,
        seed=seed,
        checkpoint=checkpoint,
    ) as ensemble:
        bar = ProgressBar(ensemble, disable=quiet, desc=f"ensemble {temperature:g} K")
        ensemble.attach(bar)
        with StatisticsLogger(ensemble, folder / "run.log", mode="w") as logger:
            ensemble.attach(logger)
            writer = PathWriter(
                ensemble,
                paths_file,
                max_paths=config.output.paths,
                failures=config.output.failures,
                interval_steps=config.output.path_interval_steps,
                # A run resumed from its checkpoint continues the file.
                append=bool(ensemble.batches),
            )
            ensemble.attach(writer)
            executor, client = _executor(config)
            try:
                workers = config.execution.workers if executor else None
                result = ensemble.run(executor, max_workers=workers, client=client)
            finally:
                bar.close()
                if client is not None:
                    client.close()
            writer.close()
    timings["ensemble"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    references = {}
    if htst is not None:
        references["htst"] = htst_at(htst, temperature, system)
    matching = [
        r
        for f in bf_files
        for r in f["runs"]
        if math.isclose(r["temperature_K"], temperature, rel_tol=1e-6)
    ]
    if config.references.bruteforce is not None:
        run = config.references.bruteforce
        bf = run_bruteforce(
            system,
            temperature=temperature,
            timestep_fs=dyn.timestep_fs,
            friction=dyn.friction,
            walkers=run.walkers,
            transitions=run.transitions,
            max_fs=run.max_time_fs,
            seed=seed + 17,
            compile=False,
            quiet=quiet,
            device=device,
        )
        matching.append({**bf.to_dict(), "source": "brute-force run of this command"})
    if matching:
        references["bruteforce"] = matching
    timings["references"] = time.perf_counter() - t0

    result.info = {
        "system": config.system.label,
        "n_atoms": len(system.start_A),
        "importance": _importance_info(config, importance_file, folder),
        "training": training,
        "references": references,
        "config_file": str(config.source) if config.source else None,
        "config": _jsonable(config.raw),
        "timings_s": timings,
        "paths_file": paths_file.name if paths_file.exists() else None,
    }
    result.to_json(folder / "result.json")
    files = [folder / "result.json", folder / "run.log"]
    if paths_file.exists():
        files.append(paths_file)
    if importance_file is not None:
        files.append(importance_file)
    return RunOutput(temperature, folder, result, files), importance


def _executor(config: RunConfig):
    ex = config.execution
    if ex.scheduler is not None:
        from distributed import Client

        return None, Client(ex.scheduler)
    if ex.workers > 1:
        return "processes", None
    return None, None


def _importance_info(config: RunConfig, file: Path | None, folder: Path) -> dict:
    imp = config.importance
    info = {"source": imp.source}
    if imp.name is not None:
        info["name"] = imp.name
    if imp.path is not None:
        info["file"] = str(imp.path)
    if file is not None:
        info["file"] = os.path.relpath(file, folder)
    return info


def _grid_importance(config: RunConfig, system: BuiltSystem, temperature: float):
    from ase_rare.importance import GridImportance
    from ase_rare.theory import solve_grid_tpt

    grid = config.importance.grid
    potential = system.start_A.calc
    if grid.discrete_chain:
        return GridImportance.for_discrete_chain(
            potential,
            system.A,
            system.B,
            temperature_K=temperature,
            timestep_fs=config.dynamics.timestep_fs,
            friction=config.dynamics.friction,
            box=grid.box,
            spacing=grid.spacing,
        )
    solved = solve_grid_tpt(
        potential,
        system.A,
        system.B,
        temperature_K=temperature,
        box=grid.box,
        spacing=grid.spacing,
        friction=config.dynamics.friction,
    )
    return GridImportance.from_grid_tpt(solved)


def _train(config, system, temperature, flux, previous, seed, quiet):
    from ase_rare.training import train_importance

    train = config.importance.train
    importance = previous
    importance.temperature_K = temperature
    history = train_importance(
        importance,
        system.start_A,
        system.A,
        system.B,
        temperature_K=temperature,
        timestep=config.dynamics.timestep_fs * units.fs,
        friction=config.dynamics.friction,
        flux=flux,
        seed=seed,
        progress=not quiet,
        **train.options,
    )
    return importance, _jsonable(history.as_dict())


def new_model(model: str, options: dict, atoms):
    """An untrained importance function for ``atoms``: ``"mlp"`` or ``"schnet"``.

    ``n_atoms`` (and, for SchNet, ``atomic_numbers``) come from ``atoms``.
    """
    options = dict(options)
    if model == "mlp":
        from ase_rare.importance import MLPImportance as cls
    else:
        from ase_rare.importance.schnet import SchNetImportance as cls

        options.setdefault("atomic_numbers", [int(z) for z in atoms.numbers])
    try:
        return cls(n_atoms=len(atoms), **options)
    except TypeError as err:
        raise ConfigError(
            f"[importance.train] model_options do not fit {cls.__name__}: {err}"
        ) from None


# -- references ------------------------------------------------------------------


def htst_reference(config: RunConfig, system: BuiltSystem):
    """The :class:`~ase_rare.theory.HarmonicTST` of the configuration, or None."""
    from ase_rare.theory import HarmonicTST

    spec = config.references.htst
    friction = config.dynamics.friction
    if spec is True:
        from ase_rare.structures import lj7_cluster

        saddles = [lj7_cluster("S1"), lj7_cluster("S2")]
        return HarmonicTST(
            lj7_cluster("C3"), saddles, multiplicities=[2, 2], friction=friction
        )
    if not isinstance(spec, HTSTConfig):
        return None
    import ase.io
    from ase.constraints import FixAtoms

    cls = import_object(config.system.calculator, config.system.base)

    def read(path: Path):
        try:
            atoms = ase.io.read(path)
        except Exception as err:  # noqa: BLE001 - any reader failure
            raise ConfigError(
                f"[references.htst] cannot read {path} ({type(err).__name__}: {err})"
            ) from err
        if config.system.fixed_atoms:
            atoms.set_constraint(
                [*atoms.constraints, FixAtoms(indices=config.system.fixed_atoms)]
            )
        atoms.calc = cls(**config.system.calculator_kwargs)
        atoms.info.setdefault("name", path.stem)
        return atoms

    return HarmonicTST(
        read(spec.minimum),
        [read(p) for p in spec.saddles],
        multiplicities=spec.multiplicities,
        friction=friction,
    )


def htst_at(htst, temperature: float, system: BuiltSystem) -> dict:
    """The harmonic rate at one temperature as a JSON-ready dictionary.

    For the LJ7 modes the per-saddle fractions are split over the mirror-image
    pair of modes each saddle type gives (M1, M2 for S1; M3, M4 for S2).
    """
    r = htst.rate(temperature)
    out = {
        "rate_per_fs": r.rate_per_fs,
        "temperature_K": temperature,
        "friction_eV_fs_per_A2": htst.friction,
        "saddles": list(r.saddles),
        "barriers_eV": list(r.barriers_eV),
        "prefactors_per_fs": list(r.prefactors_per_fs),
        "multiplicities": list(r.multiplicities),
        "fractions": list(r.fractions),
    }
    names = tuple(system.channels.names) if system.channels is not None else ()
    if names == ("M1", "M2", "M3", "M4") and len(r.fractions) == 2:
        s1, s2 = r.fractions
        out["channel_fractions"] = {
            "M1": s1 / 2,
            "M2": s1 / 2,
            "M3": s2 / 2,
            "M4": s2 / 2,
        }
    return out


def load_bruteforce_file(path: Path) -> dict:
    """Brute-force runs from a JSON file: a result or ``{"runs": [...]}``."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"[references] bruteforce_files: cannot read {path} as JSON ({err})"
        ) from err
    runs = data.get("runs", [data]) if isinstance(data, dict) else None
    needed = ("temperature_K", "timestep_fs", "rate_per_fs", "rate_se_per_fs")
    if not runs or not all(isinstance(r, dict) and set(needed) <= set(r) for r in runs):
        raise ConfigError(
            f"[references] bruteforce_files: {path} holds no brute-force result "
            f"(each run needs {', '.join(needed)}); write it with "
            "BruteForceResult.to_json or `ase-rare --json bruteforce`"
        )
    return {"file": str(path), "runs": [{**r, "source": str(path)} for r in runs]}


def run_bruteforce(
    system,
    *,
    temperature: float,
    timestep_fs: float,
    walkers: int,
    transitions: int,
    max_fs: float | None,
    seed: int,
    compile: bool,
    quiet: bool,
    friction: float = 1.0,
    equilibrate_fs: float = 10.0,
    device: str = "cpu",
):
    """A brute-force rate, stopping at ``transitions`` or ``max_fs`` per walker.

    Draws a tqdm bar of the transitions on standard error unless ``quiet``.
    """
    from tqdm import tqdm

    from ase_rare.bruteforce import BruteForce

    engine = BruteForce(
        system.start_A,
        system.A,
        system.B,
        timestep=timestep_fs * units.fs,
        temperature_K=temperature,
        friction=friction,
        n_walkers=walkers,
        seed=seed,
        channels=system.channels,
        compile=compile,
        device=device,
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


def _jsonable(value):
    """Plain JSON types only (numpy scalars and arrays, paths, NaN as None)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value
