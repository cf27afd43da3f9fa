"""The example plug-in package (``examples/plugin-method``), installed as pip installs it — its
metadata and entry point on the path, nothing of it in the tree — runs through ``posterior``,
the Dask path and the calibration smoke, and is the posterior it says it is."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from test_cli import assert_one_line_error, run_cli
from test_cluster import assert_same_posterior

from bayes_smlm.forward.simulate import simulate
from bayes_smlm.forward.tasks import get_task
from bayes_smlm.io.posteriors import load_posterior
from bayes_smlm.methods import registry

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "plugin-method"


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """The example as ``pip install`` leaves it: a ``.dist-info`` whose ``entry_points.txt`` is
    written from the example's own ``pyproject.toml``, and its module on the path (for Dask
    workers too, through PYTHONPATH)."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    info = tmp_path / "site" / f"bayes_smlm_laplace_t-{project['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    lines = [
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items())
        for group, entries in project["entry-points"].items()
    ]
    (info / "entry_points.txt").write_text("\n".join(lines))
    paths = [str(tmp_path / "site"), str(EXAMPLE)]
    for path in reversed(paths):
        monkeypatch.syspath_prepend(path)
    monkeypatch.setenv("PYTHONPATH", ":".join(paths + sys.path))
    monkeypatch.setattr(registry, "_ENTRY_POINTS_LOADED", False)
    monkeypatch.setattr(registry, "_PLUGINS", {})
    monkeypatch.setattr(registry, "_BROKEN", {})
    yield
    registry.unregister_method("laplace_t")
    sys.modules.pop("bayes_smlm_laplace_t", None)


def test_the_example_plugin_runs_through_posterior_and_the_dask_path(
    installed, frames_file, tmp_path, capsys
):
    assert "laplace_t" in registry.list_methods()
    args = [
        "posterior",
        str(frames_file),
        "--method",
        "laplace_t",
        "--draws",
        "200",
        "--seed",
        "2",
        "--quiet",
    ]
    status, _, err = run_cli(capsys, *args, "--out", str(tmp_path / "one.nc"))
    assert status == 0, err
    one = load_posterior(tmp_path / "one.nc")
    assert one.attrs["method"] == "laplace_t" and one["posterior"]["theta"].shape[:2] == (4, 200)
    status, out, err = run_cli(
        capsys,
        *args,
        "--scheduler",
        "local:1",
        "--chunk-frames",
        "1",
        "--out",
        str(tmp_path / "two.zarr"),
    )
    assert status == 0, err
    assert_same_posterior(one, load_posterior(tmp_path / "two.zarr"))


def test_the_example_plugin_draws_a_student_t(installed):
    """Away from the disc edge, t_ν(m, Σ)'s position variance is ν/(ν − 2) times the Laplace
    Gaussian's: 4/3 at ν = 8. With 4000 draws a frame (excess kurtosis 1.5: SE of a variance
    ≈ √(3.5/4000) = 3 %) the median over 6 frames and 2 axes is within 0.1 of it, and large ν
    gives the Gaussian back."""
    task = get_task("isolated")
    adu = simulate(task, 6, seed=31).adu
    method = registry.get_method("laplace_t")
    gaussian = registry.get_method("laplace")(task, adu, seed=1, draws=1000)
    t8 = method(task, adu, seed=1, draws=1000, nu=8.0)
    t_wide = method(task, adu, seed=1, draws=1000, nu=1e6)
    var = {
        name: r.theta_flat().var(axis=1)[:, 0]
        for name, r in (("gauss", gaussian), ("t8", t8), ("wide", t_wide))
    }  # (F, 2)
    assert abs(np.median(var["t8"] / var["gauss"]) - 8 / 6) < 0.1
    assert abs(np.median(var["wide"] / var["gauss"]) - 1) < 0.1
    with pytest.raises(Exception, match="nu.*must be > 2"):
        method(task, adu, nu=2.0)


@pytest.mark.slow  # the calibration study's smoke preset with every method, minutes
def test_the_calibration_smoke_runs_the_example_plugin(installed, tmp_path, capsys):
    import json

    from bayes_smlm.cli.main import main

    assert main(["study", "calibration", "--preset", "smoke", "--out", str(tmp_path / "c")]) == 0
    metrics = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert "laplace_t" in metrics["methods"]


def test_methods_lists_the_plugin_and_option_hands_it_its_own_options(
    installed, frames_file, tmp_path, capsys
):
    status, listed, _ = run_cli(capsys, "methods")
    assert status == 0 and "laplace_t" in listed and "nuts" in listed
    status, shown, _ = run_cli(capsys, "methods", "--show", "laplace_t")
    options = shown.split("options (")[1].split("\n\n")[0]
    assert status == 0 and "nu = 4.0" in options and "theta_true" not in options
    # its own declaration (describe_method), its option's help from its docstring
    assert "flags a frame when: no converged mode" in shown and "Degrees of freedom" in options
    out = tmp_path / "t8.nc"
    status, _, err = run_cli(
        capsys,
        "posterior",
        str(frames_file),
        "--method",
        "laplace_t",
        "--option",
        "nu=8",
        "--draws",
        "100",
        "--quiet",
        "--out",
        str(out),
    )
    assert status == 0, err
    assert '"nu": 8.0' in load_posterior(out).attrs["settings"]
    for option, words in (
        ("nu=1", ("nu", "must be > 2")),
        ("nus=8", ("nus",)),
        ("8", ("--option", "KEY=VALUE")),
        ("draws=5", ("draws", "twice")),
    ):
        status, _, err = run_cli(
            capsys,
            "posterior",
            str(frames_file),
            "--method",
            "laplace_t",
            "--option",
            option,
            "--draws",
            "100",
            "--quiet",
            "--out",
            str(tmp_path / "bad.nc"),
        )
        assert_one_line_error(status, err, *words)
    assert not (tmp_path / "bad.nc").exists()
