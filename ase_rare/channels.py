"""Channel classifiers: which way did a transition go?

A classifier follows every walker's path as it is stepped and, when the walker
reaches B, says which channel it took. It is stateful per walker: the engines
call :meth:`ChannelTracker.update` after every step and
:meth:`ChannelTracker.restart` when a walker starts a new excursion.
"""

from __future__ import annotations

import torch


class ChannelTracker:
    """Per-walker memory of a path, turned into a channel label on arrival in B."""

    #: Channel names, indexed by the labels :meth:`labels` returns.
    names: tuple[str, ...] = ()

    def update(
        self, old: torch.Tensor, new: torch.Tensor, energy: torch.Tensor | None = None
    ) -> None:
        """Record a step of every walker from ``old`` to ``new`` (``(W, N, 3)``).

        ``energy`` ``(W,)``, in eV, is the potential energy at ``old`` when the
        engine has it (trackers that follow the highest point of a path use it).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement update")

    def labels(self) -> torch.Tensor:
        """Channel index ``(W,)`` of every walker's current path (−1: unknown)."""
        raise NotImplementedError(f"{type(self).__name__} must implement labels")

    def restart(self, mask: torch.Tensor) -> None:
        """Forget the path of the walkers in ``mask``."""
        raise NotImplementedError(f"{type(self).__name__} must implement restart")

    def take(self, index: torch.Tensor) -> None:
        """Keep the walkers ``index`` (in that order, repeats allowed).

        The branching ensemble calls it when walkers split, die or finish, so
        that every copy of a walker inherits its path's memory.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement take")


class ChannelClassifier:
    """Factory of trackers; pass one to an engine as ``channels=``."""

    names: tuple[str, ...] = ()

    def tracker(self, positions: torch.Tensor) -> ChannelTracker:
        raise NotImplementedError(f"{type(self).__name__} must implement tracker")


class CrossingChannels(ChannelClassifier):
    """Channel = side of a line where the path last crossed a dividing line.

    For the two-channel 2D potential: the path's last crossing of ``x = 0`` (atom
    0) before it reaches B is labelled ``"upper"`` if it happened at ``y > 0`` and
    ``"lower"`` otherwise.

    Parameters
    ----------
    atom : int
        The atom whose coordinates are followed.
    axis, side_axis : int
        The coordinate that is crossed (0 = x) and the one whose sign names the
        channel (1 = y).
    at : float
        Position of the dividing line in Å.
    names : (str, str)
        Names for a crossing at positive and negative ``side_axis``.
    """

    def __init__(
        self,
        atom: int = 0,
        axis: int = 0,
        side_axis: int = 1,
        at: float = 0.0,
        names: tuple[str, str] = ("upper", "lower"),
    ):
        self.atom, self.axis, self.side_axis, self.at = atom, axis, side_axis, at
        self.names = tuple(names)

    def tracker(self, positions):
        return _CrossingTracker(self, positions.shape[0], positions.device)


class _CrossingTracker(ChannelTracker):
    def __init__(self, spec: CrossingChannels, n_walkers: int, device):
        self.spec = spec
        self.names = spec.names
        self.label = torch.full((n_walkers,), -1, dtype=torch.long, device=device)

    def update(self, old, new, energy=None):
        s = self.spec
        a0 = old[:, s.atom, s.axis] - s.at
        a1 = new[:, s.atom, s.axis] - s.at
        crossed = (a0 * a1 <= 0) & (a0 != a1)
        if bool(crossed.any()):
            # Side coordinate linearly interpolated to the crossing point.
            t = a0 / (a0 - a1)
            b0 = old[:, s.atom, s.side_axis]
            b1 = new[:, s.atom, s.side_axis]
            side = b0 + t * (b1 - b0)
            new_label = torch.where(side > 0, 0, 1)
            self.label = torch.where(crossed, new_label, self.label)

    def labels(self):
        return self.label

    def restart(self, mask):
        self.label = torch.where(mask, -1, self.label)

    def take(self, index):
        self.label = self.label[index]
