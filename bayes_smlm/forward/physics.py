"""The one forward model: pixel-integrated Gaussian PSF, expected photons, camera, KDE.

Pure ``jax.numpy`` functions of arrays (no config objects), shared by the simulator, the
likelihood and the Fisher information. Conventions (docs/conventions.md §2): array index
``[row, col] = [y, x]``; pixel (r, c) covers ``[c-½, c+½] × [r-½, r+½]``; θ = (x, y) in LR pixels.
"""

from __future__ import annotations

from typing import NamedTuple, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erfc

from bayes_smlm.forward.config import Task

# what the pure functions accept where jnp broadcasts it: a JAX or NumPy array, or a number
Numeric: TypeAlias = "jax.Array | np.ndarray | float"


class CameraArrays(NamedTuple):
    """Camera constants as arrays broadcastable to the (H, W) frame.

    offset : ADU; gain : ADU/photon; readout_var : ADU².
    """

    offset: jax.Array
    gain: jax.Array
    readout_var: jax.Array


class SceneArrays(NamedTuple):
    """Fixed scene constants: per-emitter photons (scalar broadcast) and background photons/pixel."""

    i0: jax.Array
    background: jax.Array


def camera_arrays(task: Task) -> CameraArrays:
    """The task's camera as float32 arrays (scalars stay 0-d)."""
    c = task.camera
    return CameraArrays(
        *(jnp.asarray(v, dtype=jnp.float32) for v in (c.offset, c.gain, c.readout_var))
    )


def scene_arrays(task: Task) -> SceneArrays:
    """The task's fixed i0 and background as float32 arrays."""
    return SceneArrays(
        jnp.asarray(task.prior.i0, jnp.float32), jnp.asarray(task.prior.background, jnp.float32)
    )


def pixel_integrated_gaussian(centres: Numeric, mean: Numeric, sigma: float) -> jax.Array:
    """ΔE of eq. 2: mass of a 1-D Gaussian N(mean, sigma²) inside unit pixels at ``centres``.

    Written with ``erfc`` of the absolute offset (ΔE is even in ``centres - mean``) so that the far
    tails keep their relative precision instead of cancelling as ``erf(a) - erf(b) ≈ 1 - 1``.

    Parameters
    ----------
    centres, mean : array
        Pixel centres and Gaussian mean, in pixels (broadcast together).
    sigma : float
        Standard deviation, pixels; > 0.
    """
    d = jnp.abs(centres - mean)
    scale = jnp.sqrt(2.0) * sigma
    return 0.5 * (erfc((d - 0.5) / scale) - erfc((d + 0.5) / scale))


def grid_pixel_masses(n: int, mean: jax.Array, sigma: float) -> jax.Array:
    """ΔE of eq. 2 on the whole grid of pixels 0 … n−1: (..., n) from ``mean`` (..., 1).

    The same masses as ``pixel_integrated_gaussian(arange(n), mean, sigma)`` to float rounding,
    from n + 1 shared pixel edges instead of two per pixel — half the erfc evaluations, which
    dominate pushing 10⁶–10⁷ draws through the KDE. Like it, each pixel's mass is a difference of
    ``erfc`` of distances from the mean, so the far tails keep their relative precision.
    """
    edges = jnp.arange(n + 1, dtype=jnp.result_type(mean, jnp.float32)) - 0.5
    tail = erfc(jnp.abs(edges - mean) / (jnp.sqrt(2.0) * sigma))  # (..., n + 1)
    lower, upper = tail[..., :-1], tail[..., 1:]
    right_of_mean = edges[:-1] >= mean
    left_of_mean = edges[1:] <= mean
    return 0.5 * jnp.where(
        right_of_mean, lower - upper, jnp.where(left_of_mean, upper - lower, 2.0 - lower - upper)
    )


def pixel_integrated_gaussian_slopes(
    centres: jax.Array, mean: jax.Array, sigma: float
) -> tuple[jax.Array, jax.Array]:
    """First and second derivatives of ΔE (eq. 2) with respect to ``mean``, analytic.

    With a = (c − ½ − μ)/σ and b = (c + ½ − μ)/σ, ΔE = Φ(b) − Φ(a), so
    ∂ΔE/∂μ = (φ(a) − φ(b))/σ and ∂²ΔE/∂μ² = (a φ(a) − b φ(b))/σ² (φ, Φ: standard normal pdf, cdf).
    """
    a = (centres - 0.5 - mean) / sigma
    b = (centres + 0.5 - mean) / sigma
    pdf_a, pdf_b = jnp.exp(-0.5 * a * a), jnp.exp(-0.5 * b * b)
    norm = 1.0 / (jnp.sqrt(2.0 * jnp.pi) * sigma)
    return norm * (pdf_a - pdf_b), norm / sigma * (a * pdf_a - b * pdf_b)


def axis_profiles(
    theta: jax.Array, sigma: float, shape: tuple[int, int]
) -> tuple[jax.Array, jax.Array]:
    """Separable factors of each emitter's pixel-integrated Gaussian on an (H, W) grid.

    Parameters
    ----------
    theta : (..., N, 2) array
        Positions (x, y), pixels of the grid.
    sigma : float
        Standard deviation, pixels of the grid.
    shape : (H, W)

    Returns
    -------
    ey : (..., N, H) array and ex : (..., N, W) array, with image_n = ey_n ⊗ ex_n.
    """
    height, width = shape
    ey = pixel_integrated_gaussian(jnp.arange(height), theta[..., 1:2], sigma)
    ex = pixel_integrated_gaussian(jnp.arange(width), theta[..., 0:1], sigma)
    return ey, ex


class AxisProfiles(NamedTuple):
    """Per-emitter separable PSF factors and their derivatives in the emitter's coordinate:
    value, slope, curvature along y (..., N, H) and along x (..., N, W)."""

    ey: jax.Array
    dey: jax.Array
    d2ey: jax.Array
    ex: jax.Array
    dex: jax.Array
    d2ex: jax.Array


def axis_profiles_with_slopes(
    theta: jax.Array, sigma: float, shape: tuple[int, int]
) -> AxisProfiles:
    """:func:`axis_profiles` plus ∂/∂y, ∂²/∂y² of ey and ∂/∂x, ∂²/∂x² of ex (analytic), for
    Jacobians and Hessians of the expected image without automatic differentiation."""
    height, width = shape
    ey, ex = axis_profiles(theta, sigma, shape)
    dey, d2ey = pixel_integrated_gaussian_slopes(jnp.arange(height), theta[..., 1:2], sigma)
    dex, d2ex = pixel_integrated_gaussian_slopes(jnp.arange(width), theta[..., 0:1], sigma)
    return AxisProfiles(ey, dey, d2ey, ex, dex, d2ex)


def emitter_image(theta: jax.Array, i0: Numeric, sigma: float, shape: tuple[int, int]) -> jax.Array:
    """Expected photons from emitters alone, ``Σ_n i0_n ΔE(c; x_n, σ) ΔE(r; y_n, σ)``.

    Parameters
    ----------
    theta : (N, 2) array
        Emitter positions (x, y), pixels of the output grid.
    i0 : scalar or (N,) array
        Photons per emitter.
    sigma : float
        PSF (or kernel) standard deviation, pixels of the output grid.
    shape : (H, W)
        Output grid.

    Returns
    -------
    (H, W) array, photons per pixel.
    """
    ey, ex = axis_profiles(theta, sigma, shape)
    weights = jnp.broadcast_to(jnp.asarray(i0, ex.dtype), theta.shape[:1])
    return jnp.einsum("n,nh,nw->hw", weights, ey, ex)


def expected_photons(
    theta: jax.Array, i0: Numeric, background: Numeric, sigma_psf: float, shape: tuple[int, int]
) -> jax.Array:
    """ω of eq. 1: expected photons per LR pixel from N emitters plus background.

    Parameters
    ----------
    theta : (N, 2) array
        Emitter positions (x, y), LR pixels.
    i0 : scalar or (N,) array
        Photons per emitter.
    background : scalar or (H, W) array
        Background photons per pixel.
    sigma_psf : float
        σx, LR pixels.
    shape : (H, W)
        Frame shape.
    """
    return emitter_image(theta, i0, sigma_psf, shape) + background


def expected_adu(omega: jax.Array, camera: CameraArrays) -> jax.Array:
    """Mean camera output ``g·ω + o`` in ADU."""
    return camera.gain * omega + camera.offset


def sample_adu(key: jax.Array, omega: jax.Array, camera: CameraArrays) -> jax.Array:
    """Draw a frame from eq. 1: ``ADU = g·Poisson(ω) + Normal(o, w²)``, float32 ADU."""
    k_shot, k_read = jax.random.split(key)
    photons = jax.random.poisson(k_shot, omega, shape=omega.shape).astype(jnp.float32)
    readout = jnp.sqrt(camera.readout_var) * jax.random.normal(k_read, omega.shape, jnp.float32)
    return camera.gain * photons + camera.offset + readout


def readout_photon_var(camera: CameraArrays) -> jax.Array:
    """Readout variance expressed in photons², ``w²/g²`` (the Poisson-approximation pedestal)."""
    return camera.readout_var / camera.gain**2


def adu_to_photons(adu: Numeric, camera: CameraArrays) -> jax.Array:
    """Offset-subtracted, gain-corrected counts ``n = (ADU − o)/g + w²/g²`` of the Poisson
    approximation, whose mean and variance are both ``ω + w²/g²``."""
    return (jnp.asarray(adu) - camera.offset) / camera.gain + readout_photon_var(camera)


def lr_to_hr(theta: jax.Array, upsampling: int) -> jax.Array:
    """Map LR coordinates to HR pixel coordinates: ``θ_hr = u·(θ + ½) − ½``."""
    return upsampling * (theta + 0.5) - 0.5


def hr_to_lr(theta_hr: jax.Array, upsampling: int) -> jax.Array:
    """Inverse of :func:`lr_to_hr`."""
    return (theta_hr + 0.5) / upsampling - 0.5


def kde(
    theta: jax.Array,
    sigma_kde: float,
    upsampling: int,
    shape: tuple[int, int],
    weights: jax.Array | None = None,
) -> jax.Array:
    """KDE of eq. 4 on the u-times upsampled grid, scaled so one isolated kernel peaks at 1.

    ``y = Σ_n ΔE(C; x_hr, σy) ΔE(R; y_hr, σy) / ΔE(0; 0, σy)²`` with a fixed divisor, so y is a
    deterministic function of θ alone (docs/conventions.md §2).

    Parameters
    ----------
    theta : (N, 2) array
        Emitter positions (x, y), LR pixels.
    sigma_kde : float
        σy, HR pixels.
    upsampling : int
        u.
    shape : (H, W)
        LR frame shape; the KDE has shape (u·H, u·W).
    weights : (N,) array, optional
        Each emitter's share (0 leaves an emitter out); 1 for all by default.
    """
    hr_shape = (upsampling * shape[0], upsampling * shape[1])
    peak = pixel_integrated_gaussian(0.0, 0.0, sigma_kde) ** 2
    scale = 1.0 / peak if weights is None else weights / peak
    return emitter_image(lr_to_hr(theta, upsampling), scale, sigma_kde, hr_shape)


def kde_axis_factors(
    theta: jax.Array, sigma_kde: float, upsampling: int, shape: tuple[int, int]
) -> tuple[jax.Array, jax.Array]:
    """Separable, peak-normalised KDE factors of each emitter: ey (..., N, uH), ex (..., N, uW),
    with the KDE of eq. 4 equal to ``Σ_n ey_n ⊗ ex_n``; θ (..., N, 2) in LR pixels."""
    peak = pixel_integrated_gaussian(0.0, 0.0, sigma_kde)
    theta_hr = lr_to_hr(theta, upsampling)
    ey = grid_pixel_masses(upsampling * shape[0], theta_hr[..., 1:2], sigma_kde)
    ex = grid_pixel_masses(upsampling * shape[1], theta_hr[..., 0:1], sigma_kde)
    return ey / peak, ex / peak
