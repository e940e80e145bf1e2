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
