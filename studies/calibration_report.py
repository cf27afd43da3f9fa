"""Rendering of the ``calibration`` study's report from its saved files only (no recomputation).

Used by the study itself and by ``bayes-smlm report DIR``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bayes_smlm.report import markdown_table, write_report
from bayes_smlm.study_io import METRICS, load_frames, posterior_path, read_json

VAR_BARS = (0.8, 0.67, 1.5)  # median Pearson r ≥ 0.8, median Σvar ratio in [0.67, 1.5]
SURROGATES = ("ddpm", "ddpm-recal")
CROWDING = ("1", "2", ">=3")


def _fmt(value: Any, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "—"
    return format(value, spec) if isinstance(value, (float, int)) else str(value)


def _coverage_verdict(s: dict[str, Any]) -> str:
    if "kde_coverage_90" not in s:
        return "no samples kept: KDE coverage not measured"
    words, signs = [], []
    for level in (50, 90, 95):
        cov, att, se = (s[f"kde_coverage_{level}"], s[f"kde_coverage_{level}_attained"],
                        s[f"kde_coverage_{level}_se"])
        tol = max(3 * se, 0.02)
        signs.append(np.sign(cov - att))
        state = ("within 3 SE" if abs(cov - att) <= tol else
                 "over-covers (too wide)" if cov > att else "under-covers (too narrow)")
        words.append(f"{level} %: {cov:.3f} vs {att:.3f} ({state})")
    text = "; ".join(words)
    if all(sg < 0 for sg in signs):
        text += " — below the exact level at every level: intervals tend to be too narrow"
    elif all(sg > 0 for sg in signs):
        text += " — above the exact level at every level: intervals tend to be too wide"
    return text


def _ordered(metrics: dict[str, Any]) -> dict[str, Any]:
    """Methods with the reference first, then in name order."""
    ref, methods = metrics["reference"], metrics["methods"]
    return {ref: methods[ref], **{k: methods[k] for k in sorted(methods) if k != ref}}


def verdicts(metrics: dict[str, Any]) -> list[str]:
    """One plain sentence per method and criterion, from the numbers only."""
    ref = metrics["reference"]
    r_min, lo, hi = VAR_BARS
    lines = []
    for name, m in _ordered(metrics).items():
        if name == ref:
            continue
        s = m["scalars"]
        r, ratio = s["var_pearson_median"], s["var_ratio_median"]
        shape = "follows" if r >= r_min else "does not follow"
        size = ("matches" if lo <= ratio <= hi else
                "overstates" if ratio > hi else "understates")
        lines.append(
            f"- **{name}** ({s['frames']} frames): its variance map {shape} the exact one's shape "
            f"(median r = {r:.3f}, bar {r_min}) and {size} the total variance (median Σvar ratio "
            f"= {ratio:.2f}, bar [{lo}, {hi}]); KDE interval coverage — {_coverage_verdict(s)}; "
            f"z-score SD {s.get('z_sd', float('nan')):.2f} (exact: "
            f"{metrics['methods'][ref]['scalars'].get('z_sd', float('nan')):.2f}); "
            f"its Gaussian KDE entropy is above the exact one on "
            f"{100 * s['kde_entropy_above_reference']:.0f} % of frames "
            f"(median difference {s['kde_entropy_minus_reference_median']:+.1f} nats; the paper's "
            f"data-processing argument expects above).")
    return lines


def _tables(metrics: dict[str, Any]) -> str:
    methods = _ordered(metrics)
    rows1, rows2, rows3 = [], [], []
    for name, m in methods.items():
        s = m["scalars"]
        rows1.append((name, s["frames"], _fmt(s["seconds_per_frame"]),
                      _fmt(s["var_pearson_median"]), _fmt(s["var_ratio_median"], ".2f"),
                      _fmt(s["kde_entropy_median"], ".1f"),
                      _fmt(s["kde_entropy_minus_reference_median"], "+.1f"),
                      _fmt(s.get("theta_entropy_gauss_median"), ".2f"),
                      _fmt(s.get("theta_entropy_knn_median"), ".2f")))
        cov = [f"{_fmt(s.get(f'kde_coverage_{lv}'))} ± {_fmt(s.get(f'kde_coverage_{lv}_se'))}"
               for lv in (50, 90, 95)]
        rows2.append((name, *cov, _fmt(s.get("z_sd"), ".2f"), _fmt(s.get("z_abs_gt_3"), ".4f"),
                      _fmt(s.get("sbc_min_pvalue"), ".3f"), _fmt(s.get("theta_coverage_90"))))
        rows3.append((name, _fmt(s.get("sd_ratio_x"), ".2f"), _fmt(s.get("sd_ratio_y"), ".2f"),
                      _fmt(s.get("rmse_ratio_x"), ".2f"), _fmt(s.get("rmse_ratio_y"), ".2f"),
                      _fmt(s.get("rhat_max")), _fmt(s.get("ess_bulk_min"), ".0f"),
                      _fmt(s.get("ess_tail_min"), ".0f"), _fmt(s.get("mcse_mean_max"), ".4f"),
                      _fmt(s.get("divergences"), "d")))
    phi = metrics["phi_log"]
    rows3.append(("φ + LoG (point estimate)", "—", "—", _fmt(phi["rmse_ratio"][0], ".2f"),
                  _fmt(phi["rmse_ratio"][1], ".2f"), "—", "—", "—", "—", "—"))
    attained = next((m["scalars"] for m in methods.values() if "kde_coverage_50_attained"
                     in m["scalars"]), None)
    att = ("an exact posterior attains " + " / ".join(
        f"{attained[f'kde_coverage_{lv}_attained']:.3f}" for lv in (50, 90, 95))
        if attained else "")
    t1 = markdown_table(["method", "frames", "s/frame", "var map r (median)",
                         "Σvar ratio (median)", "KDE entropy (nats, median)",
                         "Δ entropy vs reference", "θ entropy Gaussian", "θ entropy k-NN"], rows1)
    t2 = markdown_table(["method", "KDE cover 50 %", "KDE cover 90 %", "KDE cover 95 %",
                         "z SD", "P(|z| > 3)", "SBC min p", "θ cover 90 %"], rows2)
    t3 = markdown_table(["method", "SD/√CRLB x", "SD/√CRLB y", "RMSE/√CRLB x", "RMSE/√CRLB y",
                         "max R-hat", "min bulk ESS", "min tail ESS", "max MCSE (px)",
                         "divergences"], rows3)
    return (f"### Variance maps, entropy and cost\n\n{t1}\n\n"
            f"### Calibration\n\nKDE coverage: mean over frames ± SE; with "
            f"S = {metrics['kde_samples']} samples per pixel {att} (50 / 90 / 95 %).\n\n{t2}\n\n"
            f"### CRLB gaps and MCMC diagnostics\n\n{t3}\n")


def _region_tables(metrics: dict[str, Any]) -> str:
    rows, crowd_rows = [], []
    for name, m in _ordered(metrics).items():
        s = m["scalars"]
        rows.append((name, s["frames"], _fmt(s["var_pearson_median"]),
                     _fmt(s["var_ratio_median"], ".2f"), _fmt(s.get("signal_pearson_median")),
                     _fmt(s.get("signal_ratio_median"), ".2f"),
                     _fmt(s.get("background_floor_median"), ".2e"),
                     _fmt(s.get("reference_background_floor_median"), ".2e"),
                     _fmt(s.get("background_share_median"), ".3f")))
        for cls in CROWDING:
            c = s.get("by_crowding", {}).get(cls)
            if c:
                crowd_rows.append((name, cls, c["pixels"], _fmt(c["coverage_50"]),
                                   _fmt(c["coverage_90"]), _fmt(c["coverage_95"]),
                                   _fmt(c["z_sd"], ".2f")))
    t1 = markdown_table(["method", "frames", "r (whole)", "Σvar ratio (whole)", "r (signal)",
                         "Σvar ratio (signal)", "background SD floor", "reference floor",
                         "variance share on background"], rows)
    t2 = markdown_table(["method", "true emitters within 2 px", "signal pixels", "cover 50 %",
                         "cover 90 %", "cover 95 %", "z SD"], crowd_rows)
    return (f"### Where the signal is, and where it is not\n\nMedians over frames. *Signal*: "
            f"reference mean ≥ 0.05; *background*: reference mean < 0.01, where the exact "
            f"variance is ≈ 0; its *floor* is the median posterior SD there (KDE units); the last "
            f"column is the share of a method's summed variance that lies on the background.\n\n"
            f"{t1}\n\n### Calibration by crowding\n\nSignal pixels pooled over frames by how "
            f"many true emitters lie within 2 LR px of the pixel centre.\n\n{t2}\n")


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
        checks = {"r ≥ 0.9": s["var_pearson_median"] >= 0.9,
                  "signal Σvar ratio in [0.8, 1.25]": 0.8 <= s["signal_ratio_median"] <= 1.25}
        for lv in (50, 90, 95):
            if f"kde_coverage_{lv}" in s:
                checks[f"cover {lv} % ± 0.05"] = abs(s[f"kde_coverage_{lv}"]
                                                     - ref[f"kde_coverage_{lv}"]) <= 0.05
        if "z_sd" in s:
            checks["z SD ± 10 %"] = abs(s["z_sd"] / ref["z_sd"] - 1) <= 0.10
        floor, ref_floor = s["background_floor_median"], ref["reference_background_floor_median"]
        checks["floor ≤ 2× reference"] = floor <= 2 * ref_floor
        rows.append({"method": name, "checks": checks})
    return rows


def _acceptance_table(metrics: dict[str, Any]) -> str:
    rows = acceptance(metrics)
    if not rows:
        return ""
    names = list(rows[0]["checks"])
    table = markdown_table(["method", *names],
                           [(r["method"], *("pass" if r["checks"][n] else "**fail**"
                                            for n in names)) for r in rows])
    return (f"### Surrogate bars against `{metrics['reference']}`\n\n{table}\n\nThe exact "
            f"posterior's background variance is 0 to float precision (its floor reads 0), so "
            f"\"within 2×\" asks a sampler for an exactly noiseless background.\n")


def crowding_words(metrics: dict[str, Any]) -> list[str]:
    """Plain sentences: where each surrogate agrees with the reference by crowding, and its cost."""
    ref_name = metrics["reference"]
    ref = metrics["methods"][ref_name]["scalars"]
    lines = []
    for name in SURROGATES:
        if name not in metrics["methods"]:
            continue
        s = metrics["methods"][name]["scalars"]
        parts = []
        for cls in CROWDING:
            c, r = s.get("by_crowding", {}).get(cls), ref.get("by_crowding", {}).get(cls)
            if not c or not r:
                continue
            gap = c["coverage_90"] - r["coverage_90"]
            state = ("coverage agrees" if abs(gap) <= 0.05 else
                     "intervals too narrow" if gap < 0 else "intervals too wide")
            z_ratio = c["z_sd"] / r["z_sd"]
            state += ("" if abs(z_ratio - 1) <= 0.1 else
                      ", z-scores wider" if z_ratio > 1 else ", z-scores narrower")
            label = {"1": "one emitter near", "2": "close pairs", ">=3": "three or more"}[cls]
            parts.append(f"{label}: {state} (90 % cover {c['coverage_90']:.3f} vs "
                         f"{r['coverage_90']:.3f}, z SD {c['z_sd']:.2f} vs {r['z_sd']:.2f}, "
                         f"{c['pixels']} px)")
        cost = s["seconds_per_frame"] / ref["seconds_per_frame"]
        lines.append(f"- **{name}** by crowding — {'; '.join(parts)}. Its background floor is "
                     f"{s['background_floor_median']:.1e} (reference "
                     f"{ref['reference_background_floor_median']:.1e}). Cost: "
                     f"{s['seconds_per_frame']:.2f} s/frame, {cost:.1f}× `{ref_name}`'s "
                     f"{ref['seconds_per_frame']:.2f} s/frame on this machine.")
    if lines:
        lines.append(f"- The reference's rows are over all its {ref['frames']} scored frames; a "
                     f"surrogate run on fewer frames is compared with that estimate of what an "
                     f"exact posterior attains.")
    return lines


def _figures(out: Path, metrics: dict[str, Any], config: dict[str, Any]) -> str:
    from scipy import stats
    from bayes_smlm import figures
    from bayes_smlm.compare import variance_ratio_map
    from bayes_smlm.posterior_io import load_posterior
    methods, ref = _ordered(metrics), metrics["reference"]
    frames = load_frames(out)
    maps = {name: load_posterior(posterior_path(out, name))["kde"].dataset
            for name in methods if posterior_path(out, name).is_file()}
    ref_var = maps[ref]["var"].values[0]
    zoom = figures.peak_window(maps[ref]["mean"].values[0])
    panels = [[("frame 0 (ADU)", frames["adu"][0], "gray"),
               ("true KDE y0 (zoom)", zoom(frames["kde"][0]), "magma")]]
    for name, kde in maps.items():
        var = kde["var"].values[0]
        panels.append([(f"{name}: mean", zoom(kde["mean"].values[0]), "magma"),
                       (f"{name}: SD", zoom(np.sqrt(var)), "viridis"),
                       (f"{name}: log10 var / {ref}", zoom(variance_ratio_map(var, ref_var)),
                        "RdBu_r")])
    figures.image_grid(panels, out / "maps.png")
    ranks = {n: np.asarray(m["scalars"]["sbc_ranks"]) for n, m in methods.items()
             if "sbc_ranks" in m["scalars"]}
    text = "![maps](maps.png)\n\n"
    if ranks:
        figures.rank_histograms(ranks, 99, 10, out / "sbc_ranks.png")
        text += "![SBC ranks](sbc_ranks.png)\n\n"
    cov = {n: (np.array([m["scalars"][f"kde_coverage_{lv}_attained"] for lv in (50, 90, 95)]),
               np.array([m["scalars"][f"kde_coverage_{lv}"] for lv in (50, 90, 95)]),
               np.array([m["scalars"][f"kde_coverage_{lv}_se"] for lv in (50, 90, 95)]))
           for n, m in methods.items() if "kde_coverage_50" in m["scalars"]}
    if cov:
        figures.coverage_plot(cov, out / "coverage.png",
                              xlabel="level an exact posterior attains with S samples")
        figures.histograms({n: methods[n]["scalars"]["z_histogram"] for n in cov},
                           np.linspace(-6, 6, 49), out / "z_scores.png",
                           xlabel="z = (y0 − mean) / SD over signal pixels",
                           reference_pdf=stats.norm.pdf)
        text += "![coverage](coverage.png) ![z-scores](z_scores.png)\n\n"
    if metrics.get("cost_by_emitters"):
        figures.cost_plot(metrics["cost_by_emitters"], out / "cost.png")
        text += "![cost](cost.png)\n\n"
    return text


def render(out: str | Path) -> Path:
    """Write ``out/report.md`` and its figures from ``metrics.json``, ``config.json``, the frames
    and the saved posteriors."""
    out = Path(out)
    metrics, config = read_json(out, METRICS), read_json(out, "config.json")
    settings = config["settings"]
    rows = [(r["method"], r["emitters"], r["frames"], _fmt(r["seconds_per_frame"], ".2f"))
            for r in metrics.get("cost_by_emitters", [])]
    for name in SURROGATES[:1]:  # a surrogate not re-timed in the sweep: its main-run cost
        if name in metrics["methods"] and not any(r[0] == name for r in rows):
            m = metrics["methods"][name]["scalars"]
            rows.append((f"{name} (the frames above)", config["task"]["prior"]["n_emitters"],
                         m["frames"], _fmt(m["seconds_per_frame"], ".2f")))
    cost_rows = markdown_table(["method", "emitters / frame", "frames", "s/frame"], rows)
    failures = "".join(f"- `{k}` was skipped: {v}\n" for k, v in metrics["failures"].items())
    task = config["task"]
    n_emitters = task["prior"]["n_emitters"]
    flagged = metrics.get("reference_flagged", {"frames": 0, "of": len(load_frames(out)["adu"])})
    dense = n_emitters > 1
    reference_words = (
        f"`{metrics['reference']}` (NUTS, exact up to Monte Carlo error); "
        f"**{flagged['frames']} of {flagged['of']} frames failed its diagnostics** (R-hat > 1.01 or "
        f"bulk ESS < 400) and are left out of every score" if dense else
        f"`{metrics['reference']}`, the exact grid posterior")
    limits = settings.get("dense_frame_limits", settings["frame_limits"]) if dense else \
        settings["frame_limits"]
    draws = settings.get("dense_draws", settings["draws"]) if dense else settings["draws"]
    body = f"""# Calibration of every posterior method (`{config.get('task_name', 'isolated')}` task)

Preset `{config['preset']}`, seed {config['seed']}: {flagged['of']} fresh frames (simulation
seed {config['fresh_seed']}) of {n_emitters} emitter(s), i0 = {task['prior']['i0']:g} photons.
Reference: {reference_words}. θ methods draw {settings['chains']} chains × {draws}; methods with
a frame limit ({limits}) run on the first frames only and are compared on those. Method options:
`{settings['method_options']}`; `ddpm-recal` is the same DDPM samples with the checkpoint's
post-hoc spread recalibration (fitted on separate frames; `bayes_smlm.recalibration`). Wall time
of the whole study: {metrics['wall_seconds']:.0f} s.

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
{_acceptance_table(metrics)}
## Where the surrogates agree with the exact posterior, and where not

{chr(10).join(verdicts(metrics))}

{chr(10).join(crowding_words(metrics))}

{failures}
## Figures

{_figures(out, metrics, config)}
## Cost against emitters per frame

NUTS on `paper`-density frames with {', '.join(map(str, settings['cost_emitters']))} emitters; the DDPM's
network pass does not depend on the number of emitters (it is timed at the two ends with this
task's shipped Ψ, or, where a preset skips that, on the frames above).

{cost_rows}
"""
    return write_report(out, body, metrics["provenance"])
