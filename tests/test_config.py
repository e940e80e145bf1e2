"""Configuration files: good ones become RunConfig trees, bad ones clear errors."""

import textwrap

import ase.io
import pytest
import torch
from ase.build import add_adsorbate, fcc100
from ase.constraints import FixAtoms

from ase_rare.config import (
    ConfigError,
    build_system,
    import_object,
    load_config,
    parse_config,
)

torch.set_num_threads(1)

GOOD_2D = """
seed = 3
[system]
builtin = "two-channel"
radius = 0.25
[dynamics]
temperature_K = [2500, 2000]
timestep_fs = 0.02
[importance]
grid = { spacing = 0.1 }
[ensemble]
n_roots = 32
branching = { interval = 5, c_hi = 3.0 }
[output]
folder = "out"
"""


def write(folder, text, name="run.toml"):
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def cu_adatom_files(folder):
    """A Cu(100) slab with an adatom (atom 0) and a CV module, in ``folder``."""
    slab = fcc100("Cu", size=(2, 2, 2), vacuum=6.0)
    add_adsorbate(slab, "Cu", 1.7, "hollow")
    atoms = slab[-1:] + slab[:-1]
    atoms.set_constraint(FixAtoms(indices=list(range(1, len(atoms)))))
    ase.io.write(folder / "start.traj", atoms)
    (folder / "cvs.py").write_text(
        "import torch\n\ndef lateral(positions):\n    return positions[:, 0, :2]\n"
    )
    return atoms


EMT_CONFIG = """
[system]
calculator = "ase.calculators.emt:EMT"
structure = "start.traj"
cv = {{ kind = "function", function = "cvs.py:lateral", names = ["x", "y"] }}
A = {{ center = "start", radius = 0.3 }}
B = {{ center = [{bx}, {by}], radius = 0.3 }}
[dynamics]
temperature_K = 900
timestep_fs = 0.05
[importance]
path = "I.pt"
"""


def test_good_config_is_read(tmp_path):
    config = load_config(write(tmp_path, GOOD_2D))
    assert config.seed == 3
    assert config.system.builtin == "two-channel"
    assert config.system.options == {"radius": 0.25, "tilt": 0.02}
    assert config.dynamics.temperatures_K == (2500.0, 2000.0)
    assert config.importance.grid.spacing == 0.1
    assert config.ensemble.branching == {"interval": 5, "c_hi": 3.0}
    assert config.output.folder == (tmp_path / "out").resolve()
    system = build_system(config.system)
    assert system.start_A in system.A and system.A.radius == 0.25


def test_calculator_system_with_fixed_atoms_and_function_cv(tmp_path):
    atoms = cu_adatom_files(tmp_path)
    (tmp_path / "I.pt").write_bytes(b"")  # only its existence is checked here
    bx, by = atoms.positions[0, 0] + atoms.cell[0, 0] / 2, atoms.positions[0, 1]
    config = load_config(write(tmp_path, EMT_CONFIG.format(bx=bx, by=by)))
    system = build_system(config.system)
    assert type(system.start_A.calc).__name__ == "EMT"
    assert isinstance(system.start_A.constraints[0], FixAtoms)
    assert system.start_A in system.A
    assert system.A.disjoint_from(system.B)


def test_training_keys_follow_train_importance(tmp_path):
    text = GOOD_2D.replace(
        "grid = { spacing = 0.1 }",
        'train = { model = "mlp", iterations = 2, learning_rate = 0.01 }',
    )
    config = load_config(write(tmp_path, text))
    assert config.importance.train.options == {"iterations": 2, "learning_rate": 0.01}


# -- bad configurations: each error names the key and the fix ------------------


def bad(tmp_path, old, new):
    return write(tmp_path, GOOD_2D.replace(old, new))


@pytest.mark.parametrize(
    "old, new, says",
    [
        (
            "n_roots = 32",
            "n_root = 32",
            ("[ensemble]", "unknown key 'n_root'", "did you mean 'n_roots'?", "valid"),
        ),
        ("seed = 3", "sed = 3", ("top level", "unknown key 'sed'", "valid keys")),
        (
            "interval = 5",
            "every = 5",
            ("[ensemble.branching]", "'every'", "c_lo, c_hi, m_max, interval"),
        ),
        (
            "temperature_K = [2500, 2000]",
            'temperature_K = "hot"',
            ("[dynamics]", "temperature_K must be a number (in K)", "'hot'"),
        ),
        (
            "temperature_K = [2500, 2000]",
            "temperature_K = -5",
            ("[dynamics]", "temperature_K must be > 0 K", "got -5", "kelvin"),
        ),
        (
            "temperature_K = [2500, 2000]",
            "temperature_K = [2500, 0]",
            ("temperature_K must be > 0 K", "got 0"),
        ),
        (
            "timestep_fs = 0.02",
            "timestep_fs = 0",
            ("[dynamics]", "timestep_fs must be > 0 (in fs)"),
        ),
        ("n_roots = 32", "n_roots = 32.5", ("n_roots must be a whole number", "32.5")),
        ("n_roots = 32", "n_roots = 1", ("n_roots must be >= 2", "got 1")),
        (
            'builtin = "two-channel"',
            'builtin = "lj8"',
            ("builtin must be one of 'lj7', 'two-channel', 'rugged'", "'lj8'"),
        ),
        (
            "radius = 0.25",
            "radius_A = 0.25",
            ("unknown key 'radius_A'", "valid keys: builtin, radius, tilt"),
        ),
        (
            "grid = { spacing = 0.1 }",
            'name = "lj7-900K"',
            ("not a shipped importance function", "lj7-600K"),
        ),
        (
            "grid = { spacing = 0.1 }",
            'path = "missing.pt"',
            ("importance-function file 'missing.pt' not found", "relative paths"),
        ),
        (
            "grid = { spacing = 0.1 }",
            'grid = { spacing = 0.1 }\nname = "lj7-600K"',
            ("needs exactly one of", "got name, grid"),
        ),
        (
            "[ensemble]",
            "[flux]\nn_exit_points = 8\n[ensemble]",
            ("n_exit_points = 8 is smaller than", "n_roots = 32"),
        ),
        (
            "branching = { interval = 5, c_hi = 3.0 }",
            "branching = { c_lo = 2.0 }",
            ("[ensemble.branching]", "0 < c_lo < 1 < c_hi"),
        ),
        (
            "branching = { interval = 5, c_hi = 3.0 }",
            'kernel = "metropolis"',
            ("kernel must be one of 'tilt', 'candidates'", "'metropolis'"),
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 30 else None,
)
def test_bad_value_names_key_and_fix(tmp_path, old, new, says):
    with pytest.raises(ConfigError) as info:
        load_config(bad(tmp_path, old, new))
    message = str(info.value)
    assert str(tmp_path / "run.toml") in message
    for text in says:
        assert text in message, f"{text!r} not in {message!r}"


def test_missing_section_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"needs a \[importance\] section"):
        load_config(bad(tmp_path, "[importance]\ngrid = { spacing = 0.1 }", ""))
    with pytest.raises(FileNotFoundError, match="configuration file .* not found"):
        load_config(tmp_path / "nothing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[system\nbuiltin = 1"))


def test_missing_structure_file(tmp_path):
    cu_adatom_files(tmp_path)
    (tmp_path / "I.pt").write_bytes(b"")
    text = EMT_CONFIG.format(bx=3.8, by=1.3).replace("start.traj", "nowhere.xyz")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    message = str(info.value)
    assert "[system]" in message and "structure file 'nowhere.xyz' not found" in message
    assert "relative paths are taken from the folder of the configuration" in message


@pytest.mark.parametrize(
    "spec, says",
    [
        ("ase.calculators.emtx:EMT", ("cannot import the module", "installed")),
        ("ase.calculators.emt:EMTX", ("has no attribute 'EMTX'", "did you mean EMT")),
        ("EMT", ("is not an import path", "'ase.calculators.emt:EMT'")),
    ],
)
def test_bad_calculator_import_path(tmp_path, spec, says):
    cu_adatom_files(tmp_path)
    (tmp_path / "I.pt").write_bytes(b"")
    text = EMT_CONFIG.format(bx=3.8, by=1.3).replace("ase.calculators.emt:EMT", spec)
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert "[system]: calculator" in str(info.value)
    for text in says:
        assert text in str(info.value)


def test_regions_that_do_not_fit_the_cv(tmp_path):
    cu_adatom_files(tmp_path)
    (tmp_path / "I.pt").write_bytes(b"")
    text = EMT_CONFIG.format(bx=3.8, by=1.3).replace("[3.8, 1.3]", "[3.8, 1.3, 0.0]")
    config = load_config(write(tmp_path, text))
    with pytest.raises(
        ConfigError, match=r"\[system.B\] does not fit .*must have 2 components"
    ):
        build_system(config.system)
    text = EMT_CONFIG.format(bx=3.8, by=1.3).replace('"function"', '"distance"')
    with pytest.raises(ConfigError, match="kind must be one of 'atom-coordinates'"):
        load_config(write(tmp_path, text))


def test_import_object_from_a_file(tmp_path):
    (tmp_path / "mod.py").write_text("VALUE = 7\n")
    assert import_object("mod.py:VALUE", tmp_path) == 7
    with pytest.raises(ConfigError, match="does not exist"):
        import_object("other.py:VALUE", tmp_path)


def test_parse_config_from_a_dict():
    config = parse_config(
        {
            "system": {"builtin": "lj7"},
            "dynamics": {"temperature_K": 600, "timestep_fs": 0.005},
            "importance": {"name": "lj7-600K"},
        }
    )
    # The built-in LJ7 carries its harmonic TST reference by default.
    assert config.references.htst is True
    assert config.ensemble.n_roots == 4096 and config.execution.workers == 1


def test_weighted_ensemble_needs_a_pool_and_a_function_that_exists(tmp_path):
    base = (
        '[system]\nbuiltin = "two-channel"\n[dynamics]\ntemperature_K = 1000\n'
        "timestep_fs = 0.01\n"
    )
    path = tmp_path / "a.toml"
    path.write_text(
        base + '[importance]\nname = "two-channel-1000K"\n'
        "[flux]\nweighted_ensemble = true\n"
    )
    with pytest.raises(ConfigError, match="needs root_pool"):
        load_config(path)
    path.write_text(
        base + "[importance]\ngrid = { spacing = 0.02 }\n"
        "[flux]\nweighted_ensemble = true\nroot_pool = 1000\n"
    )
    with pytest.raises(ConfigError, match="must exist before it"):
        load_config(path)
    path.write_text(
        base + '[importance]\nname = "two-channel-1000K"\n'
        "[flux]\nroot_pool = 1000\nn_exit_points = 1000\n"
    )
    with pytest.raises(ConfigError, match="both root_pool and n_exit_points"):
        load_config(path)
