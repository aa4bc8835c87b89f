"""The scoring contract on `OpenAI` through a real llama_cpp.server serving the tiny random Llama (F32 GGUF),
against `LLaMa` on the same file as the reference. ``model_calls`` counts the HTTP requests sent."""

import numpy as np
import pytest

pytest.importorskip("openai")
pytest.importorskip("llama_cpp.server")

from autocog.lm import LLaMa  # noqa: E402
from autocog.lm.openai import OpenAI  # noqa: E402
from autocog.models import tiny_llama_gguf  # noqa: E402
from autocog.lm.errors import StrategyUnavailableError  # noqa: E402
from contract import ScoringContract, assert_logprobs_close, greedy_reference  # noqa: E402
from test_openai import CANNOT_BE_EXACT, LlamaServer  # noqa: E402

pytestmark = pytest.mark.slow  # starts a server


@pytest.fixture(scope="module")
def llama_server():
    server = LlamaServer(tiny_llama_gguf(), n_ctx=1024)
    yield server
    server.stop()


class TestOpenAILlamaServer(ScoringContract):
    atol = 1e-3         # the server's batches round differently from LLaMa's (F32 weights, F16 KV cache)
    batch_atol = 1e-4
    reports_greedy = False
    hostile_refusable = CANNOT_BE_EXACT  # what cannot be exact through a text-only server (docs/openai.md)
    context_known_to_server_only = True   # llama_cpp.server does not publish n_ctx: its 400 becomes the typed error

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
        for prompt, choices in (("Count:", [" 1", " 10", " 100"]), ("Count: 1", [" the", " the quick", " the quick brown"])):
            result = lm.choice_distribution(prompt, choices)
            assert np.all(result.probs > 0) and result.probs.sum() == pytest.approx(1.0, abs=1e-9)
            assert [len(lp) for lp in result.token_logprobs] == [len(lm.tokenize(c)) for c in choices]
            assert_logprobs_close(result.token_logprobs, reference(prompt, choices), self.atol)

    # pmi's unconditional context differs from LLaMa's (BOS) today: the fix is in progress (issue 11).
    @pytest.mark.xfail(strict=True, reason="OpenAI's pmi context is '' (no log-probs on llama_cpp.server), not BOS")
    def test_normalizations(self, lm, reference):
        super().test_normalizations(lm, reference)

    @pytest.mark.parametrize("normalization", ["sum", "mean", "char", pytest.param("pmi", marks=pytest.mark.xfail(
        strict=True, reason="OpenAI's pmi context is '' (no log-probs on llama_cpp.server), not BOS"))])
    def test_batch_equals_one_by_one(self, lm, normalization):
        super().test_batch_equals_one_by_one(lm, normalization)
