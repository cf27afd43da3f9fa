"""DeepSTORM (2D) as the paper describes it (§3.1, appendix A.4): LR frame in, HR KDE out.

A multi-scale context module of dilated 3×3 convolutions at LR resolution (the normalised frame is
concatenated to the input of every context layer), log2(u) nearest-neighbour ×2 resize-convolutions,
refinement blocks at HR resolution and an element-wise HardTanh output.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from bayes_smlm.errors import ConfigError

INPUT_TRANSFORMS = ("linear", "anscombe")


def anscombe(photons: torch.Tensor) -> torch.Tensor:
    """Anscombe's variance-stabilising transform ``2·sqrt(max(n, 0) + 3/8)`` of photon counts."""
    return 2.0 * torch.sqrt(torch.clamp(photons, min=0.0) + 0.375)


@dataclass(frozen=True)
class DeepSTORMConfig:
    """Architecture of φ (everything needed to rebuild the module from a checkpoint).

    Attributes
    ----------
    upsampling : int
        u, a power of two: the number of ×2 resize-convolutions is log2(u).
    context_channels : int
        Width of the LR context module (the authors used 64).
    dilations : tuple of int
        Dilation of each context layer (the authors used 1, 2, 4, 8, 16).
    up_channels : tuple of int
        Width after each ×2 resize-convolution (one entry per ×2 step).
    refine_blocks : int
        Number of 3×3 conv + BatchNorm + LeakyReLU blocks at HR resolution.
    input_shift, input_scale : float
        Fixed input normalisation ``(t(n) − shift)/scale`` of the offset-subtracted,
        gain-corrected frame n (photons); derived from the task, not from the data, so it is the
        same everywhere.
    input_transform : {"linear", "anscombe"}
        t: the identity, or Anscombe's ``2·sqrt(max(n, 0) + 3/8)``, whose Poisson noise has unit
        SD at every level — for tasks whose brightness and background span decades, where a
        linear scale fitted to one level saturates or drowns the others.
    output_max : float
        Upper bound of the HardTanh output (the KDE is ≥ 0; one isolated kernel peaks at 1).
    dropout : float
        Element-wise dropout rate on the last hidden layer, before the 1×1 output convolution
        (Gal & Ghahramani 2016's Bernoulli dropout of units); 0 (default) builds no dropout
        layer. Kept on at inference, it makes φ the ``mc_dropout`` method. Only there: dropout
        before a BatchNorm layer trains BatchNorm's running variance on dropped-out activations,
        and at evaluation (dropout off) every output fell below 0, where the HardTanh output has
        no gradient (measured with dropout 0.1 after every block: φ dead from step 100).
    """

    upsampling: int = 4
    context_channels: int = 64
    dilations: tuple[int, ...] = (1, 2, 4, 8, 16)
    up_channels: tuple[int, ...] = (32, 16)
    refine_blocks: int = 3
    input_shift: float = 0.0
    input_scale: float = 1.0
    input_transform: str = "linear"
    output_max: float = 10.0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        u = self.upsampling
        if not isinstance(u, int) or u < 2 or u & (u - 1):
            raise ConfigError("optics.upsampling", f"DeepSTORM needs a power of two >= 2 (got {u})")
        if len(self.up_channels) != int(math.log2(u)):
            raise ConfigError(
                "up_channels",
                f"needs log2(u) = {int(math.log2(u))} entries (got {len(self.up_channels)})",
            )
        if self.input_scale <= 0 or self.output_max <= 0:
            raise ConfigError("input_scale", "input_scale and output_max must be > 0")
        if self.input_transform not in INPUT_TRANSFORMS:
            raise ConfigError(
                "input_transform",
                f"must be one of {', '.join(INPUT_TRANSFORMS)} (got {self.input_transform!r})",
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("dropout", f"must be in [0, 1) (got {self.dropout})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeepSTORMConfig:
        data = dict(data)
        for key in ("dilations", "up_channels"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


def _conv_block(c_in: int, c_out: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out),
        nn.LeakyReLU(0.1, inplace=True),
    )


class DeepSTORM(nn.Module):
    """φ: (B, 1, H, W) photon frames → (B, 1, u·H, u·W) KDE estimates.

    Parameters
    ----------
    config : DeepSTORMConfig
        Architecture and fixed input normalisation.
    """

    def __init__(self, config: DeepSTORMConfig | None = None):
        super().__init__()
        config = config if config is not None else DeepSTORMConfig()
        self.config = config
        c = config.context_channels
        self.context = nn.ModuleList(
            _conv_block(1 if i == 0 else c + 1, c, d) for i, d in enumerate(config.dilations)
        )
        widths = (c, *config.up_channels)
        self.upsample = nn.ModuleList(
            nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), _conv_block(a, b))
            for a, b in zip(widths[:-1], widths[1:])
        )
        hr = widths[-1]
        self.refine = nn.Sequential(*(_conv_block(hr, hr) for _ in range(config.refine_blocks)))
        # a module without parameters: checkpoints without dropout load unchanged
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.head = nn.Conv2d(hr, 1, 1)
        self.output = nn.Hardtanh(0.0, config.output_max)

    def forward(self, photons: torch.Tensor) -> torch.Tensor:
        """KDE estimate from offset-subtracted, gain-corrected frames (photons), (B, 1, H, W)."""
        return self.readout(self.features(photons))

    def features(self, photons: torch.Tensor) -> torch.Tensor:
        """The last hidden layer (B, C, u·H, u·W): everything before dropout and the output."""
        if self.config.input_transform == "anscombe":
            photons = anscombe(photons)
        x = (photons - self.config.input_shift) / self.config.input_scale
        h = x
        for i, layer in enumerate(self.context):
            h = layer(h if i == 0 else torch.cat([h, x], dim=1))
        for layer in self.upsample:
            h = layer(h)
        return self.refine(h)

    def readout(self, features: torch.Tensor) -> torch.Tensor:
        """Dropout (when built with it), the 1×1 output convolution and HardTanh: the KDE
        (B, 1, u·H, u·W). With dropout on, each call is one Monte Carlo dropout pass."""
        return self.output(self.head(self.dropout(features)))
