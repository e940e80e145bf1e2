"""A SchNet importance function for atomistic systems, built from SchNetPack."""

from __future__ import annotations

from collections.abc import Sequence

# isort: off
import ase_rare.importance._spk  # noqa: F401  (first: SchNetPack, quietly)

# isort: on
import schnetpack.properties as props
import torch
from schnetpack.atomistic import Atomwise
from schnetpack.nn.cutoff import CosineCutoff
from schnetpack.nn.radial import GaussianRBF
from schnetpack.representation import SchNet
from torch import nn

from ase_rare.importance._schnet_lean import lean_output, lean_unsupported, pair_indices
from ase_rare.importance.base import ImportanceFunction

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_AGGREGATIONS = ("sum", "avg")
_EVALUATIONS = ("auto", "lean", "generic")

#: Largest atomic number SchNet's default nuclear embedding holds.
_MAX_Z = 99


class SchNetImportance(ImportanceFunction):
    """A SchNet network from atomic positions to the committor logit.

    A :class:`schnetpack.representation.SchNet` representation (Gaussian radial
    basis, cosine cutoff) feeds an :class:`schnetpack.atomistic.Atomwise` head
    whose per-atom outputs are summed (or averaged) into one number ``y`` per
    configuration; the logit is ``s = output_scale · y + output_offset``. The
    network sees only interatomic distances and atomic numbers, so ``s`` is
    invariant to translation, rotation, reflection and permutation of atoms of
    the same element, and ``∇ ln I`` rotates with the configuration.

    Parameters
    ----------
    n_atoms : int
        Number of atoms of the system (at least 2).
    atomic_numbers : sequence of int, optional
        Atomic number of each atom; atoms with equal numbers are treated as
        identical. Default: all 18 (argon), as for the LJ7 discs.
    n_atom_basis : int
        Width of the atomic feature vectors.
    n_interactions : int
        Number of SchNet interaction blocks.
    n_rbf : int
        Number of Gaussian radial basis functions spread over ``[0, cutoff]``.
    cutoff : float
        Cutoff radius of the interactions in Å.
    n_hidden : int or sequence of int, optional
        Hidden widths of the atomwise head; default: SchNetPack's pyramid
        (halving from ``n_atom_basis``).
    n_layers : int
        Number of layers of the atomwise head.
    aggregation : {"sum", "avg"}
        How the per-atom outputs are combined.
    logit_offset : float
        Initial value of the learnable ``output_offset`` (dimensionless logit).
    dtype : {"float32", "float64"}
        Precision of the network (see Notes).
    temperature_K : float, optional
        The temperature the function is made for, in K.
    evaluation : {"auto", "lean", "generic"}
        How the network is evaluated (see Notes); the result is the same to
        rounding. ``"auto"`` takes the lean path whenever it can reproduce the
        modules. A run-time choice, not saved with the function; it can also
        be changed on the attribute of the same name.

    Notes
    -----
    *Precision.* Positions stay float64 throughout the package. The pair
    vectors ``R_j − R_i`` are formed in float64 and only then cast to the
    network's precision, so a translation of the whole configuration changes
    nothing, however far it goes. The logit is returned in float64. With the
    default float32 network, ``s`` carries a relative rounding error of about
    1e-7 (1e-6 in ln I for s ≈ −20) and invariances hold to about 1e-5; this does
    not bias the rate, because path weights use the drift and the ln I values
    actually computed. Use ``dtype="float64"`` for finite-difference checks or
    when invariances are needed to 1e-10; on a CPU it costs 1.5-3× more at
    thousands of walkers.

    *Neighbour pairs.* Every pair ``i ≠ j`` of a configuration is a neighbour
    pair; pairs beyond ``cutoff`` get zero weight from the cutoff function, so
    the result is the same as with a cutoff neighbour list. The work grows as
    ``N²`` per configuration: right for clusters of tens of atoms, wasteful for
    hundreds. Configurations are not periodic (no cell, no offsets).

    *Evaluation paths.* The generic path hands SchNetPack its usual inputs:
    one flat neighbour list over the whole batch (index tensors built once,
    for the largest batch seen; a batch of ``W`` walkers uses their first
    ``W`` configurations). The lean path (``ase_rare.importance._schnet_lean``)
    uses that every walker is the same small cluster: dense pair- and
    atom-major tensors, each filter computed once per unordered pair, no
    batch-wide index lists. It reads the same SchNetPack modules and weights,
    so saved files and training are unaffected, and it is several times faster
    on a CPU at thousands of walkers (``benchmarks/bench_biased_step.py``).
    ``"auto"`` falls back to the generic path when the modules are not the
    standard SchNet, interaction and Atomwise blocks (for example after a
    user swapped one).

    *Output scale and offset.* Near A the logit reaches about −βΔE (−10 to −25
    for the benchmarks). ``output_offset`` lets training shift the whole logit
    without moving the network, and ``output_scale`` is the single number to
    multiply by ``T_old / T_new`` (together with the offset) for a warm start
    at another temperature, since ln q scales roughly with β near A.

    The gradient of a pair distance is undefined when two atoms coincide
    exactly; both paths then take PyTorch's subgradient of the norm, zero, for
    that pair (the value stays finite). :meth:`log_importance_and_gradient`
    raises ``FloatingPointError`` when ln I or its gradient is NaN or inf.

    Examples
    --------
    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> f = SchNetImportance(3, n_atom_basis=8, n_interactions=1, n_rbf=5)
    >>> x = torch.tensor([[[0.0, 0, 0], [1.1, 0, 0], [0, 1.1, 0]]], dtype=torch.float64)
    >>> log_i, grad = f.log_importance_and_gradient(x)
    >>> log_i.shape, log_i.dtype, grad.shape, grad.dtype
    (torch.Size([1]), torch.float64, torch.Size([1, 3, 3]), torch.float64)
    """

    def __init__(
        self,
        n_atoms: int,
        atomic_numbers: Sequence[int] | None = None,
        *,
        n_atom_basis: int = 32,
        n_interactions: int = 3,
        n_rbf: int = 20,
        cutoff: float = 5.0,
        n_hidden: int | Sequence[int] | None = None,
        n_layers: int = 2,
        aggregation: str = "sum",
        logit_offset: float = 0.0,
        dtype: str = "float32",
        temperature_K: float | None = None,
        evaluation: str = "auto",
    ):
        super().__init__()
        n_atoms = int(n_atoms)
        if n_atoms < 2:
            raise ValueError(
                f"SchNetImportance needs at least 2 atoms (it sees only distances); "
                f"got n_atoms={n_atoms}"
            )
        if atomic_numbers is None:
            atomic_numbers = [18] * n_atoms
        atomic_numbers = [int(z) for z in atomic_numbers]
        if len(atomic_numbers) != n_atoms:
            raise ValueError(
                f"atomic_numbers has {len(atomic_numbers)} entries for {n_atoms} atoms"
            )
        if not all(1 <= z <= _MAX_Z for z in atomic_numbers):
            raise ValueError(
                f"atomic numbers must lie in 1-{_MAX_Z}; got {atomic_numbers}"
            )
        if aggregation not in _AGGREGATIONS:
            raise ValueError(
                f"aggregation must be one of {_AGGREGATIONS}; got {aggregation!r}"
            )
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}; got {dtype!r}")
        if not cutoff > 0:
            raise ValueError(f"cutoff must be positive (Å); got {cutoff}")
        if isinstance(n_hidden, Sequence):
            n_hidden = [int(h) for h in n_hidden]

        self.hparams = {
            "n_atoms": n_atoms,
            "atomic_numbers": atomic_numbers,
            "n_atom_basis": int(n_atom_basis),
            "n_interactions": int(n_interactions),
            "n_rbf": int(n_rbf),
            "cutoff": float(cutoff),
            "n_hidden": n_hidden,
            "n_layers": int(n_layers),
            "aggregation": aggregation,
            "logit_offset": float(logit_offset),
            "dtype": dtype,
        }
        self.n_atoms = n_atoms
        self.temperature_K = temperature_K
        self.evaluation = evaluation

        self.representation = SchNet(
            n_atom_basis=n_atom_basis,
            n_interactions=n_interactions,
            radial_basis=GaussianRBF(n_rbf=n_rbf, cutoff=cutoff),
            cutoff_fn=CosineCutoff(cutoff),
        )
        self.head = Atomwise(
            n_in=n_atom_basis,
            n_hidden=n_hidden,
            n_layers=n_layers,
            aggregation_mode=aggregation,
            output_key="logit",
        )
        self.output_scale = nn.Parameter(torch.tensor(1.0))
        self.output_offset = nn.Parameter(torch.tensor(float(logit_offset)))
        self.to(_DTYPES[dtype])
        self.register_buffer(
            "atomic_numbers", torch.tensor(atomic_numbers), persistent=False
        )

        # Pair (i, j) of configuration k sits at k·P + p: a batch of W walkers is
        # a prefix of the index tensors built for a larger batch.
        i, j = torch.meshgrid(
            torch.arange(n_atoms), torch.arange(n_atoms), indexing="ij"
        )
        off_diagonal = i != j
        self._pair_i = i[off_diagonal]
        self._pair_j = j[off_diagonal]
        self._graphs: dict[torch.device, dict[str, torch.Tensor]] = {}
        self._pairs: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def dtype(self) -> torch.dtype:
        """Precision the network runs in."""
        return self.output_scale.dtype

    @property
    def evaluation(self) -> str:
        """``"auto"``, ``"lean"`` or ``"generic"``: how the network is evaluated."""
        return self._evaluation

    @evaluation.setter
    def evaluation(self, value: str) -> None:
        if value not in _EVALUATIONS:
            raise ValueError(f"evaluation must be one of {_EVALUATIONS}; got {value!r}")
        self._evaluation = value

    def uses_lean_path(self) -> bool:
        """Whether :meth:`forward` takes the lean path (see Notes).

        Raises ``NotImplementedError`` when ``evaluation="lean"`` was asked for
        but the modules are not ones the lean path reproduces.
        """
        if self._evaluation == "generic":
            return False
        reason = lean_unsupported(self.representation, self.head)
        if reason is not None and self._evaluation == "lean":
            raise NotImplementedError(
                f"the lean SchNet path cannot evaluate this network: {reason}; "
                'use evaluation="generic" or "auto"'
            )
        return reason is None

    @property
    def n_pairs(self) -> int:
        """Ordered neighbour pairs per configuration, ``N (N − 1)``."""
        return self._pair_i.numel()

    def _graph(self, n_walkers: int, device: torch.device) -> dict[str, torch.Tensor]:
        """SchNetPack's index inputs for ``n_walkers`` configurations."""
        graph = self._graphs.get(device)
        if graph is None or graph[props.n_atoms].numel() < n_walkers:
            n = self.n_atoms
            walker = torch.arange(n_walkers, device=device)
            first_atom = (walker * n).repeat_interleave(self.n_pairs)
            graph = {
                props.idx_i: self._pair_i.to(device).repeat(n_walkers) + first_atom,
                props.idx_j: self._pair_j.to(device).repeat(n_walkers) + first_atom,
                props.idx_m: walker.repeat_interleave(n),
                props.Z: self.atomic_numbers.to(device).repeat(n_walkers),
                props.n_atoms: torch.full(
                    (n_walkers,), n, dtype=self.dtype, device=device
                ),
            }
            self._graphs[device] = graph
        n_nodes = n_walkers * self.n_atoms
        n_edges = n_walkers * self.n_pairs
        return {
            props.idx_i: graph[props.idx_i][:n_edges],
            props.idx_j: graph[props.idx_j][:n_edges],
            props.idx_m: graph[props.idx_m][:n_nodes],
            props.Z: graph[props.Z][:n_nodes],
            props.n_atoms: graph[props.n_atoms][:n_walkers],
        }

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        if positions.ndim != 3 or positions.shape[-1] != 3:
            raise ValueError(
                f"positions must have shape (walkers, atoms, 3); got "
                f"{tuple(positions.shape)}"
            )
        if positions.device != self.output_scale.device:
            raise ValueError(
                f"positions are on {positions.device}, the network on "
                f"{self.output_scale.device}; move the importance function with "
                f".to({str(positions.device)!r}) (or the walkers to its device)"
            )
        n_walkers = positions.shape[0]
        if n_walkers == 0:
            # Empty, but still connected to the positions for autograd.
            return positions.to(torch.float64).sum(dim=(1, 2))
        if self.uses_lean_path():
            device = positions.device
            if device not in self._pairs:
                self._pairs[device] = pair_indices(self.n_atoms, device)
            y = lean_output(
                self.representation,
                self.head,
                self.atomic_numbers,
                self._pairs[device],
                positions,
                self.dtype,
            )
            return (self.output_scale * y + self.output_offset).to(torch.float64)

        inputs = self._graph(n_walkers, positions.device)

        # Differences in float64 first: translations cancel exactly, and the
        # network only ever sees relative vectors in its own precision.
        r = positions.to(torch.float64).reshape(-1, 3)
        r_ij = r[inputs[props.idx_j]] - r[inputs[props.idx_i]]
        inputs[props.R] = r.to(self.dtype)
        inputs[props.Rij] = r_ij.to(self.dtype)

        inputs = self.representation(inputs)
        y = self.head(inputs)["logit"]
        return (self.output_scale * y + self.output_offset).to(torch.float64)
