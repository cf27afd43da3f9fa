"""Argument types and error reporting for the command line: one line per error, no traceback."""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from typing import Iterator, NoReturn

from .errors import BayesSMLMError


class OneLineErrorParser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line on stderr, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _bounded_int(text: str, lo: int, hi: int | None, allowed: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {allowed} (got {text!r})") from None
    if value < lo or (hi is not None and value >= hi):
        raise argparse.ArgumentTypeError(f"must be {allowed} (got {value})")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1."""
    return _bounded_int(text, 1, None, "an integer >= 1")


def seed_int(text: str) -> int:
    """An integer in [0, 2^32)."""
    return _bounded_int(text, 0, 2**32, "an integer in [0, 2^32)")


def finite_float(text: str) -> float:
    """A finite real number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number (got {text!r})") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite (got {text!r})")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0 (got {text!r})")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (got {text!r})")
    return value


def torch_device(text: str) -> str:
    """A torch device name that this machine has: cpu, cuda or cuda:N."""
    import torch
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"must be cpu, cuda or cuda:N (got {text!r})") from None
    if device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"must be cpu, cuda or cuda:N (got {text!r})")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r} asked for, but torch sees no CUDA GPU here "
                                         "(install the gpu extra on a machine with one)")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text!r}: only {torch.cuda.device_count()} GPU(s) here")
    return text


@contextlib.contextmanager
def report_errors(prog: str) -> Iterator[None]:
    """Turn package errors into one stderr line and exit status 2; Ctrl-C into status 130."""
    try:
        yield
    except BayesSMLMError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
