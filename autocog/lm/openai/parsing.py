"""Reading the answers of completions and chat completions: next-token rows, walks, echoes.

Values come keyed by token *text* (``top_logprobs``); `unique_pieces` says which texts name one token only.

>>> parse_next({"choices": [{"logprobs": {"tokens": [" a"], "token_logprobs": [-0.5],
...             "top_logprobs": [{" a": -0.5, " b": -1.5}]}}]}, "http://x")
Next(token=' a', logprob=-0.5, top={' a': -0.5, ' b': -1.5}, usage=None)
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from autocog.errors import MalformedResponseError
from autocog.lm.openai.transport import excerpt


@dataclass
class Next:
    """One next-token answer: the token the server produced, its log-prob, and the top log-probs by text."""

    token: Optional[str]
    logprob: Optional[float]
    top: dict = field(default_factory=dict)
    usage: Optional[int] = None


@dataclass
class Echo:
    """The prompt tokens a server echoed: text pieces, character offsets, ``token_logprobs``, ``top_logprobs``."""

    tokens: list
    offsets: list
    logprobs: list
    top: list
    generated: str  # the generated text (its tokens may or may not be in the lists)
    length: int  # characters of the prompt that was sent


def first_choice(data: Any, what: str) -> dict:
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedResponseError(f"the {what} answer has no choices: {excerpt(data)}")
    return choices[0]


def chat_logprobs(choice: dict) -> Optional[list]:
    """``choices[0].logprobs.content`` of a chat completion (one entry per generated token), or None."""
    logprobs = choice.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    return content if isinstance(content, list) else None


def usage(data: Any) -> Optional[int]:
    value = data.get("usage") if isinstance(data, dict) else None
    value = value.get("prompt_tokens") if isinstance(value, dict) else None
    return int(value) if isinstance(value, (int, float)) else None


def to_float(value: Any) -> Optional[float]:
    return None if value is None else float(value)


def parse_next(data: Any, url: str) -> Next:
    """The first generated token of a completion requested with ``logprobs``."""
    logprobs = first_choice(data, "completion").get("logprobs")
    if not isinstance(logprobs, dict) or not logprobs.get("tokens"):
        return Next(None, None, {}, usage(data))
    try:
        token = logprobs["tokens"][0]
        value = to_float(logprobs["token_logprobs"][0])
        top = {str(t): float(v) for t, v in ((logprobs.get("top_logprobs") or [None])[0] or {}).items()}
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        raise MalformedResponseError(f"unexpected logprobs from {url}: {excerpt(logprobs)}") from None
    return Next(token, value, top, usage(data))


def parse_chat_next(data: Any) -> Next:
    """The first generated token of a chat completion requested with ``logprobs``."""
    content = chat_logprobs(first_choice(data, "chat completion"))
    if not content:
        return Next(None, None, {}, usage(data))
    entry = content[0]
    top: dict = {}
    for item in entry.get("top_logprobs") or []:
        if isinstance(item, dict) and isinstance(item.get("token"), str) and item.get("logprob") is not None:
            top.setdefault(item["token"], float(item["logprob"]))
    return Next(entry.get("token"), to_float(entry.get("logprob")), top, usage(data))


def parse_walk(data: Any, url: str) -> list[tuple[str, Optional[float], dict]]:
    """[(token text, its log-prob, the top log-probs at that step)] of a generated completion."""
    logprobs = first_choice(data, "completion").get("logprobs")
    if not isinstance(logprobs, dict) or not logprobs.get("tokens"):
        return []
    try:
        return [
            (str(t), to_float(v), {str(a): float(b) for a, b in (r or {}).items()})
            for t, v, r in zip(logprobs["tokens"], logprobs["token_logprobs"], logprobs["top_logprobs"])
        ]
    except (KeyError, TypeError, ValueError, AttributeError):
        raise MalformedResponseError(f"unexpected logprobs from {url}: {excerpt(logprobs)}") from None


def parse_echo(data: Any, text: str, url: str) -> Echo:
    """The echoed prompt ``text`` of a completion requested with ``echo`` and ``logprobs``."""
    choice = first_choice(data, "completion")
    logprobs: Any = choice.get("logprobs")
    try:
        full = choice.get("text")
        generated = full[len(text) :] if isinstance(full, str) and full.startswith(text) else ""
        echo = Echo(
            [str(t) for t in logprobs["tokens"]],
            [int(o) for o in logprobs["text_offset"]],
            [to_float(v) for v in logprobs["token_logprobs"]],
            [({str(k): float(v) for k, v in d.items()} if d else None) for d in logprobs["top_logprobs"]],
            generated,
            len(text),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise MalformedResponseError(f"the echo from {url} has no usable logprobs: {excerpt(logprobs)}") from None
    if not (len(echo.tokens) == len(echo.offsets) == len(echo.logprobs) == len(echo.top)):
        raise MalformedResponseError(f"the echo from {url} has lists of different lengths")
    return echo


def gbnf_literal(text: str) -> str:
    """``text`` as a double-quoted literal of llama.cpp's grammar language (GBNF)."""
    escapes = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    return (
        '"'
        + "".join(escapes.get(c) or (f"\\x{ord(c):02X}" if ord(c) < 0x20 or ord(c) == 0x7F else c) for c in text)
        + '"'
    )


def produced(items: list, piece: Callable[[Any], str], token: Optional[str]) -> list:
    """The items whose token text is the produced ``token``: exact matches, else up to a leading space."""
    exact = [x for x in items if piece(x) == token]
    return exact or [x for x in items if same_piece(piece(x), token)]


def same_piece(a: Optional[str], b: Optional[str]) -> bool:
    """Token texts equal, up to the leading space some servers add or drop on a token decoded alone."""
    if a == b:
        return True
    return bool(a) and bool(b) and str(a).strip() == str(b).strip() and bool(str(a).strip())


def unique_pieces(children: list[tuple], ambiguous: frozenset = frozenset()) -> set:
    """The pieces of ``children`` (key, id, piece) that a text-keyed row names unambiguously: one child each, not
    a broken character, not a text that other tokens of the vocabulary share (``ambiguous``)."""
    counts = Counter(c[2] for c in children)
    return {p for p, n in counts.items() if n == 1 and p and "\ufffd" not in p and p not in ambiguous}
