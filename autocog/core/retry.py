"""`Retry`: the one bounded-retry policy (local backends' transient faults, servers' failed requests).

A call is retried while its error is transient, at most ``max_retries`` times and within ``max_time`` seconds,
with exponential backoff (optionally jittered, and never shorter than a wait the error asks for, such as a
server's ``Retry-After``); then `RetryExhaustedError` lists every attempt. A non-transient error propagates at once.

>>> policy = Retry(max_retries=2, backoff=0.0)
>>> policy.call(lambda: 42, is_transient=lambda e: True, what="answer")
42
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Optional, TypeVar

from autocog.errors import RetryExhaustedError

T = TypeVar("T")


@dataclass
class Retry:
    """``max_retries`` retries after the first attempt; ``backoff`` seconds before the first retry, times
    ``factor`` after each, capped at ``max_backoff``; ``jitter`` draws each sleep in [0.5, 1] of its value;
    ``max_time`` bounds the whole call (attempts and sleeps), None for no bound."""

    max_retries: int = 3
    backoff: float = 0.05
    factor: float = 2.0
    max_backoff: float = 30.0
    max_time: Optional[float] = None
    jitter: bool = False

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")

    def sleep_for(self, attempt: int, wait: float = 0.0) -> float:
        """The pause before retry number ``attempt`` (1-based), at least ``wait``."""
        delay = self.backoff * self.factor ** (attempt - 1)
        if self.jitter:
            delay *= 0.5 + random.random() / 2
        return min(max(delay, wait), self.max_backoff)

    def call(
        self,
        fn: Callable[[], T],
        *,
        is_transient: Callable[[BaseException], bool],
        what: str,
        recover: Optional[Callable[[BaseException], None]] = None,
        wait: Optional[Callable[[BaseException], float]] = None,
        sleep: Callable[[float], None] = time.sleep,
        describe: Callable[[BaseException], str] = lambda e: f"{type(e).__name__}: {e}",
        on_retry: Optional[Callable[[BaseException, int, float], None]] = None,
    ) -> T:
        """``fn()``, retried on transient errors. ``recover(error)`` runs before each retry (clear caches);
        ``wait(error)``: the least pause the error asks for. ``what`` names the call in the final error;
        ``describe(error)``: an attempt's line in it. ``on_retry(error, attempt, pause)`` runs before each
        sleep (log it, or make other threads pause as well)."""
        run = RetryRun(self, is_transient, what, recover, wait, describe, on_retry)
        while True:
            try:
                return fn()
            except Exception as error:
                sleep(run.failed(error))

    async def acall(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        is_transient: Callable[[BaseException], bool],
        what: str,
        recover: Optional[Callable[[BaseException], None]] = None,
        wait: Optional[Callable[[BaseException], float]] = None,
        describe: Callable[[BaseException], str] = lambda e: f"{type(e).__name__}: {e}",
        on_retry: Optional[Callable[[BaseException, int, float], None]] = None,
    ) -> T:
        """`call` for a coroutine function: ``await fn()``, retried with the same policy, pausing with
        ``asyncio.sleep``."""
        run = RetryRun(self, is_transient, what, recover, wait, describe, on_retry)
        while True:
            try:
                return await fn()
            except Exception as error:
                await asyncio.sleep(run.failed(error))


@dataclass
class RetryRun:
    """The attempts of one `Retry.call` / `Retry.acall` (the options as given there); `failed` decides after
    each failure."""

    policy: Retry
    is_transient: Callable[[BaseException], bool]
    what: str
    recover: Optional[Callable[[BaseException], None]]
    wait: Optional[Callable[[BaseException], float]]
    describe: Callable[[BaseException], str]
    on_retry: Optional[Callable[[BaseException, int, float], None]]
    began: float = field(default_factory=time.monotonic)
    attempts: list[str] = field(default_factory=list)

    def failed(self, error: Exception) -> float:
        """The pause before the next attempt after ``error``; raises ``error`` when it is not transient, and
        `RetryExhaustedError` when the retries or the time are spent (must be called in the ``except`` block)."""
        if not self.is_transient(error):
            raise error
        self.attempts.append(self.describe(error))
        pause = self.policy.sleep_for(len(self.attempts), self.wait(error) if self.wait else 0.0)
        elapsed = time.monotonic() - self.began
        max_time = self.policy.max_time
        over_time = max_time is not None and elapsed + pause >= max_time
        if len(self.attempts) > self.policy.max_retries or over_time:
            raise RetryExhaustedError(
                f"{self.what} failed after {len(self.attempts)} attempt(s) in {elapsed:.1f} s", self.attempts
            ) from error
        if self.recover is not None:
            self.recover(error)
        if self.on_retry is not None:
            self.on_retry(error, len(self.attempts), pause)
        return pause
