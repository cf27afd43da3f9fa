"""Ψ's denoiser: a ``diffusers.UNet2DModel`` on the noisy KDE stacked with its conditioning channels
(φ's estimate, and optionally the frame: :mod:`bayes_smlm.conditioning`).

Only the architecture lives here (presets and a builder); the noise schedule is a separate
``diffusers`` scheduler (:mod:`bayes_smlm.diffusion`), diffusers style.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from diffusers import UNet2DModel

from ..errors import ConfigError


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
                raise ConfigError("block_out_channels", f"every width must be a multiple of "
                                  f"norm_num_groups = {self.norm_num_groups} (got {width})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "UNetConfig":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


UNET_PRESETS = {
    # Sized for the 2-core CPU (DESIGN.md section 6): ≈0.5 M parameters, no attention.
    "cpu": UNetConfig(block_out_channels=(16, 32, 64), attention_levels=(False, False, False),
                      layers_per_block=1, norm_num_groups=8),
    # The paper's: base 64, multipliers [1, 2, 4, 8, 8], self-attention at the 20×20 level of an
    # 80×80 input (the nearest to its 16×16); for a GPU.
    "paper": UNetConfig(block_out_channels=(64, 128, 256, 512, 512),
                        attention_levels=(False, False, True, False, False),
                        layers_per_block=2, norm_num_groups=32),
}


def build_unet(config: UNetConfig, cond_channels: int = 1) -> UNet2DModel:
    """``UNet2DModel`` with 1 + ``cond_channels`` input channels (y_t, then the conditioning),
    1 output channel (ε, v or y_0), sinusoidal time embedding."""
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in config.attention_levels)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.attention_levels))
    return UNet2DModel(in_channels=1 + cond_channels, out_channels=1, time_embedding_type="positional",
                       block_out_channels=config.block_out_channels, down_block_types=down,
                       up_block_types=up, layers_per_block=config.layers_per_block,
                       norm_num_groups=config.norm_num_groups,
                       add_attention=any(config.attention_levels))
