"""``bayes-smlm`` commands for real acquisitions: render (CSV -> super-resolution image and its SD
map), calibrate-camera (dark and flat stacks -> camera maps), simulate-movie (a structured sCMOS
test movie); localize (movie -> localization CSV) is :mod:`bayes_smlm.cli.localize`."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bayes_smlm.cli.arguments import positive_float, positive_int, seed_int
from bayes_smlm.cli.localize import add_localize_command


def cmd_calibrate_camera(args: argparse.Namespace) -> int:
    from bayes_smlm.acquisition.camera_calibration import (
        GAIN_SE_WARN,
        calibrate,
        relative_gain_se,
        stack_moments,
        write_camera_maps,
    )
    from bayes_smlm.io.atomic import check_output_dir

    check_output_dir(args.out)
    dark = stack_moments(args.dark, "dark")
    flats = [stack_moments(path, "flat") for path in args.flat]
    maps = calibrate(dark, flats, [path.name for path in args.flat])
    paths = write_camera_maps(args.out, maps)
    rel = np.median(maps.gain_se / np.abs(maps.gain))
    print(
        f"{dark.frames} dark frames, {len(flats)} flat levels (median "
        f"{', '.join(f'{v:.0f}' for v in maps.levels)} ADU above the offset)"
    )
    print(
        f"median offset {np.median(maps.offset):.2f} ADU (SE {np.median(maps.offset_se):.2f}), "
        f"readout variance {np.median(maps.readout_var):.2f} ADU² "
        f"(SE {100 * np.median(maps.readout_var_se / maps.readout_var):.1f} %), gain "
        f"{np.median(maps.gain):.3f} ADU/photon (SE {100 * rel:.1f} % per pixel)"
    )
    if rel > GAIN_SE_WARN:
        frames = int(np.ceil(min(f.frames for f in flats) * (rel / GAIN_SE_WARN) ** 2))
        print(
            f"warning: a per-pixel gain SE of {100 * rel:.1f} % costs localize precision on "
            "bright spots (RMSE ≈ 1.2× the CRLB at 6 %; --gain-se keeps the stated "
            f"uncertainties honest); record about {frames} or more frames per flat level to "
            "bring it within a few per cent"
        )
    print(
        f"wrote {', '.join(str(p) for p in paths.values())}; use them as --set "
        f"camera.offset={paths['offset']} --set camera.gain={paths['gain']} --set "
        f"camera.readout_var={paths['readout_var']} --gain-se {relative_gain_se(maps):.4f}"
    )
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    import numpy as np

    from bayes_smlm.acquisition.render import render, write_rendering
    from bayes_smlm.acquisition.table import read_field_of_view, read_localizations
    from bayes_smlm.errors import ConfigError
    from bayes_smlm.io.atomic import check_output_dir, check_room

    check_output_dir(args.out)
    table = read_localizations(args.locs, argument="locs")
    for column in ("uncertainty_x [nm]", "uncertainty_y [nm]"):
        if column not in table:
            raise ConfigError(
                "locs",
                f"{args.locs.name} lacks the column {column!r}: the SD "
                "map needs each localization's uncertainty",
            )
    keep = np.ones(len(table["x [nm]"]), bool)
    if "flagged" in table and not args.include_flagged:
        keep = table["flagged"] == 0
    correlation = table.get("uncertainty_xy_correlation")
    extent = args.size_nm or read_field_of_view(args.locs)  # (width, height) nm
    shape = (
        None
        if extent is None
        else (int(np.ceil(extent[1] / args.pixel_nm)), int(np.ceil(extent[0] / args.pixel_nm)))
    )
    rendering = render(
        table["x [nm]"][keep],
        table["y [nm]"][keep],
        table["uncertainty_x [nm]"][keep],
        table["uncertainty_y [nm]"][keep],
        None if correlation is None else correlation[keep],
        pixel_nm=args.pixel_nm,
        sigma_nm=args.sigma_nm,
        shape=shape,
    )
    check_room(args.out, 4 * rendering.mean.nbytes)  # two float32 TIFFs, two PNGs at most as large
    paths = write_rendering(args.out, rendering)
    print(
        f"wrote {', '.join(str(p) for p in paths.values())}: {rendering.localizations} "
        f"localizations on {rendering.mean.shape[1]} x {rendering.mean.shape[0]} pixels of "
        f"{args.pixel_nm:g} nm, kernel {args.sigma_nm:g} nm"
    )
    left_out = [
        f"{n} {why}"
        for n, why in (
            (int((~keep).sum()), "flagged (--include-flagged draws them)"),
            (rendering.non_finite, "with a non-finite position or uncertainty"),
            (rendering.outside, "outside the image"),
        )
        if n
    ]
    if left_out:
        print(f"note: left out {', '.join(left_out)}")
    if extent is None:
        print(
            f"note: no field of view beside {args.locs.name} (written by `localize`): the image "
            "ends at the outermost localization; --size-nm WIDTH HEIGHT frames it"
        )
    return 0


def cmd_simulate_movie(args: argparse.Namespace) -> int:
    from bayes_smlm.acquisition.sample import MovieSettings, simulate_movie
    from bayes_smlm.io.atomic import check_output_dir, check_room

    check_output_dir(args.out)
    settings = MovieSettings(
        frames=args.frames,
        height=args.size,
        width=args.size,
        emitters_per_frame=args.emitters,
        min_distance=args.min_distance,
    )
    pixels = args.size * args.size
    check_room(
        args.out,
        args.frames * pixels * 2
        + 3 * pixels * 4  # uint16 movie, float32 maps
        + args.frames * args.emitters * 3 * 8,
    )  # positions and brightness
    paths = simulate_movie(settings, args.seed).write(args.out)
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


def add_acquisition_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``localize``, ``render``, ``calibrate-camera`` and ``simulate-movie``."""
    add_localize_command(sub)

    p = sub.add_parser(
        "render",
        help="super-resolution image and its per-pixel SD map from a "
        "localization CSV -> TIFF + PNG",
    )
    p.add_argument("locs", metavar="LOCS.csv", type=Path, help="output of `localize`")
    p.add_argument(
        "--pixel-nm", type=positive_float, default=10.0, help="render pixel size, nm (default 10)"
    )
    p.add_argument(
        "--sigma-nm", type=positive_float, default=20.0, help="kernel width, nm (default 20)"
    )
    p.add_argument(
        "--size-nm",
        type=positive_float,
        nargs=2,
        metavar=("WIDTH", "HEIGHT"),
        default=None,
        help="image size, nm (default: the movie's field of view, "
        "from LOCS.fov.json beside the CSV; without it, enough "
        "to hold every localization)",
    )
    p.add_argument("--include-flagged", action="store_true", help="draw flagged localizations too")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.set_defaults(handler=cmd_render)

    p = sub.add_parser(
        "calibrate-camera",
        help="per-pixel offset, readout-variance and gain maps "
        "(TIFF) from dark frames and flats at several "
        "light levels",
    )
    p.add_argument(
        "--dark",
        type=Path,
        required=True,
        metavar="DARK.tif",
        help="stack of dark frames (no light), ADU; at least 20 frames",
    )
    p.add_argument(
        "--flat",
        type=Path,
        nargs="+",
        required=True,
        metavar="FLAT.tif",
        help="stacks of uniformly lit frames, one per light level (two or more "
        "levels, none saturated), ADU",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.set_defaults(handler=cmd_calibrate_camera)

    p = sub.add_parser(
        "simulate-movie",
        help="simulate a filament sample on an sCMOS camera: movie.tif, camera maps, truth.npz",
    )
    p.add_argument("--frames", type=positive_int, default=150, help="frames (default 150)")
    p.add_argument("--size", type=positive_int, default=64, help="frame side, px (default 64)")
    p.add_argument(
        "--emitters", type=positive_int, default=6, help="emitters per frame (default 6)"
    )
    p.add_argument(
        "--min-distance",
        type=positive_float,
        default=6.0,
        help="least distance between emitters of a frame, px (default 6)",
    )
    p.add_argument("--seed", type=seed_int, default=0, help="random seed (default 0)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.set_defaults(handler=cmd_simulate_movie)
