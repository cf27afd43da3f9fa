"""The localization table as CSV, in ThunderSTORM's conventions.

Columns ThunderSTORM (and tools reading its files: SMAP, Picasso's importer, napari-SMLM) know:
``id``, ``frame``, ``x [nm]``, ``y [nm]``, ``sigma [nm]``, ``intensity [photon]``,
``offset [photon]``, and ``uncertainty_x [nm]``, ``uncertainty_y [nm]``. Frames count from 1;
x and y are measured from the top-left corner of the image (the centre of the top-left pixel is
at (½, ½) pixel) — the package's pixel-centred LR coordinates plus ½, times the pixel size.
Uncertainties are posterior SDs (the Laplace approximation's; with unknown intensity and
background). Then this package's own columns: the x–y correlation, the SDs of intensity and
background, the candidate's signal-to-noise, its probability of existing (``p_exists``: P(N ≥ k | x)
for the window's k-th emitter, from the evidence of each count), the window and how many
emitters it was fitted with, the window's χ² per degree of freedom and ``misfit`` (its χ² above
the 0.999 quantile of χ² under the fitted model, or three or more emitters each within 2.5 PSF σ
of another: spots the model's PSF does not explain), the
optimiser's steps and whether it converged, and ``flagged`` (not converged, information not
positive definite, intensity at the prior's bound, or misfit). With ``--method nuts`` the positions,
intensities and uncertainties are NUTS posterior means and SDs, and three columns follow:
``r_hat`` (largest rank-normalised R-hat of the emitter's x, y, intensity and the window's
background), ``ess_bulk`` (their smallest bulk ESS) and ``divergences`` (of the window's chains);
``flagged`` then also marks R-hat > 1.01, bulk ESS < 400 or any divergence.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.config import Task
from bayes_smlm.io.atomic import write_json, write_text

# CSV column -> (pipeline column, scale: "nm" for LR px → nm, "nm_position" adds ½ px first)
# CSV column -> (the rows' column it is made of, or None: a constant; how it is scaled)
CSV_COLUMNS: dict[str, tuple[str | None, str | None]] = {
    "frame": ("frame", "frame"),
    "x [nm]": ("x", "nm_position"),
    "y [nm]": ("y", "nm_position"),
    "sigma [nm]": (None, "sigma"),
    "intensity [photon]": ("i0", None),
    "offset [photon]": ("background", None),
    "uncertainty_x [nm]": ("sd_x", "nm"),
    "uncertainty_y [nm]": ("sd_y", "nm"),
    "uncertainty_xy_correlation": ("corr_xy", None),
    "uncertainty_intensity [photon]": ("sd_i0", None),
    "uncertainty_offset [photon]": ("sd_background", None),
    "snr": ("snr", None),
    "p_exists": ("p_exists", None),
    "window": ("window", None),
    "emitters_in_window": ("emitters_in_window", None),
    "chi2_per_dof": ("chi2_dof", None),
    "misfit": ("misfit", None),
    "iterations": ("iterations", None),
    "converged": ("converged", None),
    "flagged": ("flagged", None),
}
MCMC_CSV_COLUMNS: dict[str, tuple[str | None, str | None]] = {
    "r_hat": ("r_hat", None),
    "ess_bulk": ("ess_bulk", None),
    "divergences": ("divergences", None),
}  # written when NUTS ran


def csv_table(rows: dict[str, np.ndarray], task: Task) -> dict[str, np.ndarray]:
    """The CSV's columns (name → values) of ``localize`` rows of ``task``'s pixel size and PSF."""
    nm = task.optics.pixel_size_nm
    out: dict[str, np.ndarray] = {"id": np.arange(1, len(rows["x"]) + 1)}
    columns = dict(CSV_COLUMNS)
    if "r_hat" in rows and np.isfinite(rows["r_hat"]).any():
        columns.update(MCMC_CSV_COLUMNS)
    for name, (source, scale) in columns.items():
        if source is None:  # the PSF's σ, the same on every row
            out[name] = np.full(len(rows["x"]), task.optics.sigma_psf * nm)
        elif scale == "frame":
            out[name] = rows[source].astype(int) + 1
        elif scale == "nm_position":
            out[name] = (rows[source] + 0.5) * nm
        elif scale == "nm":
            out[name] = rows[source] * nm
        else:
            out[name] = rows[source]
    return out


def write_localizations(path: str | Path, rows: dict[str, np.ndarray], task: Task) -> Path:
    """Write ``localize`` rows as CSV (quoted header, as ThunderSTORM writes it), atomically, and
    beside it the movie's field of view (:func:`field_of_view_path`), which ``render`` frames."""
    table = csv_table(rows, task)
    columns = [_text(values) for values in table.values()]
    lines = [",".join(f'"{name}"' for name in table)] + [",".join(row) for row in zip(*columns)]
    nm = task.optics.pixel_size_nm
    write_json(
        field_of_view_path(path),
        {
            "width_nm": task.width * nm,
            "height_nm": task.height * nm,
            "frame_px": [task.height, task.width],
            "pixel_size_nm": nm,
        },
    )
    return write_text(path, "\n".join(lines) + "\n")


def field_of_view_path(path: str | Path) -> Path:
    """``locs.fov.json`` beside ``locs.csv``: the movie's field of view, nm."""
    path = Path(path)
    return path.with_name(path.stem + ".fov.json")


def read_field_of_view(path: str | Path) -> tuple[float, float] | None:
    """(width, height) nm of the movie a localization CSV came from, or None where the CSV has no
    readable field-of-view file beside it (a table from another program)."""
    import json

    try:
        data = json.loads(field_of_view_path(path).read_text())
        width, height = float(data["width_nm"]), float(data["height_nm"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (width, height) if width > 0 and height > 0 else None


def _text(values: np.ndarray) -> list[str]:
    values = np.asarray(values)
    if values.dtype == bool:
        return ["1" if v else "0" for v in values]
    if values.dtype.kind in "iu":
        return [str(int(v)) for v in values]
    return [f"{v:.6g}" for v in values]


def read_localizations(path: str | Path, argument: str = "locs") -> dict[str, np.ndarray]:
    """Columns (float arrays) of a localization CSV with at least ``frame``, ``x [nm]``,
    ``y [nm]``; a one-line ConfigError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(argument, f"file not found: {path}")
    try:
        with open(path, newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader)
            rows = [row for row in reader if row]
    except (StopIteration, UnicodeDecodeError, csv.Error) as err:
        raise ConfigError(argument, f"{path.name} is not a localization CSV ({err})") from None
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise ConfigError(
            argument,
            f"{path.name}: the column(s) {', '.join(map(repr, repeated))} "
            "appear more than once; which one is meant is unknown",
        )
    ragged = next((i for i, row in enumerate(rows) if len(row) != len(header)), None)
    if ragged is not None:
        raise ConfigError(
            argument,
            f"{path.name}: row {ragged + 2} has {len(rows[ragged])} "
            f"values for {len(header)} columns",
        )
    try:
        data = np.array([[float(v) for v in row] for row in rows], float)
    except ValueError as err:
        raise ConfigError(argument, f"{path.name} is not a localization CSV ({err})") from None
    data = data.reshape(-1, len(header))
    table = {name: data[:, i] for i, name in enumerate(header)}
    missing = [c for c in ("frame", "x [nm]", "y [nm]") if c not in table]
    if missing:
        raise ConfigError(argument, f"{path.name} lacks the column(s) {', '.join(missing)}")
    return table
