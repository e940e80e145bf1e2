"""Run configurations: one TOML file describes a whole rate calculation.

``ase-rare run CONFIG.toml`` reads a file like this one::

    seed = 1                        # optional; --seed on the command line wins

    [system]
    builtin = "two-channel"         # or: calculator = "ase.calculators.emt:EMT"

    [dynamics]
    temperature_K = 2500            # or a list: [2500, 2000]
    timestep_fs = 0.02
    friction = 1.0                  # eV·fs/Å²

    [importance]
    grid = { spacing = 0.04 }       # or: name = "lj7-600K", path = "I.pt", train

    [flux]
    n_walkers = 64

    [ensemble]
    n_roots = 256
    branching = { interval = 10 }

    [output]
    folder = "out"

Every table and key is checked when the file is read: an unknown key is an
error that lists the valid ones, a value of the wrong type or out of range is
an error that names the key, and files (structures, importance functions,
Python modules) must exist. Relative paths are taken from the folder of the
configuration file. :func:`load_config` returns a :class:`RunConfig`, a tree of
frozen dataclasses; :mod:`ase_rare.pipeline` runs it.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import math
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Benchmark systems known by name, with the options each one takes.
BUILTIN_SYSTEMS = {
    "lj7": {"radius_A": 0.03, "radius_B": 0.05, "modes": True},
    "two-channel": {"radius": 0.2, "tilt": 0.02},
    "rugged": {"radius": 0.2},
}

#: Collective variables a ``[system.cv]`` table can name, with their keys.
CV_KINDS = {
    "atom-coordinates": ("kind", "atom", "axes"),
    "coordination-moments": ("kind", "r0"),
    "function": ("kind", "function", "names"),
}

#: Importance-function models ``[importance.train]`` can build.
MODELS = ("mlp", "schnet")

#: Arguments of :func:`ase_rare.training.train_importance` that the pipeline sets
#: itself; the others may appear in ``[importance.train]``.
_TRAINING_SET_BY_PIPELINE = (
    "importance",
    "start_atoms",
    "A",
    "B",
    "temperature_K",
    "timestep",
    "friction",
    "flux",
    "seed",
    "progress",
)


class ConfigError(ValueError):
    """A configuration that cannot be run; the message names the key and the fix."""


_MISSING = object()


class _Table:
    """One TOML table being read: typed access, unknown keys refused up front."""

    def __init__(self, data: Any, where: str, source: str, keys: tuple[str, ...]):
        self.where, self.source = where, source
        if not isinstance(data, dict):
            raise self.error(
                f"must be a table (a [{where}] section or {{ key = value }}); got "
                f"{_type_name(data)}"
            )
        self.data = data
        unknown = [k for k in data if k not in keys]
        if unknown:
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(k, keys, n=1)
                hints.append(
                    f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                )
            raise self.error(
                f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(hints)}; "
                f"valid keys: {', '.join(keys)}"
            )

    def error(self, message: str) -> ConfigError:
        where = f"[{self.where}]" if self.where else "top level"
        return ConfigError(f"{self.source}: {where}: {message}")

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, default=None):
        return self.data.get(key, default)

    def number(
        self,
        key: str,
        default=_MISSING,
        *,
        unit: str = "",
        positive: bool = False,
        minimum: float | None = None,
    ) -> float:
        value = self._get(key, default)
        if value is default and default is not _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(f"{key} must be a number{_unit(unit)}; got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise self.error(f"{key} must be a finite number{_unit(unit)}; got {value}")
        if positive and value <= 0:
            raise self.error(f"{key} must be > 0{_unit(unit)}; got {value:g}")
        if minimum is not None and value < minimum:
            raise self.error(
                f"{key} must be >= {minimum:g}{_unit(unit)}; got {value:g}"
            )
        return value

    def integer(self, key: str, default=_MISSING, *, minimum: int | None = None) -> int:
        value = self._get(key, default)
        if value is default and default is not _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(f"{key} must be a whole number; got {value!r}")
        if minimum is not None and value < minimum:
            raise self.error(f"{key} must be >= {minimum}; got {value}")
        return value

    def boolean(self, key: str, default=_MISSING) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise self.error(f"{key} must be true or false; got {value!r}")
        return value

    def string(self, key: str, default=_MISSING, *, choices=None) -> str:
        value = self._get(key, default)
        if value is default and default is not _MISSING:
            return default
        if not isinstance(value, str):
            raise self.error(f"{key} must be a string; got {value!r}")
        if choices is not None and value not in choices:
            raise self.error(
                f"{key} must be one of {', '.join(map(repr, choices))}; got {value!r}"
            )
        return value

    def numbers(
        self, key: str, default=_MISSING, *, length: int | None = None, unit: str = ""
    ) -> tuple[float, ...]:
        value = self._get(key, default)
        if value is default and default is not _MISSING:
            return default
        if not isinstance(value, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value
        ):
            raise self.error(
                f"{key} must be a list of numbers{_unit(unit)}; got {value!r}"
            )
        if length is not None and len(value) != length:
            raise self.error(
                f"{key} needs {length} numbers{_unit(unit)}; got {value!r}"
            )
        return tuple(float(v) for v in value)

    def path(self, key: str, base: Path, default=_MISSING, *, what: str) -> Path:
        value = self.string(key, default)
        if value is default and default is not _MISSING:
            return default
        path = (base / Path(value).expanduser()).resolve()
        if not path.is_file():
            raise self.error(
                f"{key}: {what} {value!r} not found (looked for {path}; relative "
                f"paths are taken from the folder of the configuration file, {base})"
            )
        return path

    def table(self, key: str, keys: tuple[str, ...]) -> _Table | None:
        if key not in self.data:
            return None
        where = f"{self.where}.{key}" if self.where else key
        return _Table(self.data[key], where, self.source, keys)

    def _get(self, key: str, default):
        if key in self.data:
            return self.data[key]
        if default is _MISSING:
            raise self.error(f"needs the key {key!r}")
        return default


def _unit(unit: str) -> str:
    return f" (in {unit})" if unit else ""


def _type_name(value) -> str:
    return {dict: "a table", list: "a list", str: "a string", bool: "true/false"}.get(
        type(value), type(value).__name__
    )


def import_object(spec: str, base: Path | None = None) -> Any:
    """The object named by ``"package.module:name"`` or ``"file.py:name"``.

    A ``.py`` file is looked up relative to ``base`` (the configuration's folder).

    Raises
    ------
    ConfigError
        Naming what could not be found.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"{spec!r} is not an import path; write 'package.module:Name' (e.g. "
            "'ase.calculators.emt:EMT') or 'file.py:name'"
        )
    if module_name.endswith(".py"):
        file = Path(module_name).expanduser()
        if base is not None:
            file = (base / file).resolve()
        if not file.is_file():
            raise ConfigError(f"{spec!r}: the file {file} does not exist")
        loader = importlib.util.spec_from_file_location(file.stem, file)
        module = importlib.util.module_from_spec(loader)
        sys.modules.setdefault(file.stem, module)
        try:
            loader.loader.exec_module(module)
        except Exception as err:  # noqa: BLE001 - the user's file failed to run
            raise ConfigError(
                f"{spec!r}: running {file} failed ({type(err).__name__}: {err})"
            ) from err
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ConfigError(
                f"{spec!r}: cannot import the module {module_name!r} "
                f"({type(err).__name__}: {err}); check the spelling and that its "
                "package is installed in this Python environment"
            ) from err
    try:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        names = [n for n in dir(module) if not n.startswith("_")]
        close = difflib.get_close_matches(attr, names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(
            f"{spec!r}: the module {module_name!r} has no attribute {attr!r}{hint}"
        ) from None
    return obj


# -- the configuration tree ------------------------------------------------------


@dataclass(frozen=True)
class RegionConfig:
    """Region A or B in the space of the system's collective variable.

    A disc (ball) when ``radius`` is given, around ``center``; a box when
    ``lower`` and ``upper`` are given. ``center`` may be ``"start"`` for A: the
    collective variable of the start structure.
    """

    center: tuple[float, ...] | str | None = None
    radius: float | None = None
    lower: tuple[float, ...] | None = None
    upper: tuple[float, ...] | None = None


@dataclass(frozen=True)
class CVConfig:
    """The collective variable regions A and B are defined on.

    ``kind`` is ``"atom-coordinates"`` (``atom``, ``axes``),
    ``"coordination-moments"`` (``r0`` in Å) or ``"function"`` (``function``:
    the import path of a torch function ``positions (W, N, 3) -> (W, d)``, and
    the ``names`` of its ``d`` components).
    """

    kind: str
    atom: int = 0
    axes: str = "xy"
    r0: float = 1.5
    function: str | None = None
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class SystemConfig:
    """What moves and where A and B are.

    Either ``builtin`` names a benchmark system (``"lj7"``, ``"two-channel"``,
    ``"rugged"``) with its ``options``, or ``calculator`` is the import path of
    an ASE calculator class (constructed with ``calculator_kwargs``) attached to
    the structure read from ``structure`` by ``ase.io.read`` (frame
    ``structure_index``), with ``fixed_atoms`` added as a ``FixAtoms``
    constraint, and regions ``A`` and ``B`` on the collective variable ``cv``.
    """

    builtin: str | None = None
    options: dict = field(default_factory=dict)
    calculator: str | None = None
    calculator_kwargs: dict = field(default_factory=dict)
    structure: Path | None = None
    structure_index: int = -1
    fixed_atoms: tuple[int, ...] = ()
    cv: CVConfig | None = None
    A: RegionConfig | None = None
    B: RegionConfig | None = None
    base: Path = Path(".")

    @property
    def label(self) -> str:
        """A short name for tables and plot titles."""
        if self.builtin is not None:
            return self.builtin
        return f"{self.calculator} on {self.structure.name}"


@dataclass(frozen=True)
class DynamicsConfig:
    """Overdamped Langevin dynamics: one rate per temperature.

    ``temperatures_K`` in K, ``timestep_fs`` in fs, ``friction`` γ in eV·fs/Å².
    """

    temperatures_K: tuple[float, ...]
    timestep_fs: float
    friction: float = 1.0


@dataclass(frozen=True)
class TrainConfig:
    """Adaptive training of a new importance function at each temperature.

    ``model`` is ``"mlp"`` (:class:`~ase_rare.importance.MLPImportance`) or
    ``"schnet"`` (:class:`~ase_rare.importance.SchNetImportance`), built with
    ``model_options``; ``options`` go to
    :func:`ase_rare.training.train_importance`. With several temperatures each
    one starts from the function trained at the one before.
    """

    model: str = "mlp"
    model_options: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class GridConfig:
    """The exact grid committor of a 2D potential as importance function.

    ``spacing`` and ``box`` (xmin, xmax, ymin, ymax) in Å; ``discrete_chain``
    applies the time-step correction of
    :meth:`~ase_rare.importance.GridImportance.for_discrete_chain`.
    """

    spacing: float = 0.02
    box: tuple[float, float, float, float] = (-2.2, 2.2, -2.2, 2.2)
    discrete_chain: bool = True


@dataclass(frozen=True)
class ImportanceConfig:
    """Where the importance function comes from: exactly one of ``name`` (a
    function shipped in :mod:`ase_rare.data`), ``path`` (a saved file),
    ``train`` or ``grid``."""

    name: str | None = None
    path: Path | None = None
    train: TrainConfig | None = None
    grid: GridConfig | None = None

    @property
    def source(self) -> str:
        if self.name is not None:
            return f"shipped function {self.name!r}"
        if self.path is not None:
            return f"file {self.path}"
        if self.train is not None:
            return f"trained here ({self.train.model})"
        return "exact grid committor"


@dataclass(frozen=True)
class FluxConfig:
    """The unbiased run in A that gives J_A and the exit points (roots).

    ``n_exit_points`` defaults to the number of roots; ``equilibrate_fs`` in fs.
    ``root_pool``, if set, is the number of exits (every exit is kept) from
    which the roots are drawn in proportion to the importance function
    (:func:`ase_rare.estimate.importance_roots`); ``n_exit_points`` is then
    not used. ``weighted_ensemble`` runs the pool's flux run as a weighted
    ensemble binned on ln I (:mod:`ase_rare.flux_splitting`; ``n_walkers``
    and ``compile`` are then not used), whose pool's mean committor scatters
    far less where a few exits carry much of it.
    """

    n_exit_points: int | None = None
    n_walkers: int = 256
    equilibrate_fs: float = 5.0
    compile: bool = False
    root_pool: int | None = None
    weighted_ensemble: bool = False


@dataclass(frozen=True)
class EnsembleConfig:
    """The branching ensemble; ``branching`` None runs one path per root.

    The other fields are those of :class:`ase_rare.Ensemble`; ``checkpoint``
    writes ``run.ckpt`` in the output folder and resumes from it.
    """

    n_roots: int = 4096
    roots_per_batch: int = 512
    branching: dict | None = field(default_factory=dict)
    max_population: int = 20000
    kernel: str = "tilt"
    n_candidates: int = 8
    drift_refresh: int = 1
    max_steps: int = 200_000
    checkpoint: bool = False


@dataclass(frozen=True)
class ExecutionConfig:
    """Where batches of roots run: here (``workers = 1``), in a local process
    pool (``workers > 1``) or on a Dask cluster (``scheduler`` address); the
    torch ``device`` of the flux run and the ensemble."""

    workers: int = 1
    scheduler: str | None = None
    device: str = "cpu"


@dataclass(frozen=True)
class OutputConfig:
    """The output folder and what goes in it.

    ``paths`` successful and ``failures`` failed paths are written to
    ``paths.traj``, a frame every ``path_interval_steps`` steps; ``plots``
    makes the PNG report.
    """

    folder: Path = Path("ase-rare-out")
    paths: int = 20
    failures: int = 0
    path_interval_steps: int = 10
    plots: bool = True


@dataclass(frozen=True)
class HTSTConfig:
    """Harmonic TST from structure files: a minimum (in A) and saddles."""

    minimum: Path
    saddles: tuple[Path, ...]
    multiplicities: tuple[int, ...] | None = None


@dataclass(frozen=True)
class BruteForceRunConfig:
    """A brute-force reference run at the same temperature and time step."""

    transitions: int = 50
    walkers: int = 256
    max_time_fs: float | None = None


@dataclass(frozen=True)
class ReferencesConfig:
    """Rates to compare with.

    ``htst``: True for the built-in LJ7 (its refined stationary points), or
    structure files. ``bruteforce_files``: JSON written by the brute-force
    tools (a :class:`~ase_rare.BruteForceResult` or ``{"runs": [...]}``).
    ``bruteforce``: run one here.
    """

    htst: bool | HTSTConfig = False
    bruteforce_files: tuple[Path, ...] = ()
    bruteforce: BruteForceRunConfig | None = None


@dataclass(frozen=True)
class RunConfig:
    """A whole run, as read from a configuration file."""

    system: SystemConfig
    dynamics: DynamicsConfig
    importance: ImportanceConfig
    flux: FluxConfig = FluxConfig()
    ensemble: EnsembleConfig = EnsembleConfig()
    execution: ExecutionConfig = ExecutionConfig()
    output: OutputConfig = OutputConfig()
    references: ReferencesConfig = ReferencesConfig()
    seed: int | None = None
    source: Path | None = None
    raw: dict = field(default_factory=dict)


# -- reading -------------------------------------------------------------------

_TOP_KEYS = (
    "seed",
    "system",
    "dynamics",
    "importance",
    "flux",
    "ensemble",
    "execution",
    "output",
    "references",
)


def load_config(path: str | Path) -> RunConfig:
    """Read and check a TOML configuration file.

    Raises
    ------
    FileNotFoundError
        When the file does not exist.
    ConfigError
        When the file is not valid TOML or holds a bad key or value.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"configuration file {path} not found")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from err
    return parse_config(data, base=path.parent, source=str(path))


def parse_config(
    data: dict, *, base: str | Path = ".", source: str = "configuration"
) -> RunConfig:
    """Check a configuration held as a dictionary (as ``tomllib`` returns it).

    Parameters
    ----------
    data : dict
    base : path
        Folder that relative paths are taken from.
    source : str
        Name used in error messages (the file name).
    """
    base = Path(base).expanduser().resolve()
    top = _Table(data, "", source, _TOP_KEYS)
    for name in ("system", "dynamics", "importance"):
        if not top.has(name):
            raise top.error(f"needs a [{name}] section")
    system = _system(top, base)
    config = RunConfig(
        system=system,
        dynamics=_dynamics(top),
        importance=_importance(top, base),
        flux=_flux(top),
        ensemble=_ensemble(top),
        execution=_execution(top),
        output=_output(top, base),
        references=_references(top, base, system),
        seed=top.integer("seed", None, minimum=0),
        source=Path(source) if source != "configuration" else None,
        raw=data,
    )
    _cross_checks(config, top)
    return config


def _system(top: _Table, base: Path) -> SystemConfig:
    raw = top.raw("system")
    if isinstance(raw, dict) and "builtin" in raw:
        name = raw["builtin"]
        if name not in BUILTIN_SYSTEMS:
            t = _Table({"builtin": name}, "system", top.source, ("builtin",))
            raise t.error(
                f"builtin must be one of {', '.join(map(repr, BUILTIN_SYSTEMS))}; "
                f"got {name!r}"
            )
        defaults = BUILTIN_SYSTEMS[name]
        t = top.table("system", ("builtin", *defaults))
        options = {}
        for key, default in defaults.items():
            if isinstance(default, bool):
                options[key] = t.boolean(key, default)
            else:
                options[key] = t.number(key, default, unit="Å", positive=True)
        return SystemConfig(builtin=name, options=options, base=base)

    keys = (
        "builtin",
        "calculator",
        "calculator_kwargs",
        "structure",
        "structure_index",
        "fixed_atoms",
        "cv",
        "A",
        "B",
    )
    t = top.table("system", keys)
    if not t.has("calculator"):
        raise t.error(
            "needs either builtin = "
            f"{' | '.join(map(repr, BUILTIN_SYSTEMS))} or calculator = "
            "'package.module:Class' (e.g. 'ase.calculators.emt:EMT')"
        )
    spec = t.string("calculator")
    try:
        cls = import_object(spec, base)
    except ConfigError as err:
        raise t.error(f"calculator {err}") from None
    if not callable(cls):
        raise t.error(f"calculator {spec!r} is not a class or factory")
    kwargs = t.raw("calculator_kwargs", {})
    if not isinstance(kwargs, dict):
        raise t.error(f"calculator_kwargs must be a table; got {kwargs!r}")
    if not t.has("structure"):
        raise t.error(
            "needs structure = 'FILE' (a configuration inside A, read with ase.io.read)"
        )
    structure = t.path("structure", base, what="structure file")
    fixed = t.raw("fixed_atoms", [])
    if not isinstance(fixed, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in fixed
    ):
        raise t.error(f"fixed_atoms must be a list of atom indices; got {fixed!r}")
    for name in ("cv", "A", "B"):
        if not t.has(name):
            raise t.error(f"needs a [system.{name}] table for a calculator system")
    return SystemConfig(
        calculator=spec,
        calculator_kwargs=dict(kwargs),
        structure=structure,
        structure_index=t.integer("structure_index", -1),
        fixed_atoms=tuple(fixed),
        cv=_cv(t, base),
        A=_region(t, "A"),
        B=_region(t, "B"),
        base=base,
    )


def _cv(system: _Table, base: Path) -> CVConfig:
    raw = system.raw("cv")
    kind = raw.get("kind") if isinstance(raw, dict) else None
    if kind not in CV_KINDS:
        t = system.table(
            "cv", ("kind",) + tuple({k for v in CV_KINDS.values() for k in v})
        )
        raise t.error(
            f"kind must be one of {', '.join(map(repr, CV_KINDS))}; got {kind!r}"
        )
    t = system.table("cv", CV_KINDS[kind])
    if kind == "atom-coordinates":
        axes = t.string("axes", "xy")
        if not axes or set(axes) - set("xyz"):
            raise t.error(f"axes must be letters from 'xyz'; got {axes!r}")
        return CVConfig(kind, atom=t.integer("atom", 0, minimum=0), axes=axes)
    if kind == "coordination-moments":
        return CVConfig(kind, r0=t.number("r0", 1.5, unit="Å", positive=True))
    spec = t.string("function")
    try:
        fn = import_object(spec, base)
    except ConfigError as err:
        raise t.error(f"function {err}") from None
    if not callable(fn):
        raise t.error(f"function {spec!r} is not callable")
    names = t.raw("names")
    if (
        not isinstance(names, list)
        or not names
        or not all(isinstance(n, str) for n in names)
    ):
        raise t.error(
            f"names must be a non-empty list of strings, one per component; got "
            f"{names!r}"
        )
    return CVConfig(kind, function=spec, names=tuple(names))


def _region(system: _Table, name: str) -> RegionConfig:
    t = system.table(name, ("center", "radius", "lower", "upper"))
    if t.has("radius"):
        if t.has("lower") or t.has("upper"):
            raise t.error("give center and radius (a disc) or lower and upper (a box)")
        center = t.raw("center")
        if center == "start" and name == "A":
            return RegionConfig(
                center="start", radius=t.number("radius", positive=True)
            )
        return RegionConfig(
            center=t.numbers("center"), radius=t.number("radius", positive=True)
        )
    if t.has("lower") and t.has("upper"):
        if t.has("center"):
            raise t.error("a box takes lower and upper, not center")
        lower, upper = t.numbers("lower"), t.numbers("upper")
        if len(lower) != len(upper) or any(
            lo >= hi for lo, hi in zip(lower, upper, strict=True)
        ):
            raise t.error(
                f"a box needs lower < upper in every component; got lower="
                f"{list(lower)}, upper={list(upper)}"
            )
        return RegionConfig(lower=lower, upper=upper)
    raise t.error(
        "needs center and radius (a disc) or lower and upper (a box)"
        + ("; center may be 'start'" if name == "A" else "")
    )


def _dynamics(top: _Table) -> DynamicsConfig:
    t = top.table("dynamics", ("temperature_K", "timestep_fs", "friction"))
    raw = t.raw("temperature_K")
    if raw is None:
        raise t.error("needs the key 'temperature_K' (a number or a list, in K)")
    temps = (
        t.numbers("temperature_K", unit="K")
        if isinstance(raw, list)
        else (t.number("temperature_K", unit="K"),)
    )
    if not temps:
        raise t.error("temperature_K is an empty list; give at least one, in K")
    for value in temps:
        if value <= 0:
            raise t.error(
                f"temperature_K must be > 0 K; got {value:g}. Temperatures are "
                "absolute, in kelvin"
            )
    return DynamicsConfig(
        temperatures_K=temps,
        timestep_fs=t.number("timestep_fs", unit="fs", positive=True),
        friction=t.number("friction", 1.0, unit="eV·fs/Å²", positive=True),
    )


def _importance(top: _Table, base: Path) -> ImportanceConfig:
    t = top.table("importance", ("name", "path", "train", "grid"))
    given = [k for k in ("name", "path", "train", "grid") if t.has(k)]
    if len(given) != 1:
        raise t.error(
            "needs exactly one of name = 'lj7-600K' (shipped), path = 'FILE.pt' "
            "(saved), [importance.train] or [importance.grid]; got "
            + (", ".join(given) if given else "none")
        )
    if t.has("name"):
        from ase_rare.data import SOURCES

        name = t.string("name")
        if name not in SOURCES:
            raise t.error(
                f"name {name!r} is not a shipped importance function; shipped: "
                f"{', '.join(SOURCES)}"
            )
        return ImportanceConfig(name=name)
    if t.has("path"):
        return ImportanceConfig(
            path=t.path("path", base, what="importance-function file")
        )
    if t.has("grid"):
        g = t.table("grid", ("spacing", "box", "discrete_chain"))
        return ImportanceConfig(
            grid=GridConfig(
                spacing=g.number("spacing", 0.02, unit="Å", positive=True),
                box=g.numbers("box", (-2.2, 2.2, -2.2, 2.2), length=4, unit="Å"),
                discrete_chain=g.boolean("discrete_chain", True),
            )
        )
    return ImportanceConfig(train=_train(t))


def _training_parameters() -> dict[str, inspect.Parameter]:
    from ase_rare.training import train_importance

    return {
        name: p
        for name, p in inspect.signature(train_importance).parameters.items()
        if name not in _TRAINING_SET_BY_PIPELINE
        and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


def _train(importance: _Table) -> TrainConfig:
    params = _training_parameters()
    t = importance.table("train", ("model", "model_options", *params))
    model = t.string("model", "mlp", choices=MODELS)
    model_options = t.raw("model_options", {})
    if not isinstance(model_options, dict):
        raise t.error(f"model_options must be a table; got {model_options!r}")
    options = {}
    for name, p in params.items():
        if not t.has(name):
            continue
        value, default = t.raw(name), p.default
        if isinstance(default, bool):
            options[name] = t.boolean(name)
        elif isinstance(default, int):
            options[name] = t.integer(name)
        elif isinstance(default, float):
            options[name] = t.number(name)
        elif isinstance(default, str):
            options[name] = t.string(name)
        else:
            options[name] = value
    return TrainConfig(model=model, model_options=dict(model_options), options=options)


def _flux(top: _Table) -> FluxConfig:
    t = top.table(
        "flux",
        (
            "n_exit_points",
            "n_walkers",
            "equilibrate_fs",
            "compile",
            "root_pool",
            "weighted_ensemble",
        ),
    )
    if t is None:
        return FluxConfig()
    return FluxConfig(
        n_exit_points=t.integer("n_exit_points", None, minimum=2),
        n_walkers=t.integer("n_walkers", 256, minimum=1),
        equilibrate_fs=t.number("equilibrate_fs", 5.0, unit="fs", minimum=0.0),
        compile=t.boolean("compile", False),
        root_pool=t.integer("root_pool", None, minimum=2),
        weighted_ensemble=t.boolean("weighted_ensemble", False),
    )


_BRANCHING_KEYS = ("c_lo", "c_hi", "m_max", "interval", "target")


def _ensemble(top: _Table) -> EnsembleConfig:
    keys = (
        "n_roots",
        "roots_per_batch",
        "branching",
        "max_population",
        "kernel",
        "n_candidates",
        "drift_refresh",
        "max_steps",
        "checkpoint",
    )
    t = top.table("ensemble", keys)
    if t is None:
        return EnsembleConfig()
    branching: dict | None = {}
    raw = t.raw("branching", True)
    if raw is False:
        branching = None
    elif isinstance(raw, dict):
        b = t.table("branching", _BRANCHING_KEYS)
        branching = {k: b.raw(k) for k in _BRANCHING_KEYS if b.has(k)}
        try:
            from ase_rare.ensemble import Branching

            Branching(**branching)
        except (TypeError, ValueError) as err:
            raise b.error(str(err)) from None
    elif raw is not True:
        raise t.error(
            "branching must be true, false or a table of "
            f"{', '.join(_BRANCHING_KEYS)}; got {raw!r}"
        )
    from ase_rare.kernels import KERNELS

    return EnsembleConfig(
        n_roots=t.integer("n_roots", 4096, minimum=2),
        roots_per_batch=t.integer("roots_per_batch", 512, minimum=1),
        branching=branching,
        max_population=t.integer("max_population", 20000, minimum=1),
        kernel=t.string("kernel", "tilt", choices=KERNELS),
        n_candidates=t.integer("n_candidates", 8, minimum=1),
        drift_refresh=t.integer("drift_refresh", 1, minimum=1),
        max_steps=t.integer("max_steps", 200_000, minimum=1),
        checkpoint=t.boolean("checkpoint", False),
    )


def _execution(top: _Table) -> ExecutionConfig:
    t = top.table("execution", ("workers", "scheduler", "device"))
    if t is None:
        return ExecutionConfig()
    config = ExecutionConfig(
        workers=t.integer("workers", 1, minimum=1),
        scheduler=t.string("scheduler", None),
        device=t.string("device", "cpu"),
    )
    if config.scheduler is not None and config.workers > 1:
        raise t.error(
            "give workers (a local process pool) or scheduler (a Dask cluster), "
            "not both"
        )
    return config


def _output(top: _Table, base: Path) -> OutputConfig:
    keys = ("folder", "paths", "failures", "path_interval_steps", "plots")
    t = top.table("output", keys)
    if t is None:
        return OutputConfig(folder=(base / "ase-rare-out").resolve())
    folder = t.string("folder", "ase-rare-out")
    return OutputConfig(
        folder=(base / Path(folder).expanduser()).resolve(),
        paths=t.integer("paths", 20, minimum=0),
        failures=t.integer("failures", 0, minimum=0),
        path_interval_steps=t.integer("path_interval_steps", 10, minimum=1),
        plots=t.boolean("plots", True),
    )


def _references(top: _Table, base: Path, system: SystemConfig) -> ReferencesConfig:
    t = top.table("references", ("htst", "bruteforce_files", "bruteforce"))
    if t is None:
        return ReferencesConfig(htst=system.builtin == "lj7")
    htst: bool | HTSTConfig = system.builtin == "lj7"
    raw = t.raw("htst")
    if isinstance(raw, bool):
        if raw and system.builtin != "lj7":
            raise t.error(
                "htst = true works for the built-in lj7 only; for other systems "
                "give [references.htst] with minimum = 'FILE' and saddles = ['FILE']"
            )
        htst = raw
    elif raw is not None:
        h = t.table("htst", ("minimum", "saddles", "multiplicities"))
        saddles = h.raw("saddles")
        if not isinstance(saddles, list) or not saddles:
            raise h.error(f"saddles must be a list of structure files; got {saddles!r}")
        paths = []
        for i, s in enumerate(saddles):
            entry = _Table({"saddle": s}, h.where, h.source, ("saddle",))
            paths.append(entry.path("saddle", base, what=f"saddle file {i + 1}"))
        mult = None
        if h.has("multiplicities"):
            mult = h.raw("multiplicities")
            if (
                not isinstance(mult, list)
                or len(mult) != len(paths)
                or not all(isinstance(m, int) and m >= 1 for m in mult)
            ):
                raise h.error(
                    f"multiplicities must be {len(paths)} positive whole numbers, one "
                    f"per saddle; got {mult!r}"
                )
            mult = tuple(mult)
        htst = HTSTConfig(
            minimum=h.path("minimum", base, what="minimum structure file"),
            saddles=tuple(paths),
            multiplicities=mult,
        )
    files = t.raw("bruteforce_files", [])
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise t.error(f"bruteforce_files must be a list of file names; got {files!r}")
    checked = []
    for i, f in enumerate(files):
        entry = _Table({"file": f}, t.where, t.source, ("file",))
        checked.append(entry.path("file", base, what=f"brute-force file {i + 1}"))
    run = None
    b = t.table("bruteforce", ("transitions", "walkers", "max_time_fs"))
    if b is not None:
        run = BruteForceRunConfig(
            transitions=b.integer("transitions", 50, minimum=1),
            walkers=b.integer("walkers", 256, minimum=1),
            max_time_fs=b.number("max_time_fs", None, unit="fs", positive=True),
        )
    return ReferencesConfig(htst=htst, bruteforce_files=tuple(checked), bruteforce=run)


def _cross_checks(config: RunConfig, top: _Table) -> None:
    e, f = config.ensemble, config.flux
    if f.root_pool is not None and f.n_exit_points is not None:
        raise top.error(
            "[flux] sets both root_pool and n_exit_points; with root_pool the "
            "roots are drawn from a pool of that many exits, so leave "
            "n_exit_points out"
        )
    if f.weighted_ensemble and (
        config.importance.name is None and config.importance.path is None
    ):
        raise top.error(
            "[flux] weighted_ensemble = true bins the flux run on the importance "
            "function, which must exist before it: give [importance] name or "
            "path (a function trained or solved in this run comes after the "
            "flux run)"
        )
    if f.weighted_ensemble and f.root_pool is None:
        raise top.error(
            "[flux] weighted_ensemble = true needs root_pool (the number of exits "
            "to keep); the weighted ensemble's exits carry weights, so the roots "
            "are drawn from them"
        )
    if f.n_exit_points is not None and f.n_exit_points < e.n_roots:
        raise top.error(
            f"[flux] n_exit_points = {f.n_exit_points} is smaller than [ensemble] "
            f"n_roots = {e.n_roots}; every root is an exit point, so raise "
            "n_exit_points or leave it out (it defaults to n_roots)"
        )
    if config.importance.grid is not None and config.system.builtin not in (
        "two-channel",
        None,
    ):
        raise top.error(
            "[importance.grid] needs a 2D potential of one atom's x, y (the "
            f"built-in two-channel system); the system is {config.system.label}"
        )


# -- building the objects ------------------------------------------------------


@dataclass
class BuiltSystem:
    """The objects a run needs: start in A (with calculator), regions, channels."""

    name: str
    start_A: Any
    A: Any
    B: Any
    channels: Any = None


def build_system(config: SystemConfig) -> BuiltSystem:
    """Make the start structure, its calculator, regions and channels.

    Raises
    ------
    ConfigError
        When the calculator cannot be made, the structure cannot be read, or
        the regions do not fit the collective variable.
    """
    from ase_rare import systems

    if config.builtin is not None:
        opts = config.options
        if config.builtin == "lj7":
            s = systems.lj7_system(
                opts["radius_A"], opts["radius_B"], modes=opts["modes"]
            )
        elif config.builtin == "two-channel":
            s = systems.two_channel_system(opts["radius"], opts["tilt"])
        else:
            s = systems.rugged_system(opts["radius"])
        return BuiltSystem(s.name, s.start_A, s.A, s.B, s.channels)

    import ase.io
    from ase.constraints import FixAtoms

    from ase_rare.regions import BoxRegion, DiscRegion, check_disjoint

    source = f"[system] structure {config.structure}"
    try:
        atoms = ase.io.read(config.structure, index=config.structure_index)
    except Exception as err:  # noqa: BLE001 - any reader failure
        raise ConfigError(
            f"{source}: ase.io.read cannot read it ({type(err).__name__}: {err}); "
            "give a file in a format ASE reads (extxyz, traj, POSCAR, cif, ...)"
        ) from err
    if config.fixed_atoms:
        bad = [i for i in config.fixed_atoms if i >= len(atoms)]
        if bad:
            raise ConfigError(
                f"[system] fixed_atoms {bad} are not atoms of {config.structure} "
                f"({len(atoms)} atoms, indices 0-{len(atoms) - 1})"
            )
        atoms.set_constraint([*atoms.constraints, FixAtoms(indices=config.fixed_atoms)])
    cls = import_object(config.calculator, config.base)
    try:
        atoms.calc = cls(**config.calculator_kwargs)
    except Exception as err:  # noqa: BLE001 - the user's calculator refused
        raise ConfigError(
            f"[system] calculator {config.calculator}(**{config.calculator_kwargs}) "
            f"failed: {type(err).__name__}: {err}; check calculator_kwargs"
        ) from err

    cv = make_cv(config.cv, config.base, len(atoms))

    def region(name: str, r: RegionConfig):
        try:
            if r.radius is not None:
                center = cv.of(atoms) if r.center == "start" else r.center
                return DiscRegion(cv, center, r.radius)
            return BoxRegion(cv, r.lower, r.upper)
        except ValueError as err:
            raise ConfigError(
                f"[system.{name}] does not fit the collective variable "
                f"({', '.join(cv.names)}): {err}"
            ) from None

    A, B = region("A", config.A), region("B", config.B)
    try:
        check_disjoint(A, B)
    except ValueError as err:
        raise ConfigError(f"[system.A], [system.B]: {err}") from None
    name = Path(config.structure).stem
    return BuiltSystem(name, atoms, A, B, None)


def make_cv(config: CVConfig, base: Path, n_atoms: int):
    """The collective variable of a ``[system.cv]`` table."""
    from ase_rare.cv import AtomCoordinates, CoordinationMoments, FunctionCV

    if config.kind == "atom-coordinates":
        if config.atom >= n_atoms:
            raise ConfigError(
                f"[system.cv] atom = {config.atom} does not exist: the structure "
                f"has {n_atoms} atoms (indices 0-{n_atoms - 1})"
            )
        return AtomCoordinates(config.atom, config.axes)
    if config.kind == "coordination-moments":
        return CoordinationMoments(config.r0)
    fn: Callable = import_object(config.function, base)
    return FunctionCV(fn, config.names)
