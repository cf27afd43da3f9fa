"""Seeded, batched simulation of (ADU frame, θ, KDE) from a task.

Frame ``i`` of seed ``s`` is drawn with key ``fold_in(PRNGKey(s), i)``, so a frame does not depend
on how many frames are requested or how they are chunked, and the same seed gives the same frames
on every run. :func:`stream` yields fresh batches indefinitely for on-the-fly training.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward import physics
from bayes_smlm.forward.checks import check_int
from bayes_smlm.forward.config import Task
from bayes_smlm.forward.count_prior import count_is_drawn, count_maximum, count_sampler
from bayes_smlm.forward.distributions import uniform_disc_points

_STREAM_TAG = 0x5EED  # separates the training stream from `simulate` frames of the same seed


class SimBatch(NamedTuple):
    """A batch of simulated frames.

    adu : (F, H, W) float32, ADU.
    theta : (F, N, 2) float32, emitter (x, y) in LR pixels. Where ``prior.count`` draws the
        count, N is its maximum and the rows beyond a frame's count are NaN
        (:func:`~bayes_smlm.forward.count_prior.emitter_counts` counts the present ones).
    kde : (F, u·H, u·W) float32, the true KDE y0 of eq. 4.
    i0 : (F, N) float32, photons of each emitter (NaN where absent).
    background : (F,) float32, the frame's background, photons/px (a map's mean).
    """

    adu: np.ndarray
    theta: np.ndarray
    kde: np.ndarray
    i0: np.ndarray
    background: np.ndarray


def sample_positions(
    key: jax.Array, n_emitters: int, centre: tuple[float, float], radius: float
) -> jax.Array:
    """Draw N positions i.i.d. uniform on a disc; returns (N, 2) (x, y) in LR pixels."""
    return uniform_disc_points(key, (n_emitters,), centre, radius)


def make_brightness_sampler(task: Task) -> Callable[[jax.Array], tuple[jax.Array, jax.Array]]:
    """Pure function ``key -> (i0 (N,), background)`` of one frame, as ``prior.brightness``
    says: the task's fixed values (the key unused), or i0 ~ U(i0_range) per emitter and a scalar
    background ~ U(background_range)."""
    prior = task.prior
    scene = physics.scene_arrays(task)
    slots = count_maximum(prior)
    fixed_i0 = jnp.broadcast_to(scene.i0, (slots,))

    def fixed(key: jax.Array) -> tuple[jax.Array, jax.Array]:
        return fixed_i0, scene.background

    def drawn(key: jax.Array) -> tuple[jax.Array, jax.Array]:
        k_i0, k_b = jax.random.split(key)
        i0 = jax.random.uniform(k_i0, (slots,), minval=prior.i0_range[0], maxval=prior.i0_range[1])
        b = jax.random.uniform(
            k_b, (), minval=prior.background_range[0], maxval=prior.background_range[1]
        )
        return i0, b

    return drawn if prior.brightness == "drawn" else fixed


def make_frame_renderer(task: Task) -> Callable[..., tuple[jax.Array, jax.Array]]:
    """Pure function ``(key, theta, i0, background, present=None) -> (adu, kde)`` for one frame;
    ``present`` (N,) bool leaves the other emitters out of both (no photons, no kernel)."""
    camera = physics.camera_arrays(task)
    o = task.optics

    def render(
        key: jax.Array,
        theta: jax.Array,
        i0: jax.Array,
        background: jax.Array,
        present: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        if present is not None:
            i0 = jnp.where(present, i0, 0.0)
        omega = physics.expected_photons(theta, i0, background, o.sigma_psf, task.shape)
        adu = physics.sample_adu(key, omega, camera)
        return adu, physics.kde(theta, o.sigma_kde, o.upsampling, task.shape, weights=present)

    return render


@lru_cache(maxsize=16)
def _batch_simulator(task: Task) -> Callable[[jax.Array, jax.Array], tuple[jax.Array, ...]]:
    """Jitted ``(base_key, frame_indices) -> (adu, theta, kde, i0, background)`` vmapped over
    frames."""
    render = make_frame_renderer(task)
    brightness = make_brightness_sampler(task)
    prior = task.prior
    draw_count = count_sampler(prior) if count_is_drawn(prior) else None

    def one(base_key: jax.Array, index: jax.Array) -> tuple[jax.Array, ...]:
        k_pos, k_cam = jax.random.split(jax.random.fold_in(base_key, index))
        theta = sample_positions(k_pos, count_maximum(prior), task.centre, prior.radius)
        # keys of their own, so that frames of fixed brightness and count are those drawn
        # before these draws existed
        i0, background = brightness(jax.random.fold_in(k_pos, 1))
        if draw_count is None:
            adu, y = render(k_cam, theta, i0, background)
            return adu, theta, y, i0, jnp.mean(background)
        present = jnp.arange(theta.shape[0]) < draw_count(jax.random.fold_in(k_pos, 2))
        adu, y = render(k_cam, theta, i0, background, present)
        return (
            adu,
            jnp.where(present[:, None], theta, jnp.nan),
            y,
            jnp.where(present, i0, jnp.nan),
            jnp.mean(background),
        )

    return jax.jit(jax.vmap(one, in_axes=(None, 0)))


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ConfigError("seed", f"must be an integer in [0, 2^32) (got {seed!r})")
    return int(seed)


def simulate_indices(
    task: Task, base_key: jax.Array, indices: np.ndarray, chunk: int = 2048
) -> SimBatch:
    """Simulate the frames with the given indices under ``base_key`` (chunked to bound memory)."""
    sim = _batch_simulator(task)
    parts = [
        sim(base_key, jnp.asarray(indices[i : i + chunk], dtype=jnp.uint32))
        for i in range(0, len(indices), chunk)
    ]
    return SimBatch(
        *(
            np.concatenate([np.asarray(p[j], dtype=np.float32) for p in parts])
            for j in range(len(SimBatch._fields))
        )
    )


def simulate(
    task: Task, n_frames: int, seed: int, *, first_frame: int = 0, chunk: int = 2048
) -> SimBatch:
    """Simulate ``n_frames`` frames ``first_frame, first_frame+1, ...`` of ``seed``.

    Parameters
    ----------
    task : Task
        Optics, camera and scene prior.
    n_frames : int
        Number of frames, >= 1.
    seed : int
        Seed in [0, 2^32).
    first_frame : int
        Index of the first frame; frames are the same whatever the split into calls.
    chunk : int
        Frames per jitted call (memory bound: one KDE is u²·H·W floats).
    """
    n_frames = check_int("n_frames", n_frames)
    first_frame = check_int("first_frame", first_frame, lo=0)
    seed = _check_seed(seed)
    _check_memory(task, n_frames)
    indices = np.arange(first_frame, first_frame + n_frames)
    return simulate_indices(task, jax.random.PRNGKey(seed), indices, chunk)


def _check_memory(task: Task, n_frames: int, argument: str = "n_frames") -> None:
    """Refuse, before allocating, a request larger than the memory this machine has free."""
    per_frame = 4 * (
        task.height * task.width
        + task.hr_shape[0] * task.hr_shape[1]
        + 3 * count_maximum(task.prior)
    )
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not a POSIX system that reports it
        return
    if per_frame * n_frames > available:
        hint = (
            "simulate fewer frames per call (first_frame= continues a sequence)"
            if argument == "n_frames"
            else f"at most about {available // per_frame} fit"
        )
        raise ConfigError(
            argument,
            f"{n_frames} frames need {per_frame * n_frames / 1e9:.1f} "
            f"GB, more than the {available / 1e9:.1f} GB of memory "
            f"free; {hint}",
        )


def stream(task: Task, batch_size: int, seed: int, start_batch: int = 0) -> Iterator[SimBatch]:
    """Yield fresh batches forever; batch ``k`` is a fixed function of (seed, k), so training that
    resumes at ``start_batch = k`` sees exactly the batches an uninterrupted run would."""
    batch_size = check_int("batch_size", batch_size)
    _check_memory(task, batch_size, argument="batch_size")
    base = jax.random.fold_in(jax.random.PRNGKey(_check_seed(seed)), _STREAM_TAG)
    k = check_int("start_batch", start_batch, lo=0)
    while True:
        yield simulate_indices(task, jax.random.fold_in(base, k), np.arange(batch_size))
        k += 1


@lru_cache(maxsize=16)
def _fixed_simulator(task: Task) -> Callable[[jax.Array, jax.Array, jax.Array], jax.Array]:
    render = make_frame_renderer(task)
    scene = physics.scene_arrays(task)

    def one(base_key: jax.Array, index: jax.Array, theta: jax.Array) -> jax.Array:
        return render(jax.random.fold_in(base_key, index), theta, scene.i0, scene.background)[0]

    return jax.jit(jax.vmap(one, in_axes=(None, 0, None)))


def simulate_fixed(
    task: Task, theta: np.ndarray, n_frames: int, seed: int, chunk: int = 8192
) -> np.ndarray:
    """Frames (F, H, W) in ADU of emitters at fixed positions ``theta`` (N, 2), LR pixels.

    Repeated exposures of one scene: the camera-noise check and likelihood tests use them.
    """
    n_frames = check_int("n_frames", n_frames)
    key = jax.random.PRNGKey(_check_seed(seed))
    positions = jnp.asarray(theta, jnp.float32)
    sim = _fixed_simulator(task)
    parts = [
        np.asarray(sim(key, jnp.arange(i, min(i + chunk, n_frames), dtype=jnp.uint32), positions))
        for i in range(0, n_frames, chunk)
    ]
    return np.concatenate(parts).astype(np.float32)
