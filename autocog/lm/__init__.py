"""Language-model backends behind one hierarchy: `LM` > `GreedyLM` > `ChoiceLM` > `TfLM`, `LLaMa`; `LM` > `OpenAI`.

Backends are imported on first use, so ``from autocog.lm import LLaMa`` works without transformers installed.
"""

from autocog.core.normalization import DEFAULT_NORMALIZATION, NORMALIZATIONS
from autocog.core.trie import TokenChoiceTree, TreeNode
from autocog.core.types import ChoiceResult, ScoreRequest
from autocog.errors import (
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
from autocog.lm.base import LM
from autocog.lm.choice import ChoiceLM
from autocog.lm.greedy import GreedyLM
from autocog.lm.registry import BACKENDS, backend_class, load
from autocog.lm.scoring import score

_BACKENDS = {"TfLM": ".tf", "LLaMa": ".llama", "OpenAI": ".openai"}

__all__ = [
    "BACKENDS",
    "DEFAULT_NORMALIZATION",
    "LM",
    "NORMALIZATIONS",
    "AutoCogError",
    "BackendNotInstalledError",
    "ChatTemplateError",
    "ChoiceLM",
    "ChoiceResult",
    "ContextLengthError",
    "GreedyLM",
    "InvalidChoicesError",
    "InvalidPromptError",
    "LLaMa",
    "MalformedResponseError",
    "ModelNotFoundError",
    "OpenAI",
    "RequestFailedError",
    "RetryExhaustedError",
    "ScoreRequest",
    "StrategyUnavailableError",
    "TfLM",
    "TokenChoiceTree",
    "TokenizerMismatchError",
    "TransientError",
    "TreeNode",
    "backend_class",
    "load",
    "score",
]


def __getattr__(name):
    if name in _BACKENDS:
        import importlib

        return getattr(importlib.import_module(_BACKENDS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
