"""Harmonic transition-state theory in the overdamped (Langer/Kramers) limit.

For overdamped Langevin dynamics with friction γ the harmonic rate of escape from a
minimum A over saddles s is

    k = Σ_s m_s ν_s exp(−ΔE_s / k_B T),
    ν_s = |λ_u,s| / (2πγ) · sqrt(det′H_A / |det′H_s|) · V_rot,s / V_rot,A,

where λ_u,s is the single negative Hessian eigenvalue at saddle s, det′ the product of
the Hessian eigenvalues left after removing rigid-body motions (and frozen
coordinates), V_rot the volume factor of the removed rotations, ΔE_s = E_s − E_A the
barrier and m_s the number of symmetry-equivalent copies of saddle s around A. The
prefactor ν_s is that of one copy; the multiplicity multiplies it separately.

Every structure is analysed with its own ASE calculator through
:func:`ase_rare.potentials.as_batched`: exact autograd Hessians for the package's
potentials, central differences of forces for any other calculator.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import BaseCalculator
from ase.constraints import FixAtoms

from ase_rare.kernels import KB_EV_PER_K, hessian
from ase_rare.potentials.adapter import as_batched
from ase_rare.potentials.base import DTYPE

__all__ = [
    "HTSTResult",
    "HarmonicTST",
    "StationaryPoint",
    "harmonic_analysis",
    "htst_rate",
    "htst_rates",
]

# Size of the finite rigid motions used to test whether the potential is invariant
# under them: large enough that a potential that is not invariant changes by far more
# than round-off (for a curvature λ the change is about λ d²/2), small enough to stay
# in the region where the structure is meaningful.
_PROBE_SHIFT_A = 0.1
_PROBE_ANGLE_RAD = 0.1

# A rigid motion counts as a symmetry when it changes the energy by less than this
# fraction of max(1 eV, |E|): round-off of float64 potentials is ~1e-14 relative,
# of float32 machine-learned potentials ~1e-7, while a potential that is not
# invariant changes by about λ d²/2, 5e-3 eV for a curvature λ = 1 eV/Å². Only a
# potential almost flat along a rigid motion is misjudged; pass ``rigid`` there.
_INVARIANCE_RTOL = 1e-6

# Hessian eigenvalues smaller than this fraction of the largest |λ| are treated as
# zero modes that should have been removed: autograd Hessians reproduce true zero
# modes to ~1e-13 relative, finite differences to ~1e-9.
_ZERO_MODE_RTOL = 1e-7

# Displacement in Å for central differences of forces (foreign calculators): the
# truncation error, ~step² times the fourth derivative, and the round-off,
# ~(force precision)/step, balance near 1e-5 Å for forces accurate to ~1e-12 eV/Å.

# Generators of rigid motions shorter than this (Å, per unit displacement or angle)
# do not move anything: the rotation of a single atom about itself, or of a linear
# molecule about its axis.
_NULL_GENERATOR_A = 1e-8


@dataclass(frozen=True)
class StationaryPoint:
    """Harmonic analysis of one stationary point (a minimum or a saddle).

    Attributes
    ----------
    name : str
        Label taken from ``atoms.info["name"]`` or given by the caller.
    energy_eV : float
        Potential energy in eV.
    eigenvalues_eV_per_A2 : tuple of float
        Hessian eigenvalues in eV/Å², ascending, of the internal coordinates: the
        free coordinates (no z for planar systems, no fixed atoms) orthogonal to the
        rigid translations and rotations that were removed.
    n_translations, n_rotations : int
        Number of rigid translations and rotations projected out.
    log_rotational_volume : float
        ½ ln of the product of the non-zero eigenvalues of the Gram matrix of the
        removed rotation generators (ln Å^n_rotations). With unit masses this Gram
        matrix is the inertia tensor about the centroid, so the volume is
        sqrt(Σ_i |r_i − r_c|²) for a planar cluster and sqrt(I₁ I₂ I₃) in 3D.
    max_force_eV_per_A : float
        Largest force on an atom, in eV/Å, over the free coordinates.
    """

    name: str
    energy_eV: float
    eigenvalues_eV_per_A2: tuple[float, ...]
    n_translations: int
    n_rotations: int
    log_rotational_volume: float
    max_force_eV_per_A: float

    @property
    def n_negative(self) -> int:
        """Number of negative Hessian eigenvalues (the saddle index)."""
        return sum(lam < 0 for lam in self.eigenvalues_eV_per_A2)

    @property
    def log_abs_det(self) -> float:
        """ln |det′H| with det′H in (eV/Å²)^n_internal."""
        return float(np.sum(np.log(np.abs(self.eigenvalues_eV_per_A2))))


def _free_mask(atoms: Atoms, planar: bool) -> np.ndarray:
    """``(N, 3)`` boolean mask of the coordinates the harmonic analysis varies."""
    free = np.ones((len(atoms), 3), bool)
    if planar:
        free[:, 2] = False
    for constraint in atoms.constraints:
        if not isinstance(constraint, FixAtoms):
            raise NotImplementedError(
                f"harmonic analysis supports FixAtoms constraints only; got "
                f"{type(constraint).__name__}"
            )
        free[constraint.get_indices()] = False
    if not free.any():
        raise ValueError("every coordinate is fixed; nothing to analyse")
    return free


def _rigid_generators(
    positions: np.ndarray, free: np.ndarray, planar: bool
) -> tuple[list[np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
    """Translation generators ``(N, 3)`` and rotations as (axis, generator) pairs.

    Only atoms with a free coordinate take part (fixed atoms stay), and rotations
    turn about the centroid of those atoms. A rotation that moves nothing (one
    atom, or a linear molecule about its axis) is dropped.
    """
    mobile = free.any(axis=1)
    centre = positions[mobile].mean(axis=0)
    translations = []
    for a in (0, 1) if planar else (0, 1, 2):
        t = np.zeros_like(positions)
        t[mobile, a] = 1.0
        translations.append(t)
    rotations = []
    for a in (2,) if planar else (0, 1, 2):
        axis = np.eye(3)[a]
        r = np.zeros_like(positions)
        r[mobile] = np.cross(axis, positions[mobile] - centre)
        if np.linalg.norm(r) > _NULL_GENERATOR_A:
            rotations.append((axis, r))
    return translations, rotations


def _rotated(
    positions: np.ndarray, free: np.ndarray, axis: np.ndarray, angle_rad: float
) -> np.ndarray:
    """Positions with the mobile atoms rotated about ``axis`` through their centroid."""
    mobile = free.any(axis=1)
    centre = positions[mobile].mean(axis=0)
    k = np.array(
        [[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]]
    )
    rot = np.eye(3) + math.sin(angle_rad) * k + (1 - math.cos(angle_rad)) * (k @ k)
    out = positions.copy()
    out[mobile] = (positions[mobile] - centre) @ rot.T + centre
    return out


def _energy(potential, positions: np.ndarray) -> float:
    t = torch.as_tensor(positions, dtype=DTYPE).unsqueeze(0)
    return float(potential.batch_energy_forces(t)[0][0])


def _structure_label(atoms: Atoms, fallback: str) -> str:
    return str(atoms.info.get("name", fallback))


def harmonic_analysis(
    atoms: Atoms,
    *,
    calculator: BaseCalculator | None = None,
    planar: bool | None = None,
    rigid: bool | None = None,
    fmax: float = 1e-3,
    name: str | None = None,
) -> StationaryPoint:
    """Hessian eigenvalues of a stationary point with rigid-body motions removed.

    Parameters
    ----------
    atoms : Atoms
        The stationary point. Its calculator supplies energy, forces and the
        Hessian (exact for the package's potentials, central force differences for
        any other ASE calculator). ``FixAtoms`` constraints freeze those atoms.
    calculator : ASE calculator, optional
        Use this calculator instead of ``atoms.calc`` (e.g. for structures read
        from a file with a single-point calculator attached).
    planar : bool or None
        Freeze z and treat the system as two-dimensional. None takes the
        calculator's ``planar`` attribute (True for the LJ7 and 2D benchmark
        potentials, False for foreign calculators).
    rigid : bool or None
        Remove rigid translations and rotations. True removes all of them (two
        translations and one rotation when planar, three and three in 3D; fewer
        when they do not move anything, as for one atom's rotation); False removes
        none, as for a model potential acting on one atom's coordinates. None (the
        default) keeps each rigid motion under which the potential is invariant: a
        translation by 0.1 Å or a rotation by 0.1 rad about the centroid that
        changes the energy by less than 1e-6·max(1 eV, |E|) is removed. Pass
        ``rigid=True`` for invariant potentials with numerical noise (DFT grids).
    fmax : float
        Largest acceptable force on an atom in eV/Å. The harmonic expansion is
        about a stationary point: a residual force f shifts the energy by about
        f²/(2λ) and the curvatures by about f·U‴/λ, so the default 1e-3 eV/Å keeps
        both negligible for curvatures λ ≳ 0.01 eV/Å². Larger forces are refused.
    name : str, optional
        Label for messages and results; default ``atoms.info["name"]`` or
        ``"structure"``.

    Returns
    -------
    StationaryPoint
        Energy, internal Hessian eigenvalues and rotational-volume factor.

    Raises
    ------
    ValueError
        If the largest force exceeds ``fmax``, or a zero mode is left after
        removing the rigid motions.
    NotImplementedError
        For constraints other than ``FixAtoms``.

    Examples
    --------
    >>> from ase_rare.structures import lj7_cluster
    >>> point = harmonic_analysis(lj7_cluster("S1"))
    >>> point.n_translations, point.n_rotations, point.n_negative
    (2, 1, 1)
    """
    label = name if name is not None else _structure_label(atoms, "structure")
    calc = calculator if calculator is not None else atoms.calc
    potential = as_batched(calc, atoms)
    if planar is None:
        planar = bool(getattr(potential, "planar", False))
    free = _free_mask(atoms, planar)
    positions = np.array(atoms.positions, dtype=float)

    x = torch.as_tensor(positions, dtype=DTYPE)
    energy, forces = potential.batch_energy_forces(x.unsqueeze(0))
    energy = float(energy[0])
    f = forces[0].detach().cpu().numpy() * free
    max_force = float(np.linalg.norm(f, axis=1).max())
    if not max_force <= fmax:
        raise ValueError(
            f"{label} is not a stationary point: largest force {max_force:.3g} eV/Å "
            f"exceeds fmax = {fmax:g} eV/Å. Refine it first, e.g. with "
            "ase_rare.structures.refine_stationary_point (minima and saddles) or an "
            "ASE optimizer (minima)."
        )

    translations, rotations = _rigid_generators(positions, free, planar)
    if rigid is None:
        scale = _INVARIANCE_RTOL * max(1.0, abs(energy))
        translations = [
            t
            for t in translations
            if abs(_energy(potential, positions + _PROBE_SHIFT_A * t) - energy) < scale
        ]
        rotations = [
            (axis, r)
            for axis, r in rotations
            if abs(
                _energy(potential, _rotated(positions, free, axis, _PROBE_ANGLE_RAD))
                - energy
            )
            < scale
        ]
    elif not rigid:
        translations, rotations = [], []

    # Internal coordinates: the free ones, orthogonal to the removed rigid motions.
    flat_free = free.ravel()
    rotation_gens = [r.ravel()[flat_free] for _, r in rotations]
    gens = np.array([t.ravel()[flat_free] for t in translations] + rotation_gens)
    n_free = int(flat_free.sum())
    if len(gens):
        _, s, vt = np.linalg.svd(gens, full_matrices=True)
        rank = int((s > _NULL_GENERATOR_A).sum())
        basis = vt[rank:].T
    else:
        basis = np.eye(n_free)

    h = hessian(potential, x, free=flat_free)
    eigenvalues = np.linalg.eigvalsh(basis.T @ h @ basis)
    largest = np.abs(eigenvalues).max() if len(eigenvalues) else 0.0
    near_zero = np.abs(eigenvalues) <= _ZERO_MODE_RTOL * largest
    if near_zero.any():
        raise ValueError(
            f"{label} has {int(near_zero.sum())} zero Hessian eigenvalue(s) left "
            f"after removing {len(gens)} rigid motion(s) (eigenvalues "
            f"{np.array2string(eigenvalues[:6], precision=4)} eV/Å²); the harmonic "
            "approximation does not apply. If the potential is invariant under "
            "rigid motions, pass rigid=True."
        )

    # A linear structure has three rotation generators of rank two: keep the
    # non-zero moments only.
    if rotations:
        rot = np.array(rotation_gens)
        gram = np.linalg.eigvalsh(rot @ rot.T)
        moments = gram[gram > _NULL_GENERATOR_A**2]
        log_volume = 0.5 * float(np.sum(np.log(moments)))
    else:
        moments = np.empty(0)
        log_volume = 0.0

    return StationaryPoint(
        name=label,
        energy_eV=energy,
        eigenvalues_eV_per_A2=tuple(float(v) for v in eigenvalues),
        n_translations=len(translations),
        n_rotations=len(moments),
        log_rotational_volume=log_volume,
        max_force_eV_per_A=max_force,
    )


@dataclass(frozen=True)
class HTSTResult:
    """Harmonic (overdamped Langer/Kramers) rate out of one minimum at one T.

    Per-saddle sequences are in the order the saddles were given.

    Attributes
    ----------
    minimum : str
        Name of the minimum the rate leaves.
    temperature_K : float
        Temperature in K.
    friction : float
        Friction γ in eV·fs/Å².
    rate_per_fs : float
        Total rate k in fs⁻¹, summed over saddles and their copies.
    saddles : tuple of str
        Saddle names.
    multiplicities : tuple of int
        Copies m_s of each saddle around the minimum.
    barriers_eV : tuple of float
        ΔE_s = E_s − E_minimum in eV.
    prefactors_per_fs : tuple of float
        ν_s in fs⁻¹ for one copy of each saddle (multiplicity not included).
    unstable_eigenvalues_eV_per_A2 : tuple of float
        The negative Hessian eigenvalue λ_u,s of each saddle in eV/Å².
    saddle_rates_per_fs : tuple of float
        m_s ν_s exp(−ΔE_s / k_B T) in fs⁻¹: the rate through all copies of saddle s.
    fractions : tuple of float
        Share of the rate through all copies of each saddle; they sum to 1.
    """

    minimum: str
    temperature_K: float
    friction: float
    rate_per_fs: float
    saddles: tuple[str, ...]
    multiplicities: tuple[int, ...]
    barriers_eV: tuple[float, ...]
    prefactors_per_fs: tuple[float, ...]
    unstable_eigenvalues_eV_per_A2: tuple[float, ...]
    saddle_rates_per_fs: tuple[float, ...]
    fractions: tuple[float, ...]

    @property
    def mode_fractions(self) -> dict[str, float]:
        """Share of the rate through each copy of each saddle (one entry per mode).

        Copies of one saddle share its fraction equally; they are labelled
        ``"name#1"``, ``"name#2"``, ... when the multiplicity exceeds 1.
        """
        out = {}
        for name, m, f in zip(
            self.saddles, self.multiplicities, self.fractions, strict=True
        ):
            for copy in range(m):
                out[name if m == 1 else f"{name}#{copy + 1}"] = f / m
        return out

    @property
    def mean_residence_time_fs(self) -> float:
        """1/k in fs: mean time spent in the minimum's basin before escaping."""
        return 1.0 / self.rate_per_fs

    def summary(self) -> str:
        """A text table of the rate and its per-saddle contributions."""
        lines = [
            f"Harmonic TST (overdamped Langer/Kramers) out of {self.minimum} at "
            f"T = {self.temperature_K:g} K, γ = {self.friction:g} eV·fs/Å²",
            f"rate k = {self.rate_per_fs:.4e} fs⁻¹ "
            f"(mean residence time {self.mean_residence_time_fs:.4e} fs)",
            "",
            f"{'saddle':<14}{'m':>3}{'ΔE (eV)':>11}{'λ_u (eV/Å²)':>14}"
            f"{'ν (fs⁻¹)':>11}{'m·k_s (fs⁻¹)':>15}{'fraction':>10}{'per copy':>10}",
        ]
        for row in zip(
            self.saddles,
            self.multiplicities,
            self.barriers_eV,
            self.unstable_eigenvalues_eV_per_A2,
            self.prefactors_per_fs,
            self.saddle_rates_per_fs,
            self.fractions,
            strict=True,
        ):
            name, m, de, lam, nu, k, f = row
            lines.append(
                f"{name:<14}{m:>3}{de:>11.5f}{lam:>14.5g}{nu:>11.4f}{k:>15.4e}"
                f"{f:>10.4f}{f / m:>10.4f}"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """Plain Python types only, ready for :func:`json.dumps`."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> HTSTResult:
        """Rebuild a result written by :meth:`to_dict`."""
        fields = {
            key: tuple(value) if isinstance(value, list) else value
            for key, value in data.items()
        }
        return cls(**fields)

    def to_json(self) -> str:
        """The result as a JSON string."""
        return json.dumps(self.to_dict(), indent=2)


SaddleInput = Atoms | StationaryPoint | tuple[Atoms | StationaryPoint, int]


class HarmonicTST:
    """Overdamped harmonic TST out of one minimum over a set of saddles.

    The Hessians are computed once, here; :meth:`rate` then evaluates any
    temperature cheaply.

    Parameters
    ----------
    minimum : Atoms or StationaryPoint
        The minimum A the rate leaves, with a calculator attached (or already
        analysed with :func:`harmonic_analysis`).
    saddles : sequence of Atoms, StationaryPoint or (structure, multiplicity)
        First-order saddles out of A. A pair ``(saddle, m)`` gives its multiplicity.
    multiplicities : sequence of int, optional
        Number of symmetry-equivalent copies of each saddle around A (e.g. mirror
        images); default 1 each. Do not combine with ``(saddle, m)`` pairs.
    friction : float
        Friction γ in eV·fs/Å².
    calculator, planar, rigid, fmax
        Passed to :func:`harmonic_analysis` for every structure.

    Raises
    ------
    ValueError
        If the minimum has a negative eigenvalue, a saddle does not have exactly
        one, a barrier is not positive, a structure is not stationary, or the
        structures do not share the same internal degrees of freedom.

    Notes
    -----
    The prefactor of saddle s is

        ν_s = |λ_u,s| / (2πγ) · sqrt(det′H_A / |det′H_s|) · V_rot,s / V_rot,A,

    with det′ over internal coordinates (rigid motions and frozen coordinates
    removed). Removing a rotation exactly leaves the length of its generator
    behind: V_rot = sqrt(det G), G the Gram matrix of the rotation generators
    about the centroid, which with unit masses is the inertia tensor. For a planar
    cluster (one rotation) V_rot = sqrt(I), I = Σ_i |r_i − r_c|²; for a
    non-linear 3D cluster V_rot = sqrt(I₁ I₂ I₃) with the principal moments I_k;
    for a linear one the product of its two non-zero moments. Translations need no
    factor: their volume is the same at every structure. Minimum and saddles must
    have the same number of removed rotations; a linear saddle between non-linear
    minima is not handled.

    The harmonic approximation needs barriers of several k_B T and Hessians that
    describe the wells and saddles over a thermal length; it is poor for flat
    saddles (|λ_u| ≪ k_B T / Å²), as on the 2D two-channel potential.

    Examples
    --------
    >>> from ase_rare.structures import lj7_cluster
    >>> htst = HarmonicTST(
    ...     lj7_cluster("C3"), [lj7_cluster("S1"), lj7_cluster("S2")],
    ...     multiplicities=[2, 2])
    >>> [round(nu, 3) for nu in htst.prefactors_per_fs]
    [1.834, 1.991]
    >>> print(f"{htst.rate(600).rate_per_fs:.3e}")
    4.589e-04
    """

    def __init__(
        self,
        minimum: Atoms | StationaryPoint,
        saddles: Sequence[SaddleInput],
        *,
        multiplicities: Sequence[int] | None = None,
        friction: float = 1.0,
        calculator: BaseCalculator | None = None,
        planar: bool | None = None,
        rigid: bool | None = None,
        fmax: float = 1e-3,
    ):
        if not (math.isfinite(friction) and friction > 0):
            raise ValueError(
                f"friction must be a positive number in eV·fs/Å²; got {friction}"
            )
        if isinstance(saddles, Atoms | StationaryPoint) or not len(saddles):
            raise ValueError("saddles must be a non-empty sequence of structures")
        structures, paired = [], []
        for item in saddles:
            if isinstance(item, tuple):
                structures.append(item[0])
                paired.append(item[1])
            else:
                structures.append(item)
        if paired and len(paired) != len(structures):
            raise ValueError("give a multiplicity for every saddle or for none of them")
        if paired and multiplicities is not None:
            raise ValueError(
                "multiplicities were given twice: as (saddle, m) pairs and as the "
                "multiplicities argument; use one"
            )
        mult = paired or (
            list(multiplicities)
            if multiplicities is not None
            else [1] * len(structures)
        )
        if len(mult) != len(structures):
            raise ValueError(
                f"{len(mult)} multiplicities for {len(structures)} saddles"
            )
        for m in mult:
            if int(m) != m or m < 1:
                raise ValueError(f"multiplicities must be positive integers; got {m}")

        options = dict(calculator=calculator, planar=planar, rigid=rigid, fmax=fmax)
        self.friction = float(friction)
        self.multiplicities = tuple(int(m) for m in mult)
        self.minimum = _analyse(minimum, "minimum", options)
        self.saddles = _unique_names(
            [_analyse(s, f"saddle {i + 1}", options) for i, s in enumerate(structures)]
        )
        self._check()

    def _check(self) -> None:
        a = self.minimum
        if a.n_negative:
            raise ValueError(
                f"the minimum {a.name} has {a.n_negative} negative Hessian "
                f"eigenvalue(s) (lowest {_lowest(a)} eV/Å²); it is not a minimum. "
                "Was a saddle passed as the minimum?"
            )
        for s in self.saddles:
            if s.n_negative != 1:
                hint = (
                    " Was a minimum passed as a saddle?"
                    if s.n_negative == 0
                    else " HTST needs first-order saddles."
                )
                raise ValueError(
                    f"saddle {s.name} has {s.n_negative} negative Hessian "
                    f"eigenvalues, expected exactly 1 (lowest {_lowest(s)} eV/Å²)."
                    + hint
                )
            if len(s.eigenvalues_eV_per_A2) != len(a.eigenvalues_eV_per_A2):
                raise ValueError(
                    f"saddle {s.name} has {len(s.eigenvalues_eV_per_A2)} internal "
                    f"degrees of freedom and the minimum {a.name} "
                    f"{len(a.eigenvalues_eV_per_A2)}; they must be the same system"
                )
            if (s.n_translations, s.n_rotations) != (a.n_translations, a.n_rotations):
                raise NotImplementedError(
                    f"saddle {s.name} has {s.n_translations} translations and "
                    f"{s.n_rotations} rotations removed, the minimum {a.name} "
                    f"{a.n_translations} and {a.n_rotations}; HTST between "
                    "structures with different rigid-body motions (e.g. a linear "
                    "saddle between non-linear minima) is not implemented. If the "
                    "automatic detection misjudged the potential's symmetry, pass "
                    "rigid=True or rigid=False."
                )
            if s.energy_eV <= a.energy_eV:
                raise ValueError(
                    f"saddle {s.name} lies {a.energy_eV - s.energy_eV:.4g} eV below "
                    f"the minimum {a.name}; it cannot be a saddle out of it"
                )

    @property
    def barriers_eV(self) -> tuple[float, ...]:
        """ΔE_s = E_s − E_A in eV for each saddle."""
        return tuple(s.energy_eV - self.minimum.energy_eV for s in self.saddles)

    @property
    def prefactors_per_fs(self) -> tuple[float, ...]:
        """ν_s in fs⁻¹ for one copy of each saddle (multiplicity not included)."""
        a = self.minimum
        out = []
        for s in self.saddles:
            lam_u = abs(s.eigenvalues_eV_per_A2[0])
            log_nu = (
                math.log(lam_u / (2 * math.pi * self.friction))
                + 0.5 * (a.log_abs_det - s.log_abs_det)
                + s.log_rotational_volume
                - a.log_rotational_volume
            )
            out.append(math.exp(log_nu))
        return tuple(out)

    def rate(self, temperature_K: float) -> HTSTResult:
        """The harmonic rate and its per-saddle split at one temperature.

        Parameters
        ----------
        temperature_K : float
            Temperature in K.

        Returns
        -------
        HTSTResult
        """
        if not (math.isfinite(temperature_K) and temperature_K > 0):
            raise ValueError(
                f"temperature_K must be a positive number in K; got {temperature_K}"
            )
        beta = 1.0 / (KB_EV_PER_K * temperature_K)
        nu = np.array(self.prefactors_per_fs)
        # Log space keeps the fractions finite where exp(−βΔE) underflows.
        log_k = (
            np.log(self.multiplicities) + np.log(nu) - beta * np.array(self.barriers_eV)
        )
        log_total = float(np.logaddexp.reduce(log_k))
        return HTSTResult(
            minimum=self.minimum.name,
            temperature_K=float(temperature_K),
            friction=self.friction,
            rate_per_fs=math.exp(log_total),
            saddles=tuple(s.name for s in self.saddles),
            multiplicities=self.multiplicities,
            barriers_eV=self.barriers_eV,
            prefactors_per_fs=tuple(float(v) for v in nu),
            unstable_eigenvalues_eV_per_A2=tuple(
                s.eigenvalues_eV_per_A2[0] for s in self.saddles
            ),
            saddle_rates_per_fs=tuple(float(v) for v in np.exp(log_k)),
            fractions=tuple(float(v) for v in np.exp(log_k - log_total)),
        )

    def reverse(
        self,
        minimum: Atoms | StationaryPoint,
        *,
        multiplicities: Sequence[int] | None = None,
        **options,
    ) -> HarmonicTST:
        """The same saddles seen from another minimum, without new saddle Hessians.

        Parameters
        ----------
        minimum : Atoms or StationaryPoint
            The other minimum B.
        multiplicities : sequence of int, optional
            Copies of each saddle around B; default 1 each (they may differ from
            the copies around A, e.g. 2 around a mirror-symmetric A and 1 around B).
        **options
            ``calculator``, ``planar``, ``rigid``, ``fmax`` for analysing B.
        """
        return HarmonicTST(
            minimum,
            self.saddles,
            multiplicities=multiplicities,
            friction=self.friction,
            **options,
        )


def _analyse(structure, fallback: str, options: dict) -> StationaryPoint:
    if isinstance(structure, StationaryPoint):
        return structure
    if not isinstance(structure, Atoms):
        raise TypeError(
            f"expected Atoms or StationaryPoint for {fallback}; got "
            f"{type(structure).__name__}"
        )
    return harmonic_analysis(
        structure, name=_structure_label(structure, fallback), **options
    )


def _unique_names(points: list[StationaryPoint]) -> tuple[StationaryPoint, ...]:
    """Rename repeated saddle names ``name``, ``name (2)``, ... so labels are unique."""
    seen: dict[str, int] = {}
    out = []
    for p in points:
        seen[p.name] = seen.get(p.name, 0) + 1
        if seen[p.name] > 1:
            p = StationaryPoint(**{**asdict(p), "name": f"{p.name} ({seen[p.name]})"})
        out.append(p)
    return tuple(out)


def _lowest(point: StationaryPoint) -> str:
    return np.array2string(np.array(point.eigenvalues_eV_per_A2[:4]), precision=4)


def htst_rate(
    minimum: Atoms | StationaryPoint,
    saddles: Sequence[SaddleInput],
    temperature_K: float,
    *,
    friction: float = 1.0,
    multiplicities: Sequence[int] | None = None,
    calculator: BaseCalculator | None = None,
    planar: bool | None = None,
    rigid: bool | None = None,
    fmax: float = 1e-3,
) -> HTSTResult:
    """Overdamped harmonic TST rate out of ``minimum`` at one temperature.

    A shortcut for ``HarmonicTST(minimum, saddles, ...).rate(temperature_K)``; see
    :class:`HarmonicTST` for the parameters and the formula. Build a
    :class:`HarmonicTST` once to evaluate several temperatures without repeating
    the Hessians.

    Parameters
    ----------
    minimum : Atoms or StationaryPoint
        The minimum A, with a calculator attached.
    saddles : sequence of Atoms, StationaryPoint or (structure, multiplicity)
        First-order saddles out of A.
    temperature_K : float
        Temperature in K.
    friction : float
        Friction γ in eV·fs/Å².
    multiplicities : sequence of int, optional
        Copies of each saddle around A; default 1.
    calculator, planar, rigid, fmax
        See :func:`harmonic_analysis`.

    Returns
    -------
    HTSTResult
        Rate in fs⁻¹, per-saddle prefactors, barriers and fractions.

    Examples
    --------
    >>> from ase_rare.structures import lj7_cluster
    >>> saddles = [(lj7_cluster("S1"), 2), (lj7_cluster("S2"), 2)]
    >>> result = htst_rate(lj7_cluster("C3"), saddles, temperature_K=300)
    >>> print(f"{result.rate_per_fs:.2e}", [round(f, 3) for f in result.fractions])
    3.03e-08 [0.769, 0.231]
    """
    return HarmonicTST(
        minimum,
        saddles,
        multiplicities=multiplicities,
        friction=friction,
        calculator=calculator,
        planar=planar,
        rigid=rigid,
        fmax=fmax,
    ).rate(temperature_K)


def htst_rates(
    minimum_a: Atoms | StationaryPoint,
    minimum_b: Atoms | StationaryPoint,
    saddles: Sequence[Atoms | StationaryPoint],
    temperature_K: float,
    *,
    multiplicities_ab: Sequence[int] | None = None,
    multiplicities_ba: Sequence[int] | None = None,
    friction: float = 1.0,
    calculator: BaseCalculator | None = None,
    planar: bool | None = None,
    rigid: bool | None = None,
    fmax: float = 1e-3,
) -> tuple[HTSTResult, HTSTResult]:
    """Forward (A → B) and backward (B → A) harmonic rates over the same saddles.

    Each structure is analysed once. The multiplicities may differ between the
    directions: for LJ7 each saddle has two mirror-image copies around the
    symmetric C3 and one around C2.

    Parameters
    ----------
    minimum_a, minimum_b : Atoms or StationaryPoint
        The two minima.
    saddles : sequence of Atoms or StationaryPoint
        First-order saddles joining A and B.
    temperature_K : float
        Temperature in K.
    multiplicities_ab, multiplicities_ba : sequence of int, optional
        Copies of each saddle around A and around B; default 1 each.
    friction : float
        Friction γ in eV·fs/Å².
    calculator, planar, rigid, fmax
        See :func:`harmonic_analysis`.

    Returns
    -------
    tuple of HTSTResult
        ``(k_AB result, k_BA result)``.

    Examples
    --------
    >>> from ase_rare.structures import lj7_cluster
    >>> forward, backward = htst_rates(
    ...     lj7_cluster("C3"), lj7_cluster("C2"),
    ...     [lj7_cluster("S1"), lj7_cluster("S2")], temperature_K=600,
    ...     multiplicities_ab=[2, 2], multiplicities_ba=[1, 1])
    >>> print(f"{forward.rate_per_fs:.3e} {backward.rate_per_fs:.3e}")
    4.589e-04 2.861e-05
    """
    options = dict(calculator=calculator, planar=planar, rigid=rigid, fmax=fmax)
    forward = HarmonicTST(
        minimum_a,
        saddles,
        multiplicities=multiplicities_ab,
        friction=friction,
        **options,
    )
    backward = forward.reverse(minimum_b, multiplicities=multiplicities_ba, **options)
    return forward.rate(temperature_K), backward.rate(temperature_K)
