"""Stop strings for `OpenAI.complete`: servers cut the stop off and answer ``finish_reason="stop"`` both for a
stop string and for EOS; `apply_stops` decides whether the text ends with the stop (see docs/openai.md).

>>> apply_stops(lm, "1, 2,", " 3", [","], {"finish_reason": "stop", "stop_reason": ","}, None, {})  # doctest: +SKIP
' 3,'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from autocog.core.checks import check_prompt
from autocog.core.stops import as_stop_list, find_stop
from autocog.core.types import Stop
from autocog.errors import MalformedResponseError
from autocog.lm.greedy import GreedyLM
from autocog.lm.openai.parsing import chat_logprobs, first_choice
from autocog.lm.openai.transport import excerpt

if TYPE_CHECKING:  # pragma: no cover
    from autocog.lm.openai.client import OpenAI


def apply_stops(
    lm: OpenAI, prompt: str, text: str, stops: list[str], choice: dict, pieces: Optional[list], settings: dict
) -> str:
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
        if (key in choice and matched is None) or isinstance(matched, int):
            return text  # the server says: EOS or a stop token, not a stop string
    if isinstance(pieces, list) and all(isinstance(p, str) for p in pieces):
        produced = "".join(pieces)
        if produced.startswith(text):
            end = find_stop(produced, stops, max(0, len(text) - max(map(len, stops))))
            return produced[:end] if end is not None and end > len(text) else text
    if lm.chat:
        return text
    peek_body = {"max_tokens": min(32, 2 + max(map(len, stops))), "temperature": 0.0}
    peek = first_choice(
        lm._completion_request(prompt + text, peek_body, lm._sampling_extras(settings)), "completion"
    ).get("text")
    if isinstance(peek, str):
        for s in sorted(stops, key=len, reverse=True):
            if peek.startswith(s):
                return text + s
    return text


def complete(lm: OpenAI, prompt: str, stop: Stop, kwargs: dict) -> str:
    """`OpenAI.complete`: one completion (or chat completion) request, then `apply_stops`."""
    check_prompt(prompt)
    settings = GreedyLM._completion_settings(kwargs, lm.completion_kwargs)
    stops = as_stop_list(stop)
    max_tokens = int(settings["max_tokens"])
    if max_tokens == 0:
        return ""  # llama_cpp.server reads max_tokens=0 as "no limit"
    server_stops = stops if (lm.server != "openai" or len(stops) <= 4) else []
    body: dict = {
        "max_tokens": max_tokens,
        "temperature": float(settings["temperature"]),
        "top_p": float(settings["top_p"]),
    }
    if settings["seed"] is not None:
        body["seed"] = int(settings["seed"])
    if server_stops:
        body["stop"] = server_stops
    extra = lm._sampling_extras(settings)
    want_tokens = lm.server == "llama.cpp" and bool(stops)
    if lm.chat:
        if want_tokens:
            body.update(logprobs=True, top_logprobs=0)
        data = lm._chat_request(prompt, body, extra)
        choice = first_choice(data, "chat completion")
        message = choice.get("message")
        text = message.get("content") if isinstance(message, dict) else None
        content = chat_logprobs(choice)
        pieces = [c.get("token") for c in content if isinstance(c, dict)] if content else None
    else:
        if want_tokens:
            body["logprobs"] = 0
        data = lm._completion_request(prompt, body, extra)
        choice = first_choice(data, "completion")
        text = choice.get("text")
        logprobs = choice.get("logprobs")
        pieces = logprobs.get("tokens") if isinstance(logprobs, dict) else None
    if not isinstance(text, str):
        raise MalformedResponseError(f"the completion from {lm.base_url} has no text: {excerpt(data)}")
    return apply_stops(lm, prompt, text, stops, choice, pieces, settings)
