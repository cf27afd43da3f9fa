"""bayes-smlm: simulate frames, sample and compare their posteriors, localize and render movies.

The parser and the small commands (simulate, crlb, tasks, study, diagnose, report); the others
live beside it: ``posterior`` (:mod:`.posterior`), ``methods`` (:mod:`.methods`), the network
commands (:mod:`.nets`), ``localize`` (:mod:`.localize`) and the other acquisition commands
(:mod:`.acquisition`).

Every error a user can cause is printed as one line naming the argument, exit status 2.

The command handlers import the library inside their bodies, on purpose: ``main`` must set XLA's
host-device flags (:func:`bayes_smlm.parallel.request_host_devices`) before anything imports JAX,
and ``bayes-smlm tasks`` should not pay for importing torch and diffusers.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bayes_smlm.cli.acquisition import add_acquisition_commands
from bayes_smlm.cli.arguments import (
    OneLineErrorParser,
    add_task_arguments,
    finite_float,
    flag_names,
    json_text,
    non_negative_int,
    positive_int,
    report_errors,
    seed_int,
    task_from_args,
)
from bayes_smlm.cli.methods import (
    add_method_commands,
)
from bayes_smlm.cli.nets import add_network_commands
from bayes_smlm.cli.posterior import add_posterior_command


def cmd_simulate(args: argparse.Namespace) -> int:
    from bayes_smlm.forward.simulate import simulate
    from bayes_smlm.io.atomic import check_output_file, write_npz

    task = task_from_args(args)
    check_output_file(args.out, ".npz")  # before the work, not only in the writer
    batch = simulate(task, args.frames, args.seed)
    write_npz(
        args.out,
        adu=batch.adu,
        theta=batch.theta,
        kde=batch.kde,
        i0=batch.i0,
        background=batch.background,
        config=task.to_json(),
        seed=args.seed,
    )
    print(
        f"wrote {args.out}: {args.frames} frames of task {task.name!r} "
        f"(adu {batch.adu.shape}, theta {batch.theta.shape}, kde {batch.kde.shape})"
    )
    return 0


def cmd_crlb(args: argparse.Namespace) -> int:
    from bayes_smlm.errors import ConfigError
    from bayes_smlm.forward.fisher import fisher_information

    task = task_from_args(args)
    if len(args.x) != len(args.y):
        raise ConfigError(
            "--y", f"needs one value per --x value ({len(args.x)} given, got {len(args.y)})"
        )
    theta = np.stack([args.x, args.y], axis=-1)
    bound = fisher_information(
        task, theta, include_intensity=args.fit_intensity, include_background=args.fit_background
    )
    nm = task.optics.pixel_size_nm
    emitters = [
        {
            "x": float(x),
            "y": float(y),
            "sqrt_crlb_x_px": float(sx),
            "sqrt_crlb_y_px": float(sy),
            "sqrt_crlb_x_nm": float(sx * nm),
            "sqrt_crlb_y_nm": float(sy * nm),
        }
        for (x, y), (sx, sy) in zip(theta, bound.sd_xy)
    ]
    if args.json:
        out = {
            "task": task.name,
            "pixel_size_nm": nm,
            "fit_intensity": args.fit_intensity,
            "fit_background": args.fit_background,
            "emitters": emitters,
        }
        if len(emitters) == 1:
            out.update({k: v for k, v in emitters[0].items() if k.startswith("sqrt")})
        print(json_text(out))
        return 0
    p, c = task.prior, task.camera
    print(
        f"task {task.name}: σx = {task.optics.sigma_psf:g} px, i0 = {p.i0:g} photons, "
        f"background = {_describe(p.background)} photons/px, readout variance = "
        f"{_describe(c.readout_var)} ADU², gain = {_describe(c.gain)} ADU/photon"
    )
    nuisance = [
        name for flag, name in ((args.fit_intensity, "i0"), (args.fit_background, "b")) if flag
    ]
    if nuisance:
        print(f"nuisance parameters estimated jointly: {', '.join(nuisance)}")
    for k, e in enumerate(emitters):
        print(
            f"emitter {k} at (x, y) = ({e['x']:g}, {e['y']:g}) px: "
            f"sqrt(CRLB) x = {e['sqrt_crlb_x_px']:.4f} px ({e['sqrt_crlb_x_nm']:.2f} nm), "
            f"y = {e['sqrt_crlb_y_px']:.4f} px ({e['sqrt_crlb_y_nm']:.2f} nm)"
        )
    return 0


def _describe(value) -> str:
    if np.ndim(value) == 0:
        return f"{float(value):g}"
    arr = np.asarray(value)
    return f"map {arr.shape} in [{arr.min():g}, {arr.max():g}]"


def cmd_tasks(args: argparse.Namespace) -> int:
    from bayes_smlm.forward.tasks import get_task, list_tasks

    if args.show:
        print(json.dumps(get_task(args.show).to_dict(), indent=2))
        return 0
    for name in list_tasks():
        t = get_task(name)
        print(
            f"{name:12s} {t.prior.n_emitters} emitter(s) on a radius-{t.prior.radius:g} disc, "
            f"{t.height}x{t.width} px, i0 = {t.prior.i0:g}, σy = {t.optics.sigma_kde:g} HR px"
        )
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from bayes_smlm.studies.registry import run_study

    path = run_study(args.name, args.preset, args.seed, args.out, args.task)
    print(f"wrote {path}")
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    from bayes_smlm.io.atomic import check_output_dir
    from bayes_smlm.io.posteriors import load_posterior
    from bayes_smlm.reporting.diagnose import write_diagnostics

    check_output_dir(args.out)
    summary = write_diagnostics(load_posterior(args.file), args.out, args.frame, args.file)
    chosen = "" if args.frame is not None else " (the worst by R-hat)"
    rhat = max(c["rhat"] for c in summary["coordinates"].values())
    print(
        f"wrote {args.out}: rank, trace, ESS-evolution and pair plots of frame "
        f"{summary['frame']}{chosen}, emitters {summary['closest_pair']} (closest pair) and "
        f"{summary['worst_rhat_emitter']} (worst R-hat {rhat:.3f})"
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from bayes_smlm.studies.registry import rebuild_report

    print(f"wrote {rebuild_report(args.dir)}")
    return 0


# Library argument names that differ from the flag that sets them (the rest map by name): for
# every command, then per command.
FLAG_ALIASES = {"n_frames": "--frames"}
COMMAND_FLAG_ALIASES = {
    "posterior": {"steps": "--steps"},
    "tasks": {"task": "--show"},
    "train-phi": {"max_seconds": "--max-minutes"},
    "train-psi": {"max_seconds": "--max-minutes"},
}


def build_parser() -> argparse.ArgumentParser:
    """The ``bayes-smlm`` argument parser."""
    from bayes_smlm import __version__
    from bayes_smlm.studies.registry import add_study_arguments, list_studies

    parser = OneLineErrorParser(prog="bayes-smlm", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"bayes-smlm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("simulate", help="simulate frames, positions and KDEs to an .npz file")
    add_task_arguments(p)
    p.add_argument("--frames", type=positive_int, required=True, help="number of frames")
    p.add_argument("--seed", type=seed_int, required=True, help="random seed in [0, 2^32)")
    p.add_argument("--out", type=Path, required=True, help="output FILE.npz")
    p.set_defaults(handler=cmd_simulate)

    p = sub.add_parser("crlb", help="√CRLB of emitter positions (LR px and nm)")
    add_task_arguments(p)
    p.add_argument(
        "--x", type=finite_float, nargs="+", required=True, help="emitter x position(s), LR px"
    )
    p.add_argument(
        "--y", type=finite_float, nargs="+", required=True, help="emitter y position(s), LR px"
    )
    p.add_argument(
        "--fit-intensity",
        action="store_true",
        help="treat each emitter's i0 as unknown (nuisance parameter)",
    )
    p.add_argument(
        "--fit-background",
        action="store_true",
        help="treat the background as unknown (nuisance parameter)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_crlb)

    add_posterior_command(sub)

    p = sub.add_parser("tasks", help="list tasks, or print one task's full config")
    p.add_argument("--show", metavar="NAME", help="print the config of task NAME as JSON")
    p.set_defaults(handler=cmd_tasks)

    add_method_commands(sub)
    add_network_commands(sub)
    add_acquisition_commands(sub)

    p = sub.add_parser("study", help="run a study and write its report")
    p.add_argument("name", metavar="NAME", help=f"one of: {', '.join(list_studies())}")
    add_study_arguments(p)
    p.set_defaults(handler=cmd_study)

    p = sub.add_parser(
        "diagnose",
        help="ArviZ rank, trace, ESS-evolution and pair plots of "
        "one frame of a posterior with draws -> folder of PNGs",
    )
    p.add_argument(
        "file",
        metavar="FILE",
        type=Path,
        help="output of `bayes-smlm posterior` (.nc or .zarr) of a sampler",
    )
    p.add_argument(
        "--frame",
        type=non_negative_int,
        default=None,
        help="frame index (default: the worst, by R-hat then bulk ESS)",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.set_defaults(handler=cmd_diagnose)

    p = sub.add_parser(
        "report",
        help="rebuild a study's report.md and figures from its saved results, without recomputing",
    )
    p.add_argument("dir", type=Path, help="a study's report folder (e.g. reports/calibration)")
    p.set_defaults(handler=cmd_report)
    for name, command in sub.choices.items():
        aliases = {**FLAG_ALIASES, **COMMAND_FLAG_ALIASES.get(name, {})}
        command.set_defaults(flags=flag_names(command, **aliases))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bayes-smlm`` console script."""
    from bayes_smlm.parallel import request_compilation_cache, request_host_devices

    request_host_devices()  # before anything imports JAX: frames run on every core
    request_compilation_cache()  # and compiled samplers are kept between runs
    parser = build_parser()
    args = parser.parse_args(argv)
    with report_errors(f"bayes-smlm {args.command}", args.flags):
        out = getattr(args, "out", None)
        if out is None:
            return args.handler(args)
        from bayes_smlm.io.locks import hold_output

        with hold_output(out):  # one writer per output, for the whole run
            return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
