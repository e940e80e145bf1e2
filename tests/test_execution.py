"""Batches of roots run in parallel give bitwise the sequential result."""

import concurrent.futures
import logging
import os
import signal
import time

import numpy as np
import pytest
import torch
from setups import HOT_2D_DT, HOT_2D_K, hot_2d_inputs

from ase_rare.ensemble import Branching, Ensemble
from ase_rare.execution import ProcessPool, as_batch_executor

torch.set_num_threads(1)

T_K, DT = HOT_2D_K, HOT_2D_DT
NO_CLOCK = {"wall_time_s": 0}


@pytest.fixture(scope="module")
def setup():
    return hot_2d_inputs()


def make(setup, **kwargs) -> Ensemble:
    system, importance, flux = setup
    options = dict(
        temperature_K=T_K,
        timestep=DT,
        flux=flux,
        n_roots=64,
        roots_per_batch=16,
        channels=system.channels,
        branching=Branching(),
        seed=11,
        max_steps=20000,
    )
    options.update(kwargs)
    return Ensemble(system.start_A, importance, system.A, system.B, **options)


@pytest.fixture(scope="module")
def sequential(setup):
    ens = make(setup)
    result = ens.run()
    return result, ens.batches


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def assert_same_run(ens: Ensemble, result, sequential) -> None:
    """Every number of the result and of every batch, bit for bit."""
    reference, batches = sequential
    assert result.to_dict() | NO_CLOCK == reference.to_dict() | NO_CLOCK
    assert sorted(ens.batches) == sorted(batches)
    for b, ref in batches.items():
        got = ens.batches[b].to_arrays() | NO_CLOCK
        for key, value in (ref.to_arrays() | NO_CLOCK).items():
            np.testing.assert_array_equal(got[key], value, err_msg=f"{b}: {key}")


def test_process_pool_matches_sequential(setup, sequential):
    ens = make(setup)
    arrived = []
    ens.attach(lambda: arrived.append(len(ens.batches)))
    result = ens.run(executor="processes", max_workers=2)
    assert_same_run(ens, result, sequential)
    assert arrived == [1, 2, 3, 4]  # observers after every arrival


def test_kept_pool_serves_several_runs(setup, sequential):
    """Workers start once; each run ships its own ensemble and matches."""
    with ProcessPool(2) as pool:
        pids = set(pool._pool._processes)
        for _ in range(2):
            ens = make(setup)
            assert_same_run(ens, ens.run(executor=pool), sequential)
        other = make(setup, seed=99)
        changed = other.run(executor=pool)
        assert set(pool._pool._processes) == pids  # no new processes
    assert changed.to_dict() | NO_CLOCK != sequential[0].to_dict() | NO_CLOCK
    assert pool._pool is None


def test_dask_matches_sequential(setup, sequential, client):
    ens = make(setup)
    result = ens.run(client=client)
    assert_same_run(ens, result, sequential)
    # Nothing is left on the cluster: the scattered ensemble is released (the
    # scheduler forgets it a moment after the run).
    deadline = time.monotonic() + 10
    while client.who_has() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not client.who_has()


def test_thread_pool_matches_sequential_and_returns_paths(setup, sequential):
    """A caller's own concurrent.futures executor; recorded paths come back."""
    reference = make(setup)
    reference.record_paths(2, interval_steps=50)
    reference.run()
    expected = sorted((p.batch, p.root, p.status) for p in reference._recorded)

    ens = make(setup)
    ens.record_paths(2, interval_steps=50)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        result = ens.run(executor=pool)
    assert_same_run(ens, result, sequential)
    got = ens.take_recorded_paths()
    assert sorted((p.batch, p.root, p.status) for p in got) == expected


def test_checkpoint_resume_with_dask_skips_finished_batches(
    setup, sequential, client, tmp_path
):
    path = tmp_path / "run.ckpt"
    first = make(setup, checkpoint=path)
    runner = first.irun()
    next(runner)
    next(runner)  # two of four batches saved, then "killed"
    del runner, first

    resumed = make(setup, checkpoint=path)
    assert sorted(resumed.batches) == [0, 1]
    arrived = []
    resumed.attach(lambda: arrived.append(sorted(resumed.batches)))
    result = resumed.run(client=client)
    assert arrived[-1] == [0, 1, 2, 3] and len(arrived) == 2  # only 2 and 3 ran
    assert_same_run(resumed, result, sequential)

    # The checkpoint written on the executor path resumes to the same result.
    again = make(setup, checkpoint=path)
    assert sorted(again.batches) == [0, 1, 2, 3]
    assert again.run(client=client).to_dict() | NO_CLOCK == result.to_dict() | NO_CLOCK


def test_unsupported_combinations_are_refused(setup):
    running = make(setup, branching=Branching(target="running"))
    with pytest.raises(NotImplementedError, match="running"):
        running.run(executor=concurrent.futures.ThreadPoolExecutor(1))

    watched = make(setup)
    watched.attach_step(lambda: None)
    with pytest.raises(NotImplementedError, match="step observers"):
        watched.run(executor=concurrent.futures.ThreadPoolExecutor(1))

    with pytest.raises(ValueError, match="processes"):
        as_batch_executor("threads")
    with pytest.raises(ValueError, match="max_workers"):
        as_batch_executor(None, max_workers=2)
    with pytest.raises(TypeError):
        as_batch_executor(42)
    with pytest.raises(ValueError, match="fork"):
        ProcessPool(2, mp_context="fork")


@pytest.mark.slow
def test_lost_dask_worker_changes_nothing(setup, sequential, client):
    """Kill a worker with batches in hand: the scheduler runs them again
    elsewhere, and as results are kept by batch index none counts twice."""
    ens = make(setup)
    runner = ens.irun(client=client)
    next(runner)
    busy = [addr for addr, keys in client.processing().items() if keys]
    if busy:
        [pid] = client.run(os.getpid, workers=busy[:1]).values()
        os.kill(pid, signal.SIGKILL)
    for _ in runner:
        pass
    assert_same_run(ens, ens.result(), sequential)
    client.wait_for_workers(2, timeout=60)  # the nanny restarts it
