"""bayes_smlm: exact and surrogate posteriors for single-molecule localization microscopy.

Conventions (docs/conventions.md §2): frames are (H, W) arrays indexed [row, col] = [y, x]; emitter
positions θ = (x, y) in low-resolution pixels with pixel centres at integers; the KDE lives on a
u-times upsampled grid and one isolated kernel peaks at 1.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
