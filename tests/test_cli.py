"""The ase-rare command line, with settings small enough for a test."""

import json

import pytest

from ase_rare.cli import main


def test_htst_table_reproduces_method_600K(capsys):
    assert main(["--json", "htst", "-T", "600"]) == 0
    rows = json.loads(capsys.readouterr().out)["htst"]
    # METHOD.md §8.3 quotes 4.59e-4 fs⁻¹ and 2.86e-5 fs⁻¹ to three digits.
    assert rows[0]["rate_AB_per_fs"] == pytest.approx(4.59e-4, rel=1e-2)
    assert rows[0]["rate_BA_per_fs"] == pytest.approx(2.86e-5, rel=1e-2)


def test_grid_prints_rate_with_units(capsys):
    assert main(["grid", "-T", "2000", "--spacing", "0.04"]) == 0
    out = capsys.readouterr().out
    assert "fs⁻¹" in out and "upper" in out


def test_bruteforce_two_channel_json(capsys):
    code = main(
        [
            "--json",
            "--quiet",
            "bruteforce",
            "two-channel",
            "-T",
            "3000",
            "--timestep",
            "0.02",
            "--walkers",
            "256",
            "--transitions",
            "5",
            "--max-time",
            "400",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)["bruteforce"]
    assert result["n_transitions"] >= 5
    assert result["rate_per_fs"] > 0
    assert sum(result["channel_counts"]) <= result["n_transitions"]


def test_bad_timestep_is_a_clear_error(capsys):
    code = main(["--quiet", "bruteforce", "lj7", "--timestep", "0.05"])
    assert code == 2
    err = capsys.readouterr().err
    assert "stability bound" in err and "fs" in err


def test_unknown_system_is_refused():
    with pytest.raises(SystemExit):
        main(["bruteforce", "no-such-system"])


# -- run, report and demo on small configurations ------------------------------


def test_run_good_config_end_to_end(tmp_path, capsys):
    """A 2D configuration runs in seconds and leaves every promised file."""
    import ase.io
    from setups import write_small_2d_config

    config = write_small_2d_config(tmp_path)
    assert main(["--quiet", "--seed", "4", "run", str(config)]) == 0
    out = tmp_path / "out"
    printed = capsys.readouterr().out
    assert "rate k_AB (reweighted)" in printed and "s⁻¹" in printed
    for name in ("result.json", "paths.traj", "run.log", "importance.pt"):
        assert (out / name).is_file(), name
    for name in ("arrhenius.png", "channels.png", "weights.png", "committor.png"):
        assert (out / name).stat().st_size > 10_000, name
    frames = ase.io.read(out / "paths.traj", ":")
    assert frames and {"log_weight", "outcome", "path"} <= set(frames[0].info)
    result = json.loads((out / "result.json").read_text())
    assert result["seed"] == 4 and result["n_roots"] == 32


def test_run_json_and_report_command(tmp_path, capsys):
    from setups import write_small_2d_config

    config = write_small_2d_config(tmp_path)
    assert main(["--quiet", "--json", "run", str(config), "--no-plots"]) == 0
    printed = json.loads(capsys.readouterr().out)
    (result,) = printed["results"]
    assert "root_contributions" not in result and result["rate_per_fs"] > 0
    assert not (tmp_path / "out" / "arrhenius.png").exists()

    assert main(["report", str(tmp_path / "out"), "--out", str(tmp_path / "r")]) == 0
    assert "rate k_AB (reweighted)" in capsys.readouterr().out
    assert (tmp_path / "r" / "summary.md").is_file()
    assert (tmp_path / "r" / "weights.png").is_file()


def test_run_bad_config_exits_2_with_message(tmp_path, capsys):
    from setups import write_small_2d_config

    config = write_small_2d_config(tmp_path, extra="\n[execution]\nworker = 2\n")
    assert main(["--quiet", "run", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ase-rare: error: ")
    assert "[execution]: unknown key 'worker' (did you mean 'workers'?)" in err
    assert main(["run", str(tmp_path / "missing.toml")]) == 2
    assert "configuration file" in capsys.readouterr().err


def test_run_refuses_unwritable_output_folder(tmp_path, capsys):
    from setups import write_small_2d_config

    config = write_small_2d_config(tmp_path)
    (tmp_path / "blocker").write_text("a file, not a folder")
    code = main(["--quiet", "run", str(config), "--out", str(tmp_path / "blocker/o")])
    assert code == 2
    assert "cannot write to the output folder" in capsys.readouterr().err


def test_demo_runs_a_given_config_then_reports(tmp_path, capsys):
    """The demo path (run on a configuration, then report), on the 2D system with
    an importance function saved to a file."""
    from setups import hot_2d_inputs, write_small_2d_config

    _, importance, _ = hot_2d_inputs(n_exit_points=8, n_walkers=16, spacing=0.1)
    importance.save(tmp_path / "I.pt")
    config = write_small_2d_config(tmp_path, importance='path = "I.pt"')
    out = tmp_path / "demo"
    assert (
        main(["--quiet", "demo", "--quick", "--config", str(config), "--out", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "--quick" in printed and "rate k_AB (reweighted)" in printed
    assert (out / "summary.md").is_file() and (out / "paths.traj").is_file()


def test_demo_without_shipped_importance_function_is_a_clear_error(
    tmp_path, monkeypatch, capsys
):
    import ase_rare.data

    monkeypatch.setattr(ase_rare.data, "IMPORTANCE_DIR", tmp_path / "none")
    assert main(["--quiet", "demo", "--quick", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "no shipped importance function 'lj7-600K'" in err
    assert "python examples/train_lj7.py" in err


def test_packaged_demo_config_is_valid():
    from ase_rare.cli import DEMO_CONFIG
    from ase_rare.config import load_config

    config = load_config(DEMO_CONFIG)
    assert config.system.builtin == "lj7" and config.importance.name == "lj7-600K"
    assert config.dynamics.temperatures_K == (600.0,)
    assert config.references.htst is True
    assert all(f.is_file() for f in config.references.bruteforce_files)


def test_device_that_does_not_exist_is_refused(capsys):
    code = main(["--quiet", "--device", "tpu", "bruteforce", "two-channel"])
    assert code == 2
    assert "device 'tpu'" in capsys.readouterr().err
