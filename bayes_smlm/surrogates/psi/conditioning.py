"""What Ψ is conditioned on: φ's KDE estimate ŷ, and optionally the frame x itself.

The paper conditions Ψ on ŷ = φ(x) alone. ŷ is a point estimate: it discards how sharply the
photons pin each emitter down (two frames with the same ŷ can have different posteriors), so by the
data-processing inequality p(y | ŷ) can only be wider than p(y | x). ``phi+frame`` also gives Ψ
the frame, normalised as φ's input is and repeated onto the KDE grid (nearest neighbour, u × u
copies of each LR pixel), so Ψ can learn p(y | x) directly.

Every channel is in model space (:func:`.schedule.to_model_space` for ŷ); channel 0 is always ŷ, which the ``guess`` start of the sampler noises.
"""

from __future__ import annotations

import numpy as np
import torch

from bayes_smlm.forward.config import Task
from bayes_smlm.surrogates.phi.estimator import architecture_for, frames_to_photons
from bayes_smlm.surrogates.psi.schedule import to_model_space
from bayes_smlm.surrogates.settings import condition_channels


def frame_channel(photons: torch.Tensor, task: Task) -> torch.Tensor:
    """(F, 1, H, W) photon frames → (F, 1, u·H, u·W), normalised as φ's input (background and
    readout pedestal subtracted, divided by the brightest pixel of one centred emitter)."""
    arch = architecture_for(task)
    u = task.optics.upsampling
    x = (photons - arch.input_shift) / arch.input_scale
    return x.repeat_interleave(u, dim=2).repeat_interleave(u, dim=3)


def conditioning(phi, adu: np.ndarray, task: Task, condition: str) -> torch.Tensor:
    """Model-space conditioning (F, C, u·H, u·W) of ADU frames, on φ's device.

    Parameters
    ----------
    phi : PhiPredictor
        The frozen φ.
    adu : (F, H, W) array
        Frames in ADU.
    condition : {"phi", "phi+frame"}
    """
    condition_channels(condition)
    photons = frames_to_photons(adu, task).to(phi.device)
    channels = [to_model_space(phi.photons(photons))]
    if condition == "phi+frame":
        channels.append(frame_channel(photons, task))
    return torch.cat(channels, dim=1)
