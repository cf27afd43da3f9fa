"""Emitter detection in KDE images, one-to-one matching to the truth, localization metrics.

Detectors work on one HR KDE image at a time (scikit-image), return positions in LR pixels, and
carry the scale-normalised Laplacian-of-Gaussian response at each detection. Conventions as in
docs/conventions.md §2: HR pixel centres at integers of ``θ_hr = u·(θ + ½) − ½``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_laplace
from skimage.feature import blob_log, peak_local_max

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.checks import check_choice
from bayes_smlm.localization.matching import match_points

DETECTORS = ("peaks", "log")
REFINEMENTS = ("gauss3", "centroid", "none")


@dataclass(frozen=True)
class DetectionSettings:
    """How detections are found in a KDE image.

    Attributes
    ----------
    detector : {"peaks", "log"}
        ``peaks``: local maxima of the KDE (``skimage.feature.peak_local_max``); ``log``:
        Laplacian-of-Gaussian blobs (``skimage.feature.blob_log``, the paper's method).
    threshold : float
        ``peaks``: minimum KDE value (one isolated kernel peaks at 1). ``log``: minimum
        scale-normalised LoG response (≈ 0.5 for one isolated kernel at σ = σy).
    min_distance : int
        Minimum separation of two detections, HR pixels.
    refinement : {"gauss3", "centroid", "none"}
        Sub-pixel refinement: ``gauss3`` fits a parabola to the log-KDE at the peak and its two
        neighbours per axis (exact for a Gaussian kernel); ``centroid`` takes the intensity
        centroid of a (2r+1)² window; ``none`` keeps whole HR pixels (pure LoG localization).
    centroid_radius : int
        Half-width r of the centroid window, HR pixels.
    """

    detector: str = "peaks"
    threshold: float = 0.3
    min_distance: int = 2
    refinement: str = "gauss3"
    centroid_radius: int = 3

    def __post_init__(self) -> None:
        check_choice("detector", self.detector, DETECTORS)
        check_choice("refinement", self.refinement, REFINEMENTS)
        if not np.isfinite(self.threshold) or self.threshold <= 0:
            raise ConfigError("threshold", f"must be > 0 (got {self.threshold})")
        if self.min_distance < 1:
            raise ConfigError("min_distance", f"must be >= 1 (got {self.min_distance})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def settings_from_config(config: dict[str, Any], detector: str | None = None) -> DetectionSettings:
    """Detection settings stored in a φ checkpoint (the default detector unless named)."""
    stored = config.get("detection", {})
    detector = detector or stored.get("default", "peaks")
    check_choice("detector", detector, DETECTORS)
    values = {
        k: v for k, v in stored.get(detector, {"detector": detector}).items() if k != "val_jaccard"
    }
    return DetectionSettings(**values)


@dataclass
class Detections:
    """Detections of F frames, flat: row i is a detection in frame ``frame[i]``.

    Attributes
    ----------
    frame : (M,) int array
    xy : (M, 2) float array
        (x, y) in LR pixels.
    response : (M,) float array
        Scale-normalised LoG response ``−σy² ∇²G_σy * y`` at the detection.
    """

    frame: np.ndarray
    xy: np.ndarray
    response: np.ndarray

    def of_frame(self, f: int) -> np.ndarray:
        return self.xy[self.frame == f]


def _log_response(image: np.ndarray, sigma: float) -> np.ndarray:
    return -(sigma**2) * gaussian_laplace(image.astype(np.float64), sigma)


def _refine(
    image: np.ndarray, rows: np.ndarray, cols: np.ndarray, settings: DetectionSettings
) -> np.ndarray:
    """Sub-pixel (row, col) of integer peaks, HR pixels."""
    pos = np.stack([rows, cols], axis=-1).astype(np.float64)
    if settings.refinement == "none" or len(rows) == 0:
        return pos
    h, w = image.shape
    if settings.refinement == "gauss3":
        log_img = np.log(np.maximum(image.astype(np.float64), 1e-12))
        for axis, (dr, dc) in enumerate(((1, 0), (0, 1))):
            r_minus, c_minus = np.clip(rows - dr, 0, h - 1), np.clip(cols - dc, 0, w - 1)
            r_plus, c_plus = np.clip(rows + dr, 0, h - 1), np.clip(cols + dc, 0, w - 1)
            lo, mid, hi = log_img[r_minus, c_minus], log_img[rows, cols], log_img[r_plus, c_plus]
            curvature = lo - 2.0 * mid + hi
            ok = curvature < 0  # a true maximum; at the border or on a plateau keep the pixel
            shift = np.where(ok, 0.5 * (lo - hi) / np.where(ok, curvature, -1.0), 0.0)
            pos[:, axis] += np.clip(shift, -0.5, 0.5)
        return pos
    r = settings.centroid_radius
    for i, (row, col) in enumerate(zip(rows, cols)):
        r0, r1, c0, c1 = max(row - r, 0), min(row + r + 1, h), max(col - r, 0), min(col + r + 1, w)
        window = np.clip(image[r0:r1, c0:c1].astype(np.float64), 0.0, None)
        total = window.sum()
        if total > 0:
            rr, cc = np.mgrid[r0:r1, c0:c1]
            pos[i] = ((rr * window).sum() / total, (cc * window).sum() / total)
    return pos


def detect_image(
    image: np.ndarray, sigma_kde: float, settings: DetectionSettings
) -> tuple[np.ndarray, np.ndarray]:
    """Detections in one KDE image: (K, 2) (row, col) in HR pixels and their LoG responses."""
    response_map = _log_response(image, sigma_kde)
    if settings.detector == "peaks":
        peaks = peak_local_max(
            image,
            min_distance=settings.min_distance,
            threshold_abs=settings.threshold,
            exclude_border=False,
        )
    else:
        blobs = blob_log(
            image.astype(np.float64),
            min_sigma=0.75 * sigma_kde,
            max_sigma=1.5 * sigma_kde,
            num_sigma=4,
            threshold=settings.threshold,
            overlap=0.5,
            exclude_border=False,
        )
        peaks = blobs[:, :2].astype(int) if len(blobs) else np.zeros((0, 2), int)
    peaks = np.asarray(peaks, dtype=int).reshape(-1, 2)
    refined = _refine(image, peaks[:, 0], peaks[:, 1], settings)
    return refined, response_map[peaks[:, 0], peaks[:, 1]]


def detect(
    kdes: np.ndarray, sigma_kde: float, upsampling: int, settings: DetectionSettings | None = None
) -> Detections:
    """Detect emitters in every KDE image of ``kdes`` (F, u·H, u·W).

    Returns
    -------
    Detections
        Positions in LR pixels, ``θ = (θ_hr + ½)/u − ½``.
    """
    settings = settings or DetectionSettings()
    kdes = np.asarray(kdes)
    if kdes.ndim != 3:
        raise ConfigError("kdes", f"must have shape (F, u·H, u·W) (got {kdes.shape})")
    frames, xys, responses = [], [], []
    for f, image in enumerate(kdes):
        rc, resp = detect_image(image, sigma_kde, settings)
        frames.append(np.full(len(rc), f))
        xys.append((rc[:, ::-1] + 0.5) / upsampling - 0.5)
        responses.append(resp)
    return Detections(
        frame=np.concatenate(frames).astype(int),
        xy=np.concatenate(xys).reshape(-1, 2),
        response=np.concatenate(responses),
    )


def match_frame(
    found: np.ndarray, truth: np.ndarray, tolerance: float
) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of detections to true emitters within ``tolerance`` (LR px), minimising
    the summed distance. Returns index arrays (i_found, i_truth) of the matched pairs."""
    return match_points(found, truth, tolerance=tolerance)


@dataclass
class LocalizationMetrics:
    """Detection and localization quality over a set of frames.

    Precision TP/(TP+FP), recall TP/(number of true emitters), Jaccard TP/(TP+FP+FN), RMSE of
    matched pairs per axis (LR px and nm) and the SMLM-challenge lateral efficiency
    ``100 − sqrt((100 − 100·Jaccard)² + (1/nm · RMSE_lat)²)`` (Sage et al. 2019).
    """

    frames: int
    true_emitters: int
    detections: int
    tp: int
    precision: float
    recall: float
    jaccard: float
    rmse_x_px: float
    rmse_y_px: float
    rmse_x_nm: float
    rmse_y_nm: float
    efficiency: float
    tolerance_px: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_detections(
    detections: Detections, theta_true: np.ndarray, *, tolerance: float, pixel_size_nm: float
) -> LocalizationMetrics:
    """Match ``detections`` to ``theta_true`` (F, N, 2) frame by frame and score them."""
    theta_true = np.asarray(theta_true)
    errors = []
    tp = 0
    for f in range(theta_true.shape[0]):
        found = detections.of_frame(f)
        i_found, i_true = match_frame(found, theta_true[f], tolerance)
        tp += len(i_found)
        errors.append(found[i_found] - theta_true[f][i_true])
    err = np.concatenate(errors).reshape(-1, 2)
    n_true, n_found = theta_true.shape[0] * theta_true.shape[1], len(detections.xy)
    fp, fn = n_found - tp, n_true - tp
    rmse = np.sqrt(np.mean(err**2, axis=0)) if tp else np.full(2, np.nan)
    jaccard = tp / (tp + fp + fn) if tp + fp + fn else 1.0
    rmse_lat_nm = float(np.sqrt(np.sum(rmse**2))) * pixel_size_nm
    efficiency = 100.0 - float(np.sqrt((100.0 - 100.0 * jaccard) ** 2 + rmse_lat_nm**2))
    return LocalizationMetrics(
        frames=int(theta_true.shape[0]),
        true_emitters=n_true,
        detections=n_found,
        tp=tp,
        precision=tp / n_found if n_found else float("nan"),
        recall=tp / n_true,
        jaccard=jaccard,
        rmse_x_px=float(rmse[0]),
        rmse_y_px=float(rmse[1]),
        rmse_x_nm=float(rmse[0] * pixel_size_nm),
        rmse_y_nm=float(rmse[1] * pixel_size_nm),
        efficiency=efficiency,
        tolerance_px=float(tolerance),
    )
