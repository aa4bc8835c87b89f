"""The scoring contract on `TfLM` (transformers, the tiny random Llama), and its packed multi-prompt pass.

``AUTOCOG_TEST_DEVICE`` (default ``cpu``) and ``AUTOCOG_TEST_DTYPE`` (default ``float32``) choose where
`TestTfLM` runs, e.g. ``AUTOCOG_TEST_DEVICE=cuda AUTOCOG_TEST_DTYPE=bfloat16`` (what ``bench/gpu_check.sh`` runs);
`TestTfLMBfloat16` always runs the contract in bfloat16 on the CPU. The reference runs the same model in the
same dtype, one full pass per prompt + choice, so the tolerances bound the rounding of a different computation
order (the tree mask, packed rows), not the dtype's distance to float32: `TOLERANCES`.
"""

import os

import pytest
from conftest import brute_force_tf
from contract import ScoringContract
from randomized import make_prompts

from autocog.lm import ScoreRequest, TfLM, score

# dtype -> (atol against the reference, batch_atol of a batch against one by one), in log-prob units. float32:
# the contract's own. bfloat16 keeps 8 bits of mantissa (relative 2**-8 = 0.4% per rounding): on the tiny
# model's log-probs (about -10) a pass rounded in another order moves a token's log-prob by up to ~0.015 on the
# CPU; 0.05 leaves room for the GPU's kernels. float16 (11 bits): ~0.005 measured, 0.02 allowed.
TOLERANCES = {"float32": (1e-4, 1e-5), "bfloat16": (5e-2, 5e-2), "float16": (2e-2, 2e-2)}
TEST_DEVICE = os.environ.get("AUTOCOG_TEST_DEVICE", "cpu")
TEST_DTYPE = os.environ.get("AUTOCOG_TEST_DTYPE", "float32")


def tiny_model(path, device: str, dtype: str) -> TfLM:
    return TfLM(**TfLM.create(model_path=path, device=device, dtype=dtype))


class TestTfLM(ScoringContract):
    atol, batch_atol = TOLERANCES[TEST_DTYPE]

    @pytest.fixture(scope="class")
    @classmethod
    def lm(cls, tiny_tf, tiny_path):
        if (TEST_DEVICE, TEST_DTYPE) == ("cpu", "float32"):
            return tiny_tf  # the session's model
        lm = tiny_model(tiny_path, TEST_DEVICE, TEST_DTYPE)
        assert str(lm.device).startswith(TEST_DEVICE) and str(lm.model.dtype) == f"torch.{TEST_DTYPE}"
        return lm

    @pytest.fixture(scope="class")
    @classmethod
    def reference(cls, lm):
        return lambda prompt, choices: brute_force_tf(lm, prompt, choices)


class TestTfLMBfloat16(TestTfLM):
    """The contract in bfloat16 on the CPU (torch runs bf16 there too), within bf16's `TOLERANCES`."""

    atol, batch_atol = TOLERANCES["bfloat16"]
    hostile_count = 12  # bf16 matmuls are slow on most CPUs; TestTfLM runs the whole pool

    @pytest.fixture(scope="class")
    @classmethod
    def lm(cls, tiny_path):
        lm = tiny_model(tiny_path, "cpu", "bfloat16")
        assert str(lm.model.dtype) == "torch.bfloat16"
        return lm


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
