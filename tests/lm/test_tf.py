"""TfLM against brute-force references on the tiny random Llama, and SmolLM2 on easy facts."""

import random

import numpy as np
import pytest
import torch
from conftest import EASY_FACTS, assert_logprobs_close, brute_force_tf
from randomized import random_choices, random_text

from autocog.lm import ModelNotFoundError, TfLM
from autocog.lm.tf.cache import copy_cache
from autocog.lm.tf.model import parse_dtype


@pytest.mark.parametrize("n_words", [0, 1, 20, 160])
def test_prompt_lengths(tiny_tf, n_words):
    rng = random.Random(n_words)
    prompt = random_text(rng, n_words)
    n_tokens = len(tiny_tf.tokenize(prompt, bos=True))
    choices = random_choices(rng, 8)
    assert_logprobs_close(tiny_tf.choice_logprobs(prompt, choices), brute_force_tf(tiny_tf, prompt, choices), 1e-4)
    if n_words == 0:
        assert n_tokens == 1
    if n_words == 160:
        assert n_tokens >= 300


def test_prefix_cache_never_stale(tiny_tf):
    """Many calls sharing, extending, shrinking or abandoning a prefix, interleaved with completions."""
    rng = random.Random(7)
    base = random_text(rng, 30)
    prompts = [base, base + " fox", base, base[:40], random_text(rng, 10), base + " the", base + " the dog", "x"]
    for i, prompt in enumerate(prompts * 2):
        choices = random_choices(rng, 1 + i % 6)
        assert_logprobs_close(tiny_tf.choice_logprobs(prompt, choices), brute_force_tf(tiny_tf, prompt, choices), 1e-4)
        if i % 3 == 0:
            tiny_tf.complete(prompt, max_tokens=5)
        greedy = tiny_tf.greedy(prompt)
        np.testing.assert_allclose(greedy, reference_greedy(tiny_tf, prompt), atol=1e-4)


def test_deferred_crop_is_never_read_stale(tiny_tf):
    """A tree pass leaves its trie's KV in the cache (cropped by the next call that runs the model, one crop
    instead of two): whatever comes next (the same prompt again, which runs only the trie, a longer or a
    shorter prompt, a greedy row, a completion, a packed batch) sees exactly the prompt's KV."""
    from autocog.eval.batch import choice_distributions

    lm, cache = tiny_tf, tiny_tf.cache
    prompt, choices = "Question: What is the capital of France?\nAnswer:", [" Paris", " Par", " London", " Berlin"]
    tokens = lm.tokenize(prompt, bos=True)
    reference = brute_force_tf(lm, prompt, choices)
    follow_ups = [
        lambda: assert_logprobs_close(lm.choice_logprobs(prompt, choices), reference, 1e-5),
        lambda: assert_logprobs_close(
            lm.choice_logprobs(prompt + " the", choices), brute_force_tf(lm, prompt + " the", choices), 1e-4
        ),
        lambda: assert_logprobs_close(
            lm.choice_logprobs(prompt[:20], choices), brute_force_tf(lm, prompt[:20], choices), 1e-4
        ),
        lambda: np.testing.assert_allclose(lm.greedy(prompt + " a"), reference_greedy(lm, prompt + " a"), atol=1e-4),
        lambda: np.testing.assert_allclose(lm.greedy(prompt), reference_greedy(lm, prompt), atol=1e-4),
        lambda: assert_logprobs_close(
            [r.token_logprobs for r in choice_distributions(lm, [prompt, prompt + " x"], choices)][0], reference, 1e-5
        ),
        lambda: assert_logprobs_close(  # the batch's shared prefix is the whole cached prompt
            choice_distributions(lm, [prompt + " the end", prompt + " a start"], choices)[0].token_logprobs,
            brute_force_tf(lm, prompt + " the end", choices),
            1e-4,
        ),
    ]
    for follow_up in follow_ups:
        cache.reset()
        assert_logprobs_close(lm.choice_logprobs(prompt, choices), reference, 1e-4)
        assert cache.tokens == tokens and cache.kv.get_seq_length() > len(tokens)  # the trie's KV is still there
        follow_up()
        assert lm.complete(prompt, stop=None, max_tokens=4) == lm.detokenize(reference_generate(lm, prompt, 4))
        assert cache.kv.get_seq_length() == len(cache.tokens)


def reference_greedy(lm, prompt):
    ids = lm.tokenize(prompt, bos=True)
    with torch.no_grad():
        logits = lm.model(torch.tensor([ids])).logits[0, -1].double()
    return torch.log_softmax(logits, dim=-1).numpy()


def test_greedy_is_log_softmax_of_last_position(tiny_tf):
    prompt = "Question: What is the capital of France?"
    logprobs = tiny_tf.greedy(prompt)
    assert isinstance(logprobs, np.ndarray) and logprobs.shape == (tiny_tf.model.config.vocab_size,)
    np.testing.assert_allclose(logprobs, reference_greedy(tiny_tf, prompt), atol=1e-5)
    assert np.exp(logprobs).sum() == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose(tiny_tf.greedy(tiny_tf.tokenize(prompt, bos=True)), logprobs, atol=1e-6)


def reference_generate(lm, prompt, n):
    """Greedy decoding with full forward passes, no cache: the ids of up to ``n`` tokens."""
    ids = lm.tokenize(prompt, bos=True)
    generated = []
    for _ in range(n):
        with torch.no_grad():
            token = int(torch.argmax(lm.model(torch.tensor([ids + generated])).logits[0, -1]))
        if token in lm.eos_token_ids:
            break
        generated.append(token)
    return generated


def test_complete_greedy_is_deterministic_and_matches_argmax(tiny_tf):
    prompt = "The quick brown"
    text = tiny_tf.complete(prompt, stop=None, max_tokens=12)
    assert text == tiny_tf.complete(prompt, stop=None, max_tokens=12)
    assert text == tiny_tf.detokenize(reference_generate(tiny_tf, prompt, 12))


def test_complete_token_limit(tiny_tf):
    for n in (1, 7):
        assert tiny_tf.complete("The quick brown", stop=None, max_tokens=n) == tiny_tf.detokenize(
            reference_generate(tiny_tf, "The quick brown", n)
        )
    assert tiny_tf.complete("The quick brown", stop=None, max_tokens=0) == ""
    lm = TfLM(model=tiny_tf.model, tokenizer=tiny_tf.tokenizer, completion_kwargs={"max_new_tokens": 3})
    assert lm.complete("The quick brown", stop=None) == tiny_tf.complete("The quick brown", stop=None, max_tokens=3)


def test_complete_stops(tiny_tf):
    prompt = "The quick brown"
    free = tiny_tf.complete(prompt, stop=None, max_tokens=40)
    assert len(free) > 6
    # stop on a string that straddles tokens, and on the earliest of several stops
    for stop in [free[3:6], [free[10:12], free[2:4]]]:
        stops = [stop] if isinstance(stop, str) else stop
        text = tiny_tf.complete(prompt, stop=stop, max_tokens=40)
        first = min(free.find(s) + len(s) for s in stops)
        assert text == free[:first]
        assert any(text.endswith(s) for s in stops)


def test_complete_sampling_reproducible_with_seed(tiny_tf):
    kwargs = dict(stop=None, max_tokens=16, temperature=1.0, seed=123)
    a = tiny_tf.complete("The", **kwargs)
    assert a == tiny_tf.complete("The", **kwargs)
    others = {tiny_tf.complete("The", stop=None, max_tokens=16, temperature=1.0, seed=s) for s in range(5)}
    assert len(others) > 1
    assert tiny_tf.complete("The", stop=None, max_tokens=16, temperature=1.0, top_k=1, seed=4) == tiny_tf.complete(
        "The", stop=None, max_tokens=16
    )


def test_missing_model_path(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not found"):
        TfLM.create(model_path=tmp_path / "nope")
    bad = tmp_path / "fake.gguf"
    bad.write_bytes(b"not a gguf")
    with pytest.raises(ModelNotFoundError, match="not a GGUF"):
        TfLM.create(model_path=bad)


@pytest.mark.parametrize(
    "name, dtype",
    [("float32", torch.float32), ("fp32", torch.float32), ("bf16", torch.bfloat16), ("BFloat16", torch.bfloat16)]
    + [("torch.float16", torch.float16), ("half", torch.float16), ("auto", "auto"), (torch.bfloat16, torch.bfloat16)],
)
def test_dtype_names(name, dtype):
    assert parse_dtype(name) == dtype and parse_dtype(None) is None


def test_unknown_dtype_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown dtype 'float8'.*bfloat16.*auto"):
        TfLM.create(model_path="/unused", dtype="float8")


# Half-precision scores against float32 on the tiny model, per token log-prob (about -10 there): bf16 keeps 8 bits of
# mantissa, so a 0.4% relative error per rounding, 0.06 measured over 8 random prompts x 6 choices; fp16 (11 bits)
# 0.008. The bounds leave 2.5x room.
HALF_TOLERANCES = {"bfloat16": 0.15, "float16": 0.02}


@pytest.mark.parametrize("dtype", sorted(HALF_TOLERANCES))
def test_half_precision_scores_close_to_float32(tiny_tf, tiny_path, dtype):
    lm = TfLM(**TfLM.create(model_path=tiny_path, dtype=dtype))
    assert lm.model.dtype == getattr(torch, dtype) and str(lm.device) == "cpu"
    rng = random.Random(3)
    for _ in range(3):
        prompt, choices = random_text(rng, 20), random_choices(rng, 6)
        half = lm.choice_logprobs(prompt, choices)
        assert all(np.isfinite(lp).all() for lp in half)
        assert_logprobs_close(half, tiny_tf.choice_logprobs(prompt, choices), atol=HALF_TOLERANCES[dtype])
    assert lm.greedy("The").dtype == np.float32  # rows leave the model as float32 whatever its dtype


def test_device_map_places_the_model_once(tiny_tf, tiny_path):
    """``device_map``: from_pretrained places the weights (accelerate's dispatch) and TfLM never moves them."""
    kwargs = TfLM.create(model_path=tiny_path, device_map={"": "cpu"})
    assert kwargs["device"] is None
    lm = TfLM(**kwargs)
    assert str(lm.device) == "cpu" and lm.model.dtype == torch.float32  # the checkpoint's dtype
    prompt, choices = "Question: 2 + 2 =", [" 4", " 5", " four"]
    assert_logprobs_close(lm.choice_logprobs(prompt, choices), tiny_tf.choice_logprobs(prompt, choices), atol=1e-6)


def test_placement_follows_the_module(tiny_path):
    """`TfLM.placement` holds the first parameter: converting the module keeps its parameter objects, so the
    dtype follows; with torch's ``overwrite_module_params_on_conversion`` (new parameter objects) it is looked up
    again. The scores follow the dtype."""
    lm = TfLM(**TfLM.create(model_path=tiny_path))
    prompt, choices = "Question: 2 + 2 =", [" 4", " 5", " four"]
    single = lm.choice_logprobs(prompt, choices)
    assert lm.placement() == (torch.device("cpu"), torch.float32)
    lm.model.to(torch.float64)
    lm.cache.reset()
    assert lm.placement() == (torch.device("cpu"), torch.float64)
    assert_logprobs_close(lm.choice_logprobs(prompt, choices), single, atol=1e-5)
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    try:
        held = lm.first_parameter
        lm.model.to(torch.float32)
        assert lm.placement() == (torch.device("cpu"), torch.float32) and lm.first_parameter is not held
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(False)


def test_copy_cache_is_a_deep_copy_a_pass_can_extend(tiny_tf):
    """`copy_cache` (a packed pass's copy of the shared prefix's KV) equals ``copy.deepcopy``: the same layer types
    and tensors, none shared; expanding and extending the copy leaves the prefix cache as it was."""
    import copy

    tiny_tf.cache.reset()
    tiny_tf.greedy("The quick brown fox")
    kv = tiny_tf.cache.kv
    before = [(layer.keys.clone(), layer.values.clone()) for layer in kv.layers]
    twin, reference = copy_cache(kv), copy.deepcopy(kv)
    assert type(twin) is type(kv) and [type(x) for x in twin.layers] == [type(x) for x in reference.layers]
    for mine, theirs, original in zip(twin.layers, reference.layers, kv.layers):
        assert mine is not original and mine.keys.data_ptr() != original.keys.data_ptr()
        assert torch.equal(mine.keys, theirs.keys) and torch.equal(mine.values, theirs.values)
        assert vars(mine).keys() == vars(theirs).keys()
    twin.batch_repeat_interleave(3)
    head = kv.layers[0].keys
    twin.update(torch.zeros_like(twin.layers[0].keys[:, :, :1]), torch.zeros_like(twin.layers[0].values[:, :, :1]), 0)
    assert twin.layers[0].keys.shape[0] == 3 and twin.get_seq_length() == kv.get_seq_length() + 1
    assert kv.layers[0].keys is head
    for (keys, values), layer in zip(before, kv.layers):
        assert torch.equal(layer.keys, keys) and torch.equal(layer.values, values)
    np.testing.assert_allclose(
        tiny_tf.greedy("The quick brown fox"), reference_greedy(tiny_tf, "The quick brown fox"), atol=1e-5
    )


def test_prefix_cache_accounting(tiny_tf):
    """The trie pass evaluates exactly prompt-delta + the trie's inner tokens (leaves are never run)."""
    prompt = "Question: What is the capital of France?\nAnswer:"
    tiny_tf.cache.reset()
    result = tiny_tf.choice_distribution(prompt, [" Paris", " Par", " London", " Berlin"])
    first = tiny_tf.cache.evaluated
    assert 0 < len(result.tree.internal_nodes()) < len(result.tree.nodes)
    assert first == len(tiny_tf.tokenize(prompt, bos=True)) + len(result.tree.internal_nodes())
    second = tiny_tf.choice_distribution(prompt, [" yes", " no", " the quick brown"])
    n_second = len(second.tree.internal_nodes())
    assert tiny_tf.cache.evaluated - first == n_second > 0
    single = [" A", " B", " the", " 1"]
    assert all(len(tiny_tf.tokenize(c)) == 1 for c in single)
    tiny_tf.choice_distribution(prompt, single)  # one-token choices: no pass at all
    assert tiny_tf.cache.evaluated - first == n_second


@pytest.mark.slow
def test_smollm2_easy_facts(smol_tf):
    for prompt, choices, answer in EASY_FACTS:
        result = smol_tf.choice_distribution(prompt, choices)
        assert result.index == answer, (prompt, result)
    assert smol_tf.choose("Question: What is the capital of France?\nAnswer:", [" Paris", " London", " Berlin"]) == 0


@pytest.mark.slow
def test_smollm2_matches_brute_force_and_completes(smol_tf):
    prompt, choices, _ = EASY_FACTS[0]
    assert_logprobs_close(smol_tf.choice_logprobs(prompt, choices), brute_force_tf(smol_tf, prompt, choices), 1e-3)
    text = smol_tf.complete("The capital of France is", stop="\n", max_tokens=20)
    assert "Paris" in text


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_tree_read_out_copies_to_the_host_once(monkeypatch, dtype):
    """`TokenChoiceTree.read_rows` on a torch tensor: a float32 CPU tensor is read in place through numpy (no
    copy); one numpy cannot view (bf16, or any tensor on a GPU, where each copy to the host is a sync) is gathered
    where it is and the picked log-probs and the row maxima come back in one ``.cpu()``. The numbers and greedy
    flags are numpy's either way (bf16: token ids past 256 are not representable, so indices must not be bf16)."""
    from autocog.core.trie import TokenChoiceTree

    rows = torch.log_softmax(torch.randn(8, 500, generator=torch.Generator().manual_seed(0)), dim=-1)
    rows = rows.to(getattr(torch, dtype))
    paths = [[int(rows[0].argmax())], [300, 1, 4], [300, 499]]
    by_numpy, by_torch = TokenChoiceTree(paths), TokenChoiceTree(paths)
    inner = by_numpy.internal_nodes()
    expected = by_numpy.read_rows([-1] + inner, rows[: 1 + len(inner)].float().numpy())
    calls = []
    for name in ("cpu", "tolist", "item", "numpy"):
        method = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _m=method, _n=name, **k: calls.append(_n) or _m(self))
    got = by_torch.read_rows([-1] + inner, rows[: 1 + len(inner)])
    assert calls == (["numpy"] if dtype == "float32" else ["cpu", "numpy"])  # numpy() of the host copy is free
    np.testing.assert_array_equal(got, expected)
    assert by_torch.is_greedy() == by_numpy.is_greedy() and by_torch.is_greedy()[0]


def reference_layout(jobs, shared, suffixes, inners):
    """`packed_layout` row by row, as written before it was vectorized: the inputs must not change."""
    last = max(len(x) for x in suffixes) - 1
    width = last + 1 + max(len(inner) for inner in inners)
    ids = np.zeros((len(jobs), width), dtype=np.int64)
    positions = np.zeros((len(jobs), width), dtype=np.int64)
    allowed = np.zeros((len(jobs), width, shared + width), dtype=bool)
    nodes = last + 1
    for a, ((_, tree), suffix, inner) in enumerate(zip(jobs, suffixes, inners)):
        begin, stop = nodes - len(suffix), nodes + len(inner)
        ids[a, begin:nodes], ids[a, nodes:stop] = suffix, tree.inner_tokens()
        positions[a, begin:nodes] = np.arange(shared, shared + len(suffix))
        positions[a, nodes:stop] = shared + len(suffix) - 1 + tree.inner_depths()
        for q in range(width):
            if not begin <= q < stop:
                allowed[a, q, shared + q] = True  # padding sees itself
                continue
            allowed[a, q, :shared] = True
            for k in range(begin, nodes):
                allowed[a, q, shared + k] = k <= q or q >= nodes
        allowed[a, nodes:stop, shared + nodes : shared + stop] = tree.inner_ancestors()
    return ids, positions, allowed, last


@pytest.mark.parametrize("shared", [0, 3])
def test_packed_layout_matches_row_by_row(tiny_tf, shared):
    """Suffixes of different lengths, tries shared by some prompts and not by others (one per shape)."""
    from autocog.lm.tf.model import packed_layout

    rng = random.Random(shared)
    header = tiny_tf.tokenize(random_text(rng, 6), bos=True)[:shared]
    lists = [random_choices(rng, 3), random_choices(rng, 5), [" a", " ab", " abc"]]
    jobs = []
    for k in range(9):
        prompt = header + tiny_tf.tokenize(random_text(rng, 1 + k % 4))
        _, tree, _ = tiny_tf.build_tree("x", lists[k % 3])
        jobs.append((prompt, tree))
    suffixes = [p[shared:] for p, _ in jobs]
    inners = [tree.internal_nodes() for _, tree in jobs]
    got, want = packed_layout(jobs, shared, suffixes, inners), reference_layout(jobs, shared, suffixes, inners)
    for mine, theirs in zip(got[:3], want[:3]):
        np.testing.assert_array_equal(mine, theirs)
    assert got[3] == want[3]
