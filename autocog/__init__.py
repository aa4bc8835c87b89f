"""autocog: language-model backends behind one small class hierarchy, and prompting programs over them.

The names a user reaches for first, each imported on first use (``import autocog`` loads no backend):

* models: `load`, `register_backend`, `LM`, `GreedyLM`, `ChoiceLM`, `TfLM`, `LLaMa`, `OpenAI`, `SamplingParams`;
* scoring: `score` (async: `ascore`), `ScoreRequest`, `ChoiceResult`; the batch API `predict_proba`, `predict`,
  `predict_proba_examples`, `predict_examples`; evaluation `evaluate`, `load_items`;
* structured output: `generate` with `Regex`, `Lark`, `GBNF`; programs: `Program`, `Text`, `Complete`, `Choose`;
* `errors`: every typed error.

>>> import autocog
>>> lm = autocog.load("llama")                                            # doctest: +SKIP
>>> autocog.predict_proba(lm, ["2 + 2 ="], [" 4", " 5"])                   # doctest: +SKIP
array([[0.93, 0.07]])
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it; a name that maps to itself is a submodule
_PUBLIC = {
    "load": "autocog.lm.registry",
    "register_backend": "autocog.lm.registry",
    "LM": "autocog.lm.base",
    "GreedyLM": "autocog.lm.greedy",
    "ChoiceLM": "autocog.lm.choice",
    "TfLM": "autocog.lm",
    "LLaMa": "autocog.lm",
    "OpenAI": "autocog.lm",
    "SamplingParams": "autocog.core.sampling",
    "score": "autocog.lm.scoring",
    "ascore": "autocog.lm.scoring",
    "ScoreRequest": "autocog.core.types",
    "ChoiceResult": "autocog.core.types",
    "predict_proba": "autocog.eval.batch",
    "predict": "autocog.eval.batch",
    "predict_proba_examples": "autocog.eval.batch",
    "predict_examples": "autocog.eval.batch",
    # the public module autocog.evaluate, which is callable: autocog.evaluate(lm, ...) is its `evaluate`
    "evaluate": "autocog.evaluate",
    "load_items": "autocog.eval.items",
    "generate": "autocog.structured.generate",
    "Regex": "autocog.structured.types",
    "Lark": "autocog.structured.types",
    "GBNF": "autocog.structured.types",
    "Program": "autocog.fta.program",
    "Text": "autocog.fta.steps",
    "Complete": "autocog.fta.steps",
    "Choose": "autocog.fta.steps",
    "errors": "autocog.errors",
}

__all__ = [
    "ChoiceLM",
    "ChoiceResult",
    "Choose",
    "Complete",
    "errors",
    "evaluate",
    "GBNF",
    "generate",
    "GreedyLM",
    "Lark",
    "LLaMa",
    "LM",
    "load",
    "register_backend",
    "load_items",
    "OpenAI",
    "predict",
    "predict_examples",
    "predict_proba",
    "predict_proba_examples",
    "Program",
    "Regex",
    "SamplingParams",
    "score",
    "ascore",
    "ScoreRequest",
    "Text",
    "TfLM",
]

if TYPE_CHECKING:  # pragma: no cover - what type checkers and IDEs see; at run time `__getattr__` imports
    from autocog import errors, evaluate
    from autocog.core.sampling import SamplingParams
    from autocog.core.types import ChoiceResult, ScoreRequest
    from autocog.eval.batch import predict, predict_examples, predict_proba, predict_proba_examples
    from autocog.eval.items import load_items
    from autocog.fta.program import Program
    from autocog.fta.steps import Choose, Complete, Text
    from autocog.lm import LLaMa, OpenAI, TfLM
    from autocog.lm.base import LM
    from autocog.lm.choice import ChoiceLM
    from autocog.lm.greedy import GreedyLM
    from autocog.lm.registry import load, register_backend
    from autocog.lm.scoring import ascore, score
    from autocog.structured.generate import generate
    from autocog.structured.types import GBNF, Lark, Regex


def __getattr__(name: str) -> Any:
    """PEP 562: import a public name's module on first use."""
    where = _PUBLIC.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(where)
    value = module if where == f"{__name__}.{name}" else getattr(module, name)
    globals()[name] = value  # found directly next time
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
