"""The scoring contract on `OpenAI` through llama.cpp's C++ ``llama-server`` (`scripts/setup_llama_server.sh`) serving
the tiny random Llama (F32 GGUF, F32 KV cache, 2 slots), against `LLaMa` on the same file with an F32 KV cache as
the reference. ``model_calls`` counts the HTTP requests sent; every hostile case checks the server is alive after."""

import time

import pytest

pytest.importorskip("openai")

from contract import ScoringContract, greedy_reference
from hostile import check_cases, hostile_cases

from autocog.errors import AutoCogError
from autocog.gguf.models import tiny_llama_gguf
from autocog.lm import LLaMa
from autocog.lm.openai import OpenAI

pytestmark = pytest.mark.slow  # starts a server

F32 = 0  # GGML_TYPE_F32, the KV cache type of both sides


@pytest.fixture(scope="session")
def tiny_f32_llama():
    pytest.importorskip("llama_cpp")
    return LLaMa(**LLaMa.create(model_path=tiny_llama_gguf(), n_ctx=1024, type_k=F32, type_v=F32))


class TestOpenAILlamaCppServer(ScoringContract):
    atol = 1e-4  # F32 weights and KV cache on both sides, no flash attention (measured ~1e-6)
    batch_atol = 1e-5  # the rows of a batch and of one request are the same contexts, cache or not

    @pytest.fixture(scope="class")
    @classmethod
    def lm(cls, tiny_llama_cpp_server):
        lm = OpenAI(base_url=tiny_llama_cpp_server.base_url, api_key="none", max_retries=1, timeout=60)
        yield lm
        lm.close()

    @pytest.fixture(scope="class")
    @classmethod
    def reference(cls, tiny_f32_llama):
        return lambda prompt, choices: greedy_reference(tiny_f32_llama, prompt, choices)

    def model_calls(self, lm) -> int:
        return sum(lm.requests.get(k, 0) for k in ("completions", "chat"))

    def test_hostile_input_scores_like_the_reference_or_refuses_typed(self, lm, reference, tiny_llama_cpp_server):
        # The contract's check, with the server's /health after every case: no request may take it down.
        tally = check_cases(
            lambda p, c: lm.choice_logprobs(p, c),
            reference,
            hostile_cases(seed=15, count=self.hostile_count),
            tolerance=self.atol,
            typed=(AutoCogError,),
            deadline=time.monotonic() + self.hostile_seconds,
            alive=tiny_llama_cpp_server.alive,
        )
        assert tally.total >= self.hostile_count // 2, f"only {tally.total} cases in {self.hostile_seconds} s"
        assert tally.refused_as_reference == sum(tally.refused.values()), tally.reasons  # refuses only what LLaMa does
        assert tally.scored >= tally.total * 3 // 4, (tally.scored, tally.reasons)
