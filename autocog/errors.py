"""Typed errors raised by autocog. Each also subclasses the builtin a caller would catch anyway."""

from __future__ import annotations

from typing import Optional


class AutoCogError(Exception):
    """Base class of every error autocog raises on purpose."""


class InvalidChoicesError(AutoCogError, ValueError):
    """The choice list is empty, holds a duplicate, an empty or non-string choice, or one that tokenizes to nothing."""


class InvalidPromptError(AutoCogError, ValueError):
    """The prompt is not a string, or is empty where a non-empty one is needed."""


class InvalidNormalizationError(AutoCogError, ValueError):
    """The normalization is not one of `autocog.core.normalization.NORMALIZATIONS` (the message lists them)."""


class ContextLengthError(AutoCogError, ValueError):
    """The tokens to evaluate do not fit the model's context window (the message names both lengths)."""


class BackendNotInstalledError(AutoCogError, ImportError):
    """An optional dependency of a backend (or of `autocog.ray`) is missing; the message names the pip extra."""


class UnknownBackendError(AutoCogError, ValueError):
    """No backend is registered under the name (the message lists the known ones and how to register one)."""


class BackendImportError(AutoCogError, ImportError):
    """A registered backend (a plugin's entry point or a ``"module:Class"`` target) cannot be imported; the
    message names the entry point or the target, and the cause."""


class InvalidBackendError(AutoCogError, TypeError):
    """A registered backend is not an `autocog.lm.LM` subclass, or its target is not ``"module:Class"``."""


class ModelNotFoundError(AutoCogError, FileNotFoundError):
    """A model path does not exist or does not hold a model of the expected format."""


class TransientError(AutoCogError):
    """A fault worth retrying (a backend may raise it to ask `GreedyLM` for a retry)."""


class RetryExhaustedError(AutoCogError, RuntimeError):
    """A transient fault persisted through every retry; `attempts` lists what happened, in order."""

    def __init__(self, message: str, attempts: list[str]):
        super().__init__(message + "\n" + "\n".join(f"  attempt {i + 1}: {a}" for i, a in enumerate(attempts)))
        self.attempts = attempts


class RequestFailedError(AutoCogError, RuntimeError):
    """A server refused a request for good (400/401/403/404...); the message names the model and the server,
    never the API key. ``status`` is the HTTP status (None when no response came back)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class MalformedResponseError(AutoCogError, ValueError):
    """A server answered with something that is not the expected JSON (truncated, wrong shape, missing fields)."""


class TokenizerMismatchError(AutoCogError, ValueError):
    """The local tokenizer does not split text the way the server's model does (token counts or pieces differ)."""


class StrategyUnavailableError(AutoCogError, RuntimeError):
    """A scoring strategy cannot run on this server or endpoint (the message says what is missing)."""


def missing_backend(package: str, extra: str) -> BackendNotInstalledError:
    """The error for a backend whose package cannot be imported."""
    return BackendNotInstalledError(
        f"the {extra} backend needs the '{package}' package, which is not installed: pip install autocog[{extra}]"
    )


class ChatTemplateError(AutoCogError, ValueError):
    """Messages cannot be rendered: the model has no chat template (pass ``chat_template=``), the template
    refused the conversation, or the endpoint exposes no template for a completions-style call."""


class ProgramError(AutoCogError, ValueError):
    """A program or its inputs are invalid; ``step`` is the name of the step at fault (None for the program)."""

    def __init__(self, message: str, step: Optional[str] = None):
        super().__init__(message)
        self.step = step


class DuplicateStepError(ProgramError):
    """Two steps share a name."""


class UnknownStepError(ProgramError):
    """An edge, the entry or a Choose option leads to a step that does not exist."""


class UnreachableStepError(ProgramError):
    """A step cannot be reached from the entry."""


class UnboundedLoopError(ProgramError):
    """A cycle of steps has no step with ``max_visits``: a run could loop for ever."""


class InvalidStepError(ProgramError):
    """A step's own settings are wrong (empty options, bad token limit, bad text template...)."""


class UndefinedValueError(ProgramError):
    """A Text uses the value of a step that is not run on every path before it."""


class MissingInputError(ProgramError):
    """``run`` was not given an input that a Text step uses."""


class UnknownInputError(ProgramError):
    """``run`` was given an input that no step uses (most often a typo)."""


class UnsupportedFieldError(ProgramError):
    """A pydantic field has a type the structured-output builder cannot constrain."""


__all__ = [
    "AutoCogError",
    "BackendImportError",
    "BackendNotInstalledError",
    "ChatTemplateError",
    "ContextLengthError",
    "DuplicateStepError",
    "InvalidBackendError",
    "InvalidChoicesError",
    "InvalidNormalizationError",
    "InvalidPromptError",
    "InvalidStepError",
    "MalformedResponseError",
    "MissingInputError",
    "ModelNotFoundError",
    "ProgramError",
    "RequestFailedError",
    "RetryExhaustedError",
    "StrategyUnavailableError",
    "TokenizerMismatchError",
    "TransientError",
    "UnboundedLoopError",
    "UndefinedValueError",
    "UnknownBackendError",
    "UnknownInputError",
    "UnknownStepError",
    "UnreachableStepError",
    "UnsupportedFieldError",
    "missing_backend",
]


class CacheClearedError(AutoCogError, RuntimeError):
    """A model cached by ``autocog.cappr.huggingface.classify.cache`` used after its context cleared the cache
    (``clear_cache_on_exit=True``), as CAPPr forbids."""


class UserCanceledError(AutoCogError):
    """The user answered no when ``ask_if_ok=True`` asked to go ahead (``autocog.cappr.openai``, as CAPPr asks)."""
