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

from typing import Any, AsyncIterator, Iterator, Optional, Sequence

import numpy as np

from autocog.core.chat import is_messages
from autocog.core.checks import check_prompt
from autocog.core.retry import Retry
from autocog.core.sampling import SamplingParams
from autocog.core.stops import as_stop_list
from autocog.core.types import ChoiceResult, ScoreRequest, Stop
from autocog.errors import ContextLengthError, StrategyUnavailableError
from autocog.lm.base import LM
from autocog.lm.openai.aio import AsyncCalls
from autocog.lm.openai.chat import renders_prompt
from autocog.lm.openai.dialects import SERVERS, Dialect
from autocog.lm.openai.id_rows import empty_prompt_error
from autocog.lm.openai.plans import Parallel, Plan
from autocog.lm.openai.scorer import Scorer, check_strategy
from autocog.lm.openai.session import Session, Settings
from autocog.lm.openai.stops import complete
from autocog.lm.openai.streaming import open_stream
from autocog.lm.openai.tokenizers import Tokenizer
from autocog.lm.openai.transport import Transport, make_client
from autocog.lm.openai.vocabulary import Vocabulary
from autocog.lm.scoring import check_request, check_requests


class OpenAI(LM):
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
    * ``server``: ``"auto"`` (detect), or a dialect's name: ``"openai"``, ``"llama.cpp"`` (llama_cpp.server),
      ``"llama-server"`` (llama.cpp's C++ server), ``"vllm"``, ``"generic"``
      (`autocog.lm.openai.dialects`).
    * ``timeout`` (seconds per attempt), ``max_retries``, ``max_retry_time`` (seconds for all attempts and
      sleeps), ``backoff``/``max_backoff`` (first and longest sleep); ``concurrency`` (alias ``parallel``, default
      8): requests in flight at once, for one call's requests and for `score_batch`.
    * ``completion_kwargs``: defaults for `complete` (``max_tokens`` 64, greedy), as for the local backends.

    ``requests`` counts what was sent: ``completions``, ``chat``, ``tokenize``, ``detokenize``, ``probe``
    (server detection) and ``attempts`` (retries included). The parts: ``session`` (`Session`: the transport,
    the dialect, the tokenizer, the caches) and ``scorer`` (`Scorer`: the strategies).

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
        self.client, self.owns_client = make_client(client, base_url, api_key, timeout)
        self.concurrency = max(
            1, int(concurrency if concurrency is not None else parallel if parallel is not None else 8)
        )
        retry = Retry(
            max_retries=int(max_retries),
            backoff=float(backoff),
            max_backoff=float(max_backoff),
            max_time=float(max_retry_time),
            jitter=True,
        )
        self.transport = Transport(self.client, retry, timeout, self.concurrency)
        self.base_url = self.transport.base_url
        self.strategy = check_strategy(strategy)
        if server not in SERVERS:
            raise ValueError(f"unknown server {server!r}: expected one of {', '.join(SERVERS)}")
        settings = Settings(
            model=model,
            server=server,
            chat=chat,
            system=system,
            tokenizer=tokenizer,
            check_tokenizer=check_tokenizer,
            top_logprobs=top_logprobs,
            unconditional_prompt=unconditional_prompt,
            chat_template=chat_template,
            concurrency=self.concurrency,
            cache_size=int(cache_size),
        )
        self.completion_kwargs = SamplingParams.from_settings(completion_kwargs or {}).as_dict()
        self.session = Session(self.client, self.transport, settings)
        self.scorer = Scorer(self.session)
        self.aio = AsyncCalls(self)  # the async API (`autocog.lm.openai.aio`)

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
        self.aio.close()
        if self.owns_client:
            self.client.close()

    def __repr__(self) -> str:
        return f"OpenAI(model={self.transport.model_name!r}, base_url={self.base_url!r})"

    # --- configuration, resolved lazily by the session --------------------------------------------------
    @property
    def root_url(self) -> str:
        return self.session.root_url

    @property
    def model(self) -> str:
        return self.session.model

    @property
    def dialect(self) -> Dialect:
        """The server's `Dialect` (detected on first use unless ``server=`` named it)."""
        return self.session.dialect

    @property
    def server(self) -> str:
        """The dialect's name: ``"openai"``, ``"llama.cpp"``, ``"vllm"`` or ``"generic"``."""
        return self.session.dialect.name

    @property
    def chat(self) -> bool:
        return self.session.chat

    @property
    def system(self) -> Optional[str]:
        return self.session.settings.system

    @property
    def chat_template(self) -> Optional[str]:
        return self.session.settings.chat_template

    @chat_template.setter
    def chat_template(self, template: Optional[str]) -> None:
        self.session.settings.chat_template = template

    @property
    def top_logprobs(self) -> int:
        return self.session.top_logprobs

    @property
    def wide(self) -> bool:
        """Whether the server answers any number of top log-probs (llama.cpp): a whole row per request."""
        return self.session.dialect.wide

    @property
    def n_ctx(self) -> Optional[int]:
        """The context one sequence holds, where the server says it (llama-server: a slot's ``n_ctx``; vLLM:
        ``max_model_len``), else None."""
        return self.scorer.by_ids.context_length()

    @property
    def tokenizer(self) -> Tokenizer:
        return self.session.tokenizer

    @property
    def requests(self) -> Any:
        """What was sent, by kind (see `Transport`)."""
        return self.transport.requests

    @property
    def cache_size(self) -> int:
        return self.session.scored.maxsize

    def clear_cache(self) -> None:
        """Forget the texts already scored (they are kept across calls; see ``cache_size``)."""
        self.session.scored.clear()

    def post_json(self, url: str, body: dict) -> Any:
        """POST JSON with the retry policy (the server tokenizers, structured output); counted in ``requests``
        by endpoint (``chat``, ``completions``, ``tokenize``...) like every other request."""
        return self.transport.post(url, body)

    # --- what the server can do ---------------------------------------------------------------------------
    def probe(self) -> dict:
        """What this server can do, measured once (`autocog.lm.openai.capabilities`): ``echo`` (``"direct"``,
        ``"shifted"`` or None, with ``echo_reason``), ``bias`` (``"pre"``, ``"post"`` or None, with
        ``bias_reason``) and the numbers compared.

        >>> lm.probe()["echo"]          # doctest: +SKIP
        'shifted'
        """
        return self.session.probe()

    def check_tokenizer(self) -> None:
        """Compare the local tokenizer with the server once; raises `TokenizerMismatchError`."""
        self.session.capabilities.check_tokenizer()

    def vocabulary(self) -> Optional[Vocabulary]:
        """Every token's name in ``top_logprobs`` and the tokens that end inside a character, on llama.cpp
        servers (None elsewhere; the dialect's `~autocog.lm.openai.dialects.base.Dialect.vocabulary`)."""
        return self.session.vocabulary()

    def ambiguous_texts(self) -> frozenset:
        """Token texts that name more than one token id in this server's ``top_logprobs``.

        llama_cpp.server keys ``top_logprobs`` by each token's text with invalid UTF-8 bytes dropped, and a
        later (less likely) token overwrites an earlier one of the same text: on SmolLM2, ``" "`` also names 37
        tokens such as ``b" \\xe2\\x80"``, so the value under ``" "`` can be theirs. A value read by such a text is
        not trusted (it is asked for by token id: a biased request). Empty on other servers.

        >>> sorted(lm.ambiguous_texts())      # SmolLM2 on llama_cpp.server    # doctest: +SKIP
        ['', ' ', 'о', 'י']
        """
        return self.session.ambiguous_texts()

    @property
    def unconditional_prompt(self) -> str:
        """The context of an unconditional score (``pmi``), as the local backends: the model's BOS, else its EOS,
        as text (``""`` when the server adds BOS; `autocog.lm.openai.special`); ``unconditional_prompt=``
        overrides it."""
        return self.session.unconditional_prompt

    # --- the LM interface ---------------------------------------------------------------------------------
    def tokenize(self, text: str, bos: bool = False) -> list[int]:
        """Token ids of ``text`` with the configured tokenizer; ``bos=True`` prepends the server's BOS if any."""
        return self.session.tokenize(text, bos)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.session.tokenizer.decode(tokens)

    def render_prompt(self, prompt: Any) -> str:
        """`LM.render_prompt` for servers: a str as is (less a leading BOS text on a completions endpoint);
        messages as a `ChatPrompt` on the chat endpoint, else rendered with `apply_chat_template`
        (`autocog.lm.openai.chat.ChatRenderer.render`)."""
        if not is_messages(prompt):
            prompt = super().render_prompt(prompt)
        return self.session.renderer.render(prompt)

    def apply_chat_template(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        return self.session.renderer.apply_chat_template(messages, add_generation_prompt)

    def complete(self, prompt: Any, stop: Stop = "\n", **kwargs: Any) -> str:
        """Generate after ``prompt`` (greedy by default; ``temperature``, ``top_p``, ``top_k``, ``seed``), up to
        ``max_tokens`` (alias ``max_new_tokens``), EOS or a stop string; the text ends with the stop string
        exactly when generation ended on it (`autocog.lm.openai.stops`).

        >>> lm.complete("1, 2, 3,", stop=",", max_tokens=8)     # doctest: +SKIP
        ' 4,'
        """
        return complete(self.session, *self.completion_inputs(prompt, stop, kwargs))

    def stream(self, prompt: Any, stop: Stop = "\n", **kwargs: Any) -> Iterator[str]:
        """`complete`'s text in pieces as the server streams them (``stream=True``):
        ``"".join(lm.stream(...)) == lm.complete(...)``, with the same stop contract (`autocog.lm.openai.streaming`).
        Inputs are checked and the stream is opened now; one that breaks later raises `RequestFailedError`.

        >>> "".join(lm.stream("1, 2, 3,", stop=",", max_tokens=8))     # doctest: +SKIP
        ' 4,'
        """
        return open_stream(self.session, *self.completion_inputs(prompt, stop, kwargs))

    def completion_inputs(self, prompt: Any, stop: Stop, kwargs: dict) -> tuple[str, list[str], dict]:
        """(the rendered and checked prompt, the stop strings, the sampling settings) of `complete` and `stream`
        (and of their async forms)."""
        prompt = self.render_prompt(prompt)
        check_prompt(prompt)
        return prompt, as_stop_list(stop), SamplingParams.from_settings(kwargs, self.completion_kwargs).as_dict()

    def greedy(self, prompt: Any) -> np.ndarray:
        """Log-probs of the next token after ``prompt`` (a text, messages or token ids; BOS added to a text as the
        local backends add it): a float64 array over the vocabulary, as `autocog.lm.GreedyLM.greedy`. Exact, one
        request, where the server reports the whole row by token id (llama-server: ``n_probs`` = the vocabulary,
        before sampling); elsewhere `StrategyUnavailableError` (a top-N row with the rest bounded is not exact).

        >>> int(lm.greedy("The capital of France is").argmax()) == lm.tokenize(" Paris")[0]   # doctest: +SKIP
        True
        """
        session = self.session
        if isinstance(prompt, (list, tuple)) and all(isinstance(t, int) for t in prompt):
            ids = [int(t) for t in prompt]
        else:
            text = self.render_prompt(prompt)
            check_prompt(text)
            ids = session.tokenize(str(text), bos=True)
        if not ids:
            raise empty_prompt_error("")
        n_ctx = self.n_ctx
        if n_ctx is not None and len(ids) >= n_ctx:
            raise ContextLengthError(
                f"the prompt's {len(ids)} tokens leave no room for the next one: the context on {self.base_url} "
                f"holds {n_ctx} tokens"
            )
        if not session.dialect.id_rows:
            raise StrategyUnavailableError(
                f"greedy needs the whole next-token row by token id; the server at {self.base_url} "
                f"({session.dialect.name}) reports only the top log-probs by text: the rest is bounded, not exact"
            )
        return self.scorer.by_ids.rows.row(ids)

    # --- choices --------------------------------------------------------------------------------------------
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
        return self.session.requests.run(
            self.distribution_plan(
                prompt,
                choices,
                normalization=normalization,
                strategy=strategy,
                end=end,
                exhaustive=exhaustive,
                search=search,
                **kwargs,
            )
        )

    def distribution_plan(
        self,
        prompt: Any,
        choices: Sequence[str],
        normalization: Optional[str] = None,
        strategy: Optional[str] = None,
        end: Optional[str] = None,
        exhaustive: bool = False,
        search: str = "best-first",
        **kwargs: Any,
    ) -> Plan[ChoiceResult]:
        """`choice_distribution` (``prompt`` rendered) as a request plan (`autocog.lm.openai.plans`), run by it
        and by `achoice_distribution`."""
        if kwargs:
            raise TypeError(f"unexpected argument(s) to choose: {', '.join(kwargs)}")
        check_prompt(prompt)  # messages were rendered before this point (`renders_prompt`)
        checked = check_request(self, ScoreRequest(prompt, choices, normalization, end), render=False)
        return (yield from self.scorer.distribution_plan(checked, strategy or self.strategy, exhaustive, search))

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
        return self.session.requests.run(self.batch_plan(list(requests)))

    def batch_plan(self, requests: list[ScoreRequest]) -> Plan[list[ChoiceResult]]:
        """`score_batch` as a request plan (`autocog.lm.openai.plans`), run by it and by `ascore_batch`: by token
        ids, every pack of the batch yielded together; else one `distribution_plan` per request, together."""
        if not requests:
            return []
        checked, _ = check_requests(self, requests, render=False)  # a bad request fails before any is sent
        by_ids = self.scorer.by_ids
        why = by_ids.applies(checked, self.strategy)
        if why is not None:  # vLLM, llama-server: several prompts per request (`autocog.lm.openai.ids`)
            return (yield from by_ids.score_plan(checked, self.strategy, why))
        self.scorer.pick(self.strategy)
        self.session.ambiguous_texts()
        plans = [
            self.distribution_plan(self.render_prompt(r.prompt), r.choices, normalization=r.normalization, end=r.end)
            for r in requests
        ]
        return (yield Parallel(plans, batch=True))

    # --- the async API (docs/async.md, `autocog.lm.openai.aio`) ------------------------------------------------
    async def acomplete(self, prompt: Any, stop: Stop = "\n", **kwargs: Any) -> str:
        """`complete` awaited, sent natively by ``AsyncOpenAI`` (the same requests, retries and numbers)."""
        return await self.aio.complete(prompt, stop, kwargs)

    def astream(self, prompt: Any, stop: Stop = "\n", **kwargs: Any) -> AsyncIterator[str]:
        """`stream` as an async iterator, streamed natively by ``AsyncOpenAI``; the stream opens at the first
        piece (inputs are checked then)."""
        return self.aio.stream(prompt, stop, kwargs)

    async def achoice_distribution(
        self, prompt: Any, choices: Sequence[str], normalization: Optional[str] = None, **kwargs: Any
    ) -> ChoiceResult:
        """`choice_distribution` awaited: the same plan (`distribution_plan`), its requests sent by
        ``AsyncOpenAI`` (docs/async.md says which stay sync)."""

        def plan() -> Plan[ChoiceResult]:
            rendered = self.render_prompt(prompt)  # in a worker thread, as every step of the plan
            return (yield from self.distribution_plan(rendered, choices, normalization=normalization, **kwargs))

        return await self.aio.score(plan())

    async def achoose(
        self, prompt: Any, choices: Sequence[str], normalization: Optional[str] = None, **kwargs: Any
    ) -> int:
        return (await self.achoice_distribution(prompt, choices, normalization=normalization, **kwargs)).index

    async def achoice_logprobs(self, prompt: Any, choices: Sequence[str], **kwargs: Any) -> list[list[float]]:
        return (await self.achoice_distribution(prompt, choices, **kwargs)).token_logprobs

    async def ascore_batch(
        self, requests: Sequence[ScoreRequest], max_batch_tokens: Optional[int] = None
    ) -> list[ChoiceResult]:
        """`score_batch` awaited: the same plan (`batch_plan`), its requests sent by ``AsyncOpenAI``,
        ``concurrency`` in flight."""
        return await self.aio.score(self.batch_plan(list(requests)))

    async def aclose(self) -> None:
        """Close the running event loop's ``AsyncOpenAI`` client (`close` closes the rest)."""
        await self.aio.transport.aclose()
