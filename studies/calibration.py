"""Study ``calibration``: every registered posterior method on the same frames, side by side.

On fresh frames of a task (``--task``, default `isolated`): every method in the registry —
built-in, registered in user code, or exposed through the ``bayes_smlm.methods`` entry point — is
run, and :func:`bayes_smlm.compare.compare_methods` scores variance maps (whole frame, signal
pixels, background), entropies, CRLB gaps, SBC and interval coverage, KDE coverage and z-scores
(also by crowding and by nearest-neighbour separation), ArviZ diagnostics and cost. The reference
is the exact `grid` posterior for one emitter and `smc` (adaptive tempered SMC) otherwise; frames
where the reference fails its own checks are left out of every score and counted (target 0).
The frames NUTS flags — which an NUTS reference used to drop — are listed with every method's
scores on them. Then NUTS's and the DDPM's
seconds per frame against the number of emitters per frame. ``bayes-smlm report DIR`` re-renders
the report from the saved files.
Run: ``bayes-smlm study calibration [--task paper] [--preset smoke|cpu|paper]``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from bayes_smlm.studies.calibration_report import render
from bayes_smlm.studies.hard_frames import hard_frames
from bayes_smlm.studies.registry import begin_study, fresh_seed

from bayes_smlm.compare import compare_methods
from bayes_smlm.compare.crlb_gaps import detection_crlb_gap, sqrt_crlb_at
from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.simulate import simulate
from bayes_smlm.forward.tasks import get_task
from bayes_smlm.io.atomic import write_json
from bayes_smlm.io.posteriors import save_posterior
from bayes_smlm.io.study_files import posterior_path, save_frames, write_study_config
from bayes_smlm.localization.detection import detect, settings_from_config
from bayes_smlm.methods import get_method, list_methods
from bayes_smlm.methods.ddpm import recalibrated_result
from bayes_smlm.methods.reference import cached_reference, reference_method
from bayes_smlm.methods.registry import method_spec
from bayes_smlm.reporting.markdown import provenance
from bayes_smlm.surrogates.phi.estimator import PhiPredictor, load_phi
from bayes_smlm.surrogates.phi.evaluation import tolerance_lr
from bayes_smlm.surrogates.psi.pipeline import psi_shipped_checkpoint, read_config
from bayes_smlm.surrogates.psi.recalibration import recalibration_of

NAME = "calibration"
COST_METHODS = ("nuts", "chees", "ddpm")  # timed against emitters per frame
TASK_ARGUMENT = True
DEFAULT_TASK = "isolated"
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "frames": 6,
        "dense_frames": 4,
        "chains": 2,
        "draws": 200,
        "dense_draws": 600,
        "kde_samples": 16,
        "frame_limits": {"ddpm": 2},
        "method_options": {
            "nuts": {"warmup": 100},
            "rwmh": {"steps": 2000, "burn_in": 200},
            "rwmh_paper": {"steps": 2000, "burn_in": 200},
            "ddpm": {"samples": 16, "recalibrate": False},
            "mc_dropout": {"passes": 16},
        },
        "cost_emitters": [2],
        "cost_frames": 1,
    },
    "cpu": {
        "frames": 200,
        "dense_frames": 64,
        "chains": 4,
        "draws": 1000,
        "kde_samples": 64,
        "frame_limits": {"ddpm": 32},
        # random-walk MH in 20 dimensions: 0.3 s/frame (Intel, AMX) to 5 (AMD, AVX2) on the
        # 2-core CPUs measured; half the frames
        "dense_frame_limits": {"ddpm": 32, "rwmh": 32, "rwmh_paper": 32},
        # the ddpm method's default sampler, which the shipped recalibrations were fitted on
        "method_options": {"ddpm": {"samples": 64, "precision": "auto", "recalibrate": False}},
        # the DDPM's s/frame is measured on its 32 frames above; not again here (CPU time).
        # 32 frames per count: on fewer, compiling the sampler dominates its s/frame
        "cost_emitters": [1, 2, 5, 10],
        "cost_frames": 32,
        "ddpm_cost_frames": 0,
    },
    "paper": {
        "frames": 1000,
        "dense_frames": 500,
        "chains": 4,
        "draws": 1000,
        "kde_samples": 64,
        "frame_limits": {},
        "method_options": {"ddpm": {"samples": 64, "recalibrate": False}},
        "cost_emitters": [1, 2, 3, 5, 7, 10],
        "cost_frames": 20,
    },
}


def add_recalibrated(results: dict[str, Any], out: Path, failures: dict[str, str]) -> None:
    """Beside the raw ``ddpm`` result, ``ddpm-recal``: the same samples with the checkpoint's
    post-hoc spread recalibration (a named option, scored on the same frames); listed as
    skipped where it was fitted on another sampler than the preset's."""
    raw = results["ddpm"]
    checkpoint = raw.settings["checkpoint"]
    config = read_config(
        psi_shipped_checkpoint(raw.task.name) if checkpoint == "shipped" else checkpoint
    )  # the table only: no need to load Ψ and φ again
    recalibration = recalibration_of(config)
    if recalibration is None or "kde_samples" not in raw.extra:
        return
    try:
        results["ddpm-recal"] = recalibrated_result(raw, recalibration)
    except ConfigError as err:
        failures["ddpm-recal"] = str(err)
        print(f"  ddpm-recal: skipped ({err})", flush=True)
        return
    save_posterior(results["ddpm-recal"], posterior_path(out, "ddpm-recal"))


def _options(name: str, settings: dict[str, Any], seed: int, dense: bool = False) -> dict[str, Any]:
    """The registry's common options plus the preset's options for ``name`` (``dense_draws``,
    where a preset has it, on frames of several emitters: NUTS needs bulk ESS ≥ 400 there)."""
    draws = settings.get("dense_draws", settings["draws"]) if dense else settings["draws"]
    options = {
        "seed": seed,
        "chains": settings["chains"],
        "draws": draws,
        **settings["method_options"].get(name, {}),
    }
    spec = method_spec(name)
    if spec.returns == "kde" and any(o.name == "keep_samples" for o in spec.options):
        options.setdefault("keep_samples", True)  # no θ: interval coverage needs its KDE samples
    return options


def _run_method(
    name: str,
    task,
    adu: np.ndarray,
    theta: np.ndarray,
    seed: int,
    settings: dict[str, Any],
    frames_seed: int,
):
    limits = settings["frame_limits"]
    if task.prior.n_emitters > 1:
        limits = settings.get("dense_frame_limits", limits)
    n = min(limits.get(name, len(adu)), len(adu))
    options = _options(name, settings, seed, dense=task.prior.n_emitters > 1)
    if name == reference_method(task) and n == len(adu):  # minutes of NUTS at density: cached
        result = cached_reference(task, adu, (frames_seed, n), **options)
    else:
        result = get_method(name)(task, adu[:n], **options)
    result.theta_true = theta[:n]
    return result


def _phi_log_gap(task, adu: np.ndarray, theta: np.ndarray) -> dict[str, Any]:
    """φ + LoG detection (the paper's point estimate) against √CRLB."""
    model, config = load_phi(None, task)
    kdes = PhiPredictor(model, task)(adu)
    found = detect(
        kdes, task.optics.sigma_kde, task.optics.upsampling, settings_from_config(config, "log")
    )
    gap = detection_crlb_gap(
        [found.of_frame(f) for f in range(len(adu))],
        theta,
        sqrt_crlb_at(task, theta),
        tolerance_lr(task),
    )
    return {"rmse_ratio": np.asarray(gap["rmse_ratio"]).tolist(), "recall": gap["recall"]}


def cost_by_emitters(
    settings: dict[str, Any], seed: int, methods: Sequence[str], psi_task
) -> list[dict[str, Any]]:
    """s/frame of the exact samplers and the DDPM on frames of 1…10 emitters at the `paper`
    density.

    The DDPM's network pass does not depend on the number of emitters; it is timed with the
    shipped Ψ of ``psi_task`` (only its time is meaningful on frames of other densities)."""
    rows = []
    for n in settings["cost_emitters"]:
        task = get_task("paper", {"n_emitters": n})
        batch = simulate(task, settings["cost_frames"], fresh_seed(NAME, seed) + 500)
        for name in methods:
            if name == "ddpm" and n not in (
                settings["cost_emitters"][0],
                settings["cost_emitters"][-1],
            ):
                continue  # its cost does not depend on n: time it at the ends only
            adu = batch.adu[: settings.get("ddpm_cost_frames", 1)] if name == "ddpm" else batch.adu
            if not len(adu):
                continue
            result = get_method(name)(
                psi_task if name == "ddpm" else task, adu, **_options(name, settings, seed)
            )
            rows.append(
                {
                    "method": name,
                    "emitters": n,
                    "frames": result.n_frames,
                    "seconds_per_frame": result.seconds / result.n_frames,
                }
            )
            print(
                f"  cost: {name}, {n} emitters: {rows[-1]['seconds_per_frame']:.2f} s/frame",
                flush=True,
            )
    return rows


def run(
    preset: str = "cpu",
    seed: int = 0,
    out: Path | str = Path("reports") / NAME,
    task: str = DEFAULT_TASK,
) -> Path:
    settings, out = begin_study(preset, PRESETS, out)
    started = time.perf_counter()
    task_name, task = task, get_task(task)
    n_frames = settings["frames"] if task.prior.n_emitters == 1 else settings["dense_frames"]
    frames = simulate(task, n_frames, fresh_seed(NAME, seed))
    save_frames(out, frames.adu, frames.kde, frames.theta)
    reference = reference_method(task)
    methods = [reference] + [m for m in list_methods() if m != reference]
    results, failures = {}, {}
    for name in methods:
        try:
            results[name] = _run_method(
                name, task, frames.adu, frames.theta, seed, settings, fresh_seed(NAME, seed)
            )
        except ConfigError as err:  # e.g. grid on many emitters, a user method for one task
            if name == reference:
                raise
            failures[name] = str(err)
            print(f"  {name}: skipped ({err})", flush=True)
            continue
        save_posterior(results[name], posterior_path(out, name))
        print(
            f"  {name}: {results[name].n_frames} frames, "
            f"{results[name].seconds / results[name].n_frames:.3f} s/frame",
            flush=True,
        )
    if "ddpm" in results:
        add_recalibrated(results, out, failures)
    flagged = results[reference].flagged
    keep = ~flagged
    if not keep.any():
        raise ConfigError(
            "preset", f"every frame failed the {reference} reference's own checks; run more draws"
        )
    scored = {name: r.select_frames(keep[: r.n_frames]) for name, r in results.items()}
    metrics = compare_methods(
        scored,
        reference,
        task,
        frames.kde[keep],
        frames.theta[keep],
        kde_samples=settings["kde_samples"],
    )
    metrics["reference_flagged"] = {
        "frames": int(flagged.sum()),
        "of": int(n_frames),
        "indices": np.flatnonzero(flagged).tolist(),
    }
    if task.prior.n_emitters > 1:
        metrics["hard_frames"] = hard_frames(results, metrics, keep)
    metrics["phi_log"] = _phi_log_gap(task, frames.adu[keep], frames.theta[keep])
    metrics["failures"] = failures
    metrics["cost_by_emitters"] = cost_by_emitters(
        settings, seed, [m for m in COST_METHODS if m in results], task
    )
    metrics["wall_seconds"] = time.perf_counter() - started
    metrics["provenance"] = provenance(study=NAME, preset=preset, seed=seed)
    write_study_config(
        out,
        NAME,
        preset,
        seed,
        settings,
        task=task.to_dict(),
        task_name=task_name,
        fresh_seed=fresh_seed(NAME, seed),
        methods=list(results),
    )
    write_json(out / "metrics.json", metrics)
    return render(out)
