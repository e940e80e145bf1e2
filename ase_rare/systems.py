"""The benchmark systems, ready to run: start, regions A and B, channels."""

from __future__ import annotations

from dataclasses import dataclass

from ase import Atoms

from ase_rare.channels import ChannelClassifier, CrossingChannels
from ase_rare.cv import AtomCoordinates, CoordinationMoments
from ase_rare.lj7_modes import LJ7Modes
from ase_rare.potentials.rugged import RuggedPotential
from ase_rare.potentials.two_channel import TwoChannelPotential
from ase_rare.regions import DiscRegion, Region, check_disjoint
from ase_rare.structures import lj7_cluster

#: Minima of the two-channel potential (tilt 0.02 eV/Å), x and y in Å.
TWO_CHANNEL_MINIMA = ((-1.11802, -0.00462), (1.11802, -0.00462))


@dataclass
class BenchmarkSystem:
    """A system with its regions: what every rate calculation starts from.

    Attributes
    ----------
    name : str
    start_A, start_B : Atoms
        Configurations inside A and inside B, with the calculator attached.
    A, B : Region
    channels : ChannelClassifier or None
    """

    name: str
    start_A: Atoms
    start_B: Atoms
    A: Region
    B: Region
    channels: ChannelClassifier | None = None

    def __post_init__(self):
        check_disjoint(self.A, self.B)


def _single_atom(x: float, y: float, calc) -> Atoms:
    atoms = Atoms("Ar", positions=[[x, y, 0.0]])
    atoms.calc = calc
    return atoms


def two_channel_system(radius: float = 0.2, tilt: float = 0.02) -> BenchmarkSystem:
    """The 2D two-channel potential with A, B discs of ``radius`` Å at the minima.

    Channels are "upper" and "lower", by the sign of y where a path last crossed
    x = 0 before reaching B.
    """
    cv = AtomCoordinates(0, "xy")
    (xa, ya), (xb, yb) = TWO_CHANNEL_MINIMA
    calc = TwoChannelPotential(tilt)
    return BenchmarkSystem(
        name="two-channel-2d",
        start_A=_single_atom(xa, ya, calc),
        start_B=_single_atom(xb, yb, calc),
        A=DiscRegion(cv, (xa, ya), radius),
        B=DiscRegion(cv, (xb, yb), radius),
        channels=CrossingChannels(),
    )


def rugged_system(radius: float = 0.2, **potential_kwargs) -> BenchmarkSystem:
    """The 14D rugged potential; A, B are discs of ``radius`` Å in (x1, x2).

    The starts put every extra coordinate at its preferred position
    ``x_k = c_k x1``, the 14D minimum.
    """
    calc = RuggedPotential(**potential_kwargs)
    cv = AtomCoordinates(0, "xy")
    (xa, ya), (xb, yb) = TWO_CHANNEL_MINIMA

    def start(x1, x2):
        import torch

        q = torch.zeros((1, 14), dtype=torch.float64)
        q[0, 0], q[0, 1] = x1, x2
        q[0, 2:] = torch.tensor(calc.couplings, dtype=torch.float64) * x1
        atoms = Atoms("Ar7", positions=calc.to_positions(q)[0].numpy())
        atoms.calc = calc
        return atoms

    return BenchmarkSystem(
        name="rugged-14d",
        start_A=start(xa, ya),
        start_B=start(xb, yb),
        A=DiscRegion(cv, (xa, ya), radius),
        B=DiscRegion(cv, (xb, yb), radius),
        channels=CrossingChannels(),
    )


def lj7_system(
    radius_A: float = 0.03, radius_B: float = 0.05, *, modes: bool = False
) -> BenchmarkSystem:
    """LJ7 C3 -> C2: discs in (μ₂, μ₃) around C3 (A) and C2 (B).

    With ``modes=True`` the channels are the four transition modes M1-M4
    (:class:`ase_rare.lj7_modes.LJ7Modes`).
    """
    cv = CoordinationMoments(r0=1.5)
    c3, c2 = lj7_cluster("C3"), lj7_cluster("C2")
    A = DiscRegion(cv, cv.of(c3), radius_A)
    return BenchmarkSystem(
        name="lj7",
        start_A=c3,
        start_B=c2,
        A=A,
        B=DiscRegion(cv, cv.of(c2), radius_B),
        channels=LJ7Modes(A) if modes else None,
    )
