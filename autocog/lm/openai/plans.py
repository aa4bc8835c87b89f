"""Request plans: the part of a call that decides which requests to send, written once for the sync and the async
executors (sans-IO).

A plan is a generator that yields a request, is sent back the decoded answer, and returns the call's result. A
request is a `~autocog.lm.openai.requests.Generation` (a completion), a `Post` (a JSON POST: llama-server's
``/completion``), or `Parallel` (sub-plans run together; the answer is the list of their results, in order). An
error from a request is thrown into the plan at its ``yield``, as the sync call would raise it there. `run`
executes a plan with a ``send`` and a ``fan`` (`Requests.run`: the sync transport and its thread pool);
`autocog.lm.openai.aio.AsyncRequests.run` with ``AsyncOpenAI`` and ``asyncio.gather``. A plan step does no I/O of
its own past what the session resolves on first use (the dialect, the model, the tokenizer), and past what the
strategies still send themselves (docs/async.md says which).

>>> def plan(session):
...     answer = yield session.requests.generation("1, 2,", settings, [","], stream=False)   # doctest: +SKIP
...     return answer["choices"][0]["text"]                                                  # doctest: +SKIP
>>> session.requests.run(plan(session))                                                      # doctest: +SKIP
' 3'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Generator, Optional, TypeVar, Union

if TYPE_CHECKING:  # pragma: no cover
    from autocog.lm.openai.requests import Generation

T = TypeVar("T")
Plan = Generator[Any, Any, T]  # yields Generation | Post | Parallel


@dataclass
class Post:
    """A JSON POST: ``url`` (absolute, or relative to the base URL), ``body``, ``kind`` (the request counter)."""

    url: str
    body: dict
    kind: str


@dataclass
class Parallel:
    """Sub-plans run together; their results in order. ``batch``: the calls of a batch (the sync executor gives
    them a thread pool of their own, as the sub-plans fan out on the transport's pool themselves)."""

    plans: list
    batch: bool = False


Request = Union["Generation", Post, Parallel]


class Done:
    """A plan's result (see `step`)."""

    def __init__(self, value: Any):
        self.value = value


def step(plan: Plan, answer: Any = None, first: bool = False, error: Optional[BaseException] = None) -> Any:
    """Advance ``plan``: its next request, or `Done` with its result. ``first``: start it (``answer`` unused);
    ``error``: thrown into the plan where it waits for its answer."""
    try:
        if first:
            return next(plan)
        if error is not None:
            return plan.throw(error)
        return plan.send(answer)
    except StopIteration as done:
        return Done(done.value)


def run(plan: Plan[T], send: Callable[[Any], Any], fan: Callable[[Callable, list, bool], list]) -> T:
    """``plan`` executed with ``send(request) -> decoded answer`` (a `Generation` or a `Post`) and
    ``fan(fn, plans, batch) -> [fn(p) for p in plans]`` (for `Parallel`); its result."""
    request = step(plan, first=True)
    while not isinstance(request, Done):
        answer, failed = None, None
        try:
            if isinstance(request, Parallel):
                answer = fan(lambda sub: run(sub, send, fan), request.plans, request.batch)
            else:
                answer = send(request)
        except Exception as error:
            failed = error
        request = step(plan, answer, error=failed)
    return request.value
