"""Study ``ddpm-uncertainty``: the paper's Fig. 4 — DDPM SD maps next to the exact ones.

Fresh `isolated` frames: x, φ's estimate ŷ, the shipped Ψ's KDE SD map with each start
(`noise`, as published; `guess`, the noised φ estimate), the exact SD map (`grid`) and their
differences, with the per-frame Pearson correlation and summed-variance ratio of each.
Run: ``bayes-smlm study ddpm-uncertainty [--preset smoke|cpu|paper]``; rebuild: ``bayes-smlm report DIR``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from bayes_smlm.studies.registry import begin_study, fresh_seed, write_metrics

from bayes_smlm.compare import variance_agreement
from bayes_smlm.forward.simulate import simulate
from bayes_smlm.forward.tasks import get_task
from bayes_smlm.io.posteriors import load_posterior, save_posterior
from bayes_smlm.io.study_files import (
    METRICS,
    load_frames,
    posterior_path,
    read_json,
    save_frames,
    write_study_config,
)
from bayes_smlm.methods import get_method
from bayes_smlm.methods.reference import cached_reference
from bayes_smlm.reporting.figures import image_grid, peak_window
from bayes_smlm.reporting.markdown import markdown_table, write_report

NAME = "ddpm-uncertainty"
TASK_ARGUMENT = True
DEFAULT_TASK = "isolated"
STARTS = ("noise", "guess")
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"frames": 1, "samples": 8, "steps": 2, "precision": "fp32"},
    "cpu": {"frames": 4, "samples": 64, "steps": 20, "precision": "auto"},
    "paper": {"frames": 4, "samples": 64, "steps": None, "precision": "fp32"},
}


def run(
    preset: str = "cpu",
    seed: int = 0,
    out: Path | str = Path("reports") / NAME,
    task: str = DEFAULT_TASK,
) -> Path:
    s, out = begin_study(preset, PRESETS, out)
    task_name, task = task, get_task(task)
    batch = simulate(task, s["frames"], fresh_seed(NAME, seed))
    save_frames(out, batch.adu, batch.kde, batch.theta)
    grid = cached_reference(task, batch.adu, (fresh_seed(NAME, seed), len(batch.adu)), seed=seed)
    save_posterior(grid, posterior_path(out, "reference"))
    rows = []
    for start in STARTS:
        result = get_method("ddpm")(
            task,
            batch.adu,
            seed=seed,
            samples=s["samples"],
            start=start,
            solver="ddim",
            steps=s["steps"],
            precision=s["precision"],
            recalibrate=False,
        )
        save_posterior(result, posterior_path(out, f"ddpm-{start}"))
        a = variance_agreement(result.kde_var, grid.kde_var)
        rows += [
            {
                "start": start,
                "frame": f,
                "pearson": float(a.pearson[f]),
                "summed_ratio": float(a.summed_ratio[f]),
                "seconds_per_frame": result.seconds / result.n_frames,
            }
            for f in range(result.n_frames)
        ]
    write_study_config(
        out,
        NAME,
        preset,
        seed,
        s,
        fresh_seed=fresh_seed(NAME, seed),
        task_name=task_name,
        reference=grid.method,
        reference_flagged=np.flatnonzero(grid.flagged).tolist(),
    )
    write_metrics(out, NAME, preset, seed, rows=rows)
    return render(out)


def render(out: str | Path) -> Path:
    """Rebuild report.md and the figure from the saved frames and posteriors."""
    out = Path(out)
    metrics, config = read_json(out, METRICS), read_json(out, "config.json")
    frames = load_frames(out)
    reference = config.get("reference", "grid")
    grid = load_posterior(posterior_path(out, "reference"))["kde"].dataset
    ddpm = {start: load_posterior(posterior_path(out, f"ddpm-{start}")) for start in STARTS}
    panels = []
    for f in range(frames["adu"].shape[0]):
        zoom = peak_window(frames["kde"][f])
        exact = np.sqrt(grid["var"].values[f])
        row = [
            (f"frame {f}: x (ADU)", frames["adu"][f], "gray"),
            ("φ estimate ŷ", zoom(ddpm["noise"]["extra"]["phi_kde"].values[f]), "magma"),
            (f"exact SD ({reference})", zoom(exact), "viridis"),
        ]
        for start in STARTS:
            sd = np.sqrt(ddpm[start]["kde"]["var"].values[f])
            row += [
                (f"DDPM SD, {start} start", zoom(sd), "viridis"),
                (f"{start} − exact", zoom(sd - exact), "RdBu_r"),
            ]
        panels.append(row)
    image_grid(panels, out / "sd_maps.png")
    rows = metrics["rows"]
    table = markdown_table(
        ["start", "frame", "Pearson r (var maps)", "Σvar ratio", "s/frame"],
        [
            (
                r["start"],
                r["frame"],
                f"{r['pearson']:.3f}",
                f"{r['summed_ratio']:.2f}",
                f"{r['seconds_per_frame']:.1f}",
            )
            for r in rows
        ],
    )
    s = config["settings"]
    sampler = "the full DDPM chain" if s["steps"] is None else f"{s['steps']} DDIM steps"
    body = f"""# DDPM uncertainty maps against the exact posterior (paper Fig. 4)

Preset `{config["preset"]}`, seed {config["seed"]}: {s["frames"]} fresh
`{config.get("task_name", "isolated")}` frames (simulation seed {config["fresh_seed"]}), reference
`{reference}`; the shipped Ψ with K = {s["samples"]} samples per frame,
{sampler}, {s["precision"]}. Maps are cut to 24 × 24 KDE px around the brightest emitter. Differences are
DDPM SD − exact SD (KDE units): red where the DDPM is too uncertain, blue where too sure.

{table}

![SD maps](sd_maps.png)
"""
    return write_report(out, body, metrics["provenance"])
