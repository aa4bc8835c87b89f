"""Sending requests to an OpenAI-compatible server: the ``openai`` client (`make_client`), bounded retries,
counters, redaction.

`Transport.call` sends one request with the retry policy of docs/openai.md ("Faults"): 408, 409, 429, 5xx,
timeouts and dropped connections are retried with exponential backoff (``Retry-After`` honored up to
``max_backoff``), at most ``max_retries`` times and within ``max_retry_time`` seconds; then
`RetryExhaustedError` lists every attempt. Other statuses raise `RequestFailedError` at once. The API key never
appears in a message (server text is redacted).

>>> t = Transport(client, Retry(max_retries=4, backoff=0.25, max_backoff=8, max_time=120, jitter=True), 60)  # doctest: +SKIP
>>> t.post("http://127.0.0.1:8000/extras/tokenize", {"input": "a"})                                  # doctest: +SKIP
{'tokens': [1, 264]}
"""

from __future__ import annotations

import contextvars
import json
import logging
import math
import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from typing import Any, Callable, Iterator, Optional
from urllib.parse import urlsplit, urlunsplit

from autocog.core.retry import Retry
from autocog.errors import (
    ContextLengthError,
    MalformedResponseError,
    RequestFailedError,
    missing_backend,
)

log = logging.getLogger("autocog.lm.openai")

RETRY_STATUSES = frozenset({408, 409, 429})
# How servers word a prompt longer than the context (OpenAI and vLLM: context_length_exceeded; llama_cpp.server).
CONTEXT_WORDS = (
    "context_length_exceeded",
    "maximum context length",
    "exceeds the context",
    "exceed_context_size_error",  # llama-server
)
# Requests that leave a llama.cpp server's cached prompt as it was (the others make ``last_prompt`` unknown).
CACHE_NEUTRAL = frozenset({"tokenize", "detokenize", "models", "probe"})
# The counter of the call in progress in this context (one `choice_distribution`), besides the instance's.
CALL_COUNTER: contextvars.ContextVar = contextvars.ContextVar("autocog_openai_call", default=None)


class Transport:
    """The client (its own retries off), the retry policy, the request counters and a bounded thread pool.

    ``retry``: the `Retry` policy (jittered backoff; ``max_time`` bounds every request's attempts and sleeps);
    ``timeout``: seconds per attempt; ``limit``: HTTP requests in flight at most, over all threads
    (``max_in_flight`` records the most seen); a 429 or 503 pauses every thread for the backoff (``Retry-After``
    when given, up to ``max_backoff``). ``requests`` counts what was sent by kind (``completions``, ``chat``,
    ``tokenize``, ``detokenize``, ``probe``, ``models``) and ``attempts`` (retries included); ``model_name``:
    the model for messages, once known.
    """

    def __init__(self, client: Any, retry: Retry, timeout: float, limit: int = 8):
        import openai

        self.openai = openai
        self.client = client
        self.response_type = response_type()
        key = getattr(client, "api_key", None)
        self.secret = key if isinstance(key, str) and len(key) >= 4 else None
        self.base_url = public_url(str(client.base_url))
        self.retry = retry
        self.timeout = float(timeout)
        self.limit = max(1, int(limit))
        self.model_name: Optional[str] = None
        self.requests: Counter = Counter()
        self.sleeps: list[float] = []  # the backoff sleeps taken, in order (for callers that report them)
        self._count_lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._pool: Optional[ThreadPoolExecutor] = None
        self._slots = threading.BoundedSemaphore(self.limit)  # HTTP requests in flight, all threads together
        self._resume_at = 0.0  # after a 429/503 or Retry-After, no thread sends before this time
        self.in_flight = 0
        self.max_in_flight = 0
        # llama.cpp servers: every request under one lock (`serialize`), so that a cache reset and the request
        # it prepares are adjacent on the server; ``last_prompt``: the prompt it last evaluated (None: unknown).
        self.serial: Optional[threading.RLock] = None
        self.last_prompt: Optional[str] = None

    def serialize(self) -> None:
        """From now on, one request at a time over all threads (llama.cpp servers evaluate one at a time anyway;
        see docs/openai.md, "Concurrency"). Hold ``serial`` to keep several requests adjacent."""
        with self._count_lock:
            if self.serial is None:
                self.serial = threading.RLock()

    def count(self, key: str) -> None:
        call = CALL_COUNTER.get()
        with self._count_lock:
            self.requests[key] += 1
            if call is not None:
                call[key] += 1

    def map(self, fn: Callable, items: list) -> list:
        """``[fn(x) for x in items]``, ``limit`` at a time on the transport's thread pool when there are several."""
        if len(items) <= 1 or self.limit == 1:
            return [fn(x) for x in items]
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.limit, thread_name_prefix="autocog-openai")
        return list(self._pool.map(in_context(fn), items))

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False)
                self._pool = None

    def post(self, url: str, body: dict, retry: bool = True, kind: Optional[str] = None) -> Any:
        """POST JSON to ``url`` (absolute, or relative to ``base_url``) with the retry policy; decoded JSON."""
        if kind is None:
            kind = post_kind(url)
        return self.call(
            f"POST {url.rsplit('/', 1)[-1]}",
            kind,
            lambda t: self.client.post(url, body=body, cast_to=self.response_type, options={"timeout": t}),
            retry=retry,
        )

    def get(self, url: str, kind: str, retry: bool = True) -> Any:
        return self.call(
            f"GET {url}",
            kind,
            lambda t: self.client.get(url, cast_to=self.response_type, options={"timeout": t}),
            retry=retry,
        )

    def open(self, what: str, kind: str, send: Callable[[float], Any], prompt: Optional[str] = None) -> Any:
        """`call` for an answer read later (a stream): what ``send(timeout)`` returns, not decoded."""
        return self.call(what, kind, lambda t: Undecoded(send(t)), prompt=prompt)

    def call(
        self, what: str, kind: str, send: Callable[[float], Any], retry: bool = True, prompt: Optional[str] = None
    ) -> Any:
        """Send with retries; the decoded JSON body. ``send(timeout)`` returns the raw HTTP response.
        ``prompt``: the text prompt of a completion (recorded as ``last_prompt`` once sent)."""
        self.count(kind)
        if kind not in CACHE_NEUTRAL:
            with self.serial or nullcontext():
                self.last_prompt = None  # while in flight, and after a request that is not a text completion
                answer = self._retried(what, send, retry)
                self.last_prompt = prompt
                return answer
        return self._retried(what, send, retry)

    def _retried(self, what: str, send: Callable[[float], Any], retry: bool) -> Any:
        began = time.monotonic()

        def attempt() -> Any:
            timeout = self.attempt_timeout(began)
            self.count("attempts")
            return self._send(what, send, timeout, retry)

        policy, options = self.retry_plan(what, retry)
        return policy.call(attempt, **options)

    def attempt_timeout(self, began: float) -> float:
        """The timeout of an attempt of a request begun at ``began`` (``time.monotonic()``): the per-attempt
        ``timeout`` within what is left of ``max_time``."""
        budget = self.retry.max_time if self.retry.max_time is not None else math.inf
        return max(0.05, min(self.timeout, budget - (time.monotonic() - began)))

    def retry_plan(self, what: str, retry: bool) -> tuple[Retry, dict]:
        """(the `Retry` policy of one request, the keywords of its ``call``/``acall``): what is transient, the
        least wait it asks for, the pause shared by every caller (the sync and the async transports alike)."""
        policy = self.retry if retry else replace(self.retry, max_retries=0)
        options = dict(
            is_transient=lambda error: isinstance(error, Transient),
            what=f"{what} on {self.base_url} for model {self.model_name!r}",
            wait=lambda error: error.wait if isinstance(error, Transient) else 0.0,
            describe=str,
            on_retry=lambda error, n, pause: self.note_retry(what, error, n, pause),
        )
        return policy, options

    def note_retry(self, what: str, error: BaseException, attempt: int, pause: float) -> None:
        """Before a retry: a throttled server makes every thread wait, not only this one."""
        with self._count_lock:
            if isinstance(error, Transient) and error.throttled:
                self._resume_at = max(self._resume_at, time.monotonic() + pause)
            self.sleeps.append(pause)
        log.warning("%s on %s: %s; retry %d in %.2f s", what, self.base_url, error, attempt, pause)

    def throttle_pause(self) -> float:
        """Seconds to wait before sending, after a 429/503 (0 when none is pending)."""
        return max(0.0, self._resume_at - time.monotonic())

    @contextmanager
    def flight(self) -> Iterator[None]:
        """Count one request in flight (``in_flight``, ``max_in_flight``) while the block runs."""
        with self._count_lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            yield
        finally:
            with self._count_lock:
                self.in_flight -= 1

    def _send(self, what: str, send: Callable[[float], Any], timeout: float, retry: bool) -> Any:
        """One attempt in one of the ``limit`` slots, after any pause a throttled answer asked for (``serial``
        before the slot, always in that order)."""
        with self.serial or nullcontext(), self._slots:
            pause = self.throttle_pause()
            if pause > 0:
                time.sleep(pause)
            with self.flight():
                return self._attempt(what, send, timeout, retry)

    def _attempt(self, what: str, send: Callable[[float], Any], timeout: float, retry: bool) -> Any:
        """The decoded answer; raises `Transient` for a failure worth retrying, `RequestFailedError` for good."""
        try:
            return self.decode(send(timeout), what)
        except self.openai.APIError as error:
            failure = self.failure(error, what, timeout, retry)
            if failure is None:
                raise
            raise failure from None

    def failure(self, error: Exception, what: str, timeout: float, retry: bool) -> Optional[Exception]:
        """The error to raise for the client's ``error``: `Transient` (worth retrying), `ContextLengthError` or
        `RequestFailedError`; None for an error that is none of the client's HTTP failures (raised as it is)."""
        openai = self.openai
        if isinstance(error, openai.APIStatusError):
            status = error.status_code
            detail = self.redact(excerpt(error_body(error)))
            if status == 400 and any(w in detail for w in CONTEXT_WORDS):
                return ContextLengthError(
                    f"{what} refused by {self.base_url}: the prompt does not fit the model's context: {detail}"
                )
            # A server that cannot decode UTF-8 (llama_cpp.server detokenizing part of a character) will not do
            # better on a retry.
            if not (status in RETRY_STATUSES or status >= 500) or not retry or "codec can't decode" in detail:
                return RequestFailedError(
                    f"{what} failed on {self.base_url} for model {self.model_name!r}: HTTP {status}: {detail}", status
                )
            return Transient(f"HTTP {status}: {detail}", retry_after(error), status in (429, 503))
        if isinstance(error, openai.APITimeoutError):
            return Transient(f"no answer within the timeout ({timeout:.3g} s)")
        if isinstance(error, openai.APIConnectionError):
            cause = error.__cause__ or error.__context__
            return Transient(f"connection failed ({type(cause).__name__ if cause else 'closed'})")
        return None

    def decode(self, response: Any, what: str) -> Any:
        if isinstance(response, Undecoded):
            return response.value
        raw = response.content
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise MalformedResponseError(
                f"the {what} answer from {self.base_url} is not valid JSON ({len(raw)} bytes): "
                f"{self.redact(raw[:200].decode('utf-8', 'replace'))!r}"
            ) from None

    def redact(self, text: str) -> str:
        if self.secret:
            text = text.replace(self.secret, "***")
        return text


class Undecoded:
    """An answer that `Transport.decode` passes on as it is (see `Transport.open`)."""

    def __init__(self, value: Any):
        self.value = value


class Transient(Exception):
    """A failed attempt worth retrying: its (redacted) text, the least ``wait`` it asks for (``Retry-After``),
    and whether the server is ``throttled`` (429, 503: every thread pauses)."""

    def __init__(self, text: str, wait: float = 0.0, throttled: bool = False):
        super().__init__(text)
        self.wait, self.throttled = wait, throttled


def response_type() -> type:
    try:
        import httpx2

        return httpx2.Response
    except ImportError:  # openai < 3 runs on httpx
        import httpx

        return httpx.Response


def post_kind(url: str) -> str:
    """The counter a POST to ``url`` goes to: ``chat`` and ``completions`` like the client's own requests (a
    structured-output request is a completion), ``tokenize``/``detokenize``, else ``other``."""
    path = url.rstrip("/")
    for suffix, kind in (
        ("chat/completions", "chat"),
        ("completions", "completions"),
        ("detokenize", "detokenize"),
        ("tokenize", "tokenize"),
    ):
        if path.endswith(suffix):
            return kind
    return "other"


def public_url(url: str) -> str:
    """``url`` without credentials (``user:pass@``) or query string, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def excerpt(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str) if value is not None else ""
    return text if len(text) <= limit else text[:limit] + "..."


def error_body(error: Any) -> Any:
    body = getattr(error, "body", None)
    if body is None:
        try:
            body = error.response.text
        except Exception:
            body = str(error)
    return body


def retry_after(error: Any) -> float:
    """The ``Retry-After`` header in seconds (0 when absent or not a number)."""
    try:
        return max(0.0, float(error.response.headers.get("retry-after", "")))
    except (ValueError, AttributeError, TypeError):
        return 0.0


def in_context(fn: Callable) -> Callable:
    """``fn`` run in a copy of the caller's context (so that a call's counter follows it into pool threads)."""
    context = contextvars.copy_context()
    return lambda *args: context.copy().run(fn, *args)


def make_client(client: Any, base_url: Optional[str], api_key: Optional[str], timeout: float) -> tuple[Any, bool]:
    """(an ``openai.OpenAI`` with its own retries off, whether it is ours to close)."""
    try:
        import openai
    except ImportError as error:
        raise missing_backend("openai", "openai") from error
    if client is not None:
        return client.with_options(max_retries=0, timeout=timeout), False
    key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
    if key is None:
        if base_url is None:
            raise ValueError("OpenAI's API needs an API key: pass api_key= or set OPENAI_API_KEY")
        key = "no-key"  # local servers without authentication
    return openai.OpenAI(api_key=key, base_url=base_url, max_retries=0, timeout=timeout), True
