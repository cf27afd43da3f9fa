"""``bayes-smlm`` commands for the networks: train-phi, detect-phi, evaluate-phi (φ), train-psi (Ψ),
train-npe (the NPE flow).

The parser is built from :mod:`bayes_smlm.surrogates.settings` alone (no torch); each handler
imports the networks it runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path
from typing import TypeVar

from bayes_smlm.cli.arguments import (
    add_task_arguments,
    fraction_below_one,
    json_text,
    non_negative_float,
    positive_float,
    positive_int,
    seed_int,
    task_from_args,
    torch_device,
)
from bayes_smlm.surrogates.settings import (
    CONDITIONS,
    FLOWS,
    LOSSES,
    PRECISIONS,
    PREDICTIONS,
    SCHEDULES,
    UNET_PRESETS,
    NpeArchitecture,
    NpeTraining,
    PhiTraining,
    PsiTraining,
    RunSettings,
)

Settings = TypeVar("Settings", bound=RunSettings)


def _command_line() -> str:
    """The command as typed, recorded in the checkpoint so a run can be repeated."""
    return "bayes-smlm " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _settings_from_args(cls: type[Settings], args: argparse.Namespace) -> Settings:
    """A training settings dataclass from the parsed options of the same names; fields without
    an option keep the class's defaults."""
    given = vars(args)
    return cls(**{f.name: given[f.name] for f in dataclasses.fields(cls) if f.name in given})


def cmd_train_phi(args: argparse.Namespace) -> int:
    from bayes_smlm.surrogates.phi.training import train_phi

    task = task_from_args(args)
    settings = _settings_from_args(PhiTraining, args)
    state = train_phi(
        task,
        args.out,
        settings,
        resume=args.resume,
        progress=not args.quiet,
        widths={"dropout": args.dropout} if args.dropout else None,
        command=_command_line(),
    )
    print(state.summary(args.out, "validation MSE"))
    return 0


def cmd_train_psi(args: argparse.Namespace) -> int:
    from bayes_smlm.surrogates.psi.training import train_psi

    task = task_from_args(args)
    settings = _settings_from_args(PsiTraining, args)
    state = train_psi(
        task,
        args.out,
        settings,
        phi_checkpoint=args.phi_checkpoint,
        resume=args.resume,
        progress=not args.quiet,
        command=_command_line(),
    )
    print(state.summary(args.out, "validation loss"))
    return 0


def cmd_train_npe(args: argparse.Namespace) -> int:
    from bayes_smlm.surrogates.npe.training import train_npe

    task = task_from_args(args)
    settings = _settings_from_args(NpeTraining, args)
    state = train_npe(
        task,
        args.out,
        settings,
        resume=args.resume,
        progress=not args.quiet,
        architecture=NpeArchitecture(flow=args.flow, crop=args.crop),
        command=_command_line(),
    )
    print(state.summary(args.out, "validation NLL"))
    return 0


def _add_training_arguments(p: argparse.ArgumentParser, defaults) -> None:
    """Options every training command shares; ``defaults`` is the settings dataclass's default
    instance, so a default lives in one place."""
    p.add_argument(
        "--steps",
        type=positive_int,
        default=defaults.steps,
        help=f"optimiser steps (default {defaults.steps})",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=defaults.batch_size,
        help=f"frames per step (default {defaults.batch_size})",
    )
    p.add_argument(
        "--lr",
        type=positive_float,
        default=defaults.lr,
        help=f"peak learning rate (default {defaults.lr:g})",
    )
    p.add_argument(
        "--validation-frames",
        type=positive_int,
        default=defaults.validation_frames,
        help=f"size of the fixed validation set (default {defaults.validation_frames})",
    )
    p.add_argument(
        "--max-minutes",
        type=non_negative_float,
        default=defaults.max_minutes,
        help="wall-time budget; the learning-rate decay follows it (default 0: none)",
    )
    p.add_argument(
        "--seed",
        type=seed_int,
        default=defaults.seed,
        help=f"random seed (default {defaults.seed})",
    )
    p.add_argument(
        "--patience",
        type=int,
        default=defaults.patience,
        help="stop after this many validations without improvement (default 0: never)",
    )
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", type=Path, required=True, help="checkpoint directory")


def add_network_commands(sub: argparse._SubParsersAction) -> None:
    """Register the network sub-commands on the ``bayes-smlm`` parser."""
    psi = PsiTraining()
    p = sub.add_parser("train-phi", help="train the DeepSTORM estimator φ on simulated frames")
    add_task_arguments(p)
    p.add_argument(
        "--dropout",
        type=fraction_below_one,
        default=0.0,
        help="dropout rate on the last hidden layer, in [0, 1) (default 0: none; "
        "0.1 for the mc_dropout method)",
    )
    _add_training_arguments(p, PhiTraining())
    p.set_defaults(handler=cmd_train_phi)
    add_inference_commands(sub)

    p = sub.add_parser(
        "train-psi", help="train the conditional DDPM Ψ (φ frozen) on simulated frames"
    )
    add_task_arguments(p)
    p.add_argument(
        "--preset",
        choices=list(UNET_PRESETS),
        default=psi.preset,
        help="UNet size: cpu (small, this machine) | paper (published, GPU)",
    )
    p.add_argument(
        "--schedule",
        choices=list(SCHEDULES),
        default=psi.schedule,
        help="noise schedule: full (ᾱ_T ≈ 0, default) | paper (published, ᾱ_T ≈ 0.6)",
    )
    p.add_argument(
        "--loss",
        choices=LOSSES,
        default=psi.loss,
        help="loss on the noise: l2 (default) | l1 (published, eq. 10)",
    )
    p.add_argument(
        "--crop",
        type=int,
        default=psi.crop,
        help="train on random crops of this many HR px (default 0: whole maps; crops "
        "change GroupNorm statistics, so they do not transfer to whole frames)",
    )
    p.add_argument(
        "--condition",
        choices=list(CONDITIONS),
        default=psi.condition,
        help="what Ψ sees besides y_t: phi (φ's estimate, as published; default) | "
        "phi+frame (the frame too)",
    )
    p.add_argument(
        "--prediction",
        choices=PREDICTIONS,
        default=psi.prediction,
        help="network target: epsilon | v_prediction | sample (y0) "
        "(default: epsilon for --schedule paper, v_prediction for full)",
    )
    p.add_argument(
        "--device",
        type=torch_device,
        default=psi.device,
        help="torch device: cpu (default) | cuda | cuda:N",
    )
    p.add_argument(
        "--phi-checkpoint",
        type=Path,
        default=None,
        help="frozen φ (default: the shipped one for --task)",
    )
    _add_training_arguments(p, psi)
    p.set_defaults(handler=cmd_train_psi)

    npe = NpeTraining()
    p = sub.add_parser(
        "train-npe", help="train the NPE flow q(θ | x) (sbi) on simulated frames of one emitter"
    )
    add_task_arguments(p)
    p.add_argument(
        "--simulations",
        type=positive_int,
        default=npe.simulations,
        help=f"simulated training frames (default {npe.simulations})",
    )
    p.add_argument(
        "--flow",
        choices=FLOWS,
        default=NpeArchitecture.flow,
        help=f"sbi density estimator: {' | '.join(FLOWS)} (default {NpeArchitecture.flow})",
    )
    p.add_argument(
        "--crop",
        type=positive_int,
        default=NpeArchitecture.crop,
        help="odd side of the window around the brightest spot, LR px "
        f"(default {NpeArchitecture.crop})",
    )
    _add_training_arguments(p, npe)
    p.set_defaults(handler=cmd_train_npe)


def cmd_detect_phi(args: argparse.Namespace) -> int:
    import numpy as np

    from bayes_smlm.io.atomic import check_output_file, write_text
    from bayes_smlm.io.frames import read_frames
    from bayes_smlm.localization.detection import detect, settings_from_config
    from bayes_smlm.surrogates.phi.estimator import PhiPredictor, load_phi

    check_output_file(args.out, ".csv")
    task, adu, _ = read_frames(args.file)
    model, config = load_phi(args.checkpoint, task)
    settings = settings_from_config(config, args.detector)
    kdes = PhiPredictor(model, task, precision=args.precision, compiled=args.compiled)(adu)
    found = detect(kdes, task.optics.sigma_kde, task.optics.upsampling, settings)
    nm = task.optics.pixel_size_nm
    lines = ["frame,x,y,x_nm,y_nm,log_response"]
    lines += [
        f"{f},{x:.5f},{y:.5f},{x * nm:.3f},{y * nm:.3f},{r:.5f}"
        for f, (x, y), r in zip(found.frame, found.xy, found.response)
    ]
    write_text(args.out, "\n".join(lines) + "\n")
    per_frame = np.bincount(found.frame, minlength=len(adu))
    print(
        f"wrote {args.out}: {len(found.xy)} detections in {len(adu)} frames "
        f"({per_frame.mean():.2f} per frame; detector {settings.detector}, threshold "
        f"{settings.threshold:g}, sub-pixel {settings.refinement})"
    )
    return 0


def cmd_evaluate_phi(args: argparse.Namespace) -> int:
    from bayes_smlm.surrogates.phi.evaluation import brightness_table, evaluate_phi, metrics_table

    task = task_from_args(args)
    result = evaluate_phi(args.checkpoint, task, args.frames, args.seed, precision=args.precision)
    if args.json:
        print(json_text(result))
        return 0
    crlb = result["sqrt_crlb_px"]
    print(
        f"φ on {args.frames} fresh frames of task {task.name!r} (seed {args.seed}); matching "
        f"tolerance {result['rows'][0]['tolerance_px']:g} LR px"
        + (f"; √CRLB at the frame centre {crlb:.4f} px" if crlb else "")
    )
    print(metrics_table(result))
    if result["by_brightness"]:
        print("\nDetection across brightness (i0 and background drawn from the task's ranges):")
        print(brightness_table(result))
    return 0


def add_inference_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``detect-phi`` and ``evaluate-phi``."""
    from bayes_smlm.localization.detection import DETECTORS

    p = sub.add_parser(
        "detect-phi",
        help="detect emitters in φ's KDE of simulated frames -> CSV (movies: `localize`)",
    )
    p.add_argument("file", metavar="FILE.npz", type=Path, help="output of `bayes-smlm simulate`")
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="φ checkpoint directory (default: the shipped one for the file's task)",
    )
    p.add_argument(
        "--detector",
        choices=DETECTORS,
        default=None,
        help="detector (default: the checkpoint's, local maxima)",
    )
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="inference precision")
    p.add_argument(
        "--compiled",
        action="store_true",
        help="run φ through torch.compile: ≈ 1.4× more frames/s on a CPU after a "
        "compilation of seconds (for movies; needs a C++ compiler)",
    )
    p.add_argument("--out", type=Path, required=True, help="output locs.csv")
    p.set_defaults(handler=cmd_detect_phi)

    p = sub.add_parser("evaluate-phi", help="precision, recall, RMSE of φ on fresh frames")
    add_task_arguments(p)
    p.add_argument("--frames", type=positive_int, default=1000, help="fresh frames (default 1000)")
    p.add_argument("--seed", type=seed_int, default=1, help="seed of the fresh frames (default 1)")
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="φ checkpoint directory (default: the shipped one for --task)",
    )
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="inference precision")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_evaluate_phi)
