"""The scoring contract on `OpenAI` through a real vLLM server (CPU build, `scripts/setup_vllm.sh`) serving
SmolLM2's transformers directory, against `TfLM` on the same directory scoring each prompt + choice in one
full forward pass. ``model_calls`` counts the HTTP requests sent. (The tiny random Llama cannot run on vLLM's
CPU attention, head_dim 16.)"""

import pytest

pytest.importorskip("openai")

from conftest import brute_force_tf
from contract import ScoringContract
from vllm_server import smollm2_server

from autocog.lm.openai import OpenAI

pytestmark = pytest.mark.slow  # starts a server


@pytest.fixture(scope="module")
def vllm_contract_server():
    server = smollm2_server()
    yield server
    server.stop()


class TestOpenAIVllm(ScoringContract):
    atol = 1e-3  # vLLM's float32 CPU kernels against transformers' (measured ~1e-5)
    batch_atol = 1e-4
    reports_greedy = False
    hostile_count = 10  # each case also runs SmolLM2's brute force through transformers
    hostile_seconds = 300.0

    @pytest.fixture(scope="class")
    @classmethod
    def lm(cls, vllm_contract_server):
        lm = OpenAI(base_url=vllm_contract_server.base_url, api_key="none", max_retries=1, timeout=120)
        yield lm
        lm.close()

    @pytest.fixture(scope="class")
    @classmethod
    def reference(cls, smol_tf):
        return lambda prompt, choices: brute_force_tf(smol_tf, prompt, choices)

    def model_calls(self, lm) -> int:
        return sum(lm.requests.get(k, 0) for k in ("completions", "chat"))
