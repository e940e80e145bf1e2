"""Small analysis tools shared by the examples and the command line."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def weighted_line_fit(
    x: Sequence[float], y: Sequence[float], se: Sequence[float]
) -> dict:
    """Fit y = a + b·x with weights 1/se²; intercept, slope, their SEs and χ².

    The SEs come from the stated errors of the points (not rescaled by χ²), so
    χ² against its degrees of freedom says whether a straight line describes
    the points within their errors.

    Use it to extrapolate a rate measured at several time steps to Δt → 0:
    Euler–Maruyama is weakly first order, so k(Δt) = k0 + k1·Δt + O(Δt²), and
    the intercept is the continuous-time rate.

    Examples
    --------
    >>> fit = weighted_line_fit([0.01, 0.02], [1.0, 1.1], [0.01, 0.01])
    >>> round(fit["intercept"], 6), round(fit["slope"], 6)
    (0.9, 10.0)
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    w = 1.0 / np.asarray(se, float) ** 2
    if len(x) < 2 or len(set(x.tolist())) < 2:
        raise ValueError("a line fit needs at least two distinct x values")
    design = np.stack([np.ones_like(x), x], axis=1)
    cov = np.linalg.inv(design.T @ (w[:, None] * design))
    a, b = cov @ design.T @ (w * y)
    chi2 = float((w * (y - a - b * x) ** 2).sum())
    return {
        "intercept": float(a),
        "intercept_se": math.sqrt(cov[0, 0]),
        "slope": float(b),
        "slope_se": math.sqrt(cov[1, 1]),
        "chi2": chi2,
        "dof": len(x) - 2,
    }
