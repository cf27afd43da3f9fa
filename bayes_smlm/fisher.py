"""Kept so that ``import bayes_smlm.fisher`` keeps working: the module is now
:mod:`bayes_smlm.forward.fisher` (see README, "Library tour")."""

from bayes_smlm.forward.fisher import *  # noqa: F401,F403
