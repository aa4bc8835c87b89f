"""The scoring layer: every caller that scores choices (``choose``, ``choice_distribution``, the batch API,
``evaluate``, programs, the lm-eval adapter) goes through `score`.

A request is (prompt, choices, normalization, end); the answer one `ChoiceResult` per request, in order.
Backends implement one primitive, ``lm.score_batch(requests) -> list[ChoiceResult]`` (the default in `LM`
scores the requests one by one with ``choice_distribution``); `score` cuts the stream of requests into
batches of ``batch_size`` so that memory stays flat however many requests there are.

>>> [r.choice for r in score(lm, [ScoreRequest("2+2=", ["4", "5"])])]      # doctest: +SKIP
['4']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Optional, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from .lm import LM, ChoiceResult

DEFAULT_BATCH_SIZE = 16


@dataclass
class ScoreRequest:
    """One prompt (a str, or a list of chat messages where the backend renders them) and its choices.

    ``normalization`` None means the model's default; ``end`` is an optional text scored after each choice.
    """

    prompt: Any
    choices: Sequence[str]
    normalization: Optional[str] = None
    end: Optional[str] = None


def score(lm: "LM", requests: Iterable[ScoreRequest], batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator["ChoiceResult"]:
    """Yield one `ChoiceResult` per request, in order, scoring ``batch_size`` requests per backend call."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    batch: list[ScoreRequest] = []
    for request in requests:
        batch.append(request)
        if len(batch) >= batch_size:
            yield from lm.score_batch(batch)
            batch = []
    if batch:
        yield from lm.score_batch(batch)
