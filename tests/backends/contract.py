"""The scoring contract every backend keeps, written once (like CAPPr's ``tests/_base.py``).

A backend's test module subclasses `ScoringContract` and overrides the ``lm`` fixture (and, when the backend
has a better one, the ``reference`` fixture: a brute-force ``(prompt, choices) -> [[log-prob per token]]``
that scores each prompt + choice on its own, from scratch). ``model_calls(lm)`` counts the work the model
did (default: ``lm.tokens_evaluated``); the checks compare it before and after a bad call.

    class TestMyBackend(ScoringContract):
        @pytest.fixture(scope="class")
        def lm(self):
            return MyBackend(...)

OpenAI hook: an ``OpenAI`` subclass overrides ``lm`` (a client on a test server), ``reference`` (echo of each
prompt + choice) and ``model_calls`` (requests sent), and sets ``atol`` / ``batch_atol`` to what the server's
log-probs allow.
"""

from __future__ import annotations

import math
import random
import time

import numpy as np
import pytest
from hostile import check_cases, hostile_cases
from randomized import (
    make_prompts,
    random_choices,
    random_text,
)

from autocog.core.checks import split_boundary
from autocog.errors import AutoCogError
from autocog.eval.batch import predict_proba
from autocog.lm import ContextLengthError, InvalidChoicesError, InvalidPromptError, ScoreRequest, score

STRUCTURED_CHOICE_SETS = [
    ["1", "10", "100"],  # each a prefix of the next
    [" a", " b", " c", " d"],  # single tokens
    [" the quick", " the quick brown fox", " the lazy dog", " the"],  # shared prefixes
    [" Yes", "Yes", " yes"],  # a leading space matters
]

LONG_PROMPT = "the quick brown fox " * 800

BAD_INPUTS = [  # (prompt, choices, keyword arguments, error, words of the message)
    ("p", [], {}, InvalidChoicesError, "empty"),
    ("p", [" a", " a"], {}, InvalidChoicesError, "duplicates"),
    ("p", [" a", ""], {}, InvalidChoicesError, "empty string"),
    ("p", [" a", 3], {}, InvalidChoicesError, "not a str"),
    ("p", " a", {}, InvalidChoicesError, "list of strings"),
    (None, [" a", " b"], {}, InvalidPromptError, "str"),
    (42, [" a", " b"], {}, InvalidPromptError, "str"),
    ("p", [" a", " b"], {"normalization": "max"}, ValueError, "normalization"),
    ("p", [" a", " b"], {"end": 3}, TypeError, "end"),
    (LONG_PROMPT, [" a", " b"], {}, ContextLengthError, "tokens"),
]


def greedy_reference(lm, prompt: str, choices: list[str]) -> list[list[float]]:
    """Brute force through ``lm.greedy``: one call per token of every choice, each on the whole sequence."""
    prompt, continuations = split_boundary(prompt, choices)
    ids = lm.tokenize(prompt, bos=True)
    out = []
    for text in continuations:
        tokens = lm.tokenize(text)
        out.append([float(lm.greedy(ids + tokens[:k])[t]) for k, t in enumerate(tokens)])
    return out


def assert_logprobs_close(actual, expected, atol: float) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert len(a) == len(e)
        np.testing.assert_allclose(a, e, atol=atol, rtol=0)


class ScoringContract:
    """The contract; see the module docstring."""

    atol = 1e-4  # scores against the brute-force reference
    batch_atol = 1e-5  # a batch against the same prompts one by one (packed passes round differently)

    @pytest.fixture(scope="class")
    @classmethod
    def lm(cls):
        raise NotImplementedError("a backend's test class overrides the lm fixture")

    @pytest.fixture(scope="class")
    @classmethod
    def reference(cls, lm):
        return lambda prompt, choices: greedy_reference(lm, prompt, choices)

    def model_calls(self, lm) -> int:
        return lm.tokens_evaluated

    # --- the boundary convention ---------------------------------------------------------------------
    def test_trailing_space_of_the_prompt_moves_into_the_choices(self, lm):
        moved = lm.choice_logprobs("Answer: ", ["Yes", "No"])
        explicit = lm.choice_logprobs("Answer:", [" Yes", " No"])
        assert_logprobs_close(moved, explicit, 1e-6)

    def test_a_leading_space_is_part_of_the_choice(self, lm, reference):
        assert lm.tokenize(" Yes") != lm.tokenize("Yes")
        with_space, without = lm.choice_logprobs("Answer:", [" Yes", "Yes"])
        assert math.fsum(with_space) != pytest.approx(math.fsum(without))
        assert_logprobs_close([with_space, without], reference("Answer:", [" Yes", "Yes"]), self.atol)

    def test_bos_once_before_the_prompt_never_before_a_choice(self, lm):
        result = lm.choice_distribution("x", [" y", " z"])
        bos = getattr(lm, "bos_token_id", None)
        if result.tree is not None and bos is not None:
            assert bos not in result.tree.tokens

    # --- prefixes and structure ----------------------------------------------------------------------
    def test_prefix_choices_stay_reachable(self, lm, reference):
        for choices in (["1", "10", "100"], [" the", " the quick", " the quick brown"]):
            self.check_prefix_choices(lm, reference, "Count: 1", choices)

    def check_prefix_choices(self, lm, reference, prompt: str, choices: list[str]) -> None:
        result = lm.choice_distribution(prompt, choices)
        assert np.all(result.probs > 0) and result.probs.sum() == pytest.approx(1.0, abs=1e-9)
        assert [len(lp) for lp in result.token_logprobs] == [len(lm.tokenize(c)) for c in choices]
        assert_logprobs_close(result.token_logprobs, reference(prompt, choices), self.atol)
        np.testing.assert_allclose(result.scores, [math.fsum(lp) for lp in result.token_logprobs], atol=1e-12)

    def test_end_is_scored_after_each_choice(self, lm, reference):
        choices = [" 1", " 10"]
        assert all(lm.tokenize(c + "\n") == lm.tokenize(c) + lm.tokenize("\n") for c in choices)
        ended = lm.choice_distribution("Count:", choices, end="\n")
        assert_logprobs_close(ended.token_logprobs, reference("Count:", [c + "\n" for c in choices]), self.atol)
        if ended.tree is not None:
            assert ended.tree.paths[0] != ended.tree.paths[1]  # " 1" no longer ends inside " 10"

    @pytest.mark.parametrize("choices", STRUCTURED_CHOICE_SETS)
    def test_structured_choice_sets_match_brute_force(self, lm, reference, choices):
        assert_logprobs_close(
            lm.choice_logprobs("The answer is", choices), reference("The answer is", choices), self.atol
        )

    @pytest.mark.parametrize("n_choices", [1, 2, 5, 16, 64])
    def test_random_choice_sets_match_brute_force(self, lm, reference, n_choices):
        rng = random.Random(n_choices)
        prompt = "Question: " + random_text(rng, 12) + "\nAnswer:"
        choices = random_choices(rng, n_choices)
        assert_logprobs_close(lm.choice_logprobs(prompt, choices), reference(prompt, choices), self.atol)

    # --- bad input: typed errors, before any model call ----------------------------------------------
    context_known_to_server_only = False  # a server's context length: it refuses the request, unevaluated

    @pytest.mark.parametrize("prompt, choices, kwargs, error, words", BAD_INPUTS)
    def test_bad_input_fails_before_any_model_call(self, lm, prompt, choices, kwargs, error, words):
        choice = lm.choose("x", [" a", " b"])
        before = self.model_calls(lm)
        with pytest.raises(error, match=words):
            lm.choose(prompt, choices, **kwargs)
        with pytest.raises(error, match=words):
            list(score(lm, [ScoreRequest(prompt, choices, **kwargs)]))
        if not (error is ContextLengthError and self.context_known_to_server_only):
            assert self.model_calls(lm) == before
        assert lm.choose("x", [" a", " b"]) == choice  # still usable afterwards, with the same numbers

    def test_one_bad_request_fails_its_batch_before_any_model_call(self, lm):
        requests = [ScoreRequest(p, [" yes", " no"]) for p in make_prompts(4, seed=1)]
        requests.insert(2, ScoreRequest("p", [" a", " a"]))
        before = self.model_calls(lm)
        with pytest.raises(InvalidChoicesError, match="request 2: .*duplicates"):
            list(score(lm, requests, batch_size=8))
        with pytest.raises(ValueError, match="prior"):
            list(score(lm, [ScoreRequest("p", [" a", " b"], prior=[1.0])]))
        assert self.model_calls(lm) == before

    # --- batch == one by one; choice_distribution == a batch of one ---------------------------------
    @pytest.mark.parametrize("normalization", ["sum", "mean", "char", "pmi"])
    def test_batch_equals_one_by_one(self, lm, normalization):
        rng = random.Random(len(normalization))
        prompts = make_prompts(5, seed=2, header="Let's think step by step.\n") + make_prompts(4, seed=3)
        prompts += ["Count: 1", "Count: 1 10", "C"]
        choice_lists = [
            STRUCTURED_CHOICE_SETS[i % 4] if i % 3 else random_choices(rng, 1 + i % 7) for i in range(len(prompts))
        ]
        requests = [ScoreRequest(p, c, normalization) for p, c in zip(prompts, choice_lists)]
        batched = list(score(lm, requests, batch_size=5))
        single = [lm.choice_distribution(p, c, normalization=normalization) for p, c in zip(prompts, choice_lists)]
        for b, s in zip(batched, single):
            assert b.choices == s.choices and b.normalization == s.normalization == normalization
            assert_logprobs_close(b.token_logprobs, s.token_logprobs, self.batch_atol)
            np.testing.assert_allclose(b.scores, s.scores, atol=self.batch_atol * 4)
            np.testing.assert_allclose(b.probs, s.probs, atol=self.batch_atol * 4)
        probs = predict_proba(lm, prompts, choice_lists, normalization=normalization, batch_size=3)
        for p, s in zip(probs, single):
            np.testing.assert_allclose(p, s.probs, atol=self.batch_atol * 4)

    def test_choice_distribution_is_a_batch_of_one(self, lm):
        prompt, choices = "Question: What is the capital of France?\nAnswer:", [" Paris", " Berlin", " the quick"]
        for normalization, end in (("sum", None), ("mean", "\n"), ("pmi", None)):
            one = lm.choice_distribution(prompt, choices, normalization=normalization, end=end)
            batch = lm.score_batch([ScoreRequest(prompt, choices, normalization, end)])
            assert len(batch) == 1
            assert_logprobs_close(batch[0].token_logprobs, one.token_logprobs, self.batch_atol)
            np.testing.assert_allclose(batch[0].probs, one.probs, atol=self.batch_atol * 4)
            assert lm.choose(prompt, choices, normalization=normalization, end=end) == one.index
            assert_logprobs_close(lm.choice_logprobs(prompt, choices, end=end), one.token_logprobs, self.batch_atol)

    reports_greedy = True  # local backends see every row, so ChoiceResult.is_greedy is never None

    def test_greedy_flags_match_the_argmax_of_every_row(self, lm):
        prompt = "Question: What is the capital of France?\nAnswer:"
        if not self.reports_greedy:  # a backend without the rows says so: None, never a guess
            assert lm.choice_distribution(prompt, [" Paris", " Rome"]).is_greedy is None
            return
        ids = lm.tokenize(prompt, bos=True)
        greedy_tokens: list[int] = []
        for _ in range(3):
            greedy_tokens.append(int(np.argmax(lm.greedy(ids + greedy_tokens))))
        while len(greedy_tokens) > 1 and lm.tokenize(lm.detokenize(greedy_tokens)) != greedy_tokens:
            greedy_tokens.pop()  # a text whose tokens are the greedy ones (random models emit odd pieces)
        decoded = lm.detokenize(greedy_tokens)
        choices = [decoded, decoded[:-1] or decoded + "x", " Paris", " the quick brown", "1"]
        choices = list(dict.fromkeys(c for c in choices if c))
        expected = []
        for text in split_boundary(prompt, choices)[1]:
            tokens = lm.tokenize(text)
            expected.append(all(int(np.argmax(lm.greedy(ids + tokens[:k]))) == t for k, t in enumerate(tokens)))
        for result in (
            lm.choice_distribution(prompt, choices),
            list(score(lm, [ScoreRequest("x", [" a", " b"]), ScoreRequest(prompt, choices)]))[1],
        ):
            assert result.is_greedy == expected
        assert any(expected), "the model's own greedy continuation must be flagged greedy"

    # --- normalization and priors, once, after the model --------------------------------------------
    def test_normalizations(self, lm, reference):
        prompt, choices = "go:", [" a", " the quick", " 10"]
        sums = np.array([math.fsum(lp) for lp in lm.choice_logprobs(prompt, choices)])
        lengths = [len(lm.tokenize(c)) for c in choices]
        mean = lm.choice_distribution(prompt, choices, normalization="mean")
        np.testing.assert_allclose(mean.scores, sums / lengths, atol=self.batch_atol)
        char = lm.choice_distribution(prompt, choices, normalization="char")
        np.testing.assert_allclose(char.scores, sums / [len(c) for c in choices], atol=self.batch_atol)
        for normalization, expected in (("sum", sums), ("mean", sums / lengths)):
            assert lm.choose(prompt, choices, normalization=normalization) == int(np.argmax(expected))
        assert lm.choice_distribution(prompt, choices).normalization == lm.default_normalization

    def test_pmi_subtracts_the_unconditional_score(self, lm, reference):
        # the same tokens after the unconditional context (BOS on these models), subtracted
        prompt, choices = "go:", [" a", " the quick", " 10"]
        sums = np.array([math.fsum(lp) for lp in lm.choice_logprobs(prompt, choices)])
        pmi = lm.choice_distribution(prompt, choices, normalization="pmi")
        unconditional = np.array([math.fsum(lp) for lp in reference("", choices)])
        np.testing.assert_allclose([math.fsum(lp) for lp in pmi.unconditional_logprobs], unconditional, atol=self.atol)
        np.testing.assert_allclose(pmi.scores, sums - unconditional, atol=self.atol)

    def test_other_entry_points_check_their_input(self, lm):
        with pytest.raises(InvalidPromptError):
            lm.complete(42)
        with pytest.raises(TypeError, match="unknown completion setting"):
            lm.complete("x", max_lenght=3)
        if hasattr(lm, "greedy") and lm.n_ctx is not None:  # servers that do not say their context: the 400
            n = len(lm.tokenize(LONG_PROMPT, bos=True))
            with pytest.raises(ContextLengthError, match=f"{n} tokens.*{lm.n_ctx} tokens"):
                lm.greedy(LONG_PROMPT)

    def test_prior_is_applied_after_the_scores(self, lm):
        prompts = make_prompts(3, seed=4)
        plain = list(score(lm, [ScoreRequest(p, [" yes", " no"]) for p in prompts]))
        weighted = list(score(lm, [ScoreRequest(p, [" yes", " no"], prior=[1, 3]) for p in prompts]))
        for a, b in zip(plain, weighted):
            np.testing.assert_allclose(b.scores, a.scores, atol=self.batch_atol)
            expected = a.probs * [1, 3] / (a.probs * [1, 3]).sum()
            np.testing.assert_allclose(b.probs, expected, atol=1e-6)
            assert b.index == int(np.argmax(expected))

    # Issue 15: hostile but valid text (unicode, emoji, zero-width and control characters, special-token text,
    # backslashes, quotes, braces). A local backend scores every case its reference scores, within ``atol``;
    # it refuses (typed, with a reason) only what the reference refuses too. Seeded, bounded in time.
    hostile_count = 40
    hostile_refusable: tuple = ()  # refusal messages allowed where the reference scores the case
    hostile_seconds = 120.0

    @pytest.fixture(scope="class")
    @classmethod
    def alive(cls):
        """Whether the backend's server still answers, checked after every hostile case (local backends: yes)."""
        return lambda: True

    def test_hostile_input_scores_like_the_reference_or_refuses_typed(self, lm, reference, alive):
        tally = check_cases(
            lambda p, c: lm.choice_logprobs(p, c),
            reference,
            hostile_cases(seed=15, count=self.hostile_count),
            tolerance=self.atol,
            typed=(AutoCogError,),
            deadline=time.monotonic() + self.hostile_seconds,
            alive=alive,
        )
        assert tally.total >= self.hostile_count // 2, f"only {tally.total} cases in {self.hostile_seconds} s"
        if self.hostile_refusable:  # a backend that cannot represent some text says so, typed
            assert all(any(r in reason for r in self.hostile_refusable) for reason in tally.reasons), tally.reasons
        else:
            assert tally.refused_as_reference == sum(tally.refused.values()), tally.reasons
            assert tally.scored >= tally.total * 3 // 4, (tally.scored, tally.reasons)
