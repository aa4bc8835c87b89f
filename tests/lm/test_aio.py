"""The async API's machinery (`autocog.lm.aio`, `Retry.acall`, `autocog.lm.scoring.ascore`) on instant toy models:
one call at a time per model, a free event loop, cancellation, early-closed streams, errors, several loops."""

import asyncio
import threading
import time

import numpy as np
import pytest
from toy import ToyLM

from autocog.core.retry import Retry
from autocog.core.types import ScoreRequest
from autocog.errors import InvalidChoicesError, RetryExhaustedError
from autocog.lm import LM, ascore, score
from autocog.lm.aio import ModelLock, Worker, worker_for


class SlowLM(LM):
    """Each call sleeps ``delay`` seconds in the model thread and records how many calls overlap."""

    def __init__(self, delay=0.05):
        self.delay = delay
        self.active = 0
        self.most = 0
        self.threads = set()
        self.closed = []
        self.guard = threading.Lock()

    def tokenize(self, text, bos=False):
        return [ord(c) for c in text]

    def detokenize(self, tokens):
        return "".join(map(chr, tokens))

    def work(self, value):
        with self.guard:
            self.active += 1
            self.most = max(self.most, self.active)
            self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)  # a model call: the event loop must not wait for it
        with self.guard:
            self.active -= 1
        return value

    def complete(self, prompt, stop="\n", **kwargs):
        if prompt == "boom":
            raise InvalidChoicesError("typed error from the model thread")
        return self.work(prompt + "!")

    def choose(self, prompt, choices, **kwargs):
        return self.work(len(choices) - 1)

    def stream(self, prompt, stop="\n", **kwargs):
        try:
            for c in prompt:
                yield self.work(c)
        finally:
            self.closed.append(threading.current_thread().name)


async def heartbeat(ticks):
    while True:
        await asyncio.sleep(0.005)
        ticks.append(time.monotonic())


def run_with_heartbeat(make):
    """``(await make(), the heartbeat's tick times)`` in a fresh event loop."""

    async def main():
        ticks = []
        beat = asyncio.create_task(heartbeat(ticks))
        try:
            return await make(), ticks
        finally:
            beat.cancel()

    return asyncio.run(main())


def test_gather_runs_one_call_at_a_time_without_blocking_the_loop():
    lm = SlowLM(delay=0.02)
    results, ticks = run_with_heartbeat(lambda: asyncio.gather(*(lm.acomplete(str(i)) for i in range(20))))
    assert results == [f"{i}!" for i in range(20)]  # in order, each its own
    assert lm.most == 1  # one model call at a time
    assert len(lm.threads) == 1  # always the model's own thread
    assert len(ticks) >= 20  # ~0.4 s of model calls: the heartbeat kept ticking all along
    assert max(np.diff(ticks)) < 0.1


def test_errors_propagate_with_their_type_and_free_the_lock():
    lm = SlowLM(delay=0.0)

    async def main():
        with pytest.raises(InvalidChoicesError, match="typed error"):
            await lm.acomplete("boom")
        return await lm.acomplete("ok")

    assert asyncio.run(main()) == "ok!"
    assert not worker_for(lm).lock.locked


def test_cancelled_calls_do_not_wedge_the_lock():
    lm = SlowLM(delay=0.1)

    async def main():
        running = asyncio.create_task(lm.acomplete("a"))
        queued = asyncio.create_task(lm.acomplete("b"))
        await asyncio.sleep(0.02)  # `a` runs, `b` waits for the lock
        running.cancel()
        queued.cancel()
        for task in (running, queued):
            with pytest.raises(asyncio.CancelledError):
                await task
        return await asyncio.wait_for(lm.acomplete("c"), 2.0)

    assert asyncio.run(main()) == "c!"
    assert lm.most == 1 and not worker_for(lm).lock.locked


def test_astream_pieces_and_early_stop_closes_the_generation_in_the_model_thread():
    lm = SlowLM(delay=0.0)

    async def main():
        whole = [piece async for piece in lm.astream("abc")]
        pieces = lm.astream("xyz")
        try:
            async for piece in pieces:
                assert piece == "x"
                break
        finally:
            await pieces.aclose()  # contextlib.aclosing on Python 3.10+
        between = asyncio.create_task(lm.acomplete("q"))
        return whole, await asyncio.wait_for(between, 2.0)

    whole, after = asyncio.run(main())
    assert whole == ["a", "b", "c"] and after == "q!"
    assert len(lm.closed) == 2 and set(lm.closed) <= lm.threads  # closed, in the model's thread


def test_a_stream_holds_the_model_between_its_pieces():
    lm = SlowLM(delay=0.01)
    order = []

    async def consume():
        async for piece in lm.astream("abcd"):
            order.append(piece)
            await asyncio.sleep(0.02)  # the consumer is slow: no other call may slip in

    async def other():
        await asyncio.sleep(0.005)
        order.append(await lm.acomplete("Z"))

    async def main():
        await asyncio.wait_for(asyncio.gather(consume(), other()), 5)

    asyncio.run(main())
    assert order == ["a", "b", "c", "d", "Z!"]


def test_one_model_from_two_event_loops_still_one_call_at_a_time():
    lm = SlowLM(delay=0.01)
    out = []

    async def calls(tag):
        return await asyncio.gather(*(lm.acomplete(f"{tag}{i}") for i in range(10)))

    def loop_thread(tag):
        out.extend(asyncio.run(calls(tag)))

    threads = [threading.Thread(target=loop_thread, args=(t,)) for t in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(out) == sorted(f"{t}{i}!" for t in "ab" for i in range(10))
    assert lm.most == 1


def test_model_lock_is_first_come_first_served():
    lock = ModelLock()
    order = []

    async def take(i):
        async with lock:
            order.append(i)
            await asyncio.sleep(0)

    async def main():
        await asyncio.gather(*(take(i) for i in range(10)))

    asyncio.run(main())
    assert order == list(range(10)) and not lock.locked


def test_worker_run_returns_value_and_keeps_models_picklable():
    import pickle

    lm = ToyLM()
    worker = worker_for(lm)
    assert isinstance(worker, Worker) and worker_for(lm) is worker
    assert asyncio.run(worker.run(lambda a, b=0: a + b, 1, b=2)) == 3
    pickle.loads(pickle.dumps(lm))  # the worker lives beside the model, not on it


PROMPTS = ["the cat sat on the", "one two three", "abc", "hello world, "]
CHOICES = [" mat", " dog", " 4", " mat."]


def test_toy_async_calls_equal_sync_calls():
    lm = ToyLM()

    async def main():
        choose = await asyncio.gather(*(lm.achoose(p, CHOICES) for p in PROMPTS * 5))
        dist = await asyncio.gather(*(lm.achoice_distribution(p, CHOICES, normalization="mean") for p in PROMPTS))
        logprobs = await lm.achoice_logprobs(PROMPTS[0], CHOICES)
        text = await lm.acomplete("the ", max_tokens=6)
        pieces = [p async for p in lm.astream("the ", max_tokens=6)]
        requests = [ScoreRequest(p, CHOICES, prior=[0.1, 0.2, 0.3, 0.4]) for p in PROMPTS]
        batch = [r async for r in ascore(lm, requests, batch_size=3)]
        return choose, dist, logprobs, text, pieces, batch

    choose, dist, logprobs, text, pieces, batch = asyncio.run(main())
    assert choose == [lm.choose(p, CHOICES) for p in PROMPTS * 5]
    for got, p in zip(dist, PROMPTS):
        want = lm.choice_distribution(p, CHOICES, normalization="mean")
        assert got.probs.tolist() == want.probs.tolist() and got.token_logprobs == want.token_logprobs
    assert logprobs == lm.choice_logprobs(PROMPTS[0], CHOICES)
    assert text == lm.complete("the ", max_tokens=6) and "".join(pieces) == text
    assert pieces == list(lm.stream("the ", max_tokens=6))
    want = list(score(lm, [ScoreRequest(p, CHOICES, prior=[0.1, 0.2, 0.3, 0.4]) for p in PROMPTS], batch_size=3))
    assert [r.probs.tolist() for r in batch] == [r.probs.tolist() for r in want]


def test_apredict_proba_and_apredict_equal_the_sync_batch_api():
    from autocog.batch import apredict, apredict_proba, predict, predict_proba

    lm = ToyLM()
    prior = [0.4, 0.3, 0.2, 0.1]

    async def main():
        return (
            await apredict_proba(lm, PROMPTS, CHOICES, prior=prior, normalization="char", batch_size=3),
            await apredict_proba(lm, PROMPTS[0], CHOICES),
            await apredict(lm, PROMPTS, [CHOICES, CHOICES[:2], CHOICES[1:], CHOICES]),
        )

    probs, single, ragged = asyncio.run(main())
    np.testing.assert_array_equal(probs, predict_proba(lm, PROMPTS, CHOICES, prior=prior, normalization="char"))
    np.testing.assert_array_equal(single, predict_proba(lm, PROMPTS[0], CHOICES))
    np.testing.assert_array_equal(ragged, predict(lm, PROMPTS, [CHOICES, CHOICES[:2], CHOICES[1:], CHOICES]))


def test_ascore_checks_like_score():
    lm = ToyLM()

    async def main():
        return [r async for r in ascore(lm, [ScoreRequest("a", ["x", "x"])])]

    with pytest.raises(InvalidChoicesError):
        asyncio.run(main())
    with pytest.raises(ValueError, match="batch_size"):
        asyncio.run(ascore(lm, [], batch_size=0).__anext__())


def test_retry_acall_retries_transient_then_gives_up():
    policy = Retry(max_retries=2, backoff=0.0)
    calls = []

    async def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OSError("transient")
        return "done"

    async def always():
        raise OSError("still down")

    async def not_transient():
        raise KeyError("no")

    transient = {"is_transient": lambda e: isinstance(e, OSError), "what": "a call"}
    assert asyncio.run(policy.acall(flaky, **transient)) == "done" and len(calls) == 3
    with pytest.raises(RetryExhaustedError) as info:
        asyncio.run(policy.acall(always, **transient))
    assert len(info.value.attempts) == 3
    with pytest.raises(KeyError):
        asyncio.run(policy.acall(not_transient, **transient))
