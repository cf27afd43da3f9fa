"""PosteriorResult <-> ArviZ DataTree (NetCDF), with diagnostics attached.

Groups: ``posterior`` (``theta`` with dims chain, draw, frame, emitter, axis; axis coords x, y;
LR pixels), ``sample_stats`` (dims chain, draw, frame), ``observed_data`` (``adu``, frame × row ×
col, ADU), ``constant_data`` (``theta_true`` when known; the task config and method settings as
JSON attributes), ``kde`` (``mean``, ``var`` with dims frame, y_hr, x_hr) and ``diagnostics``
(R-hat, bulk/tail ESS, MCSE per frame × emitter × axis and a per-frame ``flagged`` mask).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import cast

import numpy as np
import xarray as xr

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.config import task_from_json
from bayes_smlm.io.atomic import check_suffix, write_with_rescue
from bayes_smlm.methods.diagnostics import diagnostics_dataset
from bayes_smlm.methods.evidence import Evidence
from bayes_smlm.methods.result import PosteriorResult

SINGLE_CHAIN_NOTE = "not computed: R-hat needs at least 2 chains (this run has 1)"


def to_datatree(result: PosteriorResult, *, with_diagnostics: bool = True) -> xr.DataTree:
    """Build the DataTree of a result (the θ groups only for methods with θ draws)."""
    import arviz_base as azb

    f = result.n_frames
    groups: dict[str, dict[str, np.ndarray]] = {
        "observed_data": {"adu": result.adu},
    }
    dims = {
        "theta": ["frame", "emitter", "axis"],
        "adu": ["frame", "row", "col"],
        "theta_true": ["frame", "emitter", "axis"],
    }
    if result.theta is not None:
        groups["posterior"] = {"theta": result.theta}
        if result.sample_stats:
            groups["sample_stats"] = dict(result.sample_stats)
            for name in result.sample_stats:
                dims[name] = ["frame"]
    if result.theta_true is not None:
        groups["constant_data"] = {"theta_true": np.asarray(result.theta_true, np.float32)}
    attrs = {
        "method": result.method,
        "task": result.task.to_json(),
        "settings": json.dumps(result.settings, sort_keys=True, default=float),
        "seconds": float(result.seconds),
        "units": "theta in LR pixels (x, y); adu in ADU",
    }
    tree = azb.from_dict(groups, dims=dims, coords={"axis": ["x", "y"], "frame": np.arange(f)})
    tree.attrs.update(attrs)
    if "constant_data" not in tree.children:
        tree["constant_data"] = xr.DataTree(xr.Dataset(attrs={}))
    tree["constant_data"].attrs.update(
        {"task": result.task.to_json(), "method": result.method, "settings": attrs["settings"]}
    )
    kde = xr.Dataset(
        {
            "mean": (("frame", "y_hr", "x_hr"), result.kde_mean),
            "var": (("frame", "y_hr", "x_hr"), result.kde_var),
        },
        coords={"frame": np.arange(f)},
        attrs={"description": "posterior mean and marginal variance of the KDE (eq. 5)"},
    )
    tree["kde"] = xr.DataTree(kde)
    extras = {k: v for k, v in result.extra.items() if np.ndim(v) >= 1 and np.shape(v)[0] == f}
    if extras:
        tree["extra"] = xr.DataTree(
            xr.Dataset(
                {
                    k: (
                        ("frame",) + tuple(f"{k}_{i}" for i in range(np.ndim(v) - 1)),
                        np.asarray(v),
                    )
                    for k, v in extras.items()
                }
            )
        )
    if result.evidence is not None:
        tree["evidence"] = xr.DataTree(evidence_dataset(result.evidence))
    if with_diagnostics and result.diagnostics is not None:
        tree["diagnostics"] = xr.DataTree(diagnostics_dataset(result.diagnostics))
    elif result.theta is not None:
        tree.attrs["diagnostics"] = SINGLE_CHAIN_NOTE
    return tree


def evidence_dataset(evidence: Evidence) -> xr.Dataset:
    """The ``evidence`` group: log p(x | n), its standard error and P(n | x) on (frame,
    n_emitters), and the prior over the listed counts."""
    dims = ("frame", "n_emitters")
    return xr.Dataset(
        {
            "log_evidence": (
                dims,
                evidence.log_evidence,
                {
                    "units": "nats",
                    "description": "log p(x | n): log density of the ADU frame given n emitters",
                },
            ),
            "log_evidence_se": (
                dims,
                evidence.log_evidence_se,
                {
                    "units": "nats",
                    "description": "Monte Carlo standard error (0: exact; NaN: none)",
                },
            ),
            "p_n": (dims, evidence.p_n, {"description": "posterior probability of the count"}),
            "log_prior_n": (
                ("n_emitters",),
                evidence.log_prior,
                {"description": "log prior probability of each listed count"},
            ),
        },
        coords={"frame": np.arange(evidence.log_evidence.shape[0]), "n_emitters": evidence.counts},
    )


def save_posterior(result: PosteriorResult, path: str | Path) -> Path:
    """Atomically write the result's DataTree to NetCDF (``.nc``)."""
    return write_datatree(to_datatree(result), path)


def write_datatree(tree: xr.DataTree, path: str | Path) -> Path:
    """Atomically write a DataTree built by :func:`to_datatree` to NetCDF (``.nc``)."""
    path = check_suffix(path, ".nc")
    # HDF5 writes into memory, Python to the disk: HDF5 that runs out of space (or into a file
    # size limit) half-way can kill the process with a signal when it cleans up, even after the
    # error was reported; a Python write fails with an OSError and nothing else
    buffer = io.BytesIO()
    tree.to_netcdf(buffer, engine="h5netcdf")
    data = buffer.getbuffer()
    return write_with_rescue(path, lambda tmp: tmp.write_bytes(data), nbytes=len(data))


def load_posterior(path: str | Path) -> xr.DataTree:
    """Read a saved posterior DataTree (fully loaded into memory): a NetCDF file, or a finished
    zarr store of a chunked run (:mod:`bayes_smlm.io.posterior_store`)."""
    path = Path(path)
    is_store = path.suffix == ".zarr" and path.is_dir()
    if not (path.is_file() or is_store):
        raise ConfigError("file", f"file not found: {path}")
    try:
        if is_store:
            from bayes_smlm.io.posterior_store import open_store_datatree

            tree = open_store_datatree(path)
        else:
            tree = xr.open_datatree(path, engine="h5netcdf")
        tree.load()
        tree.close()
    except ConfigError:
        raise
    except (OSError, ValueError, KeyError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        kind = "zarr store" if is_store else "NetCDF file"
        raise ConfigError(
            "file",
            f"{path} is not a readable posterior {kind} ({reason}); "
            "it may be truncated or of another format",
        ) from None
    missing = {"observed_data", "kde", "constant_data"} - set(tree.children)
    if missing or "task" not in tree["constant_data"].attrs:
        raise ConfigError(
            "file",
            f"{path} is not a posterior written by bayes-smlm (no "
            f"{', '.join(sorted(missing)) or 'task'})",
        )
    return tree


def _node(tree: xr.DataTree, group: str) -> xr.Dataset:
    """Group ``group`` of ``tree`` as a Dataset of its own variables."""
    return cast(xr.DataTree, tree[group]).to_dataset(inherit=False)


def result_from_datatree(tree: xr.DataTree) -> PosteriorResult:
    """The :class:`PosteriorResult` a DataTree of :func:`to_datatree` was built from (arrays as
    saved; scalar ``extra`` values are not stored, per-frame ones are)."""
    constant = tree["constant_data"]
    groups = tree.children

    def variables(group: str) -> dict[str, np.ndarray]:
        return (
            {str(k): v.values for k, v in _node(tree, group).data_vars.items()}
            if group in groups
            else {}
        )

    def values(group: str, name: str) -> np.ndarray:
        return np.asarray(_node(tree, group)[name].values)

    return PosteriorResult(
        method=tree.attrs["method"],
        task=task_of(tree),
        adu=values("observed_data", "adu"),
        kde_mean=values("kde", "mean"),
        kde_var=values("kde", "var"),
        theta=values("posterior", "theta") if "posterior" in groups else None,
        sample_stats=variables("sample_stats"),
        settings=json.loads(tree.attrs["settings"]),
        seconds=float(tree.attrs["seconds"]),
        theta_true=(
            values("constant_data", "theta_true") if "theta_true" in constant.data_vars else None
        ),
        extra=variables("extra"),
        evidence=(
            Evidence(
                values("evidence", "n_emitters"),
                values("evidence", "log_evidence"),
                values("evidence", "log_evidence_se"),
                values("evidence", "log_prior_n"),
            )
            if "evidence" in groups
            else None
        ),
    )


def stored_flags(tree: xr.DataTree) -> np.ndarray | None:
    """(F,) frames a saved posterior's method flagged (as :attr:`PosteriorResult.flagged`: the
    method's own verdict, else the MCMC diagnostics'); None where nothing was checked (θ draws
    of a single chain)."""
    for group in ("extra", "diagnostics"):
        if group in tree.children and "flagged" in tree[group].data_vars:
            return np.asarray(tree[group]["flagged"].values, bool)
    if "posterior" in tree.children:
        return None
    return np.zeros(tree["observed_data"].sizes["frame"], bool)


def task_of(tree: xr.DataTree):
    """The task stored with a saved posterior."""
    return task_from_json(tree["constant_data"].attrs["task"])
