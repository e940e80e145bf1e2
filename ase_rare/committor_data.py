"""Committor labels from unbiased dynamics, and a first fit of the importance function.

In an unbiased run every state x outside A and B is followed, sooner or later,
by an entry into A or into B. The indicator "B first" is a sample of the
committor q(x): its expectation given x is q(x), whatever happened before x
(the dynamics are Markov). So states recorded along a brute-force run, each
labelled by the region its walker reaches next, are a supervised data set for
q, and a classifier fitted with the cross-entropy (a proper scoring rule)
estimates the committor logit.

Which states are recorded may depend on the past of the walker (how long it
has been out of A, how many states of this excursion are already kept) but
never on its future, or the labels would be biased; :func:`label_states`
keeps every state of an excursion that has lasted ``min_steps`` and only a
known fraction of the states close in time to an exit from A, and the
fraction enters the fit as a weight. Failures (label 0) are abundant and
successes rare; failures may be thinned at random by a known rate, which
shifts the fitted logit by a known constant that :func:`fit_committor`
removes (case-control correction).

This gives a starting function good where the unbiased run goes — around the
barriers that the transitions cross — to be refined by
:func:`ase_rare.training.train_importance` where only biased paths go.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from ase_rare.importance.base import ImportanceFunction


@dataclass
class LabelledStates:
    """States with their "B before A" labels.

    Attributes
    ----------
    positions : tensor ``(S, N, 3)`` in Å
    labels : tensor ``(S,)`` of 0. or 1.
        1 where the walker entered B before A.
    weights : tensor ``(S,)``
        Inverse of the probability with which each state was kept, so that a
        weighted average over the states is one over the dynamics.
    walker_steps : int
        Cost of the run that produced them.
    n_transitions : int
        A -> B transitions seen.
    wall_time_s : float
    failure_fraction : float
        Fraction of the label-0 records kept (at random, once the label was
        known); the fit shifts the logit by its logarithm.
    """

    positions: torch.Tensor
    labels: torch.Tensor
    weights: torch.Tensor
    walker_steps: int
    n_transitions: int
    wall_time_s: float
    failure_fraction: float = 1.0

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def save(self, path) -> None:
        torch.save(self.__dict__, path)

    @classmethod
    def load(cls, path) -> LabelledStates:
        return cls(**torch.load(path, weights_only=False))


def label_states(
    engine,
    steps: int,
    *,
    record_interval: int = 10,
    max_records: int = 64,
    min_steps: int = 100,
    early_fraction: float = 0.02,
    failure_fraction: float = 1.0,
    seed: int = 0,
    progress: bool = False,
) -> LabelledStates:
    """Run a :class:`~ase_rare.bruteforce.BruteForce` engine and label states.

    Every ``record_interval`` steps of an excursion out of A the walker's
    position is recorded: always once the excursion has lasted ``min_steps``
    steps, otherwise with probability ``early_fraction`` (weight
    ``1/early_fraction``), and at most ``max_records`` per excursion. When
    the walker enters A its records get label 0, when it enters B label 1.
    Records of excursions still open at the end are dropped (their labels
    are unknown; dropping them depends on the time left, not on the label).

    Parameters
    ----------
    engine : BruteForce
        With ``restart_in_A=True``; it is advanced by ``steps`` steps and its
        rate statistics accumulate as usual.
    steps : int
    record_interval, max_records, min_steps : int
        In steps of the engine.
    early_fraction : float
        Fraction of the early records kept, in (0, 1].
    failure_fraction : float
        Fraction of the records labelled 0 kept, chosen at random once the
        label is known (successes are all kept). This choice does look at the
        label, so it shifts the committor odds by exactly this factor, which
        :func:`fit_committor` undoes. Keeping every early record and thinning
        failures instead keeps the fast transitions, whose states are
        otherwise mostly early records and few.
    seed : int
        For the choice of early records.
    progress : bool
        Show a progress bar.
    """
    if not engine.restart_in_A:
        raise ValueError("label_states needs an engine with restart_in_A=True")
    for name, value in (
        ("early_fraction", early_fraction),
        ("failure_fraction", failure_fraction),
    ):
        if not 0 < value <= 1:
            raise ValueError(f"{name} must lie in (0, 1]; got {value}")
    for name, value in (
        ("steps", steps),
        ("record_interval", record_interval),
        ("max_records", max_records),
    ):
        if value < 1:
            raise ValueError(f"{name} must be >= 1; got {value}")

    w = engine.n_walkers
    dev = engine.x.device
    shape = engine.x.shape[1:]
    buffer = torch.zeros((w, max_records, *shape), dtype=engine.x.dtype, device=dev)
    buf_weight = torch.zeros((w, max_records), dtype=torch.float64, device=dev)
    count = torch.zeros(w, dtype=torch.long, device=dev)
    age = torch.zeros(w, dtype=torch.long, device=dev)
    gen = torch.Generator(device=dev).manual_seed(seed)
    rows = torch.arange(w, device=dev)
    out_x, out_y, out_w = [], [], []

    def flush(mask: torch.Tensor, label: float) -> None:
        for r in torch.nonzero(mask & (count > 0)).flatten().tolist():
            k = int(count[r])
            keep = slice(0, k)
            if label == 0.0 and failure_fraction < 1:
                keep = torch.rand(k, generator=gen, device=dev) < failure_fraction
                if not bool(keep.any()):
                    continue
            out_x.append(buffer[r, :k][keep].clone())
            out_w.append(buf_weight[r, :k][keep].clone())
            out_y.append(torch.full((out_w[-1].shape[0],), label, dtype=torch.float64))
        count[mask] = 0

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="labelled run", unit="step")
    n_ab0 = int(engine.n_ab.sum())
    t0 = time.perf_counter()
    for k in range(steps):
        n_ab_before = engine.n_ab.clone()
        engine.step()
        to_b = engine.n_ab > n_ab_before
        to_a = engine.in_a & ~to_b
        flush(to_b, 1.0)
        flush(to_a, 0.0)
        age = torch.where(engine.in_a, 0, age + 1)

        due = (~engine.in_a) & (age % record_interval == 0) & (count < max_records)
        if bool(due.any()):
            late = age >= min_steps
            draw = torch.rand(w, generator=gen, device=dev) < early_fraction
            keep = due & (late | draw)
            weight = torch.where(late, 1.0, 1.0 / early_fraction).double()
            r = rows[keep]
            slot = count[keep]
            buffer[r, slot] = engine.x[keep]
            buf_weight[r, slot] = weight[keep]
            count[keep] += 1
        if bar is not None and k % 100 == 99:
            bar.update(100)
    if bar is not None:
        bar.close()
    empty = torch.zeros((0, *shape), dtype=torch.float64)
    return LabelledStates(
        positions=torch.cat(out_x).cpu() if out_x else empty,
        labels=torch.cat(out_y).cpu() if out_y else torch.zeros(0),
        weights=torch.cat(out_w).cpu() if out_w else torch.zeros(0),
        walker_steps=steps * w,
        n_transitions=int(engine.n_ab.sum()) - n_ab0,
        wall_time_s=time.perf_counter() - t0,
        failure_fraction=failure_fraction,
    )


def fit_committor(
    importance: ImportanceFunction,
    data: LabelledStates,
    *,
    epochs: int = 30,
    batch_size: int = 512,
    learning_rate: float = 2e-3,
    failure_fraction: float | None = None,
    use_weights: bool = False,
    seed: int = 0,
    progress: bool = False,
) -> list[float]:
    """Fit the importance function's logit to committor labels by cross-entropy.

    Parameters
    ----------
    importance : ImportanceFunction
        Its ``logit`` is fitted in place.
    data : LabelledStates
    epochs, batch_size, learning_rate : int, int, float
        Adam over the data set.
    failure_fraction : float, optional
        Keep only this random fraction of the label-0 states (to balance the
        classes); the fitted logit is then too high by ``−ln failure_fraction``
        and this is subtracted from the output offset at the end. Default:
        enough failures for twice as many failures as successes.
    seed : int

    Returns
    -------
    list of float
        Mean weighted cross-entropy per epoch.
    """
    gen = torch.Generator().manual_seed(seed)
    y, w, x = data.labels, data.weights, data.positions
    n_pos = int((y > 0.5).sum())
    n_neg = len(y) - n_pos
    if n_pos == 0:
        raise ValueError(
            "the labelled run saw no transition into B; run it longer or at a "
            "higher temperature"
        )
    if failure_fraction is None:
        failure_fraction = min(1.0, 2.0 * n_pos / max(n_neg, 1))
    keep = (y > 0.5) | (torch.rand(len(y), generator=gen) < failure_fraction)
    x, y, w = x[keep], y[keep], w[keep]
    w = w / w.mean() if use_weights else torch.ones_like(w)

    opt = torch.optim.Adam(importance.parameters(), lr=learning_rate)
    losses = []
    epochs_iter = range(epochs)
    if progress:
        from tqdm.auto import tqdm

        epochs_iter = tqdm(epochs_iter, desc="committor fit", unit="epoch")
    for _ in epochs_iter:
        order = torch.randperm(len(y), generator=gen)
        total = 0.0
        for start in range(0, len(y), batch_size):
            b = order[start : start + batch_size]
            logit = importance.logit(x[b])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logit, y[b].to(logit.dtype), weight=w[b].to(logit.dtype)
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        losses.append(total / len(y))
    shift = math.log(failure_fraction) + math.log(data.failure_fraction)
    if shift != 0.0:
        _shift_logit(importance, shift)
    return losses


def _shift_logit(importance: ImportanceFunction, shift: float) -> None:
    """Add ``shift`` to the logit: through ``output_offset`` or the last bias."""
    with torch.no_grad():
        offset = getattr(importance, "output_offset", None)
        net = getattr(importance, "net", None)
        if isinstance(offset, torch.Tensor):
            offset.add_(shift)
        elif isinstance(net, torch.nn.Sequential) and isinstance(
            net[-1], torch.nn.Linear
        ):
            net[-1].bias.add_(shift)
        else:
            raise TypeError(
                f"{type(importance).__name__} has no output_offset or final linear "
                "layer to shift its logit by; fit with failure_fraction=1"
            )


def committor_calibration(
    importance: ImportanceFunction,
    data: LabelledStates,
    bins: int = 10,
    max_states: int = 50_000,
) -> np.ndarray:
    """Predicted vs observed "B first" frequency in bins of predicted q.

    Uses a random subset of at most ``max_states`` states.

    Returns rows ``(mean predicted q, observed frequency, weight in bin)``.
    """
    x, y, w = data.positions, data.labels.numpy(), data.weights.numpy()
    if len(y) > max_states:
        pick = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
        pick = pick[:max_states]
        x, y, w = x[pick], y[pick.numpy()], w[pick.numpy()]
    with torch.no_grad():
        q = torch.cat(
            [
                torch.exp(importance.log_importance(x[k : k + 4096]))
                for k in range(0, len(y), 4096)
            ]
        ).numpy()
    edges = np.quantile(q, np.linspace(0, 1, bins + 1))
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (q >= lo) & (q <= hi)
        if m.any():
            rows.append(
                (
                    np.average(q[m], weights=w[m]),
                    np.average(y[m], weights=w[m]),
                    w[m].sum(),
                )
            )
    return np.array(rows)
