"""Kept so that ``import bayes_smlm.tasks`` keeps working: the module is now
:mod:`bayes_smlm.forward.tasks` (see README, "Library tour")."""

from bayes_smlm.forward.tasks import *  # noqa: F401,F403
