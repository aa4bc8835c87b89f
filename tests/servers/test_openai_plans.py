"""The two executors of request plans (`autocog.lm.openai.plans`) on fake transports: the same answers in the same
order, `Parallel` results in order, errors thrown into the plan where it waits, the first error in order raised."""

import asyncio
import contextvars
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from autocog.lm.openai.aio import AsyncRequests
from autocog.lm.openai.plans import Parallel, Post, run
from autocog.lm.openai.transport import CALL_COUNTER


class Refused(Exception):
    pass


def count():
    counted = CALL_COUNTER.get()
    if counted is not None:
        counted["completions"] += 1


def answer_of(request):
    if request.body.get("fail"):
        raise Refused(request.url)
    return {"echo": request.body["n"]}


def one(n, fail=False):
    answer = yield Post("/completion", {"n": n, "fail": fail}, "completions")
    return answer["echo"] * 10


def plan(fails=()):
    """A plan with a request, a Parallel of sub-plans (one of which may fail: caught here), and a last request."""
    counted = Counter()
    token = CALL_COUNTER.set(counted)
    try:
        first = yield from one(1)
        try:
            many = yield Parallel([one(n, fail=n in fails) for n in range(2, 6)])
        except Refused as error:
            many = [str(error)]
        last = yield from one(6)
    finally:
        CALL_COUNTER.reset(token)
    return first, many, last, counted["completions"]


def sync_run(p, limit=4):
    """`run` with a fan like the transport's: in order at ``limit=1`` (stops at an error), else all sent and the
    first error in order raised."""
    sent = []

    def send(request):
        count()
        sent.append(request.body["n"])
        return answer_of(request)

    def fan(fn, items, batch):
        if limit == 1:
            return [contextvars.copy_context().run(fn, x) for x in items]
        with ThreadPoolExecutor(limit) as pool:
            futures = [pool.submit(contextvars.copy_context().run, fn, x) for x in items]
        return [f.result() for f in futures]

    return run(p, send, fan), sent


class FakeAsync(AsyncRequests):
    def __init__(self, limit):
        self.sent = []
        super().__init__(None, SimpleNamespace(transport=SimpleNamespace(limit=limit)), ThreadPoolExecutor(4))

    async def post(self, request):
        count()
        self.sent.append(request.body["n"])
        await asyncio.sleep(0.001 * (6 - request.body["n"]))  # later requests answer first
        return answer_of(request)


@pytest.mark.parametrize("limit", [1, 4])
@pytest.mark.parametrize("fails", [(), (3, 4)])
def test_the_async_executor_gives_the_sync_result(limit, fails):
    want, sent = sync_run(plan(fails), limit)
    requests = FakeAsync(limit)
    got = asyncio.run(requests.run(plan(fails)))
    assert got == want
    assert want[1] == (["/completion"] if fails else [20, 30, 40, 50])
    assert want[3] == (4 if fails and limit == 1 else 6)  # every request sent counted, sub-plans' included
    if limit == 1:
        assert requests.sent == sent  # one at a time: the sync order


def test_an_uncaught_error_propagates_from_both_executors():
    def failing():
        yield from one(1, fail=True)

    with pytest.raises(Refused):
        sync_run(failing())
    with pytest.raises(Refused):
        asyncio.run(FakeAsync(4).run(failing()))
