"""`OpenAI.stream`: a completion streamed by the server (``stream=True``), in pieces, with `complete`'s contract.

``"".join(lm.stream(prompt, **kw)) == lm.complete(prompt, **kw)``: the text ends with the stop string exactly
when generation ended on it, and text that may be the start of a stop string (or a trailing U+FFFD) is held
back until the next piece decides. On llama.cpp servers the stop strings are matched here: the server is not
told them (it would cut them off, leaving unknown whether generation ended on one) and the stream is closed at
the first one. Elsewhere the server cuts, and the last chunk's ``stop_reason``/``matched_stop`` (else a peek)
decides as in `autocog.lm.openai.stops.apply_stops`. Opening the stream is retried like any request; a stream
that breaks after it opened raises `RequestFailedError` (a retry could not take back what was yielded).

>>> pieces = open_stream(session, "1, 2, 3,", [","], settings)     # doctest: +SKIP
>>> list(pieces)                                                      # doctest: +SKIP
[' 4', ',']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Optional

from autocog.core.stops import find_stop, safe_length
from autocog.errors import MalformedResponseError, RequestFailedError
from autocog.lm.openai.plans import Plan
from autocog.lm.openai.stops import stops_plan

if TYPE_CHECKING:  # pragma: no cover
    from autocog.lm.openai.requests import Generation
    from autocog.lm.openai.session import Session


def open_stream(session: Session, prompt: str, stops: list[str], settings: Mapping[str, Any]) -> Iterator[str]:
    """Open the server's stream for checked inputs (with retries) and return its pieces (see the module)."""
    generation = stream_request(session, prompt, stops, settings)
    if generation is None:
        return iter(())
    response = session.requests.open(generation)
    return Stream(session, response, prompt, stops, settings).pieces()


def stream_request(
    session: Session, prompt: str, stops: list[str], settings: Mapping[str, Any]
) -> Optional[Generation]:
    """The streamed generation request of checked inputs; None when there is nothing to generate."""
    generation = session.requests.generation(prompt, settings, stops, stream=True)
    if int(settings["max_tokens"]) == 0:
        return None  # llama_cpp.server reads max_tokens=0 as "no limit"
    return generation


@dataclass
class Stream:
    """One open stream: ``text`` received so far, ``sent`` characters of it yielded, ``last`` the choice that
    carried a ``finish_reason``."""

    session: Session
    response: Any
    prompt: str
    stops: list[str]
    settings: Mapping[str, Any]
    text: str = ""
    sent: int = 0
    last: dict = field(default_factory=dict)

    def pieces(self) -> Iterator[str]:
        try:
            for chunk in self.response:
                piece, stopped = self.take(chunk)
                if piece:
                    yield piece
                if stopped:
                    return
        except Exception as error:
            failure = self.broken(error)
            if failure is error:
                raise
            raise failure from None
        finally:
            self.response.close()
        rest = self.session.requests.run(self.ending())
        if rest:
            yield rest

    def take(self, chunk: Any) -> tuple[str, bool]:
        """(the text to yield after ``chunk``, whether a stop string ended the stream there); the one step of the
        sync and the async streams."""
        piece = self.read(chunk)
        if not piece:
            return "", False
        self.text += piece
        if self.stops:
            longest = max(len(s) for s in self.stops)
            end = find_stop(self.text, self.stops, max(0, len(self.text) - len(piece) - longest))
            if end is not None:
                return (self.text[self.sent : end] if end > self.sent else ""), True
        ready = safe_length(self.text, self.stops)
        if ready > self.sent:
            out = self.text[self.sent : ready]
            self.sent = ready
            return out, False
        return "", False

    def ending(self) -> Plan[str]:
        """The text left to yield once the server's stream ended (a plan: it may peek, see `apply_stops`)."""
        session = self.session
        if session.dialect.stream_stops:
            final = yield from stops_plan(session, self.prompt, self.text, self.stops, self.last, None, self.settings)
        else:
            final = self.text  # the server was not told the stops: matched in `take`
        return final[self.sent :] if len(final) > self.sent else ""

    def broken(self, error: Exception) -> Exception:
        """What a stream that failed with ``error`` after it opened raises (a typed error, or ``error``)."""
        session = self.session
        if isinstance(error, session.transport.openai.APIError):
            return RequestFailedError(
                f"the stream from {session.base_url} (model {session.model!r}) broke after {len(self.text)} "
                f"characters: {session.transport.redact(str(error))}"
            )
        if isinstance(error, ValueError) and not isinstance(error, MalformedResponseError):  # a chunk that is not JSON
            return MalformedResponseError(
                f"the stream from {session.base_url} (model {session.model!r}) sent a chunk that is not valid JSON "
                f"after {len(self.text)} characters: {session.transport.redact(str(error))}"
            )
        return error

    def read(self, chunk: Any) -> str:
        """The text a chunk adds (``""`` for none, e.g. a final usage chunk); notes its ``finish_reason``."""
        data = chunk.model_dump() if hasattr(chunk, "model_dump") else chunk
        choices = data.get("choices") if isinstance(data, dict) else None
        if not choices:
            return ""
        choice = choices[0]
        if not isinstance(choice, dict):
            raise MalformedResponseError(f"a chunk of the stream from {self.session.base_url} has no choice: {data!r}")
        if choice.get("finish_reason"):
            self.last = choice
        if self.session.chat:
            piece = (choice.get("delta") or {}).get("content")
        else:
            piece = choice.get("text")
        return piece if isinstance(piece, str) else ""
