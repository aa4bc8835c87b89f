"""Normalizations and priors: how the per-token log-probs of each choice become one score, then a distribution.

``sum`` (total log-prob), ``mean`` (per token), ``char`` (per character of the choice, lm-eval's acc_norm),
``pmi`` (minus the log-prob of the choice without the prompt). Priors multiply the distribution.

>>> normalize_scores([[-1.0, -1.0], [-1.5]], ["ab", "c"], "mean").tolist()
[-1.0, -1.5]
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import numpy as np

from autocog.errors import InvalidNormalizationError

NORMALIZATIONS = ("sum", "mean", "char", "pmi")
DEFAULT_NORMALIZATION = "sum"


def softmax(scores: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (float64): of the scores, or of each row of a 2-D array of them (the same numbers
    as row by row)."""
    scores = np.asarray(scores, dtype=np.float64)
    shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable log_softmax of a 1-D array (same dtype out as in)."""
    logits = np.asarray(logits)
    shifted = logits - logits.max()
    return shifted - np.log(np.exp(shifted).sum())


def apply_prior(scores: np.ndarray, prior: Union[Sequence[float], np.ndarray, None]) -> np.ndarray:
    """``softmax(scores)`` times ``prior``, renormalized, computed as ``softmax(scores + log(prior))``.

    A zero prior weight gives the choice probability 0; weights need not sum to 1.

    >>> apply_prior(np.log([0.5, 0.5]), [3, 1])
    array([0.75, 0.25])
    """
    scores = np.asarray(scores, dtype=np.float64)
    if prior is None:
        return softmax(scores)
    weights = check_prior(prior, len(scores))
    with np.errstate(divide="ignore"):
        return softmax(scores + np.log(weights))


def normalize_scores(
    token_logprobs: Sequence[Sequence[float]],
    choices: Sequence[str],
    normalization: str,
    unconditional: Optional[Sequence[Sequence[float]]] = None,
) -> np.ndarray:
    """Per-choice scores from per-token log-probs.

    ``sum``: total log-prob (AutoCog's default); ``mean``: total / number of tokens (geometric mean per token,
    CAPPr's default); ``char``: total / number of characters of the choice (lm-eval's acc_norm);
    ``pmi``: total minus the total of the same tokens scored without the prompt (``unconditional``).
    """
    check_normalization(normalization)
    sums = np.fromiter(map(math.fsum, token_logprobs), dtype=np.float64, count=len(token_logprobs))
    if normalization == "sum":
        return sums
    if normalization == "mean":
        return sums / np.array([len(lp) for lp in token_logprobs], dtype=np.float64)
    if normalization == "char":
        return sums / np.array([max(len(c), 1) for c in choices], dtype=np.float64)
    if unconditional is None:
        raise ValueError("normalization 'pmi' needs the unconditional log-probs of the choices")
    return sums - np.array([math.fsum(lp) for lp in unconditional], dtype=np.float64)


def check_prior(prior: Union[Sequence[float], np.ndarray], n_choices: int) -> np.ndarray:
    """The prior as a float array, or a ValueError: it needs one finite weight >= 0 per choice, not all 0."""
    try:
        weights = np.asarray(prior, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"a prior must be a list of numbers, got {prior!r}") from error
    if weights.ndim != 1 or len(weights) != n_choices:
        raise ValueError(f"the prior has shape {weights.shape} but there are {n_choices} choices")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError(f"prior weights must be finite, >= 0 and not all 0, got {list(weights)}")
    return weights


def check_normalization(normalization: str) -> str:
    if normalization not in NORMALIZATIONS:
        raise InvalidNormalizationError(
            f"unknown normalization {normalization!r}: expected one of {', '.join(NORMALIZATIONS)}"
        )
    return normalization
