"""Matplotlib figures shared by the study reports, saved atomically as PNG.

Figures are built as :class:`matplotlib.figure.Figure` objects, never through ``pyplot``: a study
run from a notebook or a GUI session neither switches the user's backend nor leaves figures in
pyplot's registry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from bayes_smlm.io.atomic import atomic_path


def new_figure(
    rows: int = 1,
    cols: int = 1,
    *,
    figsize: tuple[float, float],
    squeeze: bool = True,
    **figure_options,
):
    """A figure and its axes (as ``Figure.subplots`` returns them), outside pyplot."""
    fig = Figure(figsize=figsize, **figure_options)
    return fig, fig.subplots(rows, cols, squeeze=squeeze)


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Atomically save a figure as PNG (by its file name's suffix)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=Path(path).suffix.lstrip("."))
    return Path(path)


def peak_window(image: np.ndarray, half: int = 12):
    """A function cutting any map of ``image``'s shape to the (2·half)² pixels around
    ``image``'s maximum (shifted inwards at the edges), so several maps share one zoom."""
    r, c = np.unravel_index(np.argmax(image), image.shape)
    r0 = int(np.clip(r - half, 0, image.shape[0] - 2 * half))
    c0 = int(np.clip(c - half, 0, image.shape[1] - 2 * half))
    return lambda m: np.asarray(m)[r0 : r0 + 2 * half, c0 : c0 + 2 * half]


def image_grid(
    panels: Sequence[Sequence[tuple[str, np.ndarray, str]]],
    path: str | Path,
    *,
    symmetric: Sequence[str] = ("RdBu_r", "coolwarm"),
) -> Path:
    """Rows of (title, image, colormap) panels, each with its colour bar; diverging colormaps
    are centred on 0."""
    rows, cols = len(panels), max(len(r) for r in panels)
    fig, axes = new_figure(rows, cols, figsize=(2.7 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, row in enumerate(panels):
        for j, (title, image, cmap) in enumerate(row):
            kw = {}
            if cmap in symmetric:
                lim = float(np.nanmax(np.abs(image))) or 1.0
                kw = {"vmin": -lim, "vmax": lim}
            im = axes[i, j].imshow(image, cmap=cmap, **kw)
            axes[i, j].set_title(title, fontsize=8)
            fig.colorbar(im, ax=axes[i, j], fraction=0.046, pad=0.03)
    fig.tight_layout()
    return save_figure(fig, path)


def rank_histograms(
    ranks: Mapping[str, np.ndarray], n_draws: int, bins: int, path: str | Path
) -> Path:
    """SBC rank histograms (one panel per method and axis) with the 99 % band of uniform counts."""
    from scipy import stats

    fig, axes = new_figure(len(ranks), 2, figsize=(6, 1.8 * len(ranks)), squeeze=False)
    edges = np.linspace(0, n_draws + 1, bins + 1)
    for i, (name, r) in enumerate(ranks.items()):
        r = np.asarray(r)
        lo, hi = stats.binom.ppf([0.005, 0.995], len(r), 1 / bins)
        for j, axis in enumerate("xy"):
            ax = axes[i, j]
            ax.axhspan(lo, hi, color="0.85")
            ax.hist(r[:, j], bins=edges, color="C0")
            ax.set_title(f"{name}: rank of true {axis}", fontsize=8)
            ax.set_yticks([])
    fig.tight_layout()
    return save_figure(fig, path)


def coverage_plot(
    rows: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]], path: str | Path, *, xlabel: str
) -> Path:
    """Empirical coverage (± 2 SE) against the level an exact posterior attains, per method."""
    fig, ax = new_figure(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], color="0.6", lw=1)
    for k, (name, (attained, cov, se)) in enumerate(rows.items()):
        ax.errorbar(
            attained,
            cov,
            yerr=2 * np.asarray(se),
            marker="o",
            ms=4,
            capsize=2,
            label=name,
            color=f"C{k}",
        )
    ax.set_xlim(0.4, 1.0)
    ax.set_ylim(0.4, 1.0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("empirical coverage of the true KDE")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def histograms(
    series: Mapping[str, np.ndarray],
    edges: np.ndarray,
    path: str | Path,
    *,
    xlabel: str,
    reference_pdf=None,
) -> Path:
    """Overlaid step histograms of pre-binned counts (normalised), with an optional pdf."""
    fig, ax = new_figure(figsize=(5, 3))
    centres, width = 0.5 * (edges[1:] + edges[:-1]), np.diff(edges)
    for k, (name, counts) in enumerate(series.items()):
        counts = np.asarray(counts, float)
        ax.step(
            centres, counts / max(counts.sum(), 1) / width, where="mid", label=name, color=f"C{k}"
        )
    if reference_pdf is not None:
        ax.plot(centres, reference_pdf(centres), color="k", lw=1, ls="--", label="N(0, 1)")
    ax.set_xlabel(xlabel)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def cost_plot(rows: Sequence[dict], path: str | Path) -> Path:
    """Seconds per frame against emitters per frame, one line per method (log y)."""
    fig, ax = new_figure(figsize=(4.5, 3))
    for k, name in enumerate(sorted({r["method"] for r in rows})):
        pts = sorted((r["emitters"], r["seconds_per_frame"]) for r in rows if r["method"] == name)
        ax.plot(*zip(*pts), marker="o", label=name, color=f"C{k}")
    ax.set_yscale("log")
    ax.set_xlabel("emitters per frame")
    ax.set_ylabel("s / frame")
    ax.legend(fontsize=7)
    return save_figure(fig, path)
