"""Stop strings: the list form of a ``stop`` argument, where the first one occurs, and how much of a growing
text a stream may yield before a stop could still start (the hold-back)."""

from __future__ import annotations

from typing import Optional, Sequence

from autocog.core.types import Stop


def as_stop_list(stop: Stop) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        stops = [stop]
    else:
        stops = list(stop)
    for s in stops:
        if not isinstance(s, str) or not s:
            raise ValueError(f"stop strings must be non-empty str, got {s!r}")
    return stops


def find_stop(text: str, stops: Sequence[str], start: int = 0) -> Optional[int]:
    """End index (exclusive) of the earliest stop string in ``text[start:]``, or None.

    The completion contract: the text returned ends with the stop string exactly when generation
    ended on it, so callers keep ``text[:find_stop(...)]``.
    """
    best: Optional[int] = None
    for s in stops:
        i = text.find(s, start)
        if i >= 0 and (best is None or i + len(s) < best):
            best = i + len(s)
    return best


def safe_length(text: str, stops: Sequence[str]) -> int:
    """How much of ``text`` a stream may yield now: not a trailing U+FFFD (the bytes of a character still
    incomplete), nor a tail that may be the start of a stop string.

    >>> safe_length("Hello\\n", ["\\n\\n"]), safe_length("caf\\ufffd", [])
    (5, 3)
    """
    n = len(text)
    while n and text[n - 1] == "\ufffd":
        n -= 1
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, n), hold, -1):
            if text.endswith(s[:k], 0, n):
                hold = k
                break
    return n - hold
