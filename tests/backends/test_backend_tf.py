"""The scoring contract on `TfLM` (transformers, the tiny random Llama), and its packed multi-prompt pass."""

import pytest
from conftest import brute_force_tf
from contract import ScoringContract
from randomized import make_prompts

from autocog.lm import ScoreRequest, score


class TestTfLM(ScoringContract):
    @pytest.fixture(scope="class")
    @classmethod
    def lm(cls, tiny_tf):
        return tiny_tf

    @pytest.fixture(scope="class")
    @classmethod
    def reference(cls, lm):
        return lambda prompt, choices: brute_force_tf(lm, prompt, choices)


def test_a_batch_is_one_forward_pass(tiny_tf, monkeypatch):
    """8 prompts with a shared header: the header once (the prefix cache), then one packed pass."""
    calls = []
    forward = tiny_tf.model.forward
    monkeypatch.setattr(
        tiny_tf.model, "forward", lambda *a, **k: (calls.append(k["input_ids"].shape), forward(*a, **k))[1]
    )
    tiny_tf.cache.reset()
    header = "Let's think step by step: first, second, third, then the result.\n"
    prompts = make_prompts(8, seed=5, header=header)
    results = list(score(tiny_tf, [ScoreRequest(p, [" yes", " no", " the quick"]) for p in prompts], batch_size=8))
    assert len(results) == 8 and all(r.info["batch"] == 8 for r in results)
    assert len(calls) == 2 and calls[1][0] == 8  # the shared prefix, then 8 rows
    assert calls[0][1] >= len(tiny_tf.tokenize(header))
