"""``bayes-smlm methods``: the registered posterior methods (built-in and plug-in) and the options
each takes, read from the method's own signature and docstring; and ``posterior --option
KEY=VALUE``, which hands any of those options to the method — a plug-in's too."""

from __future__ import annotations

import argparse
import inspect
import json
import re
from typing import Any

from bayes_smlm.errors import ConfigError

# what every method receives from `posterior` itself, not from the user's options
CALL_ARGUMENTS = ("task", "adu", "progress", "first_frame", "theta_true")


def method_options(fn) -> list[tuple[str, Any]]:
    """(name, default) of each keyword option of a method, in its signature's order."""
    return [(name, p.default) for name, p in inspect.signature(fn).parameters.items()
            if name not in CALL_ARGUMENTS and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


def method_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` → (key, value), the value read as JSON where it is JSON (numbers, true,
    false, null, lists) and as text otherwise."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"must be KEY=VALUE with KEY an option name (got "
                                         f"{text!r}; `bayes-smlm methods --show NAME` lists them)")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def merge_options(options: dict[str, Any], given: list[tuple[str, Any]] | None) -> dict[str, Any]:
    """``options`` with the ``--option`` pairs added; a key set twice is a one-line error."""
    merged = dict(options)
    for key, value in given or ():
        if key in merged:
            raise ConfigError("option", f"{key} is given twice (by its own flag or a second "
                                        "--option)")
        merged[key] = value
    return merged


def cmd_methods(args: argparse.Namespace) -> int:
    from bayes_smlm.methods import get_method, list_methods
    if args.show:
        fn = get_method(args.show)
        first, *rest = _paragraphs(fn)
        print(f"{args.show}: {first}\n\noptions (--option KEY=VALUE, or the flag of the same "
              "name):")
        for name, default in method_options(fn):
            shown = "required" if default is inspect.Parameter.empty else repr(default)
            print(f"  {name} = {shown}")
        if rest:
            print("\n" + "\n\n".join(rest))
        return 0
    for name in list_methods():
        print(f"{name:14s} {_summary(get_method(name))}")
    return 0


def _paragraphs(fn) -> list[str]:
    """A method's docstring, paragraph by paragraph (at least one, maybe empty)."""
    return (inspect.getdoc(fn) or "").split("\n\n")


def _summary(fn, width: int = 100) -> str:
    """The first sentence of a method's docstring, on one line of at most ``width`` characters."""
    first = " ".join(_paragraphs(fn)[0].split())
    sentence = re.split(r"(?<=\.)\s+(?=[A-Z`(])", first)[0]
    return sentence if len(sentence) <= width - 15 else sentence[:width - 16] + "…"


def add_method_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("methods", help="list the posterior methods (plug-ins included), or one "
                                       "method's options")
    p.add_argument("--show", metavar="NAME", help="print method NAME's options and defaults")
    p.set_defaults(handler=cmd_methods)
