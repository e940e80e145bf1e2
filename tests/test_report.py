"""The report: readable PNG plots and a Markdown summary of finished runs."""

import json
import math

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from setups import write_small_2d_config

from ase_rare import RateResult
from ase_rare.config import load_config
from ase_rare.pipeline import run_config
from ase_rare.report import htst_curve, load_results, make_report

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One small 2D run (grid importance function, 32 roots), without plots."""
    folder = tmp_path_factory.mktemp("report")
    config = load_config(write_small_2d_config(folder))
    (output,) = run_config(config, quiet=True, plots=False, seed=11)
    return output


def assert_readable_png(path, min_pixels=(300, 400)):
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] >= min_pixels[0]
    assert image.shape[1] >= min_pixels[1]
    # Not a blank canvas: a plot has many distinct colours.
    rgb = (255 * image[..., :3]).astype(np.uint32)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    assert len(np.unique(packed)) > 20


def test_result_carries_per_root_data_and_run_info(run):
    r = run.result
    assert len(r.root_contributions) == r.n_roots == 32
    assert np.mean(r.root_contributions) == pytest.approx(r.success_probability)
    assert len(r.root_log_importance) == 32
    assert r.info["system"] == "two-channel"
    assert r.info["importance"]["file"] == "importance.pt"
    assert set(r.info["timings_s"]) == {"flux", "importance", "ensemble", "references"}
    again = RateResult.from_json(run.folder / "result.json")
    assert again.to_dict() == r.to_dict()


def test_report_writes_readable_plots_and_summary(run, tmp_path):
    written = make_report([run.folder / "result.json"], tmp_path)
    names = sorted(p.name for p in written)
    assert names == [
        "arrhenius.png",
        "channels.png",
        "committor.png",
        "summary.md",
        "weights.png",
    ]
    for path in written:
        if path.suffix == ".png":
            assert_readable_png(path)
    summary = (tmp_path / "summary.md").read_text()
    r = run.result
    exp = math.floor(math.log10(r.rate_per_fs))
    assert f"({r.rate_per_fs / 10**exp:.3f} ± " in summary
    assert "fs⁻¹" in summary and "s⁻¹" in summary and "walker-steps" in summary
    assert "| upper |" in summary and "| lower |" in summary
    assert "![arrhenius](arrhenius.png)" in summary


def test_report_of_a_result_without_run_info(tmp_path):
    """Results written before the per-root fields and info existed still load."""
    data = json.loads(
        RateResult(
            direction="A->B",
            temperature_K=600.0,
            timestep_fs=0.005,
            friction_eV_fs_per_A2=1.0,
            kernel="tilt",
            rate_per_fs=4.3e-4,
            rate_se_per_fs=2e-5,
            success_probability=1e-5,
            success_probability_se=5e-7,
            flux_per_fs=43.0,
            flux_se_per_fs=0.1,
            naive_rate_per_fs=2.6e-4,
            naive_success_probability=6e-6,
            n_roots=100,
            n_successes=40,
            n_step_capped=0,
            effective_sample_size=30.0,
            relative_variance_per_root=2.0,
        ).to_json()
    )
    for key in ("root_contributions", "root_log_importance", "info"):
        del data[key]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    written = make_report([path], tmp_path / "rep")
    assert sorted(p.name for p in written) == ["arrhenius.png", "summary.md"]
    assert_readable_png(written[0])


def test_bad_report_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="result file .* not found"):
        load_results([tmp_path / "none.json"])
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"rate": 1}))
    with pytest.raises(ValueError, match="is not a RateResult JSON"):
        load_results([other])


def test_htst_curve_matches_harmonic_tst():
    from ase_rare.cli import _lj7_htst

    (forward, _), (forward_500, _) = _lj7_htst([600.0, 500.0])
    stored = {
        "prefactors_per_fs": forward.prefactors_per_fs,
        "multiplicities": forward.multiplicities,
        "barriers_eV": forward.barriers_eV,
    }
    k = htst_curve(stored, np.array([600.0, 500.0]))
    assert k == pytest.approx([forward.rate_per_fs, forward_500.rate_per_fs], rel=1e-12)
    assert math.isclose(k[0], 4.59e-4, rel_tol=1e-2)


def test_report_of_a_run_where_no_path_reached_b(tmp_path):
    """A two-step cap stops every path: the report still draws and says so."""
    path = write_small_2d_config(tmp_path)
    path.write_text(path.read_text().replace("max_steps = 20000", "max_steps = 2"))
    (output,) = run_config(load_config(path), quiet=True, plots=False)
    assert output.result.n_successes == 0
    written = make_report([output.folder / "result.json"], tmp_path / "rep")
    for p in written:
        if p.suffix == ".png":
            assert_readable_png(p)
    assert "| 32 / 0 / " in (tmp_path / "rep" / "summary.md").read_text()
