"""LLaMa (llama-cpp-python) against TfLM and against brute force through llama.cpp itself, on the tiny random
Llama written as GGUF; SmolLM2 through both backends on easy facts."""

import random
import sys

import numpy as np
import pytest

llama_cpp = pytest.importorskip("llama_cpp", reason="the llama extra (llama-cpp-python) is not installed")

from conftest import EASY_FACTS, assert_logprobs_close
from randomized import random_choices, random_text
from references import EXACT, all_logprobs, brute_force_llama, counting_decodes

from autocog.lm import (
    BackendNotInstalledError,
    ContextLengthError,
    LLaMa,
    ModelNotFoundError,
    TransientError,
)


@pytest.fixture(scope="module")
def tiny_gguf():
    from autocog.gguf.models import tiny_llama_gguf

    return tiny_llama_gguf()


@pytest.fixture(scope="module")
def tiny_llama(tiny_gguf):
    return LLaMa(**LLaMa.create(tiny_gguf, n_ctx=1024, **EXACT))


@pytest.fixture(scope="module")
def reference(tiny_gguf):
    """A separate llama.cpp model that evaluates every sequence from scratch, with logits at every position."""
    return llama_cpp.Llama(model_path=str(tiny_gguf), n_ctx=1024, logits_all=True, verbose=False, **EXACT)


@pytest.fixture(scope="module")
def smol_llama():
    return LLaMa(**LLaMa.create())


def reference_greedy(lm, ref, prompt):
    return all_logprobs(ref, lm.tokenize(prompt, bos=True))[-1]


def check_against_both(lm, tf, ref, prompt, choices):
    actual = lm.choice_logprobs(prompt, choices)
    assert_logprobs_close(actual, brute_force_llama(lm, ref, prompt, choices), 1e-4)
    assert_logprobs_close(actual, tf.choice_logprobs(prompt, choices), 1e-3)


def sequences_clean(lm, n_prompt):
    """Sequence 0 holds exactly the prompt, sequences 1..wide hold its first ``wide_upto`` positions (the
    prompt's cells tagged for the next trie), every other sequence is empty: no trie cell is left behind."""
    memory, cache = lm.cache.memory, lm.cache
    span = (llama_cpp.llama_memory_seq_pos_min(memory, 0), llama_cpp.llama_memory_seq_pos_max(memory, 0))
    if span != (0, n_prompt - 1) or cache.wide_upto > n_prompt:
        return False
    wide = (0, cache.wide_upto - 1) if cache.wide_upto else (-1, -1)
    for s in range(1, cache.n_seq_max):
        expected = wide if s <= cache.wide else (-1, -1)
        if (llama_cpp.llama_memory_seq_pos_min(memory, s), llama_cpp.llama_memory_seq_pos_max(memory, s)) != expected:
            return False
    return True


# --- the GGUF and the tokenizer ------------------------------------------------------------------
def test_tiny_gguf_has_the_transformers_tokenizer(tiny_llama, tiny_tf):
    texts = [
        "The quick brown fox",
        " Paris",
        "Question: What is\n the capital?  ok",
        "1 10 100",
        '{"n": 42}',
        "<s>x</s>",
        " café",
        "",
    ]
    for text in texts:
        assert tiny_llama.tokenize(text) == tiny_tf.tokenize(text), text
        assert tiny_llama.tokenize(text, bos=True) == tiny_tf.tokenize(text, bos=True), text
        assert tiny_llama.detokenize(tiny_llama.tokenize(text)) == tiny_tf.detokenize(tiny_tf.tokenize(text))
    assert tiny_llama.tokenize("a", bos=True)[0] == tiny_llama.bos_token_id == 0
    assert tiny_llama.tokenize("a")[0] != 0
    assert tiny_llama.eos_token_ids == {1} == tiny_tf.eos_token_ids
    assert tiny_llama.n_vocab == tiny_tf.model.config.vocab_size
    assert tiny_llama.n_ctx == 1024


def test_the_reused_token_buffer_grows_and_is_per_thread(tiny_llama, tiny_tf):
    """`encode_raw` reuses one output array per thread: a text longer than it, shorter ones after it and threads
    tokenizing at once all get their own tokens (the transformers tokenizer as the reference)."""
    from concurrent.futures import ThreadPoolExecutor

    rng = random.Random(5)
    texts = [random_text(rng, n) for n in (3, 400, 2, 60, 1, 900, 5)]
    for text in texts:
        assert tiny_llama.tokenize(text) == tiny_tf.tokenize(text)
    expected = {text: tiny_tf.tokenize(text) for text in texts}

    def each(k: int) -> bool:
        return all(
            tiny_llama.tokenize(texts[(k + i) % len(texts)]) == expected[texts[(k + i) % len(texts)]] for i in range(60)
        )

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(each, range(8)))


def test_detokenize_joins_bytes_of_split_characters(tiny_llama):
    text = " café 日本語 ü"
    tokens = tiny_llama.tokenize(text)
    assert len(tokens) > len(text)  # the tiny vocabulary splits these characters into byte tokens
    assert tiny_llama.detokenize(tokens) == text
    pieces = "".join(tiny_llama.detokenize([t]) for t in tokens)
    assert pieces != text  # decoding token by token would lose the characters
    for cut in range(len(tokens) + 1):  # a cut inside a character: no crash, a replacement character at most
        partial = tiny_llama.detokenize(tokens[:cut])
        assert text.startswith(partial.rstrip("\ufffd"))
    assert tiny_llama.detokenize([0, *tokens, 1]) == text  # special tokens are dropped
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tiny_llama.detokenize([10**6])


# --- scores against TfLM and brute force ---------------------------------------------------------
def test_single_token_choices_need_no_trie_batch(tiny_llama, tiny_tf, reference):
    choices = [" A", " B", " C", " D", " the", " 1"]
    assert all(len(tiny_llama.tokenize(c)) == 1 for c in choices)
    tiny_llama.cache.reset()
    before = tiny_llama.tokens_evaluated
    check_against_both(tiny_llama, tiny_tf, reference, "Pick one:", choices)
    assert tiny_llama.tokens_evaluated - before == len(tiny_llama.tokenize("Pick one:", bos=True))


@pytest.mark.parametrize("n_words", [0, 1, 20, 160])
def test_prompt_lengths(tiny_llama, tiny_tf, reference, n_words):
    rng = random.Random(n_words)
    prompt = random_text(rng, n_words)
    n_tokens = len(tiny_llama.tokenize(prompt, bos=True))
    check_against_both(tiny_llama, tiny_tf, reference, prompt, random_choices(rng, 8))
    if n_words == 0:
        assert n_tokens == 1
    if n_words == 160:
        assert n_tokens >= 300


def test_prefix_cache_never_stale(tiny_llama, tiny_tf, reference):
    """Many calls sharing, extending, shrinking or abandoning a prefix, interleaved with completions."""
    rng = random.Random(7)
    base = random_text(rng, 30)
    prompts = [base, base + " fox", base, base[:40], random_text(rng, 10), base + " the", base + " the dog", "x"]
    for i, prompt in enumerate(prompts * 2):
        choices = random_choices(rng, 1 + i % 6)
        check_against_both(tiny_llama, tiny_tf, reference, prompt, choices)
        assert sequences_clean(tiny_llama, len(tiny_llama.tokenize(prompt.rstrip(), bos=True)))
        if i % 3 == 0:
            assert tiny_llama.complete(prompt, max_tokens=5) == tiny_tf.complete(prompt, max_tokens=5)
        greedy = tiny_llama.greedy(prompt)
        np.testing.assert_allclose(greedy, reference_greedy(tiny_llama, reference, prompt), atol=1e-4)
        np.testing.assert_allclose(greedy, tiny_tf.greedy(prompt), atol=1e-3)


def test_greedy_is_log_softmax_of_last_position(tiny_llama, tiny_tf, reference):
    prompt = "Question: What is the capital of France?"
    logprobs = tiny_llama.greedy(prompt)
    assert isinstance(logprobs, np.ndarray) and logprobs.shape == (tiny_llama.n_vocab,)
    np.testing.assert_allclose(logprobs, reference_greedy(tiny_llama, reference, prompt), atol=1e-5)
    np.testing.assert_allclose(logprobs, tiny_tf.greedy(prompt), atol=1e-3)
    assert np.exp(logprobs.astype(np.float64)).sum() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(tiny_llama.greedy(tiny_llama.tokenize(prompt, bos=True)), logprobs, atol=1e-6)


def test_prefix_cache_accounting(tiny_llama):
    """A fresh tree evaluation decodes exactly prompt + the trie's inner tokens, in one llama_decode call;
    the next one on the same prompt only its last token (whose logits are not kept) and the new inner trie
    tokens, in one call."""
    prompt = "Question: What is the capital of France?\nAnswer:"
    calls = counting_decodes(tiny_llama)
    try:
        tiny_llama.cache.reset()
        start = tiny_llama.tokens_evaluated
        result = tiny_llama.choice_distribution(prompt, [" Paris", " Par", " London", " Berlin"])
        n_prompt = len(tiny_llama.tokenize(prompt, bos=True))
        n_inner = len(result.tree.internal_nodes())
        assert 0 < n_inner < len(result.tree.nodes)
        assert calls == [n_prompt + n_inner]
        assert tiny_llama.tokens_evaluated - start == n_prompt + n_inner
        assert sequences_clean(tiny_llama, n_prompt)
        calls.clear()
        second = tiny_llama.choice_distribution(prompt, [" yes", " no", " the quick brown fox"])
        assert calls == [1 + len(second.tree.internal_nodes())]
        assert sequences_clean(tiny_llama, n_prompt)
    finally:
        del tiny_llama.cache.decode


# --- chunking: more leaves than sequences, more trie tokens than the context holds ---------------
def test_more_choices_than_sequences_are_chunked(tiny_gguf, tiny_tf, reference):
    lm = LLaMa(**LLaMa.create(tiny_gguf, n_ctx=1024, **EXACT), n_seq_max=4)
    assert lm.cache.n_seq_max == 4
    rng = random.Random(3)
    prompt = "Question: " + random_text(rng, 10) + "\nAnswer:"
    choices = random_choices(rng, 40)
    _, tree, _ = lm.build_tree(prompt, choices)
    inner = set(tree.internal_nodes())
    tips = sum(1 for i in inner if not inner.intersection(tree.nodes[i].children.values()))
    calls = []
    decode = lm.cache.decode
    lm.cache.decode = lambda batch=None: (calls.append(1), decode(batch))[1]
    check_against_both(lm, tiny_tf, reference, prompt, choices)
    assert tips > 3 and len(calls) == -(-tips // 3)  # one batch per 3 tips, the prompt in the first
    assert sequences_clean(lm, len(lm.tokenize(prompt, bos=True)))


def test_more_trie_tokens_than_the_context_holds(tiny_gguf, tiny_tf, reference):
    lm = LLaMa(**LLaMa.create(tiny_gguf, n_ctx=256, **EXACT))
    rng = random.Random(11)
    prompt = random_text(rng, 100)
    n_prompt = len(lm.tokenize(prompt, bos=True))
    choices = random_choices(rng, 60)
    nodes = len(lm.choice_distribution(prompt, choices).tree.internal_nodes())
    assert lm.n_ctx == 256 and n_prompt < 256 < n_prompt + nodes  # the trie does not fit in one batch
    check_against_both(lm, tiny_tf, reference, prompt, choices)
    assert sequences_clean(lm, n_prompt)
    with pytest.raises(ContextLengthError, match="256"):  # one choice that cannot fit is a clear error
        lm.choose(prompt, [" a", " the quick brown fox" * 40])


# --- completion ----------------------------------------------------------------------------------
def test_complete_greedy_matches_tf(tiny_llama, tiny_tf):
    prompt = "The quick brown"
    text = tiny_llama.complete(prompt, stop=None, max_tokens=30)
    assert text == tiny_llama.complete(prompt, stop=None, max_tokens=30)
    assert text == tiny_tf.complete(prompt, stop=None, max_tokens=30)
    for prompt in ["Question: What is", "1 10", "x"]:
        assert tiny_llama.complete(prompt, stop=None, max_tokens=12) == tiny_tf.complete(
            prompt, stop=None, max_tokens=12
        )


def reference_generate(lm, ref, prompt, n):
    """Greedy decoding through llama.cpp with every step evaluated from scratch: up to ``n`` token ids."""
    ids = lm.tokenize(prompt, bos=True)
    generated = []
    for _ in range(n):
        token = int(np.argmax(all_logprobs(ref, ids + generated)[-1]))
        if token in lm.eos_token_ids:
            break
        generated.append(token)
    return generated


def test_complete_token_limit(tiny_llama, reference):
    expected = reference_generate(tiny_llama, reference, "The quick brown", 7)
    for n in (1, 7):
        assert tiny_llama.complete("The quick brown", stop=None, max_tokens=n) == tiny_llama.detokenize(expected[:n])
    assert tiny_llama.complete("The quick brown", stop=None, max_tokens=0) == ""
    lm = LLaMa(model=tiny_llama.model, completion_kwargs={"max_new_tokens": 3})
    assert lm.complete("The quick brown", stop=None) == tiny_llama.detokenize(expected[:3])
    # the context bounds the generation instead of failing: the last token generated fills it
    long_prompt = random_text(random.Random(1), 535)
    room = tiny_llama.n_ctx - len(tiny_llama.tokenize(long_prompt, bos=True))
    assert 0 < room < 20
    expected = reference_generate(tiny_llama, reference, long_prompt, room + 1)
    assert len(expected) == room + 1
    assert tiny_llama.complete(long_prompt, stop=None, max_tokens=200) == tiny_llama.detokenize(expected)


def test_complete_stops(tiny_llama):
    prompt = "The quick brown"
    free = tiny_llama.complete(prompt, stop=None, max_tokens=40)
    assert len(free) > 12
    straddling = next(
        free[i : i + 3]
        for i in range(2, len(free) - 3)
        if len(tiny_llama.tokenize(free[: i + 3])) > len(tiny_llama.tokenize(free[:i])) + 1
        and free[i : i + 3] not in free[: i + 2]
    )
    for stop in [straddling, [free[10:12], free[2:4]], "\n"]:
        stops = [stop] if isinstance(stop, str) else stop
        text = tiny_llama.complete(prompt, stop=stop, max_tokens=40)
        found = [free.find(s) + len(s) for s in stops if s in free]
        if found:
            assert text == free[: min(found)]
            assert any(text.endswith(s) for s in stops)
        else:
            assert text == free


def test_complete_stops_at_eos(tiny_llama):
    free = tiny_llama.tokenize(tiny_llama.complete("The quick brown", stop=None, max_tokens=10))
    stopper = free[4]

    class EosLLaMa(LLaMa):
        @property
        def eos_token_ids(self):
            return {stopper}

    lm = EosLLaMa(model=tiny_llama.model)
    assert lm.tokenize(lm.complete("The quick brown", stop=None, max_tokens=10)) == free[: free.index(stopper)]


def test_complete_sampling_reproducible_with_seed(tiny_llama, tiny_tf):
    kwargs = dict(stop=None, max_tokens=16, temperature=1.0, seed=123)
    a = tiny_llama.complete("The", **kwargs)
    assert a == tiny_llama.complete("The", **kwargs)
    assert a == tiny_tf.complete("The", **kwargs)  # same log-probs, same draws
    others = {tiny_llama.complete("The", stop=None, max_tokens=16, temperature=1.0, seed=s) for s in range(5)}
    assert len(others) > 1
    assert tiny_llama.complete(
        "The", stop=None, max_tokens=16, temperature=1.0, top_k=1, seed=4
    ) == tiny_llama.complete("The", stop=None, max_tokens=16)


# --- normalizations and the end marker ----------------------------------------------------------
# --- failures ------------------------------------------------------------------------------------
def test_failures_leave_no_stale_state(tiny_llama, reference):
    prompt, choices = "The quick brown fox", [" jumps", " over the lazy dog", " 100", " 1000"]
    expected = brute_force_llama(tiny_llama, reference, prompt, choices)
    tiny_llama.choice_logprobs(prompt, choices)
    decode = tiny_llama.cache.decode
    failures = []

    def flaky(error):
        def run(batch=None):
            if not failures:
                failures.append(error)
                decode(batch)  # the batch lands in the KV cache, then the call fails
                raise error
            return decode(batch)

        return run

    try:
        tiny_llama.cache.decode = flaky(RuntimeError("boom"))  # not transient: propagates
        with pytest.raises(RuntimeError, match="boom"):
            tiny_llama.choice_logprobs(prompt + " over", choices)
        assert tiny_llama.cache.tokens == []
        assert_logprobs_close(tiny_llama.choice_logprobs(prompt, choices), expected, 1e-4)
        failures.clear()
        tiny_llama.cache.decode = flaky(TransientError("slot"))  # transient: retried from a clean cache
        assert_logprobs_close(tiny_llama.choice_logprobs(prompt, choices), expected, 1e-4)
        assert failures
    finally:
        del tiny_llama.cache.decode
    assert sequences_clean(tiny_llama, len(tiny_llama.tokenize(prompt, bos=True)))
    np.testing.assert_allclose(
        tiny_llama.greedy(prompt + " jumps"), reference_greedy(tiny_llama, reference, prompt + " jumps"), atol=1e-4
    )


def test_decode_failure_leaves_a_usable_model(tiny_llama):
    with pytest.raises(RuntimeError, match="llama_decode failed"):  # a token id outside the vocabulary
        tiny_llama.greedy([0, 10**6])
    assert tiny_llama.complete("x", max_tokens=2) is not None  # still usable


def test_bad_model_paths(tmp_path, tiny_gguf):
    with pytest.raises(ModelNotFoundError, match="not found"):
        LLaMa.create(model_path=tmp_path / "nope.gguf")
    with pytest.raises(ModelNotFoundError, match="not found"):
        LLaMa.create(model_path=tmp_path)  # a directory
    bad = tmp_path / "fake.gguf"
    bad.write_bytes(b"not a gguf")
    with pytest.raises(ModelNotFoundError, match="not a GGUF"):
        LLaMa.create(model_path=bad)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(tiny_gguf.read_bytes()[:4000])
    with pytest.raises(ModelNotFoundError, match="could not load"):
        LLaMa.create(model_path=truncated)
    with pytest.raises(TypeError, match="llama_cpp.Llama"):
        LLaMa(model="model.gguf")


def test_several_llamas_share_one_model_and_close(tiny_llama, tiny_gguf):
    prompt, choices = "The answer is", [" yes", " no", " the quick brown fox"]
    choice = tiny_llama.choose(prompt, choices)
    other = LLaMa(model=tiny_llama.model, n_seq_max=2)  # its own context on the same weights
    assert_logprobs_close(other.choice_logprobs(prompt, choices), tiny_llama.choice_logprobs(prompt, choices), 1e-5)
    other.close()
    with pytest.raises(RuntimeError, match="closed"):
        other.greedy(prompt)
    other.close()  # twice is fine
    assert tiny_llama.choose(prompt, choices) == choice  # the first instance is untouched


def test_missing_llama_cpp(monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp now raises ImportError
    with pytest.raises(BackendNotInstalledError, match=r"llama-cpp-python.*autocog\[llama\]"):
        LLaMa.create()


# --- SmolLM2 -------------------------------------------------------------------------------------
def test_smollm2_easy_facts(smol_llama):
    """The embedded SmolLM2 GGUF through llama.cpp: right answers, scores equal to brute force, a completion."""
    for prompt, choices, answer in EASY_FACTS:
        assert smol_llama.choose(prompt, choices) == answer, prompt
    from autocog.lm.assets import smollm2_gguf

    ref = llama_cpp.Llama(model_path=str(smollm2_gguf()), n_ctx=512, logits_all=True, verbose=False)
    for prompt, choices, _ in EASY_FACTS[:3]:
        assert_logprobs_close(
            smol_llama.choice_logprobs(prompt, choices), brute_force_llama(smol_llama, ref, prompt, choices), 1e-3
        )
    assert "Paris" in smol_llama.complete("The capital of France is", stop="\n", max_tokens=20)


@pytest.mark.slow
def test_smollm2_same_answers_as_tf(smol_llama, smol_tf):
    for prompt, choices, _ in EASY_FACTS:
        a = smol_llama.choice_distribution(prompt, choices)
        b = smol_tf.choice_distribution(prompt, choices)
        assert a.index == b.index, (prompt, a, b)
        # Q4_1 weights (llama.cpp also quantizes the activations to 8 bits) against their F32 dequantization:
        # token log-probs differ by up to ~0.5, the distributions over the choices stay close
        assert np.abs(a.probs - b.probs).max() < 0.05, (prompt, a, b)


def test_n_gpu_layers_reaches_llama_cpp(tiny_gguf, tiny_llama):
    """``n_gpu_layers`` (layers offloaded to the GPU; -1: all) goes to ``llama_cpp.Llama`` through `load`, the
    CLI's --model-args and the lm-eval adapter alike. A CPU-only llama.cpp build keeps every layer on the CPU,
    with the same scores."""
    from autocog.lm import load

    lm = load("llama", model=str(tiny_gguf), n_ctx=1024, n_gpu_layers=-1, **EXACT)
    assert lm.model.model_params.n_gpu_layers in (-1, 0x7FFFFFFF)  # llama-cpp-python spells "all" as INT_MAX
    prompt, choices = "The answer is", [" yes", " no", " the quick brown fox"]
    expected = tiny_llama.choice_logprobs(prompt, choices)
    tolerance = 1e-5 if not llama_cpp.llama_supports_gpu_offload() else 0.05  # a GPU's kernels round otherwise
    assert_logprobs_close(lm.choice_logprobs(prompt, choices), expected, tolerance)
    lm.close()
