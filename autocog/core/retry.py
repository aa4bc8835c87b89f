"""`Retry`: the one bounded-retry policy (local backends' transient faults, servers' failed requests).

A call is retried while its error is transient, at most ``max_retries`` times and within ``max_time`` seconds,
with exponential backoff (optionally jittered, and never shorter than a wait the error asks for, such as a
server's ``Retry-After``); then `RetryExhaustedError` lists every attempt. A non-transient error propagates at once.

>>> policy = Retry(max_retries=2, backoff=0.0)
>>> policy.call(lambda: 42, is_transient=lambda e: True, what="answer")
42
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Callable, Optional, TypeVar

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
        began = time.monotonic()
        attempts: list[str] = []
        while True:
            try:
                return fn()
            except Exception as error:
                if not is_transient(error):
                    raise
                attempts.append(describe(error))
                pause = self.sleep_for(len(attempts), wait(error) if wait else 0.0)
                elapsed = time.monotonic() - began
                over_time = self.max_time is not None and elapsed + pause >= self.max_time
                if len(attempts) > self.max_retries or over_time:
                    raise RetryExhaustedError(
                        f"{what} failed after {len(attempts)} attempt(s) in {elapsed:.1f} s", attempts
                    ) from error
                if recover is not None:
                    recover(error)
                if on_retry is not None:
                    on_retry(error, len(attempts), pause)
                sleep(pause)
