"""Checks of configuration values that fail with a one-line :class:`~bayes_smlm.errors.ConfigError`
naming the value and its allowed range: numbers, integers, choices, ranges and per-pixel maps."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from bayes_smlm.errors import ConfigError

MapLike = float | np.ndarray
"""A camera or background value: a scalar, or an (H, W) map."""


def check_number(
    name: str,
    value: Any,
    *,
    lo: float | None = None,
    lo_open: bool = False,
    hi: float | None = None,
    integer: bool = False,
) -> float | int:
    """Return ``value`` as a finite float (or int) inside the allowed range, else raise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(name, f"must be a number (got {value!r})")
    if not math.isfinite(float(value)):
        raise ConfigError(name, f"must be finite (got {value})")
    if integer:
        if float(value) != int(value):
            raise ConfigError(name, f"must be an integer (got {value})")
        value = int(value)
    else:
        value = float(value)
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise ConfigError(name, f"must be {range_text(lo, lo_open, hi)} (got {value:g})")
    if hi is not None and value > hi:
        raise ConfigError(name, f"must be {range_text(lo, lo_open, hi)} (got {value:g})")
    return value


def check_choice(name: str, value: Any, allowed: Iterable[str]) -> Any:
    """``value`` if it is one of ``allowed`` (names, or the keys of a dict), else a one-line
    ConfigError listing the choices."""
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(name, f"must be one of {', '.join(allowed)} (got {value!r})")
    return value


def check_int(name: str, value: Any, lo: int = 1) -> int:
    """``value`` as an int >= ``lo`` (bools and floats refused), else a one-line ConfigError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ConfigError(name, f"must be an integer >= {lo} (got {value!r})")
    return int(value)


def range_text(lo: float | None, lo_open: bool, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}]"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    return f"<= {hi:g}"


def check_map(
    name: str,
    value: Any,
    shape: tuple[int, int],
    *,
    lo: float | None = None,
    lo_open: bool = False,
    hi: float | None = None,
) -> MapLike:
    """Validate a scalar or a per-pixel map of the frame's shape; return float or read-only array."""
    if isinstance(value, (list, tuple)):
        try:
            value = np.asarray(value)
        except ValueError:  # ragged nested lists
            raise ConfigError(name, f"map must be a rectangular {shape} array of numbers") from None
    if not isinstance(value, np.ndarray):
        return check_number(name, value, lo=lo, lo_open=lo_open, hi=hi)
    if value.dtype.kind not in "iuf":  # strings, objects, booleans; complex would lose its part
        raise ConfigError(name, f"map must hold real numbers (got dtype {value.dtype})")
    arr = np.array(value, dtype=np.float64)
    if arr.ndim == 0:
        return check_number(name, float(arr), lo=lo, lo_open=lo_open, hi=hi)
    if arr.shape != shape:
        raise ConfigError(name, f"map must have the frame's shape {shape} (got {arr.shape})")
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ConfigError(name, f"map has a non-finite value at (row, col) = ({bad[0]}, {bad[1]})")
    if lo is not None:
        low = arr <= lo if lo_open else arr < lo
        if np.any(low):
            bad = np.argwhere(low)[0]
            raise ConfigError(
                name,
                f"map values must be {range_text(lo, lo_open, hi)} "
                f"(got {arr[tuple(bad)]:g} at (row, col) = ({bad[0]}, {bad[1]}))",
            )
    if hi is not None and np.any(arr > hi):
        bad = np.argwhere(arr > hi)[0]
        raise ConfigError(
            name,
            f"map values must be {range_text(lo, lo_open, hi)} "
            f"(got {arr[tuple(bad)]:g} at (row, col) = ({bad[0]}, {bad[1]}))",
        )
    arr.setflags(write=False)
    return arr


def check_range(
    name: str, value: Any, *, lo: float, lo_open: bool, hi: float | None = None
) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(name, f"must be two numbers 'low,high' (got {value!r})") from None
    low = check_number(name, low, lo=lo, lo_open=lo_open, hi=hi)
    high = check_number(name, high, lo=lo, lo_open=lo_open, hi=hi)
    if not high > low:
        raise ConfigError(name, f"needs low < high (got {low:g}, {high:g})")
    return (low, high)
