"""`autocog.cappr.llama_cpp.classify` against CAPPr's references (``cappr.llama_cpp._classify_no_cache``, and
``cappr.llama_cpp.classify`` for the cache) on the tiny Llama's F32 GGUF."""

from contextlib import contextmanager

import numpy as np
import pytest
from cappr_base import COMPLETIONS, PROMPTS, assert_proba_close
from cappr_contract import CapprContract
from cappr_reference import llama_classify as cappr_classify
from cappr_reference import llama_no_cache as cappr_no_cache

import autocog.cappr.llama_cpp.classify as ours
from autocog.gguf.models import tiny_llama_gguf


@pytest.fixture(scope="module")
def model():
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(str(tiny_llama_gguf()), n_ctx=512, logits_all=True, verbose=False)


class TestLlamaCpp(CapprContract):
    ours = ours
    reference = cappr_no_cache
    cached_reference = cappr_classify

    @contextmanager
    def cached(self, module, model, prefix):
        with module.cache(model, prefix):
            yield model, {"reset_model": False}

    def test_token_logprobs(self, model):
        """CAPPr's no-cache module has no token_logprobs of its own: the main module's is the reference."""
        texts = ["a b c", "Paris", "The quick brown fox"]
        reference = cappr_classify.token_logprobs(texts, model)
        for o, r in zip(ours.token_logprobs(texts, model), reference):
            assert o[0] is None and len(o) == len(r)
            np.testing.assert_allclose(o[1:], r[1:], atol=1e-4)

    def test_cache_model_state(self, model):
        """The prefix lives in the Llama, as in CAPPr: kept with reset_model=False, dropped by a reset."""
        model.reset()
        ours.cache_model(model, "Question:")
        n_tokens = model.n_tokens
        assert n_tokens > 0
        cached = ours.predict_proba(["What is the capital"], COMPLETIONS["multi"], model, reset_model=False)
        assert model.n_tokens == n_tokens
        reference = cappr_classify.predict_proba(
            ["What is the capital"], COMPLETIONS["multi"], model, reset_model=False
        )
        assert_proba_close(cached, reference)
        plain = ours.predict_proba(["What is the capital"], COMPLETIONS["multi"], model)
        assert model.n_tokens == 0 and np.abs(plain - cached).max() > 1e-3

    def test_single_token_shortcut(self, model):
        probs = ours.predict_proba(PROMPTS, COMPLETIONS["single_token"], model)
        assert_proba_close(probs, cappr_classify.predict_proba(PROMPTS, COMPLETIONS["single_token"], model))


def test_checks_before_the_model():
    """A bad input raises CAPPr's error before the Llama is touched (here: None)."""
    with pytest.raises(ValueError, match="non-empty"):
        ours.predict_proba([], ["a", "b"], None)
    with pytest.raises(TypeError, match="ordered"):
        ours.predict_proba({"a"}, ["a", "b"], None)
    with pytest.raises(ValueError, match="sum to 1"):
        ours.predict_proba(PROMPTS, ["a", "b"], None, prior=(0.5, 0.6))
