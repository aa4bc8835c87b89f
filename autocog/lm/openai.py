"""`OpenAI`: the OpenAI API and OpenAI-compatible servers (llama_cpp.server, vLLM, SGLang...) as an `LM`.

>>> lm = OpenAI(model="smollm2", base_url="http://127.0.0.1:8000/v1", api_key="none")    # doctest: +SKIP
>>> lm.complete("The capital of France is", stop=".")                                      # doctest: +SKIP
' Paris.'
>>> r = lm.choice_distribution("Q: Capital of France?\\nA:", [" Paris", " London"])     # doctest: +SKIP
>>> r.strategy, r.probs                                                                    # doctest: +SKIP
('echo', array([0.97, 0.03]))

**Endpoints.** ``chat=False`` uses ``/v1/completions``: the prompt is continued as text, like the local
backends. ``chat=True`` uses ``/v1/chat/completions``: the prompt is sent as one user message (after an
optional ``system`` message), so the model sees its chat template and answers in a new assistant turn.
What differs for a chat model: ``complete`` returns the reply, not a continuation of the prompt text; there is
no ``echo``, so ``choose`` uses the ``descent`` strategy and scores the choices as the start of the reply; the
chat API cannot continue a partial reply, so a choice trie is scored only where the choices differ at their
first token (a deeper decision raises `StrategyUnavailableError`). ``chat=None`` picks chat for OpenAI's chat
model names (gpt-4o, gpt-4, gpt-3.5-turbo, o1...) and the completions endpoint for every other server.

**Tokenizer** (``tokenizer=``): ``"auto"`` takes tiktoken for OpenAI's models, the server's own endpoints
for llama_cpp.server (``/extras/tokenize``) and vLLM (``/tokenize``), else tiktoken by model name. Also
accepted: ``"tiktoken"``, an encoding name (``"cl100k_base"``), ``"server"``, or a tokenizer object (see
`autocog.lm.tokenizers`). A local tokenizer is checked against the server once (token counts of two probe
texts from ``usage.prompt_tokens``, and the token that a ``logit_bias`` on a known id makes the server
produce): a mismatch raises `TokenizerMismatchError`.

**Scoring choices** (``strategy=``; the result's ``strategy`` and ``info`` say what ran):

* ``"echo"``: each choice is appended to the prompt and sent with ``echo`` and ``logprobs``; the log-probs of
  its tokens are read back. One request per trie leaf, sent in parallel (llama_cpp.server takes one prompt
  per request), and none for text already scored: a choice that is a text prefix of another is read from
  the longer one's answer, and choice texts scored by earlier calls are kept (``cache_size``). Servers
  differ in where the right number lies: the server is probed once (`probe`): a known continuation is
  scored without echo (the log-prob of the generated token) and with echo, and the layout that reproduces
  it is used: ``token_logprobs`` (``"direct"``, OpenAI, vLLM) or the previous position's ``top_logprobs``
  (``"shifted"``, llama_cpp.server 0.3.x on models without BOS). On llama.cpp servers, which answer any
  number of top log-probs, a choice that is one token after the prompt gets no echo: its log-prob is read
  from the prompt's next-token row, which every echo carries. A number no echo gives (outside the top
  log-probs) is requested like a descent node: one request per context, for the whole vocabulary on
  llama.cpp (after a one-token request that resets the server's cache when the previous prompt shares
  the context's last tokens, see `_next`).
* ``"descent"``: walks the token trie with ``max_tokens=1`` requests that return the top log-probs of the
  next token, and ``logit_bias`` (+100) on a node's children, which makes the server produce the best child
  and reveal its log-prob. Servers that report log-probs before the bias (llama_cpp.server) give the biased
  token's exact log-prob; servers that report them after it (renormalized, OpenAI) are read against an
  unbiased reference token. On llama.cpp servers a request goes further: a **walk** sends a grammar that
  allows only the choices' remaining text and a bias on their tokens, so the server follows the trie,
  taking the best token at each step, and returns the exact log-prob of every token on that path with the
  top log-probs of its siblings (llama.cpp reports log-probs before the bias and the grammar): one request
  scores a whole path; several siblings still without a value take one whole-vocabulary row. ``search=``:

  - ``"best-first"`` (default): the exact best choice under ``sum``. A partial sum of log-probs bounds every
    choice below it, so nodes are expanded best bound first and the search stops once a complete choice
    beats every bound (one request when the best path is the best choice). Choices it eliminated keep NaN
    for tokens never scored and an upper bound as their score (``info["exact"]`` is False).
  - ``"greedy"``: the first AutoCog's descent, without its bugs: the best child at each branching node, one
    request per branching node on the way down (at most ``tree.branching_nodes()``; on llama.cpp, one walk
    for the whole way), none where there is a single child; a choice that ends where longer ones continue
    wins (under ``sum`` an extension only adds negative log-probs); one choice costs nothing. A decision,
    not a distribution: ``probs`` is one-hot on the choice reached; it can differ from the best choice when
    a likely first token leads to unlikely continuations.
  - ``"full"`` (also ``exhaustive=True``, and forced by the ``mean``, ``char``, ``pmi`` normalizations):
    every node, exactly (on llama.cpp about one walk per choice of two or more tokens).

  Identical tokenizations and empty tokenizations are refused (`InvalidChoicesError`) as in `ChoiceLM`. A
  text prompt cannot end inside a character, so descent cannot score past a token that splits one.
* ``"auto"``: echo when the probe found a layout that gives exact numbers, else descent.

Echo scores the tokens the server itself splits ``prompt + choice`` into; with a local tokenizer, a different
split of a choice raises `TokenizerMismatchError`. On quantized GGUF weights llama.cpp rounds one-token
batches differently from longer ones (0.02 nats measured on SmolLM2 Q4_1), and llama_cpp.server evaluates
only the tokens of a prompt past what it has cached, and generated tokens one at a time: echo and its
fills (which reset that cache when needed) give `LLaMa`'s numbers; descent's walks generate, so its numbers
can be off by that rounding (its choice was not, in the tests). On F32 weights both agree with `LLaMa`
within 1e-3.

Both strategies send text, not token ids (llama_cpp.server accepts only text prompts): the server tokenizes
``prompt + choice`` itself. The prompt/choice boundary follows `autocog.lm.lm` (trailing whitespace of the
prompt moves into the choices). No end marker is scored unless ``end=`` is given (its text is appended to
every choice).

**Stops** (``complete``): servers cut the stop string off and answer ``finish_reason="stop"`` both for a stop
string and for EOS. The stop is re-appended (so the text ends with it exactly when generation ended on it)
when the server says which stop matched (``stop_reason``/``matched_stop``, vLLM and SGLang), or when the
tokens it reports (``logprobs``, requested from llama.cpp servers) run past the returned text into a stop
string; with no such evidence, the completions endpoint peeks: one greedy request continues the returned
text and the stop is re-appended when that continuation starts with it; a chat reply with no evidence is
taken as ended by EOS. A stop string left inside the text by a server is cut there.

**Faults**: 408, 409, 429, 5xx, timeouts and dropped connections are retried with exponential backoff
(``Retry-After`` honored up to ``max_backoff``), at most ``max_retries`` times and within ``max_retry_time``
seconds in all; then `RetryExhaustedError` lists every attempt. Other statuses (400, 401, 403, 404, 422...)
raise `RequestFailedError` at once, naming the model and the server. A response that is not the JSON
expected raises `MalformedResponseError`. The openai client's own retries are disabled (``max_retries=0``
on a copy of the client) so that every attempt is counted (``lm.requests``). The API key is never put into
an error message or a log record (server messages are redacted).
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import math
import os
import random
import threading
import time
from collections import Counter, OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence
from urllib.parse import urlsplit, urlunsplit

from .choice import TokenChoiceTree
from .errors import (
    InvalidChoicesError,
    MalformedResponseError,
    RequestFailedError,
    RetryExhaustedError,
    StrategyUnavailableError,
    TokenizerMismatchError,
    missing_backend,
)
from .greedy import COMPLETION_DEFAULTS, GreedyLM
from .lm import (
    LM,
    ChoiceResult,
    Stop,
    as_stop_list,
    check_choices,
    check_normalization,
    check_prompt,
    find_stop,
    normalize_scores,
    split_boundary,
)
from ._vocabulary import SEPARATOR, Vocabulary, scan_vocabulary
from .openai_ids import id_context, strategy_reason
from .tokenizers import (
    LlamaCppServerTokenizer,
    Tokenizer,
    VllmServerTokenizer,
    as_tokenizer,
    tiktoken_tokenizer,
)

log = logging.getLogger(__name__)

STRATEGIES = ("auto", "echo", "descent")
SERVERS = ("auto", "openai", "llama.cpp", "vllm", "generic")
SEARCHES = ("best-first", "greedy", "full")
RETRY_STATUSES = frozenset({408, 409, 429})
BIAS = 100.0  # the largest logit_bias OpenAI accepts
PROBE_PROMPTS = ("The capital of France is", "Once upon a time, there was a", "1, 2, 3, 4,")
TOKENIZER_PROBE = "Tokenizer check: naïve café, 12,345.67 ünïcödé → 東京 🙂 <div class=\"x\">\tdone</div>"
PROBE_TOLERANCE = 2e-3
WHOLE_VOCABULARY = 1 << 20  # top_logprobs that a llama.cpp server answers with every token's log-prob
OPENAI_COMPLETION_MODELS = ("gpt-3.5-turbo-instruct", "davinci-002", "babbage-002")
_VOCABULARIES: dict = {}  # (server root, model) -> its `Vocabulary` (see `scan_vocabulary`)


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


class OpenAI(LM):
    """An `LM` behind the OpenAI API or an OpenAI-compatible server; see the module docstring.

    * ``model``: the model name (default: the first one ``GET /models`` lists).
    * ``base_url``, ``api_key``: as for ``openai.OpenAI`` (``api_key`` defaults to ``$OPENAI_API_KEY``, or a
      placeholder when ``base_url`` names a server without authentication); or ``client``: an
      ``openai.OpenAI`` already configured, used through a copy with its retries off and ``timeout`` set.
    * ``chat``: None (guess from the model name, see the module docstring), True or False; ``system``: an
      optional system message for chat models.
    * ``tokenizer``: ``"auto"``, ``"tiktoken"``, ``"server"``, an encoding name or a tokenizer object;
      ``check_tokenizer``: compare it with the server once (default True).
    * ``strategy``: the default of `choice_distribution` (``"auto"``, ``"echo"``, ``"descent"``);
      ``top_logprobs``: log-probs asked per position (default 20; 5 on OpenAI's completions endpoint, 1000 on
      llama_cpp.server, which has no limit); ``unconditional_prompt``: the context of ``pmi`` scores.
    * ``cache_size``: choice texts whose scores are kept across calls (LRU; 0: none), so that text already
      scored costs no request; `clear_cache` forgets them.
    * ``server``: ``"auto"`` (detect), ``"openai"``, ``"llama.cpp"``, ``"vllm"`` or ``"generic"``.
    * ``timeout`` (seconds per attempt), ``max_retries``, ``max_retry_time`` (seconds for all attempts and
      sleeps), ``backoff``/``max_backoff`` (first and longest sleep); ``parallel``: requests in flight at once.
    * ``completion_kwargs``: defaults for `complete` (``max_tokens`` 64, greedy), as for the local backends.

    ``requests`` counts what was sent: ``completions``, ``chat``, ``tokenize``, ``detokenize``, ``probe``
    (server detection) and ``attempts`` (retries included).

    >>> lm = OpenAI(model="gpt-4o-mini")  # chat endpoint, tiktoken o200k_base    # doctest: +SKIP
    >>> lm = OpenAI(base_url="http://127.0.0.1:8000/v1")  # llama_cpp.server's model    # doctest: +SKIP
    """

    def __init__(self, model: Optional[str] = None, base_url: Optional[str] = None, api_key: Optional[str] = None,
                 client: Any = None, chat: Optional[bool] = None, tokenizer: Any = "auto",
                 timeout: float = 60.0, max_retries: int = 4, max_retry_time: float = 120.0,
                 backoff: float = 0.25, max_backoff: float = 8.0, strategy: str = "auto",
                 top_logprobs: Optional[int] = None, parallel: int = 8, completion_kwargs: Optional[dict] = None,
                 server: str = "auto", system: Optional[str] = None, check_tokenizer: bool = True,
                 unconditional_prompt: Optional[str] = None, cache_size: int = 4096):
        try:
            import openai
        except ImportError as error:
            raise missing_backend("openai", "openai") from error
        self._openai = openai
        self._response_type = _response_type()
        if client is None:
            key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
            if key is None:
                if base_url is None:
                    raise ValueError("OpenAI's API needs an API key: pass api_key= or set OPENAI_API_KEY")
                key = "no-key"  # local servers without authentication
            client = openai.OpenAI(api_key=key, base_url=base_url, max_retries=0, timeout=timeout)
            self._owns_client = True
        else:
            client = client.with_options(max_retries=0, timeout=timeout)
            self._owns_client = False
        self.client = client
        key = getattr(client, "api_key", None)
        self._secret = key if isinstance(key, str) and len(key) >= 4 else None
        self.base_url = _public_url(str(client.base_url))
        self._model = model
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.max_retry_time = float(max_retry_time)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
        self.strategy = strategy
        self.parallel = max(1, int(parallel))
        self.system = system
        self.completion_kwargs = GreedyLM._completion_settings(completion_kwargs or {}, COMPLETION_DEFAULTS)
        if server not in SERVERS:
            raise ValueError(f"unknown server {server!r}: expected one of {', '.join(SERVERS)}")
        self._server = server
        self._chat = chat
        self._top_logprobs = top_logprobs
        self._tokenizer_spec = tokenizer
        self._tokenizer: Optional[Tokenizer] = None
        self._check_tokenizer = check_tokenizer
        self._tokenizer_checked = False
        self._unconditional = unconditional_prompt
        self._capabilities: Optional[dict] = None
        self._pieces: dict[int, str] = {}
        self.cache_size = int(cache_size)
        self._scored: OrderedDict = OrderedDict()  # (prompt, choice text) -> (pieces, log-probs), LRU
        self._lock = threading.RLock()
        self._fresh_lock = threading.Lock()
        self._last_prompt: Optional[str] = None  # the server's cached prompt, as far as this instance knows
        self._count_lock = threading.Lock()
        self._pool: Optional[ThreadPoolExecutor] = None
        self._ambiguous: Optional[frozenset] = None
        self._vocab_lock = threading.Lock()
        self.requests: Counter = Counter()

    @classmethod
    def create(cls, **kwargs: Any) -> dict:
        """The constructor's keyword arguments, as the other backends' ``create`` (AutoCog-compatible)."""
        return dict(kwargs)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
        if self._owns_client:
            self.client.close()

    def __repr__(self) -> str:
        return f"OpenAI(model={self._model!r}, base_url={self.base_url!r})"

    # --- configuration resolved lazily ---------------------------------------------------------------
    @property
    def root_url(self) -> str:
        """The server's address without the trailing ``/v1`` (where llama.cpp and vLLM put their extras)."""
        url = str(self.client.base_url).rstrip("/")
        return url[:-3] if url.endswith("/v1") else url

    @property
    def model(self) -> str:
        if self._model is None:
            data = self._call("list models", "models", lambda t: self.client.get(
                "/models", cast_to=self._response_type, options={"timeout": t}))
            try:
                self._model = str(data["data"][0]["id"])
            except (KeyError, IndexError, TypeError):
                raise MalformedResponseError(f"{self.base_url}/models lists no model: {_excerpt(data)}") from None
        return self._model

    @property
    def server(self) -> str:
        """``"openai"``, ``"llama.cpp"``, ``"vllm"`` or ``"generic"`` (detected from the URL and the extras
        endpoints unless given)."""
        with self._lock:
            if self._server == "auto":
                self._server = self._detect_server()
        return self._server

    def _detect_server(self) -> str:
        host = urlsplit(str(self.client.base_url)).hostname or ""
        if host.endswith("openai.com"):
            return "openai"
        for kind, path, body in (("llama.cpp", "/extras/tokenize", {"input": "a"}),
                                 ("vllm", "/tokenize", {"model": self._model or "", "prompt": "a"})):
            try:
                data = self._post(self.root_url + path, body, retry=False, kind="probe")
            except (RequestFailedError, MalformedResponseError, RetryExhaustedError):
                continue
            if isinstance(data, dict) and isinstance(data.get("tokens"), list):
                return kind
        return "generic"

    @property
    def chat(self) -> bool:
        if self._chat is None:
            name = (self._model or "").lower()
            self._chat = self.server == "openai" and not any(name.startswith(m) for m in OPENAI_COMPLETION_MODELS)
        return self._chat

    @property
    def top_logprobs(self) -> int:
        if self._top_logprobs is None:
            if self.server == "openai":
                return 20 if self.chat else 5
            return 1000 if self.wide else 20
        return int(self._top_logprobs)

    @property
    def wide(self) -> bool:
        """Whether the server answers any number of top log-probs (llama.cpp), so that one request can return
        a whole next-token row. (llama_cpp.server sorts the vocabulary at every position whatever the number,
        so 1000 per position costs about what 1 does.)"""
        return self.server == "llama.cpp"

    @property
    def tokenizer(self) -> Tokenizer:
        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = self._resolve_tokenizer(self._tokenizer_spec)
        return self._tokenizer

    def _resolve_tokenizer(self, spec: Any) -> Tokenizer:
        if isinstance(spec, str) and spec in ("auto", "server"):
            if self.server == "llama.cpp":
                return LlamaCppServerTokenizer(self._post, self.root_url, self.parallel)
            if self.server == "vllm":
                return VllmServerTokenizer(self._post, self.root_url, self.model, self.parallel)
            if spec == "server":
                raise StrategyUnavailableError(f"the server at {self.base_url} has no tokenize endpoint that "
                                               "autocog knows (llama_cpp.server, vLLM): pass tokenizer=")
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

    # --- the LM interface -----------------------------------------------------------------------------
    def tokenize(self, text: str, bos: bool = False) -> list[int]:
        """Token ids of ``text`` with the configured tokenizer; ``bos=True`` prepends the server's BOS if any."""
        tokens = self.tokenizer.encode(text)
        if bos:
            prefix = getattr(self.tokenizer, "special_prefix", None)
            if prefix is not None:
                prefix()
            if self.tokenizer.bos_token_id is not None:
                tokens = [self.tokenizer.bos_token_id] + tokens
        return tokens

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.tokenizer.decode(tokens)

    def complete(self, prompt: str, stop: Stop = "\n", **kwargs: Any) -> str:
        """Generate after ``prompt`` (greedy by default; ``temperature``, ``top_p``, ``top_k``, ``seed``), up to
        ``max_tokens`` (alias ``max_new_tokens``), EOS or a stop string; the text ends with the stop string
        exactly when generation ended on it (see the module docstring for how that is decided).

        >>> lm.complete("1, 2, 3,", stop=",", max_tokens=8)     # doctest: +SKIP
        ' 4,'
        """
        check_prompt(prompt)
        settings = GreedyLM._completion_settings(kwargs, self.completion_kwargs)
        stops = as_stop_list(stop)
        max_tokens = int(settings["max_tokens"])
        if max_tokens == 0:
            return ""  # llama_cpp.server reads max_tokens=0 as "no limit"
        server_stops = stops if (self.server != "openai" or len(stops) <= 4) else []
        body: dict = {"max_tokens": max_tokens, "temperature": float(settings["temperature"]),
                      "top_p": float(settings["top_p"])}
        if settings["seed"] is not None:
            body["seed"] = int(settings["seed"])
        if server_stops:
            body["stop"] = server_stops
        extra = self._sampling_extras(settings)
        want_tokens = self.server == "llama.cpp" and bool(stops)
        if self.chat:
            if want_tokens:
                body.update(logprobs=True, top_logprobs=0)
            data = self._chat_request(prompt, body, extra)
            choice = _first_choice(data, "chat completion")
            message = choice.get("message")
            text = message.get("content") if isinstance(message, dict) else None
            content = _chat_logprobs(choice)
            pieces = [c.get("token") for c in content if isinstance(c, dict)] if content else None
        else:
            if want_tokens:
                body["logprobs"] = 0
            data = self._completion_request(prompt, body, extra)
            choice = _first_choice(data, "completion")
            text = choice.get("text")
            logprobs = choice.get("logprobs")
            pieces = logprobs.get("tokens") if isinstance(logprobs, dict) else None
        if not isinstance(text, str):
            raise MalformedResponseError(f"the completion from {self.base_url} has no text: {_excerpt(data)}")
        return self._apply_stops(prompt, text, stops, choice, pieces, settings)

    def _apply_stops(self, prompt: str, text: str, stops: list[str], choice: dict, pieces: Optional[list],
                     settings: dict) -> str:
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
        if self.chat:
            return text
        peek_body = {"max_tokens": min(32, 2 + max(map(len, stops))), "temperature": 0.0}
        peek = _first_choice(self._completion_request(prompt + text, peek_body, self._sampling_extras(settings)),
                             "completion").get("text")
        if isinstance(peek, str):
            for s in sorted(stops, key=len, reverse=True):
                if peek.startswith(s):
                    return text + s
        return text

    def _sampling_extras(self, settings: dict) -> dict:
        """Sampler settings outside the OpenAI schema: llama.cpp's server defaults (repeat_penalty 1.1, min_p
        0.05, top_k 40) are reset to the plain ones the local backends use."""
        if self.server == "llama.cpp":
            return {"repeat_penalty": 1.0, "min_p": 0.0, "top_k": int(settings.get("top_k") or 0)}
        if self.server == "vllm" and settings.get("top_k"):
            return {"top_k": int(settings["top_k"])}
        return {}

    # --- choices --------------------------------------------------------------------------------------
    def choose(self, prompt: str, choices: Sequence[str], normalization: Optional[str] = None, **kwargs: Any) -> int:
        """Index of the best choice; see `choice_distribution`."""
        return self.choice_distribution(prompt, choices, normalization=normalization, **kwargs).index

    def choice_distribution(self, prompt: str, choices: Sequence[str], normalization: Optional[str] = None,
                            strategy: Optional[str] = None, end: Optional[str] = None, exhaustive: bool = False,
                            search: str = "best-first", **kwargs: Any) -> ChoiceResult:
        """Score ``choices`` as continuations of ``prompt``: a `ChoiceResult` (distribution, per-token log-probs,
        ``strategy`` = ``"echo"`` or ``"descent"``, ``info`` with the requests made and what was exact).

        ``strategy``: ``"auto"``, ``"echo"``, ``"descent"`` (default: the instance's); ``search`` (descent):
        ``"best-first"``, ``"greedy"``, ``"full"``; ``exhaustive=True`` is ``search="full"``; ``end``: text
        scored after every choice; ``normalization``: ``"sum"`` (default), ``"mean"``, ``"char"``, ``"pmi"``.

        >>> r = lm.choice_distribution("2+2=", ["4", "5"], strategy="descent"); r.info["requests"]   # doctest: +SKIP
        1
        """
        if kwargs:
            raise TypeError(f"unexpected argument(s) to choose: {', '.join(kwargs)}")
        normalization = check_normalization(normalization or self.default_normalization)
        check_prompt(prompt)
        choices = check_choices(choices)
        strategy = strategy or self.strategy
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
        prompt_text, continuations = split_boundary(prompt, choices)
        if end:
            continuations = [c + end for c in continuations]
        if strategy in ("auto", "echo") and not exhaustive and search == "best-first":
            from .openai_ids import score_requests  # vLLM: echo by token ids (exact, lists of prompts)
            from .scoring import ScoreRequest

            by_ids = score_requests(self, [ScoreRequest(prompt, choices, normalization, end)], strategy)
            if by_ids is not None:
                return by_ids[0]
        requested = strategy
        strategy = self._pick_strategy(strategy)  # probes the server on first use (not counted below)
        self.ambiguous_texts()  # reads a llama.cpp server's token names on first use (not counted below)
        before = Counter(self.requests)
        if search not in SEARCHES:
            raise ValueError(f"unknown search {search!r}: expected one of {', '.join(SEARCHES)}")
        if exhaustive or normalization != "sum":
            search = "full"  # pruning and greedy decisions are sound for sums of log-probs only
        uncond = None
        fallback = None
        if strategy == "echo":
            try:
                token_logprobs, info = self._echo(prompt_text, continuations)
                if normalization == "pmi":
                    uncond, _ = self._echo(self.unconditional_prompt, continuations)
                tree = None
            except StrategyUnavailableError as error:
                if requested != "auto" or self.probe()["bias"] is None:
                    raise
                fallback, strategy, search = str(error), "descent", "full"  # auto promises a distribution
        if strategy == "descent":
            token_logprobs, info, tree = self._descent(prompt_text, continuations, search)
            if normalization == "pmi":
                uncond, _, _ = self._descent(self.unconditional_prompt, continuations, "full")
        scores = normalize_scores(info.pop("bounded"), choices, normalization, uncond)
        spent = Counter(self.requests)
        spent.subtract(before)
        if fallback:
            info["fallback"] = fallback
        info["reason"] = strategy_reason(self, requested, strategy, fallback)
        info.update(server=self.server, endpoint="chat" if self.chat else "completions",
                    requests=spent["completions"] + spent["chat"],
                    tokenize_requests=spent["tokenize"] + spent["detokenize"], attempts=spent["attempts"])
        return ChoiceResult(list(choices), token_logprobs, scores, normalization, tree=tree, strategy=strategy,
                            unconditional_logprobs=uncond, info=info)

    def score_batch(self, requests: Sequence[Any]) -> list[ChoiceResult]:
        """One `ChoiceResult` per `ScoreRequest`: on vLLM by token-id echo, many prompts and choices per request
        and ``parallel`` requests in flight (`autocog.lm.openai_ids`); elsewhere one call per request."""
        from .openai_ids import score_requests

        return score_requests(self, requests) or super().score_batch(requests)

    @property
    def unconditional_prompt(self) -> str:
        """The context of an unconditional score (``pmi``): the empty prompt when the server adds BOS, else
        ``<|endoftext|>`` (override with ``unconditional_prompt=``)."""
        if self._unconditional is None:
            tok = self.tokenizer
            prefix = getattr(tok, "special_prefix", None)
            if prefix is not None:
                prefix()
            self._unconditional = "" if tok.bos_token_id is not None else "<|endoftext|>"
        return self._unconditional

    def _pick_strategy(self, strategy: str) -> str:
        if strategy == "echo" and self.chat:  # known without probing: say so before sending anything
            raise StrategyUnavailableError(f"strategy 'echo' cannot run on {self.base_url} (model {self.model!r}): "
                                           "the chat endpoint has no echo")
        caps = self.probe()
        if strategy == "echo":
            if not caps["echo"]:
                raise StrategyUnavailableError(f"strategy 'echo' cannot run on {self.base_url} (model "
                                               f"{self.model!r}): {caps['echo_reason']}")
            return "echo"
        if strategy == "descent" or not caps["echo"]:
            if caps["bias"] is None:
                raise StrategyUnavailableError(f"strategy 'descent' cannot run on {self.base_url} (model "
                                               f"{self.model!r}): {caps['bias_reason']}")
            return "descent"
        return "echo"

    # --- probing the server ---------------------------------------------------------------------------
    def probe(self) -> dict:
        """What this server can do, measured once: ``echo`` (``"direct"``, ``"shifted"`` or None, with
        ``echo_reason``), ``bias`` (``"pre"``: log-probs reported before logit_bias, ``"post"``, or None, with
        ``bias_reason``) and the numbers compared.

        >>> lm.probe()["echo"]          # doctest: +SKIP
        'shifted'
        """
        with self._lock:
            if self._capabilities is None:
                self._capabilities = self._probe()
        return self._capabilities

    def _probe(self) -> dict:
        caps: dict = {"echo": None, "echo_reason": "", "bias": None, "bias_reason": "", "checks": []}
        first = None
        for probe_prompt in PROBE_PROMPTS:
            nxt = self._next(probe_prompt)
            if nxt.token and nxt.logprob is not None and nxt.top:
                first = (probe_prompt, nxt)
                break
        if first is None:
            reason = "the server returns no log-probs for the next token"
            caps.update(echo_reason=reason, bias_reason=reason)
            return caps
        probe_prompt, nxt = first
        if self._check_tokenizer:
            self.check_tokenizer(probe_usage=(probe_prompt, nxt.usage))
        caps["bias"], caps["bias_reason"] = self._probe_bias(probe_prompt, nxt)
        if self.chat:
            caps["echo_reason"] = "the chat endpoint has no echo"
        else:
            caps["echo"], caps["echo_reason"] = self._probe_echo(probe_prompt, nxt, caps["checks"])
        log.info("probed %s: echo=%s bias=%s", self.base_url, caps["echo"], caps["bias"])
        return caps

    def _probe_echo(self, probe_prompt: str, nxt: Next, checks: list) -> tuple[Optional[str], str]:
        candidates = [(nxt.token, nxt.logprob)] + sorted(
            ((t, v) for t, v in nxt.top.items() if t != nxt.token), key=lambda tv: -tv[1])
        tried = 0
        for token, expected in candidates:
            if not token or not token.strip() or tried >= 3:
                continue
            tried += 1
            try:
                echo = self._echo_request(probe_prompt + token, 1)
            except RequestFailedError as error:
                return None, f"echo with logprobs was refused: {error}"
            found = _region_start(echo, token)
            if found is None or found[1] - found[0] != 1:
                continue  # the server split the text differently at the boundary: try another token
            i = found[0]
            direct = echo.logprobs[i]
            shifted = (echo.top[i - 1] or {}).get(token) if i >= 1 else None
            checks.append({"token": token, "expected": expected, "token_logprobs": direct,
                           "previous_top_logprobs": shifted})
            if direct is not None and abs(direct - expected) <= PROBE_TOLERANCE:
                return "direct", f"token_logprobs reproduce the log-prob of {token!r}"
            if shifted is not None and abs(shifted - expected) <= PROBE_TOLERANCE:
                return "shifted", (f"token_logprobs are shifted by one position ({direct} for {token!r}, expected "
                                   f"{expected}); the previous position's top_logprobs hold the right value")
            return None, (f"echo gives neither the log-prob of {token!r} ({expected}) in token_logprobs "
                          f"({direct}) nor in the previous position's top_logprobs ({shifted})")
        return None, "no probe continuation could be echoed back on a clean token boundary"

    def _probe_bias(self, probe_prompt: str, nxt: Next) -> tuple[Optional[str], str]:
        try:
            tokenizer = self.tokenizer
        except StrategyUnavailableError as error:
            return None, f"logit_bias needs token ids: {error}"
        ranked = sorted(((t, v) for t, v in nxt.top.items() if t != nxt.token), key=lambda tv: -tv[1])
        for text, expected in ranked[:5]:
            if not text or "\ufffd" in text:
                continue
            ids = tokenizer.encode(text)
            if len(ids) != 1:
                continue
            biased = self._next(probe_prompt, {ids[0]: BIAS}, partial="allow")  # a whole character
            if biased.token != text:
                raise TokenizerMismatchError(
                    f"the tokenizer {tokenizer!r} gives id {ids[0]} for {text!r}, but a logit_bias on that id made "
                    f"the server at {self.base_url} (model {self.model!r}) produce {biased.token!r}: the ids differ")
            if biased.logprob is None:
                return None, "the server returns no log-prob for a biased token"
            if abs(biased.logprob - expected) <= PROBE_TOLERANCE:
                return "pre", "log-probs are reported before logit_bias"
            if biased.logprob > expected + 1.0:
                return "post", "log-probs are reported after logit_bias (renormalized)"
            return None, f"a biased token reads {biased.logprob}, expected {expected} or close to 0"
        return None, "no probe token is a single token of the tokenizer"

    def check_tokenizer(self, probe_usage: Optional[tuple] = None) -> None:
        """Compare the local tokenizer with the server: the difference of ``usage.prompt_tokens`` between two
        prompts must equal the difference of their local token counts (BOS and chat templates cancel out).
        Raises `TokenizerMismatchError`; a no-op for the server's own tokenizer or a server without ``usage``."""
        if self._tokenizer_checked:
            return
        self._tokenizer_checked = True
        try:
            tokenizer = self.tokenizer
        except StrategyUnavailableError:
            return
        if tokenizer.is_server:
            return
        short, short_usage = probe_usage if probe_usage else (PROBE_PROMPTS[0], self._next(PROBE_PROMPTS[0]).usage)
        long_usage = self._next(TOKENIZER_PROBE).usage
        if short_usage is None or long_usage is None:
            return
        local = len(tokenizer.encode(TOKENIZER_PROBE)) - len(tokenizer.encode(short))
        remote = long_usage - short_usage
        if local != remote:
            raise TokenizerMismatchError(
                f"the tokenizer {tokenizer!r} does not match model {self.model!r} on {self.base_url}: the server "
                f"counts {long_usage} and {short_usage} prompt tokens for two probe texts, {remote} apart, the "
                f"tokenizer counts {local} apart; pass the model's tokenizer (tokenizer=...)")

    # --- echo -----------------------------------------------------------------------------------------
    def _echo(self, prompt_text: str, texts: list[str]) -> tuple[list[list[float]], dict]:
        """Echo scoring (see the module docstring): per-token log-probs of each text after ``prompt_text``.

        On servers that take any number of top log-probs (llama.cpp), a text that is one token after the
        prompt needs no echo of its own: its log-prob lies in the prompt's next-token row, which every echo
        carries (and one wide request fills when none does)."""
        layout = self.probe()["echo"]
        top = self.top_logprobs if layout == "shifted" or self.wide else 1
        known: dict[int, tuple[list[str], list[float]]] = {}
        with self._lock:
            for j, text in enumerate(texts):
                hit = self._scored.get((prompt_text, text))
                if hit is not None:
                    self._scored.move_to_end((prompt_text, text))
                    known[j] = hit
        single = self._single_tokens(prompt_text, [j for j in range(len(texts)) if j not in known], texts)
        rest = [j for j in range(len(texts)) if j not in known and j not in single]
        leaves = [j for j in rest if not any(texts[o] != texts[j] and texts[o].startswith(texts[j]) for o in rest)]
        answers: dict[int, Echo] = dict(zip(leaves, self._map(
            lambda j: self._echo_request(prompt_text + texts[j], top), leaves)))
        regions: dict[int, tuple[Echo, int, int]] = {}
        second = []
        for j in rest:
            sources = [j] if j in answers else [k for k in leaves if texts[k].startswith(texts[j])]
            for k in sources:
                region = _region(answers[k], texts[k], texts[j])
                if region is not None:
                    regions[j] = (answers[k],) + region
                    break
            else:
                if j in answers:
                    raise self._merged(j, texts[j])
                second.append(j)  # a prefix the longer choices' tokens do not split at: its own request
        for j, echo in zip(second, self._map(lambda j: self._echo_request(prompt_text + texts[j], top), second)):
            region = _region(echo, texts[j], texts[j])
            if region is None:
                raise self._merged(j, texts[j])
            regions[j] = (echo,) + region
        token_logprobs: list[list[float]] = [[] for _ in texts]
        pieces: list[list[str]] = [[] for _ in texts]
        missing: dict[str, dict[str, list[tuple[int, int]]]] = {}
        root_rows = [_row(echo, s, layout) for echo, s, _ in regions.values()]
        ambiguous = self.ambiguous_texts()  # texts that name several tokens in a row: read by id instead
        for j in range(len(texts)):
            if j in known:
                pieces[j], token_logprobs[j] = list(known[j][0]), list(known[j][1])
                continue
            if j in single:
                value = None if texts[j] in ambiguous else next(
                    (r[texts[j]] for r in root_rows if texts[j] in r), None)
                slots = [(prompt_text, texts[j], value)]
            else:
                echo, s, e = regions[j]
                slots = []
                for i in range(s, e):
                    token = echo.tokens[i]
                    if layout == "direct":
                        value = echo.logprobs[i]  # by token id
                    else:
                        value = None if token in ambiguous else _row(echo, i, layout).get(token)
                    slots.append((prompt_text + "".join(echo.tokens[s:i]), token, value if token else None))
            for position, (context, token, value) in enumerate(slots):
                if value is None:
                    missing.setdefault(context, {}).setdefault(token, []).append((j, position))
                token_logprobs[j].append(math.nan if value is None else float(value))
                pieces[j].append(token)
        if missing:
            self._fill_missing(missing, token_logprobs, {texts[j]: token for j, token in single.items()})
        self._check_pieces(texts, pieces)
        for j in range(len(texts)):
            if j not in known:
                self._remember((prompt_text, texts[j]), (pieces[j], token_logprobs[j]))
        info = {"layout": layout, "echo_requests": len(leaves) + len(second), "from_next_token_row": len(single),
                "from_cache": len(known), "fill_requests": len(missing),
                "filled": sum(len(v) for m in missing.values() for v in m.values()), "tokens": pieces,
                "exact": [True] * len(texts), "bounded": token_logprobs}
        return token_logprobs, info

    def _single_tokens(self, prompt_text: str, candidates: list[int], texts: list[str]) -> dict[int, int]:
        """{index: token id} of the texts the server splits, after ``prompt_text``, into exactly one token that
        spells the text (only where one request can return a whole next-token row: llama.cpp)."""
        if not self.wide or not candidates:
            return {}
        tokenizer = self.tokenizer
        encoded = tokenizer.encode_many([prompt_text] + [prompt_text + texts[j] for j in candidates])
        head, out = encoded[0], {}
        for j, ids in zip(candidates, encoded[1:]):
            if len(ids) == len(head) + 1 and ids[:-1] == head and self._piece(ids[-1]) == texts[j]:
                out[j] = ids[-1]
        return out

    def _remember(self, key: tuple, value: tuple) -> None:
        """Keep a scored text (LRU of ``cache_size`` entries): no request for text already scored."""
        if self.cache_size <= 0:
            return
        with self._lock:
            self._scored[key] = value
            self._scored.move_to_end(key)
            while len(self._scored) > self.cache_size:
                self._scored.popitem(last=False)

    def clear_cache(self) -> None:
        """Forget the texts already scored (they are kept across calls; see ``cache_size``)."""
        with self._lock:
            self._scored.clear()

    def _merged(self, j: int, text: str, strategy: str = "echo") -> StrategyUnavailableError:
        if strategy == "echo":
            return StrategyUnavailableError(
                f"the server at {self.base_url} tokenizes the prompt and choice {j} ({text!r}) across their "
                "boundary (no token starts where the choice starts): echo cannot score it; use strategy='descent'")
        return StrategyUnavailableError(
            f"the server at {self.base_url} tokenizes the prompt and a prefix of choice {j} ({text!r}) across "
            "their boundary, and it takes prompts as text only: the choice's own tokens cannot be scored after "
            "the prompt's (end the prompt on a word boundary, e.g. with a space moved into the choices)")

    def _fill_missing(self, missing: dict, token_logprobs: list[list[float]], ids: dict[str, int]) -> None:
        """Values echo did not give: one next-token request per context. On llama.cpp it asks for the whole
        vocabulary's log-probs, so it fills every gap at that context; elsewhere logit_bias reveals the rest.
        ``ids``: token ids already known by token text (the others are encoded)."""
        pre = self.probe()["bias"] == "pre"
        ambiguous = self.ambiguous_texts()

        def token_id(text: str) -> int:
            if text in ids:
                return ids[text]
            found = self.tokenizer.encode(text)
            if len(found) != 1:
                raise StrategyUnavailableError(f"echo gave no log-prob for token {text!r} and the tokenizer "
                                               "cannot name its id")
            return found[0]

        def fill(item):
            context, wanted = item
            # Reported before the bias: biasing the wanted tokens makes the best of them the produced token
            # (exact; and never EOS, which llama_cpp.server answers without log-probs) and leaves the top
            # log-probs unbiased. Reported after it: an unbiased request first, then `_refine`.
            bias = {token_id(t): BIAS for t in wanted} if pre else None
            nxt = self._next(context, bias, k=WHOLE_VOCABULARY if self.wide else None, fresh=True)
            if nxt.token is None and not nxt.top:
                raise self._no_logprobs(context)
            found = {t: nxt.top[t] for t in wanted if t in nxt.top and t not in ambiguous}
            if nxt.logprob is not None and (nxt.token in wanted or (pre and len(wanted) == 1)):
                found[nxt.token if nxt.token in wanted else next(iter(wanted))] = nxt.logprob
            rest = [t for t in wanted if t not in found]
            if rest:
                children = [(t, token_id(t), t) for t in rest]
                found.update(self._refine(context, children, None if pre else nxt))
            return item, found

        for (context, wanted), found in self._map(fill, list(missing.items())):
            for token, places in wanted.items():
                for j, k in places:
                    token_logprobs[j][k] = found[token]

    def _check_pieces(self, texts: list[str], pieces: list[list[str]]) -> None:
        """With a local tokenizer, the server's split of each choice must be the tokenizer's."""
        tokenizer = self._tokenizer
        if tokenizer is None or tokenizer.is_server:
            return
        for j, text in enumerate(texts):
            local = [self._piece(t) for t in tokenizer.encode(text)]
            if all("\ufffd" not in p for p in local) and local != pieces[j]:
                raise TokenizerMismatchError(
                    f"choice {j} ({text!r}): the server at {self.base_url} (model {self.model!r}) splits it as "
                    f"{pieces[j]} but the tokenizer {tokenizer!r} as {local}")

    # --- descent --------------------------------------------------------------------------------------
    def _descent(self, prompt_text: str, texts: list[str], search: str
                 ) -> tuple[list[list[float]], dict, TokenChoiceTree]:
        tokenizer = self.tokenizer
        token_lists = tokenizer.encode_many(texts)
        for j, tokens in enumerate(token_lists):
            if not tokens:
                raise InvalidChoicesError(f"choice {j} ({texts[j]!r}) tokenizes to nothing")
        if len(set(map(tuple, token_lists))) < len(token_lists):
            raise InvalidChoicesError("two choices tokenize to the same tokens once the prompt's trailing "
                                      "whitespace is moved into them")
        unique = sorted({t for ts in token_lists for t in ts})
        pieces = dict(zip(unique, self._map(self._piece, unique)))
        tree = TokenChoiceTree(token_lists, self._piece)
        nodes = tree.nodes
        exact: dict[int, float] = {}
        bound: dict[int, float] = {}
        evaluated: dict[int, Next] = {}  # parent index (-1: root) -> its unbiased/first answer
        order = itertools.count()

        prompt_ids = tokenizer.encode(prompt_text) if any(len(p) > 1 for p in tree.paths) else []

        def children_of(parent: int) -> list[int]:
            return list((tree.roots if parent < 0 else nodes[parent].children).values())

        id_prefix = id_context(self, prompt_text)  # vLLM: contexts as token ids, never re-tokenized

        def context_of(parent: int) -> Any:
            if id_prefix is not None:
                return id_prefix + ([] if parent < 0 else tree.path_tokens(parent))
            if parent < 0:
                return prompt_text
            if self.chat:
                raise StrategyUnavailableError(
                    "the chat endpoint cannot continue a partial reply, so descent scores only the first token of "
                    f"a reply; scoring past {pieces[nodes[parent].token]!r} needs a completions model (or choices "
                    "that are single tokens, or that differ at their first token with the default search)")
            path = tree.path_tokens(parent)
            texts_path = [pieces[t] for t in path]
            if all(p and "\ufffd" not in p for p in texts_path):
                context = prompt_text + "".join(texts_path)
            else:
                context = prompt_text + tokenizer.decode(path)
            # Contexts go as text: the server must split it into the prompt's tokens and then the path's.
            if "\ufffd" in context[len(prompt_text):]:
                j = next(j for j, p in enumerate(tree.paths) if parent in p)
                raise StrategyUnavailableError(
                    f"choice {j} ({texts[j]!r}) has tokens that split a UTF-8 character, and a text prompt cannot "
                    f"end inside one: descent cannot score past {context[len(prompt_text):]!r} on {self.base_url}")
            if tokenizer.encode(context) != prompt_ids + path:
                j = next(j for j, p in enumerate(tree.paths) if parent in p)
                raise self._merged(j, texts[j], "descent")
            return context

        def spec(index: int) -> tuple:
            return (index, nodes[index].token, pieces[nodes[index].token])

        def expand(parent: int) -> None:
            kids = children_of(parent)
            first, values, bounds = self._first(context_of(parent), [spec(k) for k in kids])
            evaluated[parent] = first
            exact.update(values)
            bound.update(bounds)

        def refine(index: int) -> None:
            parent = nodes[index].parent
            todo = [k for k in children_of(parent) if k not in exact]
            if self.probe()["bias"] == "pre":
                todo = [index]  # one request per child: the biased token's exact log-prob
            exact.update(self._refine(context_of(parent), [spec(k) for k in todo], evaluated.get(parent)))
            for k in todo:
                bound.pop(k, None)

        def upper(index: int) -> float:
            total = 0.0
            while index >= 0:
                total += exact.get(index, bound.get(index, 0.0))
                index = nodes[index].parent
            return total

        walks = self.wide and not self.chat and self.probe()["bias"] == "pre"
        ambiguous = self.ambiguous_texts()
        rows: set[int] = set()  # parents whose children all have a value or a bound from a walk
        taken: dict[int, int] = {}  # parent -> the child a walk went through
        top = self.top_logprobs

        def read_row(kids: list[int], row: dict) -> list[int]:
            """Exact values from a next-token ``row`` for the ``kids`` it names unambiguously; the others."""
            unique = _unique_pieces([spec(k) for k in kids], ambiguous)
            rest = []
            for k in kids:
                piece = pieces[nodes[k].token]
                if k in exact:
                    continue
                if piece in unique and piece in row:
                    exact[k] = row[piece]
                    bound.pop(k, None)
                else:
                    rest.append(k)
            return rest

        def below(parent: int, within: Optional[int]) -> list[int]:
            """The choices that continue past ``parent`` (through ``within`` if given)."""
            depth = 0 if parent < 0 else nodes[parent].depth
            return [j for j, path in enumerate(tree.paths) if len(path) > depth
                    and (parent < 0 or path[depth - 1] == parent) and (within is None or path[depth] == within)]

        def walk(parent: int, within: Optional[int] = None) -> bool:
            """One request down the trie from ``parent`` (through ``within``): a grammar that allows only the
            choices' remaining text and a logit_bias on their tokens make llama.cpp follow the trie, taking the
            best token at each step; every step returns the exact log-prob of the token taken and the top
            log-probs of its siblings. False (nothing sent) where the text cannot be written as a grammar."""
            context = context_of(parent)
            depth = 0 if parent < 0 else nodes[parent].depth
            chosen = below(parent, within)
            suffixes = []
            for j in chosen:
                full = prompt_text + texts[j]
                if not full.startswith(context) or any(not pieces[nodes[i].token] or "\ufffd" in pieces[nodes[i].token]
                                                       for i in tree.paths[j][depth:]):
                    return False
                suffixes.append(full[len(context):])
            if any("\x00" in x for x in suffixes):
                return False  # llama.cpp's grammar parser ends a literal at NUL: the rest would be unconstrained
            bias = {nodes[i].token: BIAS for j in chosen for i in tree.paths[j][depth:]}
            steps = self._walk_request(context, suffixes, bias, max(len(tree.paths[j]) - depth for j in chosen), top)
            if not steps:
                raise self._no_logprobs(context)
            node = parent
            for piece, value, row in steps:
                kids = children_of(node)
                vals = sorted(row.values(), reverse=True)
                floor = vals[min(len(vals), top) - 1] if vals else 0.0
                for k in read_row(kids, row):
                    # A child named in the row but not read (its text is shared) may lie above the floor.
                    cap = 0.0 if pieces[nodes[k].token] in row else floor
                    bound[k] = min(bound.get(k, cap), cap)
                rows.add(node)
                match = [k for k in kids if pieces[nodes[k].token] == piece]
                if len(match) != 1 or value is None:
                    break  # the server left the trie (another split of the text): the rows so far stand
                taken[node] = match[0]
                exact.setdefault(match[0], value)
                bound.pop(match[0], None)
                node = match[0]
            return True

        def open_row(parent: int) -> None:
            """Values or bounds for every child of ``parent``: a walk where it can, else one request."""
            if parent in rows or parent in evaluated:
                return
            if not (walks and walk(parent)):
                expand(parent)

        def score(index: int) -> None:
            """The exact log-prob of ``index`` (its parent's row already gave it a bound). On llama.cpp: one
            request for the parent's whole next-token row when several siblings lack a value, else a walk."""
            parent = nodes[index].parent
            missing = [k for k in children_of(parent) if k not in exact]
            if walks and len(missing) > 1:
                read_row(missing, self._next(context_of(parent), {nodes[k].token: BIAS for k in missing}, partial="drop",
                                             k=WHOLE_VOCABULARY).top)
            if index not in exact and walks:
                walk(parent, index)
            if index not in exact:
                refine(index)

        winner = None
        if search == "greedy":
            # The first AutoCog's descent: at a branching node, a bias on the children makes the server produce
            # the best of them (whatever it reports); on llama.cpp one walk goes all the way down. A choice that
            # ends where longer ones go on wins under ``sum`` (its extensions only add negative log-probs).
            node = -1
            while node < 0 or not nodes[node].ends:
                kids = children_of(node)
                if len(kids) > 1 and node not in taken and not (walks and walk(node) and node in taken):
                    context = context_of(node)
                    nxt = self._next(context, {nodes[k].token: BIAS for k in kids})
                    if nxt.token is None:
                        raise self._no_logprobs(context)
                    match = _produced(kids, lambda k: pieces[nodes[k].token], nxt.token)
                    if len(match) != 1:
                        raise StrategyUnavailableError(
                            f"the server produced {nxt.token!r}, which matches {len(match)} of the choice tokens "
                            f"{[pieces[nodes[k].token] for k in kids]}: greedy descent cannot tell which won")
                    if self.probe()["bias"] == "pre":
                        exact[match[0]] = nxt.logprob
                        read_row(kids, nxt.top)
                    taken[node] = match[0]
                node = taken.get(node, kids[0])
            winner = node
        elif search == "full" and walks:
            for parent in [-1] + tree.internal_nodes():
                open_row(parent)
                for k in children_of(parent):
                    if k not in exact:
                        score(k)
        elif search == "full":
            parents = [-1] + tree.internal_nodes()
            for parent in parents:
                expand(parent)
            for parent in parents:
                missing = [k for k in children_of(parent) if k not in exact]
                if missing:
                    if self.probe()["bias"] == "pre":
                        for k in missing:
                            refine(k)
                    else:
                        refine(missing[0])
        else:
            open_row(-1)
            # Ties go to the inexact entry: a choice wins only when no bound of another can reach its score.
            heap = [(-upper(k), 1 if k in exact else 0, next(order), k) for k in children_of(-1)]
            heapq.heapify(heap)
            while heap:
                key, _, _, index = heapq.heappop(heap)
                current = upper(index)
                if current < -key - 1e-12:  # stale: a sibling's refinement lowered it
                    heapq.heappush(heap, (-current, 1 if index in exact else 0, next(order), index))
                    continue
                if index not in exact:
                    score(index)
                    heapq.heappush(heap, (-upper(index), 1, next(order), index))
                    continue
                if nodes[index].ends:
                    winner = index
                    break
                open_row(index)
                for k in nodes[index].children.values():
                    heapq.heappush(heap, (-upper(k), 1 if k in exact else 0, next(order), k))
        token_logprobs = [[exact.get(i, math.nan) for i in path] for path in tree.paths]
        bounded: list = []
        if search == "greedy":  # a decision, not a distribution: all the mass on the choice reached
            bounded = [[0.0] if nodes[path[-1]].index == winner else [-math.inf] for path in tree.paths]
        for path in tree.paths if search != "greedy" else []:
            values = []
            for i in path:
                if i in exact:
                    values.append(exact[i])
                elif i in bound:
                    values.append(bound[i])
                else:
                    break  # below an eliminated node: the partial sum above bounds the choice
            bounded.append(values)
        lps = [exact.get(i) for i in range(len(nodes))]
        tree.set_logprobs([math.nan if v is None else v for v in lps])
        info = {"bias": self.probe()["bias"], "exact": [all(i in exact for i in p) for p in tree.paths],
                "nodes_scored": len(exact), "nodes": len(nodes), "search": search,
                "branching_nodes": tree.branching_nodes(),
                "winner": None if winner is None else nodes[winner].ends[0], "bounded": bounded}
        return token_logprobs, info, tree

    def _first(self, context: str, children: list[tuple]) -> tuple[Next, dict, dict]:
        """The first request at a trie node: exact log-probs of the children it reveals, bounds for the others.

        ``children``: (key, token id, piece text). Servers reporting log-probs before the bias get a bias on
        every child (the produced token is the best child, exactly scored); the others an unbiased request.
        """
        bias_mode = self.probe()["bias"]
        biased = bias_mode == "pre"
        bias = self._safe_bias({c[1]: BIAS for c in children}, drop=True) if biased and self.wide else (
            {c[1]: BIAS for c in children} if biased else None)
        if biased and not bias:
            biased, bias = False, None  # every child ends inside a character: an unbiased row
        unbiased = {c[0] for c in children if biased and c[1] not in bias}  # not below the produced child
        nxt = self._next(context, bias, partial="allow")
        if nxt.token is None and not nxt.top:
            raise self._no_logprobs(context)
        unique = _unique_pieces(children, self.ambiguous_texts())
        exact: dict = {}
        for key, token, piece in children:
            if piece in unique and piece in nxt.top:
                exact[key] = nxt.top[piece]
        if biased and nxt.logprob is not None:
            produced = _produced(children, lambda c: c[2], nxt.token)
            if len(children) == 1 and not unbiased:
                exact[children[0][0]] = nxt.logprob
            elif len(produced) == 1 and produced[0][2] in _unique_pieces(children):  # by id: the bias chose it
                exact[produced[0][0]] = nxt.logprob
            elif nxt.token and "\ufffd" not in nxt.token and not produced and unique:
                raise TokenizerMismatchError(
                    f"a logit_bias on the ids of {[c[2] for c in children]} made the server at {self.base_url} "
                    f"(model {self.model!r}) produce {nxt.token!r}: the tokenizer's ids are not the model's")
        natural = [v for t, v in nxt.top.items() if not (biased and t == nxt.token)]
        floor = min(natural) if natural else 0.0  # a child outside the top log-probs is below all of them
        if biased and nxt.logprob is not None:
            floor = min(floor, nxt.logprob)  # and below the best child, which the bias made the server produce
        # A child whose text the row names without reading it (a shared text) may lie above the floor.
        bounds = {key: 0.0 if piece in nxt.top or key in unbiased or "\ufffd" in piece else floor
                  for key, _, piece in children if key not in exact}
        return nxt, exact, bounds

    def _refine(self, context: str, children: list[tuple], first: Optional[Next]) -> dict:
        """Exact log-probs of ``children`` at ``context`` through logit_bias (see `_first`)."""
        out: dict = {}
        if self.probe()["bias"] is None:
            raise StrategyUnavailableError(f"a log-prob outside the top {self.top_logprobs} is needed, and "
                                           f"logit_bias cannot reveal it here: {self.probe()['bias_reason']}")
        if self.probe()["bias"] == "pre":
            for key, token, piece in children:
                nxt = self._next(context, {token: BIAS})
                if nxt.logprob is None:
                    raise self._no_logprobs(context)
                if not _same_piece(piece, nxt.token) and piece and "\ufffd" not in piece and nxt.token:
                    raise TokenizerMismatchError(
                        f"a logit_bias on id {token} ({piece!r}) made the server at {self.base_url} (model "
                        f"{self.model!r}) produce {nxt.token!r}: the tokenizer's ids are not the model's")
                out[key] = nxt.logprob
            return out
        # Reported after the bias: biased values are read against an unbiased reference token r:
        # log p(u) = q(u) - q(r) - BIAS + log p(r), with q the biased answer and log p(r) from `first`.
        if first is None:
            first = self._next(context)
        size = max(1, self.top_logprobs - 1)
        for start in range(0, len(children), size):
            chunk = children[start:start + size]
            names = {c[2] for c in chunk}
            reference = max(((t, v) for t, v in first.top.items() if t not in names), key=lambda tv: tv[1],
                            default=None)
            if reference is None:
                raise StrategyUnavailableError("no unbiased reference token to read biased log-probs against")
            nxt = self._next(context, {c[1]: BIAS for c in chunk})
            if reference[0] not in nxt.top:
                raise StrategyUnavailableError(
                    f"the reference token {reference[0]!r} is missing from the biased top log-probs: ask for more "
                    "top_logprobs")
            shift = reference[1] - nxt.top[reference[0]] - BIAS
            for key, token, piece in chunk:
                if piece not in nxt.top:
                    raise StrategyUnavailableError(f"the biased token {piece!r} is missing from the top log-probs")
                out[key] = nxt.top[piece] + shift
        return out

    def _no_logprobs(self, context: str) -> StrategyUnavailableError:
        return StrategyUnavailableError(
            f"the server at {self.base_url} (model {self.model!r}) returns no log-probs for the token after "
            f"{context[-40:]!r}" + (" (llama_cpp.server gives none after an empty prompt: pass "
                                    "unconditional_prompt= for 'pmi')" if not context else ""))

    def _piece(self, token: int) -> str:
        piece = self._pieces.get(token)
        if piece is None:
            piece = self.tokenizer.decode([token])
            self._pieces[token] = piece
        return piece

    def ambiguous_texts(self) -> frozenset:
        """Token texts that name more than one token id in this server's ``top_logprobs``.

        llama_cpp.server keys ``top_logprobs`` by each token's text with invalid UTF-8 bytes dropped, and a
        later (less likely) token overwrites an earlier one of the same text: on SmolLM2, ``" "`` also names 37
        tokens such as ``b" \\xe2\\x80"``, so the value under ``" "`` can be theirs. A value read by such a text is
        not trusted (it is asked for by token id: a biased request). Found once per server: from the
        tokenizer's vocabulary when it can list one, else by scanning the server's ``/extras/detokenize``
        (`scan_vocabulary`); empty on other servers (their keys mark broken bytes instead of dropping them).

        >>> sorted(lm.ambiguous_texts())      # SmolLM2 on llama_cpp.server    # doctest: +SKIP
        ['', ' ', 'о', 'י']
        """
        if self._ambiguous is None:
            self._ambiguous = self._find_ambiguous()
        return self._ambiguous

    def _find_ambiguous(self) -> frozenset:
        vocabulary = self.vocabulary()
        return frozenset() if vocabulary is None else vocabulary.shared_texts()

    def vocabulary(self) -> Optional[Vocabulary]:
        """Every token's name in ``top_logprobs`` and the tokens that end inside a character, on llama.cpp
        servers (None elsewhere): from the tokenizer when it can list its vocabulary, else read through the
        server's ``/extras/detokenize`` once per server (`scan_vocabulary`; ~2 s for SmolLM2's 49,152 tokens)."""
        if self.server != "llama.cpp":
            return None
        key = (self.root_url, self.model)
        with self._vocab_lock:
            if key not in _VOCABULARIES:
                listed = self.tokenizer.vocabulary()
                _VOCABULARIES[key] = listed if listed is not None else self._scan_vocabulary()
        return _VOCABULARIES[key]

    def _scan_vocabulary(self) -> Vocabulary:
        tokenizer = self.tokenizer
        decode = getattr(tokenizer, "decode_checked", None)
        keys = self._next(PROBE_PROMPTS[0], k=WHOLE_VOCABULARY).top
        if decode is None or not keys:
            return Vocabulary([None])  # unknown: no value is read by name
        separator = tokenizer.encode(SEPARATOR)
        started = time.monotonic()
        vocabulary = scan_vocabulary(len(keys), decode, separator, self._map)
        log.info("read %d token names from %s in %.1f s", len(vocabulary.names), self.base_url,
                 time.monotonic() - started)
        return vocabulary

    def _safe_bias(self, bias: dict, drop: bool) -> dict:
        """``bias`` without the tokens that end inside a UTF-8 character: llama-cpp-python generates on until
        the character is complete, and a bias that keeps choosing such a token never lets it (the request runs
        the server out of context). ``drop``: leave them out; else refuse."""
        vocabulary = self.vocabulary()
        cut = [t for t in bias if vocabulary is not None and (t in vocabulary.trailing or t >= len(vocabulary.names))]
        if cut and not drop:
            raise StrategyUnavailableError(
                f"token {cut[0]} ends inside a UTF-8 character: forcing it through logit_bias would make "
                f"llama_cpp.server at {self.base_url} generate until its context is full; it cannot be scored "
                "on its own there")
        return {t: b for t, b in bias.items() if t not in cut}

    # --- requests -------------------------------------------------------------------------------------
    def _next(self, context: str, bias: Optional[dict] = None, k: Optional[int] = None, fresh: bool = False,
              partial: str = "refuse") -> Next:
        """One next-token request (greedy, ``max_tokens=1``) with the top ``k`` log-probs, optionally biased.

        ``fresh`` (llama.cpp servers): first send a one-token request that shares no prefix with ``context``.
        llama_cpp.server keeps the previous prompt's KV and evaluates only the tokens past the common prefix,
        the last one alone when ``context`` ends within it; on quantized weights a one-token batch rounds
        differently from longer ones (measured: 0.02 nats on SmolLM2 Q4_1 for "iv" after " Ky"), while echo
        and `LLaMa` evaluate batches. Echo's fills ask for a fresh evaluation so that they agree with them."""
        if bias and self.wide and partial != "allow":
            bias = self._safe_bias(bias, partial == "drop")
        if fresh and self.wide:
            with self._fresh_lock:
                if self._shares_last_tokens(context):
                    self._completion_request("." if context.startswith("\n") else "\n", {"max_tokens": 1}, {})
                return self._next(context, bias, k, partial="allow")
        k = k or self.top_logprobs
        body: dict = {"max_tokens": 1, "temperature": 0.0}
        if bias:
            body["logit_bias"] = {str(t): float(b) for t, b in bias.items()}
        extra = self._sampling_extras({"top_k": 0})
        if self.chat:
            body.update(logprobs=True, top_logprobs=k)
            data = self._chat_request(context, body, extra)
            choice = _first_choice(data, "chat completion")
            content = _chat_logprobs(choice)
            if not content:
                return Next(None, None, {}, _usage(data))
            entry = content[0]
            top = {}
            for item in entry.get("top_logprobs") or []:
                if isinstance(item, dict) and isinstance(item.get("token"), str) and item.get("logprob") is not None:
                    top.setdefault(item["token"], float(item["logprob"]))
            return Next(entry.get("token"), _float(entry.get("logprob")), top, _usage(data))
        body["logprobs"] = k
        data = self._completion_request(context, body, extra)
        choice = _first_choice(data, "completion")
        logprobs = choice.get("logprobs")
        if not isinstance(logprobs, dict) or not logprobs.get("tokens"):
            return Next(None, None, {}, _usage(data))
        try:
            token = logprobs["tokens"][0]
            value = _float(logprobs["token_logprobs"][0])
            top = {str(t): float(v) for t, v in ((logprobs.get("top_logprobs") or [None])[0] or {}).items()}
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            raise MalformedResponseError(f"unexpected logprobs from {self.base_url}: {_excerpt(logprobs)}") from None
        return Next(token, value, top, _usage(data))

    def _walk_request(self, context: str, suffixes: list[str], bias: dict, max_tokens: int, k: int
                      ) -> list[tuple[str, Optional[float], dict]]:
        """A greedy completion of ``context`` constrained to one of ``suffixes`` (a llama.cpp grammar), with
        ``bias`` on the suffixes' tokens so that their own tokenization wins: [(token text, its log-prob, the
        top-``k`` log-probs at that step)]. llama.cpp reports log-probs before the bias and the grammar."""
        body: dict = {"max_tokens": max_tokens, "temperature": 0.0, "logprobs": k,
                      "logit_bias": {str(t): float(b) for t, b in bias.items()}}
        extra = dict(self._sampling_extras({"top_k": 0}), grammar="root ::= " + " | ".join(
            _gbnf_literal(x) for x in dict.fromkeys(suffixes)))
        data = self._completion_request(context, body, extra)
        logprobs = _first_choice(data, "completion").get("logprobs")
        if not isinstance(logprobs, dict) or not logprobs.get("tokens"):
            return []
        try:
            return [(str(t), _float(v), {str(a): float(b) for a, b in (r or {}).items()})
                    for t, v, r in zip(logprobs["tokens"], logprobs["token_logprobs"], logprobs["top_logprobs"])]
        except (KeyError, TypeError, ValueError, AttributeError):
            raise MalformedResponseError(f"unexpected logprobs from {self.base_url}: {_excerpt(logprobs)}") from None

    def _shares_last_tokens(self, context: str) -> bool:
        """Whether the last prompt sent may share ``context`` up to one of its last two tokens (then the server
        would evaluate fewer than two tokens; an unknown state counts as shared)."""
        last = self._last_prompt
        ids = self.tokenizer.encode(context)
        if last is None or len(ids) < 2:
            return True
        tail = len(self.tokenizer.decode(ids[-2:]))
        return len(os.path.commonprefix([last, context])) > len(context) - tail

    def _echo_request(self, text: str, top: int) -> Echo:
        body = {"max_tokens": 1, "temperature": 0.0, "echo": True, "logprobs": top}
        data = self._completion_request(text, body, self._sampling_extras({"top_k": 0}))
        logprobs = _first_choice(data, "completion").get("logprobs")
        try:
            full = _first_choice(data, "completion").get("text")
            generated = full[len(text):] if isinstance(full, str) and full.startswith(text) else ""
            echo = Echo([str(t) for t in logprobs["tokens"]], [int(o) for o in logprobs["text_offset"]],
                        [_float(v) for v in logprobs["token_logprobs"]],
                        [({str(k): float(v) for k, v in d.items()} if d else None) for d in logprobs["top_logprobs"]],
                        generated, len(text))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise MalformedResponseError(f"the echo from {self.base_url} has no usable logprobs: "
                                         f"{_excerpt(logprobs)}") from None
        if not (len(echo.tokens) == len(echo.offsets) == len(echo.logprobs) == len(echo.top)):
            raise MalformedResponseError(f"the echo from {self.base_url} has lists of different lengths")
        return echo

    def _completion_request(self, prompt: str, body: dict, extra: dict) -> Any:
        params = dict(model=self.model, prompt=prompt, **body)
        if extra:
            params["extra_body"] = extra
        self._last_prompt = prompt
        return self._call("completion", "completions",
                          lambda t: self.client.completions.with_raw_response.create(**params, timeout=t).http_response)

    def _chat_request(self, prompt: str, body: dict, extra: dict) -> Any:
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + [
            {"role": "user", "content": prompt}]
        params = dict(model=self.model, messages=messages, **body)
        if extra:
            params["extra_body"] = extra
        return self._call("chat completion", "chat",
                          lambda t: self.client.chat.completions.with_raw_response.create(
                              **params, timeout=t).http_response)

    def _post(self, url: str, body: dict, retry: bool = True, kind: Optional[str] = None) -> Any:
        """POST JSON to ``url`` (absolute, or relative to ``base_url``) with the retry policy; decoded JSON."""
        if kind is None:
            kind = "detokenize" if url.endswith("detokenize") else "tokenize" if url.endswith("tokenize") else "other"
        return self._call(f"POST {url.rsplit('/', 1)[-1]}", kind, lambda t: self.client.post(
            url, body=body, cast_to=self._response_type, options={"timeout": t}), retry=retry)

    def post_json(self, url: str, body: dict) -> Any:
        """Public form of `_post` (what the server tokenizers use)."""
        return self._post(url, body)

    def _map(self, fn: Callable, items: list) -> list:
        """``[fn(x) for x in items]``, in parallel on the instance's thread pool when there are several."""
        if len(items) <= 1 or self.parallel == 1:
            return [fn(x) for x in items]
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.parallel, thread_name_prefix="autocog-openai")
        return list(self._pool.map(fn, items))

    def _count(self, key: str) -> None:
        with self._count_lock:
            self.requests[key] += 1

    def _call(self, what: str, kind: str, send: Callable[[float], Any], retry: bool = True) -> Any:
        """Send with retries (see the module docstring); the decoded JSON body."""
        openai = self._openai
        self._count(kind)
        began = time.monotonic()
        delay = self.backoff
        attempts: list[str] = []
        while True:
            remaining = self.max_retry_time - (time.monotonic() - began)
            timeout = max(0.05, min(self.timeout, remaining))
            self._count("attempts")
            wait = 0.0
            try:
                response = send(timeout)
                return self._decode(response, what)
            except openai.APIStatusError as error:
                status = error.status_code
                detail = self._redact(_excerpt(_error_body(error)))
                # A server that cannot decode UTF-8 (llama_cpp.server detokenizing part of a character) will
                # not do better on a retry.
                if not (status in RETRY_STATUSES or status >= 500) or not retry or "codec can't decode" in detail:
                    raise RequestFailedError(
                        f"{what} failed on {self.base_url} for model {self._model!r}: HTTP {status}: {detail}",
                        status) from None
                attempts.append(f"HTTP {status}: {detail}")
                wait = _retry_after(error)
            except openai.APITimeoutError:
                attempts.append(f"no answer within the timeout ({timeout:.3g} s)")
            except openai.APIConnectionError as error:
                cause = error.__cause__ or error.__context__
                attempts.append(f"connection failed ({type(cause).__name__ if cause else 'closed'})")
            elapsed = time.monotonic() - began
            sleep = min(max(delay * (0.5 + random.random() / 2), wait), self.max_backoff)
            if not retry or len(attempts) > self.max_retries or elapsed + sleep >= self.max_retry_time:
                raise RetryExhaustedError(
                    f"{what} failed on {self.base_url} for model {self._model!r} after {len(attempts)} attempt(s) "
                    f"in {elapsed:.1f} s", attempts) from None
            log.warning("%s on %s: %s; retry %d in %.2f s", what, self.base_url, attempts[-1], len(attempts), sleep)
            time.sleep(sleep)
            delay *= 2

    def _decode(self, response: Any, what: str) -> Any:
        raw = response.content
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise MalformedResponseError(
                f"the {what} answer from {self.base_url} is not valid JSON ({len(raw)} bytes): "
                f"{self._redact(raw[:200].decode('utf-8', 'replace'))!r}") from None

    def _redact(self, text: str) -> str:
        if self._secret:
            text = text.replace(self._secret, "***")
        return text


# --- helpers --------------------------------------------------------------------------------------------
def _response_type() -> type:
    try:
        import httpx2

        return httpx2.Response
    except ImportError:  # openai < 3 runs on httpx
        import httpx

        return httpx.Response


def _public_url(url: str) -> str:
    """``url`` without credentials (``user:pass@``) or query string, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def _excerpt(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str) if value is not None else ""
    return text if len(text) <= limit else text[:limit] + "..."


def _error_body(error: Any) -> Any:
    body = getattr(error, "body", None)
    if body is None:
        try:
            body = error.response.text
        except Exception:  # noqa: BLE001 - the body is only used in a message
            body = str(error)
    return body


def _retry_after(error: Any) -> float:
    try:
        return max(0.0, float(error.response.headers.get("retry-after", "")))
    except (ValueError, AttributeError, TypeError):
        return 0.0


def _first_choice(data: Any, what: str) -> dict:
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedResponseError(f"the {what} answer has no choices: {_excerpt(data)}")
    return choices[0]


def _chat_logprobs(choice: dict) -> Optional[list]:
    """``choices[0].logprobs.content`` of a chat completion (one entry per generated token), or None."""
    logprobs = choice.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    return content if isinstance(content, list) else None


def _usage(data: Any) -> Optional[int]:
    usage = data.get("usage") if isinstance(data, dict) else None
    value = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return int(value) if isinstance(value, (int, float)) else None


def _float(value: Any) -> Optional[float]:
    return None if value is None else float(value)


def _gbnf_literal(text: str) -> str:
    """``text`` as a double-quoted literal of llama.cpp's grammar language (GBNF)."""
    escapes = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    return '"' + "".join(escapes.get(c) or (f"\\x{ord(c):02X}" if ord(c) < 0x20 or ord(c) == 0x7F else c)
                         for c in text) + '"'


def _row(echo: Echo, i: int, layout: str) -> dict:
    """The top log-probs of the distribution that predicts echoed token ``i``: at ``i`` (``"direct"``) or at
    ``i - 1`` (``"shifted"``); {} where the server gives none."""
    if layout == "direct":
        return echo.top[i] or {}
    return (echo.top[i - 1] or {}) if i >= 1 else {}


def _prompt_ends(echo: Echo) -> list[int]:
    """Where the echoed prompt tokens may end, most likely first: before the first token whose offset lies
    past the prompt; before tokens that spell the generated text; at the end of the lists (llama_cpp.server
    drops the generated token when the model has no BOS). The caller keeps the first that spells its text."""
    ends = [sum(1 for o in echo.offsets if o < echo.length)]
    if echo.generated:
        e, spelled = len(echo.tokens), ""
        while e > 0 and len(spelled) < len(echo.generated):
            e -= 1
            spelled = echo.tokens[e] + spelled
        if spelled == echo.generated:
            ends.append(e)
    return list(dict.fromkeys(ends + [len(echo.tokens)]))


def _region_start(echo: Echo, tail: str) -> Optional[tuple[int, int]]:
    """(s, n): the echoed prompt tokens [s, n) spell ``tail``, the text the prompt ends with; None when no
    token boundary falls where ``tail`` starts (the server merged it with the text before). Works on the
    token texts, not the offsets (special tokens have no text but shift some servers' offsets)."""
    for n in _prompt_ends(echo):
        s, spelled = n, ""
        while s > 0 and len(spelled) < len(tail):
            s -= 1
            spelled = echo.tokens[s] + spelled
        if spelled == tail and s < n:
            return s, n
    return None


def _region(echo: Echo, echoed: str, text: str) -> Optional[tuple[int, int]]:
    """Indices [s, e) of the echoed tokens that spell ``text``, a prefix of ``echoed`` (the choice text that
    ends the echoed prompt), or None when the tokens do not split there."""
    found = _region_start(echo, echoed)
    if found is None:
        return None
    s, n = found
    e, spelled = s, ""
    while e < n and len(spelled) < len(text):
        spelled += echo.tokens[e]
        e += 1
    return (s, e) if spelled == text else None


def _produced(items: list, piece: Callable[[Any], str], token: Optional[str]) -> list:
    """The items whose token text is the produced ``token``: exact matches, else up to a leading space."""
    exact = [x for x in items if piece(x) == token]
    return exact or [x for x in items if _same_piece(piece(x), token)]


def _same_piece(a: Optional[str], b: Optional[str]) -> bool:
    """Token texts equal, up to the leading space some servers add or drop on a token decoded alone."""
    return a == b or (bool(a) and bool(b) and a.strip() == b.strip() and bool(a.strip()))


def _unique_pieces(children: list[tuple], ambiguous: frozenset = frozenset()) -> set:
    """The pieces of ``children`` that a text-keyed row names unambiguously: one child each, not a broken
    character, not a text that other tokens of the vocabulary share (``ambiguous``)."""
    counts = Counter(c[2] for c in children)
    return {p for p, n in counts.items() if n == 1 and p and "\ufffd" not in p and p not in ambiguous}

