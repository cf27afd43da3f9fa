"""``bayes-smlm methods``: the registered posterior methods (built-in and plug-in), what each is
and the options it takes, from its :class:`~bayes_smlm.methods.spec.MethodSpec`; and
``posterior --option KEY=VALUE``, which hands any of those options to the method — a plug-in's
too."""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path
from typing import Any

from bayes_smlm.cli.arguments import positive_int, torch_device
from bayes_smlm.errors import ConfigError
from bayes_smlm.surrogates.settings import (
    DEFAULT_SOLVER,
    DEFAULT_STEPS,
    SAMPLING_PRECISIONS,
    SOLVERS,
    STARTS,
)


def method_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` → (key, value), the value read as JSON where it is JSON (numbers, true,
    false, null, lists) and as text otherwise."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(
            f"must be KEY=VALUE with KEY an option name (got "
            f"{text!r}; `bayes-smlm methods --show NAME` lists them)"
        )
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def merge_options(options: dict[str, Any], given: list[tuple[str, Any]] | None) -> dict[str, Any]:
    """``options`` with the ``--option`` pairs added; a key set twice is a one-line error."""
    merged = dict(options)
    for key, value in given or ():
        if key in merged:
            raise ConfigError(
                "option", f"{key} is given twice (by its own flag or a second --option)"
            )
        merged[key] = value
    return merged


METHOD_OPTIONS = "method options"  # the title of posterior's group of method flags
SETS_OPTION = {"full_chain": "steps=None"}  # a flag whose dest is not the option it sets


def _option_of(action: argparse.Action) -> str | None:
    """The method option a flag of :data:`METHOD_OPTIONS` sets, else None."""
    group = getattr(action, "container", None)
    if getattr(group, "title", None) != METHOD_OPTIONS:
        return None
    return SETS_OPTION.get(action.dest, action.dest)


def add_method_flags(p: argparse.ArgumentParser) -> None:
    """``posterior``'s flags for the options several methods share (typed and checked here;
    ``--option KEY=VALUE`` sets any option, a plug-in's too). Each is handed to the method as the
    option of its name when given. Their help says what the option is, never which methods
    take it: :class:`MethodOptionsHelp` adds that from the methods' specs."""
    options = p.add_argument_group(
        METHOD_OPTIONS,
        "each passed to the method as the option "
        "of its name; [the registered methods that take it]; "
        "bayes-smlm methods --show NAME lists a method's options",
    )
    options.add_argument(
        "--chains",
        type=positive_int,
        default=None,
        help="chains (or independent runs) per frame (default: the method's)",
    )
    options.add_argument(
        "--draws",
        type=positive_int,
        default=None,
        help="retained draws per chain (default: the method's)",
    )
    options.add_argument(
        "--samples",
        type=positive_int,
        default=None,
        help="KDE samples per frame (default: the method's)",
    )
    options.add_argument(
        "--start",
        choices=STARTS,
        default=None,
        help="start of the reverse diffusion (default guess)",
    )
    options.add_argument(
        "--steps",
        "--ddim-steps",
        dest="steps",
        type=positive_int,
        default=None,
        help=f"steps of the method's sampler (the diffusion solver's denoising "
        f"steps, default {DEFAULT_STEPS}; random-walk MH's steps)",
    )
    options.add_argument(
        "--solver",
        choices=SOLVERS,
        default=None,
        help=f"few-step diffusion sampler: {' | '.join(SOLVERS)} (DDIM, "
        f"DPM-Solver++ 2M, UniPC; default {DEFAULT_SOLVER})",
    )
    options.add_argument(
        "--full-chain",
        action="store_true",
        help="every step of the DDPM reverse chain (steps = none: as published; slow on CPU)",
    )
    options.add_argument(
        "--init",
        default=None,
        help="detect | laplace: chains start at the detections (default) or "
        "sample coordinates whitened by each frame's Laplace fit",
    )
    options.add_argument(
        "--warmup",
        type=positive_int,
        default=None,
        help="adaptation steps per chain (default: the method's)",
    )
    options.add_argument(
        "--max-leapfrog",
        type=positive_int,
        default=None,
        help="cap on leapfrog steps per draw (default 100; 2 suits one-emitter, "
        "near-Gaussian posteriors)",
    )
    options.add_argument(
        "--precision",
        choices=SAMPLING_PRECISIONS,
        default=None,
        help="network arithmetic (default auto: bf16 where the hardware has it, else fp32)",
    )
    options.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="network checkpoint directory (default: the shipped one for the task)",
    )
    options.add_argument(
        "--device",
        type=torch_device,
        default=None,
        help="torch device, cpu (default) | cuda | cuda:N",
    )
    options.add_argument(
        "--n-emitters",
        metavar="COUNTS",
        default=None,
        help="emitter counts to weigh by their evidence, a list or range "
        "(0,1,2 or 0-3; default: the task's count, or every count its "
        "prior.count allows); writes log p(x | n) and P(n | x) to the "
        "file's evidence group and, with several counts, the KDE mixture "
        "over n",
    )
    spread = options.add_mutually_exclusive_group()
    spread.add_argument(
        "--recalibrate",
        dest="recalibrate",
        action="store_true",
        default=None,
        help="require the checkpoint's post-hoc spread recalibration (fitted on "
        "separate simulated frames; by default applied where the "
        "checkpoint has one for the sampler used)",
    )
    spread.add_argument(
        "--raw",
        dest="recalibrate",
        action="store_false",
        help="the network's samples as drawn, without the recalibration",
    )
    options.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="frames per compiled call (default: the method's)",
    )
    p.set_defaults(
        method_flags=tuple(
            dict.fromkeys(
                action.dest for action in options._group_actions if action.dest != "full_chain"
            )
        )
    )


def method_flags() -> dict[str, str]:
    """option name → the ``posterior`` flag that sets it (the first, for an option with two)."""
    probe = argparse.ArgumentParser(add_help=False)
    add_method_flags(probe)
    flags = {"seed": "--seed"}  # posterior's own flag, handed to every method
    for action in probe._actions:
        if _option_of(action) == action.dest:
            flags.setdefault(action.dest, action.option_strings[0])
    return flags


def methods_taking(option: str) -> list[str]:
    """The registered methods (plug-ins included) that take ``option`` — ``NAME=None``: that
    take NAME and whose annotation of it admits None."""
    from bayes_smlm.methods import list_methods
    from bayes_smlm.methods.registry import method_spec

    name, _, value = option.partition("=")
    return [
        method
        for method in list_methods()
        if any(
            o.name == name and (value != "None" or "None" in o.annotation)
            for o in method_spec(method).options
        )
    ]


class MethodOptionsHelp(argparse.HelpFormatter):
    """``posterior --help``: each method-option flag's help ends with the registered methods
    that take its option, read from their specs when the help is printed (importing every
    method costs seconds, which no other command should pay)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = super()._get_help_string(action)
        option = _option_of(action)
        if option is None or text is None:
            return text
        takers = methods_taking(option)
        return f"{text} [{', '.join(takers) if takers else 'no registered method'}]"


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
        print(
            f"chunked runs (--out FILE.zarr, --scheduler): "
            f"{'yes' if spec.chunkable else 'no (it seeds its frames as one batch)'}"
        )
        print("\noptions (`posterior --option KEY=VALUE`, or the flag shown):")
        flags = method_flags()
        for option in spec.options:
            shown = "required" if option.required else repr(option.default)
            flag = flags.get(option.name, f"--option {option.name}=…")
            print(f"  {option.name} = {shown}    ({flag})")
            if option.help:
                print(
                    textwrap.fill(
                        option.help, 96, initial_indent="      ", subsequent_indent="      "
                    )
                )
        if rest:
            print("\n" + "\n\n".join(p for p in rest if not p.startswith("Parameters\n")))
        return 0
    print(
        f"{'name':12s} {'θ?':5s} {'count':8s} {'i0, b':7s} what it is "
        "(`bayes-smlm methods --show NAME`: options and flags)"
    )
    for name in list_methods():
        spec = method_spec(name)
        print(
            f"{name:12s} {spec.returns:5s} {spec.emitter_count:8s} {spec.brightness:7s} "
            f"{spec.summary(70)}"
        )
    return 0


RETURNS_SAID = {
    "draws": "θ draws (chains × draws per frame) and the KDE's moments",
    "kde": "the KDE's moments (and samples) only, no θ",
}
COUNT_SAID = {
    "given": "the task's, given",
    "evidence": "weighed by evidence over the counts of --n-emitters (P(n | x))",
    "trained": "as the network learned it from the task",
}
BRIGHTNESS_SAID = {
    "fixed": "held at the task's values (a task that draws them is refused)",
    "as_task": "latent where the task draws them, the task's values otherwise",
    "trained": "as the network learned them from the task",
}


def add_method_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "methods", help="list the posterior methods (plug-ins included), or one method's options"
    )
    p.add_argument("--show", metavar="NAME", help="print method NAME's options and defaults")
    p.set_defaults(handler=cmd_methods)
