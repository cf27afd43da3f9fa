"""Shared driver of the MCMC methods: chains × frames vmapped inside one jit per frame batch.

A sampler supplies ``sample_chain(key, init, logdensity) -> (positions (D, N, 2), stats)`` with
``stats`` a dict of (D,) arrays; this module starts chains from the data, runs every chain of
every frame of a batch in one compiled call, aligns emitter labels, pushes the draws through the
KDE and returns a :class:`PosteriorResult`.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from bayes_smlm.forward.config import Task, check_int
from bayes_smlm.forward.frames import validate_frames
from bayes_smlm.methods.batching import map_frame_batches
from bayes_smlm.methods.initialization import chain_starts
from bayes_smlm.methods.pushforward import kde_moments
from bayes_smlm.methods.relabel import align_labels
from bayes_smlm.methods.result import PosteriorResult
from bayes_smlm.parallel import device_parallel

ChainSampler = Callable[[jax.Array, jax.Array, Callable[[jax.Array], jax.Array]],
                        tuple[jax.Array, dict[str, jax.Array]]]


def run_mcmc(method: str, task: Task, adu: np.ndarray, *, sample_chain: ChainSampler,
             logdensity: Callable[[jax.Array, jax.Array], jax.Array],
             prepare: Callable[[jax.Array], jax.Array] = lambda adu: adu,
             transform: Any = None, seed: int, chains: int,
             batch_size: int | None, progress: bool, settings: dict[str, Any],
             theta_true: np.ndarray | None = None) -> PosteriorResult:
    """Run ``sample_chain`` on every (frame, chain) and assemble the result.

    Parameters
    ----------
    logdensity : callable
        ``(theta (N, 2), data) -> log density`` (the sampler's target, −inf off support).
    prepare : callable
        ``adu (H, W) -> data`` computed once per frame (e.g. photon counts).
    batch_size : int or None
        Frames per compiled call (rounded up to a multiple of the devices); None: one per device.
    transform : numpyro Transform, optional
        Bijection from the sampler's unconstrained space to pixel space. When given, chains run
        on ``u`` with target ``logdensity(T(u)) + log|det J_T(u)|`` and draws are mapped back.
    """
    adu = validate_frames(task, adu)
    chains = check_int("chains", chains, lo=1)

    def one_frame(key: jax.Array, frame: jax.Array) -> tuple[jax.Array, ...]:
        k_init, k_run = jax.random.split(key)
        starts = chain_starts(k_init, task, frame, chains)
        data = prepare(frame)
        if transform is None:
            target = lambda theta: logdensity(theta, data)  # noqa: E731
        else:
            def target(u: jax.Array) -> jax.Array:
                theta = transform(u)
                return logdensity(theta, data) + jnp.sum(transform.log_abs_det_jacobian(u, theta))
            starts = transform.inv(starts)
        positions, stats = jax.vmap(lambda k, s: sample_chain(k, s, target))(
            jax.random.split(k_run, chains), starts)
        if transform is not None:
            positions = transform(positions)
        return positions, stats

    batched, n_devices = device_parallel(jax.vmap(one_frame))
    keys = np.asarray(jax.random.split(jax.random.PRNGKey(seed), adu.shape[0]))
    start = time.perf_counter()
    batch_size = batch_size or n_devices  # None: one frame per device
    positions, stats = map_frame_batches(batched, (keys, adu), batch_size, progress=progress,
                                         desc=method, multiple_of=n_devices)
    positions = np.moveaxis(positions, 0, 2)                 # (F, C, D, …) -> (C, D, F, N, 2)
    stats = {name: np.moveaxis(arr, 0, 2) for name, arr in stats.items()}
    if task.prior.n_emitters > 1:
        positions = align_labels(positions)
    f = adu.shape[0]
    c, d = positions.shape[:2]
    flat = np.moveaxis(positions, 2, 0).reshape(f, c * d, task.prior.n_emitters, 2)
    kde_mean, kde_var = kde_moments(flat, task)
    seconds = time.perf_counter() - start
    return PosteriorResult(method=method, task=task, adu=adu, kde_mean=kde_mean, kde_var=kde_var,
                           theta=positions, sample_stats=stats,
                           settings={**settings, "chains": chains, "seed": seed,
                                     "host_devices": n_devices},
                           seconds=seconds, theta_true=theta_true)
