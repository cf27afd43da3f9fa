"""Study ``bench-ddpm``: seconds per frame for a K-sample DDPM variance map, beside NUTS.

The shipped Ψ on fresh `isolated` frames, one frame per call (what a user waiting for one map
sees; Ψ and φ loaded once beforehand): 20 DDIM steps under bf16 autocast (the default), the same
in fp32, and the full 100-step DDPM chain; then NUTS (4 chains × 1000 draws) for the exact
variance map on the same frames, per frame in a batch after compilation. Medians over repeats.
Run: ``bayes-smlm study bench-ddpm [--preset smoke|cpu|paper]``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from bayes_smlm.io import write_json
from bayes_smlm.methods import get_method
from bayes_smlm.report import markdown_table, provenance, write_report
from bayes_smlm.simulate import simulate
from bayes_smlm.study_registry import check_preset, run_as_script
from bayes_smlm.tasks import get_task

NAME = "bench-ddpm"
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"samples": 4, "repeats": 1, "full_repeats": 0, "ddim_steps": 2, "nuts_frames": 2},
    "cpu": {"samples": 64, "repeats": 5, "full_repeats": 2, "ddim_steps": 20, "nuts_frames": 32},
    "paper": {"samples": 64, "repeats": 5, "full_repeats": 5, "ddim_steps": 20, "nuts_frames": 100},
}


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def run(preset: str = "cpu", seed: int = 0, out: Path | str = Path("reports") / NAME) -> Path:
    from bayes_smlm.psi_pipeline import PsiPipeline
    s = check_preset(preset, PRESETS)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    task = get_task("isolated")
    frames = simulate(task, max(s["repeats"], s["nuts_frames"]), 7000 + seed)
    psi = PsiPipeline.from_pretrained(None, task)
    single_frames = [frames.adu[i:i + 1] for i in range(s["repeats"])]
    rows = []
    for label, steps, precision, repeats in (
            (f"DDPM, {s['ddim_steps']} DDIM steps, bf16 (default)", s["ddim_steps"], "bf16",
             s["repeats"]),
            (f"DDPM, {s['ddim_steps']} DDIM steps, fp32", s["ddim_steps"], "fp32", s["repeats"]),
            ("DDPM, full 100-step chain, bf16", None, "bf16", s["full_repeats"])):
        if repeats == 0:
            continue
        it = iter(single_frames * 2)
        seconds = _median_seconds(lambda: psi.sample(
            next(it), s["samples"], start="guess", steps=steps, precision=precision), repeats)
        rows.append({"method": label, "seconds_per_frame": seconds, "repeats": repeats})
        print(f"  {label}: {seconds:.2f} s/frame", flush=True)
    nuts = get_method("nuts")
    nuts(task, frames.adu[:2], seed=seed)  # compile for this batch shape family
    result = nuts(task, frames.adu[: s["nuts_frames"]], seed=seed)
    rows.append({"method": f"NUTS 4 × 1000 (exact), batch of {s['nuts_frames']} frames, "
                           "compiled", "seconds_per_frame": result.seconds / result.n_frames,
                 "repeats": 1})
    prov = provenance(study=NAME, preset=preset, seed=seed, cpu_count=os.cpu_count(),
                      torch_threads=torch.get_num_threads())
    write_json(out / "metrics.json", {"rows": rows, "samples": s["samples"], "provenance": prov})
    table = markdown_table(["sampler", "s / frame (median)", "repeats"],
                           [(r["method"], f"{r['seconds_per_frame']:.2f}", r["repeats"])
                            for r in rows])
    print(table)
    body = f"""# Cost of one variance map: DDPM (shipped Ψ) against NUTS

Preset `{preset}`: K = {s['samples']} samples per frame, one frame per call, `guess` start,
{torch.get_num_threads()} torch threads; NUTS per frame within a batch, after compilation.

{table}
"""
    return write_report(out, body, prov)


def main(args: Sequence[str] | None = None) -> int:
    return run_as_script(NAME, run, args)


if __name__ == "__main__":
    sys.exit(main())
