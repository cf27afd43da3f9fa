"""Study ``bench-ddpm``: seconds per frame for a K-sample DDPM variance map, beside NUTS.

The shipped Ψ on fresh `isolated` frames, one frame per call (what a user waiting for one map
sees; Ψ and φ loaded once beforehand): 20 DDIM steps under bf16 autocast (the default), the same
in fp32, and the full 100-step DDPM chain; then NUTS (4 chains × 1000 draws) for the exact
variance map on the same frames, per frame in a batch after compilation. Medians over repeats.
Run: ``bayes-smlm study bench-ddpm [--preset smoke|cpu|paper]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from bayes_smlm.studies.registry import begin_study

from bayes_smlm.forward.simulate import simulate
from bayes_smlm.forward.tasks import get_task
from bayes_smlm.io.atomic import write_json
from bayes_smlm.methods import get_method
from bayes_smlm.reporting.markdown import markdown_table, provenance, write_report
from bayes_smlm.reporting.timing import median_seconds
from bayes_smlm.surrogates.psi.pipeline import PsiPipeline

NAME = "bench-ddpm"
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"samples": 4, "repeats": 1, "full_repeats": 0, "ddim_steps": 2, "nuts_frames": 2},
    "cpu": {"samples": 64, "repeats": 5, "full_repeats": 2, "ddim_steps": 20, "nuts_frames": 32},
    "paper": {"samples": 64, "repeats": 5, "full_repeats": 5, "ddim_steps": 20, "nuts_frames": 100},
}


def run(preset: str = "cpu", seed: int = 0, out: Path | str = Path("reports") / NAME) -> Path:
    s, out = begin_study(preset, PRESETS, out)
    task = get_task("isolated")
    frames = simulate(task, max(s["repeats"], s["nuts_frames"]), 7000 + seed)
    psi = PsiPipeline.from_pretrained(None, task)
    single_frames = [frames.adu[i : i + 1] for i in range(s["repeats"])]
    rows = []
    for label, steps, precision, repeats in (
        (
            f"DDPM, {s['ddim_steps']} DDIM steps, bf16 (default)",
            s["ddim_steps"],
            "bf16",
            s["repeats"],
        ),
        (f"DDPM, {s['ddim_steps']} DDIM steps, fp32", s["ddim_steps"], "fp32", s["repeats"]),
        ("DDPM, full 100-step chain, bf16", None, "bf16", s["full_repeats"]),
    ):
        if repeats == 0:
            continue
        it = iter(single_frames * 2)
        seconds = median_seconds(
            lambda: psi.sample(
                next(it),
                s["samples"],
                start="guess",
                solver="ddim",
                steps=steps,
                precision=precision,
            ),
            repeats,
        )
        rows.append({"method": label, "seconds_per_frame": seconds, "repeats": repeats})
        print(f"  {label}: {seconds:.2f} s/frame", flush=True)
    nuts = get_method("nuts")
    nuts(task, frames.adu[:2], seed=seed)  # compile for this batch shape family
    result = nuts(task, frames.adu[: s["nuts_frames"]], seed=seed)
    rows.append(
        {
            "method": f"NUTS 4 × 1000 (exact), batch of {s['nuts_frames']} frames, compiled",
            "seconds_per_frame": result.seconds / result.n_frames,
            "repeats": 1,
        }
    )
    prov = provenance(study=NAME, preset=preset, seed=seed, torch_threads=torch.get_num_threads())
    write_json(out / "metrics.json", {"rows": rows, "samples": s["samples"], "provenance": prov})
    table = markdown_table(
        ["sampler", "s / frame (median)", "repeats"],
        [(r["method"], f"{r['seconds_per_frame']:.2f}", r["repeats"]) for r in rows],
    )
    print(table)
    body = f"""# Cost of one variance map: DDPM (shipped Ψ) against NUTS

Preset `{preset}`: K = {s["samples"]} samples per frame, one frame per call, `guess` start,
{torch.get_num_threads()} torch threads; NUTS per frame within a batch, after compilation.

{table}
"""
    return write_report(out, body, prov)
