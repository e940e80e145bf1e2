"""A multilayer perceptron on selected coordinates, for model potentials."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ase_rare.importance.base import ImportanceFunction

_ACTIVATIONS = {"tanh": nn.Tanh, "silu": nn.SiLU, "softplus": nn.Softplus}


class MLPImportance(ImportanceFunction):
    """An MLP from chosen Cartesian coordinates to the committor logit.

    Parameters
    ----------
    n_atoms : int
        Number of atoms of the system.
    coordinates : sequence of (atom, axis), optional
        The inputs, e.g. ``[(0, 0), (0, 1)]`` for x and y of atom 0. Default:
        x and y of every atom.
    hidden : sequence of int
        Widths of the hidden layers.
    activation : {"tanh", "silu", "softplus"}
    center, scale : sequence of float, optional
        Inputs are fed as ``(coordinate − center) / scale`` (Å, Å).
    temperature_K : float, optional
    """

    def __init__(
        self,
        n_atoms: int,
        coordinates: Sequence[Sequence[int]] | None = None,
        hidden: Sequence[int] = (64, 64),
        activation: str = "tanh",
        center: Sequence[float] | None = None,
        scale: Sequence[float] | None = None,
        temperature_K: float | None = None,
    ):
        super().__init__()
        if coordinates is None:
            coordinates = [(a, k) for a in range(n_atoms) for k in (0, 1)]
        coordinates = [tuple(int(v) for v in c) for c in coordinates]
        for atom, axis in coordinates:
            if not (0 <= atom < n_atoms and 0 <= axis < 3):
                raise ValueError(
                    f"coordinate (atom={atom}, axis={axis}) is outside a system of "
                    f"{n_atoms} atoms with axes 0-2"
                )
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(_ACTIVATIONS)}; got {activation!r}"
            )
        d = len(coordinates)
        center = [0.0] * d if center is None else list(center)
        scale = [1.0] * d if scale is None else list(scale)
        if len(center) != d or len(scale) != d:
            raise ValueError(f"center and scale need {d} entries, one per coordinate")
        self.hparams = {
            "n_atoms": n_atoms,
            "coordinates": [list(c) for c in coordinates],
            "hidden": list(hidden),
            "activation": activation,
            "center": center,
            "scale": scale,
        }
        self.n_atoms = n_atoms
        self.temperature_K = temperature_K
        self.register_buffer("atoms", torch.tensor([c[0] for c in coordinates]))
        self.register_buffer("axes", torch.tensor([c[1] for c in coordinates]))
        self.register_buffer("center", torch.tensor(center, dtype=torch.float64))
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float64))
        layers: list[nn.Module] = []
        width = d
        for h in hidden:
            layers += [nn.Linear(width, h), _ACTIVATIONS[activation]()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers).to(torch.float64)

    def features(self, positions: torch.Tensor) -> torch.Tensor:
        x = positions[:, self.atoms, self.axes].to(torch.float64)
        return (x - self.center) / self.scale

    def forward(self, positions):
        return self.net(self.features(positions)).squeeze(-1)
