"""The validity map's report: a heat map per method and the sentences its numbers support.

Everything here reads the study folder's ``config.json`` and ``metrics.json`` only, so
``bayes-smlm report DIR`` rebuilds it without recomputing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bayes_smlm.compare.schema import SEPARATION_CLASSES, format_cell
from bayes_smlm.io.study_files import CONFIG, METRICS, read_json
from bayes_smlm.reporting.figures import new_figure, save_figure
from bayes_smlm.reporting.markdown import markdown_table, write_report

FIGURE = "validity_map.png"


def _grid(metrics: dict[str, Any], settings: dict[str, Any], method: str, key: str) -> np.ndarray:
    """(photons, emitters) array of one method's ``key`` (NaN where it did not run)."""
    out = np.full((len(settings["photons"]), len(settings["emitters"])), np.nan)
    for cell in metrics["cells"]:
        m = cell["methods"].get(method, {})
        if key in m and m[key] is not None:
            i = settings["photons"].index(cell["photons"])
            j = settings["emitters"].index(cell["emitters"])
            out[i, j] = float(m[key])
    return out


def heat_maps(
    metrics: dict[str, Any], settings: dict[str, Any], methods: list[str], path: Path
) -> Path:
    """One panel per method: green where calibrated, red where not, grey where not run; each
    cell annotated with its coverage gap and z SD ratio."""
    from matplotlib.colors import ListedColormap

    cols = min(3, len(methods))
    rows = -(-len(methods) // cols)
    fig, axes = new_figure(
        rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False, layout="constrained"
    )
    colours = ListedColormap(["#d9534f", "#5cb85c"])
    for ax, method in zip(axes.ravel(), methods):
        calibrated = _grid(metrics, settings, method, "calibrated")
        gap = _grid(metrics, settings, method, "coverage_gap")
        z = _grid(metrics, settings, method, "z_sd_ratio")
        ax.set_facecolor("#dddddd")
        ax.imshow(
            np.ma.masked_invalid(calibrated),
            cmap=colours,
            vmin=0,
            vmax=1,
            origin="lower",
            aspect="auto",
        )
        for i in range(calibrated.shape[0]):
            for j in range(calibrated.shape[1]):
                text = "not run" if np.isnan(gap[i, j]) else f"{gap[i, j]:.2f}\nz {z[i, j]:.2f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(settings["emitters"])), settings["emitters"])
        ax.set_yticks(range(len(settings["photons"])), [f"{p:g}" for p in settings["photons"]])
        ax.set_xlabel("emitters per frame")
        ax.set_ylabel("photons per emitter")
        ax.set_title(method)
    for ax in axes.ravel()[len(methods) :]:
        ax.set_visible(False)
    fig.suptitle(
        "calibrated (green) or not (red): coverage gap to the exact posterior's, and z SD / exact"
    )
    return save_figure(fig, path)


def where_words(metrics: dict[str, Any], settings: dict[str, Any], methods: list[str]) -> list[str]:
    """Per method and density: from how many photons up it is calibrated in every cell."""
    lines = []
    for method in methods:
        calibrated = _grid(metrics, settings, method, "calibrated")
        parts = []
        for j, emitters in enumerate(settings["emitters"]):
            column = calibrated[:, j]
            if np.all(np.isnan(column)):
                parts.append(f"{emitters} emitters: not run")
                continue
            ok = np.nan_to_num(column, nan=0.0) == 1
            # lowest photon count from which every higher one is calibrated
            from_index = next((i for i in range(len(ok)) if ok[i:].all()), None)
            if from_index is None:
                parts.append(
                    f"{emitters} emitters: not calibrated at {settings['photons'][-1]:g} photons"
                )
            elif from_index == 0:
                parts.append(f"{emitters} emitters: calibrated at every photon count")
            else:
                parts.append(
                    f"{emitters} emitters: calibrated from "
                    f"{settings['photons'][from_index]:g} photons up"
                )
        cells = int(np.nansum(calibrated))
        total = int(np.sum(np.isfinite(calibrated)))
        lines.append(
            f"- **{method}** — calibrated in {cells} of {total} cells. " + "; ".join(parts) + "."
        )
    return lines


def count_words(metrics: dict[str, Any], settings: dict[str, Any], reference: str) -> str:
    """Where the exact posterior itself is unsure of the count, and what the exact answer costs."""
    p = _grid(metrics, settings, reference, "p_true_count")
    cost = _grid(metrics, settings, reference, "seconds_per_frame")
    unsure = [
        f"{settings['photons'][i]:g} photons × {settings['emitters'][j]} emitters "
        f"(P = {p[i, j]:.2f})"
        for i, j in zip(*np.nonzero(np.nan_to_num(p, nan=1) < 0.9))
    ]
    text = (
        "The exact posterior is unsure of the count (mean P(n = true) < 0.9) at "
        + ", ".join(unsure)
        + "."
        if unsure
        else "The exact posterior puts mean P(n = true) ≥ 0.9 on the true count in every cell."
    )
    return (
        f"{text} The exact answer (`{reference}` over the listed counts) costs "
        f"{np.nanmin(cost):.2f}–{np.nanmax(cost):.2f} s/frame here, most where emitters "
        f"are many (every s/frame here includes compiling the method's programs for the "
        f"cell, shared by its few frames)."
    )


def count_by_separation(metrics: dict[str, Any], methods: list[str]) -> str:
    """Mean P(n = true) of each counting method by the frame's closest pair, pooled over cells."""
    classes: list[str] = []
    pooled: dict[str, dict[str, list[float]]] = {}
    for cell in metrics["cells"]:
        for method in methods:
            parts = cell["methods"].get(method, {}).get("p_true_by_separation") or {}
            for name, (total, frames) in parts.items():
                slot = pooled.setdefault(method, {}).setdefault(name, [0.0, 0])
                slot[0], slot[1] = slot[0] + total, slot[1] + frames
                if name not in classes:
                    classes.append(name)
    order = [c for c in SEPARATION_CLASSES if c in classes]
    rows = [
        (
            method,
            *(
                f"{pooled[method][c][0] / pooled[method][c][1]:.3f} ({pooled[method][c][1]})"
                if c in pooled[method]
                else "—"
                for c in order
            ),
        )
        for method in methods
        if method in pooled
    ]
    return markdown_table(["method"] + [f"closest pair {c} σ_psf" for c in order], rows)


def table(metrics: dict[str, Any], methods: list[str]) -> str:
    rows = []
    for cell in metrics["cells"]:
        for method in methods:
            m = cell["methods"].get(method)
            if m is None:
                continue
            if "skipped" in m:
                rows.append(
                    (f"{cell['photons']:g}", cell["emitters"], method, *(["—"] * 6), m["skipped"])
                )
                continue
            rows.append(
                (
                    f"{cell['photons']:g}",
                    cell["emitters"],
                    method,
                    format_cell(m["coverage_gap"]),
                    format_cell(m["z_sd_ratio"], ".2f"),
                    format_cell(m["signal_var_ratio"], ".2f"),
                    format_cell(m["p_true_count"], ".3f"),
                    format_cell(m["seconds_per_frame"], ".2f"),
                    "yes" if m["calibrated"] else "no",
                    m["flagged"],
                    format_cell(m["gap_to_attained"]),
                )
            )
    return markdown_table(
        [
            "photons",
            "emitters",
            "method",
            "coverage gap",
            "z SD / exact",
            "signal Σvar ratio",
            "P(n = true)",
            "s/frame",
            "calibrated",
            "flagged",
            "gap to attained",
        ],
        rows,
    )


def render(out: Path) -> Path:
    config, metrics = read_json(out, CONFIG), read_json(out, METRICS)
    settings = config["settings"]
    reference = metrics["reference"]
    methods = [reference] + list(settings["methods"])
    heat_maps(metrics, settings, methods, out / FIGURE)
    gap_max, z_tol = metrics["calibrated_rule"]
    flagged = sum(c["reference_flagged"] for c in metrics["cells"])
    frames = sum(c["frames"] for c in metrics["cells"])
    per_cell = sorted({c["frames"] for c in metrics["cells"]})
    body = f"""# Where each posterior stops being trustworthy: photons × density

Preset `{config["preset"]}`, seed {config["seed"]}: {len(metrics["cells"])} cells of
{per_cell[0]}–{per_cell[-1]} fresh frames (at least {settings["frames"]}, and at least
{settings["min_emitters"]} true emitters a cell), {frames} in all (the `paper` task's 20×20 px and radius-7 disc; background
{settings["background"]:g} photons/px; i0 fixed and known). The count is unknown: the reference,
`{reference}`, weighs n − {settings["count_window"]} … n + {settings["count_window"]} by their
evidence (uniform prior over them) and its KDE is the mixture over counts; `laplace` and `auto`
do the same with their own evidence; `nuts`, `chees` and `rwmh` are told n. The reference's own
checks flagged {flagged} of {frames} frames; every frame is scored. No shipped φ, Ψ or NPE
checkpoint was trained with a background, so the networks have no cell here. Wall time
{metrics["wall_seconds"]:.0f} s.

*Calibrated* (the calibration report's thresholds): mean |KDE coverage − the exact posterior's
coverage of the same frames| over 50/90/95 % ≤ {gap_max} on the signal pixels, and z SD within
{100 * z_tol:.0f} % of the exact posterior's. (With a few frames a cell, the
coverage of one truth is noisy — a frame's pixels share its emitters' errors — so a method is
held to the exact posterior on the same frames; the table's last column gives the exact
posterior's own gap to the level it attains in expectation, that noise.)

![validity map]({FIGURE})

## What the numbers say

{chr(10).join(where_words(metrics, settings, methods))}

{count_words(metrics, settings, reference)}

Mean P(n = true) by the frame's closest pair of true emitters (in σ_psf; a frame of one emitter
counts as the widest class), pooled over the cells, frames in brackets:

{count_by_separation(metrics, methods)}

## Every cell

{table(metrics, methods)}
"""
    return write_report(out, body, metrics["provenance"])
