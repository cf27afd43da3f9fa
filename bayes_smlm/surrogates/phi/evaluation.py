"""Detection settings tuned on φ's validation set, and φ's localization metrics on fresh frames.

The evaluation always reports detection on the *true* KDE beside φ's numbers: that is the ceiling
the KDE target itself allows (close pairs merge into one blob, docs/conventions.md §2).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.config import Task
from bayes_smlm.forward.fisher import fisher_information
from bayes_smlm.forward.simulate import simulate
from bayes_smlm.localization.detection import (
    DETECTORS,
    Detections,
    DetectionSettings,
    LocalizationMetrics,
    detect,
    evaluate_detections,
    match_frame,
    settings_from_config,
)
from bayes_smlm.reporting.markdown import markdown_table
from bayes_smlm.surrogates.phi.estimator import PhiPredictor, load_phi

DEFAULT_TOLERANCE_HR = 5.0  # KDE pixels; 1.25 LR px at u = 4
INTENSITY_BINS = (100.0, 300.0, 1000.0, 3000.0, 10000.0)  # photons: recall per bin
BACKGROUND_BINS = (0.0, 50.0, 200.0, 500.0)  # photons/px: precision per bin
THRESHOLDS = {
    "peaks": (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6),
    "log": (0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3),
}


def tolerance_lr(task: Task, tolerance_hr: float = DEFAULT_TOLERANCE_HR) -> float:
    """Matching tolerance in LR pixels from one in KDE (HR) pixels."""
    return tolerance_hr / task.optics.upsampling


def score(
    kdes: np.ndarray,
    theta: np.ndarray,
    task: Task,
    settings: DetectionSettings,
    tolerance: float | None = None,
) -> LocalizationMetrics:
    """Detect in ``kdes`` with ``settings`` and score against ``theta`` (F, N, 2)."""
    found = detect(kdes, task.optics.sigma_kde, task.optics.upsampling, settings)
    return evaluate_detections(
        found,
        theta,
        pixel_size_nm=task.optics.pixel_size_nm,
        tolerance=tolerance_lr(task) if tolerance is None else tolerance,
    )


def tune_detection(kdes: np.ndarray, theta: np.ndarray, task: Task) -> dict[str, dict[str, Any]]:
    """Per detector, the threshold with the highest Jaccard index on (validation) frames.

    Where several thresholds tie (common on easy tasks), the middle one of the tied set is taken,
    the farthest from both false positives and misses.

    Returns a JSON-ready dict ``{detector: DetectionSettings.to_dict() + {"val_jaccard": J}}``.
    """
    tuned = {}
    for detector in DETECTORS:
        scores = [
            (
                threshold,
                score(
                    kdes, theta, task, DetectionSettings(detector=detector, threshold=threshold)
                ).jaccard,
            )
            for threshold in THRESHOLDS[detector]
        ]
        best = max(j for _, j in scores)
        tied = [t for t, j in scores if j >= best - 1e-12]
        chosen = DetectionSettings(detector=detector, threshold=tied[len(tied) // 2])
        tuned[detector] = {**chosen.to_dict(), "val_jaccard": best}
    return tuned


def evaluate_phi(
    checkpoint: str | Path | None, task: Task, frames: int, seed: int, *, precision: str = "fp32"
) -> dict[str, Any]:
    """φ's detection and localization metrics on ``frames`` fresh frames of ``task``.

    Rows: φ with each detector (sub-pixel refinement and, for the comparison with the paper's pure
    LoG localization, without), and the same detectors on the true KDE (the ceiling).

    Returns
    -------
    dict
        ``{"rows": [{"source", "detector", "refinement", **metrics}], "sqrt_crlb_px": float|None,
        "checkpoint": {...}}``; √CRLB is given for one-emitter tasks (at the frame centre).
    """

    model, config = load_phi(checkpoint, task)
    if seed == config["training"]["seed"]:
        raise ConfigError(
            "seed",
            f"{seed} is the training seed of this checkpoint, whose first "
            "frames are its validation set; choose another seed",
        )
    batch = simulate(task, frames, seed)
    predicted = PhiPredictor(model, task, precision=precision)(batch.adu)
    rows = []
    for source, kdes in (("phi", predicted), ("true KDE", batch.kde)):
        for detector in DETECTORS:
            base = settings_from_config(config, detector)
            for refinement in ("gauss3", "none"):
                settings = replace(base, refinement=refinement)
                m = score(kdes, batch.theta, task, settings)
                rows.append(
                    {
                        "source": source,
                        "detector": detector,
                        "refinement": refinement,
                        "threshold": settings.threshold,
                        **m.to_dict(),
                    }
                )
    brightness = None
    if task.prior.brightness == "drawn":
        phi_found = detect(
            predicted, task.optics.sigma_kde, task.optics.upsampling, settings_from_config(config)
        )
        brightness = {
            "phi": detection_by_brightness(phi_found, batch, tolerance_lr(task)),
            "dog": detection_by_brightness(
                _dog_detections(batch.adu, task), batch, tolerance_lr(task)
            ),
        }
    sqrt_crlb = None
    if task.prior.n_emitters == 1:
        sqrt_crlb = float(fisher_information(task, np.array([task.centre])).sd_xy[0, 0])
    return {
        "rows": rows,
        "sqrt_crlb_px": sqrt_crlb,
        "frames": frames,
        "seed": seed,
        "by_brightness": brightness,
        "checkpoint": {
            "steps": config.get("progress", {}).get("steps_done"),
            "command": config.get("command", ""),
        },
    }


def metrics_table(result: dict[str, Any]) -> str:
    """Markdown table of :func:`evaluate_phi`'s rows (with RMSE/√CRLB when known)."""

    crlb = result.get("sqrt_crlb_px")
    header = [
        "source",
        "detector",
        "sub-pixel",
        "threshold",
        "precision",
        "recall",
        "Jaccard",
        "RMSE x (px)",
        "RMSE y (px)",
        "RMSE x (nm)",
        "efficiency",
    ]
    if crlb:
        header += ["RMSE x/√CRLB", "RMSE y/√CRLB"]
    body = []
    for r in result["rows"]:
        row = [
            r["source"],
            r["detector"],
            r["refinement"],
            f"{r['threshold']:g}",
            f"{r['precision']:.4f}",
            f"{r['recall']:.4f}",
            f"{r['jaccard']:.4f}",
            f"{r['rmse_x_px']:.4f}",
            f"{r['rmse_y_px']:.4f}",
            f"{r['rmse_x_nm']:.2f}",
            f"{r['efficiency']:.1f}",
        ]
        if crlb:
            row += [f"{r['rmse_x_px'] / crlb:.2f}", f"{r['rmse_y_px'] / crlb:.2f}"]
        body.append(row)
    return markdown_table(header, body)


def _dog_detections(adu: np.ndarray, task: Task) -> Detections:
    """The candidates of ``localize`` (difference-of-Gaussians, signal-to-noise ≥ its default
    threshold) as detections at their peak pixels: the baseline φ is compared with."""
    from bayes_smlm.acquisition.pipeline import frame_candidates
    from bayes_smlm.acquisition.settings import LocalizeSettings

    _, _, spots = frame_candidates(task, adu, LocalizeSettings())
    return Detections(
        frame=spots.frame, xy=np.stack([spots.col, spots.row], 1).astype(float), response=spots.snr
    )


def detection_by_brightness(found: Detections, batch: Any, tolerance: float) -> dict[str, list]:
    """Recall per bin of the emitters' photons (:data:`INTENSITY_BINS`) and precision and recall
    per bin of the frames' background (:data:`BACKGROUND_BINS`), from frames whose brightness
    was drawn (``batch.i0`` (F, N), ``batch.background`` (F,))."""
    n_frames, n_emitters = batch.i0.shape
    hit = np.zeros((n_frames, n_emitters), bool)
    true_positives = np.zeros(n_frames, int)
    detections = np.zeros(n_frames, int)
    for f in range(n_frames):
        here = found.of_frame(f)
        i_found, i_true = match_frame(here, batch.theta[f], tolerance)
        hit[f, i_true] = True
        true_positives[f], detections[f] = len(i_found), len(here)
    by_intensity = []
    for lo, hi in zip(INTENSITY_BINS[:-1], INTENSITY_BINS[1:]):
        inside = (batch.i0 >= lo) & (batch.i0 < hi)
        by_intensity.append(
            {
                "i0": [lo, hi],
                "emitters": int(inside.sum()),
                "recall": float(hit[inside].mean()) if inside.any() else np.nan,
            }
        )
    by_background = []
    for lo, hi in zip(BACKGROUND_BINS[:-1], BACKGROUND_BINS[1:]):
        inside = (batch.background >= lo) & (batch.background < hi)
        by_background.append(
            {
                "background": [lo, hi],
                "frames": int(inside.sum()),
                "precision": float(true_positives[inside].sum() / max(detections[inside].sum(), 1)),
                "recall": float(hit[inside].mean()) if inside.any() else np.nan,
            }
        )
    return {"intensity": by_intensity, "background": by_background}


def brightness_table(result: dict[str, Any]) -> str:
    """Markdown tables of :func:`detection_by_brightness` for φ and the DoG baseline."""
    found = result["by_brightness"]
    names = {"phi": "φ (peaks)", "dog": "DoG + SNR (localize)"}
    intensity = markdown_table(
        ["i0 (photons)", "emitters", *(f"recall, {names[k]}" for k in found)],
        [
            (
                f"{b['i0'][0]:g}–{b['i0'][1]:g}",
                b["emitters"],
                *(f"{found[k]['intensity'][i]['recall']:.3f}" for k in found),
            )
            for i, b in enumerate(found["phi"]["intensity"])
        ],
    )
    background = markdown_table(
        [
            "background (photons/px)",
            "frames",
            *(f"{m}, {names[k]}" for k in found for m in ("precision", "recall")),
        ],
        [
            (
                f"{b['background'][0]:g}–{b['background'][1]:g}",
                b["frames"],
                *(
                    f"{found[k]['background'][i][m]:.3f}"
                    for k in found
                    for m in ("precision", "recall")
                ),
            )
            for i, b in enumerate(found["phi"]["background"])
        ],
    )
    return intensity + "\n\n" + background
