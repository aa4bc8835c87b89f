"""`OpenAI`: the OpenAI API and OpenAI-compatible servers (llama_cpp.server, vLLM, SGLang...) as an `LM`.

How it scores choices (echo, descent, auto), how it handles stops and faults: docs/openai.md.

>>> lm = OpenAI(model="smollm2", base_url="http://127.0.0.1:8000/v1", api_key="none")    # doctest: +SKIP
>>> lm.complete("The capital of France is", stop=".")                                      # doctest: +SKIP
' Paris.'
>>> r = lm.choice_distribution("Q: Capital of France?\\nA:", [" Paris", " London"])     # doctest: +SKIP
>>> r.strategy, r.probs                                                                    # doctest: +SKIP
('echo', array([0.97, 0.03]))
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional, Sequence

from autocog.core.checks import check_prompt, split_boundary
from autocog.core.normalization import normalize_scores
from autocog.core.types import ChoiceResult, ScoreRequest, Stop
from autocog.errors import MalformedResponseError, StrategyUnavailableError
from autocog.lm.base import LM
from autocog.lm.greedy import COMPLETION_DEFAULTS, GreedyLM
from autocog.lm.openai.cache import ScoreCache
from autocog.lm.openai.capabilities import Capabilities
from autocog.lm.openai.chat import Chat, renders_prompt
from autocog.lm.openai.descent import Descent
from autocog.lm.openai.echo import EchoScorer
from autocog.lm.openai.ids import score_requests, strategy_reason
from autocog.lm.openai.requests import Requests
from autocog.lm.openai.special import unconditional_text
from autocog.lm.openai.stops import apply_stops, complete
from autocog.lm.openai.tokenizers import (
    LlamaCppServerTokenizer,
    Tokenizer,
    VllmServerTokenizer,
    as_tokenizer,
    tiktoken_tokenizer,
)
from autocog.lm.openai.transport import CALL_COUNTER, Transport, excerpt, make_client
from autocog.lm.scoring import check_request, check_requests

STRATEGIES = ("auto", "echo", "descent")
SERVERS = ("auto", "openai", "llama.cpp", "vllm", "generic")
SEARCHES = ("best-first", "greedy", "full")
OPENAI_COMPLETION_MODELS = ("gpt-3.5-turbo-instruct", "davinci-002", "babbage-002")


class OpenAI(Chat, Requests, Capabilities, ScoreCache, LM):
    """An `LM` behind the OpenAI API or an OpenAI-compatible server; see docs/openai.md.

    * ``model``: the model name (default: the first one ``GET /models`` lists).
    * ``base_url``, ``api_key``: as for ``openai.OpenAI`` (``api_key`` defaults to ``$OPENAI_API_KEY``, or a
      placeholder when ``base_url`` names a server without authentication); or ``client``: an
      ``openai.OpenAI`` already configured, used through a copy with its retries off and ``timeout`` set.
    * ``chat``: None (guess from the model name, see the module docstring), True or False; ``system``: an
      optional system message for chat models; ``chat_template``: a jinja2 chat template for messages sent to
      a completions endpoint (default: the tokenizer's or the server's; see `autocog.lm.openai.chat`).
    * ``tokenizer``: ``"auto"``, ``"tiktoken"``, ``"server"``, an encoding name or a tokenizer object;
      ``check_tokenizer``: compare it with the server once (default True).
    * ``strategy``: the default of `choice_distribution` (``"auto"``, ``"echo"``, ``"descent"``);
      ``top_logprobs``: log-probs asked per position (default 20; 5 on OpenAI's completions endpoint, 1000 on
      llama_cpp.server, which has no limit); ``unconditional_prompt``: the context of ``pmi`` scores.
    * ``cache_size``: choice texts whose scores are kept across calls (LRU; 0: none), so that text already
      scored costs no request; `clear_cache` forgets them.
    * ``server``: ``"auto"`` (detect), ``"openai"``, ``"llama.cpp"``, ``"vllm"`` or ``"generic"``.
    * ``timeout`` (seconds per attempt), ``max_retries``, ``max_retry_time`` (seconds for all attempts and
      sleeps), ``backoff``/``max_backoff`` (first and longest sleep); ``concurrency`` (alias ``parallel``, default
      8): requests in flight at once, for one call's requests and for `score_batch`.
    * ``completion_kwargs``: defaults for `complete` (``max_tokens`` 64, greedy), as for the local backends.

    ``requests`` counts what was sent: ``completions``, ``chat``, ``tokenize``, ``detokenize``, ``probe``
    (server detection) and ``attempts`` (retries included).

    >>> lm = OpenAI(model="gpt-4o-mini")  # chat endpoint, tiktoken o200k_base    # doctest: +SKIP
    >>> lm = OpenAI(base_url="http://127.0.0.1:8000/v1")  # llama_cpp.server's model    # doctest: +SKIP
    """

    def __init__(
        self,
        model: Optional[str] = None,
        base_url: Optional[str] = None,
        api_key: Optional[str] = None,
        client: Any = None,
        chat: Optional[bool] = None,
        tokenizer: Any = "auto",
        timeout: float = 60.0,
        max_retries: int = 4,
        max_retry_time: float = 120.0,
        backoff: float = 0.25,
        max_backoff: float = 8.0,
        strategy: str = "auto",
        top_logprobs: Optional[int] = None,
        parallel: Optional[int] = None,
        completion_kwargs: Optional[dict] = None,
        server: str = "auto",
        system: Optional[str] = None,
        check_tokenizer: bool = True,
        unconditional_prompt: Optional[str] = None,
        cache_size: int = 4096,
        concurrency: Optional[int] = None,
        chat_template: Optional[str] = None,
    ):
        self.client, self._owns_client = make_client(client, base_url, api_key, timeout)
        self._model = model
        self.concurrency = max(
            1, int(concurrency if concurrency is not None else parallel if parallel is not None else 8)
        )
        self.transport = Transport(
            self.client,
            timeout,
            max_retries,
            max_retry_time,
            backoff,
            max_backoff,
            self.concurrency,
            lambda: self._model,
        )
        self.base_url = self.transport.base_url
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
        if server not in SERVERS:
            raise ValueError(f"unknown server {server!r}: expected one of {', '.join(SERVERS)}")
        self.strategy, self._server, self._chat, self.system = strategy, server, chat, system
        self.chat_template = chat_template
        self.completion_kwargs = GreedyLM._completion_settings(completion_kwargs or {}, COMPLETION_DEFAULTS)
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
        self._ambiguous: Optional[frozenset] = None
        self._vocab_lock = threading.Lock()

    @property
    def parallel(self) -> int:
        """Alias of ``concurrency`` (the name of earlier versions)."""
        return self.concurrency

    @classmethod
    def create(cls, **kwargs: Any) -> dict:
        """The constructor's keyword arguments, as the other backends' ``create`` (AutoCog-compatible)."""
        return dict(kwargs)

    def close(self) -> None:
        self.transport.close()
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
            data = self.transport.get("/models", "models")
            try:
                self._model = str(data["data"][0]["id"])
            except (KeyError, IndexError, TypeError):
                raise MalformedResponseError(f"{self.base_url}/models lists no model: {excerpt(data)}") from None
        return self._model

    @property
    def server(self) -> str:
        """``"openai"``, ``"llama.cpp"``, ``"vllm"`` or ``"generic"`` (detected from the URL and the extras
        endpoints unless given)."""
        with self._lock:
            if self._server == "auto":
                self._server = self._detect_server()
            if self._server == "llama.cpp" and self.transport.serial is None:
                self.transport.serialize()  # one request at a time (docs/openai.md, "Concurrency")
        return self._server

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

    # --- the LM interface -----------------------------------------------------------------------------
    def tokenize(self, text: str, bos: bool = False) -> list[int]:
        """Token ids of ``text`` with the configured tokenizer; ``bos=True`` prepends the server's BOS if any."""
        tokens = self.tokenizer.encode(text)
        if bos:
            prefix = getattr(self.tokenizer, "special_prefix", None)
            if prefix is not None:
                prefix()
            if self.tokenizer.bos_token_id is not None and tokens[:1] != [self.tokenizer.bos_token_id]:  # BOS once
                tokens = [self.tokenizer.bos_token_id] + tokens
        return tokens

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.tokenizer.decode(tokens)

    @renders_prompt
    def complete(self, prompt: Any, stop: Stop = "\n", **kwargs: Any) -> str:
        """Generate after ``prompt`` (greedy by default; ``temperature``, ``top_p``, ``top_k``, ``seed``), up to
        ``max_tokens`` (alias ``max_new_tokens``), EOS or a stop string; the text ends with the stop string
        exactly when generation ended on it (see the module docstring for how that is decided).

        >>> lm.complete("1, 2, 3,", stop=",", max_tokens=8)     # doctest: +SKIP
        ' 4,'
        """
        return complete(self, prompt, stop, kwargs)

    def _apply_stops(self, *args: Any) -> str:
        return apply_stops(self, *args)

    # --- choices --------------------------------------------------------------------------------------
    def choose(self, prompt: Any, choices: Sequence[str], normalization: Optional[str] = None, **kwargs: Any) -> int:
        """Index of the best choice; see `choice_distribution`."""
        return self.choice_distribution(prompt, choices, normalization=normalization, **kwargs).index

    @renders_prompt
    def choice_distribution(
        self,
        prompt: Any,
        choices: Sequence[str],
        normalization: Optional[str] = None,
        strategy: Optional[str] = None,
        end: Optional[str] = None,
        exhaustive: bool = False,
        search: str = "best-first",
        **kwargs: Any,
    ) -> ChoiceResult:
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
        check_prompt(prompt)  # messages were rendered before this point (`Chat`)
        checked = check_request(self, ScoreRequest(prompt, choices, normalization, end), render=False)
        normalization, choices = checked.normalization, checked.choices
        strategy = strategy or self.strategy
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
        prompt_text, continuations = split_boundary(prompt, choices)
        if end:
            continuations = [c + end for c in continuations]
        if strategy in ("auto", "echo") and not exhaustive and search == "best-first":
            by_ids = score_requests(self, [ScoreRequest(prompt, choices, normalization, end)], strategy)
            if by_ids is not None:  # vLLM: echo by token ids (docs/openai.md)
                return by_ids[0]
        if search not in SEARCHES:
            raise ValueError(f"unknown search {search!r}: expected one of {', '.join(SEARCHES)}")
        if exhaustive or normalization != "sum":
            search = "full"  # pruning and greedy decisions are sound for sums of log-probs only
        requested = strategy
        strategy = self._pick_strategy(strategy)  # probes the server on first use (not counted below)
        self.ambiguous_texts()  # reads a llama.cpp server's token names on first use (not counted below)
        if normalization == "pmi":
            _ = self.unconditional_prompt  # finds the model's BOS/EOS on first use (not counted below)
        spent: Counter = Counter()
        token = CALL_COUNTER.set(spent)  # this call's requests, whatever else runs at the same time
        try:
            token_logprobs, info, tree, uncond, strategy, fallback = self._score(
                prompt_text, continuations, strategy, requested, search, normalization
            )
        finally:
            CALL_COUNTER.reset(token)
        scores = normalize_scores(info.pop("bounded"), choices, normalization, uncond)
        if fallback:
            info["fallback"] = fallback
        info["reason"] = strategy_reason(self, requested, strategy, fallback)
        info.update(
            server=self.server,
            endpoint="chat" if self.chat else "completions",
            requests=spent["completions"] + spent["chat"],
            tokenize_requests=spent["tokenize"] + spent["detokenize"],
            attempts=spent["attempts"],
        )
        return ChoiceResult(
            list(choices),
            token_logprobs,
            scores,
            normalization,
            tree=tree,
            strategy=strategy,
            unconditional_logprobs=uncond,
            info=info,
        )

    def _score(
        self, prompt_text: str, texts: list[str], strategy: str, requested: str, search: str, normalization: str
    ) -> tuple:
        """(token log-probs, info, tree, unconditional log-probs, strategy that ran, fallback reason)."""
        uncond = tree = fallback = None
        if strategy == "echo":
            try:
                token_logprobs, info = EchoScorer(self, prompt_text, texts).run()
                if normalization == "pmi":
                    uncond, _ = EchoScorer(self, self.unconditional_prompt, texts).run()
            except StrategyUnavailableError as error:
                if requested != "auto" or self.probe()["bias"] is None:
                    raise
                fallback, strategy, search = str(error), "descent", "full"  # auto promises a distribution
        if strategy == "descent":
            try:
                token_logprobs, info, tree = Descent(self, prompt_text, texts, search).run()
            except StrategyUnavailableError as error:
                if fallback is None:
                    raise
                raise StrategyUnavailableError(f"echo: {fallback}; descent: {error}") from None
            if normalization == "pmi":
                uncond, _, _ = Descent(self, self.unconditional_prompt, texts, "full").run()
        return token_logprobs, info, tree, uncond, strategy, fallback

    def score_batch(
        self, requests: Sequence[ScoreRequest], max_batch_tokens: Optional[int] = None
    ) -> list[ChoiceResult]:
        """One `ChoiceResult` per `ScoreRequest`, in order (the scoring layer's primitive, `autocog.lm.scoring`;
        ``max_batch_tokens`` is not used: the server batches).
        On vLLM by token-id echo: several prompts and choices per completions request (`autocog.lm.openai.ids`).
        Elsewhere the requests are scored ``concurrency`` at a time, and the HTTP requests of all of them together stay
        within ``concurrency`` in flight (429 and ``Retry-After`` pause every thread). The server is probed once
        first. The first error raised (in request order) is raised.

        >>> lm = OpenAI(base_url="http://127.0.0.1:8000/v1", concurrency=8)            # doctest: +SKIP
        >>> [r.index for r in lm.score_batch([ScoreRequest("2+2=", ["4", "5"])] * 100)]  # doctest: +SKIP
        [0, 0, ...]
        """
        requests = list(requests)
        if not requests:
            return []
        check_requests(self, requests, render=False)  # a bad request fails the batch before any request is sent
        by_ids = score_requests(self, requests)  # vLLM: several prompts per request (`autocog.lm.openai.ids`)
        if by_ids is not None:
            return by_ids
        self._pick_strategy(self.strategy)
        self.ambiguous_texts()

        def one(r: ScoreRequest) -> ChoiceResult:
            kwargs = {"end": r.end} if r.end is not None else {}
            return self.choice_distribution(r.prompt, r.choices, normalization=r.normalization, **kwargs)

        if len(requests) == 1 or self.concurrency == 1:
            return [one(r) for r in requests]
        with ThreadPoolExecutor(min(self.concurrency, len(requests)), thread_name_prefix="autocog-batch") as pool:
            return list(pool.map(one, requests))

    @property
    def unconditional_prompt(self) -> str:
        """The context of an unconditional score (``pmi``), as the local backends: the model's BOS, else its EOS,
        as text (``""`` when the server adds BOS; `autocog.lm.openai.special`); ``unconditional_prompt=``
        overrides it."""
        if self._unconditional is None:
            self._unconditional = unconditional_text(self)
        return self._unconditional

    def _pick_strategy(self, strategy: str) -> str:
        if strategy == "echo" and self.chat:  # known without probing: said before anything is sent
            raise StrategyUnavailableError(
                f"strategy 'echo' cannot run on {self.base_url} (model {self.model!r}): the chat endpoint has no echo"
            )
        caps = self.probe()
        if strategy == "echo":
            if not caps["echo"]:
                raise StrategyUnavailableError(
                    f"strategy 'echo' cannot run on {self.base_url} (model {self.model!r}): {caps['echo_reason']}"
                )
            return "echo"
        if strategy == "descent" or not caps["echo"]:
            if caps["bias"] is None:
                raise StrategyUnavailableError(
                    f"strategy 'descent' cannot run on {self.base_url} (model {self.model!r}): {caps['bias_reason']}"
                )
            return "descent"
        return "echo"
