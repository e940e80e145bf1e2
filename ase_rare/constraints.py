"""Which coordinates move: fixed atoms (ASE constraints) and planar systems.

Every engine of the package moves the same set of coordinates: all of them,
except z when the potential is planar and the coordinates frozen by the
``Atoms``' ``FixAtoms`` or ``FixCartesian`` constraints. Frozen coordinates get
neither force nor noise nor importance drift, so they stay exactly where the
start configuration has them, and the path weights contain no factor from
them.
"""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms
from ase.constraints import FixAtoms, FixCartesian

#: Constraints the engines honour.
SUPPORTED_CONSTRAINTS = (FixAtoms, FixCartesian)


def free_coordinates_of(atoms: Atoms, planar: bool = False) -> np.ndarray:
    """Boolean ``(N, 3)`` mask of the coordinates that move.

    Parameters
    ----------
    atoms : Atoms
        Its ``FixAtoms`` and ``FixCartesian`` constraints freeze coordinates.
    planar : bool
        Freeze every z coordinate as well.

    Raises
    ------
    NotImplementedError
        For any other constraint: the batched engines could not honour it.
    ValueError
        When every coordinate is frozen.

    Examples
    --------
    >>> from ase import Atoms
    >>> from ase.constraints import FixAtoms
    >>> atoms = Atoms("Cu3", positions=[[0, 0, 0], [2.5, 0, 0], [0, 2.5, 0]],
    ...               constraint=FixAtoms(indices=[0, 1]))
    >>> free_coordinates_of(atoms).tolist()
    [[False, False, False], [False, False, False], [True, True, True]]
    """
    free = np.ones((len(atoms), 3), bool)
    if planar:
        free[:, 2] = False
    for constraint in atoms.constraints:
        if isinstance(constraint, FixAtoms):
            free[constraint.get_indices()] = False
        elif isinstance(constraint, FixCartesian):
            index = np.atleast_1d(constraint.index)
            fixed = np.broadcast_to(np.asarray(constraint.mask, bool), (len(index), 3))
            free[index] &= ~fixed
        else:
            raise NotImplementedError(
                f"the dynamics of ase_rare honour FixAtoms and FixCartesian "
                f"constraints only; the atoms carry a {type(constraint).__name__}. "
                "Remove it (atoms.set_constraint()) or express it as fixed atoms."
            )
    if not free.any():
        raise ValueError(
            "every coordinate is fixed by the atoms' constraints; nothing can move"
        )
    return free


def free_mask_tensor(
    free: np.ndarray, *, dtype=torch.float64, device=None
) -> torch.Tensor:
    """The ``(N, 3)`` mask as a float tensor (1 moves, 0 frozen)."""
    return torch.as_tensor(np.asarray(free, bool), dtype=dtype, device=device)


def has_fixed_atoms(atoms: Atoms) -> bool:
    """True when the atoms carry a constraint that freezes coordinates."""
    return any(isinstance(c, SUPPORTED_CONSTRAINTS) for c in atoms.constraints)
