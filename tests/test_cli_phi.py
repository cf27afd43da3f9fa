"""train-phi, detect-phi and evaluate-phi as a user runs them."""

from __future__ import annotations

import csv

import pytest
from test_cli import run_cli


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_phi") / "phi"
    from bayes_smlm.cli.main import main

    assert (
        main(
            [
                "train-phi",
                "--task",
                "isolated",
                "--steps",
                "3",
                "--batch-size",
                "4",
                "--validation-frames",
                "16",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


def test_train_phi_resume_continues_and_refuses_to_overwrite(trained, capsys):
    status, _, err = run_cli(
        capsys, "train-phi", "--task", "isolated", "--steps", "3", "--quiet", "--out", str(trained)
    )
    assert status == 2 and "argument --out:" in err and "already holds a training run" in err
    assert len(err.strip().splitlines()) == 1
    status, out, _ = run_cli(
        capsys,
        "train-phi",
        "--task",
        "isolated",
        "--steps",
        "5",
        "--batch-size",
        "4",
        "--resume",
        "--quiet",
        "--out",
        str(trained),
    )
    assert status == 0 and "5 steps" in out


def test_detect_phi_writes_one_row_per_detection(trained, tmp_path, capsys):
    frames = tmp_path / "f.npz"
    assert (
        run_cli(
            capsys,
            "simulate",
            "--task",
            "isolated",
            "--frames",
            "4",
            "--seed",
            "9",
            "--out",
            str(frames),
        )[0]
        == 0
    )
    locs = tmp_path / "locs.csv"
    status, out, _ = run_cli(
        capsys, "detect-phi", str(frames), "--checkpoint", str(trained), "--out", str(locs)
    )
    assert status == 0 and "detections in 4 frames" in out
    rows = list(csv.DictReader(locs.open()))
    assert locs.read_text().splitlines()[0] == "frame,x,y,x_nm,y_nm,log_response"
    for row in rows:
        assert 0 <= int(row["frame"]) < 4
        assert float(row["x_nm"]) == pytest.approx(108.3 * float(row["x"]), abs=1e-2)


def test_evaluate_phi_prints_the_metrics_table(trained, capsys):
    status, out, _ = run_cli(
        capsys, "evaluate-phi", "--task", "isolated", "--frames", "8", "--checkpoint", str(trained)
    )
    assert status == 0 and "√CRLB" in out
    assert "| phi | peaks | gauss3 |" in out and "| true KDE | log | none |" in out


@pytest.mark.parametrize(
    "argv, argument",
    [
        (["evaluate-phi", "--task", "isolated", "--seed", "0", "--frames", "2"], "--seed"),
        (["evaluate-phi", "--task", "paper", "--frames", "2"], "--checkpoint"),
        (["train-phi", "--task", "isolated", "--lr", "-1", "--out", "x"], "--lr"),
    ],
)
def test_phi_commands_fail_in_one_line(trained, argv, argument, capsys):
    if argv[0] == "evaluate-phi":  # the isolated checkpoint; the paper task must refuse it
        argv = argv + ["--checkpoint", str(trained)]
    status, _, err = run_cli(capsys, *argv)
    assert status == 2 and argument in err and len(err.strip().splitlines()) == 1


def test_detect_phi_without_a_checkpoint_for_a_custom_task_says_so(tmp_path, capsys):
    frames = tmp_path / "f.npz"
    run_cli(
        capsys,
        "simulate",
        "--task",
        "isolated",
        "--set",
        "i0=900",
        "--frames",
        "2",
        "--seed",
        "1",
        "--out",
        str(frames),
    )
    status, _, err = run_cli(capsys, "detect-phi", str(frames), "--out", str(tmp_path / "l.csv"))
    assert status == 2 and "argument --checkpoint" in err and "i0" in err


def test_compiled_detect_phi_without_a_cpp_compiler_says_so(trained, tmp_path, capsys, monkeypatch):
    frames = tmp_path / "f.npz"
    run_cli(
        capsys,
        "simulate",
        "--task",
        "isolated",
        "--frames",
        "2",
        "--seed",
        "1",
        "--out",
        str(frames),
    )
    monkeypatch.setenv("PATH", str(tmp_path))  # no compiler on it
    monkeypatch.delenv("CXX", raising=False)
    status, _, err = run_cli(
        capsys,
        "detect-phi",
        str(frames),
        "--checkpoint",
        str(trained),
        "--compiled",
        "--out",
        str(tmp_path / "l.csv"),
    )
    assert status == 2 and "argument --compiled" in err and "C++ compiler" in err
    assert len(err.strip().splitlines()) == 1
