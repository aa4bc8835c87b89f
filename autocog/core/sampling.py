"""Choosing the next token from log-probs: greedy, or temperature with top-k, top-p and min-p."""

from __future__ import annotations

from typing import Optional

import numpy as np


def sample(
    logprobs: np.ndarray,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    rng: Optional[np.random.Generator] = None,
    min_p: float = 0.0,
) -> int:
    """Pick the next token from log-probs: argmax when ``temperature == 0``, else a draw after top-k, top-p
    (nucleus) and min-p filtering (in that order, transformers' order) at the given temperature. ``min_p``
    keeps the tokens whose probability is at least ``min_p`` times the most likely one's."""
    if temperature <= 0:
        return int(np.argmax(logprobs))
    rng = rng if rng is not None else np.random.default_rng()
    scaled = np.asarray(logprobs, dtype=np.float64) / temperature
    order = np.argsort(-scaled, kind="stable")
    if top_k and top_k > 0:
        order = order[:top_k]
    probs = np.exp(scaled[order] - scaled[order[0]])
    probs /= probs.sum()
    if top_p < 1.0:
        keep = int(np.searchsorted(np.cumsum(probs), top_p) + 1)
        order, probs = order[:keep], probs[:keep] / probs[:keep].sum()
    if min_p and min_p > 0:
        keep = int(np.count_nonzero(probs >= min_p * probs[0]))  # probs is sorted, probs[0] the largest
        order, probs = order[:keep], probs[:keep] / probs[:keep].sum()
    return int(order[rng.choice(len(order), p=probs)])
