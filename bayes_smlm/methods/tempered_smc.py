"""One adaptive tempered SMC run of one frame (BlackJAX): particles, weights and log Z.

Particles start from the prior (each emitter uniform on the task's disc) and are carried to the
posterior through the tempered targets π(θ) p(x | θ)^λ, λ rising from 0 to 1 in steps chosen so
that each keeps ``target_ess`` of the particles' effective sample size
(``blackjax.adaptive_tempered_smc``). Between steps an HMC kernel (``blackjax.hmc``) moves them;
its step size is tuned from the acceptance of the previous step's moves
(``blackjax.inner_kernel_tuning``). The product of the mean incremental weights is an unbiased
estimate of the marginal likelihood Z = ∫ π(θ) p(x | θ) dθ.

Particles live in the unconstrained coordinates of the disc prior (the bijection NUTS uses,
:func:`bayes_smlm.methods.nuts.prior_transform`), so no move leaves the support. Everything here
is a pure function of (key, frame): vmap it over runs and frames.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

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


def smc_run(task: Task, n_emitters: int, *, particles: int, mcmc_steps: int,
            integration_steps: int, target_ess: float, max_steps: int,
            likelihood: str = "poisson") -> Callable[[jax.Array, jax.Array], SMCRun]:
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
    log_area = float(jnp.log(jnp.pi * task.prior.radius**2))
    centre = jnp.asarray(task.centre, jnp.float32)
    dim = 2 * n_emitters
    hmc = blackjax.hmc.build_kernel()

    def log_prior(u: jax.Array) -> jax.Array:
        u = u.reshape(n_emitters, 2)
        return jnp.sum(transform.log_abs_det_jacobian(u, transform(u))) - n_emitters * log_area

    def move(key, state, logdensity, step_size, inverse_mass_matrix):
        state, info = hmc(key, state, logdensity, step_size, inverse_mass_matrix,
                          integration_steps)
        # the step size rides along in the info so the tuning below can scale it
        return state, (info.acceptance_rate, jnp.broadcast_to(step_size, info.acceptance_rate.shape))

    def tuned(key, state, info) -> dict[str, jax.Array]:
        acceptance, step_size = info.update_info
        new = step_size.mean() * jnp.exp(2.0 * (acceptance.mean() - TARGET_ACCEPT))
        return {"step_size": new[None], "inverse_mass_matrix": jnp.ones((1, dim))}

    def run(key: jax.Array, adu: jax.Array) -> SMCRun:
        data = prepare(adu)

        def log_likelihood(u: jax.Array) -> jax.Array:
            theta = transform(u.reshape(n_emitters, 2))
            omega = physics.expected_photons(theta, scene.i0, scene.background,
                                             task.optics.sigma_psf, task.shape)
            return loglik(omega, data)

        sampler = blackjax.inner_kernel_tuning(
            smc_algorithm=blackjax.adaptive_tempered_smc, logprior_fn=log_prior,
            loglikelihood_fn=log_likelihood, mcmc_step_fn=move, mcmc_init_fn=blackjax.hmc.init,
            resampling_fn=resampling.systematic, mcmc_parameter_update_fn=tuned,
            initial_parameter_value={"step_size": jnp.full((1,), FIRST_STEP_SIZE),
                                     "inverse_mass_matrix": jnp.ones((1, dim))},
            num_mcmc_steps=mcmc_steps, target_ess=target_ess)
        k_init, k_run = jax.random.split(key)
        start = uniform_disc_points(k_init, (particles, n_emitters), centre,
                                    task.prior.radius)
        state = sampler.init(transform.inv(start).reshape(particles, dim))

        def going(carry) -> jax.Array:
            state, _, steps, _, _ = carry
            return (state.sampler_state.tempering_param < 1.0) & (steps < max_steps)

        def step(carry):
            state, log_z, steps, k, _ = carry
            k, k_step = jax.random.split(k)
            state, info = sampler.step(k_step, state)
            return (state, log_z + info.log_likelihood_increment, steps + 1, k,
                    jnp.mean(info.update_info[0]))

        state, log_z, steps, _, acceptance = jax.lax.while_loop(
            going, step, (state, jnp.zeros(()), jnp.zeros((), jnp.int32), k_run, jnp.zeros(())))
        final = state.sampler_state
        theta = transform(final.particles.reshape(particles, n_emitters, 2))
        return SMCRun(theta, jnp.log(final.weights), log_z, steps,
                      final.tempering_param >= 1.0, acceptance)

    return run


def resample_draws(key: jax.Array, run: SMCRun, draws: int) -> jax.Array:
    """(draws, n, 2) equally weighted draws from a run's weighted particles (systematic
    resampling, which adds the least Monte Carlo noise of the standard schemes)."""
    index = resampling.systematic(key, jnp.exp(run.log_weights), draws)
    return run.theta[index]


__all__ = ["SMCRun", "resample_draws", "smc_run"]
