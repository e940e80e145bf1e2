"""RateResult: what an importance-sampled rate calculation returns."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields

import numpy as np
from ase import units


def _nan_to_none(v):
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, list):
        return [_nan_to_none(x) for x in v]
    return v


def json_safe(d: dict) -> dict:
    """Replace NaN floats (also inside lists) by None so that strict JSON parsers
    accept the output."""
    return {k: _nan_to_none(v) for k, v in d.items()}


def from_json_safe(cls, d: dict):
    """Inverse of :func:`json_safe` for a dataclass: None back to NaN for floats."""
    types = {f.name: f.type for f in fields(cls)}

    def restore(k, v):
        if "float" not in str(types.get(k)):
            return v
        if isinstance(v, list):
            return [math.nan if x is None else x for x in v]
        return math.nan if v is None else v

    return cls(**{k: restore(k, v) for k, v in d.items()})


class JSONResult:
    """JSON round trip and a text table for the result dataclasses."""

    def to_dict(self) -> dict:
        """JSON-ready dictionary (NaN written as None)."""
        return json_safe(asdict(self))

    def to_json(self, path=None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            with open(path, "w") as fh:
                fh.write(text + "\n")
        return text

    @classmethod
    def from_dict(cls, d: dict):
        return from_json_safe(cls, d)

    @classmethod
    def from_json(cls, path):
        with open(path) as fh:
            return cls.from_dict(json.load(fh))

    @staticmethod
    def table(rows: list[tuple[str, str]]) -> str:
        """Two aligned columns: name, value with its unit."""
        width = max(len(r[0]) for r in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


@dataclass
class RateResult(JSONResult):
    """Rate r = J · P of a transition, reweighted and naive, with errors.

    Rates and fluxes are in fs⁻¹, times in fs; errors are standard errors over
    independent roots (P) and independent walkers of the flux run (J); relative
    errors of J and P are added in quadrature for the rate.

    The *reweighted* estimate gives each root the exact likelihood-ratio weight
    of its path and is unbiased whatever the importance function. The *naive*
    estimate treats the importance function as the committor: P ≈ mean I(x₀)
    and channel fractions are unweighted counts of successes. It is reported so
    that the value of reweighting is visible.

    Per-root data, for diagnostics such as the weight distribution:
    ``root_contributions`` holds S_r, the summed final weight of root r's
    successful descendants (0 for a root without success; P_AB is their mean),
    and ``root_log_importance`` ln I(x₀) of each root. Both are empty in results
    written before they existed. Roots drawn in proportion to ``I`` from a pool
    of exits (:func:`ase_rare.estimate.importance_roots`) carry weights:
    ``root_log_weights`` (P_AB is the mean of weight × S_r), ``root_pool_size``
    and ``root_pool_relative_se``, the pool's part of the error, included in
    ``success_probability_se``; for uniform roots these are empty and 0.
    ``info`` holds what the command line records about the run (system,
    configuration, importance-function file, reference rates); the library
    leaves it empty.
    """

    direction: str
    temperature_K: float
    timestep_fs: float
    friction_eV_fs_per_A2: float
    kernel: str
    rate_per_fs: float
    rate_se_per_fs: float
    success_probability: float
    success_probability_se: float
    flux_per_fs: float
    flux_se_per_fs: float
    naive_rate_per_fs: float
    naive_success_probability: float
    n_roots: int
    n_successes: int
    n_step_capped: int
    effective_sample_size: float
    relative_variance_per_root: float
    channel_names: list[str] = field(default_factory=list)
    channel_fractions: list[float] = field(default_factory=list)
    channel_fractions_se: list[float] = field(default_factory=list)
    naive_channel_fractions: list[float] = field(default_factory=list)
    walker_steps: int = 0
    flux_walker_steps: int = 0
    importance_evaluations: int = 0
    wall_time_s: float = 0.0
    seed: int | None = None
    root_contributions: list[float] = field(default_factory=list)
    root_log_importance: list[float] = field(default_factory=list)
    root_log_weights: list[float] = field(default_factory=list)
    root_pool_size: int = 0
    root_pool_relative_se: float = 0.0
    info: dict = field(default_factory=dict)

    @property
    def relative_se(self) -> float:
        return self.rate_se_per_fs / self.rate_per_fs if self.rate_per_fs else math.nan

    def summary(self) -> str:
        per_s = units.s / units.fs
        rows = [
            ("direction", self.direction),
            ("temperature", f"{self.temperature_K:g} K"),
            ("timestep", f"{self.timestep_fs:g} fs ({self.kernel} kernel)"),
            (
                "rate (reweighted)",
                f"{self.rate_per_fs:.4g} ± {self.rate_se_per_fs:.2g} fs⁻¹ "
                f"({self.rate_per_fs * per_s:.4g} s⁻¹, "
                f"{100 * self.relative_se:.2g} %)",
            ),
            ("rate (naive)", f"{self.naive_rate_per_fs:.4g} fs⁻¹"),
            (
                "P (reweighted)",
                f"{self.success_probability:.4g} ± {self.success_probability_se:.2g}",
            ),
            ("P (naive, mean I(x₀))", f"{self.naive_success_probability:.4g}"),
            ("flux J", f"{self.flux_per_fs:.4g} ± {self.flux_se_per_fs:.2g} fs⁻¹"),
            (
                "roots / successes",
                f"{self.n_roots} / {self.n_successes} "
                f"({self.n_step_capped} hit the step cap)",
            ),
            *(
                [
                    (
                        "roots drawn ∝ I from a pool of",
                        f"{self.root_pool_size} exits (the pool's own error: "
                        f"{100 * self.root_pool_relative_se:.2g} %, in the SE)",
                    )
                ]
                if self.root_pool_size
                else []
            ),
            ("effective sample size", f"{self.effective_sample_size:.1f}"),
            ("relative variance per root", f"{self.relative_variance_per_root:.3g}"),
        ]
        for name, f, se, fn in zip(
            self.channel_names,
            self.channel_fractions,
            self.channel_fractions_se,
            self.naive_channel_fractions,
            strict=True,
        ):
            rows.append(
                (
                    f"channel {name}",
                    f"{100 * f:.1f} ± {100 * se:.1f} % (naive {100 * fn:.1f} %)",
                )
            )
        rows += [
            (
                "cost",
                f"{self.walker_steps + self.flux_walker_steps:.3g} walker-steps, "
                f"{self.importance_evaluations:.3g} importance evaluations",
            ),
            ("wall time", f"{self.wall_time_s:.1f} s"),
        ]
        return self.table(rows)


def channel_fractions_by_root(
    channel_contribution: np.ndarray, *, n_bootstrap: int = 200, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Channel fractions Σ_r S_rc / Σ_rc S_rc with bootstrap-over-roots errors.

    ``channel_contribution`` ``(R, C)`` holds each root's successful weight per
    channel. Roots are independent, their descendants are not, so the bootstrap
    resamples roots.
    """

    def fractions(sc):
        tot = sc.sum(0)
        return tot / tot.sum() if tot.sum() > 0 else np.full(sc.shape[1], np.nan)

    f = fractions(channel_contribution)
    if not np.isfinite(f).all():
        # No success carries weight: the fractions and their errors are undefined.
        return f, np.full(len(f), np.nan)
    rng = np.random.default_rng(seed)
    n = len(channel_contribution)
    boot = np.array(
        [
            fractions(channel_contribution[rng.integers(0, n, n)])
            for _ in range(n_bootstrap)
        ]
    )
    return f, np.nanstd(boot, axis=0, ddof=1)


def weighted_channel_fractions(
    contribution: np.ndarray,
    channel: np.ndarray,
    n_channels: int,
    *,
    n_bootstrap: int = 200,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Fractions Σ_{c} w / Σ w when each root has one path in ``channel``."""
    sc = np.zeros((len(contribution), n_channels))
    ok = channel >= 0
    sc[np.flatnonzero(ok), channel[ok]] = contribution[ok]
    return channel_fractions_by_root(sc, n_bootstrap=n_bootstrap, seed=seed)
