"""Transition modes of LJ7 C3 -> C2: which of the four saddles a path crossed.

Around a C3 whose atoms carry labels, each of the two C3 -> C2 saddle types (S1,
S2) occurs twice, as mirror images, so a transition takes one of four modes
(METHOD.md §8.3):

* M1, M2: the S1 saddle (barrier 0.488 eV) and its mirror image;
* M3, M4: the S2 saddle (barrier 0.521 eV) and its mirror image.

The labelled saddles are built once, in the atom labels and the frame of
``lj7_cluster("C3")``: descend from each saddle along its unstable mode into
C3, find the relabelling and proper rotation that map that C3 onto the
reference, carry the saddle along, and reflect it across C3's mirror line for
its partner.

Which partner is which: in the frame of ``lj7_cluster("C3")`` the mirror line is
x = 0 and atom 0 is the apex, the middle atom of the three-atom row and the only
one on that line. M1 and M3 are the saddles, superposed on C3, in which the apex
has moved to x > 0; M2 and M4 are their mirror images (apex at x < 0). In M1 the
apex sinks into the four-atom row on the x > 0 side and becomes the centre of
C2; in M3 the inner atom of the four-atom row at x > 0 (atom 3) becomes the
centre of C2 while the apex is pushed out to cap it.

A path is assigned the mode whose labelled saddle lies nearest, by RMSD after
the best in-plane rotation and translation, to the configuration of highest
potential energy on the path since the walker was last in A.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import torch
from ase import Atoms
from scipy.optimize import linear_sum_assignment, minimize

from ase_rare.channels import ChannelClassifier, ChannelTracker
from ase_rare.kernels import hessian
from ase_rare.potentials.base import DTYPE
from ase_rare.potentials.softcore_lj import SoftCoreLJ
from ase_rare.regions import Region
from ase_rare.structures import lj7_cluster, refine_stationary_point

#: Names of the four C3 -> C2 modes: S1 and its mirror image, S2 and its mirror.
LJ7_MODE_NAMES = ("M1", "M2", "M3", "M4")

# Length in Å of the push along the unstable mode before descending from a saddle.
_PUSH = 0.05


def aligned_rmsd(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """RMSD in Å of planar configurations after the best proper 2D superposition.

    Atom ``i`` of ``x`` is compared with atom ``i`` of ``y`` (no relabelling);
    only the xy components count. The superposition is a translation and a
    rotation in the plane (Kabsch in 2D, in closed form), never a reflection,
    so mirror images stay apart.

    Parameters
    ----------
    x, y : tensor ``(..., N, 2 or 3)``
        Positions in Å; the leading dimensions broadcast.

    Returns
    -------
    tensor ``(...)``
    """
    x, y = _centred(x), _centred(y)
    dot, cross = _sums(x, y)
    # Rotating explicitly, rather than the closed form |x|² + |y|² − 2|x·y + i x×y|,
    # avoids cancellation: identical structures give 0 to round-off, not 1e-8 Å.
    diff = _rotate(x, torch.atan2(cross, dot)) - y
    return (diff * diff).sum((-2, -1)).div(x.shape[-2]).sqrt()


def _centred(x: torch.Tensor) -> torch.Tensor:
    x = x[..., :2]
    return x - x.mean(-2, keepdim=True)


def _sums(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Σ x·y and Σ x × y: proportional to cos and sin of the angle that turns the
    # centred x onto the centred y best.
    dot = (x * y).sum((-2, -1))
    cross = (x[..., 0] * y[..., 1] - x[..., 1] * y[..., 0]).sum(-1)
    return dot, cross


def _rotate(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Turn ``(..., N, 2)`` by ``angle`` ``(...)`` (radians) about the origin."""
    c, s = torch.cos(angle)[..., None], torch.sin(angle)[..., None]
    return torch.stack(
        [c * x[..., 0] - s * x[..., 1], s * x[..., 0] + c * x[..., 1]], -1
    )


def _relabel(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Reorder atoms so that atom ``i`` of ``x`` becomes atom ``perm[..., i]``."""
    index = perm[..., None].expand(*perm.shape, x.shape[-1])
    return torch.empty_like(x).scatter_(-2, index, x)


def match_labels(
    positions: torch.Tensor, reference: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Relabel planar configurations onto a reference, allowing proper motions only.

    Parameters
    ----------
    positions : tensor ``(W, N, 2 or 3)``
        Configurations in Å, in any orientation and with any atom labels.
    reference : tensor ``(N, 2 or 3)``
        The labelled reference.

    Returns
    -------
    perm : long tensor ``(W, N)``
        Atom ``i`` of walker ``w`` plays the part of reference atom
        ``perm[w, i]``.
    rmsd : tensor ``(W,)``
        :func:`aligned_rmsd` in Å of the relabelled configuration from the
        reference.

    Notes
    -----
    Each configuration is turned so that its longest principal axis lies along
    the reference's, both ways round (two proper turns; reflections are left
    out because a mirror image is a different labelled structure). Atoms are
    then given the label of the nearest reference atom, the turn is refitted
    with those labels and the labels assigned once more; the better turn wins.
    Where the nearest-atom labels are not a permutation (far from the
    reference) an optimal assignment (Hungarian) replaces them.
    """
    x = _centred(positions.to(DTYPE))
    ref = _centred(reference.to(x.device, DTYPE))
    w, n = x.shape[:2]
    ref_w = ref.expand(w, n, 2)
    ident = torch.arange(n, device=x.device)
    phi = _major_axis_angle(ref[None])[0] - _major_axis_angle(x)

    best_perm = torch.zeros((w, n), dtype=torch.long, device=x.device)
    best_rmsd = torch.full((w,), math.inf, dtype=DTYPE, device=x.device)
    turns = []
    for turn in (0.0, math.pi):
        xr = _rotate(x, phi + turn)
        for _ in range(2):
            perm = torch.cdist(xr, ref_w).argmin(-1)
            dot, cross = _sums(_relabel(x, perm), ref_w)
            xr = _rotate(x, torch.atan2(cross, dot))
        turns.append(xr)
        valid = (perm.sort(-1).values == ident).all(-1)
        rmsd = torch.where(valid, aligned_rmsd(_relabel(x, perm), ref_w), math.inf)
        better = rmsd < best_rmsd
        best_perm = torch.where(better[:, None], perm, best_perm)
        best_rmsd = torch.where(better, rmsd, best_rmsd)

    for k in torch.nonzero(~torch.isfinite(best_rmsd)).flatten().tolist():
        for xr in turns:
            cost = torch.cdist(xr[k], ref).square().cpu().numpy()
            rows, cols = linear_sum_assignment(cost)
            perm = torch.as_tensor(cols[np.argsort(rows)], device=x.device)
            rmsd = aligned_rmsd(_relabel(x[k], perm), ref)
            if rmsd < best_rmsd[k]:
                best_perm[k], best_rmsd[k] = perm, rmsd
    return best_perm, best_rmsd


def _major_axis_angle(x: torch.Tensor) -> torch.Tensor:
    """Angle in radians of the longest principal axis of centred ``(W, N, 2)``."""
    sxx = (x[..., 0] ** 2).sum(-1)
    syy = (x[..., 1] ** 2).sum(-1)
    sxy = (x[..., 0] * x[..., 1]).sum(-1)
    return 0.5 * torch.atan2(2.0 * sxy, sxx - syy)


def _superpose(x: np.ndarray, onto: np.ndarray, carry: np.ndarray) -> np.ndarray:
    """Move ``carry`` by the proper motion that superposes ``x`` best on ``onto``."""
    dot, cross = _sums(_centred(torch.as_tensor(x)), _centred(torch.as_tensor(onto)))
    angle = torch.atan2(cross, dot)
    moved = np.zeros_like(carry)
    xy = torch.as_tensor(carry[:, :2] - x[:, :2].mean(0))
    moved[:, :2] = _rotate(xy[None], angle[None])[0].numpy() + onto[:, :2].mean(0)
    return moved


def _unstable_mode(potential, x: np.ndarray) -> np.ndarray:
    """Unit in-plane eigenvector ``(N, 3)`` of the lowest Hessian eigenvalue."""
    n = len(x)
    free = np.arange(3 * n) % 3 != 2
    h = hessian(potential, torch.as_tensor(x), free=free)
    values, vectors = np.linalg.eigh(h)
    if not values[0] < -1e-3:
        raise RuntimeError(
            f"not a saddle: lowest Hessian eigenvalue {values[0]:.3g} eV/Å²"
        )
    mode = np.zeros((n, 3))
    mode[:, :2] = vectors[:, 0].reshape(n, 2)
    return mode


def _descend(potential, x: np.ndarray) -> np.ndarray:
    """Minimise from ``x`` (in-plane) and polish to a stationary point."""
    n = len(x)

    def energy_gradient(flat):
        xyz = torch.zeros((1, n, 3), dtype=DTYPE)
        xyz[0, :, :2] = torch.as_tensor(flat.reshape(n, 2))
        energy, forces = potential.batch_energy_forces(xyz)
        return float(energy[0]), -forces[0, :, :2].numpy().ravel()

    res = minimize(
        energy_gradient,
        x[:, :2].ravel(),
        jac=True,
        method="L-BFGS-B",
        options={"gtol": 1e-8, "maxiter": 10_000},
    )
    out = np.zeros((n, 3))
    out[:, :2] = res.x.reshape(n, 2)
    return refine_stationary_point(potential, out, planar=True)


def _mirror(reference: np.ndarray) -> tuple[int, np.ndarray]:
    """The principal axis that C3's mirror reverses, and the permutation it makes.

    Returns ``axis`` (0: x, 1: y) and ``perm`` with ``reflected[i] ==
    reference[perm[i]]``, where ``reflected`` negates coordinate ``axis``.
    """
    for axis in (0, 1):
        reflected = reference.copy()
        reflected[:, axis] *= -1.0
        dist = np.linalg.norm(reflected[:, None, :2] - reference[None, :, :2], axis=-1)
        perm = dist.argmin(1)
        if sorted(perm) == list(range(len(perm))) and dist.min(1).max() < 1e-6:
            return axis, perm
    raise RuntimeError("the reference C3 has no mirror line along a principal axis")


@cache
def _labelled_saddles() -> np.ndarray:
    """Positions ``(4, 7, 3)`` of the saddles of M1-M4 in C3's labels and frame."""
    potential = SoftCoreLJ()
    c3 = lj7_cluster("C3").positions
    c3_t = torch.as_tensor(c3)
    axis, mirror_perm = _mirror(c3)

    saddles = []
    for name in ("S1", "S2"):
        s = lj7_cluster(name).positions
        mode = _unstable_mode(potential, s)
        ends = [_descend(potential, s + sign * _PUSH * mode) for sign in (1.0, -1.0)]
        perms, rmsds = match_labels(torch.as_tensor(np.stack(ends)), c3_t)
        side = int(rmsds.argmin())
        if not rmsds[side] < 1e-6:
            raise RuntimeError(f"neither side of {name} descends into C3")

        # Carry the saddle along with the relabelling and motion that put the C3
        # it descends into onto the reference.
        perm = perms[side].numpy()
        found = _relabel(torch.as_tensor(ends[side]), torch.as_tensor(perm)).numpy()
        labelled = _superpose(found, c3, s[np.argsort(perm)])
        labelled = refine_stationary_point(potential, labelled, planar=True)

        mirrored = labelled.copy()
        mirrored[:, axis] *= -1.0
        mirrored = mirrored[np.argsort(mirror_perm)]
        mirrored = refine_stationary_point(potential, mirrored, planar=True)

        pair = [labelled, mirrored]
        pair.sort(key=lambda p: -_apex_shift(p, c3, axis))
        saddles.extend(pair)

    out = np.stack(saddles)
    x = torch.as_tensor(out)
    apart = aligned_rmsd(x[:, None], x[None]) + torch.eye(len(out), dtype=DTYPE)
    if not apart.min() > 0.1:
        raise RuntimeError("two of the labelled LJ7 mode saddles coincide")
    return out


def _apex_shift(saddle: np.ndarray, c3: np.ndarray, axis: int) -> float:
    """Shift across the mirror line, C3 -> saddle, of C3's atom on that line."""
    aligned = _superpose(saddle, c3, saddle)
    apex = int(np.abs(c3[:, axis]).argmin())
    return float(aligned[apex, axis] - c3[apex, axis])


def lj7_mode_saddles(*, symbol: str = "Ar") -> dict[str, Atoms]:
    """The labelled saddles of modes M1-M4, in the labels of ``lj7_cluster("C3")``.

    Parameters
    ----------
    symbol : str
        Chemical symbol for the discs (only used for display).

    Returns
    -------
    dict
        Mode name -> ``Atoms`` with ``SoftCoreLJ()`` attached: M1 and M2 are
        copies of S1 (−11.05090 eV), M3 and M4 of S2 (−11.01769 eV), each
        refined to a first-order saddle and placed in the frame of C3 (centred,
        mirror line x = 0). In M1 and M3 the apex atom 0 has moved to x > 0.

    Examples
    --------
    >>> saddles = lj7_mode_saddles()
    >>> [round(a.get_potential_energy(), 5) for a in saddles.values()]
    [-11.0509, -11.0509, -11.01769, -11.01769]
    """
    out = {}
    for name, x in zip(LJ7_MODE_NAMES, _labelled_saddles(), strict=True):
        atoms = Atoms(f"{symbol}7", positions=x.copy())
        atoms.calc = SoftCoreLJ()
        atoms.info["name"] = f"LJ7-{name}"
        out[name] = atoms
    return out


class LJ7Modes(ChannelClassifier):
    """Channels M1-M4 of LJ7 C3 -> C2, by the saddle nearest the path's peak.

    Each walker's tracker keeps two configurations: the last one in A (whose
    atom labels say which C3 the walker left) and the one of highest potential
    energy since then. On arrival in B the peak is relabelled like the last C3
    (:func:`match_labels`) and given the mode whose labelled saddle
    (:func:`lj7_mode_saddles`) is nearest by :func:`aligned_rmsd`.

    Parameters
    ----------
    A : Region
        Region A around C3; a walker inside it starts a new excursion.
    max_rmsd : float
        Largest :func:`aligned_rmsd` in Å, after relabelling, that a starting
        configuration or a configuration in A may lie from C3. Labels further
        away are not trusted: walkers that start there are refused, and paths
        whose last configuration in A lies there get label −1.

    Notes
    -----
    The highest-energy configuration stands in for the crossing point; thermal
    energy in the stable modes moves it about, the more so the longer the
    excursion. With the regions of :func:`ase_rare.systems.lj7_system` at
    600 K walkers re-enter A many times per fs and excursions are short: in a
    brute-force run (41 transitions) the peak lay at most 0.19 Å from its
    saddle and at least 1.47 times as far from any other, and its mode always
    agreed with the labelled C2 the walker arrived in and with the saddle the
    path came closest to. Configurations in A and the final one in B never
    count.

    Cost: the update is a handful of batched tensor operations plus one
    evaluation of A's collective variable per step (and one energy evaluation
    when the engine passes none) — about as much as an uncompiled force call
    for LJ7. Relabelling and classification run only when labels are asked
    for.

    Examples
    --------
    >>> import torch
    >>> from ase_rare.systems import lj7_system
    >>> modes = LJ7Modes(lj7_system().A)
    >>> saddles = torch.stack([
    ...     torch.as_tensor(a.positions) for a in lj7_mode_saddles().values()
    ... ])
    >>> modes.classify(saddles).tolist()
    [0, 1, 2, 3]
    """

    names = LJ7_MODE_NAMES

    def __init__(self, A: Region, *, max_rmsd: float = 0.3):
        if not isinstance(A, Region):
            raise TypeError(f"A must be a Region; got {type(A).__name__}")
        if not max_rmsd > 0:
            raise ValueError(f"max_rmsd must be > 0 Å; got {max_rmsd}")
        self.A = A
        self.max_rmsd = float(max_rmsd)
        self.potential = SoftCoreLJ()
        self.reference = torch.as_tensor(lj7_cluster("C3").positions, dtype=DTYPE)
        self.saddles = torch.as_tensor(_labelled_saddles(), dtype=DTYPE)

    def classify(
        self, positions: torch.Tensor, anchors: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mode index ``(W,)`` of the saddle nearest each configuration.

        Parameters
        ----------
        positions : tensor ``(W, 7, 3)``
            Configurations in Å, in any position and in-plane orientation.
        anchors : tensor ``(W, 7, 3)``, optional
            C3 configurations whose atom labels those of ``positions`` share
            (where each walker came from). Default: the labels are those of
            ``lj7_cluster("C3")``.

        Returns
        -------
        long tensor ``(W,)``
            Index into :attr:`names`; −1 where an anchor lies more than
            ``max_rmsd`` from C3.
        """
        x = positions.to(DTYPE)
        label = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
        if x.shape[0] == 0:
            return label
        trusted = torch.ones_like(label, dtype=torch.bool)
        if anchors is not None:
            perm, rmsd = match_labels(anchors, self.reference)
            x = _relabel(x, perm)
            trusted = rmsd <= self.max_rmsd
        saddles = self.saddles.to(x.device)
        nearest = aligned_rmsd(x[:, None], saddles[None]).argmin(-1)
        return torch.where(trusted, nearest, label)

    def tracker(self, positions: torch.Tensor) -> ChannelTracker:
        """A tracker for walkers starting at ``positions`` ``(W, 7, 3)``.

        Every start must be a C3 (any labels, position and orientation) within
        ``max_rmsd``: its labels define the modes until the walker next visits A.
        """
        if positions.ndim != 3 or positions.shape[1:] != (7, 3):
            raise ValueError(
                f"LJ7Modes needs LJ7 positions (W, 7, 3); got {tuple(positions.shape)}"
            )
        _, rmsd = match_labels(positions, self.reference)
        far = rmsd > self.max_rmsd
        if bool(far.any()):
            k = int(torch.nonzero(far)[0, 0])
            raise ValueError(
                f"walker {k} starts {float(rmsd[k]):.3f} Å (RMSD) from C3, more "
                f"than max_rmsd = {self.max_rmsd} Å; LJ7Modes labels C3 -> C2 "
                "transitions and needs every walker to start at a C3 (in or "
                "just outside A)"
            )
        return _ModeTracker(self, positions)


class _ModeTracker(ChannelTracker):
    def __init__(self, spec: LJ7Modes, positions: torch.Tensor):
        self.spec = spec
        self.names = spec.names
        x = positions.detach().to(DTYPE)
        self.anchor = x.clone()
        self.peak = x.clone()
        self.peak_energy = torch.full(
            (x.shape[0],), -math.inf, dtype=DTYPE, device=x.device
        )

    def update(self, old, new, energy=None):
        if energy is None:
            energy = self.spec.potential.batch_energy(old)
        in_a = self.spec.A.contains(old)

        # A visit to A starts a new excursion: the walker's labels are those of
        # the C3 it is in now, and nothing before counts towards the peak.
        self.anchor = torch.where(in_a[:, None, None], old, self.anchor)
        energy = torch.where(in_a, -math.inf, energy.to(DTYPE))
        higher = energy > self.peak_energy
        self.peak = torch.where(higher[:, None, None], old, self.peak)
        self.peak_energy = torch.where(
            in_a, -math.inf, torch.maximum(energy, self.peak_energy)
        )

    def labels(self):
        label = torch.full_like(self.peak_energy, -1, dtype=torch.long)
        idx = torch.nonzero(torch.isfinite(self.peak_energy)).flatten()
        if idx.numel():
            label[idx] = self.spec.classify(self.peak[idx], self.anchor[idx])
        return label

    def restart(self, mask):
        self.peak_energy = torch.where(mask, -math.inf, self.peak_energy)

    def take(self, index):
        self.anchor = self.anchor[index]
        self.peak = self.peak[index]
        self.peak_energy = self.peak_energy[index]
