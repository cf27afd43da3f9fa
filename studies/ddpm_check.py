"""Study ``ddpm-check``: Ψ's KDE variance maps against the exact ones, and what they cost.

On fresh frames of a task (``--task``, default `isolated`): the exact posterior (`grid` for one
emitter, else `nuts`, whose flagged frames are left out) gives the reference variance map; K
exact draws (NUTS, thinned to K) give the ceiling a K-sample estimate can reach; the shipped Ψ
(and any variant checkpoints found under ``runs/psi-<task>-*``, e.g. other schedule × loss
combinations trained with ``bayes-smlm train-psi``) is scored with both starts and both samplers:
median per-frame Pearson correlation and summed-variance ratio, on the whole frame and on the
signal pixels, and the background SD floor. Then seconds per frame of each sampler beside NUTS's.
Run: ``bayes-smlm study ddpm-check [--task paper] [--preset smoke|cpu|paper]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from bayes_smlm.studies.registry import begin_study, fresh_seed

from bayes_smlm.compare import variance_agreement
from bayes_smlm.compare.regions import region_variance_scores
from bayes_smlm.compare.sbc import thin_to
from bayes_smlm.forward.simulate import simulate
from bayes_smlm.forward.tasks import get_task
from bayes_smlm.io.atomic import write_json
from bayes_smlm.methods import get_method
from bayes_smlm.methods.pushforward import kde_moments
from bayes_smlm.methods.reference import cached_reference, reference_method
from bayes_smlm.reporting.markdown import markdown_table, provenance, write_report
from bayes_smlm.surrogates.psi.pipeline import psi_shipped_checkpoint, read_config, weights_sha256

NAME = "ddpm-check"
TASK_ARGUMENT = True
DEFAULT_TASK = "isolated"
PRESETS = {
    "smoke": {
        "frames": 2,
        "samples": 4,
        "other_frames": 1,
        "full_frames": 1,
        "ddim_steps": 2,
        "variants": False,
        "precision": "fp32",
    },
    # The shipped configuration (DDIM, `guess` start) on every frame; the other start and the
    # variant checkpoints on `other_frames`, the 100-step chain on `full_frames` (CPU time).
    "cpu": {
        "frames": 50,
        "samples": 64,
        "other_frames": 12,
        "full_frames": 3,
        "ddim_steps": 20,
        "variants": True,
        "precision": "auto",
    },
    "paper": {
        "frames": 50,
        "samples": 64,
        "other_frames": 50,
        "full_frames": 50,
        "ddim_steps": 20,
        "variants": True,
        "precision": "fp32",
    },
}
SHIPPED_START = "guess"


def _unet_digest(checkpoint: Path) -> str:
    return weights_sha256(checkpoint / "unet" / "diffusion_pytorch_model.safetensors")


def _finished(run: Path) -> bool:
    """A variant run that completed its planned steps (not one still training)."""
    if not (run / "unet").is_dir():
        return False
    config = read_config(run)
    return config["progress"].get("steps_done", 0) >= config["training"]["steps"]


def checkpoints(with_variants: bool, task_name: str = DEFAULT_TASK) -> list[tuple[str, Path]]:
    """(label, directory) of the shipped Ψ and, optionally, local variant checkpoints
    ``runs/psi-<task>-*`` (a variant with the shipped weights — the run it was copied from — is
    not scored twice)."""
    shipped = psi_shipped_checkpoint(task_name)
    found = [("shipped", shipped)]
    if with_variants:
        found += [
            (p.name.removeprefix(f"psi-{task_name}-"), p)
            for p in sorted(Path().glob(f"runs/psi-{task_name}-*"))
            if _finished(p) and _unet_digest(p) != _unet_digest(shipped)
        ]
    return found


def run(
    preset: str = "cpu",
    seed: int = 0,
    out: Path | str = Path("reports") / NAME,
    task: str = DEFAULT_TASK,
) -> Path:
    settings, out = begin_study(preset, PRESETS, out)
    task_name, task = task, get_task(task)
    k = settings["samples"]
    frames = simulate(task, settings["frames"], fresh_seed(NAME, seed))
    nuts_options = {"seed": seed, "chains": 4, "draws": 1000}
    ref = cached_reference(task, frames.adu, (fresh_seed(NAME, seed), len(frames.adu)), seed=seed)
    nuts = (
        ref
        if reference_method(task) == "nuts"
        else get_method("nuts")(task, frames.adu, **nuts_options)
    )
    keep = ~ref.flagged
    adu, ref_mean, ref_var = frames.adu[keep], ref.kde_mean[keep], ref.kde_var[keep]
    _, ceiling_var = kde_moments(thin_to(nuts.theta_flat()[keep], k), task)
    rows = [
        {
            "model": f"{k} exact draws (NUTS, thinned)",
            "schedule": "—",
            "loss": "—",
            "start": "—",
            "sampler": "—",
            "frames": len(adu),
            **_agreement(ceiling_var, ref_var, ref_mean),
            "s_per_frame": nuts.seconds / nuts.n_frames,
        }
    ]
    print(
        f"  ceiling: r = {rows[0]['median_r']:.3f}, ratio = {rows[0]['median_ratio']:.2f}",
        flush=True,
    )
    for label, checkpoint in checkpoints(settings["variants"], task_name):
        config = read_config(checkpoint)
        for start in ("guess", "noise"):
            ddim_frames = (
                len(adu)
                if label == "shipped" and start == SHIPPED_START
                else min(settings["other_frames"], len(adu))
            )
            for sampler, steps, n in (
                (f"ddim-{settings['ddim_steps']}", settings["ddim_steps"], ddim_frames),
                ("ddpm", None, settings["full_frames"]),
            ):
                result = get_method("ddpm")(
                    task,
                    frames.adu[:n],
                    seed=seed,
                    samples=k,
                    start=start,
                    solver="ddim",
                    steps=steps,
                    checkpoint=checkpoint,
                    recalibrate=False,
                    precision=settings["precision"],
                )
                rows.append(
                    {
                        "model": label,
                        "schedule": config["schedule"],
                        "loss": config["loss"],
                        "start": start,
                        "sampler": sampler,
                        "frames": n,
                        **_agreement(result.kde_var, ref_var[:n], ref_mean[:n]),
                        "s_per_frame": result.seconds / n,
                    }
                )
                r = rows[-1]
                print(
                    f"  {label} {start} {sampler}: r = {r['median_r']:.3f}, "
                    f"ratio = {r['median_ratio']:.2f}, {r['s_per_frame']:.2f} s/frame",
                    flush=True,
                )
    prov = provenance(study=NAME, preset=preset, seed=seed)
    flagged = int((~keep).sum())
    write_json(
        out / "metrics.json",
        {
            "rows": rows,
            "samples": k,
            "reference": ref.method,
            "reference_flagged": flagged,
            "provenance": prov,
        },
    )
    table = markdown_table(
        [
            "model",
            "schedule",
            "loss",
            "start",
            "sampler",
            "frames",
            "median Pearson r",
            "median Σvar ratio",
            "signal r",
            "signal Σvar ratio",
            "background SD floor",
            "s/frame",
        ],
        [
            (
                r["model"],
                r["schedule"],
                r["loss"],
                r["start"],
                r["sampler"],
                r["frames"],
                f"{r['median_r']:.3f}",
                f"{r['median_ratio']:.2f}",
                f"{r['signal_r']:.3f}",
                f"{r['signal_ratio']:.2f}",
                f"{r['background_floor']:.1e}",
                f"{r['s_per_frame']:.2f}",
            )
            for r in rows
        ],
    )
    print(table)
    text = f"""# Ψ variance maps against the exact posterior (`{task_name}`)

Preset `{preset}`, {settings["frames"]} fresh frames (seed {fresh_seed(NAME, seed)}), K = {k}
samples per frame, {settings["precision"]}. Reference: the `{ref.method}` posterior's KDE
variance map ({flagged} frames failed its diagnostics and are left out). Per frame, the
Pearson correlation of the two maps over the 80×80 pixels and the ratio of their sums, the same on
the signal pixels (reference mean ≥ 0.05), and the median SD over the background (reference mean
< 0.01; the exact one is 0 there); the table gives medians over frames. The first row is the ceiling: the same statistics for K exact
posterior draws. `ddpm` runs the full reverse chain (slow on a CPU: fewer frames), `ddim-N` N
DDIM steps with the same model. Bars (issue 5): median r ≥ 0.8, median ratio in [0.67, 1.5].
Seconds per frame include loading Ψ and φ.

{table}
"""
    return write_report(out, text, prov)


def _agreement(var: np.ndarray, reference: np.ndarray, reference_mean: np.ndarray) -> dict:
    a = variance_agreement(var, reference)
    regions = region_variance_scores(var, reference, reference_mean)
    return {
        "median_r": a.median_pearson,
        "median_ratio": a.median_summed_ratio,
        "signal_r": float(np.nanmedian(regions["signal_pearson"])),
        "signal_ratio": float(np.nanmedian(regions["signal_ratio"])),
        "background_floor": float(np.nanmedian(regions["background_floor"])),
        "pearson": a.pearson.tolist(),
        "ratio": a.summed_ratio.tolist(),
    }
