"""The emitters of a frame taken together: their model image, nearest-neighbour queries, one
emitter fitted by two windows, windows to refit together, and spots split into several narrow
emitters.

Rows are ``localize``'s table: a dict of equal-length arrays (``frame``, ``x``, ``y``, ``i0``,
…; positions in LR px, pixel centres at integers).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from bayes_smlm.acquisition.regions import frames_apart, linked_groups
from bayes_smlm.acquisition.spots import Spots
from bayes_smlm.forward import physics
from bayes_smlm.forward.config import Task

SPLIT_LINK, SPLIT_SIZE = 2.5, 3  # ≥ SPLIT_SIZE emitters linked closer than SPLIT_LINK σ_psf
REPEAT_DISTANCE = 1.0  # px: rows of two windows this near are one emitter fitted twice


def take_rows(table: dict[str, np.ndarray], which: np.ndarray) -> dict[str, np.ndarray]:
    """The rows ``which`` (mask or indices) of every column."""
    return {name: values[which] for name, values in table.items()}


def emitter_image(table: dict[str, np.ndarray], shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """(F, H, W) expected photons of the fitted emitters alone (no background), each drawn in a
    patch of ±4σ about it."""
    model = np.zeros(shape, np.float32)
    if not len(table["x"]):
        return model
    half = int(np.ceil(4 * sigma)) + 1
    offsets = np.arange(-half, half + 1)
    rows = np.rint(table["y"]).astype(int)[:, None] + offsets  # (M, S)
    cols = np.rint(table["x"]).astype(int)[:, None] + offsets
    ey = np.asarray(physics.pixel_integrated_gaussian(rows, table["y"][:, None], sigma))
    ex = np.asarray(physics.pixel_integrated_gaussian(cols, table["x"][:, None], sigma))
    ey = np.where((rows >= 0) & (rows < shape[1]), ey, 0.0)
    ex = np.where((cols >= 0) & (cols < shape[2]), ex, 0.0)
    patch = table["i0"][:, None, None] * ey[:, :, None] * ex[:, None, :]
    # flat pixel index of every patch entry; bincount sums the overlaps (np.add.at: 10× slower)
    index = (
        table["frame"].astype(int)[:, None, None] * shape[1]
        + np.clip(rows, 0, shape[1] - 1)[:, :, None]
    ) * shape[2] + np.clip(cols, 0, shape[2] - 1)[:, None, :]
    summed = np.bincount(index.ravel(), weights=patch.ravel(), minlength=model.size)
    return summed.reshape(shape).astype(np.float32)


def nearest(
    frame: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    others: Spots,
    height: int,
    reach: float = np.inf,
) -> tuple[np.ndarray, np.ndarray]:
    """Distance (px; inf beyond ``reach``) to, and index of, the nearest of ``others`` in the
    same frame, for each point (frame, x, y)."""
    from scipy.spatial import cKDTree

    if not len(others.frame):
        return np.full(len(frame), np.inf), np.full(len(frame), -1)
    gap = 2.0 * min(reach, 2.0 * height) + 1.0  # frames stacked farther apart than the reach
    tree = cKDTree(frames_apart(others.frame, others.col, others.row, height, gap))
    return tree.query(frames_apart(frame, x, y, height, gap), distance_upper_bound=reach)


def away_from(spots: Spots, table: dict[str, np.ndarray], distance: float, height: int) -> Spots:
    """The candidates farther than ``distance`` px from every fitted emitter of their frame."""
    if not len(spots.frame) or not len(table["x"]):
        return spots
    near, _ = nearest(
        spots.frame,
        spots.col,
        spots.row,
        Spots(table["frame"], table["y"], table["x"], table["snr"]),
        height,
        distance,
    )
    return spots.take(~np.isfinite(near))


def without_repeats(table: dict[str, np.ndarray], height: int) -> dict[str, np.ndarray]:
    """The table less emitters fitted twice: of two rows of different windows of a frame within
    :data:`REPEAT_DISTANCE` px (a window cut from a crowded patch also sees its neighbour's
    emitters near their common border), the one with the higher ``p_exists`` stays, then the one
    whose window's model fits better (converged, smaller χ²/dof)."""
    from scipy.spatial import cKDTree

    if len(table["x"]) < 2:
        return table
    points = frames_apart(table["frame"], table["x"], table["y"], height, 2 * REPEAT_DISTANCE)
    pairs = cKDTree(points).query_pairs(REPEAT_DISTANCE, output_type="ndarray")
    pairs = pairs[table["window"][pairs[:, 0]] != table["window"][pairs[:, 1]]]
    if not len(pairs):
        return table
    # rank rows best first; drop the worse of each pair, best pairs first
    order = np.lexsort((table["chi2_dof"], ~table["converged"].astype(bool), -table["p_exists"]))
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    better = np.where(rank[pairs[:, 0]] < rank[pairs[:, 1]], pairs[:, 0], pairs[:, 1])
    worse = pairs.sum(1) - better
    dropped = np.zeros(len(table["x"]), bool)
    for keep, drop in sorted(zip(better, worse), key=lambda pair: rank[pair[0]]):
        if not dropped[keep]:
            dropped[drop] = True
    return take_rows(table, ~dropped)


def refit_groups(
    table: dict[str, np.ndarray], bad: np.ndarray, reach: float, height: int, largest: int
) -> tuple[np.ndarray, np.ndarray]:
    """Which rows to fit again, and together with which: the windows ``bad`` (window numbers)
    and every window with an emitter within ``reach`` px (the larger of |Δx|, |Δy|) of one of
    theirs, joined into groups of windows linked through such emitters.

    A window beside a misfit one took some of its light, or lent it some: refitting the misfit
    window alone, with that neighbour's fit held as known, keeps the neighbour's error. A group
    of more than ``largest`` − 1 emitters (a refit offers one more candidate; a window holds at
    most ``largest``) would be cut in halves that each see the other's light unmodelled: there
    only the ``bad`` windows go again, each alone.

    Returns
    -------
    again : (M,) bool
        The rows to fit again.
    group : (R,) int
        For each of those rows (in table order), its group, numbered from 0.
    """
    window = np.asarray(table["window"])
    is_bad = np.isin(window, bad)
    points = frames_apart(table["frame"], table["x"], table["y"], height, 2 * reach)
    near = cKDTree(points).query_ball_point(points[is_bad], r=reach, p=np.inf)
    beside = np.concatenate([np.asarray(rows, int) for rows in near] + [np.zeros(0, int)])
    again = np.isin(window, window[beside]) | is_bad
    rows = np.flatnonzero(again)
    # rows of one window stay together: link each to the next row of its window
    order = rows[np.argsort(window[rows], kind="stable")]
    same = window[order[1:]] == window[order[:-1]]
    position = np.searchsorted(rows, order)
    also = np.stack([position[:-1][same], position[1:][same]], 1)
    group = linked_groups(points[rows], reach, p=np.inf, also=also)
    too_large = np.bincount(group)[group] > largest - 1
    keep = ~too_large | is_bad[rows]
    again[rows[~keep]] = False
    # a row of a group too large goes again alone with its window (-1 - window: never a group)
    key = np.where(too_large, -1 - window[rows], group)[keep]
    return again, np.unique(key, return_inverse=True)[1]


def mark_split_spots(table: dict[str, np.ndarray], task: Task) -> dict[str, np.ndarray]:
    """``misfit`` (and ``flagged``) also on groups of ≥ :data:`SPLIT_SIZE` emitters each closer
    than :data:`SPLIT_LINK` PSF σ to another: a spot of another shape than the model's PSF
    (defocused, wider, elongated) is explained by a few narrow emitters around it — their
    evidence is real, since they fit — and no χ² catches it; sub-PSF clusters of three real
    emitters are rarer than such spots."""
    if len(table["x"]) < SPLIT_SIZE:
        return table
    link = SPLIT_LINK * task.optics.sigma_psf
    labels = linked_groups(
        frames_apart(table["frame"], table["x"], table["y"], task.height, 2 * link), link
    )
    split = np.bincount(labels)[labels] >= SPLIT_SIZE
    return dict(table, misfit=table["misfit"] | split, flagged=table["flagged"] | split)
