"""Study ``validity-map``: where each cheap posterior stops being trustworthy, over photons per
emitter × emitters per frame, with a background and the emitter count unknown.

Each cell is the `paper` task (20×20 px, the radius-7 disc) with i0 photons per emitter, n
emitters and a background of a few photons per pixel. The reference is ``smc`` over the counts
n − w … n + w (``count_window`` w; P(n | x) uniform over them, the KDE the mixture over counts):
every frame is scored, none dropped. Methods that weigh counts by their evidence (``laplace``,
``auto``) get the same counts; the fixed-count samplers (``nuts``, ``chees``, ``rwmh``) are
told n, which the report says. Each method, per cell: KDE interval coverage of the true KDE at
50/90/95 % and its mean gap to the exact posterior's coverage on the same frames, z SD over the
reference's, the signal pixels' summed-variance ratio to the reference, P(n = true), seconds
per frame — and *calibrated* by the calibration report's thresholds (gap ≤ 0.05, z SD within
10 %). The gap is taken to the exact posterior's coverage of the same frames, not to the level
an exact posterior attains in expectation: with a few frames per cell, coverage of one truth is
noisy (a frame's pixels share its emitters' errors), and that noise is common to both.
Run: ``bayes-smlm study validity-map [--preset smoke|cpu|paper]``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from bayes_smlm.studies.calibration_verdicts import CALIBRATED
from bayes_smlm.studies.registry import begin_study, fresh_seed
from bayes_smlm.studies.validity_map_report import render

from bayes_smlm.compare.kde_calibration import kde_coverage, signal_mask
from bayes_smlm.compare.regions import region_variance_scores, separation_classes
from bayes_smlm.compare.schema import SEPARATION_CLASSES
from bayes_smlm.compare.summary import kde_samples_of
from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.simulate import simulate
from bayes_smlm.forward.tasks import get_task
from bayes_smlm.io.atomic import write_json
from bayes_smlm.io.study_files import write_study_config
from bayes_smlm.methods import get_method
from bayes_smlm.methods.reference import cached_reference
from bayes_smlm.reporting.markdown import provenance

NAME = "validity-map"
REFERENCE = "smc"
COUNT_METHODS = ("laplace", "auto")  # weigh the counts by their evidence, as the reference
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "photons": [100, 2000],
        "emitters": [1, 3],
        "background": 3.0,
        "frames": 2,
        "min_emitters": 4,
        "count_window": 1,
        "chains": 2,
        "draws": 200,
        "smc_draws": 128,
        "kde_samples": 16,
        "methods": ["laplace", "auto", "nuts"],
        "max_emitters": {},
    },
    # 2-core CPU (AMD EPYC, AVX2): two cells at a time, each in its own process. rwmh is left
    # out above 10 emitters, where its random walk in 40+ dimensions costs minutes per frame and
    # does not mix
    "cpu": {
        "photons": [50, 100, 200, 500, 2000],
        "emitters": [1, 3, 10, 20],
        "background": 3.0,
        "frames": 5,
        "min_emitters": 30,
        "count_window": 1,
        "chains": 4,
        "draws": 500,
        "smc_draws": 256,
        "kde_samples": 64,
        "methods": ["laplace", "auto", "chees", "nuts", "rwmh"],
        "max_emitters": {"rwmh": 10},
        "workers": 2,
    },
    "paper": {
        "photons": [50, 100, 200, 500, 1000, 2000],
        "emitters": [1, 3, 5, 10, 15, 20],
        "background": 3.0,
        "frames": 50,
        "min_emitters": 200,
        "count_window": 2,
        "chains": 4,
        "draws": 1000,
        "smc_draws": 512,
        "kde_samples": 64,
        "methods": ["laplace", "auto", "chees", "nuts", "rwmh"],
        "max_emitters": {},
    },
}


def cell_task(photons: float, emitters: int, background: float):
    """The `paper` task with i0 = ``photons``, ``emitters`` per frame and a background."""
    return get_task(
        "paper",
        {
            "prior.i0": float(photons),
            "prior.n_emitters": int(emitters),
            "prior.background": float(background),
        },
    )


def frames_of(emitters: int, settings: dict[str, Any]) -> int:
    """Frames of a cell: ``frames``, or more where emitters are few, so that every cell holds at
    least ``min_emitters`` true emitters to score."""
    return max(settings["frames"], -(-settings["min_emitters"] // emitters))


def counts_of(emitters: int, window: int) -> list[int]:
    return list(range(max(0, emitters - window), emitters + window + 1))


def p_true_by_separation(
    p_true: np.ndarray, theta_true: np.ndarray, sigma_psf: float
) -> dict[str, list[float]]:
    """Per class of a frame's closest pair (:data:`~bayes_smlm.compare.schema.SEPARATION_CLASSES`,
    in σ_psf; one emitter: the widest): [sum of P(n = true), frames] — sums, so cells pool."""
    closest = separation_classes(theta_true, sigma_psf).min(axis=1)
    return {
        name: [float(p_true[closest == k].sum()), int(np.sum(closest == k))]
        for k, name in enumerate(SEPARATION_CLASSES)
        if np.any(closest == k)
    }


def score(
    result, reference, kde_true: np.ndarray, emitters: int, samples: int, theta_true: np.ndarray
) -> dict[str, Any]:
    """One method's numbers in one cell (see the module docstring)."""
    mask = signal_mask(reference.kde_mean)
    coverage = kde_coverage(kde_samples_of(result, samples), kde_true, mask)
    exact = kde_coverage(kde_samples_of(reference, samples), kde_true, mask)
    gap = float(np.mean(np.abs(coverage.coverage - exact.coverage)))
    z_ratio = float(np.std(coverage.z) / np.std(exact.z))
    regions = region_variance_scores(result.kde_var, reference.kde_var, reference.kde_mean)
    p_true, by_separation = None, None
    if result.evidence is not None and len(result.evidence.counts) > 1:
        index = list(result.evidence.counts).index(emitters)
        p_true = float(np.mean(result.evidence.p_n[:, index]))
        by_separation = p_true_by_separation(
            result.evidence.p_n[:, index], theta_true, result.task.optics.sigma_psf
        )
    return {
        "coverage": coverage.coverage.tolist(),
        "attained": coverage.attained.tolist(),
        "gap_to_attained": float(np.mean(np.abs(coverage.coverage - coverage.attained))),
        "coverage_gap": gap,
        "z_sd_ratio": z_ratio,
        "signal_var_ratio": float(np.nanmedian(regions["signal_ratio"])),
        "p_true_count": p_true,
        "p_true_by_separation": by_separation,
        "seconds_per_frame": result.seconds / result.n_frames,
        "flagged": int(np.sum(result.flagged)),
        "calibrated": bool(gap <= CALIBRATED[0] and abs(z_ratio - 1) <= CALIBRATED[1]),
    }


def run_cell(
    photons: float, emitters: int, settings: dict[str, Any], seed: int, frames_seed: int
) -> dict[str, Any]:
    """Every method against the reference on one cell's fresh frames."""
    task = cell_task(photons, emitters, settings["background"])
    n_frames = frames_of(emitters, settings)
    frames = simulate(task, n_frames, frames_seed)
    counts = counts_of(emitters, settings["count_window"])
    common = {"seed": seed, "chains": settings["chains"]}
    counted = {"n_emitters": counts, "keep_samples": settings["kde_samples"]}
    reference = cached_reference(
        task,
        frames.adu,
        (frames_seed, n_frames),
        method=REFERENCE,
        draws=settings["smc_draws"],
        **common,
        **counted,
    )
    row: dict[str, Any] = {
        "photons": photons,
        "emitters": emitters,
        "counts": counts,
        "frames": n_frames,
        "methods": {},
    }
    row["methods"][REFERENCE] = score(
        reference, reference, frames.kde, emitters, settings["kde_samples"], frames.theta
    )
    row["reference_flagged"] = int(np.sum(reference.flagged))
    for name in settings["methods"]:
        if emitters > settings["max_emitters"].get(name, emitters):
            row["methods"][name] = {
                "skipped": f"more than {settings['max_emitters'][name]} emitters (cost)"
            }
            continue
        options = {**common, "draws": settings["draws"]}
        if name in COUNT_METHODS:
            options.update(counted)
        if name == "auto":
            options["smc_draws"] = settings["smc_draws"]  # the reference's compiled programs
        try:
            result = get_method(name)(task, frames.adu, **options)
        except ConfigError as err:
            row["methods"][name] = {"skipped": str(err)}
            continue
        row["methods"][name] = score(
            result, reference, frames.kde, emitters, settings["kde_samples"], frames.theta
        )
        if name == "auto":
            row["methods"][name]["escalated_share"] = result.settings.get("escalated_share")
        print(
            f"  {photons:g} photons, {emitters} emitters, {name}: "
            f"{'calibrated' if row['methods'][name]['calibrated'] else 'not calibrated'}, "
            f"{row['methods'][name]['seconds_per_frame']:.2f} s/frame",
            flush=True,
        )
    return row


def _run_cell(job: tuple) -> dict[str, Any]:
    return run_cell(*job)


def run(preset: str = "cpu", seed: int = 0, out: Path | str = Path("reports") / NAME) -> Path:
    settings, out = begin_study(preset, PRESETS, out)
    started = time.perf_counter()
    base = fresh_seed(NAME, seed)
    jobs = [
        (photons, emitters, settings, seed, base + 100 * i + j)
        for i, photons in enumerate(settings["photons"])
        for j, emitters in enumerate(settings["emitters"])
    ]
    workers = settings.get("workers", 1)
    if workers > 1:  # cells in parallel processes: compiling a program keeps one core busy
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=spawn) as pool:
            cells = list(pool.map(_run_cell, jobs))  # in the cells' order, whatever finishes first
    else:
        cells = [run_cell(*job) for job in jobs]
    metrics = {
        "cells": cells,
        "reference": REFERENCE,
        "calibrated_rule": list(CALIBRATED),
        "wall_seconds": time.perf_counter() - started,
        "provenance": provenance(study=NAME, preset=preset, seed=seed),
    }
    write_study_config(out, NAME, preset, seed, settings, fresh_seed=base)
    write_json(out / "metrics.json", metrics)
    return render(out)
