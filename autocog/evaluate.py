"""Evaluation on multiple-choice data (public path): `evaluate`, `load_items` and the rest of `autocog.eval.evaluate`.

The module is callable: ``autocog.evaluate(lm, ...)`` is `evaluate` whether or not ``import autocog.evaluate`` has
bound that name to this module.
"""

import sys
import types

from autocog.eval.evaluate import *  # noqa: F403
from autocog.eval.evaluate import __all__, evaluate  # noqa: F401


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return evaluate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
