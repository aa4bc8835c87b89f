"""Perplexity of a text the way llama.cpp's ``llama-perplexity`` computes it (the number quoted for quants).

The text is tokenized once (without BOS) and cut into ``n = len(tokens) // context`` non-overlapping
windows of ``context`` tokens (the remainder is dropped). In each window the first token is replaced by
BOS when the model adds one, the first half (``context // 2`` tokens) is context only, and every later
token is scored: ``log P(w[j+1] | w[..j])`` for ``j`` in ``[context // 2, context - 1)``. The perplexity
is ``exp(-mean log-prob)`` over all scored tokens. Any `ChoiceLM` (``TfLM``, ``LLaMa``) works: each window
goes through ``lm.evaluate_tree`` as one chain (chunks of `CHAIN` tokens), so the numbers are the same
per-token log-probs the scoring layer uses.

>>> perplexity(lm, open("wiki.txt").read(), context=512).perplexity     # doctest: +SKIP
17.3
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from autocog.errors import ContextLengthError

CHAIN = 256  # tokens scored per evaluate_tree call (bounds the llama.cpp batch and the transformers mask)

__all__ = ["PerplexityResult", "perplexity"]


@dataclass
class PerplexityResult:
    """``perplexity`` = exp(``nll``); ``nll``: mean negative log-likelihood (nats) per scored token;
    ``window_perplexities``: the running value after each window (what llama.cpp prints as ``[1]...``)."""

    perplexity: float
    nll: float
    tokens_scored: int
    windows: int
    context: int
    window_perplexities: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def perplexity(lm, text: str, context: int = 512, progress: Optional[bool] = None) -> PerplexityResult:
    """llama.cpp's perplexity of ``text`` on ``lm`` with windows of ``context`` tokens (see the module doc).

    Errors (before any model call): ``ValueError`` when ``context < 4`` or the text has fewer than
    ``context`` tokens (the message says how many it has), `ContextLengthError` when ``context`` exceeds
    the model's context window, ``TypeError`` for a backend without per-token scoring (``OpenAI``).
    """
    from autocog.core.trie import TokenChoiceTree
    from autocog.lm.choice import ChoiceLM

    if not isinstance(lm, ChoiceLM):
        raise TypeError(
            f"perplexity needs a local backend with per-token scoring (TfLM, LLaMa), not {type(lm).__name__}"
        )
    if not isinstance(context, int) or context < 4:
        raise ValueError(f"context must be an int >= 4, got {context!r}")
    if lm.n_ctx is not None and context > lm.n_ctx:
        raise ContextLengthError(f"context {context} exceeds the model's context window of {lm.n_ctx} tokens")
    tokens = lm.tokenize(text)
    n_windows = len(tokens) // context
    if n_windows == 0:
        raise ValueError(
            f"the text has {len(tokens)} tokens, fewer than one window of {context}: "
            f"pass a smaller context (at most {len(tokens)}) or a longer text"
        )
    bos = lm.tokenize("x", bos=True)
    bos_id = bos[0] if len(bos) > len(lm.tokenize("x")) else None
    first = context // 2
    total, count, running = 0.0, 0, []
    bar = None
    if progress or (progress is None and sys.stderr.isatty() and n_windows > 1):
        from tqdm import tqdm

        bar = tqdm(total=n_windows, unit="window", desc="perplexity", file=sys.stderr)
    try:
        for w in range(n_windows):
            window = list(tokens[w * context : (w + 1) * context])
            if bos_id is not None:
                window[0] = bos_id
            for start in range(first + 1, context, CHAIN):
                chain = window[start : start + CHAIN]
                logprobs = lm.evaluate_tree(window[:start], TokenChoiceTree([chain]))
                total += float(np.sum(logprobs))
                count += len(chain)
            running.append(math.exp(-total / count))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return PerplexityResult(math.exp(-total / count), -total / count, count, n_windows, context, running)
