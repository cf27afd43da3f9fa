"""What every network checkpoint directory shares: a ``config.json`` naming its kind and task.

φ and Ψ checkpoints both keep their weights as safetensors beside this JSON; loading goes through
:func:`read_checkpoint_config` and :func:`check_task`, so a checkpoint trained for another task
configuration is refused with one line saying how the tasks differ.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.config import Task

CONFIG_FILE = "config.json"
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "checkpoints"


def shipped_checkpoint(network: str, task_name: str) -> Path:
    """Directory of the shipped checkpoint of ``network`` ("phi" or "psi") for a named task (it
    may not exist)."""
    return SHIPPED_DIR / f"{network}-{task_name}"


def read_checkpoint_config(checkpoint: str | Path, kind: str) -> dict[str, Any]:
    """The JSON config of a checkpoint directory of ``kind`` (one-line error if absent or foreign)."""
    path = Path(checkpoint) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError("checkpoint", f"{checkpoint} is not a {kind} checkpoint "
                                          f"(no {CONFIG_FILE})")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ConfigError("checkpoint", f"{path} is not valid JSON ({err.msg})") from None
    if config.get("kind") != kind:
        raise ConfigError("checkpoint", f"{checkpoint} holds a {config.get('kind')!r} "
                                          f"checkpoint, not {kind!r}")
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
    return "a map" if isinstance(value, list) else repr(value)


def check_task(config: dict[str, Any], task: Task, checkpoint: str | Path) -> None:
    """Refuse a checkpoint whose recorded task differs from ``task`` in any constant."""
    diffs = task_differences(config["task"], task.to_dict())
    if diffs:
        raise ConfigError("checkpoint", f"{checkpoint} was trained for task "
                                          f"{config['task'].get('name')!r}, which differs from "
                                          f"{task.name!r} in {'; '.join(diffs[:3])}")


def open_checkpoint(checkpoint: str | Path | None, task: Task, *, kind: str, shipped: Path,
                    payload: str, label: str, train_command: str) -> tuple[Path, dict[str, Any]]:
    """Resolve a checkpoint directory (None: the ``shipped`` one), read its config, refuse it for
    another task, and require its ``payload`` (weights file or folder) to exist.

    Returns
    -------
    (directory, config)
    """
    if checkpoint is None:
        checkpoint = shipped
        if not (checkpoint / payload).exists():
            raise ConfigError("checkpoint", f"no shipped {label} checkpoint for task "
                                              f"{task.name!r}; train one with "
                                              f"`bayes-smlm {train_command}`")
    checkpoint = Path(checkpoint)
    config = read_checkpoint_config(checkpoint, kind)
    check_task(config, task, checkpoint)
    if not (checkpoint / payload).exists():
        raise ConfigError("checkpoint", f"{checkpoint} has no {payload} yet")
    return checkpoint, config


def kept_sections(checkpoint: str | Path, kind: str,
                  keys: tuple[str, ...] = ("detection", "metrics")) -> dict[str, Any]:
    """Sections of an existing ``config.json`` that later steps wrote (kept when the training loop
    rewrites the file)."""
    if not (Path(checkpoint) / CONFIG_FILE).is_file():
        return {}
    config = read_checkpoint_config(checkpoint, kind)
    return {key: config[key] for key in keys if key in config}
