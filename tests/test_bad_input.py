"""A catalogue of bad inputs: each is refused with a message that names the
problem and, where there is one, the fix.

Every case is a row of ``CASES``: what is wrong, a callable that triggers it,
the exception expected and substrings its message must contain. The objects the
cases need (a small flux run, an importance function, saved files) are built
once per module and kept tiny, so the catalogue runs in seconds.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from setups import HOT_2D_DT, HOT_2D_K, hot_2d_inputs

from ase_rare import (
    AtomCoordinates,
    BoxRegion,
    BruteForce,
    CalculatorAdapter,
    DiscRegion,
    Ensemble,
    ImportanceLangevin,
    MLPImportance,
    OverdampedLangevin,
    estimate_rate,
    lj7_cluster,
    load_importance,
)
from ase_rare.cli import main
from ase_rare.config import ConfigError, parse_config
from ase_rare.importance.base import FORMAT_VERSION, ImportanceFunction
from ase_rare.kernels import LangevinParameters
from ase_rare.pipeline import prepare_folder

torch.set_num_threads(1)

T_K, DT = HOT_2D_K, HOT_2D_DT


@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> SimpleNamespace:
    """Small, valid objects that each case spoils in one way."""
    system, importance, flux = hot_2d_inputs(n_exit_points=8, n_walkers=16, spacing=0.1)
    folder = tmp_path_factory.mktemp("bad_input")

    # A finished run's checkpoint, to be loaded by a run with other settings.
    checkpoint = folder / "run.ckpt"
    ensemble_kwargs = dict(
        temperature_K=T_K,
        timestep=DT,
        flux=flux,
        n_roots=8,
        roots_per_batch=4,
        max_steps=50,
        seed=1,
    )
    Ensemble(
        system.start_A,
        importance,
        system.A,
        system.B,
        checkpoint=checkpoint,
        **ensemble_kwargs,
    ).run()

    # An importance function for the 7-atom soft-core LJ cluster.
    lj7_importance = folder / "lj7.pt"
    MLPImportance(7, hidden=(4,)).save(lj7_importance)

    return SimpleNamespace(
        system=system,
        importance=importance,
        flux=flux,
        folder=folder,
        checkpoint=checkpoint,
        ensemble_kwargs=ensemble_kwargs,
        lj7_importance=lj7_importance,
    )


# -- helpers that spoil one thing ----------------------------------------------


def lj7_with(position_fix) -> Atoms:
    atoms = lj7_cluster("C3")
    pos = atoms.get_positions()
    position_fix(pos)
    atoms.set_positions(pos)
    return atoms


def set_nan(pos):
    pos[2, 0] = np.nan


def set_inf(pos):
    pos[4, 1] = np.inf


def set_z(pos):
    pos[0, 2] = 0.1


class EnergyOnly(Calculator):
    """A calculator that gives energies but no forces."""

    implemented_properties = ["energy"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        super().calculate(atoms, properties, system_changes)
        self.results = {"energy": 0.0}


class NaNImportance(ImportanceFunction):
    """An importance function whose logit is NaN everywhere (a broken network)."""

    def __init__(self):
        super().__init__()
        self.hparams = {}
        self.w = torch.nn.Parameter(torch.ones((), dtype=torch.float64))

    def forward(self, positions):
        return self.w * positions[:, 0, 0] * math.nan


def two_channel_atoms(ctx, x, y) -> Atoms:
    atoms = Atoms("Ar", positions=[[x, y, 0.0]])
    atoms.calc = ctx.system.start_A.calc
    return atoms


def brute_force(ctx, atoms=None, A=None, B=None, **kwargs):
    s = ctx.system
    options = dict(timestep=DT, temperature_K=T_K, n_walkers=4)
    options.update(kwargs)
    return BruteForce(
        s.start_A if atoms is None else atoms,
        s.A if A is None else A,
        s.B if B is None else B,
        **options,
    )


def ensemble(ctx, **kwargs):
    s = ctx.system
    options = dict(ctx.ensemble_kwargs)
    options.update(kwargs)
    return Ensemble(s.start_A, ctx.importance, s.A, s.B, **options)


def importance_langevin(ctx, atoms=None, **kwargs):
    s = ctx.system
    return ImportanceLangevin(
        copy_with_calc(s.start_A) if atoms is None else atoms,
        ctx.importance,
        s.A,
        s.B,
        DT,
        T_K,
        **kwargs,
    )


def copy_with_calc(atoms: Atoms) -> Atoms:
    new = atoms.copy()
    new.calc = atoms.calc
    return new


def write_bytes(ctx, name: str, data: bytes) -> Path:
    path = ctx.folder / name
    path.write_bytes(data)
    return path


def saved_importance_with(ctx, name: str, **changes) -> Path:
    """The saved LJ7 importance function with some header fields replaced."""
    data = torch.load(ctx.lj7_importance, weights_only=False)
    data.update(changes)
    path = ctx.folder / name
    torch.save(data, path)
    return path


def foreign_pickle(ctx) -> Path:
    path = ctx.folder / "foreign.pt"
    torch.save({"weights": [1, 2, 3]}, path)
    return path


def corrupted_checkpoint(ctx) -> Path:
    path = ctx.folder / "corrupted.ckpt"
    path.write_bytes(ctx.checkpoint.read_bytes()[:100])
    return path


def foreign_checkpoint(ctx) -> Path:
    path = ctx.folder / "foreign.ckpt"
    path.write_bytes(ctx.checkpoint.read_bytes())
    return path


def cv2():
    return AtomCoordinates(0, "xy")


def config_with(ctx, **tables) -> dict:
    """A valid run configuration (the built-in 2D system) with tables replaced."""
    data = {
        "system": {"builtin": "two-channel"},
        "dynamics": {"temperature_K": T_K, "timestep_fs": DT / units.fs},
        "importance": {"path": str(ctx.lj7_importance)},
    }
    data.update(tables)
    return parse_config(data, base=ctx.folder, source="run.toml")


def calculator_system(**changes) -> dict:
    system = {
        "calculator": "ase.calculators.emt:EMT",
        "structure": "missing.xyz",
        "cv": {"kind": "atom-coordinates", "atom": 0, "axes": "xy"},
        "A": {"center": [0.0, 0.0], "radius": 0.3},
        "B": {"center": [2.5, 0.0], "radius": 0.3},
    }
    system.update(changes)
    return system


def output_folder_below_a_file(ctx) -> Path:
    blocker = ctx.folder / "not-a-folder"
    blocker.write_text("a file")
    return prepare_folder(blocker / "out")


# -- the catalogue ---------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One bad input: how to trigger it and what the refusal must say."""

    id: str
    trigger: Callable[[SimpleNamespace], object]
    exception: type[BaseException]
    says: tuple[str, ...]


CASES = [
    # Positions
    Case(
        "NaN position, calculator",
        lambda c: lj7_with(set_nan).get_potential_energy(),
        ValueError,
        ("NaN or inf", "check the structure"),
    ),
    Case(
        "inf position, calculator",
        lambda c: lj7_with(set_inf).get_forces(),
        ValueError,
        ("NaN or inf", "check the structure"),
    ),
    Case(
        "NaN position, OverdampedLangevin",
        lambda c: OverdampedLangevin(lj7_with(set_nan), 0.005 * units.fs, 600),
        ValueError,
        ("NaN or inf", "check the structure"),
    ),
    Case(
        "NaN position, BruteForce",
        lambda c: brute_force(c, atoms=two_channel_atoms(c, math.nan, 0.0)),
        ValueError,
        ("NaN or inf", "check the structure"),
    ),
    Case(
        "planar potential, non-zero z",
        lambda c: lj7_with(set_z).get_potential_energy(),
        ValueError,
        ("planar", "non-zero z", "0.1", "set every z coordinate to 0"),
    ),
    Case(
        "positions of wrong shape",
        lambda c: c.system.start_A.calc.check_positions(torch.zeros((2, 3))),
        ValueError,
        ("shape (walkers, atoms, 3)", "(2, 3)"),
    ),
    # Importance-function files
    Case(
        "LJ7 importance loaded for 6 atoms",
        lambda c: load_importance(c.lj7_importance, n_atoms=6),
        ValueError,
        ("made for 7 atoms", "has 6", "train or load an importance function"),
    ),
    Case(
        "LJ7 importance called on 6 atoms",
        lambda c: load_importance(c.lj7_importance).log_importance(
            torch.zeros((1, 6, 3), dtype=torch.float64)
        ),
        ValueError,
        ("made for 7 atoms", "6 atoms"),
    ),
    Case(
        "importance file, newer format",
        lambda c: load_importance(
            saved_importance_with(c, "newer.pt", format_version=FORMAT_VERSION + 1)
        ),
        ValueError,
        (f"format version {FORMAT_VERSION + 1}", "newer", "upgrade ase_rare"),
    ),
    Case(
        "importance file, corrupted",
        lambda c: load_importance(write_bytes(c, "garbage.pt", b"\x80\x04garbage")),
        ValueError,
        ("not a readable importance-function file", "truncated"),
    ),
    Case(
        "importance file, foreign pickle",
        lambda c: load_importance(foreign_pickle(c)),
        ValueError,
        ("not an ase_rare importance-function file", "ImportanceFunction.save"),
    ),
    Case(
        "importance file, unknown class",
        lambda c: load_importance(
            saved_importance_with(c, "unknown.pt", **{"class": "FancyNet"})
        ),
        ValueError,
        ("FancyNet", "does not know", "known: GridImportance, MLPImportance, Sch"),
    ),
    Case(
        "importance file, missing",
        lambda c: load_importance(c.folder / "no-such-file.pt"),
        FileNotFoundError,
        ("no-such-file.pt",),
    ),
    Case(
        "importance function returns NaN",
        lambda c: NaNImportance().log_importance_and_gradient(
            torch.zeros((2, 1, 3), dtype=torch.float64)
        ),
        FloatingPointError,
        ("NaNImportance returned NaN or inf", "check the network"),
    ),
    # Ensemble checkpoints
    Case(
        "Ensemble checkpoint, corrupted",
        lambda c: ensemble(c, checkpoint=corrupted_checkpoint(c)),
        ValueError,
        ("unreadable or corrupted", "delete it to start again"),
    ),
    Case(
        "Ensemble checkpoint, other run's",
        lambda c: ensemble(c, checkpoint=foreign_checkpoint(c), seed=2),
        ValueError,
        ("belongs to a different run", "use another checkpoint path or delete it"),
    ),
    # Regions
    Case(
        "A and B overlap (same CV)",
        lambda c: brute_force(
            c,
            A=DiscRegion(cv2(), (-1.118, 0.0), 0.5),
            B=DiscRegion(cv2(), (-0.5, 0.0), 0.5),
        ),
        ValueError,
        ("regions A and B overlap", "must be disjoint", "move their centres apart"),
    ),
    Case(
        "start not in A, BruteForce",
        lambda c: brute_force(c, atoms=two_channel_atoms(c, 0.0, 0.5)),
        ValueError,
        ("not inside region A", "start every walker in A"),
    ),
    Case(
        "disc radius 0",
        lambda c: DiscRegion(cv2(), (0.0, 0.0), 0.0),
        ValueError,
        ("radius must be > 0", "got 0"),
    ),
    Case(
        "disc radius negative",
        lambda c: DiscRegion(cv2(), (0.0, 0.0), -0.1),
        ValueError,
        ("radius must be > 0", "got -0.1"),
    ),
    Case(
        "box lower >= upper",
        lambda c: BoxRegion(cv2(), (0.0, 1.0), (1.0, 1.0)),
        ValueError,
        ("lower < upper", "lower=[0.0, 1.0]", "upper=[1.0, 1.0]"),
    ),
    Case(
        "CV center of wrong length",
        lambda c: DiscRegion(cv2(), (0.0, 0.0, 0.0), 0.2),
        ValueError,
        ("center must have 2 components", "[0.0, 0.0, 0.0]"),
    ),
    Case(
        "CV axes not in xyz",
        lambda c: AtomCoordinates(0, "xw"),
        ValueError,
        ("axes must be letters from 'xyz'", "'xw'"),
    ),
    # Dynamics parameters
    Case(
        "timestep above stability bound",
        lambda c: OverdampedLangevin(lj7_cluster("C3"), 0.05 * units.fs, 600),
        ValueError,
        ("timestep 0.05 fs", "stability bound", "use a timestep below", " fs"),
    ),
    Case(
        "temperature 0 K",
        lambda c: OverdampedLangevin(lj7_cluster("C3"), 0.005 * units.fs, 0.0),
        ValueError,
        ("temperature_K must be a positive number (K)", "got 0.0"),
    ),
    Case(
        "temperature NaN",
        lambda c: LangevinParameters(0.005, math.nan, 1.0),
        ValueError,
        ("temperature_K must be a positive number (K)", "got nan"),
    ),
    Case(
        "friction negative",
        lambda c: OverdampedLangevin(lj7_cluster("C3"), 0.005 * units.fs, 600, -1.0),
        ValueError,
        ("friction must be a positive number (eV·fs/Å²)", "got -1.0"),
    ),
    Case(
        "timestep 0, BruteForce",
        lambda c: brute_force(c, timestep=0.0),
        ValueError,
        ("timestep must be a positive number (fs)", "got 0.0"),
    ),
    Case(
        "rng of wrong type",
        lambda c: OverdampedLangevin(
            lj7_cluster("C3"), 0.005 * units.fs, 600, rng="seed"
        ),
        TypeError,
        ("rng must be a seed (int), None, or a numpy Generator", "got str"),
    ),
    # Calculators
    Case(
        "calculator without forces, adapter",
        lambda c: CalculatorAdapter(EnergyOnly(), Atoms("Ar")),
        ValueError,
        ("EnergyOnly does not implement forces", "returns forces"),
    ),
    Case(
        "atoms without calculator, dynamics",
        lambda c: OverdampedLangevin(Atoms("Ar"), 0.005 * units.fs, 600),
        ValueError,
        ("atoms have no calculator", "attach one first"),
    ),
    Case(
        "atoms without calculator, BruteForce",
        lambda c: brute_force(c, atoms=Atoms("Ar", positions=[[-1.118, 0, 0]])),
        ValueError,
        ("atoms have no calculator", "attach one first"),
    ),
    # ImportanceLangevin
    Case(
        "ImportanceLangevin started in A",
        lambda c: importance_langevin(c),
        ValueError,
        ("start lies inside A or B", "outside both regions"),
    ),
    Case(
        "ImportanceLangevin started in B",
        lambda c: importance_langevin(c, atoms=copy_with_calc(c.system.start_B)),
        ValueError,
        ("start lies inside A or B", "outside both regions"),
    ),
    Case(
        "bad kernel, ImportanceLangevin",
        lambda c: importance_langevin(c, kernel="metropolis"),
        ValueError,
        ("kernel must be one of ('tilt', 'candidates')", "'metropolis'"),
    ),
    Case(
        "n_candidates 0, ImportanceLangevin",
        lambda c: importance_langevin(c, kernel="candidates", n_candidates=0),
        ValueError,
        ("n_candidates and drift_refresh must be >= 1", "got 0, 1"),
    ),
    Case(
        "bad kernel, estimate_rate",
        lambda c: estimate_rate(
            c.system.start_A,
            c.importance,
            c.system.A,
            c.system.B,
            timestep=DT,
            temperature_K=T_K,
            flux=c.flux,
            n_roots=4,
            kernel="metropolis",
        ),
        ValueError,
        ("kernel must be one of ('tilt', 'candidates')", "'metropolis'"),
    ),
    # Structures and run control
    Case(
        "unknown LJ7 structure",
        lambda c: lj7_cluster("C9"),
        ValueError,
        ("unknown LJ7 structure 'C9'", "choose one of C0"),
    ),
    Case(
        "BruteForce.run() without steps or transitions",
        lambda c: brute_force(c).run(),
        ValueError,
        ("give steps=, transitions=, or both",),
    ),
    Case(
        "BruteForce n_walkers 0",
        lambda c: brute_force(c, n_walkers=0),
        ValueError,
        ("n_walkers must be >= 1", "got 0"),
    ),
    # Too few exit points
    Case(
        "Ensemble n_roots > exit points",
        lambda c: ensemble(c, n_roots=9),
        ValueError,
        ("holds 8 exit points, fewer than n_roots = 9", "n_exit_points >= n_roots"),
    ),
    Case(
        "estimate_rate n_roots > exit points",
        lambda c: estimate_rate(
            c.system.start_A,
            c.importance,
            c.system.A,
            c.system.B,
            timestep=DT,
            temperature_K=T_K,
            flux=c.flux,
            n_roots=9,
        ),
        ValueError,
        ("holds 8 exit points, fewer than n_roots = 9", "n_exit_points >= n_roots"),
    ),
    Case(
        "Ensemble n_roots 1",
        lambda c: ensemble(c, n_roots=1),
        ValueError,
        ("n_roots must be >= 2", "got 1"),
    ),
    Case(
        "Ensemble bad kernel",
        lambda c: ensemble(c, kernel="metropolis"),
        ValueError,
        ("kernel must be one of", "metropolis"),
    ),
    Case(
        "Ensemble max_population 0",
        lambda c: ensemble(c, max_population=0),
        ValueError,
        ("max_population must be >= 1", "got"),
    ),
    Case(
        "Ensemble direction misspelt",
        lambda c: ensemble(c, direction="sideways"),
        ValueError,
        ("direction must be 'A->B' or 'B->A'", "sideways"),
    ),
    Case(
        "Ensemble started outside A",
        lambda c: Ensemble(
            c.system.start_B,
            c.importance,
            c.system.A,
            c.system.B,
            **c.ensemble_kwargs,
        ),
        ValueError,
        ("not inside region A", "swap the regions"),
    ),
    # Run configurations (ase-rare run)
    Case(
        "config, unknown key",
        lambda c: config_with(c, ensemble={"n_root": 8}),
        ConfigError,
        ("run.toml", "[ensemble]", "unknown key 'n_root'", "did you mean 'n_roots'?"),
    ),
    Case(
        "config, unknown section",
        lambda c: config_with(c, dynamic={"temperature_K": 600}),
        ConfigError,
        ("top level", "unknown key 'dynamic'", "valid keys: seed, system, dynamics"),
    ),
    Case(
        "config, missing structure file",
        lambda c: config_with(c, system=calculator_system()),
        ConfigError,
        ("structure file 'missing.xyz' not found", "relative paths are taken from"),
    ),
    Case(
        "config, calculator import path misspelt",
        lambda c: config_with(
            c, system=calculator_system(calculator="ase.calculators.emt:EMTX")
        ),
        ConfigError,
        ("[system]: calculator", "has no attribute 'EMTX'", "did you mean EMT"),
    ),
    Case(
        "config, regions on a CV that does not exist",
        lambda c: config_with(
            c,
            system=calculator_system(
                structure=str(c.lj7_importance), cv={"kind": "distance"}
            ),
        ),
        ConfigError,
        ("[system.cv]", "kind must be one of 'atom-coordinates'", "'distance'"),
    ),
    Case(
        "config, temperature not a number",
        lambda c: config_with(c, dynamics={"temperature_K": "600K", "timestep_fs": 1}),
        ConfigError,
        ("[dynamics]", "temperature_K must be a number (in K)", "'600K'"),
    ),
    Case(
        "output folder not writable",
        output_folder_below_a_file,
        OSError,
        ("cannot write to the output folder", "choose another folder"),
    ),
    Case(
        "Ensemble timestep above stability bound",
        lambda c: ensemble(c, timestep=2.0 * units.fs),
        ValueError,
        ("stability bound", "use a timestep below"),
    ),
]


#: What each case raised, for the table of the reliability report.
_REFUSALS: dict[str, tuple[str, str]] = {}


@pytest.fixture(scope="module", autouse=True)
def refusal_table():
    """With ASE_RARE_BAD_INPUT_TABLE=FILE, write the refusals as a Markdown table.

    ``ASE_RARE_BAD_INPUT_TABLE=refusals.md pytest tests/test_bad_input.py``
    """
    yield
    target = os.environ.get("ASE_RARE_BAD_INPUT_TABLE")
    if not target or not _REFUSALS:
        return
    lines = ["| input | exception | message |", "|---|---|---|"]
    for case in CASES:
        if case.id in _REFUSALS:
            kind, message = _REFUSALS[case.id]
            text = " ".join(message.split()).replace("|", "\\|")
            lines.append(f"| {case.id} | `{kind}` | {text} |")
    Path(target).write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_with_a_clear_message(ctx, case):
    with pytest.raises(case.exception) as info:
        case.trigger(ctx)
    message = str(info.value)
    _REFUSALS[case.id] = (type(info.value).__name__, message)
    for text in case.says:
        assert text in message, f"{text!r} not in {message!r}"


def test_catalogue_is_large():
    assert len(CASES) >= 20


# -- the command line: argparse exits, library errors give code 2 -------------


def test_cli_unknown_system_exits_with_usage(capsys):
    with pytest.raises(SystemExit) as info:
        main(["bruteforce", "no-such-system"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'no-such-system'" in err
    assert "lj7" in err and "two-channel" in err


def test_cli_bad_timestep_exits_2_with_message(capsys):
    code = main(["--quiet", "bruteforce", "lj7", "--timestep", "0.05"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("ase-rare: error: timestep 0.05 fs")
    assert "stability bound" in err and "use a timestep below" in err


def test_cli_negative_temperature_exits_2_with_message(capsys):
    code = main(["--quiet", "bruteforce", "two-channel", "-T", "-5"])
    assert code == 2
    err = capsys.readouterr().err
    assert "temperature_K must be a positive number (K); got -5.0" in err


# -- B out of reach: reported in the result, not raised --------------------------


def test_step_cap_is_reported_by_estimate_rate(ctx):
    """Paths cut by a 3-step cap cannot reach B; the result says how many."""
    s = ctx.system
    result = estimate_rate(
        s.start_A,
        ctx.importance,
        s.A,
        s.B,
        timestep=DT,
        temperature_K=T_K,
        flux=ctx.flux,
        n_roots=8,
        max_steps=3,
    )
    assert result.n_step_capped > 0
    assert result.n_step_capped + result.n_successes <= result.n_roots


def test_step_cap_is_reported_by_ensemble(ctx):
    result = ensemble(ctx, max_steps=3).run()
    assert result.n_step_capped > 0
    assert result.n_successes == 0


def test_flux_from_another_temperature_is_refused(ctx):
    """J_A and the exit points belong to one (Δt, T, γ): mixing is an error."""
    s = ctx.system
    with pytest.raises(ValueError, match="flux run was made at temperature"):
        estimate_rate(
            s.start_A,
            ctx.importance,
            s.A,
            s.B,
            timestep=DT,
            temperature_K=T_K + 100,
            n_roots=4,
            flux=ctx.flux,
        )
    options = dict(ctx.ensemble_kwargs)
    options["timestep"] = DT / 2
    with pytest.raises(ValueError, match="flux run was made at timestep"):
        Ensemble(s.start_A, ctx.importance, s.A, s.B, **options)
