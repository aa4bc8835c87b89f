"""Token-sequence helpers shared by the prefix caches and the scoring layer, and `TokenVocabulary`: what a
backend tells a grammar engine about its tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

# Tokenizer formats a grammar engine can read directly (`TokenVocabulary.native`).
HUGGINGFACE = "huggingface"  # a transformers (fast) tokenizer object
LLAMA_CPP = "llama.cpp"  # a llama.cpp ``llama_vocab`` pointer


@dataclass(frozen=True)
class TokenVocabulary:
    """A backend's vocabulary for structured output (`GreedyLM.token_vocabulary`).

    ``size``: the width of the next-token rows (masks are that long); ``eos``: the ids that end a generation,
    sorted; ``token_bytes``: each id's bytes in id order (called only when the engine needs them);
    ``native``: ``(format, handle)`` when the engine can read the tokenizer itself, exactly and natively
    (format `HUGGINGFACE` or `LLAMA_CPP`), else None. A backend whose tokenizer is one of those formats
    reuses it: ``native=(HUGGINGFACE, my_hf_tokenizer)``.
    """

    size: int
    eos: list[int]
    token_bytes: Callable[[], list[bytes]]
    native: Optional[tuple[str, Any]] = None


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens two sequences share (what a prefix KV cache can keep)."""
    n = min(len(a), len(b))
    if list(a[:n]) == list(b[:n]):
        return n
    return int(np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))[0])
