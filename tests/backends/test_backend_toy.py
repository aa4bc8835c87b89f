"""The scoring contract on the toy numpy `ChoiceLM` (the generic path: one ``greedy`` per inner node)."""

import numpy as np
import pytest
from contract import ScoringContract
from toy import ToyLM, brute_force

from autocog.lm import ScoreRequest


class TestToyLM(ScoringContract):
    atol = 1e-12
    batch_atol = 1e-12
    hostile_refusable = ("tokenizes to nothing", "tokenize to the same tokens")  # a 2-letter toy vocabulary

    @pytest.fixture(scope="class")
    @classmethod
    def lm(cls):
        return ToyLM()

    @pytest.fixture(scope="class")
    @classmethod
    def reference(cls, lm):
        return lambda prompt, choices: brute_force(lm, prompt, choices)

    def model_calls(self, lm):
        return lm.calls


def test_generic_batch_is_one_tree_after_the_other():
    """A backend with no batch primitive of its own: one greedy for each prompt and each inner node."""
    lm = ToyLM()
    requests = [ScoreRequest("go:", [" a", " ab", " b"]), ScoreRequest("stop:", ["1", "10", "100"])]
    lm.calls = 0
    results = lm.score_batch(requests)
    assert lm.calls == sum(1 + len(r.tree.internal_nodes()) for r in results)
    for request, result in zip(requests, results):
        np.testing.assert_allclose(
            np.concatenate(result.token_logprobs),
            np.concatenate(brute_force(lm, request.prompt, request.choices)),
            atol=1e-12,
        )
