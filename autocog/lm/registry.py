"""One table from backend names to classes: `load` builds any backend from plain keyword arguments.

Used by the CLI, the lm-eval adapter and scripts. Adding a backend is one line in `BACKENDS` (module and
class name; the class is imported only when asked for) and a ``create`` classmethod on the class.

>>> lm = load("llama")                                      # the embedded SmolLM2 GGUF    # doctest: +SKIP
>>> lm = load("tf", model="path/to/hf_dir", device="cpu")                                   # doctest: +SKIP
>>> lm = load("openai", model="m", base_url="http://127.0.0.1:8000/v1")                     # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Optional

from autocog.lm.base import LM

# name -> (module under autocog.lm, class name, keyword of ``create`` that ``model=`` maps to)
BACKENDS: dict[str, tuple[str, str, str]] = {
    "tf": (".tf", "TfLM", "model_path"),
    "llama": (".llama", "LLaMa", "model_path"),
    "openai": (".openai", "OpenAI", "model"),
}


def backend_class(backend: str) -> type:
    """The class registered under ``backend``; a ValueError names the known backends."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    module, name, _ = BACKENDS[backend]
    return getattr(importlib.import_module(module, __package__), name)


def load(backend: str, model: Optional[str] = None, **kwargs: Any) -> LM:
    """An `LM` of the named backend. ``model``: a path (``tf``: a transformers directory or a GGUF file;
    ``llama``: a GGUF file; both default to the embedded SmolLM2) or a model name (``openai``).

    Keyword arguments go to the class's constructor when it takes them (``completion_kwargs``,
    ``n_seq_max``, ``concurrency``...), else to its ``create`` (``device``, ``dtype``, ``n_ctx``,
    ``base_url``...). An argument neither takes is a TypeError that names it.
    """
    cls = backend_class(backend)
    model_key = BACKENDS[backend][2]
    create_params, init_params = _keywords(cls.create), _keywords(cls.__init__)
    open_create = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(cls.create).parameters.values())
    create_kwargs: dict[str, Any] = {} if model is None else {model_key: model}
    init_kwargs: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in create_params or (open_create and key not in init_params):
            create_kwargs[key] = value
        elif key in init_params:
            init_kwargs[key] = value
        else:
            raise TypeError(f"backend {backend!r} takes no argument {key!r}")
    return cls(**cls.create(**create_kwargs), **init_kwargs)


def _keywords(fn: Any) -> set[str]:
    return {
        name
        for name, p in inspect.signature(fn).parameters.items()
        if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
