"""Argument types and error reporting for the command line: one line per error, no traceback."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from collections.abc import Iterator, Mapping
from typing import NoReturn

from bayes_smlm.errors import BayesSMLMError, ConfigError
from bayes_smlm.forward.config import parse_override
from bayes_smlm.forward.tasks import get_task


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


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    return _bounded_int(text, 0, None, "an integer >= 0")


def chain_count(text: str) -> int:
    """An integer >= 2 (R-hat compares chains)."""
    return _bounded_int(text, 2, None, "an integer >= 2")


def seed_int(text: str) -> int:
    """An integer in [0, 2^32)."""
    return _bounded_int(text, 0, 2**32, "an integer in [0, 2^32)")


def frame_range(text: str) -> tuple[int, int]:
    """``START:STOP`` with 0 <= START < STOP (frames START … STOP − 1)."""
    start, sep, stop = text.partition(":")
    try:
        first, last = int(start), int(stop)
    except ValueError:
        first = last = -1
    if not sep or not 0 <= first < last:
        raise argparse.ArgumentTypeError(
            f"must be START:STOP with 0 <= START < STOP (got {text!r})"
        )
    return first, last


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


def fraction_below_one(text: str) -> float:
    """A finite number in [0, 1)."""
    value = non_negative_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1) (got {text!r})")
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
        raise argparse.ArgumentTypeError(
            f"{text!r} asked for, but torch sees no CUDA GPU here "
            "(install the gpu extra on a machine with one)"
        )
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text!r}: only {torch.cuda.device_count()} GPU(s) here")
    return text


def scheduler_address(text: str) -> str:
    """A Dask scheduler address (tcp://host:8786) or local:N (N >= 1 worker processes)."""
    from bayes_smlm.cluster.client import check_scheduler

    try:
        return check_scheduler(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(err.message) from None


def flag_names(parser: argparse.ArgumentParser, **aliases: str) -> dict[str, str]:
    """How the user wrote each argument of ``parser``, by the name the library uses: the long
    option for options (``batch_size`` → ``--batch-size``), the metavar for positionals.
    ``aliases`` map library names that differ from the option's (``steps="--ddim-steps"``)."""
    names: dict[str, str] = {}
    for action in parser._actions:  # argparse keeps no public list of its actions
        if action.option_strings:  # the first flag of a dest (--recalibrate, not --raw)
            names.setdefault(action.dest, max(action.option_strings, key=len))
        elif action.dest not in ("help", argparse.SUPPRESS):
            metavar = action.metavar if isinstance(action.metavar, str) else None
            names.setdefault(action.dest, metavar or action.dest.upper())
    return {**names, **aliases}


@contextlib.contextmanager
def report_errors(prog: str, flags: Mapping[str, str] | None = None) -> Iterator[None]:
    """Turn package errors into one stderr line and exit status 2; Ctrl-C into status 130.

    ``flags`` (see :func:`flag_names`) maps the argument a :class:`ConfigError` names to what the
    user typed on this command line.
    """
    try:
        yield
    except ConfigError as err:
        argument = (flags or {}).get(err.argument, err.argument)
        print(f"{prog}: error: argument {argument}: {err.message}", file=sys.stderr)
        raise SystemExit(2) from None
    except BayesSMLMError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except MemoryError:
        print(f"{prog}: error: out of memory; use fewer frames or a smaller batch", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as err:  # a disk that filled, a folder that vanished: the OS's words
        if not _is_output_failure(err):
            raise
        from bayes_smlm.io.atomic import os_reason

        where = getattr(err, "filename", None)
        print(
            f"{prog}: error: {where}: {os_reason(err)}"
            if where
            else f"{prog}: error: an output could not be written ({os_reason(err)})",
            file=sys.stderr,
        )
        raise SystemExit(1) from None


def _is_output_failure(err: BaseException) -> bool:
    """An operating-system failure of reading or writing (OSError, or safetensors' own error
    type, which wraps one) rather than a bug."""
    return isinstance(err, OSError) or type(err).__name__ == "SafetensorError"


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    """``--task`` and the repeatable ``--set KEY=VALUE`` override."""
    parser.add_argument("--task", required=True, help="task name (see `bayes-smlm tasks`)")
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a task constant, e.g. --set i0=500 --set "
        "camera.gain=gain.npy (maps: .npy, .tif, .csv of the frame's shape); "
        "repeatable",
    )


def task_from_args(args: argparse.Namespace):
    """The task named by ``--task`` with the ``--set`` overrides applied."""
    overrides = dict(parse_override(item) for item in args.set or [])
    return get_task(args.task, overrides)


def json_text(data) -> str:
    """Strict JSON for ``--json`` output: NaN and infinities (not JSON) become ``null``."""

    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(data), indent=2, allow_nan=False)
