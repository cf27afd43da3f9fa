"""Posterior methods behind one registry; importing this package registers the built-ins.

>>> from bayes_smlm.methods import get_method, list_methods
>>> sorted(list_methods())[:2]
['grid', 'nuts']
"""

from bayes_smlm.methods import (ddpm, grid, laplace, network_spread, npe,  # noqa: F401
                                nuts, rwmh)  # (importing registers the built-ins)
from bayes_smlm.methods.registry import get_method, list_methods, register_method, unregister_method
from bayes_smlm.methods.result import PosteriorResult

__all__ = ["PosteriorResult", "get_method", "list_methods", "register_method",
           "unregister_method"]
