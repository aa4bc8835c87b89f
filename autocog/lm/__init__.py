"""Language-model backends behind one hierarchy: `LM` > `GreedyLM` > `ChoiceLM` > `TfLM`, `LLaMa`; `LM` > `OpenAI`.

Backends are imported on first use, so ``from autocog.lm import LLaMa`` works without transformers installed.
"""

from .choice import ChoiceLM, TokenChoiceTree, TreeNode
from .errors import (
    AutoCogError,
    BackendNotInstalledError,
    ChatTemplateError,
    ContextLengthError,
    InvalidChoicesError,
    InvalidPromptError,
    MalformedResponseError,
    ModelNotFoundError,
    RequestFailedError,
    RetryExhaustedError,
    StrategyUnavailableError,
    TokenizerMismatchError,
    TransientError,
)
from .greedy import GreedyLM
from .lm import DEFAULT_NORMALIZATION, LM, NORMALIZATIONS, ChoiceResult
from .registry import BACKENDS, backend_class, load
from .scoring import ScoreRequest, score

_BACKENDS = {"TfLM": ".tf", "LLaMa": ".llama", "OpenAI": ".openai"}

__all__ = [
    "LM", "GreedyLM", "load", "BACKENDS", "backend_class", "ScoreRequest", "score", "ChoiceLM", "TokenChoiceTree", "TreeNode", "ChoiceResult", "TfLM", "LLaMa", "OpenAI",
    "NORMALIZATIONS", "DEFAULT_NORMALIZATION", "AutoCogError", "BackendNotInstalledError", "ChatTemplateError", "ContextLengthError",
    "InvalidChoicesError", "InvalidPromptError", "ModelNotFoundError", "RetryExhaustedError", "TransientError",
    "RequestFailedError", "MalformedResponseError", "TokenizerMismatchError", "StrategyUnavailableError",
]


def __getattr__(name):
    if name in _BACKENDS:
        import importlib

        return getattr(importlib.import_module(_BACKENDS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
