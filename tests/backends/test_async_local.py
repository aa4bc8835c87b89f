"""The async API on the local backends (`LLaMa` and `TfLM` on the tiny random Llama): ``asyncio.gather`` of 20+
calls gives the sync calls' numbers exactly, the event loop keeps running during model calls, errors keep their
type, and a cancelled call or an early-stopped stream leaves the model usable."""

import asyncio
import time

import numpy as np
import pytest

from autocog.core.types import ScoreRequest
from autocog.errors import InvalidChoicesError, InvalidPromptError
from autocog.lm import ascore, score
from autocog.lm.aio import worker_for

PROMPTS = [
    "Question: What is the capital of",
    "The quick brown fox jumps over the",
    "Yes or no?",
    "name: Alice, phone:",
]
CHOICES = [" France", " 1", " 10", " Yes", "No"]


@pytest.fixture(scope="module", params=["llama", "tf"])
def local_lm(request, tiny_path):
    if request.param == "llama":
        from autocog.gguf.models import tiny_llama_gguf
        from autocog.lm import LLaMa

        return LLaMa(**LLaMa.create(tiny_llama_gguf(), n_ctx=1024))
    from autocog.lm import TfLM

    return TfLM(**TfLM.create(model_path=tiny_path))


async def with_heartbeat(make):
    ticks = []

    async def beat():
        while True:
            await asyncio.sleep(0.005)
            ticks.append(time.monotonic())

    task = asyncio.create_task(beat())
    try:
        return await make(), ticks
    finally:
        task.cancel()


def test_gather_of_achoose_equals_choose(local_lm):
    lm = local_lm
    prompts = PROMPTS * 6  # 24 calls
    for p in PROMPTS:  # the prefix caches as warm as they will be in the async run
        lm.choice_distribution(p, CHOICES)
    want = [lm.choice_distribution(p, CHOICES) for p in prompts]

    async def main():
        return await asyncio.gather(*(lm.achoice_distribution(p, CHOICES) for p in prompts))

    got, ticks = asyncio.run(with_heartbeat(main))
    for g, w in zip(got, want):
        assert g.probs.tolist() == w.probs.tolist()
        assert g.token_logprobs == w.token_logprobs
    assert ticks, "the event loop never ran during the model calls"

    async def the_rest():
        return (
            await asyncio.gather(*(lm.achoose(p, CHOICES, normalization="mean") for p in prompts)),
            await lm.achoice_logprobs(PROMPTS[0], CHOICES),
        )

    indices, logprobs = asyncio.run(the_rest())
    assert indices == [lm.choose(p, CHOICES, normalization="mean") for p in prompts]
    assert logprobs == lm.choice_logprobs(PROMPTS[0], CHOICES)


def test_gather_of_acomplete_and_astream_equal_the_sync_calls(local_lm):
    lm = local_lm
    prompts = PROMPTS * 5  # 20 calls
    want = [lm.complete(p, stop="\n", max_tokens=12) for p in prompts]
    want_pieces = list(lm.stream(PROMPTS[1], stop=" ", max_tokens=12))

    async def main():
        texts = await asyncio.gather(*(lm.acomplete(p, stop="\n", max_tokens=12) for p in prompts))
        pieces = [piece async for piece in lm.astream(PROMPTS[1], stop=" ", max_tokens=12)]
        return texts, pieces

    (texts, pieces), ticks = asyncio.run(with_heartbeat(main))
    assert texts == want
    assert pieces == want_pieces and "".join(pieces) == lm.complete(PROMPTS[1], stop=" ", max_tokens=12)
    assert len(ticks) >= 3
    assert max(np.diff(ticks), default=0.0) < 0.5  # the loop was never held for long


def test_ascore_equals_score(local_lm):
    lm = local_lm
    requests = [ScoreRequest(p, CHOICES, normalization="char") for p in PROMPTS * 5]
    want = list(score(lm, requests, batch_size=8))

    async def main():
        return [r async for r in ascore(lm, requests, batch_size=8)]

    got = asyncio.run(main())
    np.testing.assert_array_equal([r.probs for r in got], [r.probs for r in want])


def test_errors_are_typed_and_cancellation_does_not_wedge_the_model(local_lm):
    lm = local_lm

    async def main():
        with pytest.raises(InvalidChoicesError):
            await lm.achoose(PROMPTS[0], [" a", " a"])
        with pytest.raises(InvalidPromptError):
            await lm.acomplete(42)
        tasks = [asyncio.create_task(lm.achoose(p, CHOICES)) for p in PROMPTS * 5]
        await asyncio.sleep(0)
        for task in tasks[::2]:
            task.cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        pieces = lm.astream(PROMPTS[0], max_tokens=20)
        try:
            async for _ in pieces:
                break  # stopped early: the generation is closed in the model thread
        finally:
            await pieces.aclose()
        return done, await asyncio.wait_for(lm.achoose(PROMPTS[1], CHOICES), 60)

    done, after = asyncio.run(main())
    assert any(isinstance(d, asyncio.CancelledError) for d in done)
    assert [d for d in done if isinstance(d, int)] == [
        lm.choose(p, CHOICES) for p, d in zip(PROMPTS * 5, done) if isinstance(d, int)
    ]
    assert after == lm.choose(PROMPTS[1], CHOICES)
    assert not worker_for(lm).lock.locked
