"""The scoring contract on `OpenAI` through a real llama_cpp.server serving the tiny random Llama (F32 GGUF),
against `LLaMa` on the same file as the reference. ``model_calls`` counts the HTTP requests sent."""

import numpy as np
import pytest

pytest.importorskip("openai")
pytest.importorskip("llama_cpp.server")

from contract import ScoringContract, greedy_reference
from llama_server import (
    CANNOT_BE_EXACT,
    LlamaServer,
)

from autocog.errors import StrategyUnavailableError
from autocog.gguf.models import tiny_llama_gguf
from autocog.lm import LLaMa, ScoreRequest, score
from autocog.lm.openai import OpenAI

pytestmark = pytest.mark.slow  # starts a server


@pytest.fixture(scope="module")
def llama_server():
    server = LlamaServer(tiny_llama_gguf(), n_ctx=1024)
    yield server
    server.stop()


class TestOpenAILlamaServer(ScoringContract):
    atol = 1e-3  # the server's batches round differently from LLaMa's (F32 weights, F16 KV cache)
    batch_atol = 1e-4
    reports_greedy = False
    hostile_refusable = CANNOT_BE_EXACT  # what cannot be exact through a text-only server (docs/openai.md)
    context_known_to_server_only = True  # llama_cpp.server does not publish n_ctx: its 400 becomes the typed error

    @pytest.fixture(scope="class")
    @classmethod
    def lm(cls, llama_server):
        lm = OpenAI(model="tiny", base_url=llama_server.base_url, api_key="none", max_retries=1, timeout=60)
        yield lm
        lm.close()

    @pytest.fixture(scope="class")
    @classmethod
    def reference(cls):
        local = LLaMa(**LLaMa.create(model_path=tiny_llama_gguf(), n_ctx=1024))
        return lambda prompt, choices: greedy_reference(local, prompt, choices)

    def model_calls(self, lm) -> int:
        return sum(lm.requests.get(k, 0) for k in ("completions", "chat"))

    def test_prefix_choices_stay_reachable(self, lm, reference):
        # A text-only server merges "Count: 1" + "10" into other tokens; that boundary is refused, typed, and
        # the same choices after a word boundary are scored like the reference.
        with pytest.raises(StrategyUnavailableError, match="boundary"):
            lm.choice_distribution("Count: 1", ["1", "10", "100"])
        self.check_prefix_choices(lm, reference, "Count:", [" 1", " 10", " 100"])
        self.check_prefix_choices(lm, reference, "Count: 1", [" the", " the quick", " the quick brown"])

    # pmi: the tiny model's unconditional context is BOS alone, and llama_cpp.server gives no log-prob after BOS
    # alone (docs/openai.md, "pmi"): refused, typed, in a batch as alone; with an explicit context it is exact.
    def test_pmi_subtracts_the_unconditional_score(self, lm, reference):
        for call in (
            lambda: lm.choice_distribution("go:", [" a", " b"], normalization="pmi"),
            lambda: list(score(lm, [ScoreRequest("go:", [" a", " b"], "pmi")] * 2)),
        ):
            with pytest.raises(StrategyUnavailableError, match="empty prompt"):
                call()
        explicit = OpenAI(model="tiny", base_url=lm.base_url, api_key="none", unconditional_prompt="Hi")
        pmi = explicit.choice_distribution("go:", [" a", " the quick"], normalization="pmi")
        np.testing.assert_allclose(
            [sum(lp) for lp in pmi.unconditional_logprobs],
            [sum(lp) for lp in reference("Hi", [" a", " the quick"])],
            atol=self.atol,
        )
        explicit.close()

    @pytest.mark.parametrize("normalization", ["sum", "mean", "char"])  # pmi: above
    def test_batch_equals_one_by_one(self, lm, normalization):
        super().test_batch_equals_one_by_one(lm, normalization)
