"""Ψ's denoiser: a ``diffusers.UNet2DModel`` on the noisy KDE stacked with its conditioning channels
(φ's estimate, and optionally the frame: :mod:`bayes_smlm.surrogates.psi.conditioning`).

Only the architecture lives here (presets and a builder); the noise schedule is a separate
``diffusers`` scheduler (:mod:`bayes_smlm.surrogates.psi.schedule`), diffusers style.
"""

from __future__ import annotations

from diffusers import UNet2DModel

from bayes_smlm.surrogates.settings import UNetConfig


def build_unet(config: UNetConfig, cond_channels: int = 1) -> UNet2DModel:
    """``UNet2DModel`` with 1 + ``cond_channels`` input channels (y_t, then the conditioning),
    1 output channel (ε, v or y_0), sinusoidal time embedding."""
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in config.attention_levels)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.attention_levels))
    return UNet2DModel(
        in_channels=1 + cond_channels,
        out_channels=1,
        time_embedding_type="positional",
        block_out_channels=config.block_out_channels,
        down_block_types=down,
        up_block_types=up,
        layers_per_block=config.layers_per_block,
        norm_num_groups=config.norm_num_groups,
        add_attention=any(config.attention_levels),
    )
