"""Detection, matching and metrics against hand-computed cases and the true KDE."""

from __future__ import annotations

import numpy as np
import pytest

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.simulate import simulate
from bayes_smlm.localization.detection import (
    Detections,
    DetectionSettings,
    detect,
    evaluate_detections,
    match_frame,
)


@pytest.fixture(scope="module")
def isolated_frames(isolated):
    return simulate(isolated, 60, seed=11)


def _detect(task, kdes, **kw):
    return detect(kdes, task.optics.sigma_kde, task.optics.upsampling, DetectionSettings(**kw))


@pytest.mark.parametrize("detector", ["peaks", "log"])
def test_gauss3_recovers_true_positions_from_the_true_kde(isolated, isolated_frames, detector):
    # The KDE kernel is a pixel-integrated Gaussian, so the 3-point log-parabola is near exact;
    # whole HR pixels alone are off by up to half an HR pixel (0.125 LR px).
    found = _detect(isolated, isolated_frames.kde, detector=detector, threshold=0.1)
    assert np.array_equal(found.frame, np.arange(60))
    err = found.xy - isolated_frames.theta[:, 0]
    assert np.abs(err).max() < 0.01
    coarse = _detect(
        isolated, isolated_frames.kde, detector=detector, threshold=0.1, refinement="none"
    )
    coarse_err = np.abs(coarse.xy - isolated_frames.theta[:, 0])
    assert coarse_err.max() <= 0.5 / isolated.optics.upsampling + 1e-6
    assert coarse_err.mean() > 10 * np.abs(err).mean()


def test_centroid_refinement_beats_whole_pixels(isolated, isolated_frames):
    rms = {}
    for refinement in ("centroid", "none"):
        found = _detect(isolated, isolated_frames.kde, refinement=refinement)
        rms[refinement] = np.sqrt(np.mean((found.xy - isolated_frames.theta[:, 0]) ** 2))
    assert rms["centroid"] < 0.5 * rms["none"]


def test_matching_is_one_to_one_within_tolerance():
    truth = np.array([[5.0, 5.0], [10.0, 10.0], [15.0, 3.0]])
    found = np.array([[5.1, 5.0], [5.0, 5.2], [12.0, 10.0]])  # two near one truth, one too far
    i_found, i_true = match_frame(found, truth, tolerance=1.25)
    assert list(i_true) == [0] and list(i_found) == [0]


def test_metrics_match_hand_computation():
    truth = np.array([[[5.0, 5.0], [10.0, 10.0], [15.0, 3.0]]])
    found = Detections(
        frame=np.array([0, 0]), xy=np.array([[5.3, 4.6], [1.0, 1.0]]), response=np.ones(2)
    )
    m = evaluate_detections(found, truth, tolerance=1.25, pixel_size_nm=100.0)
    assert (m.tp, m.precision, m.recall, m.jaccard) == (1, 0.5, 1 / 3, 0.25)
    assert m.rmse_x_px == pytest.approx(0.3) and m.rmse_y_px == pytest.approx(0.4)
    assert m.rmse_x_nm == pytest.approx(30.0)
    assert m.efficiency == pytest.approx(100 - np.hypot(75.0, 50.0))


@pytest.mark.slow
def test_true_kde_ceiling_on_the_paper_task(paper):
    # docs/conventions.md §2: close pairs merge in the KDE, so recall on the *true* KDE is < 1 and
    # local maxima recover more pairs than LoG. 100 frames = 1000 emitters: SE of recall ≈ 0.01.
    frames = simulate(paper, 100, seed=3)
    recall = {}
    for detector in ("peaks", "log"):
        m = evaluate_detections(
            _detect(paper, frames.kde, detector=detector, threshold=0.1),
            frames.theta,
            tolerance=1.25,
            pixel_size_nm=108.3,
        )
        assert m.precision == 1.0
        recall[detector] = m.recall
    assert 0.86 < recall["log"] < recall["peaks"] < 0.97


@pytest.mark.parametrize(
    "kw, argument",
    [
        ({"detector": "blob"}, "argument detector"),
        ({"refinement": "spline"}, "argument refinement"),
        ({"threshold": -1.0}, "argument threshold"),
    ],
)
def test_bad_detection_settings_name_the_argument(kw, argument):
    with pytest.raises(ConfigError, match=argument):
        DetectionSettings(**kw)
