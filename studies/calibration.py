"""Study ``calibration``: every registered posterior method on the same frames, side by side.

On fresh `isolated` frames (one emitter, so the `grid` posterior is exact and is the reference):
every method in the registry — built-in, registered in user code, or exposed through the
``bayes_smlm.methods`` entry point — is run, and :func:`bayes_smlm.compare.compare_methods`
scores variance maps, entropies, CRLB gaps, SBC and interval coverage, KDE coverage and
z-scores, ArviZ diagnostics and cost. Then NUTS's and the DDPM's seconds per frame against the
number of emitters per frame. ``bayes-smlm report DIR`` re-renders the report from the saved files.
Run: ``bayes-smlm study calibration [--preset smoke|cpu|paper]``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bayes_smlm.compare import compare_methods
from bayes_smlm.errors import ConfigError
from bayes_smlm.io import write_json
from bayes_smlm.methods import get_method, list_methods
from bayes_smlm.posterior_io import save_posterior
from bayes_smlm.report import provenance
from bayes_smlm.simulate import simulate
from bayes_smlm.studies.calibration_report import render
from bayes_smlm.study_io import posterior_path, save_frames, write_study_config
from bayes_smlm.study_registry import check_preset, run_as_script
from bayes_smlm.tasks import get_task

NAME = "calibration"
REFERENCE = "grid"
FRESH_SEED_OFFSET = 3000  # never a training or validation seed of the shipped networks
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"frames": 6, "chains": 2, "draws": 200, "kde_samples": 16,
              "frame_limits": {"ddpm": 2},
              "method_options": {"nuts": {"warmup": 100}, "rwmh": {"steps": 2000, "burn_in": 200},
                                 "rwmh_paper": {"steps": 2000, "burn_in": 200},
                                 "ddpm": {"samples": 16, "steps": 2, "keep_samples": True}},
              "cost_emitters": [2], "cost_frames": 1},
    "cpu": {"frames": 200, "chains": 4, "draws": 1000, "kde_samples": 64,
            "frame_limits": {"ddpm": 32},
            "method_options": {"ddpm": {"samples": 64, "steps": 20, "precision": "bf16",
                                        "keep_samples": True}},
            "cost_emitters": [1, 2, 5, 10], "cost_frames": 4},
    "paper": {"frames": 1000, "chains": 4, "draws": 1000, "kde_samples": 64,
              "frame_limits": {},
              "method_options": {"ddpm": {"samples": 64, "keep_samples": True}},
              "cost_emitters": [1, 2, 3, 5, 7, 10], "cost_frames": 20},
}


def _options(name: str, settings: dict[str, Any], seed: int) -> dict[str, Any]:
    """The registry's common options plus the preset's options for ``name``."""
    return {"seed": seed, "chains": settings["chains"], "draws": settings["draws"],
            **settings["method_options"].get(name, {})}


def _run_method(name: str, task, adu: np.ndarray, theta: np.ndarray, seed: int,
                settings: dict[str, Any]):
    n = min(settings["frame_limits"].get(name, len(adu)), len(adu))
    result = get_method(name)(task, adu[:n], **_options(name, settings, seed))
    result.theta_true = theta[:n]
    return result


def _phi_log_gap(task, adu: np.ndarray, theta: np.ndarray) -> dict[str, Any]:
    """φ + LoG detection (the paper's point estimate) against √CRLB."""
    from bayes_smlm.compare.crlb_gaps import detection_crlb_gap, sqrt_crlb_at
    from bayes_smlm.detect import detect
    from bayes_smlm.phi import PhiPredictor, load_phi
    from bayes_smlm.phi_eval import settings_from_config, tolerance_lr
    model, config = load_phi(None, task)
    kdes = PhiPredictor(model, task)(adu)
    found = detect(kdes, task.optics.sigma_kde, task.optics.upsampling,
                   settings_from_config(config, "log"))
    gap = detection_crlb_gap([found.of_frame(f) for f in range(len(adu))], theta,
                             sqrt_crlb_at(task, theta), tolerance_lr(task))
    return {"rmse_ratio": np.asarray(gap["rmse_ratio"]).tolist(), "recall": gap["recall"]}


def cost_by_emitters(settings: dict[str, Any], seed: int,
                     methods: Sequence[str]) -> list[dict[str, Any]]:
    """s/frame of NUTS and the DDPM on frames of 1…10 emitters at the `paper` density.

    The DDPM's network pass does not depend on the number of emitters; the shipped Ψ is trained
    on isolated emitters, so on denser frames only its time is meaningful here."""
    rows = []
    isolated = get_task("isolated")
    for n in settings["cost_emitters"]:
        task = get_task("paper", {"n_emitters": n})
        batch = simulate(task, settings["cost_frames"], FRESH_SEED_OFFSET + 500 + seed)
        for name in methods:
            result = get_method(name)(isolated if name == "ddpm" else task, batch.adu,
                                      **_options(name, settings, seed))
            rows.append({"method": name, "emitters": n, "frames": result.n_frames,
                         "seconds_per_frame": result.seconds / result.n_frames})
            print(f"  cost: {name}, {n} emitters: {rows[-1]['seconds_per_frame']:.2f} s/frame",
                  flush=True)
    return rows


def run(preset: str = "cpu", seed: int = 0, out: Path | str = Path("reports") / NAME) -> Path:
    settings = check_preset(preset, PRESETS)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    task = get_task("isolated")
    frames = simulate(task, settings["frames"], FRESH_SEED_OFFSET + seed)
    save_frames(out, frames.adu, frames.kde, frames.theta)
    methods = [REFERENCE] + [m for m in list_methods() if m != REFERENCE]
    results, failures = {}, {}
    for name in methods:
        try:
            results[name] = _run_method(name, task, frames.adu, frames.theta, seed, settings)
        except ConfigError as err:  # e.g. a user method that cannot handle this task
            if name == REFERENCE:
                raise
            failures[name] = str(err)
            print(f"  {name}: skipped ({err})", flush=True)
            continue
        save_posterior(results[name], posterior_path(out, name))
        print(f"  {name}: {results[name].n_frames} frames, "
              f"{results[name].seconds / results[name].n_frames:.3f} s/frame", flush=True)
    metrics = compare_methods(results, REFERENCE, task, frames.kde, frames.theta,
                              kde_samples=settings["kde_samples"])
    metrics["phi_log"] = _phi_log_gap(task, frames.adu, frames.theta)
    metrics["failures"] = failures
    metrics["cost_by_emitters"] = cost_by_emitters(
        settings, seed, [m for m in ("nuts", "ddpm") if m in results])
    metrics["wall_seconds"] = time.perf_counter() - started
    metrics["provenance"] = provenance(study=NAME, preset=preset, seed=seed,
                                       cpu_count=os.cpu_count())
    write_study_config(out, NAME, preset, seed, settings, task=task.to_dict(),
                       fresh_seed=FRESH_SEED_OFFSET + seed, methods=list(results))
    write_json(out / "metrics.json", metrics)
    return render(out)


def main(args: Sequence[str] | None = None) -> int:
    return run_as_script(NAME, run, args)


if __name__ == "__main__":
    sys.exit(main())
