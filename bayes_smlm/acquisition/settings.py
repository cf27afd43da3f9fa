"""How ``localize`` finds emitters and what posterior it gives each (no heavy imports: the command
line reads its defaults from here)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.checks import check_choice, check_int

METHODS = ("laplace", "nuts")  # the window posterior: at the mode, or sampled
DETECTORS = ("dog", "phi")  # the candidates: the DoG filter, or φ (:mod:`.phi_spots`)


@dataclass(frozen=True)
class LocalizeSettings:
    """How ``localize`` finds and fits emitters.

    Attributes
    ----------
    threshold : float
        Least signal-to-noise ratio of a candidate (:func:`spots.find_spots`; with
        ``detector="phi"``, of the residual search only).
    detector : {"dog", "phi"}
        What finds the candidates on each frame: the difference-of-Gaussians filter and its
        signal-to-noise ``threshold``, or the φ network's KDE and the checkpoint's detector
        (:mod:`~bayes_smlm.acquisition.phi_spots`).
    phi_checkpoint : str or None
        φ checkpoint directory for ``detector="phi"`` (None: the shipped ``widefield`` one).
    joint : bool
        Fit candidates whose windows overlap together (False: each alone).
    max_emitters : int
        Largest group fitted jointly (at most the largest of :data:`regions.SLOTS`); a larger
        patch is cut in halves. Cutting a linked group leaves each part fitting the others'
        light: on crowded tuning movies 8 instead of 4 cut the RMSE over the CRLB-limited
        value from 1.09–1.52 to 0.99–1.24 and the misfit rows from 1.7–3.4 % to 0.2–1.5 %,
        for 4–10 % of the time.
    chunk_frames : int
        Frames read and processed at a time (memory ≈ chunk · H · W · 4 floats).
    residual_passes : int or None
        Searches of the whole residual, with the difference-of-Gaussians filter, for emitters
        the detector merged, before the misfit windows' refits (which search near each window
        anyway). None: 3 with ``detector="phi"`` (its candidates then miss a close pair's second
        emitter that only the residual shows: tuning movies, crowded, RMSE/CRLB 1.27–1.42
        without, 1.01–1.13 with), 0 with ``"dog"`` (the refits already find those peaks: recall
        0.994–0.998 without, 0.983–0.994 with 3, at 2–3× the time).
    min_p_exists : float
        Each window's count of emitters is chosen by its evidence
        (:mod:`~bayes_smlm.acquisition.window_counts`): the table holds the largest count n
        with P(N ≥ n | x) ≥ this, each row its probability of existing (``p_exists``). 0 keeps
        every candidate (no choice of count).
    density : float or None
        The count prior's emitters per px² (a Poisson point process); None: the chunk's
        candidates per px².
    gain_se : float
        Relative standard error of the camera's gain map per pixel (0.05: 5 %; 0: the gain is
        known). A calibrated gain map's error acts as extra noise ``gain_se² · ω²`` in each
        pixel: the Laplace covariances and χ² take it in
        (:func:`~bayes_smlm.acquisition.window_fit.gain_error_widened`). ``bayes-smlm
        calibrate-camera`` prints the value of its maps.
    max_iter, tol
        Of the mode search (:func:`bayes_smlm.methods.laplace.laplace_fit`).
    method : {"laplace", "nuts"}
        The window posterior: the Laplace approximation at the mode, or NUTS started from it
        (:func:`window_sampling.sample_windows`; positions and uncertainties are then posterior
        means and SDs, with R-hat, bulk ESS and divergences per localization).
    chains, draws, warmup, seed
        Of NUTS (``method="nuts"``): chains per window, kept draws and adaptation steps per
        chain, and the seed (window ``i`` of the movie draws with key ``fold_in(seed, i)``).
    """

    threshold: float = 6.0
    detector: str = "dog"
    phi_checkpoint: str | None = None
    joint: bool = True
    max_emitters: int = 8
    chunk_frames: int = 500
    residual_passes: int | None = None
    min_p_exists: float = 0.5
    density: float | None = None
    gain_se: float = 0.0
    max_iter: int = 50
    tol: float = 1e-4
    method: str = "laplace"
    chains: int = 4
    draws: int = 500
    warmup: int = 200
    seed: int = 0

    @property
    def residual_searches(self) -> int:
        """``residual_passes``, or its default for the detector (see the attribute)."""
        if self.residual_passes is not None:
            return self.residual_passes
        return 3 if self.detector == "phi" else 0

    def __post_init__(self) -> None:
        check_choice("method", self.method, METHODS)
        check_choice("detector", self.detector, DETECTORS)
        check_int("chains", self.chains, lo=2)
        check_int("draws", self.draws, lo=10)
        check_int("warmup", self.warmup, lo=10)
        check_int("seed", self.seed, lo=0)
        if not (np.isfinite(self.threshold) and self.threshold > 0):
            raise ConfigError("threshold", f"must be > 0 (got {self.threshold})")
        check_int("max_emitters", self.max_emitters)
        check_int("chunk_frames", self.chunk_frames)
        if self.residual_passes is not None:
            check_int("residual_passes", self.residual_passes, lo=0)
        if not 0.0 <= self.min_p_exists < 1.0:
            raise ConfigError("min_p_exists", f"must be in [0, 1) (got {self.min_p_exists})")
        if not (np.isfinite(self.gain_se) and 0.0 <= self.gain_se < 0.5):
            raise ConfigError(
                "gain_se", f"must be in [0, 0.5), a relative standard error (got {self.gain_se})"
            )
        if self.gain_se > 0 and self.method != "laplace":
            raise ConfigError(
                "gain_se",
                "is taken into the Laplace window posterior only; "
                f"method {self.method!r} samples the likelihood, which "
                "treats the gain as known",
            )
        if self.density is not None and not (np.isfinite(self.density) and self.density > 0):
            raise ConfigError("density", f"must be > 0 emitters per px² (got {self.density})")
