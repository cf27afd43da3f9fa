"""Ψ's reverse process written out: K KDE samples per frame, batched over frames × samples.

Two starts (docs/conventions.md §3.2), both named in every output: ``noise`` — y_T ~ N(0, I), as
published; ``guess`` — y_T ~ q(y_T | ŷ) = N(√ᾱ_T m(ŷ), (1 − ᾱ_T) I), the noised φ estimate (with
the ``full`` schedule, ᾱ_T ≈ 0 and the two coincide). ``steps=None`` runs every training step with
the DDPM scheduler; an integer runs that many DDIM steps with the same model.

Every (frame, sample) pair draws its noise from its own generator seeded by (seed, frame, sample),
so results do not depend on how frames are batched.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterator

import numpy as np
import torch
from diffusers import DDPMScheduler, UNet2DModel
from tqdm.auto import tqdm

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.checks import check_choice, check_int
from bayes_smlm.surrogates.psi.schedule import fast_scheduler_of, from_model_space
from bayes_smlm.surrogates.settings import SAMPLING_PRECISIONS, STARTS


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """``auto`` → ``bf16`` where the device computes in bf16 natively (CUDA; a CPU with
    AVX-512-BF16 or AMX), else ``fp32``. On a CPU without them bf16 is emulated and measured 14×
    *slower* than fp32 (AMD EPYC, AVX2 only), while with them it is ≈ 2× faster."""
    check_choice("precision", precision, SAMPLING_PRECISIONS)
    if precision != "auto":
        return precision
    if torch.device(device).type == "cuda":
        return "bf16"
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    return "bf16" if native else "fp32"


def _generators(seed: int, frames: np.ndarray, samples: int) -> list[torch.Generator]:
    return [
        torch.Generator().manual_seed(((int(seed) * 1_000_003 + int(f)) * 10_007 + k) % 2**63)
        for f in frames
        for k in range(samples)
    ]


def _batches(n_frames: int, samples: int, max_batch: int) -> Iterator[np.ndarray]:
    per_call = max(1, max_batch // samples)
    for start in range(0, n_frames, per_call):
        yield np.arange(start, min(start + per_call, n_frames))


def sample_kdes(
    unet: UNet2DModel,
    scheduler: DDPMScheduler,
    cond: torch.Tensor,
    *,
    samples: int,
    start: str = "guess",
    steps: int | None = None,
    solver: str = "ddim",
    eta: float = 0.0,
    seed: int = 0,
    batch_size: int = 64,
    precision: str = "fp32",
    progress: bool = False,
    first_frame: int = 0,
) -> np.ndarray:
    """Draw ``samples`` KDEs per frame from Ψ given its conditioning ``cond``.

    Parameters
    ----------
    unet : UNet2DModel
        The trained denoiser (input channels: y_t, then the conditioning), on ``cond``'s device.
    scheduler : DDPMScheduler
        The scheduler Ψ was trained with (β's, prediction type); not modified.
    cond : (F, C, u·H, u·W) tensor
        Model-space conditioning (:func:`.conditioning.conditioning`); channel 0 is φ's
        estimate ŷ.
    samples : int
        K, samples per frame.
    start : {"noise", "guess"}
    steps : int or None
        None: the full DDPM reverse chain; an integer: that many steps of ``solver``.
    solver : {"ddim", "dpmpp", "unipc"}
        Few-step sampler (:func:`.schedule.fast_scheduler_of`); ignored with ``steps=None``.
    eta : float
        DDIM stochasticity (0 = deterministic given the start, 1 ≈ DDPM); DDIM only.
    batch_size : int
        Frames × samples per UNet call.
    precision : {"auto", "fp32", "bf16"}
        ``bf16`` runs the UNet under autocast; ``auto``: :func:`resolve_precision`.
    first_frame : int
        Index of frame 0 of ``cond`` in the whole movie: sample ``k`` of frame ``i`` is seeded
        by ``(seed, first_frame + i, k)``, so a shard reproduces the whole run.

    Returns
    -------
    (F, K, u·H, u·W) float32 ndarray of KDE samples.
    """
    check_choice("start", start, STARTS)
    samples = check_int("samples", samples, lo=2)  # a variance needs two samples
    first_frame = check_int("first_frame", first_frame, lo=0)
    batch_size = check_int("batch_size", batch_size)
    if steps is None:
        scheduler = DDPMScheduler.from_config(scheduler.config)  # a copy: set_timesteps mutates
        scheduler.set_timesteps(scheduler.config.num_train_timesteps)
        step_kwargs = {}
    else:
        steps = check_int("steps", steps)
        if solver != "ddim" and eta != 0.0:
            raise ConfigError(
                "eta", f"is a DDIM option; the {solver} solver is deterministic (got eta={eta})"
            )
        scheduler = fast_scheduler_of(scheduler, solver)
        if steps > scheduler.config.num_train_timesteps:
            raise ConfigError(
                "steps", f"must be <= {scheduler.config.num_train_timesteps} (got {steps})"
            )
        scheduler.set_timesteps(steps)
        step_kwargs = {"eta": float(eta)} if solver == "ddim" else {}
    # the per-sample generators reach the schedulers that draw noise (DDPM, DDIM with η > 0);
    # UniPC's step takes none
    takes_generator = "generator" in inspect.signature(scheduler.step).parameters
    alpha_bar_T = float(scheduler.alphas_cumprod[int(scheduler.timesteps[0])])
    n_frames, _, h, w = cond.shape
    device = cond.device
    precision = resolve_precision(precision, device)
    out = np.empty((n_frames, samples, h, w), dtype=np.float32)
    fresh_state = copy.deepcopy(scheduler)  # multistep solvers keep state between steps
    cond_model = cond.float()
    with tqdm(
        total=n_frames, desc=f"ddpm ({start})", unit="frame", disable=not progress, leave=False
    ) as bar:
        for frames in _batches(n_frames, samples, batch_size):
            gens = _generators(seed, first_frame + frames, samples)
            c = cond_model[torch.as_tensor(frames, device=device)].repeat_interleave(samples, dim=0)
            noise = torch.stack([torch.randn((1, h, w), generator=g) for g in gens]).to(device)
            guess = c[:, :1]
            z = (
                noise
                if start == "noise"
                else (alpha_bar_T**0.5 * guess + (1 - alpha_bar_T) ** 0.5 * noise)
            )
            scheduler = copy.deepcopy(fresh_state)
            noise_kwargs = {"generator": gens} if takes_generator else {}
            with (
                torch.inference_mode(),
                torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"),
            ):
                for t in scheduler.timesteps:
                    x = torch.cat([z, c], dim=1).contiguous(memory_format=torch.channels_last)
                    eps = unet(x, t).sample.float().contiguous()
                    z = scheduler.step(eps, t, z, **step_kwargs, **noise_kwargs).prev_sample
            out[frames] = from_model_space(z).reshape(len(frames), samples, h, w).cpu().numpy()
            bar.update(len(frames))
    return out
