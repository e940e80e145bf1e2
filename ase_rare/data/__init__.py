"""Trained importance functions shipped with the package, loadable by name.

Each file ``ase_rare/data/importance/NAME.pt`` was written by a script in
``examples/`` (named in :data:`SOURCES`); rerun it to rebuild the file.

>>> "lj7-600K" in SOURCES
True
"""

from __future__ import annotations

from pathlib import Path

from ase_rare.importance.base import ImportanceFunction
from ase_rare.importance.base import load_importance as _load_file

#: Folder of the shipped importance functions.
IMPORTANCE_DIR = Path(__file__).with_name("importance")

#: Name of each shipped importance function and the script that makes it.
SOURCES = {
    "two-channel-1000K": "examples/train_two_channel.py",
    "rugged-2000K": "examples/train_rugged.py",
    "lj7-600K": "examples/train_lj7.py; then examples/train_lj7_interfaces.py",
    "lj7-500K": "examples/train_lj7.py --start-from lj7-600K",
    "lj7-400K": "examples/train_lj7.py --start-from lj7-600K",
    "lj7-300K": "examples/train_lj7.py --start-from lj7-600K",
}


def available() -> list[str]:
    """Names of the importance functions present in this installation."""
    return sorted(p.stem for p in IMPORTANCE_DIR.glob("*.pt"))


def path(name: str) -> Path:
    """The file of a shipped importance function, checked to exist."""
    file = IMPORTANCE_DIR / f"{name}.pt"
    if not file.is_file():
        have = ", ".join(available()) or "none"
        hint = SOURCES.get(name)
        make = f"; make it with `python {hint}`" if hint else ""
        raise FileNotFoundError(
            f"no shipped importance function {name!r} (available: {have}){make}"
        )
    return file


def load_importance(name: str, *, n_atoms: int | None = None) -> ImportanceFunction:
    """Load a shipped importance function by name, e.g. ``"lj7-600K"``.

    Parameters
    ----------
    name : str
        One of :func:`available`, or the path of a saved ``.pt`` file (a file
        that exists is loaded as it is).
    n_atoms : int, optional
        Atom count of the system it will be used on; a mismatch is an error.
    """
    if Path(name).is_file():
        return _load_file(name, n_atoms=n_atoms)
    return _load_file(path(name), n_atoms=n_atoms)
