"""Studies run end to end under the smoke preset and write sensible reports."""

from __future__ import annotations

import json

from bayes_smlm.cli import main


def test_forward_model_study_writes_report_figure_and_metrics(tmp_path, capsys):
    out = tmp_path / "fm"
    assert main(["study", "forward-model", "--preset", "smoke", "--seed", "1", "--out", str(out)]) == 0
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


def test_study_script_main_runs_as_a_script(tmp_path, capsys):
    from bayes_smlm.studies import forward_model
    assert forward_model.main(["--preset", "smoke", "--out", str(tmp_path / "s")]) == 0
    assert "wrote" in capsys.readouterr().out


def test_bench_exact_smoke_writes_ess_and_wall_tables(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["study", "bench-exact", "--preset", "smoke", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["method"] for r in metrics["ess"]] == ["rwmh", "rwmh_paper", "nuts"]
    assert all(r["ess_per_second"] > 0 for r in metrics["ess"])
    assert {w["method"] for w in metrics["wall"]} == {"nuts", "grid"}
    assert "ESS per second" in (out / "report.md").read_text()


def test_paper_diagnostics_smoke_reports_per_frame_diagnostics(tmp_path, capsys):
    out = tmp_path / "pd"
    assert main(["study", "paper-diagnostics", "--preset", "smoke", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    per_frame = metrics["per_frame"]["nuts"]
    assert len(per_frame["rhat_max"]) == 2 and len(metrics["min_separation"]) == 2
    assert 0.0 <= metrics["summary"][0]["pass_rate"] <= 1.0
    assert (out / "nuts.nc").stat().st_size > 0
    assert "## Per frame" in (out / "report.md").read_text()


def test_phi_smoke_reports_metrics_of_both_shipped_checkpoints_and_speed(tmp_path, capsys):
    out = tmp_path / "phi"
    assert main(["study", "phi", "--preset", "smoke", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for task in ("isolated", "paper"):
        rows = metrics[task]["evaluation"]["rows"]
        assert {r["source"] for r in rows} == {"phi", "true KDE"}
        assert all(0.0 <= r["recall"] <= 1.0 for r in rows)
    assert metrics["isolated"]["evaluation"]["sqrt_crlb_px"] > 0.09
    assert [r["unit"] for r in metrics["speed"]] == ["frames/s"] * 3 + ["steps/s"]
    report = (out / "report.md").read_text()
    assert "true KDE" in report and "frames/s" in report
