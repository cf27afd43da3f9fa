"""What every network checkpoint directory shares: a ``config.json`` naming its kind and task.

φ and Ψ checkpoints both keep their weights as safetensors beside this JSON; loading goes through
:func:`read_checkpoint_config` and :func:`check_task`, so a checkpoint trained for another task
configuration is refused with one line saying how the tasks differ.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.config import Task, task_from_dict

CONFIG_FILE = "config.json"
MAX_PARAMETERS = 10**9  # 4 GB of float32 weights, 10× the paper-sized UNet: beyond it, damage
MAX_WIDTH = 8192  # the largest count (channels, blocks, features) any architecture field may hold
Architecture = TypeVar("Architecture")
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "checkpoints"
SHIPPED_SUMS = SHIPPED_DIR / "SHA256SUMS"  # `sha256sum` of every shipped weights file


def shipped_checkpoint(network: str, task_name: str) -> Path:
    """Directory of the shipped checkpoint of ``network`` ("phi" or "psi") for a named task (it
    may not exist)."""
    return SHIPPED_DIR / f"{network}-{task_name}"


def read_checkpoint_config(
    checkpoint: str | Path, kind: str, argument: str = "checkpoint"
) -> dict[str, Any]:
    """The JSON config of a checkpoint directory of ``kind`` (one-line error if absent or foreign;
    ``argument`` is what named the directory: ``checkpoint``, or ``out`` when resuming)."""
    path = Path(checkpoint) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(argument, f"{checkpoint} is not a {kind} checkpoint (no {CONFIG_FILE})")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ConfigError(argument, f"{path} is not valid JSON ({err.msg})") from None
    if not isinstance(config, dict) or "task" not in config:
        raise ConfigError(
            argument, f"{path} is not a checkpoint config (a JSON object with 'kind' and 'task')"
        )
    if config.get("kind") != kind:
        raise ConfigError(
            argument, f"{checkpoint} holds a {config.get('kind')!r} checkpoint, not {kind!r}"
        )
    return config


def task_differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Human-readable differences between two task dicts (the name is ignored)."""
    out = []
    for key in sorted(set(a) | set(b)):
        if key == "name" and not prefix:
            continue
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += task_differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key} {_short(va)} vs {_short(vb)}")
    return out


def _short(value: Any) -> str:
    """A constant as written in a difference: a per-pixel map by name, a range by its values."""
    if isinstance(value, list) and any(isinstance(item, list) for item in value):
        return "a map"
    return repr(tuple(value)) if isinstance(value, list) else repr(value)


def _only(task: dict[str, Any], keys: tuple[str, ...] | None) -> dict[str, Any]:
    """The constants ``keys`` (dotted: ``"optics"``, ``"prior.i0_range"``) of a task dict, or all
    of them (None)."""
    if keys is None:
        return task
    out: dict[str, Any] = {}
    for key in keys:
        section, _, field = key.partition(".")
        if field:
            out.setdefault(section, {})[field] = task[section][field]
        else:
            out[section] = task[section]
    return out


def check_task(
    config: dict[str, Any],
    task: Task,
    checkpoint: str | Path,
    argument: str = "checkpoint",
    keys: tuple[str, ...] | None = None,
) -> None:
    """Refuse a checkpoint whose recorded task differs from ``task`` in any constant, or in any of
    ``keys`` when given (a constant added to the package after the checkpoint was written counts
    at its default)."""
    diffs = task_differences(
        _only(task_from_dict(config["task"]).to_dict(), keys), _only(task.to_dict(), keys)
    )
    if diffs:
        raise ConfigError(
            argument,
            f"{checkpoint} was trained for task "
            f"{config['task'].get('name')!r}, which differs from "
            f"{task.name!r} in {'; '.join(diffs[:3])}",
        )


def open_checkpoint(
    checkpoint: str | Path | None,
    task: Task,
    *,
    kind: str,
    shipped: Path,
    payload: str,
    label: str,
    train_command: str,
    keys: tuple[str, ...] | None = None,
    argument: str = "checkpoint",
) -> tuple[Path, dict[str, Any]]:
    """Resolve a checkpoint directory (None: the ``shipped`` one), read its config, refuse it for
    another task (one differing in any constant, or in any of ``keys``: see :func:`check_task`),
    and require its ``payload`` (weights file or folder) to exist. ``argument`` names the option
    that chose the checkpoint in errors.

    Returns
    -------
    (directory, config)
    """
    if checkpoint is None:
        checkpoint = shipped
        if not (checkpoint / payload).exists():
            raise ConfigError(
                argument,
                f"no shipped {label} checkpoint for task "
                f"{task.name!r}; train one with "
                f"`bayes-smlm {train_command}`",
            )
        verify_shipped(checkpoint)
    checkpoint = Path(checkpoint)
    config = read_checkpoint_config(checkpoint, kind, argument)
    check_task(config, task, checkpoint, argument, keys)
    if not (checkpoint / payload).exists():
        raise ConfigError(argument, f"{checkpoint} has no {payload} yet")
    return checkpoint, config


def kept_sections(
    checkpoint: str | Path, kind: str, keys: tuple[str, ...] = ("detection", "metrics")
) -> dict[str, Any]:
    """Sections of an existing ``config.json`` that later steps wrote (kept when the training loop
    rewrites the file)."""
    if not (Path(checkpoint) / CONFIG_FILE).is_file():
        return {}
    config = read_checkpoint_config(checkpoint, kind)
    return {key: config[key] for key in keys if key in config}


def read_safetensors(
    path: str | Path, argument: str = "checkpoint"
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file, refusing in one line a file that is missing,
    damaged (truncated, corrupted, or not safetensors at all — e.g. a pickle under that name) or
    that holds non-finite floating-point values. Nothing is ever unpickled."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(argument, f"{path} is missing")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(
            argument,
            f"{path} is not a readable safetensors file ({reason}); "
            "it may be truncated, corrupted or of another format",
        ) from None
    bad = [
        name
        for name, value in tensors.items()
        if value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]
    if bad:
        raise ConfigError(
            argument,
            f"{path} holds non-finite values (NaN or inf) in {len(bad)} tensor(s), e.g. {bad[0]!r}",
        )
    return tensors, metadata


def weights_sha256(path: str | Path) -> str:
    """SHA-256 of a weights file (identifies a checkpoint's weights)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def verify_shipped(directory: Path) -> None:
    """Refuse a shipped checkpoint whose weights differ from the SHA-256 recorded at release."""
    directory = Path(directory).resolve()
    for line in SHIPPED_SUMS.read_text(encoding="utf-8").splitlines():
        digest, name = line.split(maxsplit=1)
        path = (SHIPPED_DIR / name).resolve()
        if path.is_relative_to(directory) and (
            not path.is_file() or weights_sha256(path) != digest
        ):
            raise ConfigError(
                "checkpoint",
                f"the shipped {path.relative_to(SHIPPED_DIR)} is "
                "missing or differs from its released SHA-256 "
                "(checkpoints/SHA256SUMS); reinstall the package",
            )


def architecture_from(
    cls: type[Architecture], data: Any, checkpoint: str | Path, section: str = "architecture"
) -> Architecture:
    """``cls.from_dict(data)`` for a dataclass of architecture settings read from a checkpoint's
    config.json, every field checked first against the type of its default (an int where an
    int belongs, in [0, 8192]; a finite float; a string; a sequence of those): a one-line
    ConfigError naming the checkpoint and the field for a missing section, an unknown field or
    a wrong value, never a torch traceback or a request for hundreds of GB."""
    where = f"{checkpoint}: {CONFIG_FILE} {section}"
    if not isinstance(data, dict):
        raise ConfigError(
            "checkpoint", f"{where} must be a JSON object (got {type(data).__name__})"
        )
    settings: Any = cls  # a dataclass with from_dict (a TypeVar cannot say so)
    fields = {f.name: f for f in dataclasses.fields(settings)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError("checkpoint", f"{where} has unknown fields {unknown}")
    for name, value in data.items():
        default = fields[name].default
        if isinstance(default, tuple):
            if not isinstance(value, (list, tuple)) or not all(
                _fits(v, default[0] if default else v) for v in value
            ):
                raise ConfigError(
                    "checkpoint",
                    f"{where}.{name} must be a list like {list(default)} (got {value!r:.60})",
                )
        elif default is not dataclasses.MISSING and not _fits(value, default):
            raise ConfigError(
                "checkpoint", f"{where}.{name} must be {_kind(default)} (got {value!r:.60})"
            )
    try:
        return settings.from_dict(data)
    except ConfigError as err:
        raise ConfigError("checkpoint", f"{where}.{err.argument}: {err.message}") from None
    except (TypeError, ValueError) as err:
        raise ConfigError("checkpoint", f"{where} is not valid ({err})") from None


def _fits(value: Any, like: Any) -> bool:
    """Whether ``value`` from JSON can stand where ``like`` (a default) stands."""
    if isinstance(like, bool):
        return isinstance(value, bool)
    if isinstance(like, int):
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_WIDTH
    if isinstance(like, float):
        return (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        )
    if isinstance(like, str):
        return isinstance(value, str)
    return True


def _kind(like: Any) -> str:
    if isinstance(like, bool):
        return "true or false"
    if isinstance(like, int):
        return f"an integer in [0, {MAX_WIDTH}]"
    if isinstance(like, float):
        return "a finite number"
    return "a string" if isinstance(like, str) else type(like).__name__


def build_network(build: Callable[[], nn.Module], checkpoint: str | Path) -> nn.Module:
    """``build()``, after building it once without memory (torch's meta device) to count its
    parameters: a config that describes a network beyond :data:`MAX_PARAMETERS` is refused in
    one line before torch asks for the memory."""
    try:
        with torch.device("meta"):
            size = sum(p.numel() for p in build().parameters())
    except (NotImplementedError, RuntimeError) as err:
        if "meta" not in str(err):  # a builder that moves tensors (sbi's flows): fields bounded
            raise ConfigError(
                "checkpoint",
                f"{checkpoint}: its config does not describe a "
                f"network this package can build ({err})",
            ) from None
        size = 0
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise ConfigError(
            "checkpoint",
            f"{checkpoint}: its config does not describe a network this package can build ({err})",
        ) from None
    if size > MAX_PARAMETERS:
        raise ConfigError(
            "checkpoint",
            f"{checkpoint}: its config describes a network of "
            f"{size:.3g} parameters (at most {MAX_PARAMETERS:.0e}); "
            "the file is damaged or not this package's",
        )
    return build()


def load_weights(
    model: nn.Module, weights: dict[str, torch.Tensor], checkpoint: str | Path
) -> nn.Module:
    """``model.load_state_dict(weights)`` (strict), a one-line ConfigError naming what does not
    fit where the weights and the config disagree (missing, extra or reshaped tensors)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    reshaped = sorted(
        k
        for k in set(expected) & set(weights)
        if tuple(expected[k].shape) != tuple(weights[k].shape)
    )
    if missing or extra or reshaped:
        parts = [
            f"{label} {names[0]!r}{f' and {len(names) - 1} more' if len(names) > 1 else ''}"
            for label, names in (
                ("missing", missing),
                ("unexpected", extra),
                ("reshaped", reshaped),
            )
            if names
        ]
        raise ConfigError(
            "checkpoint",
            f"{checkpoint}: its weights do not fit the network its "
            f"config describes ({'; '.join(parts)})",
        )
    model.load_state_dict(weights)
    return model
