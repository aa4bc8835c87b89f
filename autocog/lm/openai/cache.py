"""The scores `OpenAI` keeps across calls: (prompt, choice text) -> (token pieces, log-probs), an LRU of
``cache_size`` entries, so that text already scored costs no request (the echo scorer reads and fills it).

>>> lm.choice_distribution("Q: 2+2?\\nA:", [" 4", " 5"]).info["requests"]      # doctest: +SKIP
2
>>> lm.choice_distribution("Q: 2+2?\\nA:", [" 4", " 5", " 6"]).info["from_cache"]   # doctest: +SKIP
2
"""

from __future__ import annotations


class ScoreCache:
    """Mixin of `OpenAI`: the scored-text LRU (fields ``_scored``, an OrderedDict, ``cache_size`` and the
    instance's ``_lock``)."""

    def _cached(self, prompt_text: str, texts: list[str]) -> dict[int, tuple[list[str], list[float]]]:
        """{index: (pieces, log-probs)} of the ``texts`` already scored after ``prompt_text``."""
        known = {}
        with self._lock:
            for j, text in enumerate(texts):
                hit = self._scored.get((prompt_text, text))
                if hit is not None:
                    self._scored.move_to_end((prompt_text, text))
                    known[j] = hit
        return known

    def _remember(self, key: tuple, value: tuple) -> None:
        """Keep a scored text (LRU of ``cache_size`` entries): no request for text already scored."""
        if self.cache_size <= 0:
            return
        with self._lock:
            self._scored[key] = value
            self._scored.move_to_end(key)
            while len(self._scored) > self.cache_size:
                self._scored.popitem(last=False)

    def clear_cache(self) -> None:
        """Forget the texts already scored (they are kept across calls; see ``cache_size``)."""
        with self._lock:
            self._scored.clear()
