"""Kept so that ``import bayes_smlm.model`` keeps working: the module is now
:mod:`bayes_smlm.forward.model` (see README, "Library tour")."""

from bayes_smlm.forward.model import *  # noqa: F401,F403
