"""``bayes-smlm localize``: a movie (TIFF or frames ``.npz``) in, a localization CSV with each
row's posterior SDs out; its task from the movie and ``--set``, its flags, its resumable runs."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bayes_smlm.acquisition.settings import DETECTORS, METHODS, LocalizeSettings
from bayes_smlm.cli.arguments import (
    chain_count,
    fraction_below_one,
    frame_range,
    non_negative_int,
    positive_float,
    positive_int,
    scheduler_address,
    seed_int,
)


def _movie_task(args: argparse.Namespace, movie):
    """The task of a movie: the .npz's own, or ``--task`` at the movie's frame size; then the
    ``--set`` overrides (camera maps must have the movie's frame shape)."""
    from bayes_smlm.errors import ConfigError
    from bayes_smlm.forward.config import parse_override, task_from_json, with_overrides
    from bayes_smlm.forward.tasks import get_task

    overrides = dict(parse_override(item) for item in args.set or [])
    _, height, width = movie.shape
    for key, size in (("height", height), ("width", width)):
        if key in overrides and overrides[key] != size:
            raise ConfigError(
                "set",
                f"{key}={overrides[key]:g} disagrees with the movie, whose "
                f"frames are {height} x {width} px (rows x columns); a "
                "movie's frame size is its own: leave it out",
            )
    if movie.task_json is not None:
        return (
            with_overrides(task_from_json(movie.task_json), overrides)
            if overrides
            else task_from_json(movie.task_json)
        )
    # the prior disc is the simulator's, not localize's: kept inside a small frame
    radius = min(get_task(args.task).prior.radius, min(height, width) / 2.0)
    return get_task(
        args.task, {"height": height, "width": width, "prior.radius": radius, **overrides}
    )


def cmd_localize(args: argparse.Namespace) -> int:
    from bayes_smlm.acquisition.movie import Movie
    from bayes_smlm.acquisition.pipeline import LocalizeSettings, localize_movie
    from bayes_smlm.acquisition.resume import ChunkStore, partial_folder, run_description
    from bayes_smlm.acquisition.table import write_localizations
    from bayes_smlm.cluster.client import dask_client
    from bayes_smlm.io.atomic import OutputError, check_output_file, os_reason

    check_output_file(args.out, ".csv")
    movie = Movie(args.movie, argument="movie", frames=args.frames)
    task = _movie_task(args, movie)
    movie.check(task, args.chunk_frames)  # every frame through the frame gate, before any work
    if args.camera == "from-movie":
        from bayes_smlm.acquisition.camera_from_movie import camera_from_movie
        from bayes_smlm.forward.config import with_overrides

        estimated = camera_from_movie(
            movie, task, chunk_frames=args.chunk_frames, threshold=args.threshold
        )
        task = with_overrides(
            task, {"camera.offset": estimated.offset, "camera.readout_var": estimated.readout_var}
        )
        print(estimated.summary())
    settings = LocalizeSettings(
        threshold=args.threshold,
        detector=args.detector,
        phi_checkpoint=None if args.phi_checkpoint is None else str(args.phi_checkpoint),
        joint=not args.separate,
        chunk_frames=args.chunk_frames,
        method=args.method,
        residual_passes=args.residual_passes,
        min_p_exists=args.min_p_exists,
        density=args.density,
        gain_se=args.gain_se,
        chains=args.chains,
        draws=args.draws,
        warmup=args.warmup,
        seed=args.seed,
    )
    if settings.detector == "phi":  # refuse a φ for other optics or priors before any work
        from bayes_smlm.acquisition.phi_spots import check_phi

        check_phi(settings.phi_checkpoint, task)
    started = time.perf_counter()
    try:
        store = ChunkStore(partial_folder(args.out), run_description(task, settings))
        with dask_client(args.scheduler) as client:
            rows = localize_movie(
                movie, task, settings, progress=not args.quiet, client=client, store=store
            )
        seconds = time.perf_counter() - started
        write_localizations(args.out, rows, task)
    except (OSError, OutputError) as err:  # a disk that filled: the finished chunks stay
        reason = os_reason(err) if isinstance(err, OSError) else str(err)
        raise OutputError(
            f"the chunks finished so far are kept in {partial_folder(args.out)}: "
            "rerun the same command when there is space, and it resumes; "
            f"{reason}"
        ) from None  # the reason last: it may end with a rescue path
    finally:
        movie.close()
    store.remove()
    if store.resumed:
        print(
            f"resumed: {store.resumed} chunk(s) of {args.chunk_frames} frames taken from the "
            f"interrupted run ({store.folder.name}), their frames checked unchanged"
        )
    n, flagged = len(rows["x"]), int(rows["flagged"].sum())
    print(
        f"wrote {args.out}: {n} localizations in {len(movie)} frames of {movie.shape[2]} x "
        f"{movie.shape[1]} px ({seconds:.1f} s, {n / max(seconds, 1e-9):.0f} localizations/s "
        f"with compilation); {flagged} flagged"
    )
    return 0


def add_localize_command(sub: argparse._SubParsersAction) -> None:
    """Register ``localize``."""
    defaults = LocalizeSettings()
    p = sub.add_parser(
        "localize",
        help="localize emitters in a TIFF movie (or frames .npz) -> "
        "CSV with per-localization uncertainty",
    )
    p.add_argument(
        "movie",
        metavar="MOVIE",
        type=Path,
        help="TIFF stack (F, H, W) in ADU, any frame size; or an .npz of `simulate`",
    )
    p.add_argument(
        "--task",
        default="widefield",
        help="optics and priors (default widefield; an .npz brings its own)",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a task constant, e.g. --set camera.offset=offset.tif --set "
        "camera.gain=gain.tif --set camera.readout_var=var.tif --set "
        "optics.sigma_psf=1.1 --set optics.pixel_size_nm=100 (maps: .tif, .npy, "
        ".csv of the frame's shape); repeatable",
    )
    p.add_argument(
        "--method",
        choices=METHODS,
        default=defaults.method,
        help="posterior of each window: laplace (Gaussian at the mode, default) | "
        "nuts (BlackJAX NUTS started from it; adds r_hat, ess_bulk, divergences)",
    )
    p.add_argument(
        "--chains",
        type=chain_count,
        default=defaults.chains,
        help=f"NUTS chains per window, >= 2 (default {defaults.chains})",
    )
    p.add_argument(
        "--draws",
        type=positive_int,
        default=defaults.draws,
        help=f"NUTS draws kept per chain (default {defaults.draws})",
    )
    p.add_argument(
        "--warmup",
        type=positive_int,
        default=defaults.warmup,
        help=f"NUTS adaptation steps per chain (default {defaults.warmup})",
    )
    p.add_argument(
        "--seed", type=seed_int, default=defaults.seed, help=f"NUTS seed (default {defaults.seed})"
    )
    p.add_argument(
        "--threshold",
        type=positive_float,
        default=defaults.threshold,
        help=f"least signal-to-noise ratio of a candidate (default {defaults.threshold:g})",
    )
    p.add_argument(
        "--detector",
        choices=DETECTORS,
        default=defaults.detector,
        help="what finds candidates: dog (default), the difference-of-Gaussians "
        "filter and --threshold; phi, the DeepSTORM network's super-resolved "
        "image (resolves closer pairs and dimmer spots; the shipped widefield "
        "checkpoint unless --phi-checkpoint)",
    )
    p.add_argument(
        "--phi-checkpoint",
        type=Path,
        default=None,
        metavar="DIR",
        help="phi checkpoint for --detector phi, trained for the movie's optics, "
        "brightness and background ranges (frame size may differ)",
    )
    p.add_argument(
        "--separate",
        action="store_true",
        help="fit every candidate alone, even where windows overlap",
    )
    p.add_argument(
        "--residual-passes",
        type=non_negative_int,
        default=None,
        help="searches of the whole residual for emitters the detector merged, in "
        "frames with a window the fit does not explain, before the misfit "
        "windows' refits (which search near them anyway; default 3 with "
        "--detector phi, 0 with dog)",
    )
    p.add_argument(
        "--camera",
        choices=("given", "from-movie"),
        default="given",
        help="given (default): the camera.* values or maps of --set; from-movie: "
        "estimate per-pixel offset and readout variance from the movie's quiet "
        "pixels, with the scalar camera.gain and camera.offset given (a movie "
        "of constant background cannot tell per-pixel gain from background)",
    )
    p.add_argument(
        "--gain-se",
        type=fraction_below_one,
        default=defaults.gain_se,
        metavar="FRACTION",
        help="relative standard error of the gain map per pixel, as calibrate-camera "
        "prints it (0.064: 6.4 %%): taken into each localization's uncertainty "
        "and chi2 (default 0: the gain is known; --method laplace only)",
    )
    p.add_argument(
        "--min-p-exists",
        type=fraction_below_one,
        default=defaults.min_p_exists,
        help="each window keeps the largest count of emitters n with P(N >= n | x) "
        "at least this, by the evidence of each count (the p_exists column; "
        f"default {defaults.min_p_exists:g}: the posterior median; 0 keeps every "
        "candidate)",
    )
    p.add_argument(
        "--density",
        type=positive_float,
        default=None,
        help="the count prior's emitters per px^2 (default: the chunk's candidates per px^2)",
    )
    p.add_argument(
        "--chunk-frames",
        type=positive_int,
        default=defaults.chunk_frames,
        help=f"frames read and processed at a time (default {defaults.chunk_frames})",
    )
    p.add_argument(
        "--frames",
        type=frame_range,
        default=None,
        metavar="START:STOP",
        help="process only frames START … STOP-1 of the movie (frame numbers stay "
        "the movie's; default all)",
    )
    p.add_argument(
        "--scheduler",
        type=scheduler_address,
        default=None,
        help="localize chunks of --chunk-frames frames on Dask workers: a scheduler "
        "address (tcp://host:8786) or local:N (N worker processes here); the "
        "same rows as in this process (default)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", type=Path, required=True, help="output locs.csv")
    p.set_defaults(handler=cmd_localize)
