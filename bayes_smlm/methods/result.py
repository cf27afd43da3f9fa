"""The typed result every posterior method returns (one calling convention, sbibm style)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.config import Task
from bayes_smlm.methods.diagnostics import DrawDiagnostics, draw_diagnostics
from bayes_smlm.methods.evidence import Evidence


@dataclass
class PosteriorResult:
    """Posterior summaries of one method over F frames.

    Attributes
    ----------
    method : str
        Registry name of the method.
    task : Task
        The task whose likelihood and prior were used.
    adu : (F, H, W) ndarray
        Observed frames, ADU.
    kde_mean, kde_var : (F, u·H, u·W) ndarray
        Posterior mean and per-pixel marginal variance of the KDE y (eq. 5).
    theta : (C, D, F, N, 2) ndarray or None
        Draws of (x, y) in LR pixels (chain, draw, frame, emitter, axis), labels aligned across
        draws; None for methods without θ draws.
    sample_stats : dict of str -> (C, D, F) ndarray
        Per-draw sampler statistics (acceptance, divergences, step size, tree depth, …).
    settings : dict
        Resolved method settings (JSON-ready).
    seconds : float
        Wall time of the method's call from its validated frames to its result, s — the same
        for every method, so cost ratios compare like with like: checkpoint loading (networks)
        and compilation (JAX programs not in the persistent cache) are in; importing the
        method's libraries and reading the frames are out.
    theta_true : (F, N, 2) ndarray or None
        True positions when known (simulated data).
    extra : dict
        Method-specific exact summaries (e.g. the grid posterior's mean and covariance).
    evidence : Evidence or None
        Log evidence per emitter count and P(n | x), from methods that estimate it (``smc``,
        ``laplace``, ``auto``, ``grid``); with more than one count the KDE moments are the
        mixture over counts and ``theta`` is None.
    """

    method: str
    task: Task
    adu: np.ndarray
    kde_mean: np.ndarray
    kde_var: np.ndarray
    theta: np.ndarray | None = None
    sample_stats: dict[str, np.ndarray] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = float("nan")
    theta_true: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    evidence: Evidence | None = None

    @property
    def n_frames(self) -> int:
        return int(self.adu.shape[0])

    def __post_init__(self) -> None:
        if self.theta_true is not None:  # truth of another shape would be scored silently
            self.theta_true = np.asarray(self.theta_true)
            expected = (self.n_frames, self.task.prior.n_emitters, 2)
            if self.theta_true.shape != expected:
                raise ConfigError(
                    "theta_true",
                    f"must have shape (F, N, 2) = {expected} for "
                    f"these frames and task (got "
                    f"{self.theta_true.shape})",
                )

    @cached_property
    def diagnostics(self) -> DrawDiagnostics | None:
        """R-hat, ESS, MCSE and flags of the θ draws, computed on first use (None without θ
        draws or with fewer than two chains)."""
        if self.theta is None or self.theta.shape[0] < 2:
            return None
        return draw_diagnostics(self.theta, self.sample_stats.get("diverging"))

    @property
    def flagged(self) -> np.ndarray:
        """(F,) True where the method's own checks say a frame's posterior is not to be trusted.

        A method that judges its frames itself stores the verdict in ``extra["flagged"]``
        (``grid``: a posterior narrower than its grid; ``laplace``: no converged mode, an
        information matrix that is not positive definite, a Gaussian almost wholly outside the
        prior) — its draws are i.i.d., so R-hat and ESS say nothing. Otherwise MCMC diagnostics
        decide (R-hat > 1.01, bulk ESS < 400 or any divergence; needs ≥ 2 chains)."""
        own = self.extra.get("flagged")
        if own is not None:
            return np.asarray(own, bool)
        if self.diagnostics is not None:
            return np.asarray(self.diagnostics.flagged, bool)
        return np.zeros(self.n_frames, bool)

    def theta_flat(self) -> np.ndarray:
        """Draws as (F, C·D, N, 2)."""
        if self.theta is None:
            raise ValueError(f"method {self.method!r} has no θ draws")
        c, d, f, n, _ = self.theta.shape
        return np.moveaxis(self.theta, 2, 0).reshape(f, c * d, n, 2)

    def select_frames(self, frames: np.ndarray) -> PosteriorResult:
        """The result restricted to ``frames`` (indices or a boolean mask over its frames), e.g.
        to drop frames whose reference failed its diagnostics. ``seconds`` is scaled to the
        frames kept, so seconds per frame is unchanged; per-frame ``extra`` and
        ``sample_stats`` arrays are sliced, others kept."""
        idx = np.arange(self.n_frames)[np.asarray(frames)]
        f = self.n_frames

        def per_frame(value: Any, axis: int = 0) -> Any:
            arr = np.asarray(value) if isinstance(value, np.ndarray) else None
            if arr is None or arr.ndim <= axis or arr.shape[axis] != f:
                return value
            return np.take(arr, idx, axis=axis)

        return PosteriorResult(
            method=self.method,
            task=self.task,
            adu=self.adu[idx],
            kde_mean=self.kde_mean[idx],
            kde_var=self.kde_var[idx],
            theta=None if self.theta is None else self.theta[:, :, idx],
            sample_stats={k: per_frame(v, axis=2) for k, v in self.sample_stats.items()},
            settings=self.settings,
            seconds=self.seconds * len(idx) / max(f, 1),
            theta_true=None if self.theta_true is None else self.theta_true[idx],
            extra={k: per_frame(v) for k, v in self.extra.items()},
            evidence=None if self.evidence is None else self.evidence.select(idx),
        )
