"""The values that cross layers: `ScoreRequest` (one prompt and its choices), `ChoiceResult` (what scoring
gives back) and `Stop` (stop strings)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

import numpy as np

from autocog.core.normalization import apply_prior, softmax

if TYPE_CHECKING:  # pragma: no cover
    from autocog.core.trie import TokenChoiceTree

Stop = Union[str, Sequence[str], None]


@dataclass
class ChoiceResult:
    """What scoring a list of choices gives back.

    ``token_logprobs[j][k]`` is log P(token k of choice j | prompt + the tokens of choice j before k);
    ``scores[j]`` is choice j's score under ``normalization``; ``probs`` is ``softmax(scores)`` (sums to 1);
    ``index`` is the best choice. ``tree`` is the token choice tree when the backend built one, and
    ``strategy`` names how the scores were obtained (``"tree"``, ``"echo"``, ``"descent"``...).
    ``is_greedy[j]`` says whether choice j is the model's greedy continuation (each of its tokens the argmax of
    its next-token row, lm-eval's ``is_greedy``), None when the backend did not see the rows.

    >>> r = lm.choice_distribution("2+2=", ["4", "5"]); r.choice, r.probs   # doctest: +SKIP
    ('4', array([0.93, 0.07]))
    """

    choices: list[str]
    token_logprobs: list[list[float]]
    scores: np.ndarray
    normalization: str
    tree: Optional[TokenChoiceTree] = None
    strategy: str = "tree"
    unconditional_logprobs: Optional[list[list[float]]] = None
    info: dict = field(default_factory=dict)
    prior: Optional[np.ndarray] = None  # weights per choice: probs is the posterior (see `apply_prior`)
    is_greedy: Optional[list[bool]] = None  # per choice: every token the argmax of its row (None: not known)

    @property
    def probs(self) -> np.ndarray:
        return softmax(self.scores) if self.prior is None else apply_prior(self.scores, self.prior)

    @property
    def index(self) -> int:
        return int(np.asarray(self.scores if self.prior is None else self.probs).argmax())

    @property
    def choice(self) -> str:
        return self.choices[self.index]

    @property
    def logprobs(self) -> np.ndarray:
        """Total log-probability of each choice (the ``sum`` score, whatever the normalization)."""
        return np.array([math.fsum(lp) for lp in self.token_logprobs])

    def __repr__(self) -> str:
        probs = ", ".join(f"{c!r}: {p:.3f}" for c, p in zip(self.choices, self.probs))
        return f"ChoiceResult(best={self.choice!r}, normalization={self.normalization!r}, probs={{{probs}}})"


@dataclass
class ScoreRequest:
    """One prompt (a str, or a list of chat messages) and its choices.

    ``normalization`` None means the model's default; ``end`` is an optional text scored after each choice;
    ``prior`` optional weights, one per choice (see `autocog.core.normalization.apply_prior`).
    """

    prompt: Any
    choices: Sequence[str]
    normalization: Optional[str] = None
    end: Optional[str] = None
    prior: Optional[Sequence[float] | np.ndarray] = None
