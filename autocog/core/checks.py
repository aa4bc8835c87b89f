"""Input checks shared by every backend: prompts, choice lists and their tokens, the prompt/choice boundary,
context length.

Each raises a typed error (`InvalidPromptError`, `InvalidChoicesError`, `ContextLengthError`) naming the cause.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from autocog.errors import ContextLengthError, InvalidChoicesError, InvalidPromptError


def check_prompt(prompt: Any) -> str:
    if not isinstance(prompt, str):
        raise InvalidPromptError(f"the prompt must be a str, not {type(prompt).__name__}")
    return prompt


def check_choices(choices: Any) -> list[str]:
    """The choices as a list, or an `InvalidChoicesError` naming what is wrong with them."""
    if type(choices) is list or type(choices) is tuple:  # the usual case, checked without the loop below
        unique = set(choices) if all(type(c) is str for c in choices) else ()
        if len(unique) == len(choices) and "" not in unique and choices:
            return list(choices)
    if isinstance(choices, str) or not isinstance(choices, Sequence):
        raise InvalidChoicesError(f"choices must be a list of strings, not {type(choices).__name__}")
    choices = list(choices)
    if not choices:
        raise InvalidChoicesError("the list of choices is empty")
    seen: dict[str, int] = {}
    for j, choice in enumerate(choices):
        if not isinstance(choice, str):
            raise InvalidChoicesError(f"choice {j} is a {type(choice).__name__}, not a str: {choice!r}")
        if not choice:
            raise InvalidChoicesError(f"choice {j} is the empty string")
        if choice in seen:
            raise InvalidChoicesError(f"choice {j} ({choice!r}) duplicates choice {seen[choice]}")
        seen[choice] = j
    return choices


def split_boundary(prompt: str, choices: Sequence[str]) -> tuple[str, list[str]]:
    """Move the prompt's trailing whitespace to the front of every choice (see the module docstring).

    >>> split_boundary("Answer: ", ["Paris", "London"])
    ('Answer:', [' Paris', ' London'])
    """
    stripped = prompt.rstrip()
    moved = prompt[len(stripped) :]
    return stripped, [moved + c for c in choices]


def check_context(n_tokens: int, n_ctx: Optional[int], what: str = "prompt") -> None:
    if n_ctx is not None and n_tokens > n_ctx:
        raise ContextLengthError(f"the {what} needs {n_tokens} tokens but the model's context holds {n_ctx} tokens")


def check_choice_tokens(token_lists: Sequence[Sequence[int]], texts: Sequence[str]) -> None:
    """The checks on the choices' tokens (``texts[j]``: what choice j's tokens encode, the prompt's trailing
    whitespace moved in): an `InvalidChoicesError` when one tokenizes to nothing or two to the same tokens."""
    for j, tokens in enumerate(token_lists):
        if not tokens:
            raise InvalidChoicesError(f"choice {j} ({texts[j]!r}) tokenizes to nothing")
    if len({tuple(tokens) for tokens in token_lists}) < len(token_lists):
        raise InvalidChoicesError(
            "two choices tokenize to the same tokens once the prompt's trailing whitespace is moved into them"
        )
