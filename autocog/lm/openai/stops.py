"""Stop strings for `OpenAI.complete`: servers cut the stop off and answer ``finish_reason="stop"`` both for a
stop string and for EOS; `apply_stops` decides whether the text ends with the stop (see docs/openai.md).

>>> apply_stops(session, "1, 2,", " 3", [","], {"finish_reason": "stop", "stop_reason": ","}, None, {})  # doctest: +SKIP
' 3,'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Optional

from autocog.core.stops import find_stop
from autocog.errors import MalformedResponseError
from autocog.lm.openai.parsing import chat_logprobs, first_choice
from autocog.lm.openai.plans import Plan
from autocog.lm.openai.transport import excerpt

if TYPE_CHECKING:  # pragma: no cover
    from autocog.lm.openai.session import Session


def apply_stops(
    session: Session,
    prompt: str,
    text: str,
    stops: list[str],
    choice: dict,
    pieces: Optional[list],
    settings: Mapping[str, Any],
) -> str:
    """``text`` ended by the stop string it stopped on, if any: the server's ``stop_reason``/``matched_stop``,
    else the tokens it reports running past the text, else (completions) one greedy request that peeks."""
    return session.requests.run(stops_plan(session, prompt, text, stops, choice, pieces, settings))


def stops_plan(
    session: Session,
    prompt: str,
    text: str,
    stops: list[str],
    choice: dict,
    pieces: Optional[list],
    settings: Mapping[str, Any],
) -> Plan[str]:
    """`apply_stops` as a request plan (`autocog.lm.openai.plans`): it yields the peek, if one is needed."""
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
    if session.chat:
        return text
    peek_body = {"max_tokens": min(32, 2 + max(map(len, stops))), "temperature": 0.0}
    extra = session.dialect.sampling_extras(settings)
    peek_request = session.requests.completion_request(prompt + text, peek_body, extra)
    peek = first_choice((yield peek_request), "completion").get("text")
    if isinstance(peek, str):
        for s in sorted(stops, key=len, reverse=True):
            if peek.startswith(s):
                return text + s
    return text


def complete(session: Session, prompt: str, stops: list[str], settings: Mapping[str, Any]) -> str:
    """`OpenAI.complete` on checked inputs: one generation request (`Requests.generation`), then `apply_stops`."""
    return session.requests.run(complete_plan(session, prompt, stops, settings))


def complete_plan(session: Session, prompt: str, stops: list[str], settings: Mapping[str, Any]) -> Plan[str]:
    """`complete` as a request plan (`autocog.lm.openai.plans`), shared by `OpenAI.complete` and ``acomplete``."""
    generation = session.requests.generation(prompt, settings, stops, stream=False)
    if int(settings["max_tokens"]) == 0:
        return ""  # llama_cpp.server reads max_tokens=0 as "no limit"
    data = yield generation
    if session.chat:
        choice = first_choice(data, "chat completion")
        message = choice.get("message")
        text = message.get("content") if isinstance(message, dict) else None
        content = chat_logprobs(choice)
        pieces = [c.get("token") for c in content if isinstance(c, dict)] if content else None
    else:
        choice = first_choice(data, "completion")
        text = choice.get("text")
        logprobs = choice.get("logprobs")
        pieces = logprobs.get("tokens") if isinstance(logprobs, dict) else None
    if not isinstance(text, str):
        raise MalformedResponseError(f"the completion from {session.base_url} has no text: {excerpt(data)}")
    return (yield from stops_plan(session, prompt, text, stops, choice, pieces, settings))
