"""Studies run end to end under the smoke preset and write sensible reports."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from bayes_smlm.cli.main import main


def study(*argv: str) -> str:
    """``bayes-smlm study ARGV`` in a fresh process, as a user runs it; its stdout. The slow
    studies compile hundreds of XLA programs each: in one pytest process that had compiled
    those of every slow test before, XLA:CPU aborted while serializing a program for the
    compilation cache (SIGSEGV in CI, SIGABRT here; never in a fresh process), so each study
    gets its own (the compilation cache folder stays shared through the environment)."""
    done = subprocess.run(
        [sys.executable, "-m", "bayes_smlm.cli.main", "study", *argv],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


def test_forward_model_study_writes_report_figure_and_metrics(tmp_path, capsys):
    out = tmp_path / "fm"
    assert (
        main(["study", "forward-model", "--preset", "smoke", "--seed", "1", "--out", str(out)]) == 0
    )
    report = (out / "report.md").read_text()
    assert "![frames](frames.png)" in report and "Mortensen" in report
    assert (out / "frames.png").stat().st_size > 10_000
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["max_abs_ratio_error"] < 0.02
    rows = metrics["crlb_vs_mortensen"]
    default = [r for r in rows if r["i0"] == 200 and r["background"] == 0 and r["readout_var"] == 5]
    assert abs(default[0]["sqrt_crlb_px"] - 0.0955) < 5e-4
    assert metrics["camera_moments"]["max_abs_z_mean"] < 5
    assert metrics["provenance"]["seed"] == 1 and metrics["provenance"]["preset"] == "smoke"
    config = json.loads((out / "config.json").read_text())
    assert config["tasks"]["paper"]["prior"]["n_emitters"] == 10


def test_studies_run_as_a_module_with_one_line_errors(tmp_path, capsys):
    # the module entry point parses and reports errors as the CLI does, then calls the same
    # run_study as `bayes-smlm study` (whose runs the other tests of this file check)
    from bayes_smlm.studies.registry import run_as_script

    with pytest.raises(SystemExit) as exit_info:
        run_as_script(["forward-model", "--preset", "huge"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "argument --preset: must be one of" in err
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "bayes_smlm.studies", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "forward-model" in proc.stdout


@pytest.mark.slow
def test_paper_diagnostics_smoke_reports_per_frame_diagnostics(tmp_path, capsys):
    out = tmp_path / "pd"
    study("paper-diagnostics", "--preset", "smoke", "--out", str(out))
    metrics = json.loads((out / "metrics.json").read_text())
    per_frame = metrics["per_frame"]["nuts"]
    assert len(per_frame["rhat_max"]) == 2 and len(metrics["min_separation"]) == 2
    # the summary's pass rate is the share of the frames whose diagnostics passed
    assert metrics["summary"][0]["pass_rate"] == pytest.approx(np.mean(per_frame["passed"]))
    assert (out / "nuts.nc").stat().st_size > 0
    assert "## Per frame" in (out / "report.md").read_text()


@pytest.mark.slow
def test_phi_smoke_reports_metrics_of_both_shipped_checkpoints_and_speed(tmp_path, capsys):
    out = tmp_path / "phi"
    study("phi", "--preset", "smoke", "--out", str(out))
    metrics = json.loads((out / "metrics.json").read_text())
    for task in ("isolated", "paper"):
        rows = metrics[task]["evaluation"]["rows"]
        assert {r["source"] for r in rows} == {"phi", "true KDE"}
        # φ finds most emitters (isolated: every one; paper: 0.86-0.87 on the shipped report's
        # frames, the true KDE's peaks 0.90-0.93), precision near 1
        floor = 0.95 if task == "isolated" else 0.7
        assert all(floor <= r["recall"] <= 1.0 and r["precision"] >= 0.9 for r in rows), rows
    assert metrics["isolated"]["evaluation"]["sqrt_crlb_px"] > 0.09
    assert [r["unit"] for r in metrics["speed"]] == ["frames/s"] * 3 + ["steps/s"]
    report = (out / "report.md").read_text()
    assert "true KDE" in report and "frames/s" in report


def _toy_centroid(task, adu, *, seed=0, chains=4, draws=1000, progress=False, **options):
    """A user's method: Gaussian draws around the photon centroid (deliberately crude)."""
    from bayes_smlm.methods.pushforward import kde_moments
    from bayes_smlm.methods.result import PosteriorResult

    rng = np.random.default_rng(seed)
    signal = np.clip(adu - task.camera.offset, 0, None)
    ys, xs = np.mgrid[: adu.shape[1], : adu.shape[2]]
    centre = np.stack([(signal * xs).sum((1, 2)), (signal * ys).sum((1, 2))], -1)
    centre /= signal.sum((1, 2))[:, None]
    theta = centre[None, None, :, None, :] + rng.normal(0, 0.2, (chains, draws, len(adu), 1, 2))
    flat = np.moveaxis(theta, 2, 0).reshape(len(adu), -1, 1, 2)
    mean, var = kde_moments(flat, task)
    return PosteriorResult(
        method="toy_centroid",
        task=task,
        adu=adu,
        kde_mean=mean,
        kde_var=var,
        theta=theta.astype(np.float32),
        seconds=0.01,
    )


@pytest.fixture(scope="module")
def calibration_smoke(tmp_path_factory):
    from bayes_smlm.methods import register_method, unregister_method

    out = tmp_path_factory.mktemp("calibration")
    register_method("toy_centroid")(_toy_centroid)
    try:
        assert main(["study", "calibration", "--preset", "smoke", "--out", str(out)]) == 0
    finally:
        unregister_method("toy_centroid")
    return out


@pytest.mark.slow
def test_calibration_smoke_compares_every_method_with_sane_numbers(calibration_smoke):
    out = calibration_smoke
    metrics = json.loads((out / "metrics.json").read_text())
    methods = metrics["methods"]
    assert {
        "grid",
        "nuts",
        "chees",
        "rwmh",
        "rwmh_paper",
        "laplace",
        "npe",
        "ddpm",
        "toy_centroid",
    } <= set(methods)
    s = {name: m["scalars"] for name, m in methods.items()}
    # exact methods agree with the exact reference (6 frames × 400 draws: loose but failing bars)
    assert 0.8 < s["nuts"]["var_ratio_median"] < 1.25 and s["nuts"]["var_pearson_median"] > 0.95
    assert 0.8 < s["nuts"]["sd_ratio_x"] < 1.25
    # the published sampler of p(θ|x)^0.2 is √5 ≈ 2.24 times too wide
    assert 1.8 < s["rwmh_paper"]["sd_ratio_x"] < 2.7 and 1.8 < s["rwmh_paper"]["sd_ratio_y"] < 2.7
    assert s["rwmh_paper"]["kde_entropy_above_reference"] == 1.0
    assert s["laplace"]["var_pearson_median"] > 0.95  # the Gaussian at the mode is near exact
    for name in ("grid", "nuts", "rwmh", "rwmh_paper", "laplace", "npe", "toy_centroid"):
        for key in (
            "kde_coverage_90",
            "z_sd",
            "sbc_min_pvalue",
            "rhat_max",
            "ess_bulk_min",
            "theta_entropy_knn_median",
            "rmse_ratio_x",
            "seconds_per_frame",
        ):
            assert np.isfinite(s[name][key]), (name, key)
    assert s["ddpm"]["frames"] == 2 and "kde_coverage_90" in s["ddpm"]
    assert "sd_ratio_x" not in s["ddpm"]  # no θ draws: no θ metrics, and no made-up ones
    from bayes_smlm.compare.schema import SCALARS

    assert all(set(scalars) <= set(SCALARS) for scalars in s.values())  # one declared schema
    assert np.all(np.isfinite(metrics["phi_log"]["rmse_ratio"]))
    assert {r["method"] for r in metrics["cost_by_emitters"]} == {"nuts", "chees", "ddpm"}
    report = (out / "report.md").read_text()
    assert "toy_centroid" in report and "## Where the surrogates agree" in report
    ranking = report.split("### Ranking by calibration and cost")[1].split("###")[0]
    assert all(f"| {name} |" in ranking for name in s if name != "grid")
    for figure in ("maps.png", "sbc_ranks.png", "coverage.png", "z_scores.png", "cost.png"):
        assert f"]({figure})" in report and (out / figure).stat().st_size > 5_000
    config = json.loads((out / "config.json").read_text())
    assert config["study"] == "calibration" and config["preset"] == "smoke"
    assert (out / "posteriors" / "nuts.nc").is_file()


@pytest.mark.slow
def test_report_rebuilds_from_saved_results_without_recomputing(calibration_smoke, capsys):
    out = calibration_smoke
    before = (out / "report.md").read_text()
    (out / "report.md").unlink()
    (out / "maps.png").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").read_text() == before
    assert (out / "maps.png").is_file()


def test_report_of_a_folder_that_is_not_a_study_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["report", str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "config.json not found" in err and "Traceback" not in err


@pytest.mark.slow
def test_localization_smoke_reports_phi_against_crlb(tmp_path, capsys):
    out = tmp_path / "loc"
    study("localization", "--preset", "smoke", "--out", str(out))
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    assert {(r["task"], r["i0"]) for r in rows} == {
        (t, i) for t in ("isolated", "paper") for i in (200.0, 1000.0)
    }
    iso = {r["i0"]: r for r in rows if r["task"] == "isolated"}
    assert iso[200.0]["recall"] == 1.0 and 0.5 < iso[200.0]["rmse_ratio_x"] < 2.0
    assert iso[1000.0]["sqrt_crlb_nm"] < iso[200.0]["sqrt_crlb_nm"]  # more photons, lower bound
    assert (out / "rmse_vs_crlb.png").is_file()


@pytest.mark.slow
def test_isolated_emitter_smoke_shows_the_tempering_inflation(tmp_path, capsys):
    out = tmp_path / "iso"
    study("isolated-emitter", "--preset", "smoke", "--out", str(out))
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    paper = [r for r in rows if r["method"] == "rwmh_paper"][0]
    assert 1.6 < paper["sd_ratio_x"] < 3.0 and 1.6 < paper["sd_ratio_y"] < 3.0
    assert (out / "draws.png").is_file() and (out / "maps.png").is_file()


@pytest.mark.slow
def test_ddpm_uncertainty_smoke_writes_both_starts(tmp_path, capsys):
    out = tmp_path / "ddu"
    study("ddpm-uncertainty", "--preset", "smoke", "--out", str(out))
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    assert {r["start"] for r in rows} == {"noise", "guess"}
    assert all(np.isfinite(r["pearson"]) and r["summed_ratio"] > 0 for r in rows)
    assert "![SD maps](sd_maps.png)" in (out / "report.md").read_text()


@pytest.mark.slow
def test_comparison_dataset_is_method_by_frame(calibration_smoke):
    from bayes_smlm.compare import comparison_dataset

    ds = comparison_dataset(json.loads((calibration_smoke / "metrics.json").read_text()))
    assert ds.attrs["reference"] == "grid" and "ddpm" in ds["posterior_method"].values
    assert ds["var_pearson"].dims == ("posterior_method", "frame") and ds.sizes["frame"] == 6
    ddpm = ds["var_pearson"].sel(posterior_method="ddpm").values
    assert np.isfinite(ddpm[:2]).all() and np.isnan(ddpm[2:]).all()  # ran 2 frames only
    assert float(ds["var_pearson"].sel(posterior_method="grid").min()) == pytest.approx(1.0)


@pytest.mark.slow
def test_studies_reproduce_their_numbers_with_the_same_seed(tmp_path, capsys):
    rows = []
    for run in ("a", "b"):
        out = tmp_path / run
        study("localization", "--preset", "smoke", "--seed", "3", "--out", str(out))
        rows.append(json.loads((out / "metrics.json").read_text())["rows"])
    assert rows[0] == rows[1]


@pytest.mark.slow
def test_calibration_on_the_paper_task_scores_every_frame_against_smc(tmp_path, capsys):
    out = tmp_path / "cal-paper"
    study("calibration", "--task", "paper", "--preset", "smoke", "--out", str(out))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["reference"] == "smc" and "grid" in metrics["failures"]
    flagged = metrics["reference_flagged"]
    assert flagged == {"frames": 0, "of": 4, "indices": []}  # the reference drops no frame
    smc = metrics["methods"]["smc"]["scalars"]
    assert smc["signal_ratio_median"] == pytest.approx(1.0)
    assert smc["reference_background_floor_median"] < 1e-3
    assert {"1", "2", ">=3"} & set(smc["by_crowding"])
    assert set(smc["by_separation"]) - {"attained"} <= {"<0.5", "0.5-1", "1-2", ">=2"}
    nuts = metrics["methods"]["nuts"]["scalars"]
    assert 0.8 < nuts["signal_ratio_median"] < 1.25  # two exact samplers agree
    hard = metrics["hard_frames"]
    assert hard["sampler"] == "nuts" and all(r["scored"] for r in hard["rows"])
    assert {"ddpm", "ddpm-recal"} <= set(metrics["methods"])
    report = (out / "report.md").read_text()
    assert "(`paper` task)" in report and "Calibration by crowding" in report
    assert "0 of 4 frames failed its own checks" in report
    assert "Calibration by separation" in report
    assert "Surrogate bars against `smc`" in report and "ddpm-recal" in report
    config = json.loads((out / "config.json").read_text())
    assert config["task_name"] == "paper"


@pytest.mark.slow
def test_ddpm_studies_take_a_task_and_other_studies_refuse_it(tmp_path, capsys):
    out = tmp_path / "dc"
    study("ddpm-check", "--task", "paper", "--preset", "smoke", "--out", str(out))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["reference"] == "smc" and "signal_ratio" in metrics["rows"][1]
    assert "(`paper`)" in (out / "report.md").read_text()
    out = tmp_path / "du"
    study("ddpm-uncertainty", "--task", "paper", "--preset", "smoke", "--out", str(out))
    assert "`paper` frames" in (out / "report.md").read_text()
    from test_cli import run_cli

    status, _, err = run_cli(capsys, "study", "phi", "--task", "paper", "--preset", "smoke")
    assert status == 2 and "--task" in err and len(err.strip().splitlines()) == 1
    status, _, err = run_cli(capsys, "study", "calibration", "--task", "nope", "--preset", "smoke")
    assert status == 2 and "nope" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_movie_study_localizes_renders_and_scores_both_movies(tmp_path, capsys):
    out = tmp_path / "movie"
    study("movie", "--preset", "smoke", "--out", str(out))
    metrics = json.loads((out / "metrics.json").read_text())
    nuts, laplace = "sparse, 3 frames, nuts", "sparse, 3 frames, laplace"
    assert set(metrics["movies"]) == {
        "sparse",
        "crowded",
        "crowded-separate",
        "crowded-bg30",
        "dim",
        "wide-psf",
        "sparse, camera calibrated",
        "sparse, camera calibrated-exact-gain",
        "sparse, camera means",
        "sparse, camera from-movie",
        "dim, φ detector",
        "crowded, φ detector",
        nuts,
        laplace,
    }
    errors = metrics["movies"]["sparse, camera calibrated"]["calibration_errors"]
    # 200 dark and 5 × 100 flat frames: median errors ≈ 0.1 ADU, 4.3 % and 6.8 % (per pixel)
    assert errors["offset_adu"] < 0.5 and errors["gain_relative"] < 0.06
    assert errors["readout_var_relative"] < 0.09
    # what calibrate-camera prints for --gain-se: the RMS relative SE, ≈ 6.4 % at these counts
    assert 0.05 < errors["gain_se"] < 0.08
    # NUTS per window: every localization passes its diagnostics on these bright spots
    assert metrics["movies"][nuts]["diagnostics_pass_rate"] == 1.0
    assert metrics["movies"][nuts]["matched"] == metrics["movies"][laplace]["matched"]
    sparse = metrics["movies"]["sparse"]
    assert sparse["precision"] >= 0.95 and sparse["recall"] >= 0.95
    # joint fits find more of the crowded emitters than fitting each spot alone
    assert metrics["movies"]["crowded"]["recall"] > metrics["movies"]["crowded-separate"]["recall"]
    for name in ("sparse", "crowded"):
        assert (out / f"render-{name}" / "sd.png").stat().st_size > 0
        assert 0.5 < metrics["sd_maps"][name]["z_sd"] < 2.0
        assert 0.5 < metrics["sd_maps"][name]["expected"]["z_sd"] < 2.0
    # the misfit test catches a PSF wider than the model's more often than the model's own
    assert metrics["movies"]["wide-psf"]["misfit_fraction"] > sparse["misfit_fraction"]
    assert not list(out.rglob("*.tif")), "the study keeps no movies or float images"
    assert "/tmp" not in (out / "report.md").read_text()
