"""`autocog.lm.OpenAI` against a real vLLM server (CPU build, `scripts/setup_vllm.sh`) serving SmolLM2's
transformers directory, compared number for number with `TfLM` on the same directory.

The server is started once for this module (`tests/vllm_server.py`: free loopback port, ``/health``, one
warm-up request, stopped by PID); about 4 GiB while it runs. Without the vLLM venv these tests fail in CI
and skip locally with a message that says to run the setup script.
"""

import math
import threading
import time

import numpy as np
import pytest
from conftest import EASY_FACTS, assert_logprobs_close
from vllm_server import free_port, smollm2_server

from autocog.core.types import ScoreRequest
from autocog.errors import (
    ContextLengthError,
    InvalidChoicesError,
    RequestFailedError,
    RetryExhaustedError,
    StrategyUnavailableError,
)

pytest.importorskip("openai")
from autocog.lm.openai import OpenAI

pytestmark = pytest.mark.slow
ATOL = 1e-3

# Boundary tokens: pure whitespace, digits, newlines, punctuation, a choice that is a prefix of another.
BOUNDARY_CASES = [
    ("Question: What is 2 plus 2?\nAnswer:", [" 3", " 4", " 5", " 22"]),
    ("Question: What is 2 plus 2?\nAnswer: ", ["4", "22", "four"]),
    ("List:\n1. apples\n2.", [" pears", "\n", " ", "\n\n3."]),
    ("She said", [",", ".", "!", ' "hi"']),
    ("Count: 1", ["0", "00", "000", " 1"]),
    ("Reply with Yes or No:", [" Yes", "Yes", " No", "No"]),
]


@pytest.fixture(scope="module")
def vllm_server():
    """SmolLM2 on vLLM for this module (module scope: its 4 GiB are freed before the next test module)."""
    server = smollm2_server()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(vllm_server):
    lm = OpenAI(base_url=vllm_server.base_url, api_key="none")
    yield lm
    lm.close()


def test_server_is_detected_and_probed(api):
    assert api.server == "vllm" and api.model == "smollm2"
    caps = api.probe()
    assert caps["echo"] == "direct" and caps["bias"] == "pre"
    assert api.top_logprobs == 20
    assert api.tokenize("Question: What is 2 plus 2?") == [17872, 42, 1812, 314, 216, 34, 8055, 216, 34, 47]


def test_auto_uses_token_ids_and_says_why(api, smol_tf):
    prompt, choices = BOUNDARY_CASES[0]
    before = api.requests["completions"]
    r = api.choice_distribution(prompt, choices)
    assert api.requests["completions"] - before == 1  # every choice in one request
    assert r.strategy == "echo" and r.info["token_ids"] and r.info["requests"] == 1
    assert r.info["reason"].startswith("auto: echo by token ids") and "prompt_logprobs" in r.info["reason"]
    assert r.info["sequences"] == 4  # no choice is a token prefix of another here
    assert_logprobs_close(r.token_logprobs, smol_tf.choice_logprobs(prompt, choices), ATOL)
    # The case: " 4" is " " + "4"; the " " token must read TfLM's value (-0.96), not -11.
    assert abs(r.token_logprobs[1][0] - smol_tf.choice_logprobs(prompt, [" 4"])[0][0]) < ATOL
    assert r.token_logprobs[1][0] > -2


@pytest.mark.parametrize("prompt,choices", BOUNDARY_CASES + [(p, c) for p, c, _ in EASY_FACTS[:4]])
@pytest.mark.parametrize(
    "strategy,search",
    [
        ("auto", "best-first"),
        ("echo", "best-first"),
        ("descent", "best-first"),
        ("descent", "full"),
        ("descent", "greedy"),
    ],
)
def test_every_strategy_equals_tf(api, smol_tf, prompt, choices, strategy, search):
    expected = smol_tf.choice_distribution(prompt, choices)
    api.clear_cache()
    r = api.choice_distribution(prompt, choices, strategy=strategy, search=search)
    assert r.index == expected.index
    if strategy == "descent":
        assert r.info["reason"] == "descent: requested"
    else:
        assert "echo by token ids" in r.info["reason"]
    exact = r.info["exact"]
    if strategy != "descent" or search == "full":
        assert all(exact)
    for j, ok in enumerate(exact):  # what a strategy reports as exact must be
        if ok:
            np.testing.assert_allclose(r.token_logprobs[j], expected.token_logprobs[j], atol=ATOL, rtol=0)
    if all(exact) and search != "greedy":  # best-first scores eliminated choices by a bound
        np.testing.assert_allclose(r.probs, expected.probs, atol=ATOL)


@pytest.mark.parametrize("normalization,told", [("mean", None), ("char", None), ("pmi", None), ("pmi", "<|im_start|>")])
def test_normalizations_equal_tf(vllm_server, smol_tf, normalization, told):
    prompt, choices = BOUNDARY_CASES[2]
    expected = smol_tf.choice_distribution(prompt, choices, normalization=normalization)
    # TfLM's unconditional context is the tokenizer's BOS (<|im_start|>, id 1) even though SmolLM2 adds none to
    # prompts; OpenAI reads it from /tokenizer_info (or is told: unconditional_prompt= overrides).
    assert smol_tf.unconditional_tokens() == [1]
    api = OpenAI(base_url=vllm_server.base_url, api_key="none", unconditional_prompt=told)
    if normalization == "pmi":
        assert api.unconditional_prompt == "<|im_start|>"
    before = api.requests["completions"]
    r = api.choice_distribution(prompt, choices, normalization=normalization)
    # One request per prompt: pmi's unconditional scores are a second prompt of the same batch, in parallel.
    assert api.requests["completions"] - before == (2 if normalization == "pmi" else 1)
    assert r.info["batch_prompts"] == (2 if normalization == "pmi" else 1)
    api.close()
    np.testing.assert_allclose(r.scores, expected.scores, atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    "prompt,stop,max_tokens",
    [
        ("Question: What is 2 plus 2?\nAnswer:", "\n", 16),
        ("1, 2, 3,", ",", 8),
        ("The capital of France is", ["."], 24),
        ("Once upon a time", ["\n", " the"], 40),
        ("Write a list:\n1.", None, 12),
    ],
)
def test_complete_equals_tf_greedy(api, smol_tf, prompt, stop, max_tokens):
    expected = smol_tf.complete(prompt, stop=stop, max_tokens=max_tokens)
    assert api.complete(prompt, stop=stop, max_tokens=max_tokens) == expected


def test_many_prompts_per_request(vllm_server, smol_tf):
    requests = [
        ScoreRequest(f"Question: What is {a} plus {b}?\nAnswer:", [" 1", " 2", " 3", " 10", " 12"])
        for a in range(1, 5)
        for b in range(1, 4)
    ]
    lm = OpenAI(base_url=vllm_server.base_url, api_key="none", concurrency=1)
    lm.score_batch(requests[:1])  # probes and warms the tokenizer cache
    before = lm.requests["completions"]
    results = lm.score_batch(requests)
    assert lm.requests["completions"] - before == 1  # 12 prompts x 4 leaves (" 1" is read from " 12")
    assert results[0].info["batch_sequences"] == 48 and results[0].info["batch_prompts"] == 12
    for request, result in zip(requests, results):
        assert_logprobs_close(result.token_logprobs, smol_tf.choice_logprobs(request.prompt, request.choices), ATOL)
    lm.close()


def test_batch_concurrency_is_bounded_and_used(vllm_server):
    lm = OpenAI(base_url=vllm_server.base_url, api_key="none", concurrency=3)
    lm.probe()
    flight = {"now": 0, "max": 0}
    lock = threading.Lock()
    send = lm.session.requests.send  # every sync request of a plan that is not streamed goes through it

    def counting(generation):
        with lock:
            flight["now"] += 1
            flight["max"] = max(flight["max"], flight["now"])
        try:
            time.sleep(0.05)  # keep the requests overlapping on a busy machine
            return send(generation)
        finally:
            with lock:
                flight["now"] -= 1

    lm.session.requests.send = counting
    requests = [ScoreRequest(f"Item {k}: the color is", [" red", " green", " blue"]) for k in range(12)]
    before = lm.requests["completions"]
    results = lm.score_batch(requests)
    assert lm.requests["completions"] - before == 3  # 36 sequences over 3 slots
    assert flight["max"] == 3
    serial = OpenAI(base_url=vllm_server.base_url, api_key="none", concurrency=1)
    for a, b in zip(results, serial.score_batch(requests)):
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)
    lm.close()
    serial.close()


def test_input_errors_before_any_request(api):
    api.probe()
    before = api.requests.copy()
    long_prompt = "word " * 2100
    with pytest.raises(ContextLengthError, match="2048"):
        api.choice_distribution(long_prompt, [" a", " b"])
    with pytest.raises(InvalidChoicesError):
        api.choice_distribution("Q:", [" a", " a"])
    with pytest.raises(InvalidChoicesError):
        api.choice_distribution("Q:", [])
    with pytest.raises(InvalidChoicesError):  # one bad request fails the whole batch before anything is sent
        api.score_batch([ScoreRequest("Q:", [" a", " b"]), ScoreRequest("Q:", [" a", 3])])
    assert api.requests["completions"] == before["completions"]


def test_empty_prompt_without_bos_is_refused(api):
    before = api.requests["completions"]
    with pytest.raises(StrategyUnavailableError, match="BOS"):
        api.choice_distribution("", ["Hello", "Goodbye"])
    assert api.requests["completions"] == before


def test_unknown_model_is_a_clear_error(vllm_server):
    lm = OpenAI(
        model="no-such-model", base_url=vllm_server.base_url, api_key="none", server="vllm", check_tokenizer=False
    )
    with pytest.raises(RequestFailedError, match="no-such-model"):
        lm.complete("Hello", max_tokens=2)
    lm.close()


def test_server_gone_is_bounded():
    lm = OpenAI(
        model="smollm2",
        base_url=f"http://127.0.0.1:{free_port()}/v1",
        api_key="none",
        server="vllm",
        max_retries=2,
        max_retry_time=5,
        backoff=0.05,
    )
    began = time.monotonic()
    with pytest.raises(RetryExhaustedError):
        lm.choice_distribution("Q:", [" a", " b"])
    assert time.monotonic() - began < 10
    lm.close()


def test_concurrent_callers_get_their_own_answers(api, smol_tf):
    cases = [(p, c) for p, c, _ in EASY_FACTS]
    out = [None] * len(cases)

    def run(k):
        out[k] = api.choice_distribution(*cases[k]).token_logprobs

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for (prompt, choices), got in zip(cases, out):
        assert got is not None and not any(math.isnan(v) for lp in got for v in lp)
        assert_logprobs_close(got, smol_tf.choice_logprobs(prompt, choices), ATOL)


def test_hostile_text_scores_like_tf_or_is_refused(vllm_server, api, smol_tf):
    """The shared hostile-input property (tests/hostile.py): every case is scored like TfLM within 1e-3 or
    refused with a typed error that says why, and the server keeps answering."""
    from hostile import check_cases, hostile_cases

    from autocog.errors import InvalidChoicesError, InvalidPromptError, TokenizerMismatchError

    typed = (
        InvalidChoicesError,
        InvalidPromptError,
        StrategyUnavailableError,
        TokenizerMismatchError,
        ContextLengthError,
    )

    def alive():
        return vllm_server.process.poll() is None and isinstance(api.complete("The quick brown", max_tokens=2), str)

    for kwargs in ({}, {"strategy": "descent", "search": "full"}):
        tally = check_cases(
            lambda p, c: api.choice_distribution(p, c, **kwargs).token_logprobs,
            smol_tf.choice_logprobs,
            hostile_cases(seed=11, count=10),
            ATOL,
            typed,
            deadline=time.monotonic() + 300,
            alive=alive,
        )
        assert tally.total == 10, tally
        if not kwargs:  # echo by token ids refuses only what TfLM refuses too
            assert sum(tally.refused.values()) == tally.refused_as_reference, tally


# --- Structured output through vLLM (`autocog/structured/server.py`: ``structured_outputs`` in the body) ----


def test_structured_course_example(api):
    """The course example (`Client`: name, US phone, five-digit ZIP) comes back as a validated instance."""
    from structured_cases import COURSE_PROMPT, EXTRACTION_PROMPT, EXTRACTIONS, Client, _check_client

    import autocog

    _check_client(autocog.generate(api, Client, COURSE_PROMPT, max_tokens=96))
    client = autocog.generate(api, Client, EXTRACTION_PROMPT, max_tokens=96, text=EXTRACTIONS[1][0])
    assert (client.name, client.phone_number, client.zip_code) == EXTRACTIONS[1][1:]


def test_structured_json_schema_dict(api):
    import jsonschema

    import autocog

    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 20},
            "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"},
            "rank": {"type": "integer", "minimum": 1, "maximum": 9},
            "tags": {"type": "array", "items": {"enum": ["old", "big", "wet"]}, "maxItems": 2},
        },
        "required": ["city", "code", "rank", "tags"],
        "additionalProperties": False,
    }
    value = autocog.generate(api, schema, "A city record as JSON:\n", max_tokens=96)
    jsonschema.validate(value, schema)
    assert set(value) == {"city", "code", "rank", "tags"}


def test_structured_regex_is_really_constrained(api, vllm_server):
    """A regex SmolLM2 never writes unconstrained after this prompt: the server applies the constraint (the
    old ``guided_regex`` field is silently ignored by vLLM 0.32: the same request with it is unconstrained)."""
    import re

    import autocog

    prompt, pattern = "The capital of France is", r"zq[0-9]{3}-(xk|vv)"
    free = api.complete(prompt, max_tokens=12)
    assert not re.search(pattern, free)
    text = autocog.generate(api, autocog.Regex(pattern), prompt, max_tokens=12)
    assert re.fullmatch(pattern, text), text
    body = {"model": "smollm2", "prompt": prompt, "max_tokens": 12, "temperature": 0}
    plain = vllm_server.post("/v1/completions", body)["choices"][0]["text"]
    old = vllm_server.post("/v1/completions", dict(body, guided_regex=pattern))["choices"][0]["text"]
    assert old == plain and not re.search(pattern, old)


@pytest.mark.parametrize("k", [0, 1, 2, 3, 4])
def test_structured_choice_equals_choose(api, k):
    import autocog

    prompt, choices, _ = EASY_FACTS[k]
    assert autocog.generate(api, choices, prompt) == choices[api.choose(prompt, choices)]


def test_structured_grammar(api):
    import re

    import autocog

    text = autocog.generate(api, autocog.Lark('start: "color: " ("red" | "green" | "blue")'), "Sky:", max_tokens=8)
    assert re.fullmatch(r"color: (red|green|blue)", text), text
    text = autocog.generate(api, autocog.GBNF('root ::= "size: " [0-9] [0-9]'), "Box:", max_tokens=8)
    assert re.fullmatch(r"size: [0-9]{2}", text), text


def test_structured_on_the_chat_endpoint(vllm_server):
    """``chat=True``: ``/chat/completions`` with the same ``structured_outputs`` field and the bare user text."""
    import re

    from structured_cases import US_PHONE, Client

    import autocog

    lm = OpenAI(base_url=vllm_server.base_url, api_key="none", chat=True)
    client = autocog.generate(
        lm, Client, "Create a client profile with the fields name, phone_number, and zip_code", max_tokens=96
    )
    assert isinstance(client, Client) and client.name  # the name's content is the chat model's own choice
    assert re.fullmatch(US_PHONE, client.phone_number) and re.fullmatch(r"\d{5}", client.zip_code)
    assert re.fullmatch(r"[0-9]{3}", autocog.generate(lm, autocog.Regex(r"[0-9]{3}"), "Say hello.", max_tokens=8))
    lm.close()
