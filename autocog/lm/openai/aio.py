"""The async API of `OpenAI` (docs/async.md): requests sent natively with ``openai.AsyncOpenAI``.

* `AsyncTransport`: the async twin of `Transport`. One ``AsyncOpenAI`` (one connection pool) per event loop, made
  from the sync client's address and key with its own retries off; the same `Retry` policy (``Retry.acall``),
  the same transient statuses, ``Retry-After`` and throttling pause (shared with the sync transport), the same
  counters (``lm.requests``), and ``concurrency`` requests in flight at most (an ``asyncio.Semaphore`` per loop).
  On servers that take one request at a time (the dialect's ``serial``: llama_cpp.server) every async request
  also holds the sync transport's ``serial`` lock, so sync and async callers never interleave there.
* `AsyncRequests`: sends a `~autocog.lm.openai.requests.Generation` or a `~autocog.lm.openai.plans.Post` and
  runs request plans (`autocog.lm.openai.plans`), the logic written once for both executors: every step in a
  worker thread (a step may resolve the session on first use, tokenize, or send what a strategy still sends
  itself), every request awaited on ``AsyncOpenAI``, a `~autocog.lm.openai.plans.Parallel` as ``asyncio.gather``.
* `AsyncCalls`: what `OpenAI.acomplete` / ``astream`` / ``achoose`` ... do: the sync calls' plans (completion,
  stream, choice distribution, batch), ``concurrency`` scoring calls at a time per loop (docs/async.md says what
  is still sent by the sync transport from a step: the descent, echo's fills, tokenizer requests).

>>> lm = OpenAI(base_url="http://127.0.0.1:8000/v1")                       # doctest: +SKIP
>>> await asyncio.gather(*(lm.acomplete("1, 2,", stop=",") for _ in range(20)))   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, nullcontext
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Optional, TypeVar

from autocog.lm.aio import ModelLock
from autocog.lm.openai.plans import Done, Parallel, Plan, Post, step
from autocog.lm.openai.requests import Generation
from autocog.lm.openai.stops import complete_plan
from autocog.lm.openai.streaming import Stream, stream_request
from autocog.lm.openai.transport import CACHE_NEUTRAL, CALL_COUNTER, Transport

if TYPE_CHECKING:  # pragma: no cover
    from autocog.lm.openai.client import OpenAI
    from autocog.lm.openai.session import Session

T = TypeVar("T")
Send = Callable[[Any, float], Awaitable[Any]]  # (the loop's AsyncOpenAI, timeout) -> the raw answer


class AsyncTransport:
    """Async requests beside a sync `Transport` (see the module docstring); ``client``: the sync ``openai.OpenAI``
    whose address, key, organization and project the async clients copy."""

    def __init__(self, transport: Transport, client: Any):
        self.transport = transport
        self.sync_client = client
        self._clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # loop -> AsyncOpenAI
        self._slots: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # loop -> asyncio.Semaphore
        self._guard = threading.Lock()
        self.serial = SerialHold()

    def client(self) -> Any:
        """The running loop's ``AsyncOpenAI`` (made on first use)."""

        def make() -> Any:
            sync = self.sync_client
            return self.transport.openai.AsyncOpenAI(
                api_key=sync.api_key,
                organization=sync.organization,
                project=sync.project,
                base_url=sync.base_url,
                timeout=self.transport.timeout,
                max_retries=0,
            )

        return per_loop(self._clients, self._guard, make)

    def slots(self) -> asyncio.Semaphore:
        """The running loop's semaphore of ``concurrency`` requests in flight."""
        return per_loop(self._slots, self._guard, lambda: asyncio.Semaphore(self.transport.limit))

    async def aclose(self) -> None:
        """Close the running loop's client (its connection pool)."""
        loop = asyncio.get_running_loop()
        with self._guard:
            client = self._clients.pop(loop, None)
        if client is not None:
            await client.close()

    async def call(
        self,
        what: str,
        kind: str,
        send: Send,
        retry: bool = True,
        prompt: Optional[str] = None,
        raw: bool = False,
    ) -> Any:
        """`Transport.call` awaited: the decoded JSON answer (``raw``: what ``send`` returned, e.g. a stream)."""
        transport = self.transport
        transport.count(kind)
        held = self.serial.held(transport.serial) if transport.serial is not None else nullcontext()
        async with held:
            if kind in CACHE_NEUTRAL:
                return await self._retried(what, send, retry, raw)
            transport.last_prompt = None
            answer = await self._retried(what, send, retry, raw)
            transport.last_prompt = prompt
            return answer

    async def _retried(self, what: str, send: Send, retry: bool, raw: bool) -> Any:
        transport = self.transport
        began = time.monotonic()

        async def attempt() -> Any:
            timeout = transport.attempt_timeout(began)
            transport.count("attempts")
            async with self.slots():
                pause = transport.throttle_pause()
                if pause > 0:
                    await asyncio.sleep(pause)
                with transport.flight():
                    try:
                        response = await send(self.client(), timeout)
                    except transport.openai.APIError as error:
                        failure = transport.failure(error, what, timeout, retry)
                        if failure is None:
                            raise
                        raise failure from None
            return response if raw else transport.decode(response, what)

        policy, options = transport.retry_plan(what, retry)
        return await policy.acall(attempt, **options)


def per_loop(table: weakref.WeakKeyDictionary, guard: threading.Lock, make: Callable[[], T]) -> T:
    """``table``'s entry for the running event loop, made by ``make()`` on first use (under ``guard``)."""
    loop = asyncio.get_running_loop()
    with guard:
        value = table.get(loop)
        if value is None:
            value = table[loop] = make()
        return value


class SerialHold:
    """Holds a sync transport's ``serial`` lock (an ``RLock``, owned by a thread) for coroutines: it is taken and
    released in one thread of its own, and coroutines queue for it first on a `ModelLock` (the ``RLock`` alone
    would let that one thread in again)."""

    def __init__(self) -> None:
        self.queue = ModelLock()
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="autocog-serial")

    @asynccontextmanager
    async def held(self, serial: Any) -> AsyncIterator[None]:
        async with self.queue:
            taking = self.thread.submit(serial.acquire)
            try:
                await asyncio.shield(asyncio.wrap_future(taking))
                yield
            finally:
                self.thread.submit(serial.release)  # after `taking` (one thread, in order), even if cancelled


class AsyncRequests:
    """`Requests.send` and `Requests.open` awaited, and the async executor of request plans; ``pool``: the
    worker threads that run the plans' steps."""

    def __init__(self, session: Session, transport: AsyncTransport, pool: ThreadPoolExecutor):
        self.session = session
        self.transport = transport
        self.pool = pool

    async def send(self, generation: Generation) -> Any:
        async def post(client: Any, timeout: float) -> Any:
            answer = await endpoint(client, generation.kind).with_raw_response.create(
                **generation.params, timeout=timeout
            )
            return answer.http_response

        what = "completion" if generation.kind == "completions" else "chat completion"
        return await self.transport.call(what, generation.kind, post, prompt=generation.prompt)

    async def open(self, generation: Generation) -> Any:
        """The open ``AsyncStream`` of a streamed generation (retried until it opens)."""

        async def post(client: Any, timeout: float) -> Any:
            return await endpoint(client, generation.kind).create(**generation.params, timeout=timeout)

        return await self.transport.call(
            f"streamed {generation.kind}", generation.kind, post, prompt=generation.prompt, raw=True
        )

    async def post(self, request: Post) -> Any:
        """`Transport.post` awaited: the decoded JSON answer."""
        transport = self.transport.transport

        async def post(client: Any, timeout: float) -> Any:
            options = {"timeout": timeout}
            return await client.post(request.url, body=request.body, cast_to=transport.response_type, options=options)

        return await self.transport.call(f"POST {request.url.rsplit('/', 1)[-1]}", request.kind, post)

    async def run(self, plan: Plan[T], within: Optional[contextvars.Context] = None) -> T:
        """``plan`` executed: its steps in the worker threads, in a context of its own (a copy of ``within``, else
        of the caller's: a call's request counter, `CALL_COUNTER`, set by a step, counts its requests); its
        requests awaited (`answer`). An error is thrown into the plan where it waits, as in the sync executor."""
        context = within.copy() if within is not None else contextvars.copy_context()
        loop = asyncio.get_running_loop()

        async def advance(answer: Any = None, first: bool = False, error: Optional[BaseException] = None) -> Any:
            return await loop.run_in_executor(self.pool, context.run, step, plan, answer, first, error)

        request = await advance(first=True)
        while not isinstance(request, Done):
            answer, failed = None, None
            try:
                answer = await self.answer(request, context)
            except Exception as error:
                failed = error
            except BaseException:  # cancelled while a request was out: the plan's cleanup in its own context
                context.run(plan.close)
                raise
            request = await advance(answer, error=failed)
        return request.value

    async def answer(self, request: Any, context: contextvars.Context) -> Any:
        """The answer to one request of a plan run in ``context``: a `Parallel`'s sub-plans together (one after
        another at ``concurrency=1``, as the sync transport runs them), the first error in order raised."""
        if isinstance(request, Parallel):
            if self.transport.transport.limit == 1:
                return [await self.run(sub, context) for sub in request.plans]
            done = await asyncio.gather(*(self.run(sub, context) for sub in request.plans), return_exceptions=True)
            for result in done:
                if isinstance(result, BaseException):
                    raise result
            return done
        token = CALL_COUNTER.set(context.get(CALL_COUNTER))  # counted as the plan's step would count it
        try:
            return await (self.post(request) if isinstance(request, Post) else self.send(request))
        finally:
            CALL_COUNTER.reset(token)


def endpoint(client: Any, kind: str) -> Any:
    return client.chat.completions if kind == "chat" else client.completions


class AsyncCalls:
    """The async calls of one `OpenAI` (see the module docstring); ``pool``: the worker threads of the plans'
    steps; at most ``concurrency`` scoring calls at a time per event loop (`score`)."""

    def __init__(self, lm: OpenAI):
        self.lm = lm
        self.session = lm.session
        self.transport = AsyncTransport(lm.transport, lm.client)
        self.pool = ThreadPoolExecutor(max(4, 2 * lm.concurrency), thread_name_prefix="autocog-aplan")
        self.requests = AsyncRequests(lm.session, self.transport, self.pool)
        self._calls: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # loop -> asyncio.Semaphore
        self._guard = threading.Lock()

    async def score(self, plan: Plan[T]) -> T:
        """A scoring plan (`OpenAI.distribution_plan`, ``batch_plan``) executed natively, ``concurrency`` calls
        at a time: as many as the sync API's callers would run, and at ``concurrency=1`` one call's requests
        after another, in the sync call's order (a server's prompt cache, hence its numbers, see the same)."""
        calls = per_loop(self._calls, self._guard, lambda: asyncio.Semaphore(self.lm.concurrency))
        async with calls:
            return await self.requests.run(plan)

    async def complete(self, prompt: Any, stop: Any, kwargs: dict) -> str:
        """`OpenAI.complete` awaited: the same plan (`complete_plan`), its requests sent by ``AsyncOpenAI``."""

        def plan() -> Plan[str]:
            text, stops, settings = self.lm.completion_inputs(prompt, stop, kwargs)  # in the worker: 1st step
            return (yield from complete_plan(self.session, text, stops, settings))

        return await self.requests.run(plan())

    async def stream(self, prompt: Any, stop: Any, kwargs: dict) -> AsyncIterator[str]:
        """`OpenAI.stream` as an async iterator: the same pieces (`Stream.take`, `Stream.ending`)."""

        def prepare() -> tuple[str, list[str], dict, Optional[Generation]]:
            text, stops, settings = self.lm.completion_inputs(prompt, stop, kwargs)
            return text, stops, settings, stream_request(self.session, text, stops, settings)

        text, stops, settings, generation = await asyncio.to_thread(prepare)
        if generation is None:
            return
        response = await self.requests.open(generation)
        state = Stream(self.session, response, text, stops, settings)
        try:
            async for chunk in response:
                piece, stopped = state.take(chunk)
                if piece:
                    yield piece
                if stopped:
                    return
        except Exception as error:
            failure = state.broken(error)
            if failure is error:
                raise
            raise failure from None
        finally:
            await response.close()
        rest = await self.requests.run(state.ending())
        if rest:
            yield rest

    def close(self) -> None:
        self.pool.shutdown(wait=False)
        self.transport.serial.thread.shutdown(wait=False)
