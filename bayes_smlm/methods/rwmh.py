"""``rwmh`` and ``rwmh_paper``: BlackJAX random-walk Metropolis–Hastings in pixel space.

``rwmh`` targets the posterior (β = 1) with the task's disc prior. ``rwmh_paper`` reproduces
appendix A.2 exactly — 10⁴ steps, 10³ burn-in, proposal variance 0.05 px², a flat prior over the
frame and the acceptance ``exp(β(ℓ(θ) − ℓ(θ')))`` with β = 0.2 — which samples p(θ | x)^0.2, a
posterior √5 ≈ 2.24× too wide (docs/conventions.md §3.1). It is kept to show that inflation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import blackjax
import jax
import jax.numpy as jnp
import numpy as np

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.checks import check_int
from bayes_smlm.forward.config import Task
from bayes_smlm.forward.model import make_log_likelihood, make_sampler_log_density
from bayes_smlm.methods.mcmc import per_chain, run_mcmc
from bayes_smlm.methods.registry import register_method, reject_unknown_options
from bayes_smlm.methods.result import PosteriorResult


def rwmh_chain(proposal_var: float, steps: int, burn_in: int, num_draws: int):
    """One chain for :func:`run_mcmc` (through :func:`per_chain`): ``steps`` RWMH steps, the
    first ``burn_in`` dropped, ``num_draws`` kept evenly thinned from the rest."""
    thin = max(1, (steps - burn_in) // num_draws)
    sigma = math.sqrt(proposal_var)

    def sample_chain(key, init, logdensity):
        kernel = blackjax.normal_random_walk(logdensity, sigma)
        state = kernel.init(init)

        def step(state, k):
            state, info = kernel.step(k, state)
            return state, (info.acceptance_rate, info.is_accepted)

        def block(state, k):  # `thin` steps, keep the last state
            state, (acc, _) = jax.lax.scan(step, state, jax.random.split(k, thin))
            return state, (state.position, jnp.mean(acc))

        k_burn, k_keep = jax.random.split(key)
        state, _ = jax.lax.scan(step, state, jax.random.split(k_burn, burn_in))
        _, (pos, acc) = jax.lax.scan(block, state, jax.random.split(k_keep, num_draws))
        return pos, {"acceptance_rate": acc}

    return sample_chain


def _check_settings(proposal_var: float, steps: int, burn_in: int, draws: int, beta: float) -> None:
    if not (
        isinstance(proposal_var, (int, float)) and proposal_var > 0 and math.isfinite(proposal_var)
    ):
        raise ConfigError("proposal_var", f"must be > 0 px² (got {proposal_var!r})")
    check_int("steps", steps)
    check_int("burn_in", burn_in, lo=0)
    check_int("draws", draws)
    if steps - burn_in < draws:
        raise ConfigError("draws", f"must be <= steps - burn_in = {steps - burn_in} (got {draws})")
    if not 0 < beta <= 1:
        raise ConfigError("beta", f"must be in (0, 1] (got {beta})")


def _frame_box_log_prior(task: Task) -> Callable[[jax.Array], jax.Array]:
    """Flat prior over the frame, as in appendix A.2: 0 inside, −inf outside."""

    def log_prior(theta: jax.Array) -> jax.Array:
        inside = (
            (theta[:, 0] >= -0.5)
            & (theta[:, 0] <= task.width - 0.5)
            & (theta[:, 1] >= -0.5)
            & (theta[:, 1] <= task.height - 0.5)
        )
        return jnp.where(jnp.all(inside), 0.0, -jnp.inf)

    return log_prior


def _run(
    method: str,
    task: Task,
    adu: np.ndarray,
    logdensity,
    *,
    seed,
    chains,
    draws,
    steps,
    burn_in,
    proposal_var,
    beta,
    progress,
    batch_size,
    theta_true,
    extra_settings,
    first_frame=0,
    prepare=lambda adu: adu,
):
    _check_settings(proposal_var, steps, burn_in, draws, beta)
    return run_mcmc(
        method,
        task,
        adu,
        seed=seed,
        chains=chains,
        batch_size=batch_size,
        progress=progress,
        first_frame=first_frame,
        reuse_program=True,
        sample_chains=per_chain(rwmh_chain(proposal_var, steps, burn_in, draws)),
        logdensity=logdensity,
        prepare=prepare,
        settings={
            "draws": draws,
            "steps": steps,
            "burn_in": burn_in,
            "proposal_var": proposal_var,
            "beta": beta,
            **extra_settings,
        },
        theta_true=theta_true,
    )


@register_method("rwmh")
def rwmh_posterior(
    task: Task,
    adu: np.ndarray,
    *,
    seed: int = 0,
    chains: int = 4,
    draws: int = 1000,
    progress: bool = False,
    steps: int = 20000,
    burn_in: int = 2000,
    proposal_var: float = 0.03,
    likelihood: str = "poisson",
    batch_size: int = 64,
    first_frame: int = 0,
    theta_true: np.ndarray | None = None,
    **unknown: Any,
) -> PosteriorResult:
    """Random-walk MH on log p(θ | x) (β = 1, the task's disc prior).

    Parameters
    ----------
    steps, burn_in : int
        Total steps per chain and the initial steps discarded.
    proposal_var : float
        Variance of the isotropic Gaussian proposal per coordinate, px². The default suits one
        emitter at i0 ≈ 200 (≈ (2.4/√2 · √CRLB)², acceptance ≈ 0.35).
    """
    reject_unknown_options("rwmh", unknown)
    prepare, logdensity = make_sampler_log_density(task, likelihood=likelihood)
    return _run(
        "rwmh",
        task,
        adu,
        logdensity,
        prepare=prepare,
        seed=seed,
        chains=chains,
        draws=draws,
        steps=steps,
        burn_in=burn_in,
        proposal_var=proposal_var,
        beta=1.0,
        progress=progress,
        batch_size=batch_size,
        first_frame=first_frame,
        theta_true=theta_true,
        extra_settings={"likelihood": likelihood, "prior": "disc"},
    )


@register_method("rwmh_paper")
def rwmh_paper_posterior(
    task: Task,
    adu: np.ndarray,
    *,
    seed: int = 0,
    chains: int = 4,
    draws: int = 1000,
    progress: bool = False,
    steps: int = 10000,
    burn_in: int = 1000,
    proposal_var: float = 0.05,
    beta: float = 0.2,
    batch_size: int = 64,
    first_frame: int = 0,
    theta_true: np.ndarray | None = None,
    **unknown: Any,
) -> PosteriorResult:
    """The paper's sampler (appendix A.2): tempered target β·ℓ(θ) with a flat prior on the frame.

    With β = 0.2 the chain samples p(θ | x)^β, whose SD is 1/√β ≈ 2.24× the posterior's.
    """
    reject_unknown_options("rwmh_paper", unknown)
    loglik = make_log_likelihood(task, likelihood="poisson")
    log_prior = _frame_box_log_prior(task)
    target = lambda t, a: log_prior(t) + beta * loglik(t, a)  # noqa: E731
    return _run(
        "rwmh_paper",
        task,
        adu,
        target,
        seed=seed,
        chains=chains,
        draws=draws,
        steps=steps,
        burn_in=burn_in,
        proposal_var=proposal_var,
        beta=beta,
        progress=progress,
        batch_size=batch_size,
        first_frame=first_frame,
        theta_true=theta_true,
        extra_settings={"likelihood": "poisson", "prior": "flat over the frame"},
    )
