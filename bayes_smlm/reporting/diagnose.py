"""``bayes-smlm diagnose``: ArviZ's convergence plots of one frame of a saved posterior.

For the chosen frame (by default the worst: the largest rank-normalised R-hat, then the smallest
bulk ESS), the emitters that matter are the two whose posterior means lie closest — where
label switching and slow mixing live — and the emitter with the worst R-hat. Their x and y go to
arviz-plots' rank, trace and ESS-evolution plots, and the closest pair's four coordinates to a
pair plot; a JSON summary lists what was chosen and the per-coordinate diagnostics.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from bayes_smlm.errors import ConfigError

PLOTS = ("rank", "trace", "ess_evolution", "pair")
STYLE = "arviz-variat"  # arviz-plots' own style: its colour cycle is what its aesthetics expect


def _group(tree: xr.DataTree, name: str) -> xr.Dataset:
    """One group of a posterior DataTree as a Dataset."""
    return tree.children[name].to_dataset()


def worst_frame(tree: xr.DataTree) -> int:
    """The frame with the largest R-hat over its coordinates (ties: the smallest bulk ESS)."""
    diagnostics = _group(tree, "diagnostics")
    rhat = np.nan_to_num(diagnostics["rhat"].values, nan=np.inf)
    ess = np.nan_to_num(diagnostics["ess_bulk"].values, nan=0.0)
    frames = rhat.shape[0]
    worst_rhat = rhat.reshape(frames, -1).max(1)
    least_ess = ess.reshape(frames, -1).min(1)
    return int(np.lexsort((least_ess, -worst_rhat))[0])


def chosen_emitters(tree: xr.DataTree, frame: int) -> tuple[tuple[int, int], int]:
    """The closest pair of emitters by posterior mean (a frame of one emitter: that one twice)
    and the emitter with the worst R-hat, in ``frame``."""
    theta = _group(tree, "posterior")["theta"].isel(frame=frame).values  # chain, draw, N, axis
    means = theta.mean(axis=(0, 1))
    n = len(means)
    if n < 2:
        pair = (0, 0)
    else:
        distance = np.linalg.norm(means[:, None] - means[None], axis=-1)
        distance[np.eye(n, dtype=bool)] = np.inf
        i, j = np.unravel_index(int(np.nanargmin(distance)), distance.shape)
        pair = (int(min(i, j)), int(max(i, j)))
    rhat = np.nan_to_num(_group(tree, "diagnostics")["rhat"].isel(frame=frame).values, nan=np.inf)
    return pair, int(np.argmax(rhat.max(axis=1)))


def frame_tree(tree: xr.DataTree, frame: int, emitters: list[int]) -> xr.DataTree:
    """A DataTree of ``emitters``' coordinates of ``frame`` as scalar variables ``x3``, ``y3``, …
    (the form arviz-plots lays out one panel per variable), with the frame's divergences."""
    theta = tree["posterior"]["theta"].isel(frame=frame, drop=True)
    posterior = xr.Dataset(
        {
            f"{axis}{e}": theta.sel(emitter=e, axis=axis, drop=True)
            for e in emitters
            for axis in ("x", "y")
        }
    )
    groups = {"posterior": posterior}
    if "sample_stats" in tree.children and "diverging" in tree["sample_stats"]:
        groups["sample_stats"] = xr.Dataset(
            {"diverging": tree["sample_stats"]["diverging"].isel(frame=frame, drop=True)}
        )
    return xr.DataTree.from_dict(groups)


def check_diagnosable(tree: xr.DataTree, frame: int | None, file: Path) -> int:
    """The frame to diagnose; one-line errors for a result without chains of draws or a frame
    out of range."""
    method = tree.attrs.get("method", "?")
    if "posterior" not in tree.children or "diagnostics" not in tree.children:
        raise ConfigError(
            "file",
            f"{file} holds no posterior draws (method {method} gives KDE "
            "moments only); diagnose needs a sampler's result (nuts, "
            "chees, rwmh, smc, ...)",
        )
    chains = tree["posterior"].sizes["chain"]
    if chains < 2:
        raise ConfigError(
            "file",
            f"{file} has {chains} chain (method {method}); rank plots and R-hat need at least 2",
        )
    frames = tree["posterior"].sizes["frame"]
    if frame is None:
        return worst_frame(tree)
    if not 0 <= frame < frames:
        raise ConfigError("frame", f"must be in [0, {frames - 1}] for {file} (got {frame})")
    return frame


def _arviz_plots():
    """arviz-plots, importable beside Matplotlib ≥ 3.11: arviz-plots 0.8 registers its styles
    through ``matplotlib.style.core``, which 3.11 deprecates and no longer imports on its own."""
    import matplotlib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import matplotlib.style.core
    matplotlib.use("Agg")
    import arviz_plots

    return arviz_plots


def write_diagnostics(
    tree: xr.DataTree, out: str | Path, frame: int | None = None, file: str | Path = "posterior"
) -> dict[str, Any]:
    """Write ``rank.png``, ``trace.png``, ``ess_evolution.png``, ``pair.png`` and
    ``diagnose.json`` of one frame of ``tree`` into folder ``out`` (each file atomically).

    Parameters
    ----------
    tree : DataTree
        A saved posterior with draws (:func:`bayes_smlm.io.posteriors.load_posterior`).
    out : path
        Output folder (created).
    frame : int, optional
        Frame index (default: :func:`worst_frame`).
    file : path
        The result's name, for errors and the summary.

    Returns
    -------
    dict
        The summary written to ``diagnose.json``: frame, pair, worst emitter, and R-hat, bulk
        and tail ESS of each plotted coordinate.
    """
    import matplotlib.pyplot as plt

    from bayes_smlm.io.atomic import atomic_path

    frame = check_diagnosable(tree, frame, Path(file))
    pair, worst = chosen_emitters(tree, frame)
    emitters = sorted({*pair, worst})
    azp = _arviz_plots()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots = {
        "rank": (azp.plot_rank, emitters),
        "trace": (azp.plot_trace, emitters),
        "ess_evolution": (azp.plot_ess_evolution, emitters),
        "pair": (azp.plot_pair, sorted(set(pair))),
    }
    with plt.style.context(STYLE):
        for name, (plot, which) in plots.items():
            collection = plot(frame_tree(tree, frame, which), backend="matplotlib")
            with atomic_path(out / f"{name}.png") as tmp:
                collection.savefig(tmp, format="png", dpi=80)
            plt.close("all")
    diagnostics = _group(tree, "diagnostics").isel(frame=frame)
    coordinates = {
        f"{axis}{e}": {
            key: float(diagnostics[key].sel(emitter=e, axis=axis))
            for key in ("rhat", "ess_bulk", "ess_tail")
        }
        for e in emitters
        for axis in ("x", "y")
    }
    summary = {
        "file": Path(file).name,
        "method": tree.attrs.get("method"),
        "frame": frame,
        "closest_pair": list(pair),
        "worst_rhat_emitter": worst,
        "divergences": int(diagnostics["divergences"]) if "divergences" in diagnostics else None,
        "flagged": bool(diagnostics["flagged"]),
        "coordinates": coordinates,
        "plots": [f"{name}.png" for name in PLOTS],
    }
    with atomic_path(out / "diagnose.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return summary


def diagnose_section(out: Path, candidates: list[str]) -> str:
    """A study report's Markdown section: :func:`write_diagnostics` of the worst frame of the
    first of ``candidates`` (method names: the reference, then the others) whose posterior saved
    in ``out`` holds Markov chains (draws with sampler statistics: i.i.d. draws, as ``grid``'s
    or ``laplace``'s, have nothing to mix), its figures in ``out/diagnose-METHOD/``; "" if
    none has."""
    from bayes_smlm.io.posteriors import load_posterior
    from bayes_smlm.io.study_files import posterior_path

    for name in dict.fromkeys(candidates):
        path = posterior_path(out, name)
        if not path.is_file():
            continue
        tree = load_posterior(path)
        if (
            "diagnostics" not in tree.children
            or "sample_stats" not in tree.children
            or tree["posterior"].sizes.get("chain", 0) < 2
        ):
            continue
        folder = f"diagnose-{name}"
        summary = write_diagnostics(tree, out / folder, file=path)
        rhat = max(c["rhat"] for c in summary["coordinates"].values())
        ess = min(c["ess_bulk"] for c in summary["coordinates"].values())
        images = " ".join(f"![{plot}]({folder}/{plot}.png)" for plot in PLOTS)
        first, second = summary["closest_pair"]
        chosen = (
            f"its only emitter ({first})"
            if first == second
            else f"emitters {first} and {second} (the closest pair by posterior mean) and "
            f"{summary['worst_rhat_emitter']} (the worst R-hat)"
        )
        return (
            f"### ArviZ diagnostics of `{name}`'s worst frame\n\n"
            f"`bayes-smlm diagnose posteriors/{name}.nc --out {folder}`: frame "
            f"{summary['frame']} (the largest R-hat), {chosen}; over the x and y plotted "
            f"R-hat ≤ {rhat:.3f}, bulk ESS ≥ {ess:.0f}, "
            f"{summary['divergences'] or 0} divergences. Rank, trace, ESS-evolution and pair "
            f"plots (arviz-plots):\n\n{images}\n\n"
        )
    return ""
