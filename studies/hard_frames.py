"""The frames NUTS alone would have lost: which they are, and how every method does on them.

The dense calibration study's reference is ``smc`` on every frame; NUTS is one of the methods
compared. Its flagged frames (R-hat > 1.01, bulk ESS < 400 or a divergence: close pairs whose
chains stick) used to be dropped from every score. :func:`hard_frames` records them with each
method's per-frame scores against the reference; :func:`hard_frames_section` renders them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from bayes_smlm.compare import schema
from bayes_smlm.compare.schema import format_cell
from bayes_smlm.reporting.markdown import markdown_table

SCORES = (
    ("var_pearson", "var r"),
    ("region_signal_ratio", "signal Σvar ratio"),
    (schema.KDE_COVERAGE[90].key, "cover 90 %"),
)


def hard_frames(
    results: Mapping[str, Any],
    metrics: Mapping[str, Any],
    scored: np.ndarray,
    sampler: str = "nuts",
) -> dict[str, Any]:
    """``{"sampler", "indices", "rows"}``: the frames ``sampler`` flags (indices into the
    study's frames), its worst R-hat on each, and every method's per-frame scores there
    (``scored``: (F,) bool, the frames scored; methods with a frame limit only on theirs)."""
    if sampler not in results:
        return {"sampler": sampler, "indices": [], "rows": []}
    result = results[sampler]
    flagged = np.flatnonzero(result.flagged)
    position = np.cumsum(scored) - 1  # study frame -> index among the scored frames
    rhat = (
        np.nanmax(result.diagnostics.rhat, axis=(1, 2))
        if result.diagnostics is not None
        else np.full(result.n_frames, np.nan)
    )
    rows = []
    for frame in flagged:
        row: dict[str, Any] = {
            "frame": int(frame),
            "rhat": float(rhat[frame]),
            "scored": bool(scored[frame]),
            "methods": {},
        }
        if scored[frame]:
            for name, m in metrics["methods"].items():
                per_frame = m["per_frame"]
                i = int(position[frame])
                row["methods"][name] = {
                    key: (
                        float(per_frame[key][i])
                        if key in per_frame and i < len(per_frame[key])
                        else None
                    )
                    for key, _ in SCORES
                }
        rows.append(row)
    return {"sampler": sampler, "indices": flagged.tolist(), "rows": rows}


def hard_frames_section(metrics: Mapping[str, Any]) -> str:
    """Markdown: the frames NUTS flags and every method's scores on them (empty when the
    study has none recorded)."""
    hard = metrics.get("hard_frames")
    if not hard or not hard["rows"]:
        return ""
    reference = metrics["reference"]
    rows = []
    for row in hard["rows"]:
        for name, scores in row["methods"].items():
            if name == reference or all(v is None for v in scores.values()):
                continue
            rows.append(
                (
                    row["frame"],
                    f"{row['rhat']:.2f}",
                    name,
                    *(format_cell(scores[key]) for key, _ in SCORES),
                )
            )
    table = markdown_table(
        ["frame", f"{hard['sampler']} R-hat", "method", *(label for _, label in SCORES)], rows
    )
    return (
        f"### The frames `{hard['sampler']}` alone would have lost\n\n"
        f"{len(hard['rows'])} frame(s) fail `{hard['sampler']}`'s own diagnostics "
        f"(frames {', '.join(map(str, hard['indices']))}); against the `{reference}` "
        f"reference, which scores every frame, each method does there:\n\n{table}\n"
    )
