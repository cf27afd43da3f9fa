"""Noise schedules, the fixed KDE ↔ model-space map, the forward (noising) process and the losses.

Two schedules (docs/conventions.md §3.2): ``paper`` — T = 100, linear β from 1e-4 to 1e-2, as
published, which ends at ᾱ_T ≈ 0.60 (y_T is *not* N(0, I)), with ε-prediction; ``full`` — T = 100,
linear β from 1e-4 to 0.15, which ends at ᾱ_T ≈ 4e-4 ≈ 0, with v-prediction. Both with
``clip_sample=False``: clipping the predicted y_0 to [-1, 1] would bias the variances
(docs/conventions.md §3.3).

Why v for ``full``: with ε-prediction, ŷ_0 = (y_t − √(1−ᾱ_t) ε̂)/√ᾱ_t, so an ε error is multiplied
by √((1−ᾱ_t)/ᾱ_t) — 52× at ᾱ_T = 4e-4. Measured on a Ψ trained 1000 steps (ε-MSE 1e-3 at high t):
ŷ_0 had per-pixel noise of SD 0.7–1.8 in the background over the first 30 reverse steps, which the
chain then kept as structure (final background SD 0.67 in model space, summed variance ≈ 3000×
the exact one). With v = √ᾱ_t ε − √(1−ᾱ_t) y_0, ŷ_0 = √ᾱ_t y_t − √(1−ᾱ_t) v̂: no amplification.
The v-loss is a noise loss too: ε̂ − ε = √ᾱ_t (v̂ − v), so ‖v̂ − v‖² = ‖ε̂ − ε‖²/ᾱ_t, an ε-MSE
reweighted over t with the same minimiser, E[ε | y_t, ŷ] — the sampler's target is unchanged.

The prediction type is also a training option of its own (``sample``: the network predicts y_0
directly). At the last reverse steps ε-/v-prediction must recover a noise of SD √(1−ᾱ_t) ≈ 0.01–0.02
(model space) on flat background; any error there is left in the sample as a per-pixel floor,
while y_0-prediction only has to say "background" (−1), which the conditioning shows.
"""

from __future__ import annotations

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    UniPCMultistepScheduler,
)

from bayes_smlm.forward.checks import check_choice
from bayes_smlm.surrogates.settings import LOSSES, PREDICTIONS, SCHEDULES, SOLVERS

KDE_SCALE = 1.0  # one isolated KDE kernel peaks at 1 (docs/conventions.md §2)


def schedule_settings(schedule: str, prediction: str | None = None) -> dict:
    """``diffusers`` scheduler arguments of a named schedule; ``prediction`` (one of
    :data:`PREDICTIONS`) overrides the schedule's default prediction type."""
    check_choice("schedule", schedule, SCHEDULES)
    settings = dict(SCHEDULES[schedule])
    if prediction is not None:
        settings["prediction_type"] = check_choice("prediction", prediction, PREDICTIONS)
    return settings


def make_scheduler(schedule: str, prediction: str | None = None) -> DDPMScheduler:
    """The training/sampling ``DDPMScheduler`` of a named schedule (no clipping)."""
    return DDPMScheduler(
        **schedule_settings(schedule, prediction), clip_sample=False, variance_type="fixed_small"
    )


def fast_scheduler_of(
    scheduler: DDPMScheduler, solver: str = "ddim"
) -> DDIMScheduler | DPMSolverMultistepScheduler | UniPCMultistepScheduler:
    """A few-step sampler with the β's and prediction type of ``scheduler``, for the same model
    (steps spaced from the last training step down).

    ``ddim``: DDIM (first order; ``eta`` sets its stochasticity). ``dpmpp``: DPM-Solver++ (2M),
    a second-order multistep solver of the same probability-flow ODE as DDIM with η = 0, whose
    last step returns the model's denoised estimate (σ = 0); it needs fewer steps for the same
    error. ``unipc``: UniPC (Zhao et al. 2023; 2nd order, data prediction, B(h) = e^h − 1), the
    same ODE with a corrector that reuses the next step's network output — one network pass per
    step, like the others, and fewer steps again for the same error.
    """
    check_choice("solver", solver, SOLVERS)
    few_step = {
        "timestep_spacing": "trailing",
        "final_sigmas_type": "zero",
        "lower_order_final": True,
        "solver_order": 2,
    }
    if solver == "dpmpp":
        return DPMSolverMultistepScheduler.from_config(
            scheduler.config, algorithm_type="dpmsolver++", variance_type=None, **few_step
        )
    if solver == "unipc":
        return UniPCMultistepScheduler.from_config(
            scheduler.config, predict_x0=True, solver_type="bh2", **few_step
        )
    return DDIMScheduler.from_config(
        scheduler.config, clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing"
    )


def training_target(
    scheduler: DDPMScheduler, y0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """What the network learns to output at (y_t, t): ε, v = √ᾱ_t ε − √(1−ᾱ_t) y_0, or y_0."""
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(y0, noise, t)
    if scheduler.config.prediction_type == "sample":
        return y0
    return noise


def alpha_bar_final(scheduler: DDPMScheduler) -> float:
    """ᾱ_T, the signal fraction left at the last training step."""
    return float(scheduler.alphas_cumprod[-1])


def to_model_space(y: torch.Tensor) -> torch.Tensor:
    """Fixed affine map of KDE values to the model's range: 0 → −1, one kernel peak (1) → +1."""
    return 2.0 * y / KDE_SCALE - 1.0


def from_model_space(z: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_model_space`."""
    return (z + 1.0) * (0.5 * KDE_SCALE)


def noise_loss(predicted: torch.Tensor, noise: torch.Tensor, loss: str) -> torch.Tensor:
    """Loss on the noise target (ε, or v: :func:`training_target`): ``l1`` = mean |ε − ε̂|
    (eq. 10, as published; a conditional median), ``l2`` = mean (ε − ε̂)² (the MSE whose
    minimiser is the posterior mean the DDPM reverse step assumes)."""
    check_choice("loss", loss, LOSSES)
    diff = predicted - noise
    return diff.abs().mean() if loss == "l1" else diff.pow(2).mean()
