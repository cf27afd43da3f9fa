"""Fisher information and Cramér–Rao lower bound (eq. 3, appendix A.3).

Under the Poisson approximation the counts ``n_k`` have mean ``ω'_k = ω_k + w_k²/g_k²``, so

    I_ij(φ) = Σ_k (∂ω_k/∂φ_i)(∂ω_k/∂φ_j) / ω'_k,

with the Jacobian of the expected image taken by ``jax.jacfwd`` of the one forward model
(:func:`physics.expected_photons`). Parameters φ: (x, y) of every emitter, optionally each
emitter's photons i0 and a shared background b.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from scipy import integrate

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward import physics
from bayes_smlm.forward.config import Task
from bayes_smlm.forward.parameters import ParameterLayout


@dataclass(frozen=True)
class CRLB:
    """Cramér–Rao bound for the parameters ``names``.

    Attributes
    ----------
    names : tuple of str
        ``x0, y0, x1, y1, …`` then ``i0_0, …`` and ``b`` when included.
    fisher : (P, P) ndarray
        Fisher information matrix (units: 1 / parameter units²).
    covariance : (P, P) ndarray
        Its inverse, the CRLB covariance.
    pixel_size_nm : float
        For conversions of positional entries to nm.
    """

    names: tuple[str, ...]
    fisher: np.ndarray
    covariance: np.ndarray
    pixel_size_nm: float

    @property
    def sd(self) -> np.ndarray:
        """√CRLB of every parameter (LR px for positions, photons for i0 and b)."""
        return np.sqrt(np.diag(self.covariance))

    def sd_of(self, name: str) -> float:
        """√CRLB of one named parameter."""
        return float(self.sd[self.names.index(name)])

    @property
    def sd_xy(self) -> np.ndarray:
        """(N, 2) √CRLB of (x, y) per emitter, LR pixels."""
        n = sum(1 for k in self.names if k.startswith("x"))
        return self.sd[: 2 * n].reshape(n, 2)


def check_inside_frame(theta: np.ndarray, task: Task, argument: str = "theta") -> np.ndarray:
    """Return θ as an (N, 2) float array, or raise if any emitter lies outside the frame."""
    theta = np.atleast_2d(np.asarray(theta, dtype=np.float64))
    if theta.ndim != 2 or theta.shape[1] != 2:
        raise ConfigError(argument, f"must have shape (N, 2) as (x, y) (got {theta.shape})")
    if not np.all(np.isfinite(theta)):
        raise ConfigError(argument, "emitter positions must be finite")
    for axis, name, size in ((0, "x", task.width), (1, "y", task.height)):
        bad = (theta[:, axis] < -0.5) | (theta[:, axis] > size - 0.5)
        if np.any(bad):
            i = int(np.argmax(bad))
            raise ConfigError(
                name if argument == "theta" else argument,
                f"emitter {i} at {name} = {theta[i, axis]:g} lies outside the frame "
                f"[-0.5, {size - 0.5:g}] LR px",
            )
    return theta


def fisher_information(
    task: Task,
    theta: np.ndarray,
    *,
    i0: float | np.ndarray | None = None,
    background: float | np.ndarray | None = None,
    include_intensity: bool = False,
    include_background: bool = False,
) -> CRLB:
    """Fisher information and CRLB of emitters at ``theta`` under ``task``'s optics and camera.

    Parameters
    ----------
    task : Task
        Optics and camera (maps allowed); i0 and background default to the task's.
    theta : (N, 2) array
        Emitter positions (x, y), LR pixels; must lie in the frame.
    i0 : float or (N,) array, optional
        Photons per emitter.
    background : float or (H, W) array, optional
        Background photons per pixel.
    include_intensity, include_background : bool
        Also estimate each emitter's i0 / a shared scalar background offset (nuisance parameters:
        they widen the positional bound).

    Returns
    -------
    CRLB
    """
    theta = check_inside_frame(theta, task)
    n = theta.shape[0]
    i0 = np.broadcast_to(np.asarray(task.prior.i0 if i0 is None else i0, np.float64), (n,))
    background = np.asarray(task.prior.background if background is None else background, np.float64)
    camera = physics.camera_arrays(task)
    sigma, shape = task.optics.sigma_psf, task.shape

    names = [f"{a}{k}" for k in range(n) for a in ("x", "y")]
    if include_intensity:
        names += [f"i0_{k}" for k in range(n)]
    if include_background:
        names.append("b")

    def omega_of(phi: jax.Array) -> jax.Array:
        pos = phi[: 2 * n].reshape(n, 2)
        photons = phi[2 * n : 3 * n] if include_intensity else jnp.asarray(i0)
        extra_b = phi[-1] if include_background else 0.0
        return physics.expected_photons(
            pos, photons, jnp.asarray(background) + extra_b, sigma, shape
        )

    parts = [theta.reshape(-1)]
    if include_intensity:
        parts.append(i0)
    if include_background:
        parts.append(np.zeros(1))
    phi0 = jnp.asarray(np.concatenate(parts), dtype=jnp.float32)

    jac = np.asarray(jax.jacfwd(omega_of)(phi0), np.float64).reshape(-1, phi0.size)
    rate = np.asarray(omega_of(phi0) + physics.readout_photon_var(camera), np.float64)
    rate = np.broadcast_to(rate, shape).reshape(-1)
    # Pixels whose rate underflows to 0 (no background, no readout noise, far tail) carry no
    # information: there ∂ω/∂φ underflows too.
    seen = rate > 0
    fisher = jac[seen].T @ (jac[seen] / rate[seen, None])
    try:
        cov = np.linalg.inv(fisher)
    except np.linalg.LinAlgError:
        raise ConfigError(
            "theta",
            "Fisher information is singular (coincident emitters or a "
            "parameter with no effect on the image)",
        ) from None
    return CRLB(tuple(names), fisher, cov, task.optics.pixel_size_nm)


def position_crlb_sd(task: Task, theta: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """(F, N, 2) √CRLB of every emitter's (x, y), LR px, for many frames of positions
    ``theta`` (F, N, 2) at once (the task's i0 and background; emitters of a frame jointly).

    The same information as :func:`fisher_information`, ``Jᵀ diag(1/(ω + w²/g²)) J``, with the
    Jacobian from :meth:`ParameterLayout.image_derivatives` vmapped over frames instead of one
    autodiff call per frame (thousands of frames per second instead of tens)."""
    theta = np.asarray(theta, np.float32)
    layout = ParameterLayout.of(task)
    derivatives = layout.image_derivatives(task)
    pedestal = physics.readout_photon_var(physics.camera_arrays(task))

    @jax.jit
    @jax.vmap
    def sd(positions: jax.Array) -> jax.Array:
        d = derivatives(layout.pack(positions))
        rate = d.omega + pedestal  # a rate that underflows to 0 carries no information
        weighted = jnp.where(rate > 0, d.jacobian / jnp.where(rate > 0, rate, 1.0), 0.0)
        fisher = jnp.einsum("phw,qhw->pq", weighted, d.jacobian)
        return jnp.sqrt(jnp.diag(jnp.linalg.inv(fisher))).reshape(positions.shape)

    return np.concatenate(
        [
            np.asarray(sd(jnp.asarray(theta[i : i + batch_size])))
            for i in range(0, len(theta), batch_size)
        ]
    )


def mortensen_mle_sd(
    sigma_psf: float, photons: float, background: float, pixel_size: float = 1.0
) -> float:
    """√variance of the MLE of one coordinate by Mortensen et al. (2010), eq. 6 (no EM gain).

    ``var = σa²/N · [1 + ∫₀¹ ln t / (1 + t/τ) dt]⁻¹`` with ``σa² = σ² + a²/12`` and
    ``τ = 2π σa² b / (N a²)``. An independent closed form for checking the Fisher computation.

    Parameters
    ----------
    sigma_psf : float
        PSF standard deviation (same units as ``pixel_size``).
    photons : float
        Total photons N from the emitter.
    background : float
        Background photons per pixel (for the Poisson approximation: ``b + w²/g²``).
    pixel_size : float
        Pixel width a.
    """
    sa2 = sigma_psf**2 + pixel_size**2 / 12.0
    if background <= 0:
        return float(np.sqrt(sa2 / photons))
    tau = 2.0 * np.pi * sa2 * background / (photons * pixel_size**2)
    integral, _ = integrate.quad(lambda t: np.log(t) / (1.0 + t / tau), 0.0, 1.0, limit=200)
    return float(np.sqrt(sa2 / photons / (1.0 + integral)))
