"""Request plans: the part of a call that decides which requests to send, written once for the sync and the async
executors (sans-IO).

A plan is a generator that yields a `~autocog.lm.openai.requests.Generation` for each request it needs, is sent
back the decoded answer, and returns the call's result. `run` executes one with ``Requests.send`` (the sync
transport); `autocog.lm.openai.aio.AsyncRequests.run` with ``AsyncOpenAI``. A plan step does no I/O of its own
past what the session resolves on first use (the dialect, the model, the tokenizer).

>>> def plan(session):
...     answer = yield session.requests.generation("1, 2,", settings, [","], stream=False)   # doctest: +SKIP
...     return answer["choices"][0]["text"]                                                  # doctest: +SKIP
>>> run(plan(session), session.requests.send)                                                # doctest: +SKIP
' 3'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Generator, TypeVar, Union

if TYPE_CHECKING:  # pragma: no cover
    from autocog.lm.openai.requests import Generation

T = TypeVar("T")
Plan = Generator["Generation", Any, T]


class Done:
    """A plan's result (see `step`)."""

    def __init__(self, value: Any):
        self.value = value


def step(plan: Plan, answer: Any = None, first: bool = False) -> Union[Generation, Done]:
    """Advance ``plan``: its next request, or `Done` with its result. ``first``: start it (``answer`` unused)."""
    try:
        return next(plan) if first else plan.send(answer)
    except StopIteration as done:
        return Done(done.value)


def run(plan: Plan[T], send: Callable[[Generation], Any]) -> T:
    """``plan`` executed with ``send(generation) -> decoded answer``; its result."""
    request = step(plan, first=True)
    while not isinstance(request, Done):
        request = step(plan, send(request))
    return request.value
