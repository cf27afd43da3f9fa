"""``bayes-smlm diagnose``: ArviZ plots of the right frame and emitters, and one-line refusals."""

import json

import numpy as np
import pytest
import xarray as xr
from scipy.spatial.distance import pdist, squareform
from test_cli import assert_one_line_error, run_cli

from bayes_smlm.errors import ConfigError
from bayes_smlm.io.posteriors import load_posterior
from bayes_smlm.reporting.diagnose import check_diagnosable, chosen_emitters, worst_frame

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    from bayes_smlm.cli.main import main

    folder = tmp_path_factory.mktemp("diagnose")
    assert (
        main(
            [
                "simulate",
                "--task",
                "paper",
                "--frames",
                "3",
                "--seed",
                "3",
                "--out",
                str(folder / "f.npz"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "posterior",
                str(folder / "f.npz"),
                "--method",
                "rwmh",
                "--quiet",
                "--out",
                str(folder / "r.nc"),
            ]
        )
        == 0
    )
    return folder


def test_diagnose_plots_the_worst_frame_and_its_closest_pair(sampled, capsys):
    status, stdout, err = run_cli(
        capsys, "diagnose", str(sampled / "r.nc"), "--out", str(sampled / "out")
    )
    assert status == 0, err
    tree = load_posterior(sampled / "r.nc")
    rhat = tree["diagnostics"]["rhat"].values  # frame, emitter, axis
    frame = int(np.argmax(np.nanmax(rhat.reshape(len(rhat), -1), axis=1)))
    means = tree["posterior"]["theta"].isel(frame=frame).values.mean(axis=(0, 1))
    distance = squareform(pdist(means))
    np.fill_diagonal(distance, np.inf)
    pair = sorted(np.unravel_index(np.argmin(distance), distance.shape))
    summary = json.loads((sampled / "out" / "diagnose.json").read_text())
    assert summary["frame"] == frame and summary["closest_pair"] == [int(i) for i in pair]
    assert summary["worst_rhat_emitter"] == int(np.argmax(rhat[frame].max(axis=1)))
    worst = f"x{summary['worst_rhat_emitter']}"
    assert summary["coordinates"][worst]["rhat"] == pytest.approx(
        float(rhat[frame, summary["worst_rhat_emitter"], 0])
    )
    for name in summary["plots"]:
        assert (sampled / "out" / name).read_bytes()[:8] == PNG
    assert f"frame {frame}" in stdout


def test_diagnose_takes_the_frame_asked_for_and_refuses_one_out_of_range(sampled, capsys):
    status, _, err = run_cli(
        capsys, "diagnose", str(sampled / "r.nc"), "--frame", "0", "--out", str(sampled / "first")
    )
    assert status == 0, err
    assert json.loads((sampled / "first" / "diagnose.json").read_text())["frame"] == 0
    status, _, err = run_cli(
        capsys, "diagnose", str(sampled / "r.nc"), "--frame", "3", "--out", str(sampled / "none")
    )
    assert_one_line_error(status, err, "--frame", "[0, 2]")
    assert not (sampled / "none").exists()


def test_diagnose_refuses_results_without_chains_of_draws(sampled):
    tree = load_posterior(sampled / "r.nc")
    moments_only = xr.DataTree.from_dict(
        {
            name: tree[name].to_dataset()
            for name in tree.children
            if name not in ("posterior", "diagnostics")
        }
    )
    with pytest.raises(ConfigError, match="no posterior draws"):
        check_diagnosable(moments_only, None, sampled / "ddpm.nc")
    one_chain = tree.copy()
    one_chain["posterior"] = tree["posterior"].to_dataset().isel(chain=[0])
    with pytest.raises(ConfigError, match="1 chain"):
        check_diagnosable(one_chain, None, sampled / "one.nc")


def test_worst_frame_breaks_ties_by_the_smallest_ess(sampled):
    tree = load_posterior(sampled / "r.nc").copy()
    diagnostics = tree["diagnostics"].to_dataset()
    diagnostics["rhat"] = xr.full_like(diagnostics["rhat"], 1.0)
    ess = np.full(diagnostics["ess_bulk"].shape, 1000.0)
    ess[2, 4, 1] = 50.0
    diagnostics["ess_bulk"] = (diagnostics["ess_bulk"].dims, ess)
    tree["diagnostics"] = diagnostics
    assert worst_frame(tree) == 2
    assert chosen_emitters(tree, 2)[1] == 0  # equal R-hat everywhere: the first emitter
