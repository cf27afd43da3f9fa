"""The ``calibration`` report's judgements: each method's verdicts, bars and ranking, in words and
tables written from the saved metrics only (no recomputation).

Used by :mod:`calibration_report` and by the ``validity-map`` study (its calibration bar).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bayes_smlm.compare import schema
from bayes_smlm.compare.schema import format_cell
from bayes_smlm.reporting.markdown import markdown_table

VAR_BARS = (0.8, 0.67, 1.5)  # median Pearson r ≥ 0.8, median Σvar ratio in [0.67, 1.5]
SURROGATES = ("ddpm", "ddpm-recal")
CROWDING = schema.CROWDING_CLASSES[1:]  # signal pixels with no true emitter within 2 px are rare
LEVELS = schema.COVERAGE_LEVELS


def _coverage_verdict(s: dict[str, Any]) -> str:
    if schema.KDE_COVERAGE[90].of(s) is None:
        return "no samples kept: KDE coverage not measured"
    words, signs = [], []
    for level in LEVELS:
        cov, att, se = (
            schema.KDE_COVERAGE[level].of(s),
            schema.KDE_COVERAGE_ATTAINED[level].of(s),
            schema.KDE_COVERAGE_SE[level].of(s),
        )
        tol = max(3 * se, 0.02)
        signs.append(np.sign(cov - att))
        state = (
            "within 3 SE"
            if abs(cov - att) <= tol
            else "over-covers (too wide)"
            if cov > att
            else "under-covers (too narrow)"
        )
        words.append(f"{level} %: {cov:.3f} vs {att:.3f} ({state})")
    text = "; ".join(words)
    if all(sg < 0 for sg in signs):
        text += " — below the exact level at every level: intervals tend to be too narrow"
    elif all(sg > 0 for sg in signs):
        text += " — above the exact level at every level: intervals tend to be too wide"
    return text


def ordered(metrics: dict[str, Any]) -> dict[str, Any]:
    """Methods with the reference first, then in name order."""
    ref, methods = metrics["reference"], metrics["methods"]
    return {ref: methods[ref], **{k: methods[k] for k in sorted(methods) if k != ref}}


def verdicts(metrics: dict[str, Any]) -> list[str]:
    """One plain sentence per method and criterion, from the numbers only."""
    ref = metrics["reference"]
    r_min, lo, hi = VAR_BARS
    lines = []
    for name, m in ordered(metrics).items():
        if name == ref:
            continue
        s = m["scalars"]
        r, ratio = schema.VAR_PEARSON.of(s), schema.VAR_RATIO.of(s)
        shape = "follows" if r >= r_min else "does not follow"
        size = "matches" if lo <= ratio <= hi else "overstates" if ratio > hi else "understates"
        lines.append(
            f"- **{name}** ({schema.FRAMES.of(s)} frames): its variance map {shape} the exact "
            f"one's shape "
            f"(median r = {r:.3f}, bar {r_min}) and {size} the total variance (median Σvar ratio "
            f"= {ratio:.2f}, bar [{lo}, {hi}]); KDE interval coverage — {_coverage_verdict(s)}; "
            f"z-score SD {schema.Z_SD.of(s, float('nan')):.2f} (exact: "
            f"{schema.Z_SD.of(metrics['methods'][ref]['scalars'], float('nan')):.2f}); "
            f"its Gaussian KDE entropy is above the exact one on "
            f"{100 * schema.KDE_ENTROPY_ABOVE.of(s):.0f} % of frames "
            f"(median difference {schema.KDE_ENTROPY_GAP.of(s):+.1f} nats; the paper's "
            f"data-processing argument expects above)."
        )
    return lines


def acceptance(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The surrogate bars against the reference, per surrogate: median r ≥ 0.9, signal Σvar
    ratio in [0.8, 1.25], KDE coverage within ± 0.05 of the reference's at each level, z SD within
    10 % of the reference's, background floor within 2× of the reference's."""
    ref = metrics["methods"][metrics["reference"]]["scalars"]
    rows = []
    for name in SURROGATES:
        if name not in metrics["methods"]:
            continue
        s = metrics["methods"][name]["scalars"]
        checks = {
            "r ≥ 0.9": schema.VAR_PEARSON.of(s) >= 0.9,
            "signal Σvar ratio in [0.8, 1.25]": 0.8 <= schema.SIGNAL_RATIO.of(s) <= 1.25,
        }
        for lv in LEVELS:
            if schema.KDE_COVERAGE[lv].of(s) is not None:
                checks[f"cover {lv} % ± 0.05"] = (
                    abs(schema.KDE_COVERAGE[lv].of(s) - schema.KDE_COVERAGE[lv].of(ref)) <= 0.05
                )
        if schema.Z_SD.of(s) is not None:
            checks["z SD ± 10 %"] = abs(schema.Z_SD.of(s) / schema.Z_SD.of(ref) - 1) <= 0.10
        floor, ref_floor = schema.BACKGROUND_FLOOR.of(s), schema.REFERENCE_FLOOR.of(ref)
        checks["floor ≤ 2× reference"] = floor <= 2 * ref_floor
        rows.append({"method": name, "checks": checks})
    return rows


def acceptance_table(metrics: dict[str, Any]) -> str:
    """The surrogate bars of :func:`acceptance` as a markdown section (empty without a surrogate)."""
    rows = acceptance(metrics)
    if not rows:
        return ""
    names = list(rows[0]["checks"])
    table = markdown_table(
        ["method", *names],
        [(r["method"], *("pass" if r["checks"][n] else "**fail**" for n in names)) for r in rows],
    )
    return (
        f"### Surrogate bars against `{metrics['reference']}`\n\n{table}\n\nThe exact "
        f"posterior's background variance is 0 to float precision (its floor reads 0), so "
        f'"within 2×" asks a sampler for an exactly noiseless background.\n'
    )


CALIBRATED = (0.05, 0.10)  # mean |coverage − attained| over 50/90/95 %; |z SD / exact − 1|


def ranking(metrics: dict[str, Any]) -> str:
    """Every method ranked by calibration against the reference (mean gap of its KDE coverage to
    the level the reference attains, then its z SD over the reference's) beside its cost, and
    the cheapest calibrated one named — all from the numbers."""
    ref_name = metrics["reference"]
    ref = metrics["methods"][ref_name]["scalars"]
    ref_cost, ref_z = schema.SECONDS_PER_FRAME.of(ref), schema.Z_SD.of(ref)
    rows = []
    for name in (n for n in ordered(metrics) if n != ref_name):
        s = metrics["methods"][name]["scalars"]
        gaps = [
            abs(schema.KDE_COVERAGE[lv].of(s) - schema.KDE_COVERAGE_ATTAINED[lv].of(s))
            for lv in LEVELS
            if schema.KDE_COVERAGE[lv].of(s) is not None
        ]
        gap = float(np.mean(gaps)) if gaps else float("nan")
        z_ratio = schema.Z_SD.of(s, float("nan")) / ref_z
        rows.append(
            {
                "name": name,
                "gap": gap,
                "z": z_ratio,
                "cost": schema.SECONDS_PER_FRAME.of(s),
                "calibrated": gap <= CALIBRATED[0] and abs(z_ratio - 1) <= CALIBRATED[1],
            }
        )
    if not rows:
        return ""
    rows.sort(key=lambda r: (np.nan_to_num(r["gap"], nan=np.inf), abs(r["z"] - 1)))
    table = markdown_table(
        [
            "rank",
            "method",
            "mean coverage gap",
            "z SD / exact",
            "s/frame",
            f"cost / {ref_name}",
            "calibrated",
        ],
        [
            (
                k + 1,
                r["name"],
                format_cell(r["gap"], ".3f"),
                format_cell(r["z"], ".2f"),
                format_cell(r["cost"], ".4f"),
                format_cell(r["cost"] / ref_cost, ".3g"),
                "yes" if r["calibrated"] else "no",
            )
            for k, r in enumerate(rows)
        ],
    )
    good = [r for r in rows if r["calibrated"]]
    if good:
        best = min(good, key=lambda r: r["cost"])
        advice = (
            f"The cheapest calibrated method here is **{best['name']}** at "
            f"{best['cost'] / ref_cost:.3g}× the cost of the exact `{ref_name}`"
            + (
                " — cheaper than the exact answer: use it when many frames need an answer "
                "and its coverage gap is tolerable."
                if best["cost"] < ref_cost
                else " — no cheaper than the exact answer, which is then the one to use."
            )
        )
    else:
        advice = (
            f"No method other than the exact `{ref_name}` is calibrated by this bar: use "
            f"`{ref_name}` where uncertainty matters; the others' maps show where spread "
            "is, not how much."
        )
    return (
        f"### Ranking by calibration and cost\n\nMean gap over 50/90/95 % between a method's "
        f"KDE coverage and the coverage the exact posterior attains, then z SD over the "
        f"exact one's; *calibrated* = gap ≤ {CALIBRATED[0]} and z SD within "
        f"{100 * CALIBRATED[1]:.0f} % of the exact one's.\n\n{table}\n\n{advice}\n"
    )


def crowding_words(metrics: dict[str, Any]) -> list[str]:
    """Plain sentences: where each surrogate agrees with the reference by crowding, and its cost."""
    ref_name = metrics["reference"]
    ref = metrics["methods"][ref_name]["scalars"]
    lines = []
    for name in (n for n in ordered(metrics) if n != ref_name):
        s = metrics["methods"][name]["scalars"]
        parts = []
        for cls in CROWDING:
            c, r = schema.BY_CROWDING.of(s, {}).get(cls), schema.BY_CROWDING.of(ref, {}).get(cls)
            if not c or not r:
                continue
            cover90, z_sd = schema.CROWD_COVERAGE[90], schema.CROWD_Z_SD
            gap = c[cover90] - r[cover90]
            state = (
                "coverage agrees"
                if abs(gap) <= 0.05
                else "intervals too narrow"
                if gap < 0
                else "intervals too wide"
            )
            z_ratio = c[z_sd] / r[z_sd]
            state += (
                ""
                if abs(z_ratio - 1) <= 0.1
                else ", z-scores wider"
                if z_ratio > 1
                else ", z-scores narrower"
            )
            label = {"1": "one emitter near", "2": "close pairs", ">=3": "three or more"}[cls]
            parts.append(
                f"{label}: {state} (90 % cover {c[cover90]:.3f} vs "
                f"{r[cover90]:.3f}, z SD {c[z_sd]:.2f} vs {r[z_sd]:.2f}, "
                f"{c[schema.CROWD_PIXELS]} px)"
            )
        cost = schema.SECONDS_PER_FRAME.of(s) / schema.SECONDS_PER_FRAME.of(ref)
        lines.append(
            f"- **{name}** by crowding — {'; '.join(parts)}. Its background floor is "
            f"{schema.BACKGROUND_FLOOR.of(s):.1e} (reference "
            f"{schema.REFERENCE_FLOOR.of(ref):.1e}). Cost: "
            f"{schema.SECONDS_PER_FRAME.of(s):.2f} s/frame, {cost:.1f}× `{ref_name}`'s "
            f"{schema.SECONDS_PER_FRAME.of(ref):.2f} s/frame on this machine."
        )
    if lines:
        lines.append(
            f"- The reference's rows are over all its {schema.FRAMES.of(ref)} scored "
            f"frames; a "
            f"surrogate run on fewer frames is compared with that estimate of what an "
            f"exact posterior attains."
        )
    return lines
