"""The one evaluation loop: from scored multiple-choice items (the per-token log-probs of each choice) to the
scores, predictions and accuracies under each normalization. `autocog.eval.evaluate`, `autocog.eval.compare`
and the lm-eval adapter (`autocog.eval.lm_eval`) all go through here, so the same log-probs give the same
accuracies everywhere; the math itself is the scoring layer's `autocog.core.normalization.normalize_scores`.

Which characters ``char`` divides by (``char_length``):

* ``"choice"`` (the default): the choice as the record writes it, without the delimiter space scored in front
  of it. This is lm-eval's ``acc_norm``: lm-eval scores ``target_delimiter + choice`` (``" Paris"``; autocog's
  boundary rule, `autocog.core.checks.split_boundary`, moves a prompt's trailing space to the same place), but
  divides the log-likelihood by ``len(choice)`` of ``doc_to_choice`` (``"Paris"``, 5 characters). For a
  ``prompt`` record (choices verbatim) the choice as written is the scored text, as with lm-eval's
  ``target_delimiter: ""``.
* ``"continuation"``: the text as scored, delimiter space included (6 for ``" Paris"``), as
  ``lm.choice_distribution(..., normalization="char")`` does.

The lm-eval adapter hands lm-eval each continuation's ``sum`` score (`choice_scores`); lm-eval's ``acc`` and
``acc_norm`` are then this module's ``sum`` and ``char`` (``char_length="choice"``) predictions.

>>> items = [MCItem("Q:", [" Paris", " Rome"], 0, raw_choices=["Paris", "Rome"])]
>>> result = ChoiceResult([" Paris", " Rome"], [[-1.0, -4.0], [-4.1]], np.zeros(2), "sum")
>>> by = {c: ItemScores.from_results(items, [result], ["char"], c) for c in ("choice", "continuation")}
>>> by["choice"].predictions("char").tolist(), by["continuation"].predictions("char").tolist()
([0], [1])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from autocog.core.normalization import check_normalization, normalize_scores
from autocog.core.types import ChoiceResult
from autocog.eval.items import MCItem, check_char_length
from autocog.eval.report import NormalizationResult

DEFAULT_NORMALIZATIONS = ("sum", "mean", "char")

__all__ = ["DEFAULT_NORMALIZATIONS", "ItemScores", "choice_scores"]


def choice_scores(result: ChoiceResult, normalization: str, texts: Optional[Sequence[str]] = None) -> np.ndarray:
    """One item's per-choice scores under ``normalization``, from its `ChoiceResult`'s per-token log-probs
    (and unconditional ones, for ``pmi``). ``texts``: what ``char`` divides by (default: the choices as scored).

    >>> choice_scores(ChoiceResult([" a", " bc"], [[-1.0], [-1.0, -2.0]], np.zeros(2), "sum"), "sum").tolist()
    [-1.0, -3.0]
    """
    chars = result.choices if texts is None else texts
    return normalize_scores(result.token_logprobs, chars, normalization, result.unconditional_logprobs)


@dataclass
class ItemScores:
    """The scores of every item under each normalization: ``scores[n][i]`` is item i's array (one score per
    choice); ``answers[i]`` the right choice's index; ``size`` the most choices of an item."""

    scores: dict[str, list[np.ndarray]]
    answers: np.ndarray
    size: int
    char_length: str = "choice"

    @classmethod
    def from_results(
        cls,
        items: Sequence[MCItem],
        results: Sequence[ChoiceResult],
        normalizations: Sequence[str] = DEFAULT_NORMALIZATIONS,
        char_length: str = "choice",
    ) -> ItemScores:
        """``results[i]`` is the `ChoiceResult` of ``items[i]`` (``pmi`` needs its unconditional log-probs);
        ``char_length``: what ``char`` divides by (see the module docstring)."""
        normalizations = [check_normalization(n) for n in normalizations]
        if not normalizations:
            raise ValueError("no normalization to evaluate")
        check_char_length(char_length)
        if len(results) != len(items):
            raise ValueError(f"{len(results)} results for {len(items)} items")
        texts = [item.char_texts(char_length) for item in items]
        scores = {n: [choice_scores(r, n, t) for r, t in zip(results, texts)] for n in normalizations}
        answers = np.array([item.answer for item in items], dtype=np.int64)
        return cls(scores, answers, max(len(item.choices) for item in items), char_length)

    @property
    def normalizations(self) -> list[str]:
        return list(self.scores)

    def predictions(self, normalization: str) -> np.ndarray:
        """The index of each item's best choice (``np.int64``), as `NormalizationResult.predictions`."""
        return self.result(normalization, bins=1).predictions

    def result(self, normalization: str, confidence: float = 0.95, bins: int = 10) -> NormalizationResult:
        """Accuracy, Wilson interval (at ``confidence``), confusion and calibration (``bins``) of one normalization."""
        return NormalizationResult.from_scores(
            normalization, self.scores[normalization], self.answers, self.size, confidence, bins
        )
