"""Kept so that ``import bayes_smlm.posterior_io`` keeps working: the module is now
:mod:`bayes_smlm.io.posteriors` (see README, "Library tour")."""

from bayes_smlm.io.posteriors import *  # noqa: F401,F403
