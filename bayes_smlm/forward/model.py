"""NumPyro model of the image likelihood and log densities ready for BlackJAX.

Latents: emitter positions ``theta`` (N, 2) with the task's uniform-disc prior; optionally
per-emitter photons ``i0`` (N,) and a scalar ``background`` (photons/pixel) with uniform priors
from the task. Two likelihoods: ``"poisson"`` (Poisson approximation) and ``"poisson_gaussian"``
(exact convolution).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer.util import log_density as numpyro_log_density

from bayes_smlm.forward import physics
from bayes_smlm.forward.checks import check_choice
from bayes_smlm.forward.config import Task
from bayes_smlm.forward.distributions import (
    PoissonApproxADU,
    PoissonGaussianADU,
    UniformDisc,
    poisson_gaussian_n_max,
    poisson_kernel,
)
from bayes_smlm.forward.frames import validate_frames

LIKELIHOODS = ("poisson", "poisson_gaussian")


def _check_likelihood(likelihood: str) -> str:
    return check_choice("likelihood", likelihood, LIKELIHOODS)


def exact_sum_length(
    task: Task,
    adu: jax.Array | np.ndarray | None = None,
    tol: float = 1e-10,
    infer_intensity: bool = False,
    infer_background: bool = False,
) -> int:
    """``n_max`` of the exact likelihood for ``task`` (and data ``adu``, if given)."""
    p, c = task.prior, physics.camera_arrays(task)
    peak = float(physics.pixel_integrated_gaussian(0.0, 0.0, task.optics.sigma_psf)) ** 2
    i0_max = p.i0_range[1] if infer_intensity else p.i0
    b_max = p.background_range[1] if infer_background else float(np.max(p.background))
    omega_max = p.n_emitters * i0_max * peak + b_max
    sd_photons = float(np.max(np.sqrt(np.asarray(c.readout_var)) / np.asarray(c.gain)))
    data_max = 0.0
    if adu is not None:
        data_max = float(np.max((np.asarray(adu) - np.asarray(c.offset)) / np.asarray(c.gain)))
    return poisson_gaussian_n_max(omega_max, data_max, sd_photons, tol)


def image_model(
    task: Task,
    adu: jax.Array | None = None,
    *,
    likelihood: str = "poisson",
    infer_intensity: bool = False,
    infer_background: bool = False,
    n_max: int | None = None,
) -> None:
    """NumPyro model ``p(θ, [i0], [b]) p(ADU | θ, i0, b)`` of one frame.

    Parameters
    ----------
    task : Task
        Optics, camera, prior.
    adu : (H, W) array or None
        Observed frame in ADU; ``None`` samples a frame.
    likelihood : {"poisson", "poisson_gaussian"}
        Poisson approximation or exact Poisson–Gaussian convolution.
    infer_intensity, infer_background : bool
        Make per-emitter ``i0`` / a scalar ``background`` latent (uniform priors from the task);
        otherwise they are fixed at the task's values.
    n_max : int, optional
        Truncation of the exact sum; defaults to :func:`exact_sum_length`.
    """
    _check_likelihood(likelihood)
    prior, optics = task.prior, task.optics
    camera = physics.camera_arrays(task)
    scene = physics.scene_arrays(task)
    with numpyro.plate("emitters", prior.n_emitters):
        theta = numpyro.sample("theta", UniformDisc(jnp.asarray(task.centre), prior.radius))
        if infer_intensity:
            i0 = numpyro.sample("i0", dist.Uniform(*prior.i0_range))
        else:
            i0 = scene.i0
    if infer_background:
        background = numpyro.sample("background", dist.Uniform(*prior.background_range))
    else:
        background = scene.background
    omega = physics.expected_photons(theta, i0, background, optics.sigma_psf, task.shape)
    if likelihood == "poisson_gaussian" and n_max is None:
        n_max = exact_sum_length(
            task, adu, infer_intensity=infer_intensity, infer_background=infer_background
        )
    numpyro.sample(
        "adu", camera_distribution(omega, camera, likelihood, n_max).to_event(2), obs=adu
    )


def camera_distribution(
    omega: jax.Array, camera: physics.CameraArrays, likelihood: str, n_max: int | None = None
) -> dist.Distribution:
    """Per-pixel law of the ADU given expected photons ``omega`` (batch shape (H, W))."""
    # A latent outside its support (prior log density -inf) may give ω < 0; clamp so the
    # likelihood stays finite and the joint is exactly -inf rather than NaN.
    omega = jnp.maximum(omega, 0.0)
    if likelihood == "poisson":
        return PoissonApproxADU(omega, camera, validate_args=False)
    if n_max is None:
        raise ValueError("the exact likelihood needs n_max (exact_sum_length gives it)")
    return PoissonGaussianADU(omega, camera, n_max, validate_args=False)


def make_log_likelihood(
    task: Task, *, likelihood: str = "poisson", n_max: int | None = None
) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """Pure ``(theta, adu) -> log p(adu | θ)`` with i0 and background fixed at the task's values
    (no prior term), for samplers that bring their own prior."""
    _check_likelihood(likelihood)
    if likelihood == "poisson_gaussian" and n_max is None:
        n_max = exact_sum_length(task)
    camera, scene = physics.camera_arrays(task), physics.scene_arrays(task)

    def loglik(theta: jax.Array, adu: jax.Array) -> jax.Array:
        omega = physics.expected_photons(
            theta, scene.i0, scene.background, task.optics.sigma_psf, task.shape
        )
        return jnp.sum(camera_distribution(omega, camera, likelihood, n_max).log_prob(adu))

    return loglik


def make_log_density(
    task: Task,
    *,
    likelihood: str = "poisson",
    infer_intensity: bool = False,
    infer_background: bool = False,
    n_max: int | None = None,
) -> Callable[[Mapping[str, jax.Array], jax.Array], jax.Array]:
    """Pure function ``(params, adu) -> log p(params, adu)`` in pixel space.

    ``params`` is a dict with ``"theta"`` (N, 2) LR pixels and, when inferred, ``"i0"`` (N,) and
    ``"background"`` (scalar). Values outside the prior's support give ``−inf``. The function is
    jit- and vmap-friendly (vmap over frames by mapping both arguments). For the exact likelihood
    pass ``n_max`` (e.g. :func:`exact_sum_length` of all frames) so it stays static under jit.
    """
    _check_likelihood(likelihood)
    if likelihood == "poisson_gaussian" and n_max is None:
        n_max = exact_sum_length(
            task, infer_intensity=infer_intensity, infer_background=infer_background
        )

    def logdensity(params: Mapping[str, jax.Array], adu: jax.Array) -> jax.Array:
        value, _ = numpyro_log_density(
            image_model,
            (task, adu),
            dict(
                likelihood=likelihood,
                infer_intensity=infer_intensity,
                infer_background=infer_background,
                n_max=n_max,
            ),
            dict(params),
        )
        return value

    return logdensity


def position_log_density(
    task: Task, adu: jax.Array, *, likelihood: str = "poisson", n_max: int | None = None
) -> Callable[[jax.Array], jax.Array]:
    """Log posterior density (up to a constant) of the positions θ (N, 2) given one frame.

    i0 and background are fixed at the task's values. This is the function BlackJAX samplers
    take: ``blackjax.nuts(position_log_density(task, adu), ...)``.
    """
    if not isinstance(adu, jax.core.Tracer):  # concrete data: NaN or garbage refused here
        adu = validate_frames(task, adu)[0]
    adu = jnp.asarray(adu, jnp.float32)
    if likelihood == "poisson_gaussian" and n_max is None:
        n_max = exact_sum_length(task, np.asarray(adu))
    logdensity = make_log_density(task, likelihood=likelihood, n_max=n_max)
    return lambda theta: logdensity({"theta": theta}, adu)


def make_rate_log_likelihood(
    task: Task, *, likelihood: str = "poisson", n_max: int | None = None
) -> tuple[Callable[[jax.Array], jax.Array], Callable[[jax.Array, jax.Array], jax.Array]]:
    """``(prepare, loglik)``: the camera log-likelihood as a function of the expected photons.

    ``data = prepare(adu)`` converts a frame once; ``loglik(omega, data)`` is
    ``log p(adu | ω)`` summed over pixels for ω (H, W) photons/px, up to a constant per frame
    for the Poisson approximation (``lgamma(n + 1)`` dropped; data are the counts
    ``n = (ADU − o)/g + w²/g²``). Whatever parametrises ω (positions, intensities, background),
    gradients flow through it.
    """
    _check_likelihood(likelihood)
    camera = physics.camera_arrays(task)
    if likelihood == "poisson_gaussian":
        n_max = exact_sum_length(task) if n_max is None else n_max

        def exact(omega: jax.Array, adu: jax.Array) -> jax.Array:
            return jnp.sum(camera_distribution(omega, camera, likelihood, n_max).log_prob(adu))

        return (lambda adu: adu), exact
    pedestal = physics.readout_photon_var(camera)

    def prepare(adu: jax.Array) -> jax.Array:
        return physics.adu_to_photons(adu, camera)

    def poisson(omega: jax.Array, counts: jax.Array) -> jax.Array:
        return jnp.sum(poisson_kernel(counts, omega + pedestal))

    return prepare, poisson


def make_sampler_log_density(
    task: Task, *, likelihood: str = "poisson", n_max: int | None = None
) -> tuple[Callable[[jax.Array], jax.Array], Callable[[jax.Array, jax.Array], jax.Array]]:
    """Lean ``(prepare, logdensity)`` pair for samplers that call the density millions of times.

    ``data = prepare(adu)`` converts a frame once (photon counts n for the Poisson
    approximation); ``logdensity(theta, data)`` equals the NumPyro model's log joint of θ up to
    an additive constant per frame (θ-independent terms such as ``lgamma(n + 1)`` are dropped).
    Same prior (−inf off the disc) and same forward model.
    """
    _check_likelihood(likelihood)
    scene = physics.scene_arrays(task)
    prior = UniformDisc(jnp.asarray(task.centre), task.prior.radius)
    if likelihood == "poisson_gaussian":
        full = make_log_density(task, likelihood=likelihood, n_max=n_max)
        return (lambda adu: adu), (lambda theta, adu: full({"theta": theta}, adu))
    prepare, loglik = make_rate_log_likelihood(task, likelihood=likelihood)

    def logdensity(theta: jax.Array, counts: jax.Array) -> jax.Array:
        omega = physics.expected_photons(
            theta, scene.i0, scene.background, task.optics.sigma_psf, task.shape
        )
        return jnp.sum(prior.log_prob(theta)) + loglik(omega, counts)

    return prepare, logdensity


def frame_constant(task: Task, likelihood: str) -> Callable[[jax.Array], jax.Array]:
    """``adu -> c``: what :func:`make_rate_log_likelihood` leaves out of log p(adu | ω) for one
    frame (``−lgamma(n + 1) − log g`` per pixel for the Poisson approximation; 0 for the exact
    likelihood), so that an evidence estimated with that likelihood, plus c, is the log density
    of the ADU frame."""
    prepare, loglik = make_rate_log_likelihood(task, likelihood=likelihood)
    camera = physics.camera_arrays(task)

    def constant(adu: jax.Array) -> jax.Array:
        omega = jnp.ones(task.shape, jnp.float32)  # any ω > 0: the difference does not depend on it
        full = jnp.sum(camera_distribution(omega, camera, likelihood).log_prob(adu))
        return full - loglik(omega, prepare(adu))

    return constant


BACKGROUND_GRID = 513  # points of the integral over a latent background (±12 SD of its peak)


def background_log_likelihood(task: Task, likelihood: str) -> Callable[[jax.Array], jax.Array]:
    """``adu -> log p(adu | no emitter)`` (the evidence of n = 0 exactly, no sampling), with the
    frame constant included. Where the task draws its brightness the background is latent,
    uniform on ``background_range``, and is integrated out on a grid of
    :data:`BACKGROUND_GRID` points spanning ±12 SD of the likelihood's peak (it is negligible
    beyond), clipped to the range."""
    prepare, loglik = make_rate_log_likelihood(task, likelihood=likelihood)
    constant = frame_constant(task, likelihood)
    if task.prior.brightness != "drawn":
        omega = jnp.broadcast_to(physics.scene_arrays(task).background, task.shape)
        return lambda adu: loglik(omega, prepare(adu)) + constant(adu)
    low, high = task.prior.background_range
    camera = physics.camera_arrays(task)
    pixels = task.height * task.width
    steps = jnp.linspace(-12.0, 12.0, BACKGROUND_GRID)

    def integrated(adu: jax.Array) -> jax.Array:
        photons = physics.adu_to_photons(adu, camera)  # ≈ b + pedestal per pixel
        peak = jnp.clip(jnp.mean(photons), low, high)
        sd = jnp.sqrt(
            jnp.maximum(jnp.mean(photons), 1.0) / pixels
            + jnp.mean(physics.readout_photon_var(camera)) / pixels
        )
        grid = jnp.clip(peak + steps * sd, low, high)
        data = prepare(adu)
        values = jax.vmap(lambda b: loglik(jnp.full(task.shape, b), data))(grid)
        # trapezoid in log space; clipped points repeat a bound and add zero width
        widths = jnp.diff(grid)
        pairs = jnp.logaddexp(values[1:], values[:-1]) + jnp.log(jnp.maximum(widths, 1e-30) / 2)
        pairs = jnp.where(widths > 0, pairs, -jnp.inf)
        return jax.scipy.special.logsumexp(pairs) - jnp.log(high - low) + constant(adu)

    return integrated
