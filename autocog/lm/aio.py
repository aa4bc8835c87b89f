"""The async API's machinery for backends that compute in this process (`TfLM`, `LLaMa`, any `LM` by default).

Every model gets one `Worker` (`worker_for`): a thread of its own, where its calls run, and a `ModelLock`, held
for the whole of one call (a stream: from its first piece until it is closed), so the model makes one call at a
time whatever the number of tasks, event loops or threads awaiting it, and the event loop never blocks on it.

* A call cancelled before it starts never runs; one cancelled while it runs finishes in the worker thread and
  then frees the lock (the lock is released by the call's own completion, so cancelling cannot wedge it).
* A stream's generator is advanced and closed in the worker thread; a consumer that stops early (``break``,
  an error, cancellation) closes it there before the lock is freed. Close it at once with ``await
  pieces.aclose()`` (or ``contextlib.aclosing``); otherwise the event loop closes it when it is collected.

>>> async def main(lm):
...     return await asyncio.gather(*(lm.achoose("2+2=", ["4", "5"]) for _ in range(20)))   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Iterator, TypeVar

T = TypeVar("T")
_DONE = object()  # what `next` returns at the end of a stream in the worker


class ModelLock:
    """A first-come first-served lock for coroutines of any event loop (and none held across ``await`` by a
    thread): ``async with lock:``, or `acquire` then `release` (from any thread, e.g. a call's completion)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._held = False
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = deque()

    @property
    def locked(self) -> bool:
        return self._held

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        with self._guard:
            if not self._held:
                self._held = True
                return
            waiter: asyncio.Future = loop.create_future()
            entry = (loop, waiter)
            self._waiters.append(entry)
        try:
            await waiter
        except asyncio.CancelledError:
            with self._guard:
                if entry in self._waiters:  # not granted yet: just leave the queue
                    self._waiters.remove(entry)
                    raise
            self.release()  # granted while being cancelled: hand it on
            raise

    def release(self) -> None:
        """Hand the lock to the next waiter (in its own loop), else free it."""
        with self._guard:
            while self._waiters:
                loop, waiter = self._waiters.popleft()
                try:
                    loop.call_soon_threadsafe(_grant, waiter)
                    return
                except RuntimeError:  # that waiter's loop is closed: it will never take the lock
                    continue
            self._held = False

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: Any) -> None:
        self.release()


def _grant(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)
    # a waiter cancelled in the meantime sees that it was granted (no longer queued) and releases


@dataclass
class Worker:
    """One model's thread and lock (see the module docstring); ``name`` names the thread."""

    name: str = "autocog-model"
    lock: ModelLock = field(default_factory=ModelLock)
    executor: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=self.name)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in the worker thread, under the lock; its result or its error."""
        await self.lock.acquire()
        try:
            future = self.executor.submit(fn, *args, **kwargs)
        except BaseException:
            self.lock.release()
            raise
        future.add_done_callback(lambda _: self.lock.release())  # a cancelled task's call still ends it
        return await asyncio.wrap_future(future)

    async def stream(self, open_stream: Callable[[], Iterator[T]]) -> AsyncIterator[T]:
        """The pieces of the iterator ``open_stream()`` (called, advanced and closed in the worker thread),
        the lock held from opening to closing."""
        await self.lock.acquire()
        iterator: Any = None
        try:
            iterator = await self._submit(lambda: iter(open_stream()))
            while True:
                piece = await self._submit(next, iterator, _DONE)
                if piece is _DONE:
                    return
                yield piece
        finally:
            # Closed in the worker, after any step still running there; the lock is freed once it is.
            closing = self.executor.submit(_close, iterator)
            closing.add_done_callback(lambda _: self.lock.release())
            await asyncio.shield(asyncio.wrap_future(closing))

    async def _submit(self, fn: Callable[..., T], *args: Any) -> T:
        future: Future = self.executor.submit(fn, *args)
        return await asyncio.wrap_future(future)


def _close(iterator: Any) -> None:
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


_WORKERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_WORKERS_LOCK = threading.Lock()


def worker_for(lm: Any) -> Worker:
    """The `Worker` of ``lm`` (made on first use; kept beside the model, not on it, so models still pickle)."""
    with _WORKERS_LOCK:
        worker = _WORKERS.get(lm)
        if worker is None:
            worker = _WORKERS[lm] = Worker(f"autocog-{type(lm).__name__}")
        return worker
