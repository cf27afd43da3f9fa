"""Posterior methods behind one registry.

Every module of this package is imported when the registry is first asked for a method
(:func:`~bayes_smlm.methods.registry.builtin_methods`), so a module that registers a method
(``@register_method``) is all it takes to add one in the tree.

>>> from bayes_smlm.methods import get_method, list_methods
>>> {"grid", "nuts", "chees"} <= set(list_methods())
True
"""

from bayes_smlm.methods.registry import get_method, list_methods, register_method, unregister_method
from bayes_smlm.methods.result import PosteriorResult

__all__ = ["PosteriorResult", "get_method", "list_methods", "register_method", "unregister_method"]
