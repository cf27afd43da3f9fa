"""Name -> study module registry and the argument handling every study shares.

Study ``NAME`` is the file ``studies/NAME.py`` (dashes in the name become underscores), imported
as ``bayes_smlm.studies.NAME``: ``pyproject.toml`` maps the package ``bayes_smlm.studies`` to the
top-level folder ``studies/``. A study module defines
``PRESETS`` (a dict with at least ``smoke``, ``cpu`` and ``paper``), ``run(preset, seed, out)``
returning the report path; ``python -m bayes_smlm.studies NAME`` runs one as ``bayes-smlm study``
does. Studies that compare methods
on any task also take ``task`` (``--task``) and list it in ``TASK_ARGUMENT = True``; their default
report folder is ``reports/<study>`` for the study's default task, ``reports/<study>-<task>``
otherwise. Studies whose reports can be
rebuilt from their saved results (``bayes-smlm report DIR``) also define ``render(out)``.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from bayes_smlm.cli.arguments import OneLineErrorParser, flag_names, report_errors, seed_int
from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.checks import check_choice
from bayes_smlm.forward.tasks import get_task
from bayes_smlm.io.atomic import check_output_dir, write_json
from bayes_smlm.io.locks import hold_output
from bayes_smlm.io.study_files import CONFIG, METRICS, check_one_run, read_json, run_in_fresh_folder
from bayes_smlm.reporting.markdown import provenance

STUDIES = (
    "bench-dask",
    "bench-ddpm",
    "bench-exact",
    "bench-speed",
    "calibration",
    "ddpm-check",
    "ddpm-uncertainty",
    "forward-model",
    "isolated-emitter",
    "laplace",
    "localization",
    "movie",
    "npe",
    "paper-diagnostics",
    "phi",
    "validity-map",
)


# Fresh frames of a study come from seed FRESH_SEEDS[study] + --seed. The ranges never meet a
# shipped network's training or validation seeds (< 1000), nor each other, nor the frames
# scripts/psi_sweep.py uses to choose Ψ's configuration (2000+) and fit its recalibration (2200+).
FRESH_SEEDS = {
    "phi": 1000,
    "ddpm-check": 2500,
    "calibration": 3000,
    "localization": 4000,
    "isolated-emitter": 5000,
    "ddpm-uncertainty": 6000,
    "laplace": 7000,
    "npe": 8000,
    "movie": 9000,
    "bench-speed": 11000,
    "bench-dask": 12000,
    "validity-map": 13000,
}


def fresh_seed(study: str, seed: int) -> int:
    """Simulation seed of the fresh frames of ``study`` run with ``--seed seed``."""
    return FRESH_SEEDS[study] + seed


def study_module_name(name: str) -> str:
    """Import path of study ``name``: ``bayes_smlm.studies.<name with - as _>``, which is the file
    ``studies/<name with - as _>.py`` (pyproject maps the package to the top-level folder)."""
    return f"{__package__}.{name.replace('-', '_')}"


def list_studies() -> list[str]:
    """Registered study names, sorted."""
    return sorted(STUDIES)


def get_study(name: str) -> ModuleType:
    """Import the named study module."""
    if name not in STUDIES:
        raise ConfigError(
            "name", f"unknown study {name!r}; choose from {', '.join(list_studies())}"
        )
    return importlib.import_module(study_module_name(name))


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
            raise ConfigError(
                "task",
                f"study {name!r} runs on its own task; a task is taken by "
                f"{', '.join(n for n in list_studies() if _takes_task(n))}",
            )
        get_task(task)  # a one-line error for an unknown task, before any work
        if task != module.DEFAULT_TASK:
            kwargs["task"] = task
    out = check_output_dir(out or default_out(name, kwargs.get("task")))  # before any work
    with hold_output(out):
        return run_in_fresh_folder(
            out, lambda staging: module.run(preset=preset, seed=seed, out=staging, **kwargs)
        )


def _takes_task(name: str) -> bool:
    return getattr(get_study(name), "TASK_ARGUMENT", False)


def check_preset(preset: str, presets: dict) -> dict:
    """The settings of ``preset`` or a one-line error listing the choices."""
    return presets[check_choice("preset", preset, presets)]


def begin_study(preset: str, presets: dict, out: str | Path) -> tuple[dict, Path]:
    """What every study's ``run`` starts with: the preset's settings (a one-line error for an
    unknown preset) and the report folder, created."""
    settings = check_preset(preset, presets)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return settings, out


def write_metrics(out: Path, study: str, preset: str, seed: int, **metrics) -> Path:
    """``out/metrics.json``: the study's ``metrics`` and the provenance of this run."""
    prov = provenance(study=study, preset=preset, seed=seed)
    return write_json(Path(out) / METRICS, {**metrics, "provenance": prov})


def add_study_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every study takes."""
    parser.add_argument(
        "--preset",
        default="cpu",
        help="smoke (seconds, for tests) | cpu (default) | paper (GPU scale)",
    )
    parser.add_argument("--seed", type=seed_int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="report folder (default reports/<study>, or reports/<study>-<task>)",
    )
    parser.add_argument(
        "--task",
        default=None,
        help="task of the frames, for the studies that compare methods "
        "(calibration, ddpm-check, ddpm-uncertainty; default: isolated)",
    )


def run_as_script(argv: Sequence[str] | None = None) -> int:
    """``python -m bayes_smlm.studies NAME [--preset …]``: the same as ``bayes-smlm study``."""
    parser = OneLineErrorParser(prog="python -m bayes_smlm.studies")
    parser.add_argument("name", metavar="NAME", help=f"one of: {', '.join(list_studies())}")
    add_study_arguments(parser)
    args = parser.parse_args(argv)
    with report_errors(parser.prog, flag_names(parser)):
        path = run_study(args.name, args.preset, args.seed, args.out, args.task)
        print(f"wrote {path}")
    return 0


def rebuild_report(out: str | Path) -> Path:
    """Re-render a study's report from the files it saved (``config.json`` names the study)."""
    config = read_json(check_output_dir(out, "dir"), CONFIG)
    if "study" not in config:
        raise ConfigError("dir", f"{out}/{CONFIG} does not name its study; re-run the study")
    if config["study"] not in STUDIES:
        raise ConfigError("dir", f"{out}/{CONFIG} names the unknown study {config['study']!r}")
    metrics_path = Path(out) / METRICS
    if metrics_path.is_file():
        check_one_run(Path(out), config, read_json(out, METRICS))
    module = get_study(config["study"])
    render = getattr(module, "render", None)
    if render is None:
        raise ConfigError(
            "dir",
            f"study {config['study']!r} cannot rebuild its report from saved "
            "results; re-run it with `bayes-smlm study`",
        )
    with hold_output(out, "dir"):  # not while a study or another report writes the folder
        return render(Path(out))
