"""Posterior methods behind one registry; importing this package registers the built-ins.

>>> from bayes_smlm.methods import get_method, list_methods
>>> {"grid", "nuts", "chees"} <= set(list_methods())
True
"""

# importing the modules registers the built-in methods
from bayes_smlm.methods import auto, chees, ddpm, grid, laplace  # noqa: F401
from bayes_smlm.methods import network_spread, npe, nuts, rwmh, smc  # noqa: F401
from bayes_smlm.methods.registry import get_method, list_methods, register_method, unregister_method
from bayes_smlm.methods.result import PosteriorResult

__all__ = ["PosteriorResult", "get_method", "list_methods", "register_method",
           "unregister_method"]
