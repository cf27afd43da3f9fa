"""Study ``bench-speed``: what the exact posteriors, the DDPM surrogate and φ cost, in one run.

Tables (every ratio from the same run, medians where repeated):

1. **Exact posteriors, isolated frames** — wall time of ``bayes-smlm posterior`` (a fresh process:
   start, reading, compilation, sampling, diagnostics, writing) on the same frames, for ``nuts``
   and ``chees``; ``chees`` twice, with an empty and with a filled JAX compilation cache.
2. **Exact posteriors, dense frames** (``paper``, 10 emitters) — s/frame of ``nuts`` and
   ``chees`` over the same frames (compilation included) and the share of frames passing R-hat ≤
   1.01, bulk ESS ≥ 400, no divergence.
3. **Agreement with ``grid``** on one-emitter frames — frames whose posterior means lie within 4
   MCSE and SDs within 5 % of the exact grid's (:mod:`bayes_smlm.compare.exactness`).
4. **DDPM against NUTS per dense frame** — the shipped Ψ (K = 64 samples, its default sampler and
   the earlier default, 20 DDIM steps) per frame, median over frames, ÷ NUTS's s/frame of
   table 2.
5. **φ** — frames/s at batch 256 (BatchNorm folded, channels-last), median of repeats: fp32,
   bf16 autocast, and bf16 through ``torch.compile`` (compiled in the warm-up call), each in a
   fresh process (a variant that crashes it is reported as failed).

Timings depend on the CPU's instruction sets (bf16 is emulated, and slower than fp32, without
AVX-512-BF16/AMX): the report's provenance names the CPU.

The ``paper`` preset is sized for a GPU (``device`` cuda for the torch parts; JAX uses its default
backend, the GPU when jax[cuda] is installed, with all frames in one batch).
Run: ``bayes-smlm study bench-speed [--preset smoke|cpu|paper]``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from bayes_smlm.studies.registry import begin_study, fresh_seed, write_metrics

from bayes_smlm.compare.exactness import grid_agreement
from bayes_smlm.forward.simulate import simulate
from bayes_smlm.forward.tasks import get_task
from bayes_smlm.io.atomic import write_npz
from bayes_smlm.methods import get_method
from bayes_smlm.reporting.markdown import markdown_table, provenance, write_report
from bayes_smlm.reporting.timing import median_seconds
from bayes_smlm.surrogates.settings import DEFAULT_SOLVER, DEFAULT_STEPS, EARLIER_SAMPLER

NAME = "bench-speed"
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "isolated_frames": 8,
        "dense_frames": 4,
        "grid_frames": 4,
        "ddpm_frames": 1,
        "draws": 100,
        "phi_repeats": 1,
        "device": "cpu",
        "batch_size": None,
    },
    "cpu": {
        "isolated_frames": 1000,
        "dense_frames": 100,
        "grid_frames": 64,
        "ddpm_frames": 4,
        "draws": 1000,
        "phi_repeats": 7,
        "device": "cpu",
        "batch_size": None,
    },
    "paper": {
        "isolated_frames": 1000,
        "dense_frames": 100,
        "grid_frames": 64,
        "ddpm_frames": 16,
        "draws": 1000,
        "phi_repeats": 7,
        "device": "cuda",
        "batch_size": 1000,
    },
}
CHEES_ISOLATED = ["--max-leapfrog", "2"]  # one emitter: near-Gaussian, short trajectories suffice


def cli_wall_seconds(
    npz: Path,
    method: str,
    extra: list[str],
    cache: Path,
    draws: int,
    batch_size: int | None,
    out: Path | None = None,
) -> tuple[float, float]:
    """Wall time of one ``bayes-smlm posterior`` process writing ``out`` (default
    ``METHOD.nc`` beside the frames), and the method's own seconds (from the line it prints:
    sampling with compilation, without start, diagnostics, writing; a chunked run prints their
    sum over chunks)."""
    out = out or npz.with_name(f"{method}.nc")
    command = [
        sys.executable,
        "-m",
        "bayes_smlm.cli.main",
        "posterior",
        str(npz),
        "--method",
        method,
        "--draws",
        str(draws),
        "--quiet",
        "--out",
        str(out),
        *extra,
    ]
    if batch_size:
        command += ["--batch-size", str(batch_size)]
    env = {**os.environ, "BAYES_SMLM_JAX_CACHE": str(cache)}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    found = re.search(r"frames, ([0-9.]+) s", done.stdout) or re.search(
        r"([0-9.]+) s of the method's time", done.stdout
    )
    return wall, float(found.group(1))


def isolated_rows(s: dict, seed: int, workdir: Path) -> list[dict]:
    task = get_task("isolated")
    frames = simulate(task, s["isolated_frames"], fresh_seed(NAME, seed))
    npz = workdir / "isolated.npz"
    write_npz(npz, config=task.to_json(), adu=frames.adu, theta=frames.theta)
    rows = []
    for label, method, extra, cache in (
        ("nuts", "nuts", [], "nuts-cache"),
        ("chees, empty compilation cache", "chees", CHEES_ISOLATED, "chees-cache"),
        ("chees, filled compilation cache", "chees", CHEES_ISOLATED, "chees-cache"),
    ):
        seconds, method_seconds = cli_wall_seconds(
            npz, method, extra, workdir / cache, s["draws"], s["batch_size"]
        )
        rows.append(
            {
                "method": label,
                "frames": s["isolated_frames"],
                "wall_seconds": seconds,
                "method_seconds": method_seconds,
            }
        )
        print(f"  {label}: {seconds:.1f} s wall", flush=True)
    return rows


def dense_rows(s: dict, seed: int) -> tuple[list[dict], np.ndarray]:
    task = get_task("paper")
    adu = simulate(task, s["dense_frames"], fresh_seed(NAME, seed) + 1).adu
    rows = []
    for method in ("nuts", "chees"):
        result = get_method(method)(
            task, adu, seed=seed, draws=s["draws"], batch_size=s["batch_size"]
        )
        rows.append(
            {
                "method": method,
                "frames": result.n_frames,
                "seconds_per_frame": result.seconds / result.n_frames,
                "pass_rate": result.diagnostics.pass_rate,
            }
        )
        print(
            f"  dense {method}: {rows[-1]['seconds_per_frame']:.3f} s/frame, pass "
            f"{rows[-1]['pass_rate']:.3f}",
            flush=True,
        )
    return rows, adu


def grid_rows(s: dict, seed: int) -> list[dict]:
    task = get_task("isolated")
    frames = simulate(task, s["grid_frames"], fresh_seed(NAME, seed) + 2)
    grid = get_method("grid")(task, frames.adu)
    rows = []
    for method, options in (("nuts", {}), ("chees", {}), ("chees", {"max_leapfrog": 2})):
        result = get_method(method)(task, frames.adu, seed=seed, draws=s["draws"], **options)
        agreement = grid_agreement(result, grid)
        rows.append(
            {
                "method": method,
                "options": options,
                "frames": result.n_frames,
                "agree": float(agreement.frame_agrees.mean()),
                "max_z": float(agreement.z.max()),
                "sd_ratio_mean": float(agreement.sd_ratio.mean()),
                "pass_rate": result.diagnostics.pass_rate,
            }
        )
    return rows


def ddpm_rows(s: dict, adu: np.ndarray, seed: int) -> list[dict]:
    from bayes_smlm.surrogates.psi.pipeline import PsiPipeline

    task = get_task("paper")
    psi = PsiPipeline.from_pretrained(None, task, device=s["device"])
    rows = []
    # the default sampler, and the earlier default (20 DDIM steps)
    for solver, steps in ((DEFAULT_SOLVER, DEFAULT_STEPS), EARLIER_SAMPLER):
        frames = iter(adu[i : i + 1] for i in range(s["ddpm_frames"] + 1))
        seconds = median_seconds(
            lambda: _synchronised(
                psi.sample, next(frames), 64, solver=solver, steps=steps, seed=seed
            ),
            s["ddpm_frames"],
            warmup=1,
        )
        rows.append({"sampler": f"{steps} {solver} steps", "seconds_per_frame": seconds})
        print(f"  ddpm {solver} {steps}: {seconds:.2f} s/frame", flush=True)
    return rows


def _synchronised(fn, *args, **kwargs):
    import torch

    out = fn(*args, **kwargs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out


PHI_VARIANTS = (  # label -> PhiPredictor options
    ("fp32, eager", {"precision": "fp32"}),
    ("bf16 autocast, eager", {"precision": "bf16"}),
    ("bf16, torch.compile (Inductor, frozen weights)", {"precision": "bf16", "compiled": True}),
)


def phi_frames_per_second(variant: int, device: str, repeats: int) -> float:
    """φ's frames/s at batch 256 in :data:`PHI_VARIANTS` ``[variant]`` (BN folded,
    channels-last), median over repeats after one warm-up call (which compiles the compiled
    variant)."""
    from bayes_smlm.surrogates.phi.estimator import PhiPredictor, frames_to_photons, load_phi

    task = get_task("paper")
    model = load_phi(None, task)[0]
    photons = frames_to_photons(simulate(task, 256, 7).adu, task)
    predictor = PhiPredictor(model, task, batch_size=256, device=device, **PHI_VARIANTS[variant][1])
    seconds = median_seconds(lambda: _synchronised(predictor.photons, photons), repeats, warmup=1)
    return 256 / seconds


def phi_rows(s: dict) -> list[dict]:
    """:func:`phi_frames_per_second` of each variant, each in a fresh process: the timings do not
    share threads with this process's JAX and torch, and a variant that crashes its process
    (Inductor's generated code on some CPUs) is reported as failed instead of ending the study."""
    rows = []
    for variant, (label, _) in enumerate(PHI_VARIANTS):
        command = [
            sys.executable,
            "-m",
            "bayes_smlm.studies.bench_speed",
            "--phi-variant",
            str(variant),
            "--device",
            s["device"],
            "--repeats",
            str(s["phi_repeats"]),
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        row: dict[str, Any] = {"variant": label, "batch": 256, "frames_per_second": None}
        found = re.search(r"frames_per_second=([0-9.eE+-]+)", done.stdout)
        if done.returncode == 0 and found:
            row["frames_per_second"] = float(found.group(1))
            print(f"  φ {label}: {row['frames_per_second']:.0f} frames/s", flush=True)
        else:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            row["failed"] = (
                f"signal {-done.returncode}"
                if done.returncode < 0
                else f"exit {done.returncode}: {last[:200]}"
            )
            print(f"  φ {label}: failed ({row['failed']})", flush=True)
        rows.append(row)
    return rows


def run(preset: str = "cpu", seed: int = 0, out: Path | str = Path("reports") / NAME) -> Path:
    s, out = begin_study(preset, PRESETS, out)
    with tempfile.TemporaryDirectory() as tmp:
        isolated = isolated_rows(s, seed, Path(tmp))
    dense, dense_adu = dense_rows(s, seed)
    agreement = grid_rows(s, seed)
    ddpm = ddpm_rows(s, dense_adu, seed)
    phi = phi_rows(s)
    nuts_dense = next(r for r in dense if r["method"] == "nuts")["seconds_per_frame"]
    for row in ddpm:
        row["per_nuts"] = row["seconds_per_frame"] / nuts_dense
    write_metrics(
        out,
        NAME,
        preset,
        seed,
        isolated=isolated,
        dense=dense,
        agreement=agreement,
        ddpm=ddpm,
        phi=phi,
        settings=s,
    )
    tables = [
        markdown_table(
            [
                "exact method",
                "isolated frames",
                "wall time of `bayes-smlm posterior` (s)",
                "of which the method (s)",
            ],
            [
                (r["method"], r["frames"], f"{r['wall_seconds']:.1f}", f"{r['method_seconds']:.1f}")
                for r in isolated
            ],
        ),
        markdown_table(
            ["exact method", "dense frames", "s/frame", "frames passing R-hat/ESS/divergences"],
            [
                (r["method"], r["frames"], f"{r['seconds_per_frame']:.3f}", f"{r['pass_rate']:.3f}")
                for r in dense
            ],
        ),
        markdown_table(
            [
                "method",
                "options",
                "frames",
                "agree with grid (mean ≤ 4 MCSE, SD ≤ 5 %)",
                "max |z|",
                "mean SD ratio",
                "pass rate",
            ],
            [
                (
                    r["method"],
                    r["options"] or "default",
                    r["frames"],
                    f"{r['agree']:.3f}",
                    f"{r['max_z']:.2f}",
                    f"{r['sd_ratio_mean']:.3f}",
                    f"{r['pass_rate']:.3f}",
                )
                for r in agreement
            ],
        ),
        markdown_table(
            ["DDPM (K = 64) sampler", "s per dense frame (median)", "÷ NUTS s/frame"],
            [(r["sampler"], f"{r['seconds_per_frame']:.2f}", f"{r['per_nuts']:.2f}") for r in ddpm],
        ),
        markdown_table(
            ["φ (BN folded, channels-last)", "batch", "frames/s"],
            [
                (
                    r["variant"],
                    r["batch"],
                    f"{r['frames_per_second']:.0f}"
                    if r["frames_per_second"]
                    else f"failed ({r['failed']})",
                )
                for r in phi
            ],
        ),
    ]
    for table in tables:
        print(table)
    prov = provenance(study=NAME, preset=preset, seed=seed, device=s["device"])
    body = (
        "# Speed of exact and surrogate posteriors on this machine\n\n"
        + f"Preset `{preset}`, seed {seed}, torch device `{s['device']}`.\n\n"
        + "\n\n".join(tables)
    )
    return write_report(out, body, prov)


if __name__ == "__main__":  # one φ timing in a fresh process (see phi_rows)
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bayes_smlm.studies.bench_speed")
    parser.add_argument("--phi-variant", type=int, required=True, choices=range(len(PHI_VARIANTS)))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    rate = phi_frames_per_second(args.phi_variant, args.device, args.repeats)
    print(f"frames_per_second={rate!r}")
