"""Language-model backends behind one hierarchy: `LM` > `GreedyLM` > `ChoiceLM` > `TfLM`, `LLaMa`; `LM` > `OpenAI`.

Backends live in one table (`autocog.lm.registry.BACKENDS`): ``load("llama")`` builds one by name, and
``register_backend("mine", "mine_pkg:MineLM")`` or an entry point in the group ``autocog.backends`` adds one.
The built-in classes are imported on first use, so ``from autocog.lm import LLaMa`` works without transformers.
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
from autocog.lm.registry import BACKENDS, backend_class, load, register_backend
from autocog.lm.scoring import ascore, score

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
    "ascore",
    "backend_class",
    "load",
    "register_backend",
    "score",
]


def __getattr__(name: str) -> type:
    """The built-in backend classes (`TfLM`, `LLaMa`, `OpenAI`), imported from the registry on first use."""
    backend = BACKENDS.builtin(name)
    if backend is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return backend.resolve()
