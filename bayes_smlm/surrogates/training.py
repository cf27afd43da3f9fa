"""One seeded training loop for every network of the package (φ now, the DDPM Ψ later).

The loop owns what every training run needs and nothing model-specific: AdamW, a cosine learning
rate, a progress bar with the running loss, validation on a fixed set, early stopping, the best
weights, and checkpoints that make ``resume`` bit-identical to an uninterrupted run.

Resumability rests on two rules the callers keep: batch ``k`` is a fixed function of (seed, k)
(see :func:`bayes_smlm.forward.simulate.stream`), and any randomness inside a step is drawn from a
generator seeded by (seed, step) (:func:`step_generator`). The whole training state (weights,
optimiser moments, extra state such as EMA weights, best weights, history) goes into one
``safetensors`` file written atomically, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import copy
import errno
import json
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.config import Task
from bayes_smlm.io.atomic import os_reason, write_with_rescue
from bayes_smlm.surrogates.checkpoint import check_task, read_checkpoint_config, read_safetensors
from bayes_smlm.surrogates.settings import LoopSettings

S = TypeVar("S")  # a run's settings dataclass

STATE_FILE = "training_state.safetensors"
WEIGHTS_FILE = "model.safetensors"


class Stateful(Protocol):
    """Anything with ``state_dict()`` / ``load_state_dict()`` (optimisers, EMA models)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


@dataclass
class LoopState:
    """Progress of a run (stored in the checkpoint's metadata)."""

    step: int = 0
    best_val: float = math.inf
    best_step: int = -1
    stale_validations: int = 0
    stopped_early: bool = False
    out_of_time: bool = False
    seconds: float = 0.0
    running_loss: float = math.nan
    history: list[dict[str, float]] = field(default_factory=list)

    def progress_record(self, val_name: str) -> dict[str, Any]:
        """JSON-ready progress for a checkpoint's config (best validation as ``best_<val_name>``)."""
        return {
            "steps_done": self.step,
            "best_step": self.best_step,
            f"best_{val_name}": self.best_val,
            "stopped_early": self.stopped_early,
            "out_of_time": self.out_of_time,
            "train_seconds": round(self.seconds, 1),
            "history": self.history,
        }

    def summary(self, out_dir: str | Path, val_name: str) -> str:
        """One line for the command line after training."""
        early = (" (stopped early)" if self.stopped_early else "") + (
            " (time budget spent)" if self.out_of_time else ""
        )
        return (
            f"wrote {out_dir}: {self.step} steps, best {val_name} {self.best_val:.4g} at step "
            f"{self.best_step}{early}, {self.seconds:.0f} s"
        )


def resumed_settings(
    out_dir: Path, task: Task, kind: str, settings: S, keep: tuple[str, ...] = ("steps",)
) -> tuple[dict[str, Any], S]:
    """The config of the run saved in ``out_dir`` (refused in one line if it is not a ``kind``
    checkpoint or was trained for another task) and its training settings, with the fields
    ``keep`` taken from ``settings`` (what a resumed run may change, e.g. its step count)."""
    stored = read_checkpoint_config(out_dir, kind, "out")
    check_task(stored, task, out_dir, "out")
    changed = {name: getattr(settings, name) for name in keep}
    return stored, type(settings)(**{**stored["training"], **changed})


def step_generator(seed: int, step: int) -> torch.Generator:
    """A torch generator that is a fixed function of (seed, step), for randomness inside a step."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(step)) % (2**63))


def make_optimizer(model: nn.Module, settings: LoopSettings) -> torch.optim.AdamW:
    """AdamW over the model's parameters, with the loop's settings."""
    return torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)


# -- flattening nested state into safetensors (tensors) + JSON (everything else) -----------------


def _flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": prefix}
    if isinstance(obj, Mapping):
        return {"__items__": [[k, _flatten(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {
            "__list__": [_flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)],
            "tuple": isinstance(obj, tuple),
        }
    return obj


def _unflatten(obj: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict) and "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if isinstance(obj, dict) and "__items__" in obj:
        return {k: _unflatten(v, tensors) for k, v in obj["__items__"]}
    if isinstance(obj, dict) and "__list__" in obj:
        items = [_unflatten(v, tensors) for v in obj["__list__"]]
        return tuple(items) if obj["tuple"] else items
    return obj


def save_weights(
    path: Path, state: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> None:
    """Atomically write a flat tensor dict as safetensors; on a full disk the file is kept in
    the system's temporary folder and :class:`~bayes_smlm.io.atomic.OutputError` says where."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}

    def write(tmp: Path) -> None:
        try:
            save_file(tensors, str(tmp), metadata=dict(metadata))
        except Exception as err:  # safetensors' own error type wraps the OS's
            if type(err).__name__ != "SafetensorError":
                raise
            raise OSError(errno.EIO, os_reason(err)) from None

    write_with_rescue(
        path, write, nbytes=sum(t.numel() * t.element_size() for t in tensors.values())
    )


def _save_state(path: Path, parts: Mapping[str, Any], loop: LoopState) -> None:
    tensors: dict[str, torch.Tensor] = {}
    layout = {name: _flatten(part, name, tensors) for name, part in parts.items()}
    meta = {"layout": json.dumps(layout), "loop": json.dumps(asdict(loop))}
    save_weights(path, tensors, meta)


def _load_state(path: Path) -> tuple[dict[str, Any], LoopState]:
    tensors, meta = read_safetensors(path, argument="out")
    if "layout" not in meta or "loop" not in meta:
        raise ConfigError("out", f"{path} is not a training state of this package (no layout)")
    layout = json.loads(meta["layout"])
    parts = {name: _unflatten(obj, tensors) for name, obj in layout.items()}
    return parts, LoopState(**json.loads(meta["loop"]))


# -- the loop -------------------------------------------------------------------------------------


@dataclass
class TrainingOutcome:
    """What a run reached: its state and the best weights (already saved to ``out_dir``)."""

    state: LoopState
    best_weights: dict[str, torch.Tensor]


def train(
    model: nn.Module,
    *,
    batches: Callable[[int], Iterator[Any]],
    step_loss: Callable[[Any, int], torch.Tensor],
    validate: Callable[[], float],
    settings: LoopSettings,
    out_dir: str | Path,
    resume: bool = False,
    extra_state: Mapping[str, Stateful] | None = None,
    after_step: Callable[[int], None] | None = None,
    best_weights_of: Callable[[], Mapping[str, torch.Tensor]] | None = None,
    on_checkpoint: Callable[[LoopState], None] | None = None,
    progress: bool = True,
    description: str = "train",
) -> TrainingOutcome:
    """Train ``model`` for ``settings.steps`` optimiser steps (or until early stopping).

    Parameters
    ----------
    model : nn.Module
        Trained in place; left in eval mode holding the *last* weights on return.
    batches : callable
        ``batches(k)`` yields batch k, k+1, ... (a pure function of the seed and index).
    step_loss : callable
        ``step_loss(batch, step)`` returns the scalar loss to minimise.
    validate : callable
        Loss on the fixed validation set (the model is put in eval mode around the call).
    settings : LoopSettings
    out_dir : path
        Receives ``training_state.safetensors`` (every ``checkpoint_every`` steps and at the end)
        and ``model.safetensors`` (the best weights so far by validation loss).
    resume : bool
        Continue from ``out_dir``'s training state; an error if there is none.
    extra_state : mapping of name -> Stateful
        Further state saved and restored with the model (e.g. EMA weights).
    after_step : callable
        Called with the step index after every optimiser step (e.g. the EMA update).
    best_weights_of : callable
        The weights to keep when validation improves (default: the model's state dict).
    on_checkpoint : callable
        Called after each checkpoint with the loop state (e.g. to refresh a config file).
    """
    run = _Run(
        model,
        make_optimizer(model, settings),
        Path(out_dir),
        dict(extra_state or {}),
        best_weights_of or model.state_dict,
        on_checkpoint,
    )
    if resume:
        run.restore()
    elif run.state_path.exists():
        raise ConfigError(
            "out", f"{out_dir} already holds a training run; resume it or choose another directory"
        )
    loop = run.loop
    model.train()
    bar = tqdm(
        total=settings.steps,
        initial=loop.step,
        desc=description,
        disable=not progress,
        dynamic_ncols=True,
    )
    source = batches(loop.step)
    started = time.perf_counter() - loop.seconds
    while loop.step < settings.steps and not (loop.stopped_early or loop.out_of_time):
        run.optimise(
            step_loss(next(source), loop.step),
            settings.lr_at(loop.step, time.perf_counter() - started),
            after_step,
        )
        bar.update(1)
        bar.set_postfix(loss=f"{loop.running_loss:.3g}", best_val=f"{loop.best_val:.3g}")
        loop.out_of_time = bool(settings.max_seconds) and (
            time.perf_counter() - started >= settings.max_seconds
        )
        last = loop.step == settings.steps or loop.out_of_time
        if loop.step % settings.validate_every == 0 or last:
            run.validate(validate)
            if settings.patience and loop.stale_validations >= settings.patience:
                loop.stopped_early = True
        loop.seconds = time.perf_counter() - started
        if loop.step % settings.checkpoint_every == 0 or last or loop.stopped_early:
            run.checkpoint()
    bar.close()
    model.eval()
    return TrainingOutcome(state=loop, best_weights=copy.copy(run.best))


class _Run:
    """The state one call of :func:`train` carries: model, optimiser, extra state, the loop's
    progress and the best weights, and how each is saved, restored and updated."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        out_dir: Path,
        extra_state: dict[str, Stateful],
        best_weights_of: Callable[[], Mapping[str, torch.Tensor]],
        on_checkpoint: Callable[[LoopState], None] | None,
    ):
        self.model, self.optimizer, self.out_dir = model, optimizer, out_dir
        self.extra_state, self.best_weights_of = extra_state, best_weights_of
        self.on_checkpoint = on_checkpoint
        self.state_path = out_dir / STATE_FILE
        self.loop = LoopState()
        self.best: dict[str, torch.Tensor] = {}

    def restore(self) -> None:
        """Load the saved training state (a resumed run gets a fresh time budget)."""
        if not self.state_path.is_file():
            raise ConfigError("resume", f"no training state to resume in {self.out_dir}")
        parts, self.loop = _load_state(self.state_path)
        self.loop.out_of_time = False
        self.model.load_state_dict(parts["model"])
        self.optimizer.load_state_dict(parts["optimizer"])
        device = next(self.model.parameters()).device
        for name, holder in self.extra_state.items():
            holder.load_state_dict(parts[name])
            if hasattr(holder, "to"):  # e.g. EMA weights, stored on the CPU
                holder.to(device)
        self.best = parts.get("best", {})

    def optimise(
        self, loss: torch.Tensor, lr: float, after_step: Callable[[int], None] | None
    ) -> None:
        """One optimiser step on ``loss`` at learning rate ``lr``; the running loss and the
        step count advance."""
        loop = self.loop
        if not torch.isfinite(loss):
            raise ConfigError(
                "lr",
                f"training diverged: the loss is {loss.item()} at step "
                f"{loop.step}; lower the learning rate",
            )
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if after_step is not None:
            after_step(loop.step)
        value = float(loss.detach())
        old = loop.running_loss
        loop.running_loss = value if math.isnan(old) else 0.98 * old + 0.02 * value
        loop.step += 1

    def validate(self, validate: Callable[[], float]) -> None:
        """Record the validation loss; keep and save the weights when it improves."""
        loop = self.loop
        self.model.eval()
        with torch.no_grad():
            val = float(validate())
        self.model.train()
        loop.history.append({"step": loop.step, "val_loss": val, "train_loss": loop.running_loss})
        if val < loop.best_val:
            loop.best_val, loop.best_step, loop.stale_validations = val, loop.step, 0
            self.best.clear()
            self.best.update({k: v.detach().clone() for k, v in self.best_weights_of().items()})
            save_weights(self.out_dir / WEIGHTS_FILE, self.best, {"step": str(loop.step)})
        else:
            loop.stale_validations += 1

    def checkpoint(self) -> None:
        """Write the whole training state atomically, then tell the caller."""
        parts = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "best": self.best,
            **{name: holder.state_dict() for name, holder in self.extra_state.items()},
        }
        _save_state(self.state_path, parts, self.loop)
        if self.on_checkpoint is not None:
            self.on_checkpoint(self.loop)
