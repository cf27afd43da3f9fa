"""Kept so that ``import bayes_smlm.simulate`` keeps working: the module is now
:mod:`bayes_smlm.forward.simulate` (see README, "Library tour")."""

from bayes_smlm.forward.simulate import *  # noqa: F401,F403
