"""The base classes: abstractness, retries, the token choice tree, normalization, input checks."""

import dataclasses
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
from toy import ToyLM

from autocog.core.checks import split_boundary
from autocog.core.sampling import SamplingParams
from autocog.core.stops import find_stop
from autocog.lm import (
    LM,
    ChoiceLM,
    GreedyLM,
    InvalidChoicesError,
    RetryExhaustedError,
    TokenChoiceTree,
    TransientError,
)


def test_abstract_classes_cannot_be_instantiated():
    for cls in (LM, GreedyLM, ChoiceLM):
        with pytest.raises(TypeError):
            cls()

    class Incomplete(ChoiceLM):
        def tokenize(self, text, bos=False):
            return []

        def detokenize(self, tokens):
            return ""

    with pytest.raises(TypeError, match="greedy_impl"):
        Incomplete()

    class Minimal(LM):
        def tokenize(self, text, bos=False):
            return [ord(c) for c in text]

        def detokenize(self, tokens):
            return "".join(map(chr, tokens))

        def complete(self, prompt, stop="\n", **kwargs):
            return "x" + stop

        def choose(self, prompt, choices, **kwargs):
            return 0

    assert Minimal().choose("p", ["a"]) == 0
    with pytest.raises(NotImplementedError):
        Minimal().choice_distribution("p", ["a"])


def test_tree_structure():
    tree = TokenChoiceTree([[1, 2, 3], [1, 2], [1, 4], [5]])
    assert len(tree.nodes) == 5  # unique (prefix, token) pairs
    assert tree.paths == [[0, 1, 2], [0, 1], [0, 3], [4]]
    assert tree.nodes[1].ends == [1] and tree.nodes[1].children  # a choice ending inside another
    assert list(tree.depths) == [1, 2, 3, 2, 1]
    assert tree.internal_nodes() == [0, 1]
    mask = tree.ancestor_mask()
    assert mask[2].tolist() == [True, True, True, False, False]
    assert mask[3].tolist() == [True, False, False, True, False]
    assert tree.branching_nodes() == 3  # root (1 vs 5), node 0 (2 vs 4), node 1 (end vs 3)


def test_tree_dot_and_render(tmp_path):
    lm = ToyLM()
    result = lm.choice_distribution("pick:", [" yes", " no", " nope"])
    dot = result.tree.to_dot(choices=result.choices, probs=result.probs, title="pick")
    assert dot.startswith("digraph") and "' nope'" in dot and "p=" in dot
    assert dot.count("->") == len(result.tree.nodes)
    assert result.tree.render(tmp_path / "t.dot", choices=result.choices).read_text() == result.tree.to_dot(
        choices=result.choices
    )
    if shutil.which("dot"):
        svg = result.tree.render(tmp_path / "t.svg", choices=result.choices)
        assert svg.read_text().lstrip().startswith(("<?xml", "<svg"))


def test_normalizations_math():
    lm = ToyLM()
    prompt, choices = "go:", [" a", " abc", " b"]
    lps = lm.choice_logprobs(prompt, choices)
    sums = np.array([math.fsum(x) for x in lps])
    np.testing.assert_allclose(
        lm.choice_distribution(prompt, choices, normalization="mean").scores, sums / [2, 4, 2]
    )  # character-level tokens: " a" is 2 tokens
    np.testing.assert_allclose(
        lm.choice_distribution(prompt, choices, normalization="char").scores, sums / [len(c) for c in choices]
    )
    uncond = [
        [float(lm.greedy_impl([lm.bos_token_id] + lm.tokenize(c)[:k])[t]) for k, t in enumerate(lm.tokenize(c))]
        for c in choices
    ]
    np.testing.assert_allclose(
        lm.choice_distribution(prompt, choices, normalization="pmi").scores, sums - [math.fsum(u) for u in uncond]
    )
    assert lm.default_normalization == "sum"


def test_boundary_rules():
    assert split_boundary("Answer: ", ["Yes", "No"]) == ("Answer:", [" Yes", " No"])
    assert split_boundary("Answer:", [" Yes"]) == ("Answer:", [" Yes"])
    lm = ToyLM()
    # BOS once, in front of the prompt; never in front of a choice
    result = lm.choice_distribution("x", [" y"])
    assert lm.bos_token_id not in result.tree.tokens
    with pytest.raises(InvalidChoicesError, match="same tokens"):
        lm.choose("Answer:", [" yes", " yesÄ"])  # the toy tokenizer drops "Ä"


def test_choice_that_tokenizes_to_nothing():
    with pytest.raises(InvalidChoicesError, match="tokenizes to nothing"):
        ToyLM().choose("p", ["a", "ÄÖÜ"])


def test_find_stop_earliest_end():
    assert find_stop("abc\ndef", ["\n"]) == 4
    assert find_stop("abcdef", ["ef", "bcd"]) == 4
    assert find_stop("abc", ["x"]) is None


class Flaky(ToyLM):
    def __init__(self, failures, error):
        super().__init__(max_retries=3)
        self.retry_backoff = 0.001
        self.failures, self.error, self.attempts, self.recovered = failures, error, 0, 0

    def greedy_impl(self, tokens):
        self.attempts += 1
        if self.attempts <= self.failures:
            raise self.error
        return super().greedy_impl(tokens)

    def recover(self, error):
        self.recovered += 1


def test_retry_transient_then_success():
    lm = Flaky(2, MemoryError("CUDA out of memory"))
    assert lm.greedy("abc").shape == (len(lm.last),)
    assert lm.attempts == 3 and lm.recovered == 2


def test_retry_bounded_and_reports_every_attempt():
    lm = Flaky(100, TransientError("device busy"))
    with pytest.raises(RetryExhaustedError) as info:
        lm.greedy("abc")
    assert lm.attempts == 4 and len(info.value.attempts) == 4
    assert "attempt 4: TransientError: device busy" in str(info.value)


def test_non_transient_error_propagates_at_once():
    lm = Flaky(100, ValueError("bad tensor"))
    with pytest.raises(ValueError, match="bad tensor"):
        lm.greedy("abc")
    assert lm.attempts == 1 and lm.recovered == 0


def test_runtime_oom_is_transient():
    lm = Flaky(1, RuntimeError("CUDA error: out of memory"))
    lm.greedy("abc")
    assert lm.attempts == 2


def greedy_by_hand(lm, prompt, n):
    """The greedy text after ``prompt``: the argmax of `greedy_impl`, up to ``n`` tokens or EOS."""
    ids, generated = lm.tokenize(prompt, bos=True), []
    for _ in range(n):
        token = int(np.argmax(lm.greedy_impl(ids + generated)))
        if token in lm.eos_token_ids:
            break
        generated.append(token)
    return lm.detokenize(generated)


def test_complete_contract_on_toy():
    lm = ToyLM()
    free = lm.complete("hello", stop=None, max_tokens=30)
    assert free == greedy_by_hand(lm, "hello", 30)
    stop = free[5:7]
    text = lm.complete("hello", stop=stop, max_tokens=30)
    assert text.endswith(stop) and free.startswith(text) and text.count(stop) == 1
    assert lm.complete("hello", stop="never-there", max_tokens=5) == free[:5]


def test_sampling_params_are_checked_once():
    params = SamplingParams.from_settings({"max_new_tokens": "5", "do_sample": True, "temperature": 1, "seed": 3})
    assert params == SamplingParams(max_tokens=5, temperature=1.0, seed=3)
    assert isinstance(params.max_tokens, int) and isinstance(params.temperature, float) and not params.is_greedy
    assert params.replace(top_k=4) == SamplingParams(max_tokens=5, temperature=1.0, top_k=4, seed=3)
    assert SamplingParams().as_dict() == {
        "max_tokens": 64,
        "temperature": 0.0,
        "top_p": 1.0,
        "top_k": 0,
        "min_p": 0.0,
        "seed": None,
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.seed = 1
    with pytest.raises(TypeError, match="unknown completion setting 'temprature'"):
        SamplingParams.from_settings({"temprature": 1})
    for bad in ({"max_tokens": -1}, {"max_tokens": None}, {"temperature": -0.1}, {"top_p": 1.5}, {"min_p": 2}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SamplingParams.from_settings(bad)


def test_completion_settings_keep_their_keyword_form():
    """``completion_kwargs=`` and ``complete(..., **settings)`` take the same names as before `SamplingParams`."""
    lm = ToyLM(completion_kwargs={"max_new_tokens": 3})
    assert lm.sampling == SamplingParams(max_tokens=3) and lm.completion_kwargs["max_tokens"] == 3
    assert lm.complete("hello", stop=None) == greedy_by_hand(lm, "hello", 3)
    assert lm.complete("hello", stop=None, max_new_tokens=5) == greedy_by_hand(lm, "hello", 5)
    settings = {"max_tokens": 12, "temperature": 1.0, "seed": 1}
    sampled = lm.complete("hello", stop=None, **settings)
    assert sampled != greedy_by_hand(lm, "hello", 12)
    assert sampled == lm.complete_tokens(lm.prompt_tokens("hello"), [], SamplingParams(**settings))
    assert "".join(lm.stream("hello", stop=None, **settings)) == sampled
    with pytest.raises(TypeError, match="unknown completion setting"):
        lm.complete("hello", temprature=1.0)
    with pytest.raises(TypeError):
        lm.complete_tokens(lm.prompt_tokens("hello"), [], 8, 1.0)  # no positional sampling arguments


def test_transformers_missing_names_the_extra():
    code = (
        "import sys; sys.modules['transformers'] = None\n"
        "from autocog.lm import TfLM, BackendNotInstalledError\n"
        "try:\n    TfLM.create(model_path='x')\nexcept BackendNotInstalledError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "pip install autocog[transformers]" in out.stdout, out.stderr
