"""``nuts``: BlackJAX NUTS with Stan-style window adaptation, per chain, in pixel space."""

from __future__ import annotations

from typing import Any

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.base import get_filter_adapt_info_fn
from numpyro.distributions.transforms import biject_to

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.checks import check_int
from bayes_smlm.forward.config import Task
from bayes_smlm.forward.distributions import UniformDisc
from bayes_smlm.forward.fisher import fisher_information
from bayes_smlm.forward.model import make_sampler_log_density
from bayes_smlm.methods.mcmc import per_chain, run_mcmc
from bayes_smlm.methods.registry import register_method, reject_unknown_options
from bayes_smlm.methods.result import PosteriorResult


def nuts_chain(
    num_warmup: int,
    num_draws: int,
    target_accept: float,
    max_tree_depth: int,
    initial_inverse_mass: jax.Array,
):
    """One chain for :func:`run_mcmc` (through :func:`per_chain`): warm-up (step size +
    diagonal mass, started from ``initial_inverse_mass``), then draws."""

    def sample_chain(key, init, logdensity):
        k_warm, k_draw = jax.random.split(key)
        warmup = blackjax.window_adaptation(
            blackjax.nuts,
            logdensity,
            target_acceptance_rate=target_accept,
            initial_inverse_mass_matrix=initial_inverse_mass,
            initial_step_size=0.5,
            adaptation_info_fn=get_filter_adapt_info_fn(),
            max_num_doublings=max_tree_depth,
        )
        (state, params), _ = warmup.run(k_warm, init, num_steps=num_warmup)
        kernel = blackjax.nuts(logdensity, **params)  # params carry max_num_doublings

        def step(state, k):
            state, info = kernel.step(k, state)
            return state, (
                state.position,
                info.acceptance_rate,
                info.is_divergent,
                info.num_trajectory_expansions,
                info.num_integration_steps,
            )

        _, (pos, acc, div, depth, n_steps) = jax.lax.scan(
            step, state, jax.random.split(k_draw, num_draws)
        )
        step_size = jnp.full((num_draws,), params["step_size"])
        return pos, {
            "acceptance_rate": acc,
            "diverging": div,
            "tree_depth": depth,
            "n_steps": n_steps,
            "step_size": step_size,
        }

    return sample_chain


def prior_transform(task: Task):
    """The bijection R² → prior disc (per emitter) that NUTS samples through."""
    return biject_to(UniformDisc(jnp.asarray(task.centre, jnp.float32), task.prior.radius).support)


def crlb_inverse_mass(task: Task) -> jax.Array:
    """Diagonal inverse mass (2N,) in the sampler's unconstrained coordinates: the CRLB variance
    of an isolated emitter at the frame centre, divided by R² (the transform's slope there), so
    adaptation starts near its answer."""
    var = (
        float(np.max(fisher_information(task, np.asarray([task.centre])).sd) ** 2)
        / task.prior.radius**2
    )
    return jnp.full((2 * task.prior.n_emitters,), var, jnp.float32)


@register_method("nuts")
def nuts_posterior(
    task: Task,
    adu: np.ndarray,
    *,
    seed: int = 0,
    chains: int = 4,
    draws: int = 1000,
    progress: bool = False,
    warmup: int = 300,
    target_accept: float = 0.7,
    max_tree_depth: int = 10,
    likelihood: str = "poisson",
    batch_size: int | None = None,
    init: str = "detect",
    first_frame: int = 0,
    theta_true: np.ndarray | None = None,
    **unknown: Any,
) -> PosteriorResult:
    """NUTS on log p(θ | x) with the task's disc prior, i0 and b fixed.

    Chains run in unconstrained coordinates u with θ = c + R tanh(|u|) u/|u| per emitter (the
    NumPyro bijection of the disc prior) plus its log-Jacobian: a hard −inf wall at the disc edge
    would make every trajectory that reaches it diverge, shrink the adapted step size and stall
    the vmapped batch. Draws are reported in pixel space.

    Parameters
    ----------
    warmup : int
        Window-adaptation steps per chain (discarded); started from the CRLB scale, a few
        hundred suffice for one emitter.
    batch_size : int or None
        Frames per compiled call, split across the CPU devices (:mod:`bayes_smlm.parallel`);
        None: one frame per CPU device, 1024 on a GPU. Vmapped NUTS runs its lanes in lockstep
        (every leapfrog iteration costs the deepest tree of the batch, and chains of different
        frames adapt different step sizes), so one frame per device is fastest on a CPU
        (measured: 2 frames per device cost ≈ 20 % more).
    target_accept : float
        Target acceptance of the step-size adaptation, in (0, 1). 0.7 rather than Stan's 0.8: on
        these low-dimensional, near-Gaussian posteriors the larger step takes ≈ 20 % fewer
        leapfrog steps per draw. Measured here: isolated, 256/256 frames pass R-hat ≤ 1.01 and
        bulk ESS ≥ 400 (reports/bench-exact); paper, 97/100 frames of seed 0
        (reports/paper-diagnostics; 99/100 at 0.8) and 99/100 of seed 1.
    max_tree_depth : int
        Maximum trajectory doublings.
    init : {"detect", "laplace"}
        ``detect``: chains start at the greedy detections, adaptation from the CRLB scale.
        ``laplace``: chains sample coordinates whitened by each frame's Laplace fit (mass matrix
        = each emitter's block of the inverse Hessian, :mod:`bayes_smlm.methods.whitening`) from
        over-dispersed
        Laplace starts, adaptation from the identity; the draws are still NUTS's.
    first_frame : int
        Index of ``adu[0]`` in the whole movie, for the per-frame seeds (as in
        :func:`~bayes_smlm.methods.mcmc.run_mcmc`): a shard reproduces the whole run.
    """
    reject_unknown_options("nuts", unknown)
    draws = check_int("draws", draws)
    warmup = check_int("warmup", warmup, lo=10)
    if not 0 < target_accept < 1:
        raise ConfigError("target_accept", f"must be in (0, 1) (got {target_accept})")
    prepare, logdensity = make_sampler_log_density(task, likelihood=likelihood)
    inverse_mass = (
        jnp.ones(2 * task.prior.n_emitters, jnp.float32)
        if init == "laplace"
        else crlb_inverse_mass(task)
    )
    return run_mcmc(
        "nuts",
        task,
        adu,
        seed=seed,
        chains=chains,
        batch_size=batch_size,
        progress=progress,
        sample_chains=per_chain(
            nuts_chain(warmup, draws, target_accept, max_tree_depth, inverse_mass)
        ),
        logdensity=logdensity,
        prepare=prepare,
        transform=prior_transform(task),
        init=init,
        first_frame=first_frame,
        reuse_program=True,
        settings={
            "draws": draws,
            "warmup": warmup,
            "target_accept": target_accept,
            "max_tree_depth": max_tree_depth,
            "likelihood": likelihood,
        },
        theta_true=theta_true,
    )
