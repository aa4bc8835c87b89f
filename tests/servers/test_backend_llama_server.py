"""The scoring contract on `OpenAI` through llama.cpp's C++ ``llama-server`` (`scripts/setup_llama_server.sh`) serving
the tiny random Llama (F32 GGUF, F32 KV cache, 2 slots), against `LLaMa` on the same file with an F32 KV cache as
the reference. ``model_calls`` counts the HTTP requests sent; every hostile case checks the server is alive after."""

import pytest

pytest.importorskip("openai")

from contract import ScoringContract, greedy_reference

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

    @pytest.fixture(scope="class")
    @classmethod
    def alive(cls, tiny_llama_cpp_server):
        return tiny_llama_cpp_server.alive  # /health after every hostile case: no request may take it down
