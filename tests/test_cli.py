"""The command line as a user sees it: files written, numbers printed, one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from bayes_smlm.cli.main import main
from bayes_smlm.forward.config import task_from_json
from bayes_smlm.forward.physics import kde as kde_of


def run_cli(capsys, *argv):
    """Run ``bayes-smlm argv`` in-process; return (exit status, stdout, stderr)."""
    try:
        status = main(list(argv))
    except SystemExit as exc:
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(status, err, *words):
    """Exit status 2, one stderr line, no traceback, and every one of ``words`` in it."""
    assert status == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, (word, err)


def test_simulate_writes_the_documented_arrays(tmp_path, capsys):
    out = tmp_path / "frames.npz"
    status, stdout, _ = run_cli(
        capsys,
        "simulate",
        "--task",
        "paper",
        "--frames",
        "6",
        "--seed",
        "2",
        "--out",
        str(out),
        "--set",
        "i0=500",
        "--set",
        "optics.sigma_kde=3.0",
    )
    assert status == 0 and "wrote" in stdout
    with np.load(out, allow_pickle=False) as data:
        assert data["adu"].shape == (6, 20, 20) and data["adu"].dtype == np.float32
        assert data["theta"].shape == (6, 10, 2) and data["kde"].shape == (6, 80, 80)
        task = task_from_json(str(data["config"]))
        assert task.prior.i0 == 500.0 and task.optics.sigma_kde == 3.0
        np.testing.assert_allclose(
            data["kde"][1],
            np.asarray(kde_of(data["theta"][1], 3.0, 4, (20, 20))),
            rtol=1e-5,
            atol=1e-6,
        )
        first = data["adu"].copy()
    # same seed -> same file contents
    run_cli(
        capsys,
        "simulate",
        "--task",
        "paper",
        "--frames",
        "6",
        "--seed",
        "2",
        "--out",
        str(out),
        "--set",
        "i0=500",
        "--set",
        "optics.sigma_kde=3.0",
    )
    with np.load(out, allow_pickle=False) as data:
        np.testing.assert_array_equal(data["adu"], first)
    assert not list(tmp_path.glob(".*tmp*")), "temporary files left behind"


def test_simulate_accepts_scmos_map_files(tmp_path, capsys):
    gain = tmp_path / "gain.npy"
    np.save(gain, np.full((20, 20), 2.0))
    out = tmp_path / "s.npz"
    status, _, err = run_cli(
        capsys,
        "simulate",
        "--task",
        "isolated",
        "--frames",
        "2",
        "--seed",
        "0",
        "--out",
        str(out),
        "--set",
        f"gain={gain}",
    )
    assert status == 0, err
    with np.load(out, allow_pickle=False) as data:
        assert np.asarray(task_from_json(str(data["config"])).camera.gain).shape == (20, 20)


def test_crlb_prints_pixels_and_nanometres(capsys):
    status, out, _ = run_cli(capsys, "crlb", "--task", "isolated", "--x", "9", "--y", "9")
    assert status == 0
    assert "x = 0.0956 px (10.36 nm)" in out and "y = 0.0956 px" in out
    status, out, _ = run_cli(
        capsys,
        "crlb",
        "--task",
        "isolated",
        "--x",
        "9",
        "--y",
        "9",
        "--set",
        "readout_var=0",
        "--json",
    )
    data = json.loads(out)
    assert data["sqrt_crlb_x_px"] == pytest.approx(0.0682, abs=5e-4)
    assert data["sqrt_crlb_x_nm"] == pytest.approx(data["sqrt_crlb_x_px"] * 108.3)


def test_crlb_for_several_emitters_with_nuisance_parameters(capsys):
    status, out, _ = run_cli(
        capsys,
        "crlb",
        "--task",
        "paper",
        "--x",
        "5",
        "9.6",
        "--y",
        "9",
        "9",
        "--fit-intensity",
        "--fit-background",
        "--json",
    )
    data = json.loads(out)
    assert status == 0 and len(data["emitters"]) == 2 and data["fit_background"]


def _map_file(tmp_path, name, arr):
    path = tmp_path / name
    np.save(path, arr)
    return str(path)


BAD_INPUTS = [
    (
        ["simulate", "--task", "isolated", "--frames", "-3", "--seed", "0", "--out", "x.npz"],
        "argument --frames: must be an integer >= 1 (got -3)",
    ),
    (
        ["simulate", "--task", "isolated", "--frames", "2", "--seed", "-1", "--out", "x.npz"],
        "argument --seed",
    ),
    (
        [
            "simulate",
            "--task",
            "isolated",
            "--frames",
            "2",
            "--seed",
            "0",
            "--out",
            "x.npz",
            "--set",
            "i0=-200",
        ],
        "argument prior.i0: must be in (0, 1.67772e+07] (got -200)",
    ),
    (
        [
            "simulate",
            "--task",
            "isolated",
            "--frames",
            "2",
            "--seed",
            "0",
            "--out",
            "x.npz",
            "--set",
            "sigma_psf=0",
        ],
        "argument optics.sigma_psf: must be in (0, 50] (got 0)",
    ),
    (
        [
            "simulate",
            "--task",
            "isolated",
            "--frames",
            "2",
            "--seed",
            "0",
            "--out",
            "x.npz",
            "--set",
            "sigma_kde=-1.5",
        ],
        "argument optics.sigma_kde",
    ),
    (
        ["simulate", "--task", "crowded", "--frames", "2", "--seed", "0", "--out", "x.npz"],
        "argument --task: unknown task 'crowded'",
    ),
    (
        ["simulate", "--task", "isolated", "--frames", "2", "--seed", "0", "--out", "x.txt"],
        "argument --out: must end in .npz",
    ),
    (
        [
            "simulate",
            "--task",
            "isolated",
            "--frames",
            "2",
            "--seed",
            "0",
            "--out",
            "x.npz",
            "--set",
            "gain={nan_map}",
        ],
        "argument camera.gain: map has a non-finite value at (row, col) = (2, 2)",
    ),
    (
        [
            "simulate",
            "--task",
            "isolated",
            "--frames",
            "2",
            "--seed",
            "0",
            "--out",
            "x.npz",
            "--set",
            "offset={small_map}",
        ],
        "argument camera.offset: map must have the frame's shape",
    ),
    (
        ["crlb", "--task", "isolated", "--x", "25", "--y", "3"],
        "argument --x: emitter 0 at x = 25 lies outside the frame [-0.5, 19.5] LR px",
    ),
    (["crlb", "--task", "isolated", "--x", "3", "--y", "nan"], "argument --y: must be finite"),
    (["crlb", "--task", "isolated", "--x", "3", "4", "--y", "3"], "argument --y: needs one value"),
    (["study", "no-such-study"], "argument NAME: unknown study 'no-such-study'"),
    (["study", "forward-model", "--preset", "huge"], "argument --preset: must be one of"),
]


@pytest.mark.parametrize(
    "argv, message", BAD_INPUTS, ids=[" ".join(a[:1] + [m[:30]]) for a, m in BAD_INPUTS]
)
def test_bad_input_exits_nonzero_with_one_line_naming_the_argument(
    tmp_path, capsys, monkeypatch, argv, message
):
    monkeypatch.chdir(tmp_path)
    nan_map = np.ones((20, 20))
    nan_map[2, 2] = np.nan
    files = {
        "nan_map": _map_file(tmp_path, "nan.npy", nan_map),
        "small_map": _map_file(tmp_path, "small.npy", np.ones((5, 5))),
    }
    argv = [a.format(**files) for a in argv]
    status, out, err = run_cli(capsys, *argv)
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert message in lines[0]
    assert "Traceback" not in err and out == ""
    assert not (tmp_path / "x.npz").exists()


def test_console_script_reports_errors_in_one_line_without_traceback(tmp_path):
    exe = shutil.which("bayes-smlm") or str(
        __import__("pathlib").Path(sys.executable).parent / "bayes-smlm"
    )
    proc = subprocess.run(
        [
            exe,
            "simulate",
            "--task",
            "isolated",
            "--frames",
            "2",
            "--seed",
            "0",
            "--out",
            str(tmp_path / "a.npz"),
            "--set",
            "readout_var=-5",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "bayes-smlm simulate: error: argument camera.readout_var: "
        "must be in [0, 1.67772e+07] (got -5)"
    )
    proc = subprocess.run(
        [exe, "crlb", "--task", "isolated", "--x", "9", "--y", "9", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and json.loads(proc.stdout)["sqrt_crlb_y_px"] == pytest.approx(
        0.0956, abs=5e-4
    )


def test_tasks_lists_and_shows(capsys):
    status, out, _ = run_cli(capsys, "tasks")
    assert status == 0 and "isolated" in out and "paper" in out
    status, out, _ = run_cli(capsys, "tasks", "--show", "paper")
    assert json.loads(out)["prior"]["n_emitters"] == 10


def test_importing_the_command_line_leaves_jax_unimported():
    """The CLI sets XLA's host devices and the compilation cache before JAX loads; a module that
    imports JAX at import time anywhere under the CLI's imports silently turns both off."""
    code = "import sys, bayes_smlm, bayes_smlm.cli.main; print('jax' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "False", done.stderr


def test_the_console_script_keeps_compiled_samplers_in_its_cache(tmp_path):
    """`bayes-smlm` turns JAX's persistent compilation cache on (BAYES_SMLM_JAX_CACHE), so a
    later run of the same sampler does not compile it again; `off` turns it off."""
    exe = shutil.which("bayes-smlm") or str(
        __import__("pathlib").Path(sys.executable).parent / "bayes-smlm"
    )
    npz = tmp_path / "f.npz"
    subprocess.run(
        [exe, "simulate", "--task", "isolated", "--frames", "2", "--seed", "0", "--out", str(npz)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    for setting, cache in (("on", tmp_path / "cache"), ("off", None)):
        env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
        env["BAYES_SMLM_JAX_CACHE"] = str(cache) if cache else "off"
        # JAX keeps only programs that took ≥ 1 s to compile; laplace's take less on one emitter
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        proc = subprocess.run(
            [
                exe,
                "posterior",
                str(npz),
                "--method",
                "laplace",
                "--quiet",
                "--out",
                str(tmp_path / f"{setting}.nc"),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
    assert any((tmp_path / "cache").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "f.npz", "off.nc", "on.nc"]
