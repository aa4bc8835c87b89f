"""llama_cpp.server (llama-cpp-python's server): ``/extras/tokenize`` and ``/extras/detokenize``, any number of
top log-probs, GBNF grammars, llama.cpp's sampler defaults reset, one request at a time (docs/openai.md,
"Concurrency"), a prompt cache that evaluates only new tokens, echoes that leave BOS out, ``top_logprobs``
keyed by token text with invalid bytes dropped (several tokens can share a name: `vocabulary`)."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

from autocog.core.chat import render_template
from autocog.errors import MalformedResponseError, RequestFailedError, RetryExhaustedError
from autocog.lm.openai.dialects.base import Dialect
from autocog.lm.openai.requests import BIAS, WHOLE_VOCABULARY
from autocog.lm.openai.special import BOS_TEXTS, EOS_TEXTS
from autocog.lm.openai.tokenizers import LlamaCppServerTokenizer
from autocog.lm.openai.vocabulary import SEPARATOR, Vocabulary, scan_vocabulary

if TYPE_CHECKING:  # pragma: no cover
    from autocog.core.constraint import NativeConstraint
    from autocog.lm.openai.session import Session
    from autocog.lm.openai.tokenizers import Tokenizer

log = logging.getLogger("autocog.lm.openai")

VOCABULARY_PROMPT = "The capital of France is"  # a whole-vocabulary row after it names every distinct token text
_VOCABULARIES: dict[tuple[str, str], Vocabulary] = {}  # (server root, model) -> its vocabulary, read once
_VOCABULARY_LOCK = threading.Lock()


class LlamaCppDialect(Dialect):
    name = "llama.cpp"
    order = 10
    wide = True  # llama_cpp.server sorts the vocabulary at every position: 1000 per position costs what 1 does
    serial = True
    grammar = True
    prompt_cache = True
    echo_by_ids = True
    stop_tokens = True
    stream_stops = False  # matched here: a server that cuts them leaves unknown whether generation ended on one
    constraint_kinds = ("json", "gbnf", "choice")

    def constraint_fields(self, constraint: NativeConstraint, chat: bool) -> tuple[str, dict[str, Any]]:
        """``grammar`` (``constraint.to_gbnf()``: a GBNF grammar as is, a schema or choices converted), or on the chat endpoint a
        JSON schema as ``response_format: {"type": "json_object", "schema"}``."""
        if constraint.kind == "json" and chat:
            return "chat", {"response_format": {"type": "json_object", "schema": constraint.schema}}
        assert constraint.to_gbnf is not None, "a constraint for llama.cpp needs its GBNF form (to_gbnf)"
        return ("chat" if chat else "completions"), {"grammar": constraint.to_gbnf()}

    def __init__(self) -> None:
        self.props: Optional[dict] = None  # GET /props (llama.cpp's C++ server; llama_cpp.server has none)
        self.found: Optional[tuple[Optional[str], Optional[str]]] = None  # (BOS, EOS) once asked
        self.server_bos: Optional[int] = None  # the BOS id found by `specials` (left out of every echo)

    @classmethod
    def matches(cls, session: Session) -> bool:
        try:
            data = session.transport.post(
                session.root_url + "/extras/tokenize", {"input": "a"}, retry=False, kind="probe"
            )
        except (RequestFailedError, MalformedResponseError, RetryExhaustedError):
            return False
        return isinstance(data, dict) and isinstance(data.get("tokens"), list)

    def sampling_extras(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """llama.cpp's server defaults (repeat_penalty 1.1, min_p 0.05, top_k 40) reset to the plain ones the
        local backends use unless asked."""
        min_p = float(settings.get("min_p") or 0.0)
        return {"repeat_penalty": 1.0, "min_p": min_p, "top_k": int(settings.get("top_k") or 0)}

    def server_stops(self, stops: Sequence[str], stream: bool) -> list[str]:
        return [] if stream else list(stops)

    def server_tokenizer(self, session: Session) -> Optional[Tokenizer]:
        return LlamaCppServerTokenizer(session.transport.post, session.root_url, session.concurrency)

    def server_props(self, session: Session) -> dict:
        """``GET /props``, read once: {} when absent."""
        if self.props is None:
            try:
                data = session.transport.get(session.root_url + "/props", "probe", retry=False)
            except (RequestFailedError, MalformedResponseError, RetryExhaustedError):
                data = {}
            self.props = data if isinstance(data, dict) else {}
        return self.props

    def chat_template(self, session: Session, messages: list[dict], add_generation_prompt: bool) -> Optional[str]:
        props = self.server_props(session)
        template = props.get("chat_template")
        if not (isinstance(template, str) and template):
            return None
        return render_template(
            template,
            messages,
            add_generation_prompt,
            bos_token=props.get("bos_token") or "",
            eos_token=props.get("eos_token") or "",
        )

    def bos_text(self, session: Session) -> Optional[str]:
        bos = self.server_props(session).get("bos_token")
        return bos if isinstance(bos, str) else None

    def specials(self, session: Session) -> tuple[Optional[str], Optional[str]]:
        """(BOS text, EOS text): the first of `BOS_TEXTS` that the server tokenizes to one id that it treats
        as BOS, else the lowest id among `EOS_TEXTS` that ends generation; asked once. llama_cpp.server shows
        neither the special tokens' text nor which one is BOS otherwise. Records ``server_bos``."""
        if self.found is None:
            texts = list(dict.fromkeys(BOS_TEXTS + EOS_TEXTS))
            ids = {t: i[0] for t, i in zip(texts, session.tokenizer.encode_many(texts)) if len(i) == 1}
            distinct = sorted(set(ids.values()))
            kinds = dict(zip(distinct, session.transport.map(lambda i: self.forced_kind(session, i), distinct)))
            bos = next((t for t in BOS_TEXTS if t in ids and kinds[ids[t]] == "bos"), None)
            ends = sorted((i, t) for t, i in ids.items() if kinds[i] == "end")
            self.server_bos = ids[bos] if bos is not None else None
            self.found = (bos, ends[0][1] if ends else None)
        return self.found

    def forced_kind(self, session: Session, token: int) -> str:
        """What the server does with ``token`` forced by ``logit_bias`` as the next token: ``"bos"`` (produced,
        left out of the log-probs: llama-cpp-python drops its BOS from every list), ``"end"`` (generation
        stops: an end-of-generation token) or ``"token"``."""
        body = {"max_tokens": 1, "temperature": 0.0, "logprobs": 1, "logit_bias": {str(token): BIAS}}
        data = session.requests.completion("Hello", body, self.sampling_extras({"top_k": 0}))
        try:
            choice = data["choices"][0]
            tokens = (choice.get("logprobs") or {}).get("tokens") or []
            finish = choice.get("finish_reason")
        except (KeyError, IndexError, TypeError, AttributeError):
            raise MalformedResponseError(f"unexpected answer from {session.base_url}: {str(data)[:200]}") from None
        if tokens:
            return "token"
        return "end" if finish == "stop" else "bos" if finish == "length" else "token"

    def dropped_bos(self, session: Session) -> Optional[int]:
        """The BOS the server adds, else the one `specials` found (None when not asked yet)."""
        bos = session.tokenizer.bos_token_id
        return bos if bos is not None else self.server_bos

    def vocabulary(self, session: Session) -> Optional[Vocabulary]:
        """From the tokenizer when it can list its vocabulary, else read through ``/extras/detokenize`` once
        per server (`scan_vocabulary`; ~2 s for SmolLM2's 49,152 tokens)."""
        key = (session.root_url, session.model)
        with _VOCABULARY_LOCK:
            if key not in _VOCABULARIES:
                listed = session.tokenizer.vocabulary()
                _VOCABULARIES[key] = listed if listed is not None else scan(session)
        return _VOCABULARIES[key]


def scan(session: Session) -> Vocabulary:
    """`scan_vocabulary` through the server's detokenizer (unknown names where it cannot decode checked)."""
    tokenizer = session.tokenizer
    decode = getattr(tokenizer, "decode_checked", None)
    keys = session.requests.next(VOCABULARY_PROMPT, k=WHOLE_VOCABULARY).top
    if decode is None or not keys:
        return Vocabulary([None])  # unknown: no value is read by name
    started = time.monotonic()
    vocabulary = scan_vocabulary(len(keys), decode, tokenizer.encode(SEPARATOR), session.transport.map)
    log.info(
        "read %d token names from %s in %.1f s", len(vocabulary.names), session.base_url, time.monotonic() - started
    )
    return vocabulary
