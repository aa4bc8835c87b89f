"""The scoring contract on `LLaMa` (llama.cpp, the tiny random Llama as F32 GGUF with an F32 KV cache), and
its multi-prompt ``llama_decode``."""

import numpy as np
import pytest

llama_cpp = pytest.importorskip("llama_cpp")

from contract import ScoringContract, assert_logprobs_close
from randomized import make_prompts, random_choices
from references import EXACT, brute_force_llama, counting_decodes

from autocog.gguf.models import tiny_llama_gguf
from autocog.lm import LLaMa, ScoreRequest, score


@pytest.fixture(scope="module")
def llama_lm():
    return LLaMa(**LLaMa.create(tiny_llama_gguf(), n_ctx=1024, **EXACT))


class TestLLaMa(ScoringContract):
    @pytest.fixture(scope="class")
    @classmethod
    def lm(cls, llama_lm):
        return llama_lm

    @pytest.fixture(scope="class")
    @classmethod
    def reference(cls, lm):
        ref = llama_cpp.Llama(model_path=str(tiny_llama_gguf()), n_ctx=1024, logits_all=True, verbose=False, **EXACT)
        return lambda prompt, choices: brute_force_llama(lm, ref, prompt, choices)


def test_several_prompts_in_one_decode(llama_lm, tiny_tf):
    """group_tokens=512 (opt-in): every prompt's tokens and the inner nodes of every trie in ONE
    llama_decode; on the tiny model the numbers are TfLM's on the same weights, no sequence is left behind."""
    lm = llama_lm
    header = "Let's think step by step: first, second, third, then the result.\n"
    prompts = make_prompts(8, seed=6, header=header)
    choices = [" yes", " no", " the quick", " the quick brown"]
    lm.cache.reset()
    calls = counting_decodes(lm)
    lm.group_tokens = 512
    try:
        results = list(score(lm, [ScoreRequest(p, choices) for p in prompts], batch_size=8))
    finally:
        del lm.cache.decode
        lm.group_tokens = 0
    tokens = sum(len(lm.tokenize(p, bos=True)) for p in prompts)
    inner = sum(len(r.tree.internal_nodes()) for r in results)
    assert calls == [tokens + inner] and tokens + inner <= 512
    for prompt, result in zip(prompts, results):
        assert_logprobs_close(result.token_logprobs, tiny_tf.choice_logprobs(prompt, choices), 1e-3)
    memory = lm.cache.memory
    assert all(llama_cpp.llama_memory_seq_pos_max(memory, s) == -1 for s in range(1, lm.cache.n_seq_max))


def test_batches_are_chunked_by_sequences_and_batch_size(tiny_tf):
    """n_seq_max=6 (5 sequences for the batch) and n_batch=32: many groups and decodes, the same numbers."""
    lm = LLaMa(**LLaMa.create(tiny_llama_gguf(), n_ctx=1024, n_batch=32, **EXACT), n_seq_max=6, group_tokens=64)
    rng = np.random.default_rng(0)
    prompts = make_prompts(12, seed=7)
    choice_lists = [random_choices(__import__("random").Random(int(rng.integers(100))), 1 + i % 4) for i in range(12)]
    calls = counting_decodes(lm)
    batched = list(score(lm, [ScoreRequest(p, c) for p, c in zip(prompts, choice_lists)], batch_size=12))
    del lm.cache.decode
    assert max(calls) <= 32 and len(calls) > 3  # groups of at most 64 tokens, decodes of at most 32
    for prompt, choices, result in zip(prompts, choice_lists, batched):
        assert_logprobs_close(result.token_logprobs, lm.choice_logprobs(prompt, choices), 1e-5)
        assert_logprobs_close(result.token_logprobs, tiny_tf.choice_logprobs(prompt, choices), 1e-3)
    lm.close()


def decode_parts(cache, parts):
    """One llama_decode of (tokens, sequence id) parts, each from position 0; the logits of every token."""
    batch, row, spans = cache.batch, 0, []
    for tokens, seq in parts:
        for pos, token in enumerate(tokens):
            batch.token[row], batch.pos[row], batch.n_seq_id[row], batch.seq_id[row, 0] = token, pos, 1, seq
            batch.logits[row] = 1
            row += 1
        spans.append(range(row - len(tokens), row))
    batch.struct.n_tokens = row
    cache.decode()
    return [np.array([cache.logits(r) for r in span]) for span in spans]


def test_other_sequences_cells_change_nothing():
    """The unified KV cache masks other sequences' cells: a prompt's logits are the same (to F32 rounding: the
    sums run over another number of cells) alone, after another sequence's cells exist, after they are
    removed, and second in a decode after another prompt. (On SmolLM2 Q4_1 these are bitwise equal.)"""
    lm = LLaMa(**LLaMa.create(tiny_llama_gguf(), n_ctx=1024, **EXACT), n_seq_max=4)
    cache = lm.cache
    a, b = (lm.tokenize(t, bos=True) for t in ("Question: the quick brown fox?\nAnswer:", "Paris is in France"))
    cache.reset()
    alone = decode_parts(cache, [(b, 1)])[0]
    cache.reset()
    decode_parts(cache, [(a, 2)])
    after = decode_parts(cache, [(b, 1)])[0]
    cache.remove(1, -1)
    cache.remove(2, -1)
    removed = decode_parts(cache, [(b, 1)])[0]
    cache.reset()
    second = decode_parts(cache, [(a, 2), (b, 1)])[1]
    assert np.abs(alone).max() > 1.0  # logits on the scale where a leaked cell would show
    for logits in (after, removed, second):
        np.testing.assert_allclose(logits, alone, rtol=0, atol=1e-4)
    lm.close()
