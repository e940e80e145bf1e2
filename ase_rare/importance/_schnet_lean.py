"""Lean evaluation of a SchNetPack SchNet on a stack of one small cluster.

SchNetPack evaluates a batch as one large graph: every ordered atom pair of
every configuration is an edge of a flat neighbour list, features are gathered
along that list and summed back with ``index_add`` over all atoms of the batch.
For ``W`` configurations of the same ``N`` atoms, with every pair a neighbour,
that bookkeeping is not needed, and half of the work is redundant: a filter
depends only on the distance, so ``W_ij = W_ji``.

The lean path computes the same mathematics on dense tensors laid out pair-
and atom-major: distances of the ``P = N (N − 1) / 2`` unordered pairs
``(P, W)``; radial basis, cutoff and filter networks on ``(P, W, ·)``, once per
pair instead of twice; atom features ``(N, W, F)``; the continuous-filter
convolution ``m_i = Σ_{j≠i} W_ij h_j`` as a gather and a sum over the fixed
pairs of one configuration, each moving whole ``(W, F)`` slabs; and the
atomwise head summed over the atom axis. It calls the SchNetPack modules
themselves (radial basis, cutoff, embedding, layers) or reads their weights,
so there is one set of parameters; only the shifted softplus of the dense
layers is evaluated by a cheaper formula with the same value
(:class:`ShiftedSoftplus`).
"""

from __future__ import annotations

# isort: off
import ase_rare.importance._spk  # noqa: F401  (first: SchNetPack, quietly)

# isort: on
import math

import torch
import torch.nn.functional as F
from schnetpack.atomistic import Atomwise
from schnetpack.nn import Dense
from schnetpack.nn.activations import shifted_softplus
from schnetpack.representation import SchNet
from schnetpack.representation.schnet import SchNetInteraction
from torch import nn

_LN2 = math.log(2.0)

#: Above this argument the shifted softplus is ``z − ln 2`` to within rounding
#: (``log1p(e^−20) = 2e-9``); ``torch.nn.functional.softplus`` switches there too.
_LINEAR_ABOVE = 20.0


def _shifted_softplus_value(z: torch.Tensor) -> torch.Tensor:
    # On a CPU one maximum (no synchronisation cost) usually spares the
    # large-argument branch; elsewhere the branch-free form avoids a sync.
    if z.device.type == "cpu" and bool(z.amax() <= _LINEAR_ABOVE):
        return torch.exp(z).add_(1.0).log2_().sub_(1.0).mul_(_LN2)
    value = torch.clamp(z, max=_LINEAR_ABOVE).exp_().add_(1.0)
    value = value.log2_().sub_(1.0).mul_(_LN2)
    return torch.where(z > _LINEAR_ABOVE, z - _LN2, value)


class ShiftedSoftplus(torch.autograd.Function):
    """``softplus(z) − ln 2`` as ``ln 2 · (log2(1 + eᶻ) − 1)``; derivative ``σ(z)``.

    The same function as SchNetPack's ``shifted_softplus``, written with
    ``exp`` and ``log2``, which PyTorch vectorises well on CPUs, instead of
    ``log1p``, which on some CPUs costs several times more per element. It
    agrees to the rounding of the network's precision (absolute, about 1e-7
    in float32 for moderate arguments). The backward pass is made of
    differentiable operations, so second derivatives (training losses on
    ``∇ ln I``) work.
    """

    @staticmethod
    def forward(z: torch.Tensor) -> torch.Tensor:
        return _shifted_softplus_value(z)

    @staticmethod
    def vmap(info, in_dims, z):
        # Elementwise: the batched tensor goes through as a whole.
        return ShiftedSoftplus.apply(z), in_dims[0]

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (z,) = ctx.saved_tensors
        return grad * torch.sigmoid(z)


def _layers(block: nn.Module) -> tuple[nn.Module, ...]:
    return tuple(block) if isinstance(block, nn.Sequential) else (block,)


def lean_unsupported(representation: nn.Module, head: nn.Module) -> str | None:
    """Why the lean path cannot evaluate these modules, or None if it can."""
    if type(representation) is not SchNet:
        return f"the representation is a {type(representation).__name__}, not SchNet"
    if len(representation.electronic_embeddings):
        return "the representation has electronic embeddings"
    for interaction in representation.interactions:
        if type(interaction) is not SchNetInteraction:
            return f"an interaction block is a {type(interaction).__name__}"
        blocks = (interaction.in2f, interaction.filter_network, interaction.f2out)
        if not all(isinstance(layer, Dense) for b in blocks for layer in _layers(b)):
            return "an interaction block has layers other than Dense"
    if type(head) is not Atomwise:
        return f"the head is a {type(head).__name__}, not Atomwise"
    if head.aggregation_mode not in ("sum", "avg") or head.n_out != 1:
        return "the head does not sum or average one output per atom"
    return None


def _apply(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A layer or a Sequential of layers, with the cheap shifted softplus."""
    for layer in _layers(block):
        if isinstance(layer, Dense) and layer.activation is shifted_softplus:
            x = ShiftedSoftplus.apply(F.linear(x, layer.weight, layer.bias))
        else:
            x = layer(x)
    return x


def pair_indices(
    n_atoms: int, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The unordered pairs ``(a_p, b_p)``, ``a < b``, of one configuration."""
    first, second = torch.triu_indices(n_atoms, n_atoms, 1, device=device)
    return first, second


def lean_output(
    representation: SchNet,
    head: Atomwise,
    atomic_numbers: torch.Tensor,
    pairs: tuple[torch.Tensor, torch.Tensor],
    positions: torch.Tensor,
    dtype: torch.dtype,
) -> torch.Tensor:
    """The head's aggregated output ``(W,)`` for positions ``(W, N, 3)`` in Å.

    Equal, to rounding, to SchNetPack's ``head(representation(inputs))`` on
    the all-pairs neighbour list of the same configurations, and
    differentiable in the positions and in every parameter. ``pairs`` comes
    from :func:`pair_indices` for ``N`` atoms on the device of ``positions``;
    ``dtype`` is the network's precision.
    """
    n_walkers, n_atoms = positions.shape[:2]
    first, second = pairs

    # Pair vectors R_j − R_i in float64 first, so that translations cancel
    # exactly, then in the network's precision (as the neighbour-list path).
    r = positions.to(torch.float64).transpose(0, 1)
    r_ij = r.index_select(0, second) - r.index_select(0, first)
    d = torch.linalg.vector_norm(r_ij.to(dtype), dim=-1)

    rbf = representation.radial_basis(d)
    cut = representation.cutoff_fn(d).unsqueeze(-1)

    # Embeddings are the same for every walker until the first interaction.
    x = representation.embedding(atomic_numbers).unsqueeze(1)
    for interaction in representation.interactions:
        h = _apply(interaction.in2f, x)
        filters = _apply(interaction.filter_network, rbf) * cut
        m = filters.new_zeros((n_atoms, n_walkers, filters.shape[-1]))
        m = m.index_add(0, first, filters * h.index_select(0, second))
        m = m.index_add(0, second, filters * h.index_select(0, first))
        x = x + _apply(interaction.f2out, m)

    y = _apply(head.outnet, x.expand(n_atoms, n_walkers, -1)).squeeze(-1).sum(0)
    if head.aggregation_mode == "avg":
        y = y / n_atoms
    return y
