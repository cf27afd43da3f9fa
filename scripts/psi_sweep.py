"""Choose a Ψ configuration on *selection* frames that no acceptance number ever uses.

Two sub-commands (run with the package's Python):

``reference TASK N OUT.npz``
    Simulates N selection frames of TASK (seed 2000 + the task's index; the calibration study
    uses 3000+, ``ddpm-check`` 2500+) and stores them with the reference posterior (``grid`` for
    one emitter, ``nuts`` otherwise): KDE mean, variance and the reference's own coverage and z SD.
``score OUT.json REF.npz CKPT [CKPT ...]``
    Samples every Ψ checkpoint with each sampler of :data:`SAMPLERS` (K = 64) on the selection
    frames and writes the item-4 scores: whole-frame and signal-mask r and Σvar ratio, background
    floor, KDE coverage 50/90/95 % and z SD (with the reference's beside them), and s/frame.
    ``--device cuda`` samples on a GPU.

``moments OUT.npz REF.npz CKPT`` and ``fit CKPT REF.npz MOMENTS.npz``
    Fit the post-hoc spread recalibration (:mod:`bayes_smlm.surrogates.psi.recalibration`) of a Ψ checkpoint on
    recalibration frames (``reference --seed 2200``) and store it in the checkpoint's config.

The GPU sweep that chose the shipped Ψ runs ``reference``/``score`` (``scripts/psi-sweep-gpu``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from bayes_smlm.compare.schema import (
    BACKGROUND_FLOOR,
    BY_CROWDING,
    SECONDS_PER_FRAME,
    SIGNAL_RATIO,
    Z_SD,
)
from bayes_smlm.surrogates.settings import DEFAULT_SOLVER, DEFAULT_STEPS, SOLVERS

SELECTION_SEED = 2000
RECALIBRATION_SEED = 2200  # frames a post-hoc recalibration is fitted on
K = 64
SAMPLERS = {  # name -> (start, solver, steps or None for the full chain, eta)
    "ddim20": ("guess", "ddim", 20, 0.0),
    "ddim20-noise": ("noise", "ddim", 20, 0.0),
    "ddim20-eta1-noise": ("noise", "ddim", 20, 1.0),
    "ddpm100-noise": ("noise", "ddim", None, 0.0),
    # few-step solvers (the ddpm method's default since issue 16: dpmpp8)
    "dpmpp8": ("guess", "dpmpp", 8, 0.0),
    "dpmpp5": ("guess", "dpmpp", 5, 0.0),
    "dpmpp3": ("guess", "dpmpp", 3, 0.0),
    "dpmpp6": ("guess", "dpmpp", 6, 0.0),
    "unipc6": ("guess", "unipc", 6, 0.0),
    "unipc5": ("guess", "unipc", 5, 0.0),
    "unipc4": ("guess", "unipc", 4, 0.0),
}


def _coverage_scalars(samples, kde_true, mask):
    from bayes_smlm.compare.kde_calibration import kde_coverage

    cov = kde_coverage(samples, kde_true, mask)
    out = {f"coverage_{int(level * 100)}": float(c) for level, c in zip(cov.levels, cov.coverage)}
    out[Z_SD.key] = cov.z_summary()[Z_SD.key]
    out["attained"] = cov.attained.tolist()
    return out


def reference(task_name: str, n: int, out: Path, seed: int = SELECTION_SEED) -> None:
    from bayes_smlm.parallel import request_host_devices

    request_host_devices()
    from bayes_smlm.compare.kde_calibration import signal_mask
    from bayes_smlm.compare.summary import kde_samples_of
    from bayes_smlm.forward.simulate import simulate
    from bayes_smlm.forward.tasks import get_task, list_tasks
    from bayes_smlm.io.atomic import write_npz
    from bayes_smlm.methods import get_method
    from bayes_smlm.methods.reference import reference_method

    task = get_task(task_name)
    frames = simulate(task, n, seed + list_tasks().index(task_name))
    method = reference_method(task)
    result = get_method(method)(task, frames.adu, seed=0)
    keep = ~result.flagged
    mask = signal_mask(result.kde_mean)
    kept_samples = (s for s, k in zip(kde_samples_of(result, K), keep) if k)
    scalars = _coverage_scalars(kept_samples, frames.kde[keep], mask[keep])
    write_npz(
        out,
        adu=frames.adu[keep],
        kde=frames.kde[keep],
        theta=frames.theta[keep],
        ref_mean=result.kde_mean[keep],
        ref_var=result.kde_var[keep],
        ref_scores=np.asarray(
            json.dumps({"method": method, "flagged": int((~keep).sum()), **scalars})
        ),
    )
    print(f"{task_name}: {keep.sum()} of {n} frames kept; reference {method}: {scalars}")


def score(
    out: Path, ref_path: Path, checkpoints: list[Path], device: str, samplers: list[str]
) -> None:
    import torch

    from bayes_smlm.compare.kde_calibration import signal_mask
    from bayes_smlm.compare.regions import region_summary
    from bayes_smlm.forward.config import task_from_dict
    from bayes_smlm.io.atomic import read_npz, write_json
    from bayes_smlm.surrogates.psi.pipeline import PsiPipeline, read_config

    ref = read_npz(ref_path, ("adu", "kde", "theta", "ref_mean", "ref_var", "ref_scores"))
    rows = []
    for ckpt in checkpoints:
        task = task_from_dict(read_config(ckpt)["task"])
        psi = PsiPipeline.from_pretrained(ckpt, task, device=device)
        mask = signal_mask(ref["ref_mean"])
        for name in samplers:
            start, solver, steps, eta = SAMPLERS[name]
            if device != "cpu":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            samples = psi.sample(
                ref["adu"],
                K,
                start=start,
                solver=solver,
                steps=steps,
                eta=eta,
                seed=1,
                batch_size=1024 if device != "cpu" else 64,
                precision="fp32",
            )
            seconds = (time.perf_counter() - t0) / len(samples)
            var = samples.var(axis=1, ddof=1)
            scalars, per_frame = region_summary(
                var,
                ref["ref_var"],
                ref["ref_mean"],
                ref["kde"],
                ref["theta"],
                task.hr_shape,
                task.optics.upsampling,
                kde_samples=iter(samples),
            )
            row = {
                "checkpoint": ckpt.name,
                "sampler": name,
                SECONDS_PER_FRAME.key: seconds,
                "pearson_median": float(np.median(per_frame["pearson"])),
                "ratio_median": float(np.median(per_frame["ratio"])),
                **scalars,
                **_coverage_scalars(iter(samples), ref["kde"], mask),
            }
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != BY_CROWDING.key}), flush=True)
    write_json(out, {"reference": json.loads(str(ref["ref_scores"])), "rows": rows})


def moments(
    out: Path, ref_path: Path, checkpoint: Path, device: str, solver: str, steps: int
) -> None:
    """Per-pixel mean and variance of K = 64 samples (`guess` start, fp32, ``steps`` steps of
    ``solver``: the ``ddpm`` method's default sampler unless told) on the frames of
    ``ref_path``; the sampler is stored beside them for ``fit``."""
    from bayes_smlm.forward.config import task_from_dict
    from bayes_smlm.io.atomic import read_npz, write_npz
    from bayes_smlm.surrogates.psi.pipeline import PsiPipeline, read_config

    ref = read_npz(ref_path, ("adu",))
    task = task_from_dict(read_config(checkpoint)["task"])
    psi = PsiPipeline.from_pretrained(checkpoint, task, device=device)
    samples = psi.sample(
        ref["adu"],
        K,
        solver=solver,
        steps=steps,
        seed=1,
        precision="fp32",
        batch_size=1024 if device != "cpu" else 64,
    )
    write_npz(
        out,
        mean=samples.mean(axis=1),
        var=samples.var(axis=1, ddof=1),
        solver=np.asarray(solver),
        steps=np.asarray(steps),
    )
    print(f"wrote {out}")


def fit(checkpoint: Path, ref_path: Path, moments_path: Path, seed: int) -> None:
    """Fit the spread recalibration of a Ψ checkpoint and store it in its config.json."""
    from bayes_smlm.io.atomic import read_npz, write_json
    from bayes_smlm.surrogates.psi.pipeline import read_config
    from bayes_smlm.surrogates.psi.recalibration import fit_spread_recalibration

    ref = read_npz(ref_path, ("ref_var", "ref_scores"))
    mom = read_npz(moments_path, ("mean", "var", "solver", "steps"))
    solver, steps = str(mom["solver"]), int(mom["steps"])
    fitted_on = {
        "frames": int(len(mom["mean"])),
        "seed": seed,
        "reference": json.loads(str(ref["ref_scores"]))["method"],
        "solver": solver,
        "steps": steps,
        "sampler": f"{steps} {solver} steps, guess start, K = {K}, fp32",
        "command": f"python scripts/psi_sweep.py reference/moments/fit (seed {seed})",
    }
    recal = fit_spread_recalibration(mom["mean"], mom["var"], ref["ref_var"], fitted_on)
    config = read_config(checkpoint)
    config["recalibration"] = recal.to_dict()
    write_json(Path(checkpoint) / "config.json", config)
    print(json.dumps(recal.to_dict()))


LABELS = {  # variant name -> (schedule, loss, prediction, conditioning, UNet)
    "paper-paper-l1-phi": ("paper (published)", "l1", "ε", "φ", "cpu 0.6 M"),
    "paper-full-v-phi": ("full", "l2", "v", "φ", "cpu 0.6 M"),
    "paper-full-v-frame": ("full", "l2", "v", "φ + frame", "cpu 0.6 M"),
    "paper-full-x0-frame": ("full", "l2", "y0", "φ + frame", "cpu 0.6 M"),
    "paper-big-full-v-frame": ("full", "l2", "v", "φ + frame", "paper 95 M"),
    "isolated-full-v-frame": ("full", "l2", "v", "φ + frame", "cpu 0.6 M"),
    "isolated-full-x0-frame": ("full", "l2", "y0", "φ + frame", "cpu 0.6 M"),
    "psi-paper": ("full", "l2", "v", "φ", "cpu 0.6 M"),  # the shipped ones
    "psi-isolated": ("full", "l2", "v", "φ + frame", "cpu 0.6 M"),
}


SWEEPS = {  # --sweep -> (title, where the scores came from, the machine of the s/frame column)
    "levers": (
        "Ψ sweep: which lever calibrates the surrogate (selection frames only)",
        "the `score` results of `scripts/psi-sweep-gpu` (one NVIDIA H200; every variant "
        "trained 4.5 min, seed 0, batch 32 — the paper-size UNet batch 16 —, then scored "
        "with K = 64 samples per frame, fp32)",
        "H200",
    ),
    "samplers": (
        "Ψ samplers: how few steps keep the shipped Ψ calibrated (selection frames only)",
        "`score` of the shipped checkpoints with each few-step sampler on the 2-core "
        "CPU (K = 64 samples per frame, fp32; `reference paper 24`, `reference "
        "isolated 16`; s/frame taken while other jobs shared the cores: a rough "
        "guide, `reports/bench-speed/` has the timings)",
        "CPU",
    ),
}


def report(out: Path, scores: list[Path], sweep: str = "levers") -> None:
    """The lever table of a sweep (markdown) from its ``scores-*.json`` files."""
    from bayes_smlm.reporting.markdown import markdown_table

    title, source, machine = SWEEPS[sweep]
    lines = [
        f"# {title}",
        "",
        f"Written by `python scripts/psi_sweep.py report --sweep {sweep}` from {source}. "
        "Selection frames: seed 2000 + task index, disjoint from the "
        "recalibration frames (2200) and from every acceptance frame (calibration 3000, "
        "ddpm-check 2500). Medians over frames; *signal* = reference mean ≥ 0.05; the "
        "background floor is the median SD where the reference mean < 0.01 (the exact "
        "one is 0).",
        "",
    ]
    for path in scores:
        data = json.loads(Path(path).read_text())
        ref = data["reference"]
        lines += [
            f"## {Path(path).stem.split('-', 1)[-1]}",
            "",
            f"Reference `{ref['method']}` ({ref['flagged']} frames flagged): KDE cover "
            f"{ref['coverage_50']:.3f} / {ref['coverage_90']:.3f} / {ref['coverage_95']:.3f}"
            f", z SD {Z_SD.of(ref):.2f}.",
            "",
        ]
        rows = []
        for r in data["rows"]:
            label = LABELS.get(r["checkpoint"], ("?",) * 5)
            rows.append(
                (
                    r["checkpoint"],
                    *label,
                    r["sampler"],
                    f"{r['pearson_median']:.3f}",
                    f"{SIGNAL_RATIO.of(r):.2f}",
                    f"{BACKGROUND_FLOOR.of(r):.1e}",
                    f"{r['coverage_50']:.3f} / {r['coverage_90']:.3f} / {r['coverage_95']:.3f}",
                    f"{Z_SD.of(r):.2f}",
                    f"{SECONDS_PER_FRAME.of(r):.2f}",
                )
            )
        lines += [
            markdown_table(
                [
                    "variant",
                    "schedule",
                    "loss",
                    "target",
                    "conditioning",
                    "UNet",
                    "sampler",
                    "r",
                    "signal Σvar ratio",
                    "background floor",
                    "KDE cover 50/90/95",
                    "z SD",
                    f"s/frame ({machine})",
                ],
                rows,
            ),
            "",
        ]
    Path(out).write_text("\n".join(lines))
    print(f"wrote {out}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="psi_sweep.py")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("reference")
    p.add_argument("task")
    p.add_argument("frames", type=int)
    p.add_argument("out", type=Path)
    p.add_argument(
        "--seed",
        type=int,
        default=SELECTION_SEED,
        help=f"simulation seed (default {SELECTION_SEED}, selection; "
        f"{RECALIBRATION_SEED} for recalibration frames)",
    )
    p = sub.add_parser("score")
    p.add_argument("out", type=Path)
    p.add_argument("reference", type=Path)
    p.add_argument("checkpoints", type=Path, nargs="+")
    p.add_argument("--device", default="cpu")
    p.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=list(SAMPLERS))
    p = sub.add_parser("moments")
    p.add_argument("out", type=Path)
    p.add_argument("reference", type=Path)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--device", default="cpu")
    p.add_argument("--solver", default=DEFAULT_SOLVER, choices=SOLVERS)
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    p = sub.add_parser("fit")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("reference", type=Path)
    p.add_argument("moments", type=Path)
    p.add_argument("--seed", type=int, default=RECALIBRATION_SEED)
    p = sub.add_parser("report")
    p.add_argument("out", type=Path)
    p.add_argument("scores", type=Path, nargs="+")
    p.add_argument("--sweep", choices=list(SWEEPS), default="levers")
    args = parser.parse_args(argv)
    if args.command == "report":
        report(args.out, args.scores, args.sweep)
    elif args.command == "reference":
        reference(args.task, args.frames, args.out, args.seed)
    elif args.command == "moments":
        moments(args.out, args.reference, args.checkpoint, args.device, args.solver, args.steps)
    elif args.command == "fit":
        fit(args.checkpoint, args.reference, args.moments, args.seed)
    else:
        score(args.out, args.reference, args.checkpoints, args.device, args.samplers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
