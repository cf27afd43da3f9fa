"""What a network's training run is set with, and the names of every option of φ and Ψ.

Plain data, importable without torch, diffusers or JAX: the command line builds its parser (choices
and defaults) from here in a fraction of a second, and every default lives in one place.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.checks import check_choice, check_int

SCHEDULES = {
    "paper": {
        "num_train_timesteps": 100,
        "beta_schedule": "linear",
        "beta_start": 1e-4,
        "beta_end": 1e-2,
        "prediction_type": "epsilon",
    },
    # Linear to 0.15: ᾱ_T ≈ 4e-4. Not the cosine schedule: its last β is capped at 0.999, so
    # ᾱ_T ≈ 2e-7 and the first reverse step multiplies ε-prediction errors by ≈ 30 (DDPM) to
    # ≈ 160 (DDIM) — measured here, samples drowned in noise (summed variance 10⁶× too large).
    "full": {
        "num_train_timesteps": 100,
        "beta_schedule": "linear",
        "beta_start": 1e-4,
        "beta_end": 0.15,
        "prediction_type": "v_prediction",
    },
}
LOSSES = ("l1", "l2")
PREDICTIONS = ("epsilon", "v_prediction", "sample")

CONDITIONS = {"phi": 1, "phi+frame": 2}  # name -> conditioning channels
STARTS = ("noise", "guess")  # start of Ψ's reverse process
SOLVERS = ("ddim", "dpmpp", "unipc")  # few-step samplers of Ψ (DDIM; DPM-Solver++ 2M; UniPC)
DEFAULT_SOLVER, DEFAULT_STEPS = "dpmpp", 8  # the ddpm method's sampler (methods/ddpm.py: why)
EARLIER_SAMPLER = ("ddim", 20)  # the ddpm method's (solver, steps) before DPM-Solver++
PRECISIONS = ("fp32", "bf16")  # φ's inference arithmetic
SAMPLING_PRECISIONS = ("auto", "fp32", "bf16")  # Ψ's sampling arithmetic ("auto": by hardware)


def condition_channels(condition: str) -> int:
    """Number of conditioning channels of a named conditioning."""
    return CONDITIONS[check_choice("condition", condition, CONDITIONS)]


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of the denoiser (arguments of ``UNet2DModel``).

    Attributes
    ----------
    block_out_channels : tuple of int
        Width of each resolution level (each level after the first halves the resolution).
    attention_levels : tuple of bool
        Self-attention in the blocks of each level.
    layers_per_block : int
        ResNet blocks per level.
    norm_num_groups : int
        GroupNorm groups (must divide every width).
    """

    block_out_channels: tuple[int, ...] = (16, 32, 64)
    attention_levels: tuple[bool, ...] = (False, False, False)
    layers_per_block: int = 1
    norm_num_groups: int = 8

    def __post_init__(self) -> None:
        if len(self.attention_levels) != len(self.block_out_channels):
            raise ConfigError("attention_levels", "needs one entry per level of block_out_channels")
        for width in self.block_out_channels:
            if width % self.norm_num_groups:
                raise ConfigError(
                    "block_out_channels",
                    f"every width must be a multiple of "
                    f"norm_num_groups = {self.norm_num_groups} (got {width})",
                )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UNetConfig:
        values: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
        }
        return cls(**values)


UNET_PRESETS = {
    # Sized for the 2-core CPU (docs/conventions.md §4): ≈0.5 M parameters, no attention.
    "cpu": UNetConfig(
        block_out_channels=(16, 32, 64),
        attention_levels=(False, False, False),
        layers_per_block=1,
        norm_num_groups=8,
    ),
    # The paper's: base 64, multipliers [1, 2, 4, 8, 8], self-attention at the 20×20 level of an
    # 80×80 input (the nearest to its 16×16); for a GPU.
    "paper": UNetConfig(
        block_out_channels=(64, 128, 256, 512, 512),
        attention_levels=(False, False, True, False, False),
        layers_per_block=2,
        norm_num_groups=32,
    ),
}


FLOWS = ("nsf", "maf", "maf_rqs")  # sbi density estimators offered (normalizing flows)


@dataclass(frozen=True)
class NpeArchitecture:
    """Everything needed to rebuild the estimator from a checkpoint.

    Attributes
    ----------
    crop : int
        Window side K, LR px (odd).
    offset_scale : float
        s, the unit of the modelled offset (θ − anchor)/s, LR px; 0 (default) takes the task's
        position √CRLB at the disc centre when training starts (recorded in the checkpoint).
    tail_bound : float
        The splines act on [−B, B] (offset units) and are the identity outside.
    conv_channels : int
        Width of the two 3×3 convolutions of the embedding.
    embedding_hidden : int
        Width of the embedding's hidden linear layer.
    embedding_features : int
        Length of the embedding the flow is conditioned on.
    flow : {"nsf", "maf", "maf_rqs"}
        sbi's density estimator (``posterior_nn(model=...)``).
    hidden_features : int
        Width of the flow's conditioner networks.
    num_transforms : int
        Flow layers.
    num_bins : int
        Spline bins (spline flows only).
    """

    crop: int = 7
    offset_scale: float = 0.0
    tail_bound: float = 3.0
    conv_channels: int = 32
    embedding_hidden: int = 128
    embedding_features: int = 64
    flow: str = "nsf"
    hidden_features: int = 64
    num_transforms: int = 5
    num_bins: int = 10

    def __post_init__(self) -> None:
        check_int("crop", self.crop, lo=3)
        if self.crop % 2 == 0:
            raise ConfigError(
                "crop", f"must be odd, so the window has a centre pixel (got {self.crop})"
            )
        check_choice("flow", self.flow, FLOWS)
        for name, zero_allowed in (("offset_scale", True), ("tail_bound", False)):
            value = getattr(self, name)
            if not (math.isfinite(value) and (value > 0 or (zero_allowed and value == 0))):
                bound = ">= 0" if zero_allowed else "> 0"
                raise ConfigError(name, f"must be a finite number {bound} (got {value})")
        for name in (
            "conv_channels",
            "embedding_hidden",
            "embedding_features",
            "hidden_features",
            "num_transforms",
            "num_bins",
        ):
            check_int(name, getattr(self, name))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NpeArchitecture:
        return cls(**data)


@dataclass(frozen=True)
class LoopSettings:
    """Hyper-parameters of the loop (the model-specific ones live with the model).

    Attributes
    ----------
    steps : int
        Optimiser steps in total (a resumed run continues to this count).
    lr : float
        Peak learning rate of AdamW; cosine-decayed to ``lr * final_lr_fraction``.
    weight_decay : float
        AdamW weight decay.
    warmup_steps : int
        Linear learning-rate warm-up.
    final_lr_fraction : float
        Learning rate at the last step relative to ``lr``.
    validate_every : int
        Steps between validations.
    checkpoint_every : int
        Steps between checkpoints (one is also written at the end).
    patience : int
        Stop after this many validations without improvement; 0 never stops early.
    max_seconds : float
        Wall-time budget, s; 0 (default) has none. With a budget the cosine learning rate follows
        whichever of the step count and the elapsed time is further along, so a run cut by time
        still ends at the low learning rate; it then validates and checkpoints. The step at which
        time runs out depends on the machine, so such runs are not bit-reproducible.
    """

    steps: int
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    final_lr_fraction: float = 0.02
    validate_every: int = 100
    checkpoint_every: int = 200
    patience: int = 0
    max_seconds: float = 0.0

    def __post_init__(self) -> None:
        check_int("steps", self.steps)
        if not (self.max_seconds >= 0 and math.isfinite(self.max_seconds)):
            raise ConfigError(
                "max_seconds", f"must be a finite number >= 0 (got {self.max_seconds})"
            )
        for name in ("validate_every", "checkpoint_every"):
            check_int(name, getattr(self, name))
        check_int("warmup_steps", self.warmup_steps, lo=0)
        check_int("patience", self.patience, lo=0)
        if not self.lr > 0:
            raise ConfigError("lr", f"must be > 0 (got {self.lr})")

    def lr_at(self, step: int, elapsed: float = 0.0) -> float:
        """Learning rate for optimiser step ``step`` (0-based) after ``elapsed`` seconds: linear
        warm-up, cosine decay (over time too when :attr:`max_seconds` is set)."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        span = max(self.steps - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / span, 1.0)
        if self.max_seconds:
            progress = max(progress, min(elapsed / self.max_seconds, 1.0))
        low = self.lr * self.final_lr_fraction
        return low + 0.5 * (self.lr - low) * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class RunSettings:
    """What every network's training run sets and records in its checkpoint; φ's and Ψ's settings
    extend it (with their own defaults) by what only they need.

    Attributes
    ----------
    steps, lr, validate_every, checkpoint_every, patience
        As in :class:`LoopSettings`.
    batch_size : int
        Frames simulated per optimiser step.
    seed : int
        Seed of the weights' initialisation, the training batches and the validation frames.
    validation_frames : int
        Size of the fixed validation set.
    max_minutes : float
        Wall-time budget (0: none); see :attr:`LoopSettings.max_seconds`.
    """

    steps: int = 3000
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    validation_frames: int = 64
    validate_every: int = 100
    checkpoint_every: int = 100
    patience: int = 0
    max_minutes: float = 0.0

    def loop_settings(self) -> LoopSettings:
        """The training loop's share of these settings."""
        return LoopSettings(
            steps=self.steps,
            lr=self.lr,
            validate_every=self.validate_every,
            checkpoint_every=self.checkpoint_every,
            patience=self.patience,
            max_seconds=60.0 * self.max_minutes,
        )


@dataclass(frozen=True)
class PhiTraining(RunSettings):
    """Settings of a φ training run (recorded in the checkpoint); fields as in
    :class:`~bayes_smlm.surrogates.training.RunSettings`, with φ's defaults."""

    steps: int = 3000
    batch_size: int = 32
    lr: float = 2e-3
    validation_frames: int = 256


@dataclass(frozen=True)
class NpeTraining(RunSettings):
    """Settings of an NPE training run (recorded in the checkpoint); fields as in
    :class:`RunSettings`, and

    Attributes
    ----------
    simulations : int
        Size of the fixed training set: frames ``0 … simulations−1`` of ``seed``; each step draws
        ``batch_size`` of them at random (a fixed function of (seed, step)). The validation frames
        are the ``validation_frames`` that follow them in the same stream, so none is trained on.
    """

    steps: int = 6000
    batch_size: int = 512
    lr: float = 1e-3
    validation_frames: int = 4096
    validate_every: int = 250
    checkpoint_every: int = 250
    simulations: int = 200_000

    def __post_init__(self) -> None:
        check_int("simulations", self.simulations, lo=2)
        check_int("batch_size", self.batch_size)


@dataclass(frozen=True)
class PsiTraining(RunSettings):
    """Settings of a Ψ training run (recorded in the checkpoint).

    Attributes
    ----------
    preset : {"cpu", "paper"}
        UNet size (:data:`bayes_smlm.surrogates.psi.unet.UNET_PRESETS`).
    schedule : {"paper", "full"}
        Noise schedule (:data:`bayes_smlm.surrogates.psi.schedule.SCHEDULES`).
    loss : {"l1", "l2"}
        Loss on the noise.
    crop : int
        Side of the random training crops, HR pixels; 0 (default) trains on whole maps. Half the
        crops are centred near a random true emitter (jittered by up to crop/2), half anywhere.
        Crops do not transfer to whole frames: GroupNorm normalises over the whole spatial
        extent, so features of a 32-px crop around an emitter are scaled differently from those
        of the 80-px frame (measured: whole-frame validation loss rose from step 1000 on while
        the crop training loss kept falling).
    ema_decay : float
        EMA decay of the weights that are validated and saved.
    condition : {"phi", "phi+frame"}
        What Ψ sees besides y_t (:mod:`bayes_smlm.surrogates.psi.conditioning`).
    prediction : {"epsilon", "v_prediction", "sample"} or None
        The network's target; None: the schedule's default (ε for ``paper``, v for ``full``).
    device : str
        torch device of training ("cpu", "cuda"); the saved weights do not depend on it.
    max_minutes : float
        Wall-time budget (0: none), see :class:`bayes_smlm.surrogates.training.LoopSettings`.
    """

    steps: int = 6000
    batch_size: int = 8
    validate_every: int = 200
    checkpoint_every: int = 200
    preset: str = "cpu"
    schedule: str = "full"
    loss: str = "l2"
    crop: int = 0
    ema_decay: float = 0.999
    condition: str = "phi"
    prediction: str | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        check_choice("preset", self.preset, UNET_PRESETS)
        condition_channels(self.condition)
        if self.prediction is not None:
            check_choice("prediction", self.prediction, PREDICTIONS)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("loss", self.loss, LOSSES)
        check_int("crop", self.crop, lo=0)
        check_int("batch_size", self.batch_size)
        if not 0.0 < self.ema_decay < 1.0:
            raise ConfigError("ema_decay", f"must be in (0, 1) (got {self.ema_decay})")
