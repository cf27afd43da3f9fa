"""``chees``: ChEES-HMC (BlackJAX) — jittered-length HMC tuned across a frame's chains, started
from each frame's Laplace fit.

NUTS builds each trajectory by doubling until it turns back: a data-dependent while-loop per
draw, and vmapped lanes wait for the deepest tree of the batch. ChEES-HMC (Hoffman, Radul &
Sountsov 2021) instead runs plain HMC whose trajectory length is tuned during warm-up by
maximising the change in the chains' squared distance from their mean, and jittered per draw
(a Halton sequence) so that no fixed length resonates with the target. All chains of a frame
share one step size and length, so they stay in lockstep. After warm-up both are frozen: each
chain is then a fixed, reversible HMC kernel that leaves the posterior invariant — exact, like
NUTS, and checked against ``grid`` the same way.

Chains run in the prior's unconstrained coordinates (as ``nuts``) whitened by the frame's
Laplace fit (:mod:`bayes_smlm.methods.whitening`), where the target is ≈ N(0, I): the warm-up
starts at the right scale and is short.
"""

from __future__ import annotations

from typing import Any

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from blackjax.adaptation.base import get_filter_adapt_info_fn

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.checks import check_int
from bayes_smlm.forward.config import Task
from bayes_smlm.forward.model import make_sampler_log_density
from bayes_smlm.methods.mcmc import run_mcmc
from bayes_smlm.methods.nuts import prior_transform
from bayes_smlm.methods.registry import register_method, reject_unknown_options
from bayes_smlm.methods.result import PosteriorResult

INITIAL_STEP_SIZE = 1.0  # whitened coordinates: the target's scale is ≈ 1
LEARNING_RATE = 0.05  # Adam's, for the log trajectory length (the ChEES paper's value)


def chees_chains(num_warmup: int, num_draws: int, target_accept: float, max_leapfrog: int):
    """All chains of one frame for :func:`run_mcmc`: ChEES warm-up across them, then draws with
    the frozen step size and jittered trajectory length."""

    def sample_chains(key, starts, target):
        k_warm, k_draw = jax.random.split(key)
        chains = starts.shape[0]
        warmup = blackjax.chees_adaptation(
            target,
            chains,
            target_acceptance_rate=target_accept,
            max_leapfrog_steps=max_leapfrog,
            adaptation_info_fn=get_filter_adapt_info_fn(),
        )
        (states, params), _ = warmup.run(
            k_warm,
            starts,
            INITIAL_STEP_SIZE,
            optax.adam(LEARNING_RATE),
            num_warmup,
            max_sampling_steps=num_draws,
        )
        kernel = blackjax.dynamic_hmc(target, **params)

        def step(states, k):
            states, info = jax.vmap(kernel.step)(jax.random.split(k, chains), states)
            return states, (
                states.position,
                info.acceptance_rate,
                info.is_divergent,
                info.num_integration_steps,
            )

        _, (pos, acc, div, n_steps) = jax.lax.scan(
            step, states, jax.random.split(k_draw, num_draws)
        )
        step_size = jnp.full((chains, num_draws), params["step_size"])
        stats = {"acceptance_rate": acc, "diverging": div, "n_steps": n_steps}
        return jnp.swapaxes(pos, 0, 1), {
            **{k: v.T for k, v in stats.items()},
            "step_size": step_size,
        }

    return sample_chains


@register_method("chees")
def chees_posterior(
    task: Task,
    adu: np.ndarray,
    *,
    seed: int = 0,
    chains: int = 4,
    draws: int = 1000,
    progress: bool = False,
    warmup: int = 200,
    target_accept: float = 0.8,
    max_leapfrog: int = 100,
    likelihood: str = "poisson",
    batch_size: int | None = None,
    first_frame: int = 0,
    theta_true: np.ndarray | None = None,
    **unknown: Any,
) -> PosteriorResult:
    """ChEES-HMC on log p(θ | x) with the task's disc prior, i0 and b fixed.

    Parameters
    ----------
    chains : int
        Chains per frame, ≥ 2: the warm-up tunes the trajectory length across them (more
        chains, better tuning; 4 suffice on the whitened targets here).
    warmup : int
        ChEES adaptation steps per frame (discarded).
    target_accept : float
        Target of the step-size adaptation, in (0, 1); 0.651 is optimal for HMC in high
        dimension (the ChEES default).
    max_leapfrog : int
        Cap on the trajectory's leapfrog steps.
    batch_size : int or None
        Frames per compiled call, split across the CPU devices; None: 16 per CPU device (lanes
        of a batch run trajectories of similar length, unlike NUTS's), 1024 on a GPU.
    first_frame : int
        Index of ``adu[0]`` in the whole movie, for the per-frame seeds (as in
        :func:`~bayes_smlm.methods.mcmc.run_mcmc`).
    """
    reject_unknown_options("chees", unknown)
    draws = check_int("draws", draws)
    warmup = check_int("warmup", warmup, lo=10)
    chains = check_int("chains", chains, lo=2)
    max_leapfrog = check_int("max_leapfrog", max_leapfrog)
    if not 0 < target_accept < 1:
        raise ConfigError("target_accept", f"must be in (0, 1) (got {target_accept})")
    prepare, logdensity = make_sampler_log_density(task, likelihood=likelihood)
    return run_mcmc(
        "chees",
        task,
        adu,
        seed=seed,
        chains=chains,
        batch_size=batch_size,
        progress=progress,
        sample_chains=chees_chains(warmup, draws, target_accept, max_leapfrog),
        logdensity=logdensity,
        prepare=prepare,
        transform=prior_transform(task),
        init="laplace",
        frames_per_cpu_device=16,
        first_frame=first_frame,
        reuse_program=True,
        settings={
            "draws": draws,
            "warmup": warmup,
            "target_accept": target_accept,
            "max_leapfrog": max_leapfrog,
            "likelihood": likelihood,
        },
        theta_true=theta_true,
    )
