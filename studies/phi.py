"""Study ``phi``: the shipped DeepSTORM checkpoints — localization metrics and speed.

For each task with a shipped φ checkpoint: precision, recall, Jaccard, RMSE (LR px, nm, and over
√CRLB for one emitter) and efficiency on fresh frames, for local maxima and LoG detection with and
without sub-pixel refinement, beside the same detectors on the true KDE (the ceiling). Then
inference frames/s at batch 256 (fp32 as trained, fp32 with BatchNorm folded and channels-last,
bf16 autocast) and training steps/s, as medians over repeats.
Run: ``bayes-smlm study phi [--preset smoke|cpu|paper]``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from bayes_smlm.studies.registry import begin_study, fresh_seed

from bayes_smlm.forward.simulate import simulate
from bayes_smlm.forward.tasks import get_task
from bayes_smlm.io.atomic import write_json
from bayes_smlm.reporting.markdown import markdown_table, provenance, write_report
from bayes_smlm.reporting.timing import median_seconds
from bayes_smlm.surrogates.phi.estimator import (
    PhiPredictor,
    frames_to_photons,
    load_phi,
    read_config,
    shipped_checkpoint,
)
from bayes_smlm.surrogates.phi.evaluation import evaluate_phi, metrics_table

NAME = "phi"
PRESETS = {
    "smoke": {"frames": 20, "batch": 16, "repeats": 2, "train_steps": 2},
    "cpu": {"frames": 1000, "batch": 256, "repeats": 7, "train_steps": 10},
    "paper": {"frames": 1000, "batch": 256, "repeats": 7, "train_steps": 10},
}
TASKS = ("isolated", "paper")


def speed_rows(task_name: str, batch: int, repeats: int, train_steps: int) -> list[dict]:
    """Inference frames/s in each mode and training steps/s (batch 32), medians."""
    task = get_task(task_name)
    model, config = load_phi(None, task)
    adu = simulate(task, batch, seed=7).adu
    photons = frames_to_photons(adu, task)
    rows = []

    def plain() -> None:
        with torch.inference_mode():
            model(photons)

    modes = [("fp32, as trained", plain)]
    for precision in ("fp32", "bf16"):
        predictor = PhiPredictor(model, task, batch_size=batch, precision=precision)
        modes.append(
            (f"{precision}, BN folded + channels-last", lambda p=predictor: p.photons(photons))
        )
    for label, fn in modes:
        seconds = median_seconds(fn, repeats, warmup=1)
        rows.append(
            {
                "what": f"inference {label}",
                "batch": batch,
                "per_second": batch / seconds,
                "unit": "frames/s",
            }
        )
    train_batch = int(config["training"]["batch_size"])
    train = simulate(task, train_batch, 8)
    x, y = frames_to_photons(train.adu, task), torch.from_numpy(train.kde)[:, None]
    trainee = load_phi(None, task)[0].train()
    opt = torch.optim.AdamW(trainee.parameters(), lr=1e-4)

    def step() -> None:
        loss = torch.nn.functional.mse_loss(trainee(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    seconds = median_seconds(step, train_steps, warmup=1)
    rows.append(
        {
            "what": "training step (forward + backward + AdamW)",
            "batch": train_batch,
            "per_second": 1.0 / seconds,
            "unit": "steps/s",
        }
    )
    return rows


def run(preset: str = "cpu", seed: int = 0, out: Path | str = Path("reports") / NAME) -> Path:
    settings, out = begin_study(preset, PRESETS, out)
    threads = torch.get_num_threads()
    sections, metrics = [], {}
    for name in TASKS:
        task = get_task(name)
        config = read_config(shipped_checkpoint(name))
        result = evaluate_phi(None, task, settings["frames"], fresh_seed(NAME, seed))
        metrics[name] = {
            "evaluation": result,
            "training": config["training"],
            "progress": {k: v for k, v in config["progress"].items() if k != "history"},
            "command": config["command"],
        }
        print(f"  {name}: evaluated on {settings['frames']} frames", flush=True)
        p = config["progress"]
        sections.append(f"""## Task `{name}` ({task.prior.n_emitters} emitter(s), i0 = {task.prior.i0:g}, σy = {task.optics.sigma_kde:g} HR px)

Checkpoint `bayes_smlm/checkpoints/phi-{name}`, trained here by
`{config["command"]}` ({p["steps_done"]} steps of batch {config["training"]["batch_size"]},
{p["train_seconds"] / 60:.0f} min; best validation MSE {p["best_val_mse"]:.3g} at step
{p["best_step"]}). {settings["frames"]} fresh frames (seed {fresh_seed(NAME, seed)}); one-to-one matching within
{result["rows"][0]["tolerance_px"]:g} LR px; recall = TP / number of true emitters.
{f"√CRLB at the frame centre: {result['sqrt_crlb_px']:.4f} px." if result["sqrt_crlb_px"] else ""}

{metrics_table(result)}
""")
    speed = speed_rows("paper", settings["batch"], settings["repeats"], settings["train_steps"])
    metrics["speed"] = speed
    speed_table = markdown_table(
        ["what", "batch", "rate"],
        [(r["what"], r["batch"], f"{r['per_second']:.1f} {r['unit']}") for r in speed],
    )
    print(speed_table)
    prov = provenance(study=NAME, preset=preset, seed=seed, torch_threads=threads)
    write_json(out / "metrics.json", {**metrics, "provenance": prov})
    text = f"""# φ (DeepSTORM): localization metrics and speed

Preset `{preset}`. "phi" rows detect in φ's KDE estimate, "true KDE" rows in the exact KDE of
the true positions: no estimator of the KDE can beat the latter, since close pairs merge into one
blob in the KDE itself. Sub-pixel `gauss3` fits a parabola to the log-KDE through the peak and
its neighbours per axis; `none` keeps whole HR pixels (the paper's pure LoG localization).
Thresholds were tuned on each checkpoint's validation frames.

{chr(10).join(sections)}
## Speed on this machine ({os.cpu_count()} cores, {threads} torch threads)

Medians over {settings["repeats"]} repeats after one warm-up, φ of the `paper` task.

{speed_table}
"""
    return write_report(out, text, prov)
