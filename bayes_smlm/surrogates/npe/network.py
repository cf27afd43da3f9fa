"""The NPE density estimator: a small CNN embedding of the window, then an ``sbi`` flow over the
offset u = (θ − anchor) / s.

``sbi``'s :func:`~sbi.neural_nets.posterior_nn` builds the flow (nflows' neural spline flow by
default) around the embedding; the architecture in a checkpoint's JSON rebuilds it exactly, and its
weights come from safetensors, so nothing of sbi's is pickled.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from bayes_smlm.surrogates.npe.features import POSITION_FEATURES, feature_length
from bayes_smlm.surrogates.settings import NpeArchitecture


class WindowEmbedding(nn.Module):
    """Condition vector (window, anchor place) → embedding: two 3×3 convolutions over the
    window, then a two-layer MLP on their features and the anchor's place."""

    def __init__(self, arch: NpeArchitecture):
        super().__init__()
        k, c = arch.crop, arch.conv_channels
        self.crop = k
        self.conv = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1), nn.ReLU()
        )
        self.head = nn.Sequential(
            nn.Linear(c * k * k + POSITION_FEATURES, arch.embedding_hidden),
            nn.ReLU(),
            nn.Linear(arch.embedding_hidden, arch.embedding_features),
        )

    def forward(self, condition: torch.Tensor) -> torch.Tensor:
        k = self.crop
        window = condition[:, : k * k].reshape(-1, 1, k, k)
        return self.head(torch.cat([self.conv(window).flatten(1), condition[:, k * k :]], 1))


def build_estimator(arch: NpeArchitecture) -> nn.Module:
    """A fresh (seed it first) sbi conditional density estimator of the offset u (2,) given the
    condition vector. No z-scoring: u is O(1) by construction (:mod:`.features`) and the window
    is Anscombe-scaled, so the estimator is a pure function of its weights (the state dict
    rebuilds it)."""
    from sbi.neural_nets import posterior_nn

    build = posterior_nn(
        model=arch.flow,
        embedding_net=WindowEmbedding(arch),
        hidden_features=arch.hidden_features,
        num_transforms=arch.num_transforms,
        num_bins=arch.num_bins,
        tail_bound=arch.tail_bound,
        z_score_theta="none",
        z_score_x="none",
    )
    shapes = (torch.zeros(2, 2), torch.zeros(2, feature_length(arch.crop)))
    with warnings.catch_warnings():  # sbi's notes on building from a tiny batch
        warnings.simplefilter("ignore")
        return build(*shapes)
