"""The caches of what a dataset repeats (`ChoiceLM.tree_cache`, the trie's shared `TrieShape`) and the hot-path
shortcuts (`TfLM.direct_backend`, `read_packed`, one host transfer per read): same numbers as without them."""

import math
import random

import numpy as np
import pytest
import torch
from hostile import hostile_cases
from toy import ToyLM

from autocog.core.trie import TokenChoiceTree, read_packed
from autocog.eval.batch import choice_distributions


def uncached(lm, prompt, choices, **kwargs):
    """``choice_distribution`` with every choice cache cleared first (what the scores were before the caches)."""
    lm.tree_cache.clear()
    lm.choice_tokens_memo.clear()
    lm.cache.reset() if hasattr(lm, "cache") else None
    return lm.choice_distribution(prompt, choices, **kwargs)


def same(a, b):
    assert a.token_logprobs == b.token_logprobs
    assert list(a.scores) == list(b.scores)
    assert a.is_greedy == b.is_greedy


def test_tree_cache_hits_and_hands_out_copies():
    lm = ToyLM()
    first = lm.choice_distribution("q: ", ["yes", "no"])
    second = lm.choice_distribution("r: ", ["yes", "no"])
    assert len(lm.tree_cache) == 1
    assert first.tree is not second.tree and first.tree.skeleton is second.tree.skeleton
    # the second call did not overwrite the first one's scores
    assert first.tree.choice_logprobs() == first.token_logprobs
    assert [n.logprob for n in first.tree.nodes] != [n.logprob for n in second.tree.nodes]
    same(first, uncached(lm, "q: ", ["yes", "no"]))


def test_trailing_whitespace_and_end_are_part_of_the_key():
    lm = ToyLM()
    spaced = lm.choice_distribution("answer: ", ["paris", "rome"])
    tight = lm.choice_distribution("answer:", ["paris", "rome"])
    ended = lm.choice_distribution("answer:", ["paris", "rome"], end="\n")
    assert len(lm.tree_cache) == 3
    assert spaced.tree.skeleton is not tight.tree.skeleton
    assert len(ended.token_logprobs[0]) == len(tight.token_logprobs[0]) + 1
    same(spaced, uncached(lm, "answer: ", ["paris", "rome"]))
    same(tight, uncached(lm, "answer:", ["paris", "rome"]))
    same(ended, uncached(lm, "answer:", ["paris", "rome"], end="\n"))


def test_caches_do_not_leak_across_models():
    a, b = ToyLM(seed=0), ToyLM(seed=1)

    class Shifted(ToyLM):  # another tokenizer: every id moved by one
        def tokenize(self, text, bos=False):
            return [t + 1 if t < 40 else t for t in super().tokenize(text, bos)]

    c = Shifted()
    for lm in (a, b, c):
        lm.choice_distribution("q: ", ["yes", "no"])
    assert a.tree_cache is not b.tree_cache
    assert a.tree_cache.get((tuple([" yes", " no"]), None)).tokens != c.tree_cache.get(((" yes", " no"), None)).tokens
    for lm in (a, b, c):
        same(lm.choice_distribution("q: ", ["yes", "no"]), uncached(lm, "q: ", ["yes", "no"]))


def test_copy_is_independent():
    tree = TokenChoiceTree([[5, 7], [5, 9], [3]])
    twin = tree.copy()
    twin.set_logprobs([-1.0, -2.0, -3.0, -4.0])
    twin.record_argmax([-1], [5])
    assert all(np.isnan(n.logprob) for n in tree.nodes) and tree.row_argmax == {}
    assert [n.logprob for n in twin.nodes] == [-1.0, -2.0, -3.0, -4.0]
    assert twin.choice_logprobs() == [[-1.0, -2.0], [-1.0, -3.0], [-4.0]]
    twin.set_logprobs([0.0, -0.5, -0.25, -1.0])  # nodes made: they are updated too
    assert twin.nodes[1].logprob == -0.5 and twin.choice_logprobs()[0] == [0.0, -0.5]
    assert twin.internal_nodes() == tree.internal_nodes() == [0]
    with pytest.raises(ValueError):
        twin.depths[0] = 3  # shared with the copies: read-only


class OnDevice:
    """A CPU tensor that says it lies on a device: exercises the gather-there, transfer-once read-out."""

    def __init__(self, tensor):
        self.tensor, self.device = tensor, "cuda:0"

    def __getitem__(self, index):
        return self.tensor[index]

    def __len__(self):
        return len(self.tensor)

    def argmax(self, dim):
        return self.tensor.argmax(dim)

    def new_tensor(self, data):
        return self.tensor.new_tensor(data)


def test_device_read_out_equals_host_read_out():
    rng = np.random.default_rng(0)
    trees = [TokenChoiceTree([[1, 2], [1, 3], [4]]), TokenChoiceTree([[0, 5, 6], [2]])]
    reads = [(trees[0], [-1, 0]), (trees[1], [-1, 0, 1])]
    values = torch.log_softmax(torch.from_numpy(rng.normal(size=(2, 3, 8))).float(), dim=-1)
    host = read_packed(reads, values)
    host_argmax = [dict(t.row_argmax) for t in trees]
    for t in trees:
        t.row_argmax.clear()
    device = read_packed(reads, OnDevice(values))
    for a, b in zip(host, device):
        np.testing.assert_array_equal(a, b)
    assert [t.row_argmax for t in trees] == host_argmax
    one = TokenChoiceTree([[1, 2], [1, 3], [4]])
    np.testing.assert_array_equal(one.read_rows([-1, 0], OnDevice(values[0, :2])), host[0])


def test_tf_direct_backend_encodes_like_the_tokenizer(tiny_tf):
    lm = tiny_tf
    assert lm.direct_backend() is not None
    texts = [t for prompt, choices in hostile_cases(1, 40) for t in [prompt, *choices]]
    expected = [lm.tokenizer.encode(t, add_special_tokens=False) for t in texts]
    assert [lm.encode_raw(t) for t in texts] == expected
    assert lm.encode_raw_many(texts) == expected
    backend = lm.tokenizer.backend_tokenizer
    backend.enable_truncation(max_length=4)
    try:
        assert lm.direct_backend() is None  # transformers would turn it off: so does the fallback
        assert lm.encode_raw(texts[0]) == expected[0]
    finally:
        backend.no_truncation()


def test_tf_batch_and_repeats_equal_uncached(tiny_tf):
    lm = tiny_tf
    rng = random.Random(3)
    prompts = [" ".join(rng.choice(["the", "quick", "fox", "Answer:", "Paris"]) for _ in range(6)) for _ in range(6)]
    choices = [" Paris", " Berlin", " yes", " no maybe"]
    batch = choice_distributions(lm, prompts, choices, batch_size=4)
    again = choice_distributions(lm, prompts, choices, batch_size=4)
    for prompt, a, b in zip(prompts, batch, again):
        assert a.token_logprobs == b.token_logprobs
        alone = uncached(lm, prompt, choices)
        np.testing.assert_allclose(np.concatenate(a.token_logprobs), np.concatenate(alone.token_logprobs), atol=1e-5)
        assert a.is_greedy == alone.is_greedy


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64, torch.bfloat16])
def test_additive_mask_is_the_masked_fill_of_the_lowest_value(dtype):
    """`additive_mask` builds float32/16/64 in numpy, bf16 through torch: both exactly torch's masked fill."""
    from autocog.lm.tf.model import additive_mask

    allowed = np.random.default_rng(0).random((7, 11)) < 0.5
    expected = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(torch.from_numpy(~allowed), torch.finfo(dtype).min)
    got = additive_mask(allowed, dtype)
    assert got.dtype == dtype and torch.equal(got, expected)


def bool_tree_mask(tree, keep, n_prompt):
    """The tree pass's mask as it was built before `CausalMasks`: a boolean [queries, keys] array."""
    inner = tree.internal_nodes()
    n_new, n_inner = n_prompt - keep, len(inner)
    allowed = np.zeros((n_new + n_inner, n_prompt + n_inner), dtype=bool)
    allowed[:n_new, :n_prompt] = np.tri(n_new, n_prompt, k=keep, dtype=bool)
    allowed[n_new:, :n_prompt] = True
    allowed[n_new:, n_prompt:] = tree.ancestor_mask()[np.ix_(inner, inner)]
    return allowed


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64, torch.bfloat16])
def test_tree_masks_equal_a_freshly_built_one(dtype):
    """`CausalMasks.tree_mask` (a strided view of one line, the trie's block memoized in its shape) is exactly
    the masked fill of a freshly built boolean mask, whatever the prompt, the cached part and the growth of the
    line; the memoized blocks are shared by a tree's copies and read-only."""
    from autocog.lm.tf.model import CausalMasks

    rng = random.Random(4)
    masks = CausalMasks()
    lowest = torch.finfo(dtype).min
    for n_prompt, keep in [(1, 0), (5, 0), (5, 4), (40, 3), (300, 0), (300, 299), (700, 17), (2, 1)]:
        paths = [[rng.randrange(50) for _ in range(rng.randint(1, 5))] for _ in range(rng.randint(1, 12))]
        tree = TokenChoiceTree(paths)
        for pass_tree, device in ((tree, None), (tree.copy(), "cpu")):
            got = masks.tree_mask(pass_tree, keep, n_prompt, dtype, device)
            allowed = torch.from_numpy(bool_tree_mask(tree, keep, n_prompt))
            expected = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, lowest)[None, None]
            assert got.dtype == dtype and got.is_contiguous() and torch.equal(got, expected), (n_prompt, keep)
        assert len(tree.shape.inner_masks) == 1
    block = next(iter(tree.shape.inner_masks.values()))
    with pytest.raises(ValueError):
        block[0, 0] = 1.0
    assert masks.edges[masks.kind(dtype)[0]].size == 2 * 1024  # grown to the longest pass, by powers of two


def random_rows(seed: int, vocab: int, n_paths: int, longest: int, scale: float):
    """Random choice paths, two tries of them, the tries' rows, float32 logits for those rows and their float64
    log-sum-exps."""
    rng = np.random.default_rng(seed)
    paths = [[int(a) for a in rng.integers(0, vocab, size=rng.integers(1, longest + 1))] for _ in range(n_paths)]
    tree, twin = TokenChoiceTree(paths), TokenChoiceTree(paths)
    rows = tree.rows()
    logits = rng.normal(scale=scale, size=(len(rows), vocab)).astype(np.float32)
    return paths, tree, twin, rows, logits, np.log(np.exp(logits.astype(np.float64)).sum(-1))


def test_read_out_with_offsets_equals_log_softmax():
    """`read_rows` from logits minus their log-sum-exp (``offsets``) equals the read from log-probs within 1e-6,
    with the same argmax; a read that covers every node and one that covers some (the rest NaN) agree."""
    paths, tree, twin, rows, logits, norms = random_rows(1, vocab=40, n_paths=12, longest=4, scale=4.0)
    by_offsets = tree.read_rows(rows, logits, norms)
    by_softmax = twin.read_rows(rows, torch.log_softmax(torch.from_numpy(logits), dim=-1))
    assert not np.isnan(by_offsets).any()
    np.testing.assert_allclose(by_offsets, by_softmax, atol=1e-6, rtol=0)
    assert tree.row_argmax == twin.row_argmax and tree.is_greedy() == twin.is_greedy()
    part = TokenChoiceTree(paths).read_rows(rows[:2], logits[:2], norms[:2])
    read = np.isin(np.arange(len(tree.skeleton)), tree.row_reads(rows[:2])[1])
    np.testing.assert_array_equal(part[read], by_offsets[read])
    assert np.isnan(part[~read]).all()
    short = TokenChoiceTree([[0, 1]])  # a row given twice covers as many nodes as there are, not all of them
    np.testing.assert_array_equal(short.read_rows([-1, -1], logits[:2, :3], norms[:2])[1:], [np.nan])


def test_read_out_given_the_rows_argmax():
    """`read_rows(..., argmax=)` (LLaMa's rows, whose argmax also gave their maxima) records that argmax and reads
    the same log-probs as without it; an argmax of another length is a ValueError."""
    _, tree, twin, rows, logits, norms = random_rows(2, vocab=30, n_paths=8, longest=3, scale=3.0)
    given = logits.argmax(-1).tolist()
    np.testing.assert_array_equal(
        tree.read_rows(rows, logits, norms, argmax=given), twin.read_rows(rows, logits, norms)
    )
    assert tree.row_argmax == twin.row_argmax == dict(zip(rows, given))
    with pytest.raises(ValueError, match="argmax ids"):
        tree.read_rows(rows, logits, norms, argmax=given[:-1])


def test_choice_logprobs_read_along_each_path():
    """`choice_logprobs` through the memoized path index: the values along each path, from the tree's own
    log-probs (before and after its nodes are made) or from the ones given."""
    tree = TokenChoiceTree([[5, 7, 8], [5, 9], [3], [5, 7]])
    values = [-0.5, -1.0, -2.0, -3.0, -4.0]
    expected = [[values[i] for i in path] for path in tree.paths]
    assert tree.choice_logprobs(values) == expected
    twin = tree.copy()
    assert all(math.isnan(x) for lp in twin.choice_logprobs() for x in lp)
    twin.set_logprobs(values)
    assert twin.choice_logprobs() == expected
    twin.nodes[1].logprob = -6.0
    assert twin.choice_logprobs()[0] == [-0.5, -6.0, -2.0]
