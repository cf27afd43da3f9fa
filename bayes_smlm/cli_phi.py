"""``bayes-smlm`` commands for φ: train-phi, localize, evaluate-phi."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from .cli_types import positive_float, positive_int, seed_int


def cmd_train_phi(args: argparse.Namespace) -> int:
    from .cli import task_from_args
    from .phi import PhiTraining, train_phi
    task = task_from_args(args)
    settings = PhiTraining(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                           seed=args.seed, patience=args.patience)
    command = "bayes-smlm " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    state = train_phi(task, args.out, settings, resume=args.resume, progress=not args.quiet,
                      command=command)
    print(f"wrote {args.out}: {state.step} steps, best validation MSE {state.best_val:.4g} at step "
          f"{state.best_step}{' (stopped early)' if state.stopped_early else ''}, "
          f"{state.seconds:.0f} s")
    return 0


def add_phi_commands(sub: argparse._SubParsersAction, add_task_arguments) -> None:
    """Register the φ sub-commands on the ``bayes-smlm`` parser."""
    p = sub.add_parser("train-phi", help="train the DeepSTORM estimator φ on simulated frames")
    add_task_arguments(p)
    p.add_argument("--steps", type=positive_int, default=3000, help="optimiser steps (default 3000)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="frames per step (default 32)")
    p.add_argument("--lr", type=positive_float, default=2e-3, help="peak learning rate (default 2e-3)")
    p.add_argument("--seed", type=seed_int, default=0, help="random seed (default 0)")
    p.add_argument("--patience", type=int, default=0,
                   help="stop after this many validations without improvement (default 0: never)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", type=Path, required=True, help="checkpoint directory")
    p.set_defaults(handler=cmd_train_phi)
    add_inference_commands(sub, add_task_arguments)


def cmd_localize(args: argparse.Namespace) -> int:
    import numpy as np
    from .config import task_from_json
    from .detect import detect
    from .io import check_suffix, read_npz, write_text
    from .phi import PhiPredictor, load_phi
    from .phi_eval import settings_from_config
    check_suffix(args.out, ".csv")
    data = read_npz(args.file, required=("adu", "config"))
    task = task_from_json(str(data["config"]))
    model, config = load_phi(args.checkpoint, task)
    settings = settings_from_config(config, args.detector)
    kdes = PhiPredictor(model, task, precision=args.precision)(data["adu"])
    found = detect(kdes, task.optics.sigma_kde, task.optics.upsampling, settings)
    nm = task.optics.pixel_size_nm
    lines = ["frame,x,y,x_nm,y_nm,log_response"]
    lines += [f"{f},{x:.5f},{y:.5f},{x * nm:.3f},{y * nm:.3f},{r:.5f}"
              for f, (x, y), r in zip(found.frame, found.xy, found.response)]
    write_text(args.out, "\n".join(lines) + "\n")
    per_frame = np.bincount(found.frame, minlength=len(data["adu"]))
    print(f"wrote {args.out}: {len(found.xy)} detections in {len(data['adu'])} frames "
          f"({per_frame.mean():.2f} per frame; detector {settings.detector}, threshold "
          f"{settings.threshold:g}, sub-pixel {settings.refinement})")
    return 0


def cmd_evaluate_phi(args: argparse.Namespace) -> int:
    import json
    from .cli import task_from_args
    from .phi_eval import evaluate_phi, metrics_table
    task = task_from_args(args)
    result = evaluate_phi(args.checkpoint, task, args.frames, args.seed, precision=args.precision)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    crlb = result["sqrt_crlb_px"]
    print(f"φ on {args.frames} fresh frames of task {task.name!r} (seed {args.seed}); matching "
          f"tolerance {result['rows'][0]['tolerance_px']:g} LR px"
          + (f"; √CRLB at the frame centre {crlb:.4f} px" if crlb else ""))
    print(metrics_table(result))
    return 0


def add_inference_commands(sub: argparse._SubParsersAction, add_task_arguments) -> None:
    """Register ``localize`` and ``evaluate-phi``."""
    from .detect import DETECTORS
    from .phi import PRECISIONS
    p = sub.add_parser("localize", help="detect and localize emitters with φ -> CSV")
    p.add_argument("file", metavar="FILE.npz", type=Path, help="output of `bayes-smlm simulate`")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="φ checkpoint directory (default: the shipped one for the file's task)")
    p.add_argument("--detector", choices=DETECTORS, default=None,
                   help="detector (default: the checkpoint's, local maxima)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="inference precision")
    p.add_argument("--out", type=Path, required=True, help="output locs.csv")
    p.set_defaults(handler=cmd_localize)

    p = sub.add_parser("evaluate-phi", help="precision, recall, RMSE of φ on fresh frames")
    add_task_arguments(p)
    p.add_argument("--frames", type=positive_int, default=1000, help="fresh frames (default 1000)")
    p.add_argument("--seed", type=seed_int, default=1, help="seed of the fresh frames (default 1)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="φ checkpoint directory (default: the shipped one for --task)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="inference precision")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_evaluate_phi)
