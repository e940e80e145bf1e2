"""An importance function from a grid committor of a 2D potential."""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt

from ase_rare.importance.base import ImportanceFunction

#: −ζ(1/2)/sqrt(2π): shift, in units of the step's noise σ, of an absorbing
#: boundary that is only checked at discrete times.
BOUNDARY_SHIFT = 0.5826


class GridImportance(ImportanceFunction):
    """Bilinear interpolation of the committor logit ``ln q − ln(1 − q)`` on a grid.

    Built from :func:`ase_rare.theory.solve_grid_tpt`, it is the near-exact
    committor of the continuous-time dynamics of a 2D potential acting on the x,
    y of atom 0; it shows how close to zero variance the estimator gets.

    Parameters
    ----------
    x, y : array
        Grid axes in Å.
    logit : array ``(nx, ny)``
        Committor logit on the grid; non-finite entries (inside A or B, outside
        the solved domain) are filled from the nearest finite node.
    temperature_K : float, optional
    """

    def __init__(self, x, y, logit, temperature_K: float | None = None):
        super().__init__()
        x = np.asarray(x, float)
        y = np.asarray(y, float)
        logit = np.array(logit, float)
        bad = ~np.isfinite(logit)
        if bad.all():
            raise ValueError("the grid logit has no finite value")
        if bad.any():
            idx = distance_transform_edt(
                bad, return_distances=False, return_indices=True
            )
            logit = logit[tuple(idx)]
        self.hparams = {"x": x.tolist(), "y": y.tolist(), "logit": logit.tolist()}
        self.register_buffer("x0", torch.tensor([x[0], y[0]], dtype=torch.float64))
        self.register_buffer(
            "inv_h",
            torch.tensor([1 / (x[1] - x[0]), 1 / (y[1] - y[0])], dtype=torch.float64),
        )
        self.register_buffer("grid", torch.as_tensor(logit, dtype=torch.float64))
        self.temperature_K = temperature_K

    @classmethod
    def from_grid_tpt(cls, result) -> GridImportance:
        """From a :class:`ase_rare.theory.GridTPTResult`."""
        logit = result.log_committor - result.log_backward_committor
        # Inside A and B the value is never used by a path (it stops there), but
        # it enters the interpolation in cells that straddle the boundary: copy
        # the nearest outside value so the interpolant has no artificial cliff.
        logit = np.where(result.in_A | result.in_B, np.nan, logit)
        return cls(result.x_A, result.y_A, logit, result.temperature_K)

    @classmethod
    def for_discrete_chain(
        cls,
        potential,
        A,
        B,
        *,
        temperature_K: float,
        timestep_fs: float,
        friction: float = 1.0,
        box,
        spacing: float,
        **grid_kwargs,
    ) -> GridImportance:
        """Grid committor corrected for the time step of the dynamics it biases.

        A chain stepped every Δt and checked for A and B only at its steps
        behaves, near a region's edge, like continuous dynamics absorbed at an
        edge moved inward by ``β σ`` with ``σ = sqrt(2 k_B T Δt / γ)`` and
        ``β = −ζ(1/2)/sqrt(2π) ≈ 0.5826`` (the continuity correction for
        discretely monitored barriers of Broadie, Glasserman and Kou, 1997). The
        committor solved on the grid with both discs shrunk by ``β σ`` is
        therefore much closer to the committor of the chain, most of all at the
        exit points, which lie within a few σ of A. Only disc regions are
        supported. The regions of the dynamics stay as they are.
        """
        from ase_rare.kernels import LangevinParameters
        from ase_rare.regions import DiscRegion
        from ase_rare.theory import solve_grid_tpt

        for name, region in (("A", A), ("B", B)):
            if not isinstance(region, DiscRegion):
                raise TypeError(
                    f"for_discrete_chain needs disc regions; {name} is "
                    f"{type(region).__name__}"
                )
        sigma = LangevinParameters(timestep_fs, temperature_K, friction).noise_scale
        shift = BOUNDARY_SHIFT * sigma
        shrunk = []
        for name, region in (("A", A), ("B", B)):
            if region.radius <= shift:
                raise ValueError(
                    f"region {name} (radius {region.radius:g}) is smaller than the "
                    f"boundary correction {shift:.3g} for this time step"
                )
            shrunk.append(DiscRegion(region.cv, region.center, region.radius - shift))
        result = solve_grid_tpt(
            potential,
            *shrunk,
            temperature_K=temperature_K,
            box=box,
            spacing=spacing,
            friction=friction,
            **grid_kwargs,
        )
        return cls.from_grid_tpt(result)

    def forward(self, positions):
        xy = positions[:, 0, :2].to(torch.float64)
        u = (xy - self.x0) * self.inv_h
        nx, ny = self.grid.shape
        hi = torch.tensor([nx - 1, ny - 1], dtype=u.dtype, device=u.device)
        u = torch.minimum(torch.clamp(u, min=0.0), hi - 1e-9)
        i = u.detach().floor().long()
        t = u - i
        g = self.grid
        i0, j0 = i[:, 0], i[:, 1]
        v00 = g[i0, j0]
        v10 = g[i0 + 1, j0]
        v01 = g[i0, j0 + 1]
        v11 = g[i0 + 1, j0 + 1]
        tx, ty = t[:, 0], t[:, 1]
        return (
            v00 * (1 - tx) * (1 - ty)
            + v10 * tx * (1 - ty)
            + v01 * (1 - tx) * ty
            + v11 * tx * ty
        )
