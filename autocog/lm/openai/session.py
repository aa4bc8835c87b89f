"""`Session`: what every part of the backend shares for one `OpenAI` instance: the client and `Transport`, the
server's `Dialect` (detected once), the tokenizer (resolved once), the request builder (`Requests`), the chat
renderer, the server's measured capabilities, and the caches (scored texts, token pieces).

The scoring strategies (`autocog.lm.openai.echo`, `ids`, `descent`) take a session; so do the dialects' hooks.

>>> session = Session(client, transport, Settings(model="smollm2"))      # doctest: +SKIP
>>> session.dialect.name, session.tokenizer.encode(" Paris")              # doctest: +SKIP
('llama.cpp', [7042])
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Optional

from autocog.core.lru import LRU
from autocog.core.tokens import prepend_once
from autocog.errors import MalformedResponseError, StrategyUnavailableError
from autocog.lm.openai.capabilities import Capabilities
from autocog.lm.openai.chat import ChatRenderer
from autocog.lm.openai.dialects import Dialect, detect
from autocog.lm.openai.requests import Requests
from autocog.lm.openai.special import unconditional_text
from autocog.lm.openai.tokenizers import Tokenizer, as_tokenizer, tiktoken_tokenizer
from autocog.lm.openai.transport import Transport, excerpt
from autocog.lm.openai.vocabulary import Vocabulary

Scored = tuple[list[str], list[float]]  # a scored text's token pieces and their log-probs


@dataclass
class Settings:
    """What the caller chose (see `OpenAI`); None (and ``"auto"``) is resolved from the server on first use."""

    model: Optional[str] = None
    server: str = "auto"
    chat: Optional[bool] = None
    system: Optional[str] = None
    tokenizer: Any = "auto"
    check_tokenizer: bool = True
    top_logprobs: Optional[int] = None
    unconditional_prompt: Optional[str] = None
    chat_template: Optional[str] = None
    concurrency: int = 8
    cache_size: int = 4096


class Session:
    """The shared state of one backend instance; everything server-dependent is resolved lazily, once.

    ``scored``: (prompt text, choice text) -> `Scored`, an LRU of ``cache_size`` entries (text already scored
    costs no request); ``pieces``: token id -> its text decoded alone.
    """

    def __init__(self, client: Any, transport: Transport, settings: Settings):
        self.client = client
        self.transport = transport
        self.settings = settings
        self.scored: LRU[tuple[str, str], Scored] = LRU(max(0, int(settings.cache_size)))
        self.pieces: dict[int, str] = {}
        self.lock = threading.RLock()
        self.requests = Requests(self)
        self.renderer = ChatRenderer(self)
        self.capabilities = Capabilities(self)
        transport.model_name = settings.model
        self._dialect: Optional[Dialect] = None if settings.server == "auto" else Dialect.named(settings.server)
        self._tokenizer: Optional[Tokenizer] = None
        self._chat = settings.chat
        self._ambiguous: Optional[frozenset] = None
        self._unconditional = settings.unconditional_prompt

    # --- where and what ---------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return self.transport.base_url

    @property
    def root_url(self) -> str:
        """The server's address without the trailing ``/v1`` (where llama.cpp and vLLM put their extras)."""
        url = str(self.client.base_url).rstrip("/")
        return url[:-3] if url.endswith("/v1") else url

    @property
    def concurrency(self) -> int:
        return self.settings.concurrency

    @property
    def model(self) -> str:
        """The model name: as given, else the first one ``GET /models`` lists."""
        if self.transport.model_name is None:
            data = self.transport.get("/models", "models")
            try:
                self.transport.model_name = str(data["data"][0]["id"])
            except (KeyError, IndexError, TypeError):
                raise MalformedResponseError(f"{self.base_url}/models lists no model: {excerpt(data)}") from None
        return self.transport.model_name

    @property
    def dialect(self) -> Dialect:
        """The server's `Dialect`: as given by ``server=``, else detected (`autocog.lm.openai.dialects.detect`)."""
        with self.lock:
            if self._dialect is None:
                self._dialect = detect(self)
            if self._dialect.serial and self.transport.serial is None:
                self.transport.serialize()  # one request at a time (docs/openai.md, "Concurrency")
        return self._dialect

    @property
    def chat(self) -> bool:
        """Whether requests go to the chat endpoint (``chat=None``: the dialect's default for the model)."""
        if self._chat is None:
            self._chat = self.dialect.default_chat(self.transport.model_name or "")
        return self._chat

    @property
    def top_logprobs(self) -> int:
        given = self.settings.top_logprobs
        return int(given) if given is not None else self.dialect.default_top_logprobs(self.chat)

    # --- tokens -----------------------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Tokenizer:
        with self.lock:
            if self._tokenizer is None:
                self._tokenizer = self.resolve_tokenizer(self.settings.tokenizer)
        return self._tokenizer

    @property
    def local_tokenizer(self) -> Optional[Tokenizer]:
        """The tokenizer if resolved already and not the server's own (None otherwise)."""
        tokenizer = self._tokenizer
        return None if tokenizer is None or tokenizer.is_server else tokenizer

    def resolve_tokenizer(self, spec: Any) -> Tokenizer:
        """``"auto"``/``"server"``: the dialect's server tokenizer (``"auto"``: else tiktoken by model name);
        ``"tiktoken"``, an encoding name or a tokenizer object."""
        if isinstance(spec, str) and spec in ("auto", "server"):
            own = self.dialect.server_tokenizer(self)
            if own is not None:
                return own
            if spec == "server":
                raise StrategyUnavailableError(
                    f"the server at {self.base_url} has no tokenize endpoint that "
                    "autocog knows (llama_cpp.server, vLLM): pass tokenizer="
                )
            spec = "tiktoken"
        if spec == "tiktoken":
            try:
                return tiktoken_tokenizer(self.model)
            except KeyError:
                raise StrategyUnavailableError(
                    f"no tokenizer for model {self.model!r} on {self.base_url}: tiktoken does not know it and the "
                    "server has no tokenize endpoint; pass tokenizer= (an encoding name or a tokenizer object)"
                ) from None
        return as_tokenizer(spec)

    def tokenize(self, text: str, bos: bool = False) -> list[int]:
        """Token ids of ``text``; ``bos=True`` prepends the server's BOS if any (once)."""
        tokenizer = self.tokenizer
        tokens = tokenizer.encode(text)
        if bos:
            tokenizer.special_prefix()
            if tokenizer.bos_token_id is not None:
                tokens = prepend_once([tokenizer.bos_token_id], tokens)
        return tokens

    def piece(self, token: int) -> str:
        """The text of ``token`` decoded alone (asked once)."""
        piece = self.pieces.get(token)
        if piece is None:
            piece = self.pieces[token] = self.tokenizer.decode([token])
        return piece

    def vocabulary(self) -> Optional[Vocabulary]:
        """The dialect's vocabulary of token names (llama.cpp servers), None elsewhere."""
        return self.dialect.vocabulary(self)

    def ambiguous_texts(self) -> frozenset:
        """Token texts that name more than one token id in this server's ``top_logprobs`` (see
        `autocog.lm.openai.OpenAI.ambiguous_texts`), found once."""
        if self._ambiguous is None:
            vocabulary = self.vocabulary()
            self._ambiguous = frozenset() if vocabulary is None else vocabulary.shared_texts()
        return self._ambiguous

    @property
    def unconditional_prompt(self) -> str:
        """The context of ``pmi``'s unconditional scores (`autocog.lm.openai.special`), found once."""
        if self._unconditional is None:
            self._unconditional = unconditional_text(self)
        return self._unconditional

    def probe(self) -> dict:
        return self.capabilities.probe()

    # --- errors the strategies share ----------------------------------------------------------------------
    def no_logprobs(self, context: Any) -> StrategyUnavailableError:
        return StrategyUnavailableError(
            f"the server at {self.base_url} (model {self.model!r}) returns no log-probs for the token after "
            f"{context[-40:]!r}"
            + (
                " (llama_cpp.server gives none after an empty prompt: pass unconditional_prompt= for 'pmi')"
                if not context
                else ""
            )
        )

    def merged(self, j: int, text: str, strategy: str = "echo") -> StrategyUnavailableError:
        if strategy == "echo":
            return StrategyUnavailableError(
                f"the server at {self.base_url} tokenizes the prompt and choice {j} ({text!r}) across their "
                "boundary (no token starts where the choice starts): echo cannot score it; use strategy='descent'"
            )
        return StrategyUnavailableError(
            f"the server at {self.base_url} tokenizes the prompt and a prefix of choice {j} ({text!r}) across "
            "their boundary, and it takes prompts as text only: the choice's own tokens cannot be scored after "
            "the prompt's (end the prompt on a word boundary, e.g. with a space moved into the choices)"
        )
