"""Shared fixtures: the offline test models, loaded once per session."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Test helpers (toy models, server launchers, the hostile pool, the shared contract), importable by name.
for folder in ("support", "backends"):
    sys.path.insert(0, str(Path(__file__).resolve().parent / folder))

# Questions SmolLM2-135M-Instruct answers right; used by the TfLM and LLaMa easy-fact tests.
EASY_FACTS = [
    ("Question: What is the capital of France?\nAnswer:", [" Paris", " London", " Berlin"], 0),
    ("Question: What is the capital of Japan?\nAnswer:", [" Madrid", " Tokyo", " Cairo"], 1),
    ("Question: What is 2 + 2?\nAnswer:", [" 7", " 4", " 9"], 1),
    ("Question: What do bees make?\nAnswer:", [" honey", " milk", " silk"], 0),
    ("Question: What is frozen water called?\nAnswer:", [" steam", " ice", " sand"], 1),
    ("Question: Who wrote Romeo and Juliet?\nAnswer:", [" Charles Dickens", " William Shakespeare", " Mark Twain"], 1),
    ("Question: What is the capital of Italy?\nAnswer:", [" Rome", " Vienna", " Lisbon"], 0),
]


@pytest.fixture(scope="session")
def tiny_path():
    from autocog.gguf.models import tiny_llama

    return tiny_llama()


@pytest.fixture(scope="session")
def tiny_tf(tiny_path):
    from autocog.lm import TfLM

    return TfLM(**TfLM.create(model_path=tiny_path))


@pytest.fixture(scope="session")
def smol_tf():
    from autocog.lm import TfLM

    return TfLM(**TfLM.create(device="cpu"))


def brute_force_tf(lm, prompt, choices):
    """Reference: one full forward pass per prompt + choice, summing log_softmax at the choice positions."""
    import torch

    from autocog.core.checks import split_boundary

    prompt, continuations = split_boundary(prompt, choices)
    # an empty prompt is conditioned on the unconditional context (BOS, else EOS), as the scoring layer does
    prompt_ids = lm.tokenize(prompt, bos=True) if prompt else list(lm.unconditional_tokens())
    out = []
    for text in continuations:
        ids = lm.tokenize(text)
        with torch.no_grad():
            logits = lm.model(torch.tensor([prompt_ids + ids], device=lm.device)).logits[0].double()
        logprobs = torch.log_softmax(logits, dim=-1)
        out.append([float(logprobs[len(prompt_ids) + k - 1, t]) for k, t in enumerate(ids)])
    return out


def assert_logprobs_close(actual, expected, atol):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert len(a) == len(e)
        np.testing.assert_allclose(a, e, atol=atol, rtol=0)


@pytest.fixture(scope="session")
def smol_server():
    """One ``llama_cpp.server`` on the SmolLM2 GGUF for the session (test_openai, test_chat_smol): each `OpenAI`
    instance assumes nothing about the server's cached prompt, so modules can share it."""
    from llama_server import LlamaServer

    from autocog.lm.assets import smollm2_gguf

    server = LlamaServer(smollm2_gguf())
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tiny_llama_cpp_server():
    """llama.cpp's C++ ``llama-server`` on the tiny F32 GGUF with an F32 KV cache (2 slots) for the session:
    compared with `LLaMa` on the same file and cache type (tests/servers/test_*llama_server.py)."""
    from llama_cpp_server import F32_KV, LlamaCppServer

    from autocog.gguf.models import tiny_llama_gguf

    server = LlamaCppServer(tiny_llama_gguf(), n_ctx=1024, parallel=2, alias="tiny", extra_args=F32_KV)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def smol_llama_cpp_server():
    """``llama-server`` on the SmolLM2 Q4_1 GGUF (``-c 4096 -np 2``, as a user starts it) for the session."""
    from llama_cpp_server import LlamaCppServer

    from autocog.lm.assets import smollm2_gguf

    server = LlamaCppServer(smollm2_gguf(), n_ctx=4096, parallel=2, alias="smollm2")
    yield server
    server.stop()
