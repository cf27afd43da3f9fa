"""Windows to fit: one per candidate, or one per group of candidates whose windows overlap.

Each candidate gets a square window of half-width ⌈3σ_psf⌉ px about its peak (7 × 7 px for
σ_psf = 0.92 px, the box Picasso and ThunderSTORM use). Two candidates of a frame whose windows
overlap are linked, and each connected group is fitted as one window holding all its emitters: a
neighbour's photons are then modelled instead of biasing the fit. A group's window covers all its
windows; its side is rounded up to the next of a few sizes (so a movie compiles a handful of
programs, as do the emitter counts: a group of 3 is fitted in a program with 4 emitter slots,
one left empty) and the window is shifted inside the frame rather than cut by its edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

# window sides are 2h + 1 + SIZE_STEP·j px: each side compiles its own programs. Steps of 8
# (7, 15, 23, 31 px for σ_psf 0.92) against 4: a first run of a 300-frame crowded tuning movie
# (empty compilation cache) 161 -> 124 s, warm runs as fast (1.74 -> 1.66 s: fewer, fuller
# calls pay for the larger windows), rows equal to 1e-4 px (only pixels near an emitter are fitted)
SIZE_STEP = 8


def frames_apart(
    frame: np.ndarray, x: np.ndarray, y: np.ndarray, height: int, gap: float
) -> np.ndarray:
    """(M, 2) points (x, y) of several frames of ``height`` px stacked in one plane, frame f's y
    shifted by f · (height + gap): points of different frames are more than ``gap`` apart, so
    one k-d tree serves all frames."""
    stride = height + gap
    return np.stack([np.asarray(x, float), np.asarray(y, float) + stride * np.asarray(frame)], 1)


def linked_groups(
    points: np.ndarray, reach: float, p: float = 2.0, also: np.ndarray | None = None
) -> np.ndarray:
    """(M,) labels of the connected groups of points (M, 2) linked when within ``reach`` of each
    other (Minkowski ``p``-distance: 2 Euclidean, inf the larger of |Δx|, |Δy|), and by the
    pairs of indices ``also`` (E, 2), if given."""
    pairs = cKDTree(points).query_pairs(r=reach, p=p, output_type="ndarray")
    if also is not None:
        pairs = np.concatenate([pairs, np.asarray(also, pairs.dtype).reshape(-1, 2)])
    m = len(points)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(m, m))
    return connected_components(graph, directed=False)[1]


def half_width(sigma_psf: float) -> int:
    """Half-width h of one emitter's window, px (3 PSF σ, at least 2)."""
    return max(2, int(np.ceil(3.0 * sigma_psf)))


SLOTS = (1, 2, 4, 8)  # emitter slots of the compiled fits; a group takes the smallest that holds it


@dataclass(frozen=True)
class WindowGroup:
    """B square windows of the same side holding up to K emitters each (K slots).

    frame : (B,) frame index in the chunk; origin : (B, 2) (row, col) of the window's top-left
    pixel; peaks : (B, K, 2) candidate (row, col) in frame pixels (empty slots repeat the
    first); members : (B, K) the candidates' indices in the arrays given to
    :func:`plan_windows`, −1 for an empty slot; component : (B,) the linked group of candidates
    the window belongs to (a group too large for one window is cut into several windows)."""

    shape: tuple[int, int]
    frame: np.ndarray
    origin: np.ndarray
    peaks: np.ndarray
    members: np.ndarray
    component: np.ndarray

    def take(self, which: np.ndarray) -> WindowGroup:
        """The windows ``which`` (mask or indices) of this group."""
        return WindowGroup(
            self.shape,
            self.frame[which],
            self.origin[which],
            self.peaks[which],
            self.members[which],
            self.component[which],
        )

    @property
    def n_slots(self) -> int:
        return self.peaks.shape[1]

    @property
    def active(self) -> np.ndarray:
        """(B, K) which slots hold a candidate."""
        return self.members >= 0


def _side(extent: np.ndarray, h: int) -> np.ndarray:
    """Window sides covering ``extent`` (px between the outermost peaks) plus h each side,
    rounded up to 2h + 1 + SIZE_STEP·j."""
    return 2 * h + 1 + SIZE_STEP * np.ceil(extent / SIZE_STEP).astype(int)


def _split_large(labels: np.ndarray, points: np.ndarray, largest: int) -> np.ndarray:
    """Labels with every group of more than ``largest`` members cut recursively in two halves
    across its longer extent (so each part is still a compact patch)."""
    labels = labels.copy()
    pending = [np.flatnonzero(labels == g) for g in np.flatnonzero(np.bincount(labels) > largest)]
    next_label = labels.max() + 1
    while pending:
        members = pending.pop()
        spread = np.ptp(points[members], axis=0)
        order = members[np.argsort(points[members, int(np.argmax(spread))], kind="stable")]
        for half in (order[: len(order) // 2], order[len(order) // 2 :]):
            labels[half] = next_label
            next_label += 1
            if len(half) > largest:
                pending.append(half)
    return labels


def plan_windows(
    frame: np.ndarray,
    row: np.ndarray,
    col: np.ndarray,
    frame_shape: tuple[int, int],
    sigma_psf: float,
    *,
    joint: bool = True,
    max_emitters: int = 8,
) -> list[WindowGroup]:
    """Group candidates into windows.

    Parameters
    ----------
    frame, row, col : (M,) int arrays
        Candidates (frame in the chunk, peak pixel).
    frame_shape : (H, W)
    sigma_psf : float
        PSF σ, px.
    joint : bool
        Fit candidates with overlapping windows together (default). False fits each alone.
    max_emitters : int
        Groups larger than this (a very crowded patch; at most the largest of :data:`SLOTS`)
        are cut in halves across their longer side until each fits.
    """
    h = half_width(sigma_psf)
    height, width = frame_shape
    m = len(frame)
    if m == 0:  # frames without a candidate (background only, or every spot below threshold)
        return []
    labels = components = np.arange(m)
    if joint and m > 1:
        points = frames_apart(frame, col, row, height, gap=4 * h + 1)  # frames never link
        components = linked_groups(points, 2 * h, p=np.inf)
        labels = _split_large(components, np.stack([row, col], 1), min(max_emitters, SLOTS[-1]))
    order = np.argsort(labels, kind="stable")
    labels = labels[order]
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    sizes = np.diff(np.r_[starts, m])
    slots = np.asarray(SLOTS)[np.searchsorted(SLOTS, sizes)]
    # (groups, slots) member indices, −1 where a group has fewer members than slots
    width_slots = slots.max(initial=1)
    offsets = np.arange(width_slots)
    members = np.where(
        offsets < sizes[:, None], order[np.minimum(starts[:, None] + offsets, m - 1)], -1
    )
    first = members[:, :1]
    filled = np.where(members >= 0, members, first)
    r, c = row[filled], col[filled]
    # as small as the group allows: a larger window takes in unmodelled neighbours (bias)
    side = _side(np.maximum(r.max(1) - r.min(1), c.max(1) - c.min(1)), h)
    groups: list[WindowGroup] = []
    for k, s in sorted(set(zip(slots.tolist(), side.tolist()))):
        pick = (slots == k) & (side == s)
        sh, sw = min(s, height), min(s, width)
        rr, cc = r[pick, :k], c[pick, :k]
        top = np.clip((rr.max(1) + rr.min(1)) // 2 - sh // 2, 0, height - sh)
        left = np.clip((cc.max(1) + cc.min(1)) // 2 - sw // 2, 0, width - sw)
        groups.append(
            WindowGroup(
                shape=(sh, sw),
                frame=frame[filled[pick, 0]],
                origin=np.stack([top, left], 1),
                peaks=np.stack([rr, cc], -1),
                members=members[pick, :k],
                component=components[filled[pick, 0]],
            )
        )
    return groups
