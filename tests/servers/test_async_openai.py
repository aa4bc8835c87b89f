"""The async API of `OpenAI`: ``asyncio.gather`` of 20+ calls against a real server gives the sync calls' numbers
(`AsyncServerSuite`, one subclass per server fixture: llama_cpp.server here; another server plugs in by subclassing
with its own ``server`` fixture), and the native transport's faults against a server the tests control (retries,
``Retry-After``, typed errors, ``concurrency``)."""

import asyncio
import json
import time

import numpy as np
import pytest
from llama_server import LlamaServer

pytest.importorskip("openai")
from test_openai import COMPLETION, KEY, FaultServer  # the fault server of the sync tests

from autocog.core.types import ScoreRequest
from autocog.errors import (
    ContextLengthError,
    InvalidChoicesError,
    RequestFailedError,
    RetryExhaustedError,
)
from autocog.lm import ascore, score
from autocog.lm.openai import OpenAI

PROMPTS = [
    "Question: What is the capital of",
    "The quick brown fox jumps over the",
    "Yes or no?",
    "name: Alice, phone:",
]
CHOICES = [" France", " 1", " 10", " Yes", "No"]


async def heartbeat(ticks):
    while True:
        await asyncio.sleep(0.005)
        ticks.append(time.monotonic())


@pytest.mark.slow
class AsyncServerSuite:
    """What every server must pass through the async API. A subclass gives the ``server`` fixture (an object with
    ``base_url``) and, if needed, ``api_kwargs`` (the `OpenAI` keywords for it)."""

    api_kwargs: dict = {"model": "tiny"}
    serial_exact = True  # one request at a time, the async calls' numbers are the sync ones, bit for bit

    @pytest.fixture(scope="class")
    @classmethod
    def server(cls):
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def api(cls, server):
        lm = OpenAI(base_url=server.base_url, cache_size=0, **cls.api_kwargs)
        yield lm
        lm.close()

    def test_gather_of_acomplete_equals_complete(self, api):
        prompts = PROMPTS * 5  # 20 calls
        want = [api.complete(p, stop="\n", max_tokens=8) for p in prompts]
        sent = api.requests["completions"]

        async def main():
            ticks = []
            beat = asyncio.create_task(heartbeat(ticks))
            texts = await asyncio.gather(*(api.acomplete(p, stop="\n", max_tokens=8) for p in prompts))
            beat.cancel()
            await api.aclose()
            return texts, ticks

        texts, ticks = asyncio.run(main())
        assert texts == want
        assert api.requests["completions"] - sent >= len(prompts)  # each sent, natively counted
        assert ticks

    def stream_max_tokens(self, api, prompt, stop):
        """The ``max_tokens`` of `test_astream_equals_stream` for ``prompt``."""
        return 10

    def test_astream_equals_stream(self, api):
        for prompt, stop in [(PROMPTS[1], " "), (PROMPTS[0], "\n"), (PROMPTS[3], ["5", ","])]:
            max_tokens = self.stream_max_tokens(api, prompt, stop)
            want = list(api.stream(prompt, stop=stop, max_tokens=max_tokens))

            async def main():
                pieces = [p async for p in api.astream(prompt, stop=stop, max_tokens=max_tokens)]
                early = api.astream(prompt, stop=stop, max_tokens=max_tokens)
                try:
                    async for _ in early:
                        break  # stopped early: the HTTP stream is closed
                finally:
                    await early.aclose()
                await api.aclose()
                return pieces

            pieces = asyncio.run(main())
            assert "".join(pieces) == "".join(want) == api.complete(prompt, stop=stop, max_tokens=max_tokens)

    def test_gather_of_achoose_equals_choose(self, api, server):
        prompts = PROMPTS * 5  # 20 calls
        want = [api.choice_distribution(p, CHOICES) for p in prompts]
        # One at a time, the async calls send the sync calls' requests in the same order: the same numbers.
        serial = OpenAI(base_url=server.base_url, cache_size=0, concurrency=1, **self.api_kwargs)

        async def main(lm):
            got = await asyncio.gather(*(lm.achoice_distribution(p, CHOICES) for p in prompts))
            indices = await asyncio.gather(*(lm.achoose(p, CHOICES) for p in prompts))
            logprobs = await lm.achoice_logprobs(PROMPTS[0], CHOICES)
            return got, indices, logprobs

        for lm, exact in ((serial, self.serial_exact), (api, False)):
            got, indices, logprobs = asyncio.run(main(lm))
            assert indices == [w.index for w in want]
            for g, w in zip(got, want):
                if exact:
                    assert g.probs.tolist() == w.probs.tolist() and g.token_logprobs == w.token_logprobs
                else:  # in parallel: the server's prompt cache sees another order (as the sync score_batch: 1e-5)
                    # (on llama-server also one at a time: which slot's cache serves a request varies, sync or not)
                    np.testing.assert_allclose(g.probs, w.probs, atol=1e-5, rtol=0)
                    for a, e in zip(g.token_logprobs, w.token_logprobs):
                        np.testing.assert_allclose(a, e, atol=1e-5, rtol=0)
            np.testing.assert_allclose(np.concatenate(logprobs), np.concatenate(want[0].token_logprobs), atol=1e-5)
        serial.close()

    @pytest.mark.parametrize("search", ["best-first", "full", "greedy"])
    def test_gather_of_descent_equals_sync(self, server, search):
        lm = OpenAI(base_url=server.base_url, cache_size=0, concurrency=1, **self.api_kwargs)
        prompts = PROMPTS * 5  # 20 calls
        want = [lm.choice_distribution(p, CHOICES, strategy="descent", search=search) for p in prompts]

        async def main():
            calls = (lm.achoice_distribution(p, CHOICES, strategy="descent", search=search) for p in prompts)
            return await asyncio.gather(*calls)

        got = asyncio.run(main())
        lm.close()
        assert [g.index for g in got] == [w.index for w in want]
        for g, w in zip(got, want):
            assert g.info["requests"] == w.info["requests"] and g.strategy == w.strategy
            if self.serial_exact:
                assert g.probs.tolist() == w.probs.tolist() and g.token_logprobs == w.token_logprobs
            else:
                np.testing.assert_allclose(g.probs, w.probs, atol=1e-5, rtol=0)

    def test_ascore_equals_score(self, api):
        requests = [ScoreRequest(p, CHOICES) for p in PROMPTS * 5]
        want = list(score(api, requests, batch_size=8))

        async def main():
            return [r async for r in ascore(api, requests, batch_size=8)]

        got = asyncio.run(main())
        assert [r.index for r in got] == [r.index for r in want]
        # score_batch runs `concurrency` requests at once on both sides: the server's prompt cache, hence the order
        # of its evaluations, differs between runs (the sync score_batch's own spread, 1e-5)
        np.testing.assert_allclose([r.probs for r in got], [r.probs for r in want], atol=1e-5, rtol=0)

    def test_errors_are_typed(self, api):
        async def main():
            with pytest.raises(InvalidChoicesError):
                await api.achoose(PROMPTS[0], [" a", " a"])
            with pytest.raises(ContextLengthError):
                await api.acomplete("word " * 5000, max_tokens=2)
            await api.aclose()

        asyncio.run(main())


class TestAsyncLlamaCppServer(AsyncServerSuite):
    """llama_cpp.server (python -m llama_cpp.server) on the tiny F32 GGUF."""

    @pytest.fixture(scope="class")
    @classmethod
    def server(cls):
        from autocog.gguf.models import tiny_llama_gguf

        server = LlamaServer(tiny_llama_gguf(), n_ctx=1024)
        yield server
        server.stop()


class TestAsyncLlamaServer(AsyncServerSuite):
    """llama.cpp's C++ llama-server (2 slots, F32 KV cache) on the tiny F32 GGUF: its token-id rows are sent
    natively (`autocog.lm.openai.id_rows`), many prompts' contexts per request and those requests together.
    Two sync passes of the same 20 calls differ already (3 of 20 distributions, by 5e-13: each slot keeps its own
    cached prompt, so which slot serves a request changes the tokens it evaluates): compared within 1e-5."""

    serial_exact = False

    @pytest.fixture(scope="class")
    @classmethod
    def server(cls, tiny_llama_cpp_server):
        return tiny_llama_cpp_server

    def stream_max_tokens(self, api, prompt, stop):
        """The most tokens up to 10 whose completion does not stop inside a UTF-8 character: there llama-server
        streams the unfinished character or holds it back from one run to the next (its non-streamed answer
        writes it as U+FFFD), whether the client is sync or async."""
        return next(k for k in range(10, 0, -1) if not api.complete(prompt, stop=stop, max_tokens=k).endswith("\ufffd"))

    def test_scoring_requests_go_on_asyncopenai(self, api, monkeypatch):
        executed = []
        sync_execute = api.session.requests.execute
        monkeypatch.setattr(api.session.requests, "execute", lambda r: executed.append(r) or sync_execute(r))
        want = [api.choice_distribution(p, CHOICES) for p in PROMPTS]
        assert executed  # the sync calls send theirs through the sync executor
        executed.clear()

        async def main():
            got = await asyncio.gather(*(api.achoice_distribution(p, CHOICES) for p in PROMPTS * 5))
            batch = await api.ascore_batch([ScoreRequest(p, CHOICES) for p in PROMPTS])
            await api.aclose()
            return got, batch

        got, batch = asyncio.run(main())
        assert executed == []  # every row request of the async calls went through AsyncOpenAI
        for g, w in zip(got + batch, want * 5 + want):
            np.testing.assert_allclose(g.probs, w.probs, atol=1e-5, rtol=0)

    def test_ascore_batch_sends_the_batch_requests_together(self, api):
        requests = [ScoreRequest(f"Question {i}: is {i} even?\nAnswer:", [" yes", " no", " maybe"]) for i in range(24)]
        want = api.score_batch(requests)
        lm = OpenAI(base_url=api.session.base_url, cache_size=0, concurrency=4, **self.api_kwargs)
        lm.scorer.by_ids.rows.max_contexts = 6  # several packs, to see them in flight together

        async def main():
            return await lm.ascore_batch(requests)

        sent = lm.requests["completions"]
        got = asyncio.run(main())
        info = got[0].info  # every trie node's context once, 6 per request (whole rows: the tiny vocabulary)
        assert lm.requests["completions"] - sent == info["batch_requests"] == -(-info["batch_sequences"] // 6) > 1
        assert lm.transport.max_in_flight >= 2  # the packs in flight together on the two slots
        assert [r.index for r in got] == [r.index for r in want]
        np.testing.assert_allclose([r.probs for r in got], [r.probs for r in want], atol=1e-5, rtol=0)
        lm.close()


# ------------------------------------------------------------------------------------------------------
# the native transport's faults, from a server the tests control
# ------------------------------------------------------------------------------------------------------
@pytest.fixture
def fault_server():
    servers = []

    def make(*script):
        servers.append(FaultServer(*script))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def acomplete_all(lm, n):
    async def main():
        try:
            return await asyncio.gather(*(lm.acomplete("hi", stop=None, max_tokens=2) for _ in range(n)))
        finally:
            await lm.aclose()

    return asyncio.run(main())


def test_async_429_then_200_is_retried(fault_server):
    server = fault_server(
        ("json", 429, {"error": {"message": "slow down"}}, {"Retry-After": "0.01"}), ("json", 200, COMPLETION)
    )
    lm = server.lm()
    assert acomplete_all(lm, 1) == [" ok"]
    assert len(server.requests) == 2 and lm.requests["attempts"] == 2 and lm.requests["completions"] == 1
    assert json.loads(server.requests[1][2])["model"] == "fault-model"
    assert server.requests[1][1]["authorization"] == f"Bearer {KEY}"


def test_async_429_pauses_every_request_for_retry_after_within_concurrency(fault_server):
    server = fault_server(("json", 429, {"error": {"message": "slow down"}}, {"Retry-After": "0.4"}), ("sleep", 0.05))
    lm = server.lm(concurrency=3, max_backoff=1.0)
    began = time.monotonic()
    assert acomplete_all(lm, 20) == [" ok"] * 20
    assert lm.transport.max_in_flight <= 3  # the semaphore: `concurrency` in flight at most
    assert len(server.requests) == 21 and lm.requests["attempts"] == 21
    first = server.times[0]
    later = [t for t in server.times if t > first + 0.01]
    assert all(t >= first + 0.35 for t in later[2:])  # at most the 2 other slots were already on their way
    assert time.monotonic() - began >= 0.4


def test_async_concurrency_overlaps_requests(fault_server):
    server = fault_server(("sleep", 0.2))
    lm = server.lm(concurrency=10)
    assert acomplete_all(lm, 20) == [" ok"] * 20
    assert 1 < lm.transport.max_in_flight <= 10
    # several requests reached the server while the first one (0.2 s) was still being answered
    assert sum(t < server.times[0] + 0.15 for t in server.times) >= 3


@pytest.mark.parametrize("status", [500, 503])
def test_async_persistent_retryable_status_is_bounded(fault_server, status):
    server = fault_server(("json", status, {"error": {"message": "try later"}}))
    lm = server.lm(max_retries=2)
    with pytest.raises(RetryExhaustedError) as info:
        acomplete_all(lm, 1)
    assert len(server.requests) == 3 and len(info.value.attempts) == 3
    assert f"HTTP {status}" in info.value.attempts[0]


def test_async_client_errors_fail_at_once_redacted(fault_server):
    server = fault_server(("json", 401, "ECHO_AUTH"))
    lm = server.lm()
    with pytest.raises(RequestFailedError) as info:
        acomplete_all(lm, 1)
    assert len(server.requests) == 1 and info.value.status == 401
    assert KEY not in str(info.value) and "***" in str(info.value)


def test_async_timeout_and_dropped_connection_are_retried(fault_server):
    server = fault_server(("drop",), ("sleep", 2.0), ("json", 200, COMPLETION))
    lm = server.lm(timeout=0.5, max_retries=3)
    assert acomplete_all(lm, 1) == [" ok"]
    assert len(server.requests) == 3 and lm.requests["attempts"] == 3


# ------------------------------------------------------------------------------------------------------
# streams and stops through the native path, from the scripted server of the sync chat tests
# ------------------------------------------------------------------------------------------------------
@pytest.fixture
def script():
    from test_openai_chat import ScriptServer

    servers = []

    def make(routes):
        servers.append(ScriptServer(routes))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def run_closing(lm, make):
    async def main():
        try:
            return await make()
        finally:
            await lm.aclose()

    return asyncio.run(main())


async def joined(pieces):
    return "".join([p async for p in pieces])


@pytest.mark.parametrize("chat", [False, True])
def test_async_stream_and_complete_equal_the_sync_ones_on_every_stop_outcome(script, chat):
    from test_openai_chat import chat_chunk, chat_completion, completion, text_chunk

    make = chat_chunk if chat else text_chunk
    path = "/v1/chat/completions" if chat else "/v1/completions"
    whole = chat_completion if chat else completion
    cases = [  # (streamed chunks, the same answer as one completion, expected text)
        (
            [make(" Hel"), make("lo"), make("", "stop", stop_reason="\n\n")],
            whole(" Hello", "stop", stop_reason="\n\n"),
            " Hello\n\n",
        ),
        (
            [make(" Hel"), make("lo"), make("", "stop", stop_reason=None)],
            whole(" Hello", "stop", stop_reason=None),
            " Hello",
        ),
        ([make(" a\n"), make("\nb")], whole(" a\n\nb"), " a\n\n"),  # a server that did not cut
    ]
    for chunks, answer, expected in cases:
        server = script({path: [("sse", chunks), ("json", 200, answer), ("sse", chunks), ("json", 200, answer)]})
        lm = server.lm(server="vllm", chat=chat)
        want = ("".join(lm.stream("x", stop=["\n\n"], max_tokens=5)), lm.complete("x", stop=["\n\n"], max_tokens=5))

        async def both(lm=lm):
            return (
                await joined(lm.astream("x", stop=["\n\n"], max_tokens=5)),
                await lm.acomplete("x", stop=["\n\n"], max_tokens=5),
            )

        assert run_closing(lm, both) == want == (expected, expected)
        assert server.bodies(path)[2] == server.bodies(path)[0] and server.bodies(path)[3] == server.bodies(path)[1]


def test_async_complete_peeks_at_the_stop_like_the_sync_one(script):
    from test_openai_chat import completion

    # generic dialect: "stop" without saying which; the peek (a second request) tells a stop string from EOS
    answers = [("json", 200, completion(" Hello", "stop")), ("json", 200, completion("\n\nmore"))]
    server = script({"/v1/completions": answers * 2})
    lm = server.lm()
    want = lm.complete("x", stop=["\n\n"], max_tokens=5)
    got = run_closing(lm, lambda: lm.acomplete("x", stop=["\n\n"], max_tokens=5))
    assert got == want == " Hello\n\n"
    bodies = server.bodies("/v1/completions")
    assert len(bodies) == 4 and bodies[2:] == bodies[:2] and bodies[1]["prompt"] == "x Hello"


def test_async_stream_faults_are_typed_and_opening_is_retried(script):
    from test_openai_chat import text_chunk

    from autocog.errors import MalformedResponseError

    server = script({"/v1/completions": [("sse-broken", [text_chunk(" a"), text_chunk(" b")])]})
    lm = server.lm()
    with pytest.raises(RequestFailedError, match="broke after"):
        run_closing(lm, lambda: joined(lm.astream("x", stop=None)))
    server = script({"/v1/completions": [("sse", [text_chunk(" a"), "{not json"])]})
    lm = server.lm()
    with pytest.raises(MalformedResponseError, match="not valid JSON"):
        run_closing(lm, lambda: joined(lm.astream("x", stop=None)))
    server = script({"/v1/completions": [("json", 503, {"error": {"message": "busy"}}), ("sse", [text_chunk(" ok")])]})
    lm = server.lm()
    assert run_closing(lm, lambda: joined(lm.astream("x", stop=None))) == " ok"
    assert lm.requests["completions"] == 1 and lm.requests["attempts"] == 2
    refusing = script({}).lm(server="openai", chat=True)  # OpenAI's API has no min_p: refused before sending
    for make in (lambda: refusing.acomplete("x", min_p=0.05), lambda: joined(refusing.astream("x", min_p=0.05))):
        with pytest.raises(ValueError, match="min_p"):
            run_closing(refusing, make)
    assert refusing.requests["attempts"] == 0
