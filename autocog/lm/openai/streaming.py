"""`OpenAI.stream`: a completion streamed by the server (``stream=True``), in pieces, with `complete`'s contract.

``"".join(lm.stream(prompt, **kw)) == lm.complete(prompt, **kw)``: the text ends with the stop string exactly
when generation ended on it, and text that may be the start of a stop string (or a trailing U+FFFD) is held
back until the next piece decides. On llama.cpp servers the stop strings are matched here: the server is not
told them (it would cut them off, leaving unknown whether generation ended on one) and the stream is closed at
the first one. Elsewhere the server cuts, and the last chunk's ``stop_reason``/``matched_stop`` (else a peek)
decides as in `autocog.lm.openai.stops.apply_stops`. Opening the stream is retried like any request; a stream
that breaks after it opened raises `RequestFailedError` (a retry could not take back what was yielded).

>>> pieces = open_stream(lm, "1, 2, 3,", ",", {"max_tokens": 8})     # doctest: +SKIP
>>> list(pieces)                                                      # doctest: +SKIP
[' 4', ',']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

from autocog.core.checks import check_prompt
from autocog.core.stops import as_stop_list, find_stop, safe_length
from autocog.core.types import Stop
from autocog.errors import MalformedResponseError, RequestFailedError
from autocog.lm.greedy import GreedyLM
from autocog.lm.openai.stops import apply_stops

if TYPE_CHECKING:  # pragma: no cover
    from autocog.lm.openai.client import OpenAI


def open_stream(lm: OpenAI, prompt: str, stop: Stop, kwargs: dict) -> Iterator[str]:
    """Check the inputs, open the server's stream (with retries) and return its pieces (see the module)."""
    check_prompt(prompt)
    settings = GreedyLM._completion_settings(kwargs, lm.completion_kwargs)
    stops = as_stop_list(stop)
    extra = lm._sampling_extras(settings)  # refuses what the server cannot do (min_p on OpenAI's API)
    max_tokens = int(settings["max_tokens"])
    if max_tokens == 0:
        return iter(())  # llama_cpp.server reads max_tokens=0 as "no limit"
    body: dict = {
        "max_tokens": max_tokens,
        "temperature": float(settings["temperature"]),
        "top_p": float(settings["top_p"]),
        "stream": True,
    }
    if settings["seed"] is not None:
        body["seed"] = int(settings["seed"])
    local = lm.server == "llama.cpp"
    if stops and not local and (lm.server != "openai" or len(stops) <= 4):
        body["stop"] = stops
    if lm.chat:
        params = dict(model=lm.model, messages=lm.chat_messages(prompt), **body)
        endpoint, kind = lm.client.chat.completions, "chat"
    else:
        params = dict(model=lm.model, prompt=prompt, **body)
        endpoint, kind = lm.client.completions, "completions"
    if extra:
        params["extra_body"] = extra
    response = lm.transport.open(
        f"streamed {kind}", kind, lambda t: endpoint.create(**params, timeout=t), prompt=None if lm.chat else prompt
    )
    return Stream(lm, response, prompt, stops, settings, local).pieces()


@dataclass
class Stream:
    """One open stream: ``text`` received so far, ``sent`` characters of it yielded, ``last`` the choice that
    carried a ``finish_reason``."""

    lm: OpenAI
    response: Any
    prompt: str
    stops: list[str]
    settings: dict
    local: bool
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
        except self.lm.transport.openai.APIError as error:
            raise RequestFailedError(
                f"the stream from {self.lm.base_url} (model {self.lm.model!r}) broke after {len(self.text)} "
                f"characters: {self.lm.transport.redact(str(error))}"
            ) from None
        except MalformedResponseError:
            raise
        except ValueError as error:  # a chunk that is not JSON
            raise MalformedResponseError(
                f"the stream from {self.lm.base_url} (model {self.lm.model!r}) sent a chunk that is not valid JSON "
                f"after {len(self.text)} characters: {self.lm.transport.redact(str(error))}"
            ) from None
        finally:
            self.response.close()
        final = (
            self.text
            if self.local
            else apply_stops(self.lm, self.prompt, self.text, self.stops, self.last, None, self.settings)
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
            raise MalformedResponseError(f"a chunk of the stream from {self.lm.base_url} has no choice: {data!r}")
        if choice.get("finish_reason"):
            self.last = choice
        if self.lm.chat:
            piece = (choice.get("delta") or {}).get("content")
        else:
            piece = choice.get("text")
        return piece if isinstance(piece, str) else ""
