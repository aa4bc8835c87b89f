"""`autocog.cappr.huggingface.classify` against CAPPr's references (``cappr.huggingface.classify_no_cache``,
and ``cappr.huggingface.classify`` for the cache) on a tiny Llama (byte-level BPE, BOS) and a tiny GPT-2
(SentencePiece-style tokenizer, no BOS)."""

from contextlib import contextmanager

import numpy as np
import pytest
from cappr_base import COMPLETIONS, PROMPTS, assert_proba_close
from cappr_contract import CapprContract
from cappr_models import tiny_gpt2_pair, tiny_llama_pair
from cappr_reference import hf_classify as cappr_classify
from cappr_reference import hf_no_cache as cappr_no_cache

import autocog.cappr.huggingface.classify as ours
from autocog.errors import CacheClearedError

# CAPPr's own calls pass past_key_values, which transformers 5 deprecates
pytestmark = pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated:FutureWarning")


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def model(request):
    return tiny_llama_pair() if request.param == "llama" else tiny_gpt2_pair()


class TestHuggingface(CapprContract):
    ours = ours
    reference = cappr_no_cache
    cached_reference = cappr_classify

    @contextmanager
    def cached(self, module, model, prefix):
        with module.cache(model, prefix) as cached:
            yield cached, {}

    def test_cache_model_nested(self, model):
        prompts, completions = ["What is the capital", "Yes or no?"], COMPLETIONS["multi"]
        ours_cached = ours.cache_model(ours.cache_model(model, "Question:"), " What")
        reference_cached = cappr_classify.cache_model(cappr_classify.cache_model(model, "Question:"), " What")
        assert_proba_close(
            ours.predict_proba(prompts, completions, ours_cached),
            cappr_classify.predict_proba(prompts, completions, reference_cached),
        )

    def test_cache_per_prompt_prefixes(self, model):
        prefixes, prompts = ["Question:", "The quick"], ["What is", "brown fox"]
        with ours.cache(model, prefixes) as cached:
            probs = ours.predict_proba(prompts, COMPLETIONS["multi"], cached, batch_size=2)
        with cappr_classify.cache(model, prefixes) as cached:
            reference = cappr_classify.predict_proba(prompts, COMPLETIONS["multi"], cached, batch_size=2)
        assert_proba_close(probs, reference)

    def test_cache_cleared_on_exit(self, model):
        with ours.cache(model, "Question:") as cached:
            pass
        with pytest.raises(CacheClearedError, match="no longer usable"):
            ours.predict_proba(PROMPTS, COMPLETIONS["multi"], cached)
        with ours.cache(model, "Question:", clear_cache_on_exit=False) as kept:
            inside = ours.predict_proba(PROMPTS, COMPLETIONS["multi"], kept)
        np.testing.assert_allclose(ours.predict_proba(PROMPTS, COMPLETIONS["multi"], kept), inside, atol=1e-6)

    @pytest.mark.parametrize("batch_size", [1, 2, 16])
    def test_batch_size_changes_nothing(self, model, batch_size):
        args = (PROMPTS, COMPLETIONS["multi"], model)
        np.testing.assert_allclose(
            ours.predict_proba(*args, batch_size=batch_size, batch_size_completions=1),
            cappr_no_cache.predict_proba(*args),
            atol=1e-4,
        )

    def test_batch_size_counts_cappr_rows(self, model, monkeypatch):
        """CAPPr's pass over batch_size prompts has batch_size x completions rows; one scoring call here takes
        as many prompts (one row each), so 3 prompts x 2 completions at batch_size=2 go in one call."""
        calls = []
        evaluate = ours.TfLM.evaluate_trees

        def counted(lm, jobs, *args, **kwargs):
            calls.append(len(jobs))
            return evaluate(lm, jobs, *args, **kwargs)

        monkeypatch.setattr(ours.TfLM, "evaluate_trees", counted)
        prompts, completions = ["a b", "c d", "e f"], ["yes", "no way"]
        probs = ours.predict_proba(prompts, completions, model, batch_size=2)
        assert calls == [3]
        calls.clear()
        ours.predict_proba(prompts, completions, model, batch_size=1)
        assert calls == [2, 1]
        assert_proba_close(probs, cappr_no_cache.predict_proba(prompts, completions, model))

    def test_training_mode_restored(self, model):
        mod, _ = model
        mod.train()
        try:
            ours.predict_proba(PROMPTS, COMPLETIONS["multi"], model)
            assert mod.training
        finally:
            mod.eval()


BAD_INPUTS = [
    ("predict_proba", ([], ["a", "b"]), {}),
    ("predict_proba", ({"x", "y"}, ["a", "b"]), {}),
    ("predict_proba", (PROMPTS, "ab"), {}),
    ("predict_proba", (PROMPTS, ["a", ""]), {}),
    ("predict_proba", (PROMPTS, ["", ""]), {}),
    ("predict_proba", (PROMPTS, ["a", "b"]), {"end_of_prompt": "\n"}),
    ("predict_proba", (PROMPTS, ["a", "b"]), {"end_of_prompt": 1}),
    ("predict_proba", (PROMPTS, ["a", "b"]), {"prior": (0.5, 0.6)}),
    ("predict_proba", (PROMPTS, ["a", "b"]), {"prior": (1.0,)}),
    ("predict_proba", (PROMPTS, ["a", "b"]), {"prior": [[0.5, 0.5]]}),
    ("predict_proba", (PROMPTS, ["a"]), {}),
    ("predict_proba", (PROMPTS, ["a", "b"]), {"log_marg_probs_completions": [[None], [None]]}),
    ("predict", (PROMPTS, ["a"]), {}),
    ("log_probs_conditional", ("", ["a"]), {}),
    ("log_probs_conditional_examples", ([],), {}),
    ("token_logprobs", ([],), {}),
]


@pytest.mark.parametrize("name, args, kwargs", BAD_INPUTS)
def test_input_checks_raise_what_cappr_raises(name, args, kwargs):
    """Every check runs before any model call (the model here is None) and raises CAPPr's error type."""
    with pytest.raises((TypeError, ValueError)) as reference:
        getattr(cappr_no_cache, name)(*args, model_and_tokenizer=(None, None), **kwargs)
    with pytest.raises(reference.type) as error:
        getattr(ours, name)(*args, model_and_tokenizer=(None, None), **kwargs)
    assert str(error.value) == str(reference.value)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"prompt": "", "completions": ["a"]}, ValueError),
        ({"prompt": 1, "completions": ["a"]}, TypeError),
        ({"prompt": "x", "completions": ["a", "b"], "prior": (0.2, 0.2)}, ValueError),
        ({"prompt": "x", "completions": ["a"]}, ValueError),
        ({"prompt": "x", "completions": ["a"], "end_of_prompt": "\t"}, ValueError),
    ],
)
def test_example_checks(kwargs, error):
    from cappr_reference import cappr

    from autocog.cappr import Example

    with pytest.raises(error):
        cappr.Example(**kwargs)
    with pytest.raises(error):
        Example(**kwargs)
