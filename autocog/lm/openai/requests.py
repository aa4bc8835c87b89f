"""`Requests`: every request the backend sends (one next token, a walk, an echo, a generation), built once for
the session's dialect and endpoint, and the answer parsed (`autocog.lm.openai.parsing`). Completions and streams
share one builder (`Requests.generation`).

>>> session.requests.next("The capital of France is", k=5).top          # doctest: +SKIP
{' Paris': -0.8, ' the': -2.1, ...}
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence, Union

from autocog.errors import StrategyUnavailableError
from autocog.lm.openai.parsing import Echo, Next, gbnf_literal, parse_chat_next, parse_echo, parse_next, parse_walk
from autocog.lm.openai.plans import Plan, Post, T, run
from autocog.lm.openai.transport import in_context

if TYPE_CHECKING:  # pragma: no cover
    from autocog.lm.openai.session import Session

BIAS = 100.0  # the largest logit_bias OpenAI accepts
WHOLE_VOCABULARY = 1 << 20  # top_logprobs that a llama.cpp server answers with every token's log-prob
Prompt = Union[str, list[list[int]]]  # a text, or token-id prompts (vLLM)


@dataclass
class Generation:
    """One generation request: ``kind`` (``"chat"`` or ``"completions"``), the client's ``create`` keyword
    arguments, and the text ``prompt`` a completion evaluates (None on the chat endpoint)."""

    kind: str
    params: dict
    prompt: Optional[str]


class Requests:
    """The requests of one `Session` (they read its dialect, endpoint, model and tokenizer)."""

    def __init__(self, session: Session):
        self.session = session

    def next(
        self,
        context: Any,
        bias: Optional[dict[int, float]] = None,
        k: Optional[int] = None,
        fresh: bool = False,
        partial: str = "refuse",
    ) -> Next:
        """One next-token request (greedy, ``max_tokens=1``) with the top ``k`` log-probs, optionally biased.

        ``fresh`` (servers with a prompt cache): first send a one-token request that shares no prefix with
        ``context``, the two under the transport's ``serial`` lock so that no other thread's request comes
        between them. llama_cpp.server keeps the previous prompt's KV and evaluates only the tokens past the
        common prefix, the last one alone when ``context`` ends within it; on quantized weights a one-token batch
        rounds differently from longer ones (measured: 0.02 nats on SmolLM2 Q4_1 for "iv" after " Ky"), while
        echo and `LLaMa` evaluate batches. Echo's fills ask for a fresh evaluation so that they agree with them.
        ``partial``: what to do with biased tokens that end inside a UTF-8 character (`safe_bias`):
        ``"refuse"``, ``"drop"`` or ``"allow"``."""
        session = self.session
        if fresh and session.dialect.prompt_cache:
            if bias and partial != "allow":
                bias = self.safe_bias(bias, partial == "drop")
            tail = self.last_tokens_text(context)  # tokenized before the lock: no other lock taken under it
            with (
                session.transport.serial or nullcontext()
            ):  # the reset and this request adjacent on the server (docs/openai.md)
                if self.shares_last_tokens(context, tail):
                    self.completion("." if context.startswith("\n") else "\n", {"max_tokens": 1}, {})
                return self.next(context, bias, k, partial="allow")
        return self.run(self.next_plan(context, bias, k, partial))

    def next_plan(
        self, context: Any, bias: Optional[dict[int, float]] = None, k: Optional[int] = None, partial: str = "refuse"
    ) -> Plan[Next]:
        """`next` (not ``fresh``: its two requests stay adjacent under the sync transport's lock) as a request
        plan (`autocog.lm.openai.plans`)."""
        session = self.session
        if bias and partial != "allow":
            bias = self.safe_bias(bias, partial == "drop")
        k = k or session.top_logprobs
        body: dict = {"max_tokens": 1, "temperature": 0.0}
        if bias:
            body["logit_bias"] = {str(t): float(b) for t, b in bias.items()}
        extra = session.dialect.sampling_extras({"top_k": 0})
        if session.chat:
            body.update(logprobs=True, top_logprobs=k)
            return parse_chat_next((yield Generation("chat", self.params(context, body, extra, chat=True), None)))
        body["logprobs"] = k
        return parse_next((yield self.completion_request(context, body, extra)), session.base_url)

    def safe_bias(self, bias: dict[int, float], drop: bool) -> dict[int, float]:
        """``bias`` without the tokens that end inside a UTF-8 character (where the dialect lists them):
        llama-cpp-python generates on until the character is complete, and a bias that keeps choosing such a
        token never lets it (the request runs the server out of context). ``drop``: leave them out; else refuse."""
        vocabulary = self.session.vocabulary()
        if vocabulary is None:
            return bias
        cut = [t for t in bias if t in vocabulary.trailing or t >= len(vocabulary.names)]
        if cut and not drop:
            raise StrategyUnavailableError(
                f"token {cut[0]} ends inside a UTF-8 character: forcing it through logit_bias would make "
                f"llama_cpp.server at {self.session.base_url} generate until its context is full; it cannot be "
                "scored on its own there"
            )
        return {t: b for t, b in bias.items() if t not in cut}

    def walk_plan(
        self, context: str, suffixes: list[str], bias: dict[int, float], max_tokens: int, k: int
    ) -> Plan[list[tuple[str, Optional[float], dict]]]:
        """A greedy completion of ``context`` constrained to one of ``suffixes`` (a GBNF grammar), with ``bias``
        on the suffixes' tokens so that their own tokenization wins: [(token text, its log-prob, the top-``k``
        log-probs at that step)]. llama.cpp reports log-probs before the bias and the grammar. A request plan
        (`autocog.lm.openai.plans`)."""
        body: dict = {
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "logprobs": k,
            "logit_bias": {str(t): float(b) for t, b in bias.items()},
        }
        extra = dict(
            self.session.dialect.sampling_extras({"top_k": 0}),
            grammar="root ::= " + " | ".join(gbnf_literal(x) for x in dict.fromkeys(suffixes)),
        )
        return parse_walk((yield self.completion_request(context, body, extra)), self.session.base_url)

    def echo(self, text: str, top: int) -> Echo:
        """``text`` echoed back with the top ``top`` log-probs of each of its tokens."""
        return self.run(self.echo_plan(text, top))

    def echo_plan(self, text: str, top: int) -> Plan[Echo]:
        """`echo` as a request plan (`autocog.lm.openai.plans`)."""
        body = {"max_tokens": 1, "temperature": 0.0, "echo": True, "logprobs": top}
        extra = self.session.dialect.sampling_extras({"top_k": 0})
        data = yield self.completion_request(text, body, extra)
        return parse_echo(data, text, self.session.base_url)

    def last_tokens_text(self, context: str) -> Optional[int]:
        """The length of the text of ``context``'s last two tokens (None: fewer than two tokens)."""
        tokenizer = self.session.tokenizer
        ids = tokenizer.encode(context)
        return len(tokenizer.decode(ids[-2:])) if len(ids) >= 2 else None

    def shares_last_tokens(self, context: str, tail: Optional[int]) -> bool:
        """Whether the server's cached prompt may hold part of ``context``: the last prompt sent shares a prefix
        with it (then the server would evaluate only the tokens past that prefix, a batch that rounds differently
        from the whole prompt's). An unknown state, or a ``context`` of fewer than two tokens (``tail`` None),
        counts as shared. (An earlier form reset only when the prefix reached ``context``'s last two tokens, of
        ``tail`` characters; the numbers pinned by the tests, within 0.06 nats of `LLaMa` on SmolLM2 Q4_1, are
        those of this one.)"""
        last = self.session.transport.last_prompt
        if last is None or tail is None:
            return True
        return len(os.path.commonprefix([last, context])) > 0  # noqa: RUF071 (texts, not paths)

    # --- generations ----------------------------------------------------------------------------------
    def generation(self, prompt: str, settings: Mapping[str, Any], stops: Sequence[str], stream: bool) -> Generation:
        """The request of `OpenAI.complete` (``stream=False``) and `OpenAI.stream`: sampling settings, the stop
        strings the dialect takes, and on servers that report them (``stop_tokens``) the tokens produced, so
        that a stop string can be told from EOS (`autocog.lm.openai.stops`). Refuses what the server cannot do
        (``min_p`` on OpenAI's API) before anything is sent."""
        session = self.session
        dialect = session.dialect
        extra = dialect.sampling_extras(settings)
        body: dict = {
            "max_tokens": int(settings["max_tokens"]),
            "temperature": float(settings["temperature"]),
            "top_p": float(settings["top_p"]),
        }
        if stream:
            body["stream"] = True
        if settings["seed"] is not None:
            body["seed"] = int(settings["seed"])
        told = dialect.server_stops(stops, stream) if stops else []
        if told:
            body["stop"] = told
        if dialect.stop_tokens and stops and not stream:
            body.update({"logprobs": True, "top_logprobs": 0} if session.chat else {"logprobs": 0})
        kind = "chat" if session.chat else "completions"
        return Generation(kind, self.params(prompt, body, extra), None if session.chat else prompt)

    # --- the sync executor of request plans ------------------------------------------------------------
    def run(self, plan: Plan[T]) -> T:
        """``plan`` executed by the sync transport: its requests sent by `execute`, its `Parallel` sub-plans
        ``concurrency`` at a time (`fan`); its result."""
        return run(plan, self.execute, self.fan)

    def execute(self, request: Union[Generation, Post]) -> Any:
        """The decoded answer of one request of a plan."""
        if isinstance(request, Post):
            return self.session.transport.post(request.url, request.body, kind=request.kind)
        return self.send(request)

    def fan(self, fn: Callable[[Any], Any], items: list, batch: bool) -> list:
        """``[fn(x) for x in items]``, ``concurrency`` at a time: on the transport's pool, or for a ``batch``
        (whose calls fan out on that pool themselves) on a pool of its own."""
        transport = self.session.transport
        if not batch:
            return transport.map(fn, items)
        if len(items) <= 1 or transport.limit == 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(min(transport.limit, len(items)), thread_name_prefix="autocog-batch") as pool:
            return list(pool.map(in_context(fn), items))

    def send(self, generation: Generation) -> Any:
        """The decoded answer of a generation that is not streamed."""
        endpoint = self.endpoint(generation.kind)
        return self.session.transport.call(
            "completion" if generation.kind == "completions" else "chat completion",
            generation.kind,
            lambda t: endpoint.with_raw_response.create(**generation.params, timeout=t).http_response,
            prompt=generation.prompt,
        )

    def open(self, generation: Generation) -> Any:
        """The open stream of a generation (retried until it opens)."""
        endpoint = self.endpoint(generation.kind)
        return self.session.transport.open(
            f"streamed {generation.kind}",
            generation.kind,
            lambda t: endpoint.create(**generation.params, timeout=t),
            prompt=generation.prompt,
        )

    def completion(self, prompt: Prompt, body: dict, extra: dict) -> Any:
        """A completions request (``prompt``: a text, or token-id prompts) with ``extra`` as ``extra_body``."""
        return self.send(self.completion_request(prompt, body, extra))

    def completion_request(self, prompt: Prompt, body: dict, extra: dict) -> Generation:
        """The `Generation` that `completion` sends (for request plans, `autocog.lm.openai.plans`)."""
        text = prompt if isinstance(prompt, str) else None
        return Generation("completions", self.params(prompt, body, extra, chat=False), text)

    def chat(self, prompt: str, body: dict, extra: dict) -> Any:
        """A chat completions request: ``prompt`` as messages (`autocog.lm.openai.chat.messages`)."""
        return self.send(Generation("chat", self.params(prompt, body, extra, chat=True), None))

    def params(self, prompt: Any, body: dict, extra: dict, chat: Optional[bool] = None) -> dict:
        session = self.session
        chat = session.chat if chat is None else chat
        field = {"messages": session.renderer.messages(prompt)} if chat else {"prompt": prompt}
        params = dict(model=session.model, **field, **body)
        if extra:
            params["extra_body"] = extra
        return params

    def endpoint(self, kind: str) -> Any:
        client = self.session.client
        return client.chat.completions if kind == "chat" else client.completions
