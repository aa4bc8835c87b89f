"""`PrefixCache`: the keep/reset decision of a prefix KV cache, shared by the local backends.

A prefix cache holds the model state (KV) of the last token sequence it evaluated, ``tokens``, and the logits
at its last position, ``last_logits``. A new sequence keeps the longest common prefix and runs only the rest;
the last token is run again when its logits are not known (its KV alone does not give them). A backend
supplies the storage: `truncate` (drop the state past a length), `run_rest` (evaluate the tokens after the
kept ones and return the last position's logits) and `reset`.

>>> logits = lm.cache.extend(lm.tokenize("Hello world", bos=True))     # doctest: +SKIP
>>> lm.cache.extend(lm.tokenize("Hello world!", bos=True)) is not None  # runs only "!"   # doctest: +SKIP
True
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Optional, Sequence

from autocog.core.tokens import common_prefix_length


class PrefixCache(ABC):
    """``tokens``: the sequence whose state is held; ``last_logits``: its last position's logits (None when
    unknown); ``evaluated``: tokens run through the model (for accounting)."""

    tokens: list[int]
    last_logits: Optional[Any]
    evaluated: int

    @abstractmethod
    def reset(self) -> None:
        """Forget everything (``tokens`` empty, ``last_logits`` None): the next call starts from scratch."""

    @abstractmethod
    def truncate(self, keep: int) -> int:
        """Drop the state past the first ``keep`` tokens; return how many stay (fewer when the storage cannot
        drop only part of its state)."""

    @abstractmethod
    def run_rest(self, tokens: list[int], keep: int) -> Any:
        """Evaluate ``tokens[keep:]`` on top of the state of ``tokens[:keep]``; afterwards ``tokens`` is held.
        Returns the logits of the last position; resets the cache on any failure."""

    def reusable(self, tokens: Sequence[int]) -> int:
        """Drop what ``tokens`` cannot reuse; return how many of its tokens stay cached: all of them only when
        the last logits are known too, else at least one token is left to run."""
        common = common_prefix_length(self.tokens, tokens)
        if common == len(tokens) == len(self.tokens) and self.last_logits is not None:
            return common
        return self.truncate(min(common, len(tokens) - 1))

    def extend(self, tokens: Sequence[int]) -> Any:
        """The logits at the last position of ``tokens``, running only what the cache does not hold."""
        tokens = list(tokens)
        keep = self.reusable(tokens)
        if keep == len(tokens):
            return self.last_logits
        self.last_logits = self.run_rest(tokens, keep)
        return self.last_logits
