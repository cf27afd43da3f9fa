"""The ``validity-map`` study: where each cheap posterior stops being trustworthy over photons ×
density, scored against SMC, the same numbers in worker processes, and its words from its cells."""

from __future__ import annotations

import json

import pytest
from test_studies import study

from bayes_smlm.cli.main import main


@pytest.mark.slow
def test_validity_map_smoke_scores_every_cell_against_smc(tmp_path, capsys):
    out = tmp_path / "vm"
    study("validity-map", "--preset", "smoke", "--out", str(out))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["reference"] == "smc" and len(metrics["cells"]) == 4
    for cell in metrics["cells"]:
        smc = cell["methods"]["smc"]
        assert smc["coverage_gap"] == 0 and smc["z_sd_ratio"] == 1  # the reference itself
        assert 0 <= smc["p_true_count"] <= 1
        assert cell["counts"] == list(range(max(0, cell["emitters"] - 1), cell["emitters"] + 2))
        assert cell["frames"] == {1: 4, 3: 2}[cell["emitters"]]  # ≥ 4 emitters a cell
        for name in ("laplace", "auto"):
            assert 0 <= cell["methods"][name]["p_true_count"] <= 1
            by_separation = cell["methods"][name]["p_true_by_separation"]
            assert sum(frames for _, frames in by_separation.values()) == cell["frames"]
        assert cell["methods"]["nuts"]["p_true_count"] is None  # told the count
    report = (out / "report.md").read_text()
    assert "![validity map](validity_map.png)" in report and (out / "validity_map.png").is_file()
    assert "## What the numbers say" in report and "- **auto** — calibrated in" in report
    assert "closest pair >=2 σ_psf" in report  # one-emitter frames at least
    before = report
    assert main(["report", str(out)]) == 0  # rebuilt from the files
    assert (out / "report.md").read_text() == before


@pytest.mark.slow
def test_validity_map_cells_in_worker_processes_give_the_same_numbers(tmp_path, monkeypatch):
    from bayes_smlm.studies import validity_map

    tiny = {
        "photons": [2000],
        "emitters": [1, 2],
        "background": 3.0,
        "frames": 2,
        "min_emitters": 2,
        "count_window": 1,
        "chains": 2,
        "draws": 100,
        "smc_draws": 64,
        "kde_samples": 8,
        "methods": ["laplace"],
        "max_emitters": {},
    }
    monkeypatch.setitem(validity_map.PRESETS, "tiny", tiny)
    monkeypatch.setenv("BAYES_SMLM_CACHE", "off")  # both runs compute their reference
    found = []
    for workers in (1, 2):
        monkeypatch.setitem(tiny, "workers", workers)
        validity_map.run("tiny", out=tmp_path / str(workers))
        cells = json.loads((tmp_path / str(workers) / "metrics.json").read_text())["cells"]
        for cell in cells:
            for scores in cell["methods"].values():
                scores.pop("seconds_per_frame")
        found.append(cells)
    assert found[0] == found[1] and len(found[0]) == 2


def test_validity_map_words_follow_the_cells():
    from bayes_smlm.studies.validity_map_report import count_words, where_words

    settings = {"photons": [50, 200, 2000], "emitters": [1, 10]}

    def cell(photons, emitters, calibrated, p=1.0):
        m = {"calibrated": calibrated, "p_true_count": p, "seconds_per_frame": 0.5}
        return {"photons": photons, "emitters": emitters, "methods": {"laplace": m, "smc": m}}

    metrics = {
        "cells": [
            cell(50, 1, False, 0.6),
            cell(200, 1, True),
            cell(2000, 1, True),
            cell(50, 10, True),
            cell(200, 10, False),
            cell(2000, 10, False),
        ]
    }
    (line,) = where_words(metrics, settings, ["laplace"])
    assert "calibrated in 3 of 6 cells" in line
    assert "1 emitters: calibrated from 200 photons up" in line
    assert "10 emitters: not calibrated at 2000 photons" in line
    words = count_words(metrics, settings, "smc")
    assert "50 photons × 1 emitters (P = 0.60)" in words and "0.50–0.50 s/frame" in words


def test_validity_map_pools_p_n_by_separation_over_cells():
    import numpy as np
    from bayes_smlm.studies.validity_map import p_true_by_separation
    from bayes_smlm.studies.validity_map_report import count_by_separation

    theta = np.array(
        [
            [[0, 0], [0.3, 0], [5, 5]],  # closest pair 0.3 px: < 0.5 σ at σ = 1
            [[0, 0], [3, 0], [9, 9]],
        ],
        float,
    )  # 3 px: ≥ 2 σ
    parts = p_true_by_separation(np.array([0.2, 0.9]), theta, 1.0)
    assert parts == {"<0.5": [0.2, 1], ">=2": [0.9, 1]}
    other = {">=2": [0.5, 1]}
    metrics = {
        "cells": [
            {"methods": {"smc": {"p_true_by_separation": parts}}},
            {"methods": {"smc": {"p_true_by_separation": other}}},
        ]
    }
    text = count_by_separation(metrics, ["smc", "nuts"])
    assert "0.200 (1)" in text and "0.700 (2)" in text and "nuts" not in text
