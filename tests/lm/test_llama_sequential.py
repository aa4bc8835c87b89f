"""`autocog.lm.llama.sequential.PromptByPrompt` (LLaMa's default batch path) and the prefix cache's tip sequences
(`LlamaPrefixCache.widen` / `settle`): a batch gives exactly, bitwise, the numbers of the same prompts one by one,
in one decode per prompt, and leaves no trie cell behind."""

import random

import numpy as np
import pytest

llama_cpp = pytest.importorskip("llama_cpp", reason="the llama extra (llama-cpp-python) is not installed")

from randomized import make_prompts, random_choices
from references import EXACT, counting_decodes

from autocog.core.trie import TokenChoiceTree
from autocog.core.types import ScoreRequest
from autocog.lm import LLaMa, TransientError
from autocog.lm.llama import sequential
from autocog.lm.scoring import score


@pytest.fixture(scope="module")
def lm():
    from autocog.gguf.models import tiny_llama_gguf

    model = LLaMa(**LLaMa.create(tiny_llama_gguf(), n_ctx=1024, **EXACT), n_seq_max=6)
    yield model
    model.close()


def one_by_one(lm, requests):
    lm.cache.reset()
    return [lm.choice_distribution(r.prompt, r.choices).token_logprobs for r in requests]


def batched(lm, requests, batch_size=64):
    lm.cache.reset()
    return [r.token_logprobs for r in score(lm, requests, batch_size=batch_size)]


def assert_clean(lm, n_prompt):
    """Sequence 0 holds the last prompt; sequences 1..wide its first wide_upto positions; nothing else anywhere."""
    memory, cache = lm.cache.memory, lm.cache
    assert llama_cpp.llama_memory_seq_pos_max(memory, 0) == n_prompt - 1
    for s in range(1, cache.n_seq_max):
        expected = cache.wide_upto - 1 if s <= cache.wide else -1
        assert llama_cpp.llama_memory_seq_pos_max(memory, s) == expected


def mixed_requests():
    """A shared header, per-row choices of 1-5 tips (5 = the context's n_seq_max - 1), single-token choices (no
    inner node), a repeated prompt, and a trie with more tips than sequences (not one chunk: evaluate_tree)."""
    rng = random.Random(5)
    prompts = make_prompts(10, seed=3, header="Context: the quick brown fox.\n")
    lists = [random_choices(rng, k) for k in (2, 4, 1, 6, 3, 8, 2, 30, 5, 4)]
    lists[2] = [" A", " B", " C"]
    prompts[5] = prompts[4]
    return [ScoreRequest(p, c) for p, c in zip(prompts, lists)]


def test_batch_equals_one_by_one_bitwise(lm):
    requests = mixed_requests()
    trees = [lm.build_tree(r.prompt, r.choices)[1] for r in requests]
    assert len(trees[7].tips()) > lm.cache.n_seq_max - 1 and not trees[2].internal_nodes()
    assert len({len(t.tips()) for t in trees}) > 3  # several widths: the padded layout
    expected = one_by_one(lm, requests)
    calls = counting_decodes(lm)
    try:
        actual = batched(lm, requests)
    finally:
        del lm.cache.decode
    assert actual == expected  # bitwise: the same decodes as evaluate_tree
    chunks = [len(lm.tip_chunks(t, lm.cache.n_seq_max - 1, lm.cache.n_ctx)) for t in trees]
    assert sum(n > 1 for n in chunks) >= 2
    assert len(calls) == sum(chunks)  # one decode per prompt; a trie with more tips than sequences, one per chunk
    assert_clean(lm, len(lm.tokenize(requests[-1].prompt, bos=True)))


def test_decodes_hold_each_prompt_and_its_trie(lm):
    """Same choices after every prompt: each decode is the prompt past what the previous one shares, then the trie."""
    requests = [ScoreRequest(p, [" yes", " no", " the quick brown"]) for p in make_prompts(6, seed=9)]
    calls = counting_decodes(lm)
    try:
        batched(lm, requests)
    finally:
        del lm.cache.decode
    tree = lm.build_tree(requests[0].prompt, requests[0].choices)[1]
    previous: list[int] = []
    expected = []
    for r in requests:
        tokens = lm.tokenize(r.prompt, bos=True)
        shared = 0
        while shared < min(len(previous), len(tokens)) and previous[shared] == tokens[shared]:
            shared += 1
        expected.append(len(tokens) - min(shared, len(tokens) - 1) + len(tree.internal_nodes()))
        previous = tokens
    assert calls == expected


def test_a_transient_fault_splits_and_leaves_nothing_stale(lm, monkeypatch):
    requests = mixed_requests()[:6]
    expected = one_by_one(lm, requests)
    calls = {"n": 0}
    decode = lm.cache.decode

    def flaky(batch=None):
        calls["n"] += 1
        if calls["n"] == 3:
            raise TransientError("no KV slot (injected)")
        decode(batch)

    monkeypatch.setattr(lm.cache, "decode", flaky)
    assert batched(lm, requests) == expected
    assert calls["n"] > len(requests)  # the failed run was split and run again


def test_runs_bound_the_logits_block():
    def chain(n_inner):  # one choice of n_inner + 1 tokens: n_inner inner nodes
        return TokenChoiceTree([list(range(1, n_inner + 2))])

    jobs = [([1, 2, 3], chain(3)), ([1, 2], chain(1)), ([4], chain(0)), ([5], chain(7))]
    assert [len(tree.internal_nodes()) for _, tree in jobs] == [3, 1, 0, 7]
    groups = sequential.runs(jobs, n_vocab=10, budget=4 * 10 * 6)  # 6 rows of 10 floats a run
    assert [len(g) for g in groups] == [2, 1, 1]  # 4 + 2 rows, then 1, then 8 (alone though over the budget)


def test_a_trie_over_the_block_budget_goes_one_by_one(lm, monkeypatch):
    """A job whose logits rows exceed `BLOCK_BYTES` is not copied into a block: `evaluate_tree` reads its decode's
    rows as they come. The numbers stay those of one by one."""
    requests = [ScoreRequest(p, [" yes", " no", " the quick brown fox"]) for p in make_prompts(4, seed=2)]
    tree = lm.build_tree(requests[0].prompt, requests[0].choices)[1]
    rows_bytes = (1 + len(tree.internal_nodes())) * lm.n_vocab * 4
    expected = one_by_one(lm, requests)
    monkeypatch.setattr(sequential, "BLOCK_BYTES", rows_bytes - 1)
    assert not sequential.fits(lm.cache, (lm.tokenize(requests[0].prompt, bos=True), tree))
    runs = []
    real = sequential.PromptByPrompt.run
    monkeypatch.setattr(sequential.PromptByPrompt, "run", lambda self: runs.append(len(self.jobs)) or real(self))
    assert batched(lm, requests) == expected and runs == []
    monkeypatch.setattr(sequential, "BLOCK_BYTES", 2 * rows_bytes)
    assert batched(lm, requests) == expected and runs == [2, 2]  # within the budget: runs of two jobs


def test_tip_sequences_grow_and_shrink_with_the_trie(lm):
    """One prompt scored with tries of 3, 1, 5 then 2 tips: the prompt's cells carry exactly the tips' sequences."""
    prompt = "Question: what is the capital of France?\nAnswer:"
    n_prompt = len(lm.tokenize(prompt, bos=True))
    lm.cache.reset()
    for choices in (
        [" Paris is", " London is", " Rome is"],
        [" Paris is"],
        random_choices(random.Random(1), 5),
        [" a b", " c d"],
    ):
        tree = lm.build_tree(prompt, choices)[1]
        result = lm.choice_distribution(prompt, choices)
        assert lm.cache.wide == len(tree.tips()) and lm.cache.wide_upto == n_prompt
        assert_clean(lm, n_prompt)
        np.testing.assert_allclose(
            [sum(x) for x in result.token_logprobs],
            [sum(x) for x in one_by_one(lm, [ScoreRequest(prompt, choices)])[0]],
            atol=1e-6,
        )


def test_prompts_longer_than_n_batch_take_several_decodes_each():
    """n_batch=16: a prompt and its trie go in several decodes, each copying its own rows into the block at the
    right place; the numbers stay those of one by one."""
    from autocog.gguf.models import tiny_llama_gguf

    small = LLaMa(**LLaMa.create(tiny_llama_gguf(), n_ctx=1024, n_batch=16, **EXACT), n_seq_max=6)
    try:
        requests = mixed_requests()
        expected = one_by_one(small, requests)
        calls = counting_decodes(small)
        try:
            assert batched(small, requests) == expected
        finally:
            del small.cache.decode
        assert len(calls) > len(requests) and max(calls) <= 16
    finally:
        small.close()


def test_layout_batches_point_at_each_decodes_rows(lm):
    """Each llama_batch of a Layout reads its decode's tokens, positions, sequence ids and logits flags."""
    from autocog.lm.llama.batch import Layout, Part, TrieRows

    cache = lm.cache
    trees = [TokenChoiceTree([[5, 7, 8], [5, 9, 1], [6]]), TokenChoiceTree([[3, 4], [3, 2]])]  # tips 7 and 9; 3
    parts = [Part([1, 10, 11, 12], 1, TrieRows.whole(trees[0])), Part([1, 20], 0, TrieRows.whole(trees[1]))]
    layout = Layout.of(parts, cache)
    expected = [  # (token, position, sequence ids, logits kept)
        [(10, 1, [0, 1, 2], 0), (11, 2, [0, 1, 2], 0), (12, 3, [0, 1, 2], 1), (5, 4, [1, 2], 1), (7, 5, [1], 1)]
        + [(9, 5, [2], 1)],
        [(1, 0, [0, 1], 0), (20, 1, [0, 1], 1), (3, 2, [1], 1)],
    ]
    assert layout.decodes == [0, 1, 2] and layout.outputs == [0, 4, 6] and layout.kept == [4, 2]
    for batch, rows in zip(layout.batches, expected):
        n = batch.n_tokens
        assert n == len(rows)
        token = np.ctypeslib.as_array(batch.token, shape=(n,)).tolist()
        pos = np.ctypeslib.as_array(batch.pos, shape=(n,)).tolist()
        counts = np.ctypeslib.as_array(batch.n_seq_id, shape=(n,)).tolist()
        seqs = [np.ctypeslib.as_array(batch.seq_id[k], shape=(counts[k],)).tolist() for k in range(n)]
        logits = np.ctypeslib.as_array(batch.logits, shape=(n,)).tolist()
        assert list(zip(token, pos, seqs, logits)) == rows


def test_the_logits_block_is_reused_and_bounded(lm):
    cache = lm.cache
    cache.block = None  # (earlier tests left theirs)
    first = cache.logits_block(10)
    again = cache.logits_block(4)
    assert again is first and again.rows.shape == (4, cache.n_vocab) and np.shares_memory(first.buffer, again.rows)
    bigger = cache.logits_block(20)
    assert bigger is not first and bigger.capacity == 20 and cache.logits_block(12) is bigger
    with pytest.raises(ValueError, match="cannot hold 21"):
        bigger.use(21)
    with pytest.raises(ValueError, match="do not fit"):
        cache.copy_logits(bigger, 11, 2)  # rows 11:13 of a block now in use for 12


def test_a_refused_partial_removal_is_an_error(lm, monkeypatch):
    monkeypatch.setattr(lm.cache, "remove", lambda seq_id, start: False)
    with pytest.raises(RuntimeError, match="refused to drop part of the KV cache"):
        lm.cache.drop_from(3)


def test_a_layout_decode_takes_exactly_one_reader(lm):
    from autocog.lm.llama.batch import Layout, Part, TrieRows

    layout = Layout.of([Part([1, 10], 0, TrieRows.whole(TokenChoiceTree([[3, 4], [3, 2]])))], lm.cache)
    with pytest.raises(TypeError, match="exactly one of take= and into="):
        layout.decode(lm.cache, 0)
    with pytest.raises(TypeError, match="exactly one of take= and into="):
        layout.decode(lm.cache, 0, take=lambda first, rows: None, into=(lm.cache.logits_block(2), 0))
