"""``bayes-smlm methods``: the registered posterior methods (built-in and plug-in), what each is
and the options it takes, from its :class:`~bayes_smlm.methods.spec.MethodSpec`; and
``posterior --option KEY=VALUE``, which hands any of those options to the method — a plug-in's
too."""

from __future__ import annotations

import argparse
import json
import textwrap
from typing import Any

from bayes_smlm.errors import ConfigError


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
    from bayes_smlm.methods import list_methods
    from bayes_smlm.methods.registry import method_spec
    if args.show:
        spec = method_spec(args.show)
        first, *rest = spec.paragraphs
        print(f"{args.show}: {first}\n")
        print(f"returns: {RETURNS_SAID[spec.returns]}")
        print(f"emitter count: {COUNT_SAID[spec.emitter_count]}")
        print(f"i0 and background: {BRIGHTNESS_SAID[spec.brightness]}")
        print(f"flags a frame when: {spec.flags}")
        print(f"chunked runs (--out FILE.zarr, --scheduler): "
              f"{'yes' if spec.chunkable else 'no (it seeds its frames as one batch)'}")
        print("\noptions (--option KEY=VALUE, or the flag of the same name):")
        for option in spec.options:
            shown = "required" if option.required else repr(option.default)
            print(f"  {option.name} = {shown}")
            if option.help:
                print(textwrap.fill(option.help, 96, initial_indent="      ",
                                    subsequent_indent="      "))
        if rest:
            print("\n" + "\n\n".join(p for p in rest if not p.startswith("Parameters\n")))
        return 0
    print(f"{'name':12s} {'θ?':5s} {'count':8s} {'i0, b':7s} what it is "
          "(`bayes-smlm methods --show NAME`: options and flags)")
    for name in list_methods():
        spec = method_spec(name)
        print(f"{name:12s} {spec.returns:5s} {spec.emitter_count:8s} {spec.brightness:7s} "
              f"{spec.summary(70)}")
    return 0


RETURNS_SAID = {"draws": "θ draws (chains × draws per frame) and the KDE's moments",
                "kde": "the KDE's moments (and samples) only, no θ"}
COUNT_SAID = {"given": "the task's, given", "evidence": "weighed by evidence over the counts "
                                                        "of --n-emitters (P(n | x))",
              "trained": "as the network learned it from the task"}
BRIGHTNESS_SAID = {"fixed": "held at the task's values (a task that draws them is refused)",
                   "as_task": "latent where the task draws them, the task's values otherwise",
                   "trained": "as the network learned them from the task"}


def add_method_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("methods", help="list the posterior methods (plug-ins included), or one "
                                       "method's options")
    p.add_argument("--show", metavar="NAME", help="print method NAME's options and defaults")
    p.set_defaults(handler=cmd_methods)
