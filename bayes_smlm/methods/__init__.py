"""Posterior methods behind one registry; importing this package registers the built-ins.

Every module of this package is imported with it, so a module that registers a method
(``@register_method``) is all it takes to add one in the tree.

>>> from bayes_smlm.methods import get_method, list_methods
>>> {"grid", "nuts", "chees"} <= set(list_methods())
True
"""

import importlib
import pkgutil

from bayes_smlm.methods.registry import get_method, list_methods, register_method, unregister_method
from bayes_smlm.methods.result import PosteriorResult

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["PosteriorResult", "get_method", "list_methods", "register_method",
           "unregister_method"]
