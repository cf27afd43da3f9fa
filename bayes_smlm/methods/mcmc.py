"""Shared driver of the MCMC methods: chains × frames vmapped inside one jit per frame batch.

A sampler supplies ``sample_chains(key, starts (C, …), target) -> (positions (C, D, …), stats)``
with ``stats`` a dict of (C, D) arrays — all chains of one frame at once, so that ensemble
samplers (ChEES) can adapt across them; :func:`per_chain` turns a one-chain sampler into one.
This module starts chains from the data (or from each frame's Laplace fit,
:mod:`bayes_smlm.methods.whitening`), runs every chain of every frame of a batch in one compiled
call, aligns emitter labels, pushes the draws through the KDE and returns a
:class:`PosteriorResult`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.checks import check_int
from bayes_smlm.forward.config import Task
from bayes_smlm.forward.count_prior import require_fixed_count
from bayes_smlm.forward.frames import validate_frames
from bayes_smlm.methods.batching import frame_keys, map_frame_batches
from bayes_smlm.methods.initialization import chain_starts
from bayes_smlm.methods.laplace import position_fit
from bayes_smlm.methods.pushforward import kde_moments
from bayes_smlm.methods.registry import require_fixed_brightness
from bayes_smlm.methods.relabel import align_labels
from bayes_smlm.methods.result import PosteriorResult
from bayes_smlm.methods.whitening import (
    laplace_starts,
    laplace_whitening,
    unwhiten,
    whitened_target,
)
from bayes_smlm.parallel import device_parallel

ChainSampler = Callable[
    [jax.Array, jax.Array, Callable[[jax.Array], jax.Array]], tuple[jax.Array, dict[str, jax.Array]]
]
INITS = ("detect", "laplace")  # where chains start (module docstring)
ACCELERATOR_BATCH = 1024  # frames per compiled call on a GPU (lockstep lanes are cheap there)
KEPT_PROGRAMS = 8  # traced samplers kept per process for reuse_program
_PROGRAMS: dict[tuple, tuple[Callable[..., Any], int]] = {}


def per_chain(sample_chain: ChainSampler) -> ChainSampler:
    """An ensemble sampler that runs ``sample_chain(key, init, target)`` on each chain alone."""

    def sample_chains(key, starts, target):
        keys = jax.random.split(key, starts.shape[0])
        return jax.vmap(lambda k, s: sample_chain(k, s, target))(keys, starts)

    return sample_chains


def run_mcmc(
    method: str,
    task: Task,
    adu: np.ndarray,
    *,
    sample_chains: ChainSampler,
    logdensity: Callable[[jax.Array, jax.Array], jax.Array],
    prepare: Callable[[jax.Array], jax.Array] = lambda adu: adu,
    transform: Any = None,
    seed: int,
    chains: int,
    batch_size: int | None,
    progress: bool,
    settings: dict[str, Any],
    init: str = "detect",
    frames_per_cpu_device: int = 1,
    first_frame: int = 0,
    reuse_program: bool = False,
    theta_true: np.ndarray | None = None,
) -> PosteriorResult:
    """Run ``sample_chains`` on the chains of every frame and assemble the result.

    Parameters
    ----------
    logdensity : callable
        ``(theta (N, 2), data) -> log density`` (the sampler's target, −inf off support).
    prepare : callable
        ``adu (H, W) -> data`` computed once per frame (e.g. photon counts).
    batch_size : int or None
        Frames per compiled call (rounded up to a multiple of the devices); None:
        ``frames_per_cpu_device`` per CPU device, :data:`ACCELERATOR_BATCH` on a GPU.
    transform : numpyro Transform, optional
        Bijection from the sampler's unconstrained space to pixel space. When given, chains run
        on ``u`` with target ``logdensity(T(u)) + log|det J_T(u)|`` and draws are mapped back.
    init : {"detect", "laplace"}
        ``detect``: chains start near the greedy detections (:mod:`.initialization`) in the
        sampler's coordinates. ``laplace``: each frame's Laplace fit runs first (in the same
        compiled call) and the chains sample coordinates whitened by it, started over-dispersed
        from its Gaussian (:mod:`.whitening`); samplers then see ≈ N(0, I).
    first_frame : int
        Index of ``adu[0]`` in the whole movie: frame ``i`` is seeded by ``(seed, first_frame +
        i)`` (:func:`~bayes_smlm.methods.batching.frame_keys`), so a shard reproduces the whole
        run's draws of its frames.
    reuse_program : bool
        Keep the traced, compiled sampler of this call in the process and reuse it in a later
        call with the same ``method``, ``settings``, task, chains and init (tracing NUTS costs
        ≈ 5 s, once per chunk of a chunked run otherwise). Only for callers whose ``settings``
        and task determine ``sample_chains``, ``logdensity``, ``prepare`` and ``transform``
        entirely, as the built-in methods' do.
    """
    require_fixed_count(task, method)
    require_fixed_brightness(task, method)
    adu = validate_frames(task, adu)
    chains = check_int("chains", chains, lo=1)
    if init not in INITS:
        raise ConfigError("init", f"must be one of {', '.join(INITS)} (got {init!r})")
    shape = (task.prior.n_emitters, 2)
    fit_frame = position_fit(task) if init == "laplace" else None

    def one_frame(key: jax.Array, frame: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        k_init, k_run = jax.random.split(key)
        data = prepare(frame)
        if transform is None:
            target = lambda u: logdensity(u, data)  # noqa: E731
        else:

            def target(u: jax.Array) -> jax.Array:
                theta = transform(u)
                return logdensity(theta, data) + jnp.sum(transform.log_abs_det_jacobian(u, theta))

        if fit_frame is None:
            starts = chain_starts(k_init, task, frame, chains)
            if transform is not None:
                starts = transform.inv(starts)
            positions, stats = sample_chains(k_run, starts, target)
        else:
            mode, covariance = fit_frame(frame)
            u0, lower = laplace_whitening(task, transform, mode, covariance)
            z, stats = sample_chains(
                k_run,
                laplace_starts(k_init, chains, u0.shape[0]),
                whitened_target(target, u0, lower, shape),
            )
            positions = unwhiten(z, u0, lower, shape)
        if transform is not None:
            positions = transform(positions)
        return positions, stats

    program = (method, json.dumps(settings, sort_keys=True, default=str), task, chains, init)
    kept = _PROGRAMS.pop(program, None) if reuse_program else None
    batched, n_devices = kept or device_parallel(jax.vmap(one_frame))
    if reuse_program:
        _PROGRAMS[program] = batched, n_devices  # most recently used last
        while len(_PROGRAMS) > KEPT_PROGRAMS:
            _PROGRAMS.pop(next(iter(_PROGRAMS)))
    keys = frame_keys(seed, adu.shape[0], first_frame)
    started = time.perf_counter()
    if batch_size is None:  # CPU: few frames per device; GPU: one call for many frames
        batch_size = (
            frames_per_cpu_device * n_devices
            if jax.default_backend() == "cpu"
            else ACCELERATOR_BATCH
        )
    positions, stats = map_frame_batches(
        batched, (keys, adu), batch_size, progress=progress, desc=method, multiple_of=n_devices
    )
    positions = np.moveaxis(positions, 0, 2)  # (F, C, D, …) -> (C, D, F, N, 2)
    stats = {name: np.moveaxis(arr, 0, 2) for name, arr in stats.items()}
    if task.prior.n_emitters > 1:
        positions = align_labels(positions)
    f = adu.shape[0]
    c, d = positions.shape[:2]
    flat = np.moveaxis(positions, 2, 0).reshape(f, c * d, task.prior.n_emitters, 2)
    kde_mean, kde_var = kde_moments(flat, task)
    seconds = time.perf_counter() - started
    return PosteriorResult(
        method=method,
        task=task,
        adu=adu,
        kde_mean=kde_mean,
        kde_var=kde_var,
        theta=positions,
        sample_stats=stats,
        settings={
            **settings,
            "chains": chains,
            "seed": seed,
            "init": init,
            "host_devices": n_devices,
        },
        seconds=seconds,
        theta_true=theta_true,
    )
