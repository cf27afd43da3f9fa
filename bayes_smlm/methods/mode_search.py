"""Posterior mode and Laplace covariance of a Poisson image model, by damped Newton.

One pure, vmappable routine shared by ``laplace`` (whole frames) and ``localize`` (regions of
interest of a movie): the mode of ``ℓ(p) = loglik(ω(p), data)`` (flat priors inside the box that
``project`` keeps the parameters in, so mode = MLE there) by Levenberg–Marquardt on the observed
information, and the inverse of −∇²ℓ at the mode.

The model enters through three functions: ``derivatives(p)`` with ``.omega`` (H, W) and
``.jacobian`` (P, H, W) (see :class:`bayes_smlm.forward.parameters.ImageDerivatives`),
``curvature(d, weights)`` = Σ_pixels weights · ∂²ω/∂p∂pᵀ, and ``loglik(omega, data)`` summed over
pixels (its per-pixel slopes come from autodiff: pixels are independent).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def damped_newton(
    params: jax.Array,
    data: Any,
    *,
    derivatives: Callable,
    curvature: Callable,
    loglik: Callable,
    project: Callable[[jax.Array], jax.Array],
    max_iter: int | jax.Array,
    tol: float,
    free: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Mode of ℓ from the start ``params`` (P,).

    Steps δ = (C + μ diag C)⁻¹ ∇ℓ with C the observed information −∇²ℓ where it is positive
    definite and its Gauss–Newton part elsewhere; a step is accepted only when ℓ does not fall.
    Stops when the Newton decrement ∇ℓᵀδ < ``tol`` at small damping (converged) or after
    ``max_iter`` steps. Parameters where ``free`` (P,) bool is False stay at their start: their
    gradient is zeroed and their rows and columns of the information replaced by the identity's
    (so one compiled program serves windows with fewer emitters than it has slots). A free
    parameter that ``project`` holds at its bound while ∇ℓ pushes it outward is held the same
    way for that step (the active set of projected Newton, Bertsekas 1982): its step would be
    clipped away, and counted in the decrement it would keep a mode on the prior's edge from
    ever converging.

    Returns
    -------
    mode : (P,), iterations : int, converged : bool, information : (P, P)
        ``information`` is −∇²ℓ at the last point (at the mode when converged).
    """
    slope = jax.grad(loglik)  # ∂ℓ/∂ω per pixel, (H, W)
    free = jnp.ones(params.shape[-1], bool) if free is None else free
    held = jnp.diag((~free).astype(params.dtype))
    both = free[:, None] & free[None, :]

    def not_done(state: tuple[jax.Array, ...]) -> jax.Array:
        _, _, _, it, done, _ = state
        return (it < max_iter) & ~done

    def step(state: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
        p, value, damping, it, _, _ = state
        d = derivatives(p)
        grad = jnp.where(free, jnp.sum(d.jacobian * slope(d.omega, data), (1, 2)), 0.0)
        moving = free & ~pinned(p, grad)
        gauss_newton, whole = observed_information(d, curvature, slope, data)
        information = jnp.where(both, whole, held)
        both_moving = moving[:, None] & moving[None, :]
        still = jnp.diag((~moving).astype(p.dtype))
        grad = jnp.where(moving, grad, 0.0)
        gauss_newton, moving_information = (
            jnp.where(both_moving, m, still) for m in (gauss_newton, whole)
        )
        # Newton where −∇²ℓ is positive definite (quadratic convergence); elsewhere — e.g. two
        # emitters drifting onto one spot, a saddle of the exchange symmetry that Newton would
        # be drawn to — its Gauss–Newton part Σ −ℓ''(ω) ∇ω∇ωᵀ, whose step climbs ℓ
        curv = jnp.where(is_positive_definite(moving_information), moving_information, gauss_newton)
        delta = solve_positive_definite(curv + damping * jnp.diag(jnp.diag(curv)), grad)
        # with the damping this small δ is the Newton step: gᵀδ is the Newton decrement
        converged = (grad @ delta < tol) & (grad @ delta >= 0) & (damping <= 1e-2)
        candidate = project(p + delta)
        new_value = loglik(derivatives(candidate).omega, data)
        # a step within float32 rounding of ℓ is not a worse step: near the mode the true gain
        # (½ decrement ≈ 1e-5) is below the resolution of a sum of hundreds of terms
        better = (new_value >= value - 1e-6 * (jnp.abs(value) + 1.0)) & ~converged
        return (
            jnp.where(better, candidate, p),
            jnp.where(better, new_value, value),
            jnp.where(better, jnp.maximum(damping * 0.1, 1e-9), damping * 10.0),
            it + 1,
            converged,
            information,
        )

    def pinned(p: jax.Array, grad: jax.Array) -> jax.Array:
        # at a bound when a nudge along the gradient is clipped back to where it started
        nudge = p + jnp.sign(grad) * 1e-3 * (1.0 + jnp.abs(p))
        return (grad != 0) & (project(nudge) == p)

    value = loglik(derivatives(params).omega, data)
    eye = jnp.eye(params.shape[-1], dtype=params.dtype)
    state: tuple[jax.Array, ...] = (
        params,
        value,
        jnp.asarray(1e-3, params.dtype),
        jnp.int32(0),
        jnp.bool_(False),
        eye,
    )
    # a converged start stops without moving, so the information of its last step is the one at
    # the mode; a run out of steps (flagged by the caller) keeps that of its last point
    mode, _, _, iterations, converged, information = jax.lax.while_loop(not_done, step, state)
    return mode, iterations, converged, information


def laplace_covariance(information: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(covariance, positive_definite): the inverse of ``information`` (P, P) where it is positive
    definite; elsewhere the inverse of its diagonal's absolute values, so that draws stay
    finite (the caller flags it)."""
    eye = jnp.eye(information.shape[-1], dtype=information.dtype)
    chol = cholesky(information)
    positive_definite = jnp.all(jnp.isfinite(chol))
    fallback = jnp.diag(1.0 / jnp.maximum(jnp.abs(jnp.diag(information)), 1e-12))
    covariance = jnp.where(
        positive_definite, cholesky_solve(jnp.where(positive_definite, chol, eye), eye), fallback
    )
    return covariance, positive_definite


def observed_information(
    d: Any, curvature: Callable, slope: Callable, data: Any
) -> tuple[jax.Array, jax.Array]:
    """(Gauss–Newton part, whole) of −∇²ℓ at the parameters of ``d``: −∇²ℓ =
    −Σ ℓ''(ω) ∇ω∇ωᵀ − Σ ℓ'(ω) ∇²ω, with the per-pixel ℓ' and ℓ'' of the camera likelihood by
    autodiff (pixels are independent, so ℓ'' is the Hessian's diagonal: one JVP of ℓ' along
    ones) and ω's derivatives analytic."""
    first, second = jax.jvp(lambda omega: slope(omega, data), (d.omega,), (jnp.ones_like(d.omega),))
    gauss_newton = -pixel_sum(d.jacobian * second, d.jacobian)
    return gauss_newton, gauss_newton - curvature(d, first)


# Small dense linear algebra written out in jax.numpy. XLA's CPU LAPACK calls (cholesky, solve)
# inside a while loop, pmapped over host devices, deadlocked here for ≥ 32 frames per device of
# 20×20 systems (ten emitters; every device thread idle); these loops of vector operations
# cannot, and for P ≤ 31 they cost no more. They are rolled (fori_loop), not unrolled in
# Python: a 13-parameter window fit then compiled in 1.8 s instead of 5.5 s, and ran 10 % faster
# (AMD EPYC, 512 windows).


def cholesky(matrix: jax.Array) -> jax.Array:
    """Lower Cholesky factor of a (P, P) symmetric matrix; NaN where it is not positive
    definite."""
    index = jnp.arange(matrix.shape[-1])

    def column(j: jax.Array, lower: jax.Array) -> jax.Array:
        remaining = matrix[:, j] - lower @ jnp.where(index < j, lower[j], 0.0)
        return lower.at[:, j].set(jnp.where(index >= j, remaining / jnp.sqrt(remaining[j]), 0.0))

    return jax.lax.fori_loop(0, matrix.shape[-1], column, jnp.zeros_like(matrix))


def cholesky_solve(lower: jax.Array, rhs: jax.Array) -> jax.Array:
    """Solve (L Lᵀ) x = rhs for rhs (P,) or (P, K) by forward and back substitution."""
    size = lower.shape[-1]
    index = jnp.arange(size)

    def forward(i: jax.Array, y: jax.Array) -> jax.Array:
        known = jnp.tensordot(jnp.where(index < i, lower[i], 0.0), y, 1)
        return y.at[i].set((rhs[i] - known) / lower[i, i])

    y = jax.lax.fori_loop(0, size, forward, jnp.zeros_like(rhs))

    def backward(k: jax.Array, x: jax.Array) -> jax.Array:
        i = size - 1 - k
        known = jnp.tensordot(jnp.where(index > i, lower[:, i], 0.0), x, 1)
        return x.at[i].set((y[i] - known) / lower[i, i])

    return jax.lax.fori_loop(0, size, backward, jnp.zeros_like(rhs))


def solve_positive_definite(matrix: jax.Array, rhs: jax.Array) -> jax.Array:
    """x with matrix · x = rhs (NaN where the matrix is not positive definite)."""
    return cholesky_solve(cholesky(matrix), rhs)


def is_positive_definite(matrix: jax.Array) -> jax.Array:
    """Whether a symmetric matrix has a Cholesky factor."""
    return jnp.all(jnp.isfinite(cholesky(matrix)))


def pixel_sum(a: jax.Array, b: jax.Array) -> jax.Array:
    """(P, Q) ``Σ_pixels a_p b_q`` of (P, H, W) and (Q, H, W), as a fused broadcast-and-sum:
    vmapped over frames, tiny batched matrix products run several times slower on a CPU."""
    return jnp.sum(a[:, None] * b[None, :], (2, 3))
