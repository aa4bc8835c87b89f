"""The async API of `OpenAI` (docs/async.md): requests sent natively with ``openai.AsyncOpenAI``.

* `AsyncTransport`: the async twin of `Transport`. One ``AsyncOpenAI`` (one connection pool) per event loop, made
  from the sync client's address and key with its own retries off; the same `Retry` policy (``Retry.acall``),
  the same transient statuses, ``Retry-After`` and throttling pause (shared with the sync transport), the same
  counters (``lm.requests``), and ``concurrency`` requests in flight at most (an ``asyncio.Semaphore`` per loop).
  On servers that take one request at a time (the dialect's ``serial``: llama_cpp.server) every async request
  also holds the sync transport's ``serial`` lock, so sync and async callers never interleave there.
* `AsyncRequests`: sends a `~autocog.lm.openai.requests.Generation` and runs request plans
  (`autocog.lm.openai.plans`), the logic written once for both executors. A plan's first step, which resolves
  the session on first use (server detection, model name, tokenizer), runs in a worker thread.
* `AsyncCalls`: what `OpenAI.acomplete` / ``astream`` / ``achoose`` ... do. ``acomplete`` and ``astream`` are
  native (the generation request and the peek at a stop). Choice scoring (``achoice_distribution``, ``achoose``,
  ``achoice_logprobs``, ``ascore_batch``) runs the sync strategies (echo, descent, token-id echo) in a pool of
  ``concurrency`` worker threads, their requests sent by the sync transport: not blocking, the same numbers,
  but not yet a request plan.

>>> lm = OpenAI(base_url="http://127.0.0.1:8000/v1")                       # doctest: +SKIP
>>> await asyncio.gather(*(lm.acomplete("1, 2,", stop=",") for _ in range(20)))   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, nullcontext
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Optional, TypeVar

from autocog.lm.aio import ModelLock
from autocog.lm.openai.plans import Done, Plan, step
from autocog.lm.openai.requests import Generation
from autocog.lm.openai.stops import complete_plan
from autocog.lm.openai.streaming import Stream, stream_request
from autocog.lm.openai.transport import CACHE_NEUTRAL, Transport

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
        loop = asyncio.get_running_loop()
        with self._guard:
            client = self._clients.get(loop)
            if client is None:
                sync = self.sync_client
                client = self._clients[loop] = self.transport.openai.AsyncOpenAI(
                    api_key=sync.api_key,
                    organization=sync.organization,
                    project=sync.project,
                    base_url=sync.base_url,
                    timeout=self.transport.timeout,
                    max_retries=0,
                )
            return client

    def slots(self) -> asyncio.Semaphore:
        """The running loop's semaphore of ``concurrency`` requests in flight."""
        loop = asyncio.get_running_loop()
        with self._guard:
            slots = self._slots.get(loop)
            if slots is None:
                slots = self._slots[loop] = asyncio.Semaphore(self.transport.limit)
            return slots

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
    """`Requests.send` and `Requests.open` awaited, and the async executor of request plans."""

    def __init__(self, session: Session, transport: AsyncTransport):
        self.session = session
        self.transport = transport

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

    async def run(self, plan: Plan[T]) -> T:
        """``plan`` executed with `send`; its first step in a worker thread (it may resolve the session)."""
        request = await asyncio.to_thread(step, plan, None, True)
        while not isinstance(request, Done):
            request = step(plan, await self.send(request))
        return request.value


def endpoint(client: Any, kind: str) -> Any:
    return client.chat.completions if kind == "chat" else client.completions


class AsyncCalls:
    """The async calls of one `OpenAI` (see the module docstring); ``pool``: the worker threads of choice scoring,
    ``concurrency`` of them."""

    def __init__(self, lm: OpenAI):
        self.lm = lm
        self.session = lm.session
        self.transport = AsyncTransport(lm.transport, lm.client)
        self.requests = AsyncRequests(lm.session, self.transport)
        self.pool = ThreadPoolExecutor(lm.concurrency, thread_name_prefix="autocog-achoose")

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

    async def in_worker(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in one of the ``concurrency`` scoring threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, lambda: fn(*args, **kwargs))

    def close(self) -> None:
        self.pool.shutdown(wait=False)
        self.transport.serial.thread.shutdown(wait=False)
