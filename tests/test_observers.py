"""Observers of the ensemble, path recording and walkers as Atoms."""

import io
import itertools
import math
from collections import defaultdict

import numpy as np
import pytest
import torch
from ase.io import Trajectory, read
from setups import HOT_2D_DT, HOT_2D_K, hot_2d_inputs

from ase_rare.ensemble import Branching, Ensemble
from ase_rare.observers import Checkpointer, PathWriter, ProgressBar, StatisticsLogger

torch.set_num_threads(1)

T_K, DT = HOT_2D_K, HOT_2D_DT
N_ROOTS, ROOTS_PER_BATCH = 32, 8
NO_WALL_TIME = {"wall_time_s": 0.0}


@pytest.fixture(scope="module")
def setup():
    return hot_2d_inputs(n_exit_points=N_ROOTS, n_walkers=32)


def make(setup, **kwargs) -> Ensemble:
    system, importance, flux = setup
    options = dict(
        temperature_K=T_K,
        timestep=DT,
        flux=flux,
        n_roots=N_ROOTS,
        roots_per_batch=ROOTS_PER_BATCH,
        branching=Branching(),
        channels=system.channels,
        seed=11,
        max_steps=20000,
    )
    options.update(kwargs)
    return Ensemble(system.start_A, importance, system.A, system.B, **options)


@pytest.fixture(scope="module")
def reference(setup):
    """The result without any observer or recording."""
    return make(setup).run()


def test_recording_and_observers_leave_the_result_unchanged(setup, reference):
    """Recording, step observers and Atoms on demand draw no random numbers."""
    ensemble = make(setup)
    ensemble.record_paths(ROOTS_PER_BATCH, interval_steps=3)
    sizes = []
    ensemble.attach_step(lambda: sizes.append(len(ensemble.current_walkers())), 7)
    result = ensemble.run()
    assert result.to_dict() | NO_WALL_TIME == reference.to_dict() | NO_WALL_TIME
    assert sizes and max(sizes) > 1  # the observer saw live populations


def test_recorded_paths_account_for_every_success(setup):
    """With every root recorded, the paths' final weights rebuild each S_r.

    The ensemble sums the same float64 weights in the same order; 1e-12
    relative leaves room for nothing but rounding.
    """
    system, _, flux = setup
    ensemble = make(setup)
    interval = 4
    ensemble.record_paths(ROOTS_PER_BATCH, interval_steps=interval)
    result = ensemble.run()
    paths = ensemble.take_recorded_paths()
    assert ensemble.take_recorded_paths() == []

    successes = [p for p in paths if p.success]
    assert len(successes) == result.n_successes
    s = np.zeros(N_ROOTS)
    for p in successes:
        s[p.root] += math.exp(p.log_weight[-1])
    contribution = np.concatenate([b.contribution for b in ensemble._ordered()])
    np.testing.assert_allclose(s, contribution, rtol=1e-12, atol=0)

    for p in paths:
        assert p.root // ROOTS_PER_BATCH == p.batch
        np.testing.assert_array_equal(p.positions[0], flux.exit_points[p.root])
        assert p.steps[0] == 0 and p.log_weight[0] == 0.0
        gaps = np.diff(p.steps)
        assert (gaps[:-1] == interval).all() and 0 < gaps[-1] <= interval
        assert np.isfinite(p.log_weight).all()
        assert np.isfinite(p.log_importance[:-1]).all()
        if p.success:
            assert p.log_importance[-1] == 0.0
            assert p.channel in system.channels.names
        else:
            assert p.status == "returned to A" and p.channel is None
            assert p.log_importance[-1] == -math.inf

    # Descendants of one root share their ancestor's frames up to the split
    # that separated them, and only up to it: a split happens at a branching
    # step, after which the copies draw their own noise.
    by_root = defaultdict(list)
    for p in paths:
        by_root[p.root].append(p)
    family = max(by_root.values(), key=len)
    assert len(family) > 1
    every = Branching().interval
    for a, b in itertools.combinations(family, 2):
        n = min(len(a.steps), len(b.steps))
        k = 0
        while (
            k < n
            and a.steps[k] == b.steps[k]
            and np.array_equal(a.positions[k], b.positions[k])
        ):
            k += 1
        assert 1 <= k < n
        first_apart = min(a.steps[k], b.steps[k])
        split_step = (first_apart - 1) // every * every
        assert split_step >= every and a.steps[k - 1] <= split_step


def test_paths_stopped_by_the_step_cap_are_recorded(setup):
    ensemble = make(setup, n_roots=16, max_steps=30)
    ensemble.record_paths(ROOTS_PER_BATCH, interval_steps=7)
    result = ensemble.run()
    capped = [p for p in ensemble.take_recorded_paths() if p.status == "step cap"]
    assert len(capped) == result.n_step_capped > 0
    for p in capped:
        assert p.steps[-1] == 30 and list(p.steps[:-1]) == [0, 7, 14, 21, 28]
        assert np.isfinite(p.log_importance).all() and p.channel is None
    # The walkers left at the cap are also the last live population.
    last_batch = 16 // ROOTS_PER_BATCH - 1
    live = ensemble.current_walkers()
    assert len(live) == sum(p.batch == last_batch for p in capped)
    assert all(a.info["step"] == 30 for a in live)


def test_path_writer_round_trip(setup, tmp_path):
    filename = tmp_path / "paths.traj"
    ensemble = make(setup)
    writer = PathWriter(ensemble, filename, max_paths=5, failures=2, interval_steps=5)
    ensemble.attach(writer)
    ensemble.run()

    frames = read(filename, ":")
    paths = defaultdict(list)
    for atoms in frames:
        paths[atoms.info["path"]].append(atoms)
    assert sorted(paths) == list(range(len(paths)))
    outcomes = [f[0].info["outcome"] for f in paths.values()]
    assert 0 < outcomes.count("reached B") <= 5
    assert len(outcomes) - outcomes.count("reached B") <= 2
    for path in paths.values():
        first, last = path[0], path[-1]
        assert first.info["step"] == 0 and first.info["log_weight"] == 0.0
        assert all(a.info["status"] == "running" for a in path[:-1])
        assert last.info["status"] == last.info["outcome"]
        for atoms in path:
            assert set(atoms.info) >= {
                "path",
                "root",
                "step",
                "log_weight",
                "log_importance",
                "channel",
                "status",
            }
            assert math.isfinite(atoms.info["log_weight"])
            assert atoms.get_chemical_symbols() == ["Ar"]
        if last.info["outcome"] == "reached B":
            assert last.info["channel"] in ("upper", "lower")
        else:
            assert last.info["channel"] is None
    # Quotas full: the writer switched the recording off.
    assert ensemble._recording is None

    # A resumed run appends: numbering and quotas go on from the file.
    more = PathWriter(make(setup), filename, max_paths=5, failures=2, append=True)
    assert more.n_paths == len(paths)
    assert more.n_successes == outcomes.count("reached B")
    with Trajectory(filename) as traj:
        assert len(traj) == len(frames)


def test_statistics_logger_writes_one_line_per_batch(setup, reference, tmp_path):
    """The last line is the final result, to the printed precision (6 digits)."""
    out = io.StringIO()
    ensemble = make(setup)
    ensemble.attach(StatisticsLogger(ensemble, out))
    ensemble.run()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("#") and "rate[1/fs]" in lines[0]
    assert len(lines) == 1 + N_ROOTS // ROOTS_PER_BATCH
    last = lines[-1].split()
    assert int(last[0]) == N_ROOTS // ROOTS_PER_BATCH and int(last[1]) == N_ROOTS
    assert float(last[2]) == pytest.approx(reference.rate_per_fs, rel=1e-5)
    assert float(last[4]) == pytest.approx(reference.success_probability, rel=1e-5)
    assert int(last[7]) == reference.n_successes

    path = tmp_path / "rate.log"
    ensemble = make(setup, n_roots=16)
    with StatisticsLogger(ensemble, path) as logger:
        ensemble.attach(logger)
        ensemble.run()
    assert len(path.read_text().splitlines()) == 1 + 16 // ROOTS_PER_BATCH


def test_progress_bar_counts_batches_and_resumes(setup, tmp_path):
    checkpoint = tmp_path / "run.ckpt"
    first = make(setup, checkpoint=checkpoint)
    next(first.irun())

    out = io.StringIO()
    ensemble = make(setup, checkpoint=checkpoint)
    bar = ProgressBar(ensemble, file=out)
    assert bar.bar.n == 1  # the batch from the checkpoint
    ensemble.attach(bar)
    result = ensemble.run()
    assert bar.closed and bar.bar.n == N_ROOTS // ROOTS_PER_BATCH
    text = out.getvalue()
    assert f"{N_ROOTS // ROOTS_PER_BATCH}/{N_ROOTS // ROOTS_PER_BATCH}" in text
    assert f"{result.rate_per_fs:.3g} ± {result.rate_se_per_fs:.2g} fs⁻¹" in text


def test_current_walkers_are_atoms_of_the_live_population(setup):
    ensemble = make(setup, n_roots=16)
    assert ensemble.current_walkers() == []
    seen = []

    def look():
        walkers = ensemble.current_walkers()
        pop = ensemble._population
        assert len(walkers) == len(pop.positions)
        seen.extend(walkers)

    ensemble.attach_step(look, 5)
    ensemble.run()
    assert seen
    for atoms in seen:
        info = atoms.info
        assert info["step"] % 5 == 0
        assert info["root"] // ROOTS_PER_BATCH == info["batch"]
        assert math.isfinite(info["log_weight"])
        assert math.isfinite(info["log_importance"]) and info["log_importance"] < 0
        assert atoms.calc is None and atoms.get_chemical_symbols() == ["Ar"]
    # After the run: the walkers left at the step cap, here none.
    assert ensemble.current_walkers() == []


def test_checkpointer_saves_a_resumable_file(setup, reference, tmp_path):
    path = tmp_path / "copy.ckpt"
    ensemble = make(setup)
    saves = []
    ensemble.attach(Checkpointer(ensemble, path), 3)
    ensemble.attach(lambda: saves.append(len(ensemble.batches)), 3)
    ensemble.run()
    assert saves == [3, 4]  # every third batch and after the last
    resumed = make(setup)
    resumed.load_checkpoint(path)
    assert sorted(resumed.batches) == [0, 1, 2, 3]
    keep = NO_WALL_TIME
    assert resumed.run().to_dict() | keep == reference.to_dict() | keep


def test_bad_observer_arguments_are_refused(setup, tmp_path):
    ensemble = make(setup)
    with pytest.raises(ValueError, match="interval"):
        ensemble.attach(lambda: None, 0)
    with pytest.raises(TypeError):
        ensemble.attach_step(None)
    with pytest.raises(ValueError, match="record_paths"):
        ensemble.record_paths(2, interval_steps=0)
    with pytest.raises(ValueError, match="max_paths"):
        PathWriter(ensemble, tmp_path / "p.traj", max_paths=-1)
