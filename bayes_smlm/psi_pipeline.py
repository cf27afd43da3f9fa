"""Kept so that ``import bayes_smlm.psi_pipeline`` keeps working: the module is now
:mod:`bayes_smlm.surrogates.psi.pipeline` (see README, "Library tour")."""

from bayes_smlm.surrogates.psi.pipeline import *  # noqa: F401,F403
