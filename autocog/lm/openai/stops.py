"""Stop strings for `OpenAI.complete`: servers cut the stop off and answer ``finish_reason="stop"`` both for a
stop string and for EOS; `apply_stops` decides whether the text ends with the stop (see docs/openai.md).

>>> apply_stops(lm, "1, 2,", " 3", [","], {"finish_reason": "stop", "stop_reason": ","}, None, {})  # doctest: +SKIP
' 3,'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from ..lm import find_stop
from .parsing import first_choice

if TYPE_CHECKING:  # pragma: no cover
    from .client import OpenAI


def apply_stops(lm: "OpenAI", prompt: str, text: str, stops: list[str], choice: dict, pieces: Optional[list],
                settings: dict) -> str:
    """``text`` ended by the stop string it stopped on, if any: the server's ``stop_reason``/``matched_stop``,
    else the tokens it reports running past the text, else (completions) one greedy request that peeks."""
    if not stops:
        return text
    end = find_stop(text, stops)
    if end is not None:  # the server did not cut (or not at the earliest stop): cut here
        return text[:end]
    if choice.get("finish_reason") != "stop":
        return text
    for key in ("stop_reason", "matched_stop"):
        matched = choice.get(key)
        if isinstance(matched, str) and matched in stops:
            return text + matched
        if key in choice and matched is None or isinstance(matched, int):
            return text  # the server says: EOS or a stop token, not a stop string
    if isinstance(pieces, list) and all(isinstance(p, str) for p in pieces):
        produced = "".join(pieces)
        if produced.startswith(text):
            end = find_stop(produced, stops, max(0, len(text) - max(map(len, stops))))
            return produced[:end] if end is not None and end > len(text) else text
    if lm.chat:
        return text
    peek_body = {"max_tokens": min(32, 2 + max(map(len, stops))), "temperature": 0.0}
    peek = first_choice(lm._completion_request(prompt + text, peek_body, lm._sampling_extras(settings)),
                        "completion").get("text")
    if isinstance(peek, str):
        for s in sorted(stops, key=len, reverse=True):
            if peek.startswith(s):
                return text + s
    return text
