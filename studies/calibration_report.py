"""Rendering of the ``calibration`` study's report from its saved files only (no recomputation).

Used by the study itself and by ``bayes-smlm report DIR``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from bayes_smlm.studies.calibration_verdicts import (
    CROWDING,
    LEVELS,
    SURROGATES,
    acceptance_table,
    crowding_words,
    ordered,
    ranking,
    verdicts,
)
from bayes_smlm.studies.hard_frames import hard_frames_section

from bayes_smlm.compare import schema, variance_ratio_map
from bayes_smlm.compare.schema import format_cell
from bayes_smlm.io.posteriors import load_posterior
from bayes_smlm.io.study_files import METRICS, load_frames, posterior_path, read_json
from bayes_smlm.reporting import figures
from bayes_smlm.reporting.diagnose import diagnose_section
from bayes_smlm.reporting.markdown import markdown_table, write_report

TABLE_VARIANCE = (
    schema.FRAMES,
    schema.SECONDS_PER_FRAME,
    schema.VAR_PEARSON,
    schema.VAR_RATIO,
    schema.KDE_ENTROPY,
    schema.KDE_ENTROPY_GAP,
    schema.THETA_ENTROPY_GAUSS,
    schema.THETA_ENTROPY_KNN,
)
TABLE_CALIBRATION = (schema.Z_SD, schema.Z_ABS_GT_3, schema.SBC_MIN_P, schema.THETA_COVERAGE[90])
TABLE_CRLB = (
    schema.SD_RATIO["x"],
    schema.SD_RATIO["y"],
    schema.RMSE_RATIO["x"],
    schema.RMSE_RATIO["y"],
    schema.RHAT_MAX,
    schema.ESS_BULK_MIN,
    schema.ESS_TAIL_MIN,
    schema.MCSE_MEAN_MAX,
    schema.DIVERGENCES,
)
TABLE_REGIONS = (
    schema.FRAMES,
    schema.VAR_PEARSON,
    schema.VAR_RATIO,
    schema.SIGNAL_PEARSON,
    schema.SIGNAL_RATIO,
    schema.BACKGROUND_FLOOR,
    schema.REFERENCE_FLOOR,
    schema.BACKGROUND_SHARE,
)


def _metric_table(methods: dict[str, Any], columns, extra=lambda s: ()) -> list[tuple]:
    """One row per method: its name, ``extra(scalars)`` cells, then the ``columns`` metrics."""
    return [
        (name, *extra(m["scalars"]), *(c.cell(m["scalars"]) for c in columns))
        for name, m in methods.items()
    ]


def _tables(metrics: dict[str, Any]) -> str:
    methods = ordered(metrics)

    def coverage(s):
        return tuple(
            f"{schema.KDE_COVERAGE[lv].cell(s)} ± {schema.KDE_COVERAGE_SE[lv].cell(s)}"
            for lv in LEVELS
        )

    rows3 = _metric_table(methods, TABLE_CRLB)
    phi = metrics["phi_log"]
    rows3.append(
        (
            "φ + LoG (point estimate)",
            "—",
            "—",
            format_cell(phi["rmse_ratio"][0], ".2f"),
            format_cell(phi["rmse_ratio"][1], ".2f"),
            "—",
            "—",
            "—",
            "—",
            "—",
        )
    )
    attained = next(
        (
            m["scalars"]
            for m in methods.values()
            if schema.KDE_COVERAGE_ATTAINED[50].of(m["scalars"]) is not None
        ),
        None,
    )
    att = (
        "an exact posterior attains "
        + " / ".join(f"{schema.KDE_COVERAGE_ATTAINED[lv].of(attained):.3f}" for lv in LEVELS)
        if attained
        else ""
    )
    t1 = markdown_table(
        ["method", *(c.label for c in TABLE_VARIANCE)], _metric_table(methods, TABLE_VARIANCE)
    )
    t2 = markdown_table(
        [
            "method",
            *(schema.KDE_COVERAGE[lv].label for lv in LEVELS),
            *(c.label for c in TABLE_CALIBRATION),
        ],
        _metric_table(methods, TABLE_CALIBRATION, coverage),
    )
    t3 = markdown_table(["method", *(c.label for c in TABLE_CRLB)], rows3)
    return (
        f"### Variance maps, entropy and cost\n\n{t1}\n\n"
        f"### Calibration\n\nKDE coverage: mean over frames ± SE; with "
        f"S = {metrics['kde_samples']} samples per pixel {att} (50 / 90 / 95 %).\n\n{t2}\n\n"
        f"### CRLB gaps and MCMC diagnostics\n\n{t3}\n"
    )


def _region_tables(metrics: dict[str, Any]) -> str:
    methods = ordered(metrics)
    crowd_rows = []
    for name, m in methods.items():
        for cls in CROWDING:
            c = schema.BY_CROWDING.of(m["scalars"], {}).get(cls)
            if c:
                crowd_rows.append(
                    (
                        name,
                        cls,
                        c[schema.CROWD_PIXELS],
                        *(format_cell(c[schema.CROWD_COVERAGE[lv]]) for lv in LEVELS),
                        format_cell(c[schema.CROWD_Z_SD], ".2f"),
                    )
                )
    t1 = markdown_table(
        ["method", *(c.label for c in TABLE_REGIONS)], _metric_table(methods, TABLE_REGIONS)
    )
    t2 = markdown_table(
        [
            "method",
            "true emitters within 2 px",
            "signal pixels",
            *(f"cover {lv} %" for lv in LEVELS),
            schema.Z_SD.label,
        ],
        crowd_rows,
    )
    separation_rows = [
        (
            name,
            cls,
            c[schema.CROWD_PIXELS],
            *(format_cell(c[schema.CROWD_COVERAGE[lv]]) for lv in LEVELS),
            format_cell(c[schema.CROWD_Z_SD], ".2f"),
        )
        for name, m in methods.items()
        for cls in schema.SEPARATION_CLASSES
        if (c := schema.BY_SEPARATION.of(m["scalars"], {}).get(cls))
    ]
    t3 = markdown_table(
        [
            "method",
            "nearest neighbour (σ_psf)",
            "signal pixels",
            *(f"cover {lv} %" for lv in LEVELS),
            schema.Z_SD.label,
        ],
        separation_rows,
    )
    return (
        f"### Where the signal is, and where it is not\n\nMedians over frames. *Signal*: "
        f"reference mean ≥ 0.05; *background*: reference mean < 0.01, where the exact "
        f"variance is ≈ 0; its *floor* is the median posterior SD there (KDE units); the last "
        f"column is the share of a method's summed variance that lies on the background.\n\n"
        f"{t1}\n\n### Calibration by crowding\n\nSignal pixels pooled over frames by how "
        f"many true emitters lie within 2 LR px of the pixel centre.\n\n{t2}\n\n"
        f"### Calibration by separation\n\nSignal pixels pooled by the distance from "
        f"their nearest true emitter to that emitter's nearest neighbour, in units of "
        f"σ_psf.\n\n{t3}\n"
    )


def _figures(out: Path, metrics: dict[str, Any], config: dict[str, Any]) -> str:
    from scipy import stats

    methods, ref = ordered(metrics), metrics["reference"]
    frames = load_frames(out)
    maps = {
        name: load_posterior(posterior_path(out, name))["kde"].dataset
        for name in methods
        if posterior_path(out, name).is_file()
    }
    ref_var = maps[ref]["var"].values[0]
    zoom = figures.peak_window(maps[ref]["mean"].values[0])
    panels = [
        [
            ("frame 0 (ADU)", frames["adu"][0], "gray"),
            ("true KDE y0 (zoom)", zoom(frames["kde"][0]), "magma"),
        ]
    ]
    for name, kde in maps.items():
        var = kde["var"].values[0]
        panels.append(
            [
                (f"{name}: mean", zoom(kde["mean"].values[0]), "magma"),
                (f"{name}: SD", zoom(np.sqrt(var)), "viridis"),
                (f"{name}: log10 var / {ref}", zoom(variance_ratio_map(var, ref_var)), "RdBu_r"),
            ]
        )
    figures.image_grid(panels, out / "maps.png")
    ranks = {
        n: np.asarray(schema.SBC_RANKS.of(m["scalars"]))
        for n, m in methods.items()
        if schema.SBC_RANKS.of(m["scalars"]) is not None
    }
    text = "![maps](maps.png)\n\n"
    if ranks:
        figures.rank_histograms(ranks, 99, 10, out / "sbc_ranks.png")
        text += "![SBC ranks](sbc_ranks.png)\n\n"
    cov = {
        n: tuple(
            np.array([metric[lv].of(m["scalars"]) for lv in LEVELS])
            for metric in (
                schema.KDE_COVERAGE_ATTAINED,
                schema.KDE_COVERAGE,
                schema.KDE_COVERAGE_SE,
            )
        )
        for n, m in methods.items()
        if schema.KDE_COVERAGE[50].of(m["scalars"]) is not None
    }
    if cov:
        figures.coverage_plot(
            cov, out / "coverage.png", xlabel="level an exact posterior attains with S samples"
        )
        figures.histograms(
            {n: schema.Z_HISTOGRAM.of(methods[n]["scalars"]) for n in cov},
            np.linspace(-6, 6, 49),
            out / "z_scores.png",
            xlabel="z = (y0 − mean) / SD over signal pixels",
            reference_pdf=stats.norm.pdf,
        )
        text += "![coverage](coverage.png) ![z-scores](z_scores.png)\n\n"
    if metrics.get("cost_by_emitters"):
        figures.cost_plot(metrics["cost_by_emitters"], out / "cost.png")
        text += "![cost](cost.png)\n\n"
    return text + diagnose_section(out, [ref, "nuts", *methods])


def render(out: str | Path) -> Path:
    """Write ``out/report.md`` and its figures from ``metrics.json``, ``config.json``, the frames
    and the saved posteriors."""
    out = Path(out)
    metrics = read_json(
        out,
        METRICS,
        required=(
            "methods",
            "reference",
            "phi_log",
            "failures",
            "kde_samples",
            "wall_seconds",
            "provenance",
        ),
    )
    config = read_json(out, "config.json", required=("settings", "task", "preset", "seed"))
    settings = config["settings"]
    rows = [
        (r["method"], r["emitters"], r["frames"], format_cell(r["seconds_per_frame"], ".2f"))
        for r in metrics.get("cost_by_emitters", [])
    ]
    for name in SURROGATES[:1]:  # a surrogate not re-timed in the sweep: its main-run cost
        if name in metrics["methods"] and not any(r[0] == name for r in rows):
            m = metrics["methods"][name]["scalars"]
            rows.append(
                (
                    f"{name} (the frames above)",
                    config["task"]["prior"]["n_emitters"],
                    schema.FRAMES.of(m),
                    format_cell(schema.SECONDS_PER_FRAME.of(m), ".2f"),
                )
            )
    cost_rows = markdown_table(["method", "emitters / frame", "frames", "s/frame"], rows)
    failures = "".join(f"- `{k}` was skipped: {v}\n" for k, v in metrics["failures"].items())
    task = config["task"]
    n_emitters = task["prior"]["n_emitters"]
    flagged = metrics.get("reference_flagged", {"frames": 0, "of": len(load_frames(out)["adu"])})
    dense = n_emitters > 1
    checks = (
        "its runs disagree (log Z or summed variance) or one did not reach the posterior"
        if metrics["reference"] == "smc"
        else "R-hat > 1.01 or bulk ESS < 400"
    )
    reference_words = (
        f"`{metrics['reference']}` (exact up to Monte Carlo error); "
        f"**{flagged['frames']} of {flagged['of']} frames failed its own checks** ({checks}) "
        f"and are left out of every score"
        if dense
        else f"`{metrics['reference']}`, the exact grid posterior"
    )
    limits = (
        settings.get("dense_frame_limits", settings["frame_limits"])
        if dense
        else settings["frame_limits"]
    )
    draws = settings.get("dense_draws", settings["draws"]) if dense else settings["draws"]
    body = f"""# Calibration of every posterior method (`{config.get("task_name", "isolated")}` task)

Preset `{config["preset"]}`, seed {config["seed"]}: {flagged["of"]} fresh frames (simulation
seed {config["fresh_seed"]}) of {n_emitters} emitter(s), i0 = {task["prior"]["i0"]:g} photons.
Reference: {reference_words}. θ methods draw {settings["chains"]} chains × {draws}; methods with
a frame limit ({limits}) run on the first frames only and are compared on those. Method options:
`{settings["method_options"]}`; `ddpm-recal` is the same DDPM samples with the checkpoint's
post-hoc spread recalibration (fitted on separate frames;
`bayes_smlm.surrogates.psi.recalibration`). Wall time of the whole study: {metrics["wall_seconds"]:.0f} s.

How to read it. *Variance maps*: per frame, the Pearson correlation over the 80×80 KDE pixels of
a method's per-pixel posterior variance with the reference's, and the ratio of their sums
(medians over frames). *Entropy*: the per-pixel Gaussian entropy ½ log(2πe σ²) summed over the
signal pixels (reference mean ≥ 0.05 of a kernel peak) — a log-scale spread; θ entropies are for
the posterior of (x, y). *KDE coverage*: the fraction of signal pixels whose true KDE value lies in
the method's central interval made of order statistics of S samples; an exact posterior attains
the level given under the table, not the nominal one. z = (y0 − mean)/SD: pixel marginals are
skewed, so even an exact posterior's z is not N(0, 1), but a method with SD too small shows a
wider z. *SBC*: rank of the true (x, y) among 99 thinned draws; χ² test on 10 bins (uniform if
calibrated). *CRLB gaps*: posterior SD and the RMSE of the posterior mean, each over √CRLB at the
true position (SD ≈ 1 for a posterior as sharp as the data allow; `rwmh_paper` samples
p(θ|x)^0.2, √5 ≈ 2.24 times wider). Diagnostics are arviz-stats rank R-hat, ESS and MCSE per frame
(worst over frames).

## Headline

{_tables(metrics)}
{_region_tables(metrics)}
{acceptance_table(metrics)}
{hard_frames_section(metrics)}
## Where the surrogates agree with the exact posterior, and where not

{ranking(metrics)}

{chr(10).join(verdicts(metrics))}

{chr(10).join(crowding_words(metrics))}

{failures}
## Figures

{_figures(out, metrics, config)}
## Cost against emitters per frame

NUTS and ChEES on `paper`-density frames with {", ".join(map(str, settings["cost_emitters"]))} emitters; the DDPM's
network pass does not depend on the number of emitters (it is timed at the two ends with this
task's shipped Ψ, or, where a preset skips that, on the frames above).

{cost_rows}
"""
    return write_report(out, body, metrics["provenance"])
