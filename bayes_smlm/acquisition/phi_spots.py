"""Candidates from φ (``localize --detector phi``): DeepSTORM's super-resolved KDE of each frame,
its detections (the checkpoint's own detector and threshold), one candidate per camera pixel.

φ sees a whole patch at once, so it separates spots that the difference-of-Gaussians filter
merges and finds dim emitters the filter's signal-to-noise threshold drops (the ``widefield``
model card: recall 0.88 against 0.52 at 300–1000 photons). It is convolutional, but not free of
the size it was trained at: its dilated layers (up to 16 px) see the zero padding around a
32 × 32 training patch from every pixel, and the middle of a larger frame, out of sight of any
border, filled with false blobs (64 × 64 frames: 60 detections per frame for 6 emitters). So φ
runs on overlapping tiles of its training size, and each tile gives the part of the KDE nearest
its centre (within the disc its training emitters came from). What must match the movie are the
constants that do not depend on the frame size — the optics and the brightness and background
the network was trained on — and a checkpoint differing in any of them is refused in one line.

The candidates still go through the same window fits, counts by evidence and residual search
(the DoG filter on the residual) as those of the default detector; their ``snr`` is the DoG
signal-to-noise at their pixel, so the column means the same with either detector.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from bayes_smlm.acquisition.spots import Spots, snr_image
from bayes_smlm.forward.config import Task

SHIPPED_TASK = "widefield"  # the shipped φ whose training priors are those of `localize`
# the task constants a φ checkpoint must share with the movie (frame size, count and camera may
# differ: φ is convolutional and takes photons)
SIZE_FREE = ("optics", "prior.brightness", "prior.i0_range", "prior.background_range")
BATCH_FRAMES = 32  # frames per forward pass (64 × 64 frames: ≈ 0.3 GB of activations)


@lru_cache(maxsize=2)
def _phi(checkpoint: str | None, task_json: str):
    """φ's predictor and detection settings, loaded once per process (a chunk of a movie on a
    Dask worker reuses them)."""
    from bayes_smlm.forward.config import task_from_json
    from bayes_smlm.localization.detection import settings_from_config
    from bayes_smlm.surrogates.phi.estimator import PhiPredictor, load_phi

    task = task_from_json(task_json)
    model, config = load_phi(
        checkpoint, task, shipped_for=SHIPPED_TASK, keys=SIZE_FREE, argument="phi_checkpoint"
    )
    tile = (int(config["task"]["height"]), int(config["task"]["width"]))
    return PhiPredictor(model, task, batch_size=BATCH_FRAMES), settings_from_config(config), tile


def _tiles(size: int, tile: int) -> tuple[np.ndarray, np.ndarray]:
    """Origins of tiles of ``tile`` px covering ``size`` px with half a tile's overlap (the last
    flush with the end), and the bounds (len + 1,) of the part each owns: the pixels nearer its
    centre than any other tile's."""
    if size <= tile:
        return np.zeros(1, int), np.array([0, size])
    origins = np.unique(np.minimum(np.arange(0, size - tile + tile // 2, tile // 2), size - tile))
    centres = origins + tile / 2.0
    bounds = np.concatenate([[0], np.ceil((centres[:-1] + centres[1:]) / 2.0), [size]])
    return origins, bounds.astype(int)


def tiled_kde(predictor, photons: np.ndarray, tile: tuple[int, int], upsampling: int) -> np.ndarray:
    """φ's KDE (F, u·H, u·W) of frames ``photons`` (F, H, W), run on tiles of φ's training size
    ``tile``: each output pixel from the tile whose centre is nearest. Frames smaller than a
    tile are mirrored out to its size and the KDE cut back."""
    import torch

    frames, height, width = photons.shape
    padded = np.pad(
        photons,
        ((0, 0), (0, max(tile[0] - height, 0)), (0, max(tile[1] - width, 0))),
        mode="reflect",
    )
    (rows, row_bounds), (cols, col_bounds) = (_tiles(n, t) for n, t in zip(padded.shape[1:], tile))
    patches = np.stack([padded[:, r : r + tile[0], c : c + tile[1]] for r in rows for c in cols], 1)
    kde = (
        predictor.photons(torch.from_numpy(np.ascontiguousarray(patches.reshape(-1, 1, *tile))))[
            :, 0
        ]
        .cpu()
        .numpy()
    )
    kde = kde.reshape(frames, len(rows), len(cols), tile[0] * upsampling, tile[1] * upsampling)
    u = upsampling
    out = np.empty((frames, padded.shape[1] * u, padded.shape[2] * u), np.float32)
    for i, r in enumerate(rows):
        r0, r1 = row_bounds[i] * u, row_bounds[i + 1] * u
        for j, c in enumerate(cols):
            c0, c1 = col_bounds[j] * u, col_bounds[j + 1] * u
            out[:, r0:r1, c0:c1] = kde[:, i, j, r0 - r * u : r1 - r * u, c0 - c * u : c1 - c * u]
    return out[:, : height * u, : width * u]


def check_phi(checkpoint: str | Path | None, task: Task):
    """φ's predictor, detection settings and tile for ``task`` (loaded once per process),
    refusing in one line a checkpoint that is missing, damaged, or trained for other optics,
    brightness or background."""
    return _phi(None if checkpoint is None else str(checkpoint), task.to_json())


def phi_spots(
    photons: np.ndarray, pedestal: np.ndarray, task: Task, checkpoint: str | Path | None = None
) -> Spots:
    """Candidates of frames ``photons`` (F, H, W) (``(ADU − o)/g``) from φ's KDE.

    Parameters
    ----------
    photons : (F, H, W) array
        Photons per pixel, background included.
    pedestal : (H, W) array or scalar
        Read-noise variance in photons² (for the ``snr`` column only).
    task : Task
        The movie's task: optics, priors, frame size.
    checkpoint : path, optional
        A φ checkpoint directory (default: the shipped ``widefield`` one).

    Returns
    -------
    Spots
        One candidate per (frame, pixel) holding a detection — the pixel nearest the detection's
        sub-pixel position — with the DoG signal-to-noise there.
    """
    from bayes_smlm.localization.detection import detect

    predictor, settings, tile = check_phi(checkpoint, task)
    photons = np.asarray(photons, np.float32)
    kde = tiled_kde(predictor, photons, tile, task.optics.upsampling)
    found = detect(kde, task.optics.sigma_kde, task.optics.upsampling, settings)
    height, width = photons.shape[1:]
    row = np.clip(np.rint(found.xy[:, 1]), 0, height - 1).astype(int)
    col = np.clip(np.rint(found.xy[:, 0]), 0, width - 1).astype(int)
    snr = snr_image(photons, pedestal, task.optics.sigma_psf)
    spots = Spots(
        frame=found.frame.astype(int),
        row=row,
        col=col,
        snr=snr[found.frame, row, col] if len(row) else np.zeros(0, np.float32),
    )
    return spots.first_per_pixel()[0]
