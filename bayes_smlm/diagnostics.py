"""Per-frame MCMC diagnostics from arviz-stats: R-hat (rank), bulk/tail ESS, MCSE of the mean.

Frames whose worst coordinate has R-hat > 1.01 or bulk ESS < 400 are flagged, not hidden.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

RHAT_MAX = 1.01
ESS_MIN = 400.0


def frame_diagnostics(tree: xr.DataTree, *, rhat_max: float = RHAT_MAX,
                      ess_min: float = ESS_MIN) -> xr.Dataset:
    """R-hat, ESS and MCSE of every (frame, emitter, axis), plus a per-frame ``flagged`` mask.

    Parameters
    ----------
    tree : DataTree
        With a ``posterior`` group holding ``theta`` (chain, draw, frame, emitter, axis); needs at
        least two chains.
    """
    import arviz_stats as azs

    rhat = azs.rhat(tree, var_names=["theta"])["theta"]
    ess_bulk = azs.ess(tree, var_names=["theta"], method="bulk")["theta"]
    ess_tail = azs.ess(tree, var_names=["theta"], method="tail")["theta"]
    mcse = azs.mcse(tree, var_names=["theta"], method="mean")["theta"]
    worst_rhat = rhat.max(["emitter", "axis"])
    worst_ess = ess_bulk.min(["emitter", "axis"])
    flagged = (worst_rhat > rhat_max) | (worst_ess < ess_min) | ~np.isfinite(worst_rhat)
    out = xr.Dataset({"rhat": _plain(rhat), "ess_bulk": _plain(ess_bulk),
                      "ess_tail": _plain(ess_tail), "mcse_mean": _plain(mcse),
                      "flagged": _plain(flagged)})
    if "sample_stats" in tree.children and "diverging" in tree["sample_stats"].data_vars:
        out["divergences"] = _plain(tree["sample_stats"]["diverging"].sum(["chain", "draw"]))
    out.attrs.update({"rhat_max": rhat_max, "ess_min": ess_min,
                      "pass_rate": float(1.0 - flagged.mean())})
    return out


def _plain(da) -> xr.DataArray:
    """A DataArray detached from the DataTree (so it can go into a new Dataset)."""
    return xr.DataArray(np.asarray(da), dims=da.dims,
                        coords={k: np.asarray(v) for k, v in da.coords.items()})
