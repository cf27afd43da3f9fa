"""What a posterior method is, declared once: :class:`MethodSpec`.

A method registers its function with :func:`~bayes_smlm.methods.registry.register_method` and
says there what the function alone cannot: whether it returns θ draws or only the KDE's moments,
whether it is told the emitter count or weighs counts by their evidence, whether it holds i0 and
the background at the task's values, and how it decides that a frame is not to be trusted. Its
options are read from the function itself — keyword arguments with defaults, annotated, and
described in the docstring's ``Parameters`` section — so that a new option is written in one
place. The command line (``bayes-smlm methods``, ``posterior``), the chunked Dask path and the
reports read this object; nothing lists methods or their options by hand.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

# what every method receives from `posterior` itself, not from the user's options
CALL_ARGUMENTS = ("task", "adu", "progress", "first_frame", "theta_true")
Returns = Literal["draws", "kde"]
EmitterCount = Literal["given", "evidence", "trained"]
Brightness = Literal["fixed", "as_task", "trained"]
RETURNS: tuple[Returns, ...] = ("draws", "kde")
EMITTER_COUNTS: tuple[EmitterCount, ...] = ("given", "evidence", "trained")
BRIGHTNESS: tuple[Brightness, ...] = ("fixed", "as_task", "trained")
MCMC_FLAGS = (
    "R-hat > 1.01, bulk ESS < 400 or a divergent transition (over its chains; one "
    "chain: not checked)"
)


@dataclass(frozen=True)
class MethodOption:
    """One keyword option of a method: its name, default (``inspect.Parameter.empty``: none),
    annotation as written, and the docstring's description of it ("" where it has none)."""

    name: str
    default: Any
    annotation: str
    help: str

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty


@dataclass(frozen=True)
class MethodSpec:
    """A registered posterior method.

    Attributes
    ----------
    name : str
        Its registry name (``posterior --method NAME``).
    fn : callable
        ``fn(task, adu, *, seed, chains, draws, progress, **options) -> PosteriorResult``.
    returns : {"draws", "kde"}
        ``draws``: θ draws (chains, draws, frames, emitters, 2) beside the KDE moments; ``kde``:
        only the KDE's moments (and samples), no θ — scored on the KDE alone.
    emitter_count : {"given", "evidence", "trained"}
        ``given``: told n (the task's); ``evidence``: takes ``n_emitters`` counts and weighs them
        by their evidence, P(n | x); ``trained``: a network that learned the task's counts.
    brightness : {"fixed", "as_task", "trained"}
        ``fixed``: i0 and the background held at the task's values (a task that draws them is
        refused); ``as_task``: latent where the task draws them (``prior.brightness = drawn``),
        the task's values otherwise; ``trained``: a network that learned the task's prior.
    flags : str
        How the method decides that a frame's posterior is not to be trusted
        (``PosteriorResult.flagged``), in words.
    """

    name: str
    fn: Any
    returns: Returns = "draws"
    emitter_count: EmitterCount = "given"
    brightness: Brightness = "fixed"
    flags: str = MCMC_FLAGS

    def __post_init__(self) -> None:
        for field, value, allowed in (
            ("returns", self.returns, RETURNS),
            ("emitter_count", self.emitter_count, EMITTER_COUNTS),
            ("brightness", self.brightness, BRIGHTNESS),
        ):
            if value not in allowed:
                raise ValueError(
                    f"method {self.name!r}: {field} must be one of "
                    f"{', '.join(allowed)} (got {value!r})"
                )

    @cached_property  # read by every parser build and --show: parse the docstring once
    def options(self) -> tuple[MethodOption, ...]:
        """Its keyword options, in the signature's order, with the docstring's help."""
        described = _described_parameters(inspect.getdoc(self.fn) or "")
        out = []
        for name, p in inspect.signature(self.fn).parameters.items():
            if name in CALL_ARGUMENTS or p.kind not in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
                continue
            annotation = "" if p.annotation is p.empty else str(p.annotation)
            out.append(MethodOption(name, p.default, annotation, described.get(name, "")))
        return tuple(out)

    @property
    def chunkable(self) -> bool:
        """Whether it takes ``first_frame`` (seeds each frame by its index in the run), so that
        runs split into chunks (``posterior --out FILE.zarr``, Dask) reproduce one call."""
        return "first_frame" in inspect.signature(self.fn).parameters

    @property
    def paragraphs(self) -> list[str]:
        """Its docstring, paragraph by paragraph (at least one, maybe empty)."""
        return (inspect.getdoc(self.fn) or "").split("\n\n")

    def summary(self, width: int = 100) -> str:
        """The docstring's first sentence, on one line of at most ``width`` characters."""
        first = " ".join(self.paragraphs[0].split())
        sentence = re.split(r"(?<=\.)\s+(?=[A-Z`(])", first)[0]
        return sentence if len(sentence) <= width else sentence[: width - 1] + "…"


def describe_method(
    *,
    returns: Returns = "draws",
    emitter_count: EmitterCount = "given",
    brightness: Brightness = "fixed",
    flags: str = MCMC_FLAGS,
) -> Callable[[Any], Any]:
    """Decorator giving a method found through its entry point (a plug-in package, which is not
    registered by import) the traits :func:`~bayes_smlm.methods.registry.register_method`
    records for the built-ins; checked when its spec is made."""

    def decorate(fn: Any) -> Any:
        fn.method_traits = {
            "returns": returns,
            "emitter_count": emitter_count,
            "brightness": brightness,
            "flags": flags,
        }
        return fn

    return decorate


def _described_parameters(doc: str) -> dict[str, str]:
    """name → description (one line) of each entry of a numpy-style ``Parameters`` section."""
    match = re.search(r"^Parameters\n-+\n(.*?)(?:^\S[^\n]*\n-+\n|\Z)", doc, flags=re.M | re.S)
    if not match:
        return {}
    out: dict[str, str] = {}
    names: list[str] = []
    for line in match.group(1).splitlines():
        if line and not line[0].isspace():
            names = [n.strip() for n in line.split(":")[0].split(",")]
            for name in names:
                out[name] = ""
        elif line.strip() and names:
            for name in names:
                out[name] = (out[name] + " " + line.strip()).strip()
    return out


__all__ = ["Brightness", "EmitterCount", "MethodOption", "MethodSpec", "Returns", "describe_method"]
