"""Region-aware scores, crowding, the spread recalibration and the training time budget."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bayes_smlm.compare.regions import (
    coverage_by_class,
    crowding,
    region_variance_scores,
    separation,
)
from bayes_smlm.errors import ConfigError
from bayes_smlm.surrogates.psi.recalibration import SpreadRecalibration, fit_spread_recalibration
from bayes_smlm.surrogates.settings import LoopSettings


def test_crowding_counts_emitters_within_two_lr_pixels_of_each_kde_pixel():
    theta = np.array([[[5.0, 5.0], [6.0, 5.0], [15.0, 15.0]]])  # (x, y), LR px
    count = crowding(theta, (80, 80), 4)
    # independent check: KDE pixel (r, c) is at LR ((c + 0.5)/4 − 0.5, (r + 0.5)/4 − 0.5)
    for r, c in [(21, 21), (21, 23), (30, 30), (61, 61), (0, 79), (21, 30)]:
        x, y = (c + 0.5) / 4 - 0.5, (r + 0.5) / 4 - 0.5
        expected = sum(math.hypot(x - tx, y - ty) <= 2.0 for tx, ty in theta[0])
        assert count[0, r, c] == expected
    assert count[0, 21, 23] == 2 and count[0, 61, 61] == 1 and count[0, 0, 79] == 0


def test_separation_classes_pixels_by_their_nearest_emitters_neighbour_distance():
    sigma = 1.0
    # a pair 0.3 σ apart, one emitter 1.5 σ from a third, and the third
    theta = np.array([[[5.0, 5.0], [5.3, 5.0], [15.0, 15.0], [16.5, 15.0]]])
    cls = separation(theta, (80, 80), 4, sigma)
    lr_to_hr = lambda x, y: (round(4 * (y + 0.5) - 0.5), round(4 * (x + 0.5) - 0.5))  # noqa: E731
    assert cls[0][lr_to_hr(5.0, 5.0)] == 0  # < 0.5 σ
    assert cls[0][lr_to_hr(15.0, 15.0)] == cls[0][lr_to_hr(16.5, 15.0)] == 2  # 1–2 σ
    lone = separation(theta[:, :1], (80, 80), 4, sigma)
    assert np.all(lone == 3)  # no neighbour: ≥ 2 σ


def test_region_scores_separate_signal_from_background():
    mean = np.zeros((1, 10, 10))
    mean[0, :5] = 0.5  # signal rows; rows 5.. background
    ref_var = np.where(mean > 0, 0.01, 0.0)
    var = np.where(mean > 0, 0.005, 0.0004)  # half the signal variance, SD floor 0.02
    s = region_variance_scores(var, ref_var, mean)
    assert s["signal_ratio"][0] == pytest.approx(0.5)
    assert s["background_floor"][0] == pytest.approx(0.02)
    assert s["reference_background_floor"][0] == 0.0
    assert s["background_share"][0] == pytest.approx(50 * 0.0004 / (50 * 0.0004 + 50 * 0.005))


def test_coverage_by_crowding_attains_the_order_statistic_level_for_exchangeable_draws():
    rng = np.random.default_rng(0)
    f, s, h, w = 40, 63, 8, 8
    draws = rng.normal(size=(f, s + 1, h, w))
    truth, samples = draws[:, 0], draws[:, 1:]  # truth exchangeable with the samples
    crowd = np.broadcast_to(np.arange(w) % 4, (f, h, w))  # classes 0, 1, 2, 3
    mask = np.ones((f, h, w), bool)
    out = coverage_by_class(iter(samples), truth, mask, {"crowd": (crowd, ("0", "1", "2", ">=3"))})[
        "crowd"
    ]
    attained = out["attained"]["coverage_90"]
    for cls in ("1", "2", ">=3"):
        n = out[cls]["pixels"]
        se = math.sqrt(attained * (1 - attained) / n)
        assert abs(out[cls]["coverage_90"] - attained) < 4 * se
    assert "0" in out and out["1"]["frames"] == f


def test_spread_recalibration_restores_the_variance_per_bin_and_keeps_the_mean():
    rng = np.random.default_rng(1)
    mean = np.concatenate([np.full(500, 0.001), np.full(500, 0.5)]).reshape(1, 10, 100)
    ref_var = np.where(mean > 0.1, 0.01, 0.0)
    var = np.where(mean > 0.1, 0.04, 1e-4)  # 4× too wide on signal, a floor on background
    recal = fit_spread_recalibration(mean, var, ref_var, {"frames": 1})
    scales = recal.scale_map(mean)
    assert np.allclose(scales[mean > 0.1], 0.5) and np.allclose(scales[mean < 0.01], 0.0)
    samples = (mean[:, None] + rng.normal(size=(1, 200, 10, 100)) * 0.2).astype(np.float32)
    fixed = recal.apply(samples)
    np.testing.assert_allclose(fixed.mean(axis=1), samples.mean(axis=1), atol=1e-6)
    ratio = fixed.var(axis=1) / samples.var(axis=1)
    assert np.allclose(ratio[mean > 0.1], 0.25, rtol=1e-4)
    assert SpreadRecalibration.from_dict(recal.to_dict()) == recal


def test_spread_recalibration_knows_its_sampler_and_reads_older_records_as_20_ddim_steps():
    table = {"edges": (0.1,), "sd_scale": (1.0, 0.5), "pixels": (100, 100)}
    fitted = SpreadRecalibration.from_dict({**table, "fitted_on": {"solver": "dpmpp", "steps": 8}})
    assert fitted.sampler == ("dpmpp", 8)
    older = SpreadRecalibration.from_dict({**table, "fitted_on": {"sampler": "20 DDIM steps"}})
    assert older.sampler == ("ddim", 20)


def test_spread_recalibration_refuses_a_malformed_table():
    with pytest.raises(ValueError, match="one entry per bin"):
        SpreadRecalibration(edges=(0.1,), sd_scale=(1.0,), pixels=(1,), fitted_on={})


def test_learning_rate_follows_the_time_budget_and_a_budget_stops_training(tmp_path):
    settings = LoopSettings(steps=10_000, warmup_steps=1, max_seconds=100.0, final_lr_fraction=0.0)
    assert settings.lr_at(10, elapsed=0.0) == pytest.approx(settings.lr, rel=1e-3)
    assert settings.lr_at(10, elapsed=50.0) == pytest.approx(0.5 * settings.lr, rel=1e-2)
    assert settings.lr_at(10, elapsed=200.0) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ConfigError, match="argument max_seconds"):
        LoopSettings(steps=10, max_seconds=float("nan"))

    from bayes_smlm.surrogates.training import train

    model = torch.nn.Linear(2, 1)
    x = torch.randn(64, 2)

    def batches(start):
        while True:
            yield x

    budget = LoopSettings(
        steps=10**9, max_seconds=0.5, validate_every=10**6, checkpoint_every=10**6
    )
    outcome = train(
        model,
        batches=batches,
        step_loss=lambda b, s: model(b).pow(2).mean(),
        validate=lambda: float(model(x).pow(2).mean()),
        settings=budget,
        out_dir=tmp_path,
        progress=False,
    )
    assert outcome.state.out_of_time and 0 < outcome.state.step < 10**9
    assert outcome.state.history and (tmp_path / "training_state.safetensors").is_file()


def test_precision_auto_takes_bf16_only_where_it_is_native():
    from bayes_smlm.surrogates.psi.sampling import resolve_precision

    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16") == "bf16"
    with pytest.raises(ConfigError, match="argument precision"):
        resolve_precision("fp16")
