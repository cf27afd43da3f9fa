"""One adaptive tempered SMC run of one frame (BlackJAX): particles, weights and log Z.

Particles start from the prior (each emitter uniform on the task's disc) and are carried to the
posterior through the tempered targets π(θ) p(x | θ)^λ, λ rising from 0 to 1 in steps chosen so
that each keeps ``target_ess`` of the particles' effective sample size
(``blackjax.adaptive_tempered_smc``). Between steps an HMC kernel (``blackjax.hmc``) moves them;
its step size is tuned from the acceptance of the previous step's moves
(``blackjax.inner_kernel_tuning``). The product of the mean incremental weights is an unbiased
estimate of the marginal likelihood Z = ∫ π(θ) p(x | θ) dθ.

Particles live in the unconstrained coordinates of the disc prior (the bijection NUTS uses,
:func:`bayes_smlm.methods.nuts.prior_transform`), so no move leaves the support. Where the task
draws its brightness (``prior.brightness = drawn``) each emitter's photons i0 and the frame's
background b are latent too, uniform on ``i0_range`` and ``background_range`` as the simulator
draws them, carried as logits of their place in the range; the evidence then integrates over
them as well, and the HMC mass matrix follows the particles' variance (positions and logits
have different scales). Everything here is a pure function of (key, frame): vmap it over runs
and frames.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import blackjax
import jax
import jax.numpy as jnp
from blackjax.smc import resampling

from bayes_smlm.forward import physics
from bayes_smlm.forward.config import Task
from bayes_smlm.forward.distributions import uniform_disc_points
from bayes_smlm.forward.model import make_rate_log_likelihood

TARGET_ACCEPT = 0.65  # HMC acceptance the step size is tuned towards
FIRST_STEP_SIZE = 0.1  # unconstrained units (the disc's radius is ≈ 1 there)


class SMCRun(NamedTuple):
    """Outcome of one run on one frame.

    Attributes
    ----------
    theta : (P, n, 2) array
        Final particles, LR px.
    log_weights : (P,) array
        Their normalised log weights (the posterior is the weighted particle cloud).
    log_evidence : scalar
        log Z estimate, up to the frame's constant (see
        :func:`~bayes_smlm.forward.model.frame_constant`), nats.
    steps : int scalar
        Tempering steps taken.
    reached_one : bool scalar
        Whether λ reached 1 within the step limit (else the run is not a posterior).
    acceptance : scalar
        Mean HMC acceptance of the last step's moves.
    """

    theta: jax.Array
    log_weights: jax.Array
    log_evidence: jax.Array
    steps: jax.Array
    reached_one: jax.Array
    acceptance: jax.Array


def smc_run(
    task: Task,
    n_emitters: int,
    *,
    particles: int,
    mcmc_steps: int,
    integration_steps: int,
    target_ess: float,
    max_steps: int,
    likelihood: str = "poisson",
) -> Callable[[jax.Array, jax.Array], SMCRun]:
    """Pure ``(key, adu (H, W)) -> SMCRun`` for ``n_emitters`` ≥ 1 emitters, i0 and b at the
    task's values.

    Parameters
    ----------
    particles : int
        Particles per run.
    mcmc_steps, integration_steps : int
        HMC moves per tempering step, and leapfrog steps per move.
    target_ess : float
        Share of the particles' ESS each tempering step keeps, in (0, 1).
    max_steps : int
        Most tempering steps (a run that has not reached λ = 1 is reported, not used).
    """
    from bayes_smlm.methods.nuts import prior_transform

    transform = prior_transform(task)
    prepare, loglik = make_rate_log_likelihood(task, likelihood=likelihood)
    scene = physics.scene_arrays(task)
    prior = task.prior
    log_area = float(jnp.log(jnp.pi * prior.radius**2))
    centre = jnp.asarray(task.centre, jnp.float32)
    latent = prior.brightness == "drawn"
    positions = 2 * n_emitters
    dim = positions + (n_emitters + 1 if latent else 0)
    low = jnp.asarray([prior.i0_range[0]] * n_emitters + [prior.background_range[0]])
    width = jnp.asarray(
        [prior.i0_range[1] - prior.i0_range[0]] * n_emitters
        + [prior.background_range[1] - prior.background_range[0]]
    )
    hmc = blackjax.hmc.build_kernel()

    def brightness(u: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(i0 (n,), b) of an unconstrained particle: the task's, or its latent values."""
        if not latent:
            return scene.i0, scene.background
        values = low + width * jax.nn.sigmoid(u[positions:])
        return values[:n_emitters], values[n_emitters]

    def log_prior(u: jax.Array) -> jax.Array:
        v = u[:positions].reshape(n_emitters, 2)
        value = jnp.sum(transform.log_abs_det_jacobian(v, transform(v))) - n_emitters * log_area
        if latent:  # uniform on each range: the logit's density is σ(v)(1 − σ(v))
            value = value + jnp.sum(
                jax.nn.log_sigmoid(u[positions:]) + jax.nn.log_sigmoid(-u[positions:])
            )
        return value

    def move(key, state, logdensity, step_size, inverse_mass_matrix):
        state, info = hmc(key, state, logdensity, step_size, inverse_mass_matrix, integration_steps)
        # the step size rides along in the info so the tuning below can scale it
        return state, (
            info.acceptance_rate,
            jnp.broadcast_to(step_size, info.acceptance_rate.shape),
        )

    def tuned(key, state, info) -> dict[str, jax.Array]:
        acceptance, step_size = info.update_info
        new = step_size.mean() * jnp.exp(2.0 * (acceptance.mean() - TARGET_ACCEPT))
        mass = jnp.ones((1, dim))
        if latent:  # the particles' weighted variance per coordinate, scaled to mean 1
            mean = state.weights @ state.particles
            spread = state.weights @ (state.particles - mean) ** 2
            mass = (spread / jnp.mean(spread))[None]  # the step size keeps the overall scale
        return {"step_size": new[None], "inverse_mass_matrix": mass}

    def run(key: jax.Array, adu: jax.Array) -> SMCRun:
        data = prepare(adu)

        def log_likelihood(u: jax.Array) -> jax.Array:
            theta = transform(u[:positions].reshape(n_emitters, 2))
            i0, background = brightness(u)
            omega = physics.expected_photons(
                theta, i0, background, task.optics.sigma_psf, task.shape
            )
            return loglik(omega, data)

        sampler = blackjax.inner_kernel_tuning(
            smc_algorithm=blackjax.adaptive_tempered_smc,
            logprior_fn=log_prior,
            loglikelihood_fn=log_likelihood,
            mcmc_step_fn=move,
            mcmc_init_fn=blackjax.hmc.init,
            resampling_fn=resampling.systematic,
            mcmc_parameter_update_fn=tuned,
            initial_parameter_value={
                "step_size": jnp.full((1,), FIRST_STEP_SIZE),
                "inverse_mass_matrix": jnp.ones((1, dim)),
            },
            num_mcmc_steps=mcmc_steps,
            target_ess=target_ess,
        )
        k_init, k_run = jax.random.split(key)
        start = uniform_disc_points(k_init, (particles, n_emitters), centre, prior.radius)
        start = transform.inv(start).reshape(particles, positions)
        if latent:  # the logit of a uniform draw is standard logistic
            start = jnp.concatenate(
                [
                    start,
                    jax.random.logistic(jax.random.fold_in(k_init, 1), (particles, n_emitters + 1)),
                ],
                1,
            )
        state = sampler.init(start)

        def going(carry) -> jax.Array:
            state, _, steps, _, _ = carry
            return (state.sampler_state.tempering_param < 1.0) & (steps < max_steps)

        def step(carry):
            state, log_z, steps, k, _ = carry
            k, k_step = jax.random.split(k)
            state, info = sampler.step(k_step, state)
            return (
                state,
                log_z + info.log_likelihood_increment,
                steps + 1,
                k,
                jnp.mean(info.update_info[0]),
            )

        state, log_z, steps, _, acceptance = jax.lax.while_loop(
            going, step, (state, jnp.zeros(()), jnp.zeros((), jnp.int32), k_run, jnp.zeros(()))
        )
        final = state.sampler_state
        theta = transform(final.particles[:, :positions].reshape(particles, n_emitters, 2))
        return SMCRun(
            theta, jnp.log(final.weights), log_z, steps, final.tempering_param >= 1.0, acceptance
        )

    return run


def resample_draws(key: jax.Array, run: SMCRun, draws: int) -> jax.Array:
    """(draws, n, 2) equally weighted draws from a run's weighted particles (systematic
    resampling, which adds the least Monte Carlo noise of the standard schemes)."""
    index = resampling.systematic(key, jnp.exp(run.log_weights), draws)
    return run.theta[index]


__all__ = ["SMCRun", "resample_draws", "smc_run"]
