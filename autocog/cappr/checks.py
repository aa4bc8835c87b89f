"""CAPPr 0.9.6's input checks (``cappr.utils._check``), with its error types: each runs before any model call.

>>> completions(["Yes", ""])
Traceback (most recent call last):
ValueError: completions [1] are empty. Expected all completions to be non-empty strings.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np


def ordered(value: Any, variable_name: str) -> None:
    """A `TypeError` unless ``value`` has an order (``reversed`` works: list, tuple, array, pandas Series; not
    a set)."""
    try:
        reversed(value)
    except TypeError:
        raise TypeError(
            f"{variable_name} must be an ordered collection. Consider converting it to a list or tuple."
        ) from None


def nonempty(value: Any, variable_name: str) -> None:
    if len(value) == 0:
        raise ValueError(f"{variable_name} must be non-empty.")


def nonempty_and_ordered(value: Any, variable_name: str) -> None:
    nonempty(value, variable_name)
    ordered(value, variable_name)


def completions(values: Any) -> None:
    """Non-empty, ordered, not a str, no empty completion."""
    nonempty_and_ordered(values, "completions")
    if isinstance(values, str):
        raise TypeError(
            "completions cannot be a string. It must be a sequence of strings. If you intend on inputting a "
            "single completion to estimate its probability, wrap it in a list or tuple (and set normalize=False "
            "in a predict_proba call)."
        )
    empty = [i for i, completion in enumerate(values) if not completion]
    if len(empty) == len(values):
        raise ValueError("All completions are empty. Expected all completions to be non-empty strings.")
    if empty:
        raise ValueError(f"completions {empty} are empty. Expected all completions to be non-empty strings.")


def end_of_prompt(value: Any) -> None:
    message = 'end_of_prompt must be a whitespace " " or empty string "".'
    if not isinstance(value, str):
        raise TypeError(message)
    if value not in {" ", ""}:
        raise ValueError(message)


def prior(value: Optional[Sequence[float]], expected_length: int) -> Optional[np.ndarray]:
    """None, or ``value`` as a float array once it is a probability distribution over ``expected_length``
    completions (else a `ValueError`)."""
    if value is None:
        return None
    nonempty_and_ordered(value, "prior")
    if len(np.shape(value)) != 1:
        raise ValueError("prior must be 1-D.")
    array = np.array(value, dtype=float)
    if not (np.all(array >= 0) and np.all(array <= 1)):
        raise ValueError("prior must contain probabilities between 0 and 1.")
    if not np.isclose(array.sum(), 1):
        raise ValueError("prior must sum to 1.")
    if len(array) != expected_length:
        raise ValueError(
            f"Expected prior to have length {expected_length} (the number of completions), got {len(array)}."
        )
    return array


def normalize(value: bool, values: Sequence[str]) -> None:
    if value and len(values) == 1:
        raise ValueError(
            "Setting normalize=True when there's only 1 completion causes the probability to trivially be 1. Did "
            "you mean to set normalize=False, or did you mean to include more completions?"
        )


def discount(discount_completions: float, log_marg_probs_completions: Any) -> None:
    if not discount_completions and log_marg_probs_completions is not None:
        raise TypeError(
            "log_marg_probs_completions is set, but they will not be used because discount_completions was not set."
        )


def more_than_one(values: Sequence[str]) -> None:
    """`predict` with one completion would trivially return it."""
    if len(values) == 1:
        raise ValueError(
            "completions only has one completion. predict will trivially return back this completion. Perhaps you "
            "meant to call predict_proba with normalize=False instead of predict."
        )


def batch_size(value: Any, variable_name: str = "batch_size", optional: bool = False) -> None:
    if optional and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{variable_name} must be a positive int{' or None' if optional else ''}, got {value!r}")


def needs_prepended_space(tokenize: Callable[[str], list[int]], bos_token_id: Optional[int]) -> bool:
    """Whether a completion must be joined to its prompt with a space (BPE tokenizers: ``tokenize("a b") !=
    tokenize("a") + tokenize("b")``) or not (SentencePiece, which adds the space itself). CAPPr's test."""

    def without_bos(tokens: list[int]) -> list[int]:
        return tokens[1:] if bos_token_id is not None and tokens[:1] == [bos_token_id] else tokens

    return tokenize("a b") != tokenize("a") + without_bos(tokenize("b"))
