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
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from autocog.core.stops import find_stop, safe_length
from autocog.errors import MalformedResponseError, RequestFailedError
from autocog.lm.openai.stops import apply_stops

if TYPE_CHECKING:  # pragma: no cover
    from autocog.lm.openai.session import Session


def open_stream(session: Session, prompt: str, stops: list[str], settings: Mapping[str, Any]) -> Iterator[str]:
    """Open the server's stream for checked inputs (with retries) and return its pieces (see the module)."""
    generation = session.requests.generation(prompt, settings, stops, stream=True)
    if int(settings["max_tokens"]) == 0:
        return iter(())  # llama_cpp.server reads max_tokens=0 as "no limit"
    response = session.requests.open(generation)
    return Stream(session, response, prompt, stops, settings).pieces()


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
        longest = max((len(s) for s in self.stops), default=0)
        try:
            for chunk in self.response:
                piece = self.read(chunk)
                if not piece:
                    continue
                self.text += piece
                if self.stops:
                    end = find_stop(self.text, self.stops, max(0, len(self.text) - len(piece) - longest))
                    if end is not None:
                        if end > self.sent:
                            yield self.text[self.sent : end]
                        return
                ready = safe_length(self.text, self.stops)
                if ready > self.sent:
                    yield self.text[self.sent : ready]
                    self.sent = ready
        except self.session.transport.openai.APIError as error:
            raise RequestFailedError(
                f"the stream from {self.session.base_url} (model {self.session.model!r}) broke after {len(self.text)} "
                f"characters: {self.session.transport.redact(str(error))}"
            ) from None
        except MalformedResponseError:
            raise
        except ValueError as error:  # a chunk that is not JSON
            raise MalformedResponseError(
                f"the stream from {self.session.base_url} (model {self.session.model!r}) sent a chunk that is not valid JSON "
                f"after {len(self.text)} characters: {self.session.transport.redact(str(error))}"
            ) from None
        finally:
            self.response.close()
        session = self.session
        final = (
            apply_stops(session, self.prompt, self.text, self.stops, self.last, None, self.settings)
            if session.dialect.stream_stops
            else self.text  # the server was not told the stops: matched above
        )
        if len(final) > self.sent:
            yield final[self.sent :]

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
