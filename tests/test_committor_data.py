"""Committor labels from unbiased runs, and the cross-entropy fit to them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase import units

from ase_rare.bruteforce import BruteForce
from ase_rare.committor_data import (
    LabelledStates,
    committor_calibration,
    fit_committor,
    label_states,
)
from ase_rare.importance import GridImportance, MLPImportance
from ase_rare.systems import two_channel_system

T_K, DT_FS = 2500.0, 0.02


@pytest.fixture(scope="module")
def labelled():
    system = two_channel_system()
    engine = BruteForce(
        system.start_A,
        system.A,
        system.B,
        timestep=DT_FS * units.fs,
        temperature_K=T_K,
        n_walkers=256,
        seed=5,
    )
    engine.run(200)
    data = label_states(
        engine, 6000, record_interval=4, min_steps=40, early_fraction=0.2, seed=1
    )
    exact = GridImportance.for_discrete_chain(
        system.start_A.calc,
        system.A,
        system.B,
        temperature_K=T_K,
        timestep_fs=DT_FS,
        box=(-2.2, 2.2, -2.2, 2.2),
        spacing=0.02,
    )
    return system, data, exact


def test_labels_are_unbiased_samples_of_the_committor(labelled):
    _, data, exact = labelled
    assert data.n_transitions > 20 and len(data) > 1000
    assert set(np.unique(data.labels.numpy())) == {0.0, 1.0}
    with torch.no_grad():
        q = torch.exp(exact.log_importance(data.positions)).numpy()
    y = data.labels.numpy()
    # E[label | x] = q(x) state by state, so label - q has mean zero whatever the
    # selection of states (it looks only at the past). Labels of one excursion
    # are correlated; the SE is taken over walkers' excursions conservatively
    # by inflating the per-state SE by the mean number of records per
    # excursion (at most max_records), and the tolerance is 4 SE.
    d = y - q
    se = d.std(ddof=1) / math.sqrt(len(d)) * math.sqrt(16)
    assert abs(d.mean()) < 4 * se, (d.mean(), se)
    # And not trivially: the committor varies a lot over the states.
    assert q.min() < 0.05 and q.max() > 0.9


def test_fit_recovers_the_committor_and_its_scale(labelled, tmp_path):
    _, data, exact = labelled
    torch.manual_seed(0)
    net = MLPImportance(1, hidden=(32, 32), temperature_K=T_K)
    losses = fit_committor(net, data, epochs=25, learning_rate=3e-3, seed=2)
    assert losses[-1] < losses[0]
    with torch.no_grad():
        fitted = net.log_importance(data.positions)
        truth = exact.log_importance(data.positions)
    # Where the committor is resolved by the labels (q > 0.02), the fit follows
    # the exact committor in ln q; the failure thinning has been undone.
    ok = truth > math.log(0.02)
    err = (fitted[ok] - truth[ok]).abs()
    assert float(err.median()) < 0.5, float(err.median())
    rows = committor_calibration(net, data, bins=5)
    assert rows.shape[1] == 3
    # Calibration in the large: predicted and observed frequencies agree in
    # every bin within a loose absolute tolerance.
    assert np.all(np.abs(rows[:, 0] - rows[:, 1]) < 0.1), rows

    data.save(tmp_path / "labels.pt")
    back = LabelledStates.load(tmp_path / "labels.pt")
    assert torch.equal(back.labels, data.labels) and len(back) == len(data)


def test_bad_arguments_are_refused(labelled):
    system, _, _ = labelled
    engine = BruteForce(
        system.start_A,
        system.A,
        system.B,
        timestep=DT_FS * units.fs,
        temperature_K=T_K,
        n_walkers=4,
        restart_in_A=False,
    )
    with pytest.raises(ValueError, match="restart_in_A=True"):
        label_states(engine, 10)
    engine.restart_in_A = True
    with pytest.raises(ValueError, match="early_fraction"):
        label_states(engine, 10, early_fraction=0.0)
    with pytest.raises(ValueError, match="no transition into B"):
        fit_committor(
            MLPImportance(1),
            LabelledStates(
                positions=torch.zeros((3, 1, 3), dtype=torch.float64),
                labels=torch.zeros(3, dtype=torch.float64),
                weights=torch.ones(3, dtype=torch.float64),
                walker_steps=0,
                n_transitions=0,
                wall_time_s=0.0,
            ),
        )
