"""One `Dialect` per kind of OpenAI-compatible server, one module each: `openai`, `llama_cpp`, `vllm`, `generic`.

Every module of this package is imported here, so that its dialect registers itself (``server=`` names and
detection): a new server is one new module (see `autocog.lm.openai.dialects.base`).
"""

import importlib
import pkgutil

from autocog.lm.openai.dialects.base import Dialect, detect

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

SERVERS = ("auto", *sorted(Dialect.registry))

__all__ = ["SERVERS", "Dialect", "detect"]
