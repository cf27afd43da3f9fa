"""The super-resolution image of a localization table and its per-pixel SD.

Each localization is drawn as a Gaussian kernel k(p; θ) = exp(−|p − θ|² / 2s²) (peak 1, s the
kernel width) at its position θ, so the image is Σ_loc k(p; θ_loc) — the movie's KDE. The
positions are uncertain: θ ~ N(θ̂, Σ) with Σ from the table's uncertainties and x–y
correlation. Then each kernel's posterior mean and variance at every pixel have closed forms,

    E k  = s² / √det(s² I + Σ) · exp(−½ dᵀ (s² I + Σ)⁻¹ d),
    E k² = (s²/2) / √det(s²/2 I + Σ) · exp(−½ dᵀ (s²/2 I + Σ)⁻¹ d),    d = p − θ̂,

and, frames being independent (and emitters fitted in different windows too), the image's mean
is the sum of the E k and its variance the sum of the E k² − (E k)². The variance counts the
localization uncertainty only: it says nothing of emitters missed or found twice, and it leaves
out the covariance between two emitters fitted in one window (their kernels barely overlap
unless they are within a few s of each other).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bayes_smlm.errors import ConfigError

MAX_HALF_PATCH = 256  # render pixels: a kernel wider than this is cut there
MAX_PIXELS = 10**8  # an image's size: 2.4 GB of sums and images; beyond it, a unit mistake
PATCH_ELEMENTS = 2 * 10**7  # kernel-patch values held at once (≈ 1 GB of temporaries)


@dataclass
class Rendering:
    """``mean`` and ``sd`` (H, W) images (sum of kernels, peak 1 per localization); pixel (i, j)
    is centred at ((j + ½)·pixel_nm, (i + ½)·pixel_nm) nm from the image's top-left corner."""

    mean: np.ndarray
    sd: np.ndarray
    pixel_nm: float
    sigma_nm: float
    localizations: int
    non_finite: int = 0
    outside: int = 0


def _gaussian_moment(dx: np.ndarray, dy: np.ndarray, cov: np.ndarray, width2: float) -> np.ndarray:
    """width2 / √det(width2·I + Σ) · exp(−½ dᵀ (width2·I + Σ)⁻¹ d) for (B, ...) offsets."""
    a = cov[:, 0, 0] + width2
    c = cov[:, 1, 1] + width2
    b = cov[:, 0, 1]
    det = a * c - b * b
    shape = (-1,) + (1,) * (dx.ndim - 1)
    quad = (
        c.reshape(shape) * dx**2 - 2 * b.reshape(shape) * dx * dy + a.reshape(shape) * dy**2
    ) / det.reshape(shape)
    return (width2 / np.sqrt(det)).reshape(shape) * np.exp(-0.5 * quad)


def render(
    x_nm: np.ndarray,
    y_nm: np.ndarray,
    sd_x_nm: np.ndarray,
    sd_y_nm: np.ndarray,
    corr_xy: np.ndarray | None = None,
    *,
    pixel_nm: float = 10.0,
    sigma_nm: float = 20.0,
    shape: tuple[int, int] | None = None,
    chunk: int = 4096,
) -> Rendering:
    """Mean image and per-pixel SD of the KDE of localizations with Gaussian uncertainty.

    Parameters
    ----------
    x_nm, y_nm : (M,) arrays
        Positions, nm from the image's top-left corner.
    sd_x_nm, sd_y_nm : (M,) arrays
        Posterior SDs, nm (≥ 0).
    corr_xy : (M,) array, optional
        x–y posterior correlations (default 0).
    pixel_nm : float
        Render pixel size, nm.
    sigma_nm : float
        Kernel width s, nm.
    shape : (H, W), optional
        Image size in render pixels (default: enough to hold every localization).
    """
    for name, value in (("pixel_nm", pixel_nm), ("sigma_nm", sigma_nm)):
        if not (np.isfinite(value) and value > 0):
            raise ConfigError(name, f"must be > 0 (got {value})")
    x, y, sx, sy = (np.asarray(a, np.float64) for a in (x_nm, y_nm, sd_x_nm, sd_y_nm))
    rho = (
        np.zeros_like(x) if corr_xy is None else np.clip(np.asarray(corr_xy, float), -0.999, 0.999)
    )
    good = (
        np.isfinite(x) & np.isfinite(y) & np.isfinite(sx) & np.isfinite(sy) & (sx >= 0) & (sy >= 0)
    )
    non_finite = int((~good).sum())
    x, y, sx, sy, rho = (a[good] for a in (x, y, sx, sy, rho))
    if shape is None:
        shape = (
            int(np.ceil(max(y.max(initial=0), 0) / pixel_nm)) + 1,
            int(np.ceil(max(x.max(initial=0), 0) / pixel_nm)) + 1,
        )
    height, width = shape
    if height * width > MAX_PIXELS:
        raise ConfigError(
            "pixel_nm",
            f"the image would be {width} x {height} pixels of "
            f"{pixel_nm:g} nm (at most {MAX_PIXELS:.0e} pixels): give a "
            "larger pixel, a smaller size, or drop localizations far "
            f"outside the field (the farthest is at {x.max(initial=0):.4g}, "
            f"{y.max(initial=0):.4g} nm)",
        )
    inside_image = (x >= 0) & (x < width * pixel_nm) & (y >= 0) & (y < height * pixel_nm)
    outside = int((~inside_image).sum())
    x, y, sx, sy, rho = (a[inside_image] for a in (x, y, sx, sy, rho))
    total_mean = np.zeros(height * width)
    total_var = np.zeros(height * width)
    s2 = sigma_nm**2
    widest = 5.0 * np.sqrt(s2 + max(sx.max(initial=0), sy.max(initial=0)) ** 2)
    side = 2 * min(int(np.ceil(widest / pixel_nm)), MAX_HALF_PATCH) + 1
    chunk = max(1, min(chunk, PATCH_ELEMENTS // side**2))  # patches of a chunk: bounded memory
    for start in range(0, len(x), chunk):
        part = slice(start, start + chunk)
        cov = np.zeros((len(x[part]), 2, 2))
        cov[:, 0, 0], cov[:, 1, 1] = sx[part] ** 2, sy[part] ** 2
        cov[:, 0, 1] = cov[:, 1, 0] = rho[part] * sx[part] * sy[part]
        # cut at 5 SDs of the widest kernel: what is left out is below e^-12.5 ≈ 4e-6
        reach = 5.0 * np.sqrt(s2 + np.maximum(sx[part], sy[part]).max() ** 2)
        half = min(int(np.ceil(reach / pixel_nm)), MAX_HALF_PATCH)
        offsets = np.arange(-half, half + 1)
        col = np.floor(x[part] / pixel_nm).astype(int)[:, None, None] + offsets[None, None, :]
        row = np.floor(y[part] / pixel_nm).astype(int)[:, None, None] + offsets[None, :, None]
        dx = (col + 0.5) * pixel_nm - x[part][:, None, None]
        dy = (row + 0.5) * pixel_nm - y[part][:, None, None]
        mean = _gaussian_moment(dx, dy, cov, s2)
        second = _gaussian_moment(dx, dy, cov, s2 / 2.0)
        inside = np.broadcast_to(
            (row >= 0) & (row < height) & (col >= 0) & (col < width), mean.shape
        )
        flat = np.broadcast_to(row * width + col, mean.shape)[inside]
        total_mean += np.bincount(flat, mean[inside], minlength=height * width)
        total_var += np.bincount(flat, (second - mean**2)[inside], minlength=height * width)
    return Rendering(
        mean=total_mean.reshape(shape).astype(np.float32),
        sd=np.sqrt(np.maximum(total_var, 0.0)).reshape(shape).astype(np.float32),
        pixel_nm=float(pixel_nm),
        sigma_nm=float(sigma_nm),
        localizations=len(x),
        non_finite=non_finite,
        outside=outside,
    )


def write_rendering(folder: str | Path, rendering: Rendering, tiff: bool = True) -> dict[str, Path]:
    """``image.tif`` / ``sd.tif`` (float32, when ``tiff``) and ``image.png`` / ``sd.png`` in
    ``folder``, each written atomically; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import tifffile

    from bayes_smlm.io.atomic import atomic_path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, image, cmap in (("image", rendering.mean, "magma"), ("sd", rendering.sd, "viridis")):
        if tiff:
            paths[f"{name}.tif"] = folder / f"{name}.tif"
            with atomic_path(paths[f"{name}.tif"]) as tmp:
                tifffile.imwrite(
                    tmp,
                    image,
                    metadata={"pixel_nm": rendering.pixel_nm, "sigma_nm": rendering.sigma_nm},
                )
        paths[f"{name}.png"] = folder / f"{name}.png"
        top = float(np.percentile(image, 99.8)) or float(image.max()) or 1.0
        with atomic_path(paths[f"{name}.png"]) as tmp:
            plt.imsave(tmp, np.clip(image / top, 0, 1), cmap=cmap, vmin=0, vmax=1)
    return paths
