"""A training run's memory check: refuse a batch whose activations cannot fit before the first
step, with a one-line error naming ``batch_size`` and the largest that fits."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from bayes_smlm.errors import ConfigError


def check_batch_memory(model: nn.Module, example: torch.Tensor, batch_size: int) -> None:
    """Refuse, before any training, a batch whose activations would not fit in free memory.

    One example's activations are counted by a forward pass with hooks on every leaf module
    (in eval mode, without gradients: nothing of the model changes); a training step keeps them
    and their gradients, so a batch needs about 2 × that × ``batch_size``. A one-line
    ConfigError naming ``batch_size`` and the largest that fits, instead of the kernel's kill
    minutes later.
    """
    counted = [0]

    def count(module: nn.Module, inputs: Any, output: Any) -> None:
        tensors = output if isinstance(output, (tuple, list)) else (output,)
        counted[0] += sum(
            t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor)
        )

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example[:1])
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    per_example = 2 * counted[0] + example[:1].numel() * example.element_size()
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not a POSIX system that reports it
        return
    if per_example * batch_size > available:
        raise ConfigError(
            "batch_size",
            f"a batch of {batch_size} needs about "
            f"{per_example * batch_size / 1e9:.3g} GB for its "
            f"activations, more than the {available / 1e9:.1f} GB "
            f"free; at most about {available // per_example} fit",
        )
