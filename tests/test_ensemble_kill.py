"""Checkpoints survive a killed process and a full disk."""

import errno
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ase_rare.results import RateResult

torch.set_num_threads(1)

WORKER = Path(__file__).with_name("ensemble_kill_worker.py")


def load_worker():
    spec = importlib.util.spec_from_file_location("ensemble_kill_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def worker():
    return load_worker()


def finished_batches(path: Path) -> list[int]:
    if not path.exists():
        return []
    return sorted(torch.load(path, weights_only=False)["batches"])


def start_worker(checkpoint: Path, out: Path, *extra: str) -> subprocess.Popen:
    out.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(checkpoint), str(out), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def computed(out: Path) -> list[int]:
    path = out / "computed.txt"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def test_killed_run_resumes_to_the_uninterrupted_result(worker, tmp_path):
    """SIGKILL in the middle of a run, then resume: bitwise the same result.

    The killed process sleeps after every step, so the kill almost surely
    lands inside a batch, with a live population; the checkpoint then holds
    the batches finished before it. The resumed process must compute exactly
    the other batches, each once.
    """
    checkpoint = tmp_path / "run.ckpt"
    killed = start_worker(checkpoint, tmp_path / "killed", "0.003")
    deadline = time.monotonic() + 120
    try:
        while len(finished_batches(checkpoint)) < 2:
            if killed.poll() is not None:
                pytest.fail(
                    "the worker ended before it could be killed:\n"
                    + killed.stderr.read().decode()
                )
            if time.monotonic() > deadline:
                pytest.fail("the worker finished no two batches in 120 s")
            time.sleep(0.02)
        killed.send_signal(signal.SIGKILL)
    finally:
        killed.kill()
        killed.wait()
        killed.stdout.close()
        killed.stderr.close()
    assert killed.returncode == -signal.SIGKILL

    n_batches = worker.N_ROOTS // worker.ROOTS_PER_BATCH
    saved = finished_batches(checkpoint)
    assert 2 <= len(saved) < n_batches
    assert saved == list(range(len(saved)))  # batches run in order
    assert set(computed(tmp_path / "killed")) <= set(saved)
    assert not (tmp_path / "killed" / "result.json").exists()

    resumed = start_worker(checkpoint, tmp_path / "resumed")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err.decode()
    assert computed(tmp_path / "resumed") == list(range(len(saved), n_batches))
    assert finished_batches(checkpoint) == list(range(n_batches))

    result = RateResult.from_json(tmp_path / "resumed" / "result.json")
    full = worker.build().run()
    assert result.n_roots == worker.N_ROOTS
    keep = {"wall_time_s": 0.0}
    assert result.to_dict() | keep == full.to_dict() | keep


def test_full_disk_keeps_the_previous_checkpoint(worker, tmp_path, monkeypatch):
    """The second save fails half-written: a clear OSError, the first intact."""
    path = tmp_path / "run.ckpt"
    ensemble = worker.build(path)
    real_save = torch.save
    calls = []

    def save_then_fill_the_disk(obj, fh, *args, **kwargs):
        calls.append(obj)
        if len(calls) == 1:
            return real_save(obj, fh, *args, **kwargs)
        fh.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", save_then_fill_the_disk)
    runner = ensemble.irun()
    next(runner)
    with pytest.raises(OSError, match="No space left on device") as info:
        next(runner)
    assert "previous checkpoint, if any, is intact" in str(info.value)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()

    assert finished_batches(path) == [0]
    assert [p.name for p in tmp_path.iterdir()] == ["run.ckpt"]  # no temp file
    assert sorted(worker.build(path).batches) == [0]


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="root writes into read-only folders",
)
def test_read_only_folder_keeps_the_previous_checkpoint(worker, tmp_path):
    folder = tmp_path / "ckpt"
    path = folder / "run.ckpt"
    ensemble = worker.build(path)
    runner = ensemble.irun()
    next(runner)
    folder.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match="checkpoint"):
            next(runner)
    finally:
        folder.chmod(0o755)
    assert finished_batches(path) == [0]
