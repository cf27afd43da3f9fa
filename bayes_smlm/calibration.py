"""Kept so that ``import bayes_smlm.calibration`` keeps working: the module is now
:mod:`bayes_smlm.compare.sbc` (see README, "Library tour")."""

from bayes_smlm.compare.sbc import *  # noqa: F401,F403
