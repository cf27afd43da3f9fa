"""``bayes-smlm posterior``: every frame of a simulated ``.npz`` through a registered method, to
a NetCDF DataTree or, chunk by chunk (resumable, on Dask workers if asked), a zarr store."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bayes_smlm.cli.arguments import positive_int, scheduler_address, seed_int
from bayes_smlm.cli.methods import (
    MethodOptionsHelp,
    add_method_flags,
    merge_options,
    method_option,
)


def cmd_posterior(args: argparse.Namespace) -> int:
    from bayes_smlm.errors import ConfigError
    from bayes_smlm.io.atomic import check_output_dir, check_output_file
    from bayes_smlm.io.frames import read_frames
    from bayes_smlm.io.posteriors import stored_flags, to_datatree, write_datatree
    from bayes_smlm.methods import get_method

    chunked = args.out.suffix == ".zarr"
    if chunked:
        check_output_dir(args.out)
    else:
        check_output_file(args.out, ".nc")  # before sampling, not only in the writer
        for name in ("scheduler", "chunk_frames"):
            if getattr(args, name) is not None:
                raise ConfigError(name, "writes a zarr store chunk by chunk: give --out FILE.zarr")
    method = get_method(args.method)
    task, adu, theta = read_frames(args.file)
    options = {"seed": args.seed, "progress": not args.quiet and not chunked}
    given = {name: getattr(args, name) for name in args.method_flags}
    options.update({k: v for k, v in given.items() if v is not None})  # else the method's default
    options = merge_options(options, args.option)
    if args.full_chain:
        if args.steps is not None:
            raise ConfigError("--full-chain", "cannot be combined with --steps")
        options["steps"] = None
    if chunked:
        return _posterior_in_chunks(args, task, adu, theta, options)
    result = method(task, adu, theta_true=theta, **options)
    tree = to_datatree(result)
    write_datatree(tree, args.out)
    print(
        f"wrote {args.out}: method {args.method}, {result.n_frames} frames, "
        f"{result.seconds:.1f} s ({result.seconds / result.n_frames:.3f} s/frame)"
    )
    _announce_flags(stored_flags(tree), args.method)
    _announce_counts(result)
    return 0


def _announce_counts(result) -> None:
    """With several counts asked, how many frames each count is the most probable for."""
    evidence = result.evidence
    if evidence is None or len(evidence.counts) < 2:
        return
    best = evidence.most_probable
    shares = ", ".join(f"n={n}: {int(np.sum(best == n))}" for n in evidence.counts)
    print(f"most probable count per frame ({shares}); P(n | x) is in the file's evidence group")


def _posterior_in_chunks(args: argparse.Namespace, task, adu, theta, options: dict) -> int:
    """``posterior --out FILE.zarr``: chunks of frames on Dask workers (``--scheduler``) or in
    this process, each written to the store as it finishes; a rerun resumes."""
    import time

    from bayes_smlm.cluster.client import dask_client
    from bayes_smlm.cluster.posterior import DEFAULT_CHUNK_FRAMES, posterior_in_chunks
    from bayes_smlm.io.posterior_store import chunk_ranges, open_store_datatree
    from bayes_smlm.io.posteriors import stored_flags

    chunk_frames = args.chunk_frames or DEFAULT_CHUNK_FRAMES
    started = time.perf_counter()
    with dask_client(args.scheduler) as client:
        path, computed = posterior_in_chunks(
            args.method,
            task,
            adu,
            args.out,
            options=options,
            chunk_frames=chunk_frames,
            theta_true=theta,
            client=client,
            progress=not args.quiet,
        )
    wall = time.perf_counter() - started
    tree = open_store_datatree(path)
    chunks = len(chunk_ranges(adu.shape[0], chunk_frames))
    where = f"on {args.scheduler}" if args.scheduler else "in this process"
    resumed = f", {chunks - computed} already in the store" if computed < chunks else ""
    print(
        f"wrote {path}: method {args.method}, {adu.shape[0]} frames in {chunks} chunks "
        f"({computed} computed {where}{resumed}), {wall:.1f} s wall, "
        f"{float(tree.attrs['seconds']):.1f} s of the method's time over all chunks"
    )
    _announce_flags(stored_flags(tree), args.method)
    return 0


def _announce_flags(flagged: np.ndarray | None, method: str) -> None:
    """Say on screen what the file records: frames not to be trusted (``flagged``, (F,)) and
    the method's rule for them (its :class:`~bayes_smlm.methods.spec.MethodSpec`), or why none
    were checked (None: θ draws of a single chain)."""
    from bayes_smlm.io.posteriors import SINGLE_CHAIN_NOTE
    from bayes_smlm.methods.registry import method_spec

    if flagged is None:
        print(f"note: diagnostics {SINGLE_CHAIN_NOTE}")
        return
    n_frames = flagged.size
    flagged = np.flatnonzero(flagged)
    if flagged.size:
        shown = ", ".join(map(str, flagged[:20])) + (" …" if flagged.size > 20 else "")
        print(
            f"warning: {flagged.size} of {n_frames} frames are flagged by {method}'s own "
            f"checks ({method_spec(method).flags}): frames {shown}; see the file's "
            "diagnostics or extra group"
        )


def add_posterior_command(sub: argparse._SubParsersAction) -> None:
    """Register ``posterior``, its flags built from the registered methods' specs."""
    p = sub.add_parser(
        "posterior",
        help="posterior of every frame of a simulated .npz -> NetCDF",
        formatter_class=MethodOptionsHelp,
    )
    p.add_argument("file", metavar="FILE.npz", type=Path, help="output of `bayes-smlm simulate`")
    p.add_argument(
        "--method",
        required=True,
        help="name of a registered posterior method (an unknown name prints the list)",
    )
    add_method_flags(p)
    p.add_argument("--seed", type=seed_int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--option",
        action="append",
        type=method_option,
        metavar="KEY=VALUE",
        help="any option of the method, a plug-in's too (`bayes-smlm methods --show "
        "NAME` lists them; VALUE read as JSON where it is: 8, 0.5, true)",
    )
    p.add_argument(
        "--scheduler",
        type=scheduler_address,
        default=None,
        help="run chunks of frames on Dask workers: a scheduler address "
        "(tcp://host:8786) or local:N (N worker processes here); needs --out "
        "FILE.zarr (default: this process)",
    )
    p.add_argument(
        "--chunk-frames",
        type=positive_int,
        default=None,
        help="frames per chunk of a .zarr run (default 64): the unit of work, of "
        "writing and of resuming",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output FILE.nc (ArviZ DataTree), or FILE.zarr: written chunk by chunk, "
        "and a rerun of the same command resumes it",
    )
    p.set_defaults(handler=cmd_posterior)
