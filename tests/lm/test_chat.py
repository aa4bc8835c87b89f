"""Chat prompts, streaming and min_p on the tiny models and a byte-level toy (fast); SmolLM2 and llama_cpp.server
checks are in tests/test_chat_smol.py."""

import math
import warnings

import numpy as np
import pytest

from autocog.core.chat import check_messages, render_template
from autocog.core.normalization import log_softmax
from autocog.core.sampling import SamplingParams, sample
from autocog.core.stops import safe_length
from autocog.lm import ChatTemplateError, ChoiceLM, InvalidPromptError

# A ChatML-like template that writes BOS itself (as Llama-2/Mistral templates do): BOS must not be doubled.
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
CONVERSATION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "the cat"}]
BAD_MESSAGES = [
    ([{"content": "hi"}], "no 'role'"),
    ([{"role": "user"}], "no 'content'"),
    ([{"role": "wizard", "content": "hi"}], "unknown role 'wizard'"),
    ([{"role": "user", "content": 3}], "content must be a str"),
    ([{"role": "user", "content": "hi"}, "oops"], "message 1 is a str"),
]


# ------------------------------------------------------------------------------------------------------
# messages and templates
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("messages, message", BAD_MESSAGES)
def test_bad_messages_are_typed_errors(messages, message):
    with pytest.raises(InvalidPromptError, match=message):
        check_messages(messages)


def test_render_template_like_transformers():
    template = (
        "{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('no tools') }}{% endif %}"
        "{{ m.content | tojson }}{% generation %}!{% endgeneration %}\n{% endfor %}"
    )
    assert (
        render_template(template, [{"role": "user", "content": "café"}]) == '"café"!'
    )  # non-ASCII kept; trim_blocks eats the newline
    with pytest.raises(ChatTemplateError, match="no tools"):
        render_template(template, [{"role": "tool", "content": "x"}])
    year = render_template("{{ strftime_now('%Y') }}", [{"role": "user", "content": ""}])
    assert year.isdigit() and len(year) == 4


@pytest.fixture(scope="module")
def tiny_llama_lm():
    from autocog.gguf.models import tiny_llama_gguf
    from autocog.lm import LLaMa

    return LLaMa(**LLaMa.create(model_path=tiny_llama_gguf()))


@pytest.fixture(scope="module")
def tiny_pair(tiny_path, tiny_llama_lm):
    """The tiny model through TfLM and LLaMa, both with TEMPLATE as their chat template."""
    from autocog.gguf.models import tiny_llama_gguf
    from autocog.lm import LLaMa, TfLM

    tf = TfLM(**TfLM.create(model_path=tiny_path), chat_template=TEMPLATE)
    llama = LLaMa(**LLaMa.create(model_path=tiny_llama_gguf()), chat_template=TEMPLATE)
    return tf, llama


def test_model_without_template_names_the_fix(tiny_tf, tiny_llama_lm):
    for lm in (tiny_tf, tiny_llama_lm):
        before = lm.tokens_evaluated
        for call in (
            lambda: lm.apply_chat_template(CONVERSATION),
            lambda: lm.choose(CONVERSATION, ["a", "b"]),
            lambda: lm.complete(CONVERSATION),
            lambda: lm.stream(CONVERSATION),
            lambda: lm.greedy(CONVERSATION),
        ):
            with pytest.raises(ChatTemplateError, match="chat_template="):
                call()
        assert lm.tokens_evaluated == before  # before any model call


@pytest.mark.parametrize("messages, message", BAD_MESSAGES)
def test_bad_messages_fail_before_any_model_call(tiny_pair, messages, message):
    for lm in tiny_pair:
        before = lm.tokens_evaluated
        for call in (
            lambda: lm.choose(messages, ["a", "b"]),
            lambda: lm.complete(messages),
            lambda: lm.stream(messages),
            lambda: lm.choice_logprobs(messages, ["a"]),
        ):
            with pytest.raises(InvalidPromptError, match=message):
                call()
        assert lm.tokens_evaluated == before


def test_template_bos_is_not_doubled(tiny_pair):
    tf, llama = tiny_pair
    text = tf.apply_chat_template(CONVERSATION)
    assert (
        text
        == llama.apply_chat_template(CONVERSATION)
        == "<s><|system|>\nBe brief.\n<|user|>\nthe cat\n<|assistant|>\n"
    )
    for lm in tiny_pair:
        ids = lm.tokenize(text, bos=True)
        assert ids[0] == lm.bos_token_id and ids.count(lm.bos_token_id) == 1
        assert lm.prompt_tokens(CONVERSATION) == ids
        assert lm.tokenize("the cat", bos=True)[0] == lm.bos_token_id  # plain text still gets its BOS
    assert tf.tokenize(text, bos=True) == llama.tokenize(text, bos=True)


def test_messages_equal_rendered_text_everywhere(tiny_pair):
    from autocog.eval.batch import predict, predict_proba

    choices = [" the", "cat", " dog"]
    for lm in tiny_pair:
        text = lm.apply_chat_template(CONVERSATION)
        a, b = lm.choice_distribution(CONVERSATION, choices), lm.choice_distribution(text, choices)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)  # equal up to the prefix cache's batch shapes
        assert [len(x) for x in a.token_logprobs] == [len(x) for x in b.token_logprobs]
        np.testing.assert_allclose(
            sum(lm.choice_logprobs(CONVERSATION, choices), []), sum(lm.choice_logprobs(text, choices), []), atol=1e-5
        )
        np.testing.assert_allclose(lm.greedy(CONVERSATION), lm.greedy(text), atol=1e-5)
        assert lm.complete(CONVERSATION, max_tokens=6) == lm.complete(text, max_tokens=6)
        one = predict_proba(lm, CONVERSATION, choices)
        np.testing.assert_allclose(one, a.probs, atol=1e-5)
        many = predict_proba(lm, [CONVERSATION, text, "the"], choices)
        np.testing.assert_allclose(many[0], many[1], atol=1e-6)
        assert predict(lm, CONVERSATION, choices) == a.index
    tf, llama = tiny_pair
    np.testing.assert_allclose(
        tf.choice_distribution(CONVERSATION, choices).probs,
        llama.choice_distribution(CONVERSATION, choices).probs,
        atol=1e-4,
    )


def test_evaluate_chat(tiny_pair):
    from autocog.eval.evaluate import evaluate

    records = [
        {"question": "the cat", "choices": ["sat", "dog"], "answer": 0},
        {"question": "a dog", "choices": ["ran", "the"], "answer": 1},
    ]
    lm = tiny_pair[0]
    report = evaluate(lm, records, normalizations=["sum", "char"], chat=True)
    assert report.items[0].choices == ["sat", "dog"]  # the delimiter space is dropped in chat mode
    expected = lm.choice_distribution([{"role": "user", "content": "Question: the cat\nAnswer:"}], ["sat", "dog"])
    np.testing.assert_allclose(report["sum"].probs[0], expected.probs, atol=1e-5)
    plain = evaluate(lm, records, normalizations=["sum"])
    assert plain.items[0].choices == [" sat", " dog"]


# ------------------------------------------------------------------------------------------------------
# programs as turns
# ------------------------------------------------------------------------------------------------------
def test_program_turns_render_with_the_template(tiny_pair):
    from autocog.errors import InvalidStepError
    from autocog.fta import Choose, Complete, Program, System, Text, User

    prog = Program(
        [
            System("Be brief."),
            User("the {q}"),
            Complete("first", stop="\n", max_tokens=4),
            Text(" so"),
            Choose("pick", [" cat", " dog"]),
        ]
    )
    for lm in tiny_pair:
        result = prog.run(lm, q="cat")
        first = result.best.values["first"]
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "the cat"}]
        assert first == lm.complete(messages, stop="\n", max_tokens=4).rstrip("\n")
        completed = lm.complete(messages, stop="\n", max_tokens=4)
        expected = lm.choice_distribution(lm.apply_chat_template(messages) + completed + " so", [" cat", " dog"])
        assert result.best.values["pick"] == expected.choice
        assert math.isclose(result.best.score, math.log(expected.probs.max()), abs_tol=1e-4)
    with pytest.raises(InvalidStepError, match="unknown role"):
        Text("x", role="wizard")


# ------------------------------------------------------------------------------------------------------
# streaming
# ------------------------------------------------------------------------------------------------------
class ByteLM(ChoiceLM):
    """Bytes as tokens (256 = EOS): it spells ``script`` then ends, or samples from seeded random tables."""

    def __init__(self, script: str = "", seed: int = 0):
        super().__init__()
        self.script = list(script.encode("utf-8"))
        self.table = np.random.default_rng(seed).normal(0, 3.0, (257, 257))

    def tokenize(self, text, bos=False):
        return list(text.encode("utf-8"))

    def detokenize(self, tokens):
        return bytes(t for t in tokens if t < 256).decode("utf-8", errors="replace")

    def greedy_impl(self, tokens):
        if self.script:
            k = len(tokens) - self.prompt_length
            logits = np.full(257, -10.0)
            logits[self.script[k] if k < len(self.script) else 256] = 10.0
            return log_softmax(logits)
        return log_softmax(self.table[tokens[-1]])

    def prompt_tokens(self, prompt):
        tokens = super().prompt_tokens(prompt)
        self.prompt_length = len(tokens)
        return tokens

    @property
    def eos_token_ids(self):
        return {256}


def assert_stream_equals_complete(lm, prompt, **kwargs):
    pieces = list(lm.stream(prompt, **kwargs))
    text = lm.complete(prompt, **kwargs)
    assert "".join(pieces) == text
    assert all(pieces) and not any("\ufffd" in p for p in pieces if "\ufffd" not in text)
    return pieces, text


@pytest.mark.parametrize(
    "stop, expected",
    [
        (None, "café ☕ ok\nthé"),
        ("\n", "café ☕ ok\n"),
        ("é ☕", "café ☕"),
        (["zz", "☕ o"], "café ☕ o"),
        ("never", "café ☕ ok\nthé"),
    ],
)
def test_stream_multibyte_and_straddling_stops(stop, expected):
    lm = ByteLM("café ☕ ok\nthé")  # é: 2 bytes, ☕: 3 bytes, one token per byte
    pieces, text = assert_stream_equals_complete(lm, "x", stop=stop, max_tokens=40)
    assert text == expected
    assert "".join(pieces) == text and not any("\ufffd" in p for p in pieces)
    if stop == "\n":  # the stop's text is yielded only once generation ended on it
        assert pieces[-1].endswith("\n") and all("\n" not in p for p in pieces[:-1])


def test_stream_holds_back_a_partial_stop():
    lm = ByteLM("ab\ncd\n\nef")
    pieces = list(lm.stream("x", stop="\n\n", max_tokens=20))
    assert "".join(pieces) == "ab\ncd\n\n"
    assert pieces == ["a", "b", "\nc", "d", "\n\n"]  # a lone "\n" waits for the next byte


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"temperature": 1.0, "seed": 7},
        {"temperature": 0.7, "top_k": 20, "seed": 3},
        {"temperature": 1.0, "min_p": 0.3, "seed": 1},
    ],
)
def test_stream_equals_complete_sampled(settings):
    lm = ByteLM(seed=2)
    for stop in (None, "e", ["a", "zz"]):
        assert_stream_equals_complete(lm, "hello", stop=stop, max_tokens=30, **settings)


def test_safe_length():
    assert safe_length("Hello\n", ["\n\n"]) == 5
    assert safe_length("caf\ufffd", []) == 3
    assert safe_length("abc", ["bcd", "cx"]) == 1
    assert safe_length("abc", ["zz"]) == 3


@pytest.mark.parametrize("which", ["tf", "llama"])
@pytest.mark.parametrize(
    "settings", [{}, {"temperature": 1.0, "seed": 11}, {"temperature": 0.9, "min_p": 0.2, "seed": 5}]
)
def test_stream_equals_complete_on_tiny_models(tiny_tf, tiny_llama_lm, which, settings):
    lm = tiny_tf if which == "tf" else tiny_llama_lm
    text = lm.complete("the cat", stop=None, max_tokens=24, **settings)
    assert_stream_equals_complete(lm, "the cat", stop=None, max_tokens=24, **settings)
    # stops that straddle token boundaries: a few characters around each boundary of the greedy text
    ids = lm.tokenize(text)
    for k in range(2, min(len(ids), 8)):
        cut = len(lm.detokenize(ids[:k]))
        stop = text[max(0, cut - 2) : cut + 2]
        if len(stop) > 1 and stop.strip():
            pieces, out = assert_stream_equals_complete(lm, "the cat", stop=stop, max_tokens=24, **settings)
            assert out.endswith(stop) and out == text[: text.index(stop) + len(stop)]


# ------------------------------------------------------------------------------------------------------
# min_p, transformers' warnings
# ------------------------------------------------------------------------------------------------------
def test_min_p_keeps_tokens_near_the_best():
    logprobs = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    rng = np.random.default_rng(0)
    draws = {sample(logprobs, SamplingParams(temperature=1.0, min_p=0.5), rng) for _ in range(400)}
    assert draws == {0, 1}  # 0.15 < 0.5 * 0.5
    draws = {sample(logprobs, SamplingParams(temperature=1.0, min_p=0.0), rng) for _ in range(400)}
    assert draws == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="min_p"):
        SamplingParams(max_tokens=1, temperature=1.0, min_p=1.5)


def test_search_tunes_min_p(tiny_tf):
    from autocog.eval.search import search

    result = search(
        tiny_tf,
        [("the cat", "the")],
        "contains",
        grid={"min_p": [0.0, 0.5], "temperature": [1.0], "max_tokens": [4]},
        seed=0,
    )
    assert sorted(r["params"]["min_p"] for r in result.to_dict()["rows"]) == [0.0, 0.5]


def test_cache_argument_name():
    from autocog.lm.tf.model import cache_kwarg

    class New:
        def forward(self, input_ids=None, cache=None, use_cache=None):
            pass

    class Old:
        def forward(self, input_ids=None, past_key_values=None, use_cache=None):
            pass

    assert cache_kwarg(New()) == "cache" and cache_kwarg(Old()) == "past_key_values"


def test_no_warnings_from_our_calls(tiny_tf):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning (e.g. transformers' past_key_values deprecation) fails
        tiny_tf.cache.reset()
        tiny_tf.complete("the cat", max_tokens=4)
        tiny_tf.choose("the cat", [" sat", " ran"])
        assert "".join(tiny_tf.stream("the dog", max_tokens=4)) == tiny_tf.complete("the dog", max_tokens=4)
        from autocog.eval.batch import predict_proba

        predict_proba(tiny_tf, ["the cat", "the cat sat", "a dog"], [" on", " the"])


def test_repeated_messages_render_once(tiny_pair, monkeypatch):
    """`RenderCache`: the same messages (and generation prompt) render once per model, to the text the first,
    uncached rendering gave; other messages, the other generation flag, a changed template or a message value
    that cannot be hashed render anew."""
    import autocog.lm.llama.model as llama_model

    calls = []
    render = llama_model.render_template
    monkeypatch.setattr(llama_model, "render_template", lambda *a, **k: calls.append(1) or render(*a, **k))
    tf, _ = tiny_pair
    transformers_render = tf.tokenizer.apply_chat_template
    monkeypatch.setattr(
        tf.tokenizer, "apply_chat_template", lambda *a, **k: calls.append(1) or transformers_render(*a, **k)
    )
    for lm in tiny_pair:
        lm.render_cache.texts.clear()
        calls.clear()
        first = lm.apply_chat_template(CONVERSATION)
        assert lm.apply_chat_template([dict(m) for m in CONVERSATION]) == first and len(calls) == 1
        lm.apply_chat_template(CONVERSATION, add_generation_prompt=False)
        lm.apply_chat_template(CONVERSATION[:1])
        unhashable = [{**CONVERSATION[0], "extra": ["a list"]}]
        lm.apply_chat_template(unhashable)
        lm.apply_chat_template(unhashable)
        assert len(calls) == 5
        lm.chat_template = TEMPLATE + " "
        try:
            assert lm.apply_chat_template(CONVERSATION) == first + " " and len(calls) == 6
        finally:
            lm.chat_template = TEMPLATE


def test_a_template_that_reads_the_clock_is_not_cached():
    from autocog.core.chat import RenderCache

    cache, calls = RenderCache(), []
    for _ in range(2):
        cache.render(
            lambda: calls.append(1) or "x", "{{ strftime_now('%d') }}", [{"role": "user", "content": "Hi"}], True
        )
    assert len(calls) == 2 and len(cache.texts) == 0
