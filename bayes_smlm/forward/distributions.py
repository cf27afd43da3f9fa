"""NumPyro distributions of the image model: uniform-on-disc prior and two camera likelihoods.

- :class:`UniformDisc` — one emitter uniform on a disc (LR pixels); log density −inf outside, and a
  registered bijection from R² so NumPyro's own samplers can use it too.
- :class:`PoissonApproxADU` — the Poisson approximation of eq. 1 (offset subtracted, readout variance
  added): ``n = (ADU − o)/g + w²/g² ~ Poisson(ω + w²/g²)``, a density in ADU (Jacobian 1/g).
- :class:`PoissonGaussianADU` — the exact convolution ``Σ_n Poisson(n; ω) N(ADU; g n + o, w²)``,
  summed over ``n = 0 … n_max`` (see :func:`poisson_gaussian_n_max` for the truncation bound).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln, logsumexp
from numpyro.distributions import Distribution, constraints
from numpyro.distributions.transforms import Transform, biject_to
from scipy import stats

from bayes_smlm.forward.physics import CameraArrays, Numeric, readout_photon_var, sample_adu


class _Disc(constraints.Constraint):
    """Closed disc ``|v − centre| ≤ radius`` in R² (event_dim 1)."""

    event_dim = 1

    def __init__(self, centre, radius):
        self.centre = centre
        self.radius = radius

    def __call__(self, x):
        xp = jnp if isinstance(x, jax.Array) else np
        return xp.sum((x - self.centre) ** 2, axis=-1) <= self.radius**2

    def feasible_like(self, prototype):
        return jnp.broadcast_to(
            jnp.asarray(self.centre, jnp.result_type(float)), jnp.shape(prototype)
        )

    def tree_flatten(self):
        return (self.centre, self.radius), (("centre", "radius"), dict())


class RadialTanhTransform(Transform):
    """Bijection R² → open disc: ``v = centre + radius · tanh(|u|) · u/|u|``."""

    domain = constraints.real_vector

    def __init__(self, centre, radius):
        self.centre = jnp.asarray(centre)
        self.radius = radius

    @property
    def codomain(self):
        return _Disc(self.centre, self.radius)

    @staticmethod
    def _radial_parts(x):
        """``(tanh(r)/r, log(sech²(r) tanh(r)/r))`` of ``r = |x|``, smooth at r = 0.

        Works from r² so that derivatives at the origin are finite (|x| has none there).
        """
        r2 = jnp.sum(x**2, axis=-1, keepdims=True)
        small = r2 < 1e-8
        r = jnp.sqrt(jnp.where(small, 1.0, r2))
        ratio = jnp.where(small, 1.0 - r2 / 3.0, jnp.tanh(r) / r)
        log_sech2 = jnp.where(small, -r2, 2.0 * (math.log(2.0) - r - jax.nn.softplus(-2.0 * r)))
        return ratio, log_sech2 + jnp.log(ratio)

    def __call__(self, x):
        ratio, _ = self._radial_parts(x)
        return self.centre + self.radius * ratio * x

    def _inverse(self, y):
        d = (y - self.centre) / self.radius
        f2 = jnp.sum(d**2, axis=-1, keepdims=True)
        small = f2 < 1e-8
        f = jnp.clip(jnp.sqrt(jnp.where(small, 0.25, f2)), 0.0, 1.0 - 1e-7)
        ratio = jnp.where(small, 1.0 + f2 / 3.0, jnp.arctanh(f) / f)  # atanh(ρ)/ρ
        return d * ratio

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        # Radial map ρ = R tanh(r): det J = (dρ/dr)(ρ/r) = R sech²(r) · R tanh(r)/r.
        _, log_parts = self._radial_parts(x)
        return 2.0 * jnp.log(self.radius) + log_parts[..., 0]

    def tree_flatten(self):
        return (self.centre, self.radius), (("centre", "radius"), dict())


@biject_to.register(_Disc)
def _disc_bijection(constraint):
    return RadialTanhTransform(constraint.centre, constraint.radius)


def uniform_disc_points(key: jax.Array, shape: tuple[int, ...], centre, radius) -> jax.Array:
    """Points i.i.d. uniform on the disc of ``radius`` about ``centre`` (x, y): (*shape, 2), LR
    pixels (radius √U, angle 2πU′ from two independent uniforms)."""
    k_r, k_phi = jax.random.split(key)
    r = radius * jnp.sqrt(jax.random.uniform(k_r, shape))
    phi = 2.0 * jnp.pi * jax.random.uniform(k_phi, shape)
    centre = jnp.asarray(centre)
    return jnp.stack(
        [centre[..., 0] + r * jnp.cos(phi), centre[..., 1] + r * jnp.sin(phi)], axis=-1
    )


def project_into_disc(points: Numeric, centre, limit: float) -> jax.Array:
    """``points`` (..., 2) farther than ``limit`` from ``centre`` moved radially to that
    distance; the others unchanged."""
    centre = jnp.asarray(centre)
    offset = points - centre
    r = jnp.linalg.norm(offset, axis=-1, keepdims=True)
    return jnp.where(r > limit, centre + offset * limit / jnp.maximum(r, 1e-12), points)


class UniformDisc(Distribution):
    """Uniform distribution on a disc of ``radius`` about ``centre`` (x, y), LR pixels.

    ``log_prob`` is ``−log(π R²)`` inside and ``−inf`` outside, which is how BlackJAX samplers in
    pixel space see the prior's support.
    """

    arg_constraints = {"centre": constraints.real_vector, "radius": constraints.positive}
    reparametrized_params: list[str] = []

    def __init__(self, centre, radius, *, validate_args=None):
        self.centre = jnp.asarray(centre, dtype=jnp.result_type(float))
        self.radius = radius
        super().__init__(
            batch_shape=jnp.shape(self.centre)[:-1], event_shape=(2,), validate_args=validate_args
        )

    @constraints.dependent_property(is_discrete=False, event_dim=1)
    def support(self):
        return _Disc(self.centre, self.radius)

    def sample(self, key, sample_shape=()):
        return uniform_disc_points(key, sample_shape + self.batch_shape, self.centre, self.radius)

    def log_prob(self, value):
        inside = jnp.sum((value - self.centre) ** 2, axis=-1) <= self.radius**2
        return jnp.where(inside, -jnp.log(jnp.pi * self.radius**2), -jnp.inf)


class PoissonApproxADU(Distribution):
    """Per-pixel Poisson approximation of the camera of eq. 1, as a density in ADU.

    ``log p(ADU) = n log λ − λ − lgamma(n + 1) − log g`` with ``n = (ADU − o)/g + w²/g²`` and
    ``λ = ω + w²/g²``. ``n`` is continuous and may be slightly negative where readout noise
    dominates; it is not clipped in the θ-dependent term (which keeps the score unbiased) and the
    normaliser uses ``lgamma(max(n, 0) + 1)``, a constant in θ.
    """

    arg_constraints = {"omega": constraints.nonnegative}
    support = constraints.real

    def __init__(self, omega, camera: CameraArrays, *, validate_args=None):
        self.omega = omega
        self.camera = camera
        batch_shape = jnp.broadcast_shapes(jnp.shape(omega), *(jnp.shape(v) for v in camera))
        super().__init__(batch_shape=batch_shape, validate_args=validate_args)

    @property
    def rate(self):
        return self.omega + readout_photon_var(self.camera)

    def sample(self, key, sample_shape=()):
        shape = sample_shape + self.batch_shape
        n = jax.random.poisson(key, jnp.broadcast_to(self.rate, shape), shape)
        c = self.camera
        return c.gain * (n - readout_photon_var(c)) + c.offset

    def log_prob(self, value):
        c = self.camera
        n = (value - c.offset) / c.gain + readout_photon_var(c)
        return poisson_kernel(n, self.rate) - gammaln(jnp.maximum(n, 0.0) + 1.0) - jnp.log(c.gain)


def poisson_kernel(n: jax.Array, rate: jax.Array) -> jax.Array:
    """θ-dependent part ``n log λ − λ`` of the Poisson log pmf (the rest is constant in θ)."""
    return n * jnp.log(rate) - rate


class PoissonGaussianADU(Distribution):
    """Exact camera likelihood of eq. 1, ``Σ_{n=0}^{n_max} Pois(n; ω) N(ADU; g n + o, w²)``.

    Parameters
    ----------
    omega : array
        Expected photons per pixel.
    camera : CameraArrays
        Offset (ADU), gain (ADU/photon), readout variance (ADU²; must be > 0 for a density).
    n_max : int
        Last photon count in the sum (static); see :func:`poisson_gaussian_n_max`.
    """

    arg_constraints = {"omega": constraints.nonnegative}
    support = constraints.real

    def __init__(self, omega, camera: CameraArrays, n_max: int, *, validate_args=None):
        self.omega = omega
        self.camera = camera
        self.n_max = int(n_max)
        batch_shape = jnp.broadcast_shapes(jnp.shape(omega), *(jnp.shape(v) for v in camera))
        super().__init__(batch_shape=batch_shape, validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        omega = jnp.broadcast_to(self.omega, sample_shape + self.batch_shape)
        return sample_adu(key, omega, self.camera)

    def log_prob(self, value):
        c = self.camera
        n = jnp.arange(self.n_max + 1, dtype=jnp.result_type(float))
        expand = lambda a: jnp.asarray(a)[..., None]  # noqa: E731  (broadcast against n)
        omega = expand(self.omega)
        positive = omega > 0
        # Guard log(0): a pixel with ω = 0 emits no photons (P(n=0) = 1) and has zero gradient.
        log_omega = jnp.log(jnp.where(positive, omega, 1.0))
        log_pois = jnp.where(
            positive, n * log_omega - omega - gammaln(n + 1.0), jnp.where(n == 0, 0.0, -jnp.inf)
        )
        var = expand(c.readout_var)
        resid = expand(value) - (expand(c.gain) * n + expand(c.offset))
        log_norm = -0.5 * (resid**2 / var + jnp.log(2.0 * jnp.pi * var))
        return logsumexp(log_pois + log_norm, axis=-1)


def poisson_gaussian_n_max(
    omega_max: float, data_photons_max: float, readout_sd_photons: float, tol: float = 1e-10
) -> int:
    """Truncation point of the exact Poisson–Gaussian sum.

    The sum over photon counts stops at the smallest ``n_max`` with Poisson upper tail
    ``P(n > n_max; ω_max) ≤ tol`` for the largest expected count ``ω_max`` the model can produce,
    and that also covers every observed pixel's Gaussian band ``(ADU − o)/g + 10 w/g``. The
    neglected terms then carry at most ``tol`` of the Poisson mass at every pixel.
    """
    tail = stats.poisson.isf(tol, max(omega_max, 1e-6))
    band = data_photons_max + 10.0 * readout_sd_photons
    return int(max(np.ceil(tail), np.ceil(band), 1))
