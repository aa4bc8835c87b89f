"""The drop-in's contract, one class for every local backend (CAPPr's tests/_base.py layout, our own code):
a subclass gives ``ours`` (the autocog.cappr module), ``reference`` (CAPPr's no-cache reference module),
``cached_reference`` (CAPPr's cached module), the ``model`` argument and ``cached`` (the cache context)."""

from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest
from cappr_base import COMPLETIONS, PROMPTS, assert_log_probs_close, assert_proba_close, assert_ragged_close
from cappr_reference import cappr

from autocog.cappr import Example

PREFIX = "Question:"


class CapprContract:
    ours = None
    reference = None
    cached_reference = None

    @contextmanager
    def cached(self, module, model, prefix):
        """(model argument, extra keywords) inside ``module``'s cache of ``prefix``."""
        raise NotImplementedError

    # --- log-probs ----------------------------------------------------------------------------------------
    @pytest.mark.parametrize("kind", sorted(COMPLETIONS))
    def test_log_probs_conditional(self, model, kind):
        ours = self.ours.log_probs_conditional(PROMPTS, COMPLETIONS[kind], model)
        assert_log_probs_close(ours, self.reference.log_probs_conditional(PROMPTS, COMPLETIONS[kind], model))

    @pytest.mark.parametrize("end_of_prompt", [" ", ""])
    def test_end_of_prompt(self, model, end_of_prompt):
        """Against CAPPr's main module: its no-cache module joins prompt and completion before tokenizing, which
        with end_of_prompt="" glues words for a SentencePiece tokenizer ("foxParis"); the main module (and
        ours) tokenize them apart."""
        args = (PROMPTS[:2], COMPLETIONS["multi"], model)
        assert_log_probs_close(
            self.ours.log_probs_conditional(*args, end_of_prompt=end_of_prompt),
            self.cached_reference.log_probs_conditional(*args, end_of_prompt=end_of_prompt),
        )

    def test_single_prompt(self, model):
        completions = COMPLETIONS["multi"]
        ours = self.ours.log_probs_conditional(PROMPTS[0], completions, model)
        assert_log_probs_close(ours, self.reference.log_probs_conditional(PROMPTS[0], completions, model), single=True)
        probs = self.ours.predict_proba(PROMPTS[0], completions, model)
        assert_proba_close(probs, self.reference.predict_proba(PROMPTS[0], completions, model))
        assert probs.shape == (3,)
        assert self.ours.predict(PROMPTS[0], completions, model) == self.reference.predict(
            PROMPTS[0], completions, model
        )

    def test_series_with_odd_index(self, model):
        prompts = pd.Series(PROMPTS, index=[1, 3, 5])
        completions = pd.Series(COMPLETIONS["multi"], index=[7, 9, 11])
        probs = self.ours.predict_proba(prompts, completions, model)
        assert_proba_close(probs, self.reference.predict_proba(list(prompts), list(completions), model))
        assert self.ours.predict(prompts, completions, model) == self.reference.predict(
            list(prompts), list(completions), model
        )

    def test_token_logprobs(self, model):
        texts = ["a b c", "Paris", "The quick brown fox"]
        ours = self.ours.token_logprobs(texts, model)
        reference = self.reference.token_logprobs(texts, model)
        assert [len(x) for x in ours] == [len(x) for x in reference]
        for o, r in zip(ours, reference):
            assert o[0] is None and r[0] is None
            np.testing.assert_allclose(o[1:], r[1:], atol=1e-4)
        assert self.ours.token_logprobs("a b c", model)[0] is None

    # --- probabilities --------------------------------------------------------------------------------------
    @pytest.mark.parametrize("prior", [None, (0.5, 0.3, 0.2), (0.0, 0.5, 0.5)])
    @pytest.mark.parametrize("normalize", [True, False])
    def test_predict_proba(self, model, prior, normalize):
        args = (PROMPTS, COMPLETIONS["multi"], model)
        ours = self.ours.predict_proba(*args, prior=prior, normalize=normalize)
        assert ours.shape == (len(PROMPTS), 3)
        assert_proba_close(ours, self.reference.predict_proba(*args, prior=prior, normalize=normalize), normalize)

    def test_one_completion_unnormalized(self, model):
        ours = self.ours.predict_proba(PROMPTS, ["Paris"], model, normalize=False)
        assert ours.shape == (len(PROMPTS), 1) and np.all(ours < 1)
        assert_proba_close(ours, self.reference.predict_proba(PROMPTS, ["Paris"], model, normalize=False), False)

    @pytest.mark.parametrize("discount", [0.5, 1.0])
    def test_discount_completions(self, model, discount):
        args = (PROMPTS, COMPLETIONS["multi"], model)
        ours = self.ours.predict_proba(*args, discount_completions=discount)
        assert_proba_close(ours, self.reference.predict_proba(*args, discount_completions=discount))
        marginal = self.ours.token_logprobs(COMPLETIONS["multi"], model)
        again = self.ours.predict_proba(*args, discount_completions=discount, log_marg_probs_completions=marginal)
        np.testing.assert_allclose(again, ours, atol=1e-6)

    def test_predict(self, model):
        ours = self.ours.predict(PROMPTS, COMPLETIONS["multi"], model, prior=(0.2, 0.3, 0.5))
        assert ours == self.reference.predict(PROMPTS, COMPLETIONS["multi"], model, prior=(0.2, 0.3, 0.5))
        assert all(isinstance(x, str) and x in COMPLETIONS["multi"] for x in ours)

    # --- examples --------------------------------------------------------------------------------------------
    def examples(self, kind):
        """Non-constant numbers of completions, a prior, normalize=False."""
        return [
            kind(PROMPTS[0], ("Paris", "Berlin is"), prior=(0.25, 0.75)),
            kind(PROMPTS[1], ("jumps", "the lazy dog", "A")),
            kind(PROMPTS[2], ("Yes",), normalize=False),
        ]

    @pytest.mark.parametrize("kind", [Example, cappr.Example], ids=["autocog", "cappr"])
    def test_examples(self, model, kind):
        examples, reference = self.examples(kind), self.examples(cappr.Example)
        assert_log_probs_close(
            self.ours.log_probs_conditional_examples(examples, model),
            self.reference.log_probs_conditional_examples(reference, model),
        )
        assert_ragged_close(
            self.ours.predict_proba_examples(examples, model),
            self.reference.predict_proba_examples(reference, model),
            [e.normalize for e in reference],
        )
        assert self.ours.predict_examples(examples[:2], model) == self.reference.predict_examples(reference[:2], model)

    def test_examples_constant(self, model):
        examples = [Example(p, ("Paris", "no", "the lazy dog"), prior=(0.2, 0.2, 0.6)) for p in PROMPTS]
        reference = [cappr.Example(p, ("Paris", "no", "the lazy dog"), prior=(0.2, 0.2, 0.6)) for p in PROMPTS]
        ours = self.ours.predict_proba_examples(examples, model)
        assert_proba_close(ours, self.reference.predict_proba_examples(reference, model))
        single = self.ours.predict_proba_examples(examples[0], model)
        assert single.shape == (3,)
        np.testing.assert_allclose(single, ours[0], atol=1e-6)
        assert self.ours.predict_examples(examples[0], model) == self.reference.predict_examples(reference[0], model)

    # --- cache ----------------------------------------------------------------------------------------------
    def test_cache(self, model):
        prompts, completions = ["What is the capital", "Yes or no?"], COMPLETIONS["multi"]
        with self.cached(self.ours, model, PREFIX) as (cached, kw):
            ours = self.ours.predict_proba(prompts, completions, cached, **kw)
            ours_lp = self.ours.log_probs_conditional(prompts, completions, cached, **kw)
        with self.cached(self.cached_reference, model, PREFIX) as (cached, kw):
            reference = self.cached_reference.predict_proba(prompts, completions, cached, **kw)
            reference_lp = self.cached_reference.log_probs_conditional(prompts, completions, cached, **kw)
        assert_proba_close(ours, reference)
        assert_log_probs_close(ours_lp, reference_lp)
        # the prefix matters, and is gone after the context
        plain = self.ours.predict_proba(prompts, completions, model)
        assert np.abs(plain - ours).max() > 1e-3
