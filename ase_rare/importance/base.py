"""The importance function: a learned approximation of the committor.

An importance function maps positions ``(W, N, 3)`` in Å to a logit ``s(x)``
with ``I = sigmoid(s)``. Everything downstream works in log space:
``ln I = −softplus(−s)`` and ``ln(1 − I) = −softplus(s)``, which stay accurate
where the committor is as small as ``exp(−βΔE)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: Version of the file format written by :meth:`ImportanceFunction.save`.
FORMAT_VERSION = 1


class ImportanceFunction(nn.Module):
    """Base class: positions ``(W, N, 3)`` -> logit ``s`` of shape ``(W,)``.

    Subclasses implement :meth:`forward` and list the constructor arguments
    needed to rebuild them in ``self.hparams`` (a dict of plain values), so that
    :meth:`save` and :func:`load_importance` round-trip them.

    Attributes
    ----------
    temperature_K : float or None
        The temperature the function was made for, in K.
    n_atoms : int or None
        Number of atoms it expects, checked on every call when set.
    """

    hparams: dict
    temperature_K: float | None = None
    n_atoms: int | None = None

    def logit(self, positions: torch.Tensor) -> torch.Tensor:
        if self.n_atoms is not None and positions.shape[1] != self.n_atoms:
            raise ValueError(
                f"{type(self).__name__} was made for {self.n_atoms} atoms; got "
                f"positions of {positions.shape[1]} atoms"
            )
        return self(positions)

    def log_importance(self, positions: torch.Tensor) -> torch.Tensor:
        """ln I ``(W,)`` in float64."""
        s = self.logit(positions).to(torch.float64)
        return -F.softplus(-s)

    def log_importance_and_gradient(
        self, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ln I ``(W,)`` and its gradient with respect to positions ``(W, N, 3)``
        in Å⁻¹, both float64."""
        with torch.enable_grad():
            x = positions.detach().requires_grad_(True)
            log_i = self.log_importance(x)
            (grad,) = torch.autograd.grad(log_i.sum(), x)
        if not torch.isfinite(log_i).all() or not torch.isfinite(grad).all():
            raise FloatingPointError(
                f"{type(self).__name__} returned NaN or inf (ln I or its gradient); "
                "check the network's parameters and inputs"
            )
        return log_i.detach(), grad.to(torch.float64)

    def reversed(self) -> ImportanceFunction:
        """The importance function of the reverse direction B -> A: ``1 − I``."""
        return ReversedImportance(self)

    def describe(self) -> dict:
        """What is saved besides the weights."""
        return {
            "class": type(self).__name__,
            "hparams": dict(self.hparams),
            "temperature_K": self.temperature_K,
            "n_atoms": self.n_atoms,
        }

    def save(self, path) -> None:
        """Save weights, hyper-parameters, temperature and package version."""
        from ase_rare import __version__

        torch.save(
            {
                "format_version": FORMAT_VERSION,
                "ase_rare_version": __version__,
                **self.describe(),
                "state_dict": self.state_dict(),
            },
            path,
        )


class ReversedImportance(ImportanceFunction):
    """``1 − I`` of another importance function: logit ``−s``."""

    def __init__(self, forward: ImportanceFunction):
        super().__init__()
        self.forward_function = forward
        self.hparams = {}
        self.temperature_K = forward.temperature_K
        self.n_atoms = forward.n_atoms

    def forward(self, positions):
        return -self.forward_function(positions)

    def reversed(self):
        return self.forward_function

    def save(self, path):
        raise TypeError(
            "save the forward importance function and call .reversed() after loading"
        )


def load_importance(path, *, n_atoms: int | None = None) -> ImportanceFunction:
    """Load an importance function saved by :meth:`ImportanceFunction.save`.

    Parameters
    ----------
    path : str or Path
    n_atoms : int, optional
        The number of atoms of the system it will be used on; a mismatch with the
        saved function is an error.
    """
    from ase_rare.importance import REGISTRY

    try:
        data = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - any unpickling failure
        raise ValueError(
            f"{path} is not a readable importance-function file ({err}); it may be "
            "truncated or from another program"
        ) from err
    if not isinstance(data, dict) or "format_version" not in data:
        raise ValueError(
            f"{path} is not an ase_rare importance-function file (no format "
            "version); save importance functions with ImportanceFunction.save()"
        )
    if data["format_version"] > FORMAT_VERSION:
        raise ValueError(
            f"{path} has format version {data['format_version']}, newer than this "
            f"ase_rare understands ({FORMAT_VERSION}); upgrade ase_rare"
        )
    cls = REGISTRY.get(data["class"])
    if cls is None:
        raise ValueError(
            f"{path} holds a {data['class']}, which this ase_rare does not know; "
            f"known: {', '.join(REGISTRY.names())}"
        )
    if n_atoms is not None and data["n_atoms"] not in (None, n_atoms):
        raise ValueError(
            f"{path} was made for {data['n_atoms']} atoms, but the system has "
            f"{n_atoms}; train or load an importance function for this system"
        )
    module = cls(**data["hparams"])
    module.load_state_dict(data["state_dict"])
    module.temperature_K = data["temperature_K"]
    return module
