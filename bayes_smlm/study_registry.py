"""Name -> study module registry and the argument handling every study shares.

A study module (in ``studies/``, importable as ``bayes_smlm.studies.<module>``) defines
``PRESETS`` (a dict with at least ``smoke``, ``cpu`` and ``paper``), ``run(preset, seed, out)``
returning the report path, and ``main(args)`` for use as a script. Studies that compare methods
on any task also take ``task`` (``--task``) and list it in ``TASK_ARGUMENT = True``; their default
report folder is ``reports/<study>`` for the study's default task, ``reports/<study>-<task>``
otherwise. Studies whose reports can be
rebuilt from their saved results (``bayes-smlm report DIR``) also define ``render(out)``.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from types import ModuleType
from typing import Callable, Sequence

from .errors import ConfigError

_STUDIES: dict[str, str] = {
    "forward-model": "bayes_smlm.studies.forward_model",
    "bench-exact": "bayes_smlm.studies.bench_exact",
    "paper-diagnostics": "bayes_smlm.studies.paper_diagnostics",
    "phi": "bayes_smlm.studies.phi",
    "ddpm-check": "bayes_smlm.studies.ddpm_check",
    "calibration": "bayes_smlm.studies.calibration",
    "localization": "bayes_smlm.studies.localization",
    "isolated-emitter": "bayes_smlm.studies.isolated_emitter",
    "ddpm-uncertainty": "bayes_smlm.studies.ddpm_uncertainty",
    "bench-ddpm": "bayes_smlm.studies.bench_ddpm",
}


def register_study(name: str, module: str) -> None:
    """Register a study module by dotted import path under ``name``."""
    if name in _STUDIES:
        raise ValueError(f"study {name!r} is already registered")
    _STUDIES[name] = module


def list_studies() -> list[str]:
    """Registered study names, sorted."""
    return sorted(_STUDIES)


def get_study(name: str) -> ModuleType:
    """Import the named study module."""
    if name not in _STUDIES:
        raise ConfigError("NAME", f"unknown study {name!r}; choose from {', '.join(list_studies())}")
    return importlib.import_module(_STUDIES[name])


def default_out(name: str, task: str | None = None) -> Path:
    """Default report folder ``reports/<name>`` (``reports/<name>-<task>`` for a task other than
    the study's default), relative to the working directory."""
    return Path("reports") / (name if task is None else f"{name}-{task}")


def run_study(name: str, preset: str, seed: int, out: Path | None, task: str | None) -> Path:
    """Run a registered study; ``task`` None means the study's default task."""
    module = get_study(name)
    kwargs = {}
    if task is not None:
        if not getattr(module, "TASK_ARGUMENT", False):
            raise ConfigError("--task", f"study {name!r} runs on its own task; --task is for "
                              f"{', '.join(n for n in list_studies() if _takes_task(n))}")
        from .tasks import get_task
        get_task(task)  # a one-line error for an unknown task, before any work
        if task != module.DEFAULT_TASK:
            kwargs["task"] = task
    out = out or default_out(name, kwargs.get("task"))
    return module.run(preset=preset, seed=seed, out=out, **kwargs)


def _takes_task(name: str) -> bool:
    return getattr(importlib.import_module(_STUDIES[name]), "TASK_ARGUMENT", False)


def check_preset(preset: str, presets: dict) -> dict:
    """The settings of ``preset`` or a one-line error listing the choices."""
    from .config import check_choice
    return presets[check_choice("--preset", preset, presets)]


def add_study_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every study takes."""
    from .cli_types import seed_int
    parser.add_argument("--preset", default="cpu",
                        help="smoke (seconds, for tests) | cpu (default) | paper (GPU scale)")
    parser.add_argument("--seed", type=seed_int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", type=Path, default=None,
                        help="report folder (default reports/<study>, or reports/<study>-<task>)")
    parser.add_argument("--task", default=None,
                        help="task of the frames, for the studies that compare methods "
                             "(calibration, ddpm-check, ddpm-uncertainty; default: isolated)")


def run_as_script(name: str, run: Callable[..., Path], argv: Sequence[str] | None) -> int:
    """``main(args)`` of a study file: parse the shared options, run, print the report path.
    (``run`` is the study's own; it is looked up by name so ``--task`` is handled as by the CLI.)"""
    from .cli_types import OneLineErrorParser, report_errors
    parser = OneLineErrorParser(prog=f"study {name}")
    add_study_arguments(parser)
    args = parser.parse_args(argv)
    with report_errors(parser.prog):
        path = run_study(name, args.preset, args.seed, args.out, args.task)
        print(f"wrote {path}")
    return 0


def rebuild_report(out: str | Path) -> Path:
    """Re-render a study's report from the files it saved (``config.json`` names the study)."""
    from .study_io import CONFIG, read_json
    config = read_json(Path(out), CONFIG)
    if "study" not in config:
        raise ConfigError("DIR", f"{out}/{CONFIG} does not name its study; re-run the study")
    module = get_study(config["study"])
    render = getattr(module, "render", None)
    if render is None:
        raise ConfigError("DIR", f"study {config['study']!r} cannot rebuild its report from saved "
                                 "results; re-run it with `bayes-smlm study`")
    return render(Path(out))
