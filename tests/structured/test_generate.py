"""autocog.generate on the llguidance engine: every output type, on TfLM and LLaMa (tiny random models: garbage
content, valid structure), the one decoding loop's log-probs, errors before any model call; llama_cpp.server's
native constraints and SmolLM2's content (slow)."""

import datetime
import enum
import json
import re
import uuid
from typing import Annotated, Callable, Literal, Optional, Union

import numpy as np
import pytest
from pydantic import BaseModel, Field, TypeAdapter
from structured_cases import COURSE_PROMPT, EXTRACTION_PROMPT, EXTRACTIONS, Client, _check_client
from toy import SpyLM

import autocog
from autocog.core.normalization import log_softmax
from autocog.lm import ChoiceLM, InvalidPromptError
from autocog.structured import (
    IncompleteOutputError,
    OutputValidationError,
    ServerConstraintError,
    UnsupportedSchemaError,
    run,
    vocabulary,
)


class Color(enum.Enum):
    red = "red"
    green = "green"


class Address(BaseModel):
    street: str = Field(max_length=20)
    city: str
    zip_code: str = Field(pattern=r"^\d{5}$")


class Order(BaseModel):
    id: int = Field(ge=1)
    shipping: Address
    billing: Optional[Address] = None


class Tagged(BaseModel):
    color: Color
    size: Literal["S", "M", "L"]
    flag: bool
    tags: list[str]
    scores: list[int] = Field(min_length=1, max_length=3)


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int = Field(ge=0, le=9)


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool


class Pet(BaseModel):
    pet: Annotated[Union[Cat, Dog], Field(discriminator="kind")]
    id: Union[int, str]
    nickname: Optional[str] = None


class Measures(BaseModel):
    stars: int = Field(ge=1, le=5)
    ratio: float = Field(gt=0, lt=1)
    temperature: float = Field(ge=-40.5, le=60)
    dozen: int = Field(multiple_of=12, ge=0, le=1000)


class Unicode(BaseModel):
    word: Literal["café", "日本語", "naïve"]
    text: str = Field(min_length=2, max_length=12)
    kana: str = Field(pattern=r"^[ぁ-ん]{2,4}$")


class Escapes(BaseModel):
    quote: Literal['say "hi"', "back\\slash", "tab\there"]
    free: str = Field(max_length=10)


class Formats(BaseModel):
    day: datetime.date
    ident: uuid.UUID
    when: datetime.time


class Defaults(BaseModel):
    name: str = "anonymous"
    count: int = 3
    ratio: float = 0.5
    labels: dict[str, int] = Field(default_factory=dict)


class Inventory(BaseModel):
    items: dict[str, Annotated[int, Field(ge=0)]]
    notes: Optional[list[str]] = Field(default=None, max_length=2)


SCHEMAS = {
    "client": Client,
    "nested": Order,
    "enums_lists": Tagged,
    "unions": Pet,
    "bounded_numbers": Measures,
    "unicode": Unicode,
    "escapes": Escapes,
    "formats": Formats,
    "defaults": Defaults,
    "dicts": Inventory,
    "list_of_models": list[Address],
    "bounded_list": Annotated[list[int], Field(min_length=2, max_length=4)],
    "optional_scalar": Optional[int],
    "tuple": tuple[int, str, bool],
    "json_schema_nested": {
        "type": "object",
        "properties": {
            "points": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"x": {"type": "number"}, "y": {"type": "integer", "maximum": 3}},
                    "required": ["x", "y"],
                    "additionalProperties": False,
                },
                "maxItems": 3,
            }
        },
        "required": ["points"],
        "additionalProperties": False,
    },
    "json_schema_enum_const": {
        "type": "object",
        "properties": {
            "mode": {"enum": ["fast", "slow", 3, None]},
            "v": {"const": 'x"y'},
            "level": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 4},
        },
        "required": ["mode", "v", "level"],
        "additionalProperties": False,
    },
    "json_schema_pattern_strings": {
        "type": "object",
        "properties": {
            "code": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{2,4}$"},
            "note": {"type": "string", "minLength": 1, "maxLength": 8},
        },
        "required": ["code", "note"],
        "additionalProperties": False,
    },
}


@pytest.fixture(scope="module")
def tiny_llama_lm():
    from autocog.gguf.models import tiny_llama_gguf
    from autocog.lm import LLaMa

    return LLaMa(**LLaMa.create(model_path=tiny_llama_gguf(), n_ctx=1024))


@pytest.fixture(scope="module", params=["tf", "llama"])
def tiny(request, tiny_tf, tiny_llama_lm):
    return tiny_tf if request.param == "tf" else tiny_llama_lm


def _reference_check(output_type, value, text):
    """The value validates against the output type, and the generated text is its JSON."""
    if isinstance(output_type, dict):
        import jsonschema

        jsonschema.validate(value, output_type)
        assert value == json.loads(text)
        return
    adapter = TypeAdapter(output_type)
    assert adapter.validate_python(adapter.dump_python(value)) == value
    assert adapter.validate_json(text) == value


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_schema_validates_on_random_models(tiny, name):
    output_type = SCHEMAS[name]
    result = run(tiny, output_type, "Data as JSON:\n", max_tokens=192)
    _reference_check(output_type, result.value, result.text)
    assert len(result.tokens) == len(result.logprobs) <= 192
    assert all(lp <= 0 for lp in result.logprobs)


def test_at_least_fifteen_schemas():
    assert len(SCHEMAS) >= 15


@pytest.mark.parametrize("seed", [0, 1])
def test_regex_and_grammar_outputs_always_match(tiny_tf, tiny_llama_lm, seed):
    cases = [
        (autocog.Regex(r"[0-9]{3}-[0-9]{4}"), r"[0-9]{3}-[0-9]{4}"),
        (autocog.Regex(r"(yes|no), because [a-z ]{1,20}\."), r"(yes|no), because [a-z ]{1,20}\."),
        (autocog.Regex(r"[日本語é]{2,5}"), r"[日本語é]{2,5}"),
        (autocog.Lark('start: expr\nexpr: NUM | "(" expr OP expr ")"\nOP: "+" | "*"\nNUM: /[0-9]{1,2}/'), None),
        (autocog.GBNF('root ::= "color: " ("red" | "green" | "blue") "!"'), r"color: (red|green|blue)!"),
    ]
    for lm in (tiny_tf, tiny_llama_lm):
        for output_type, reference in cases:
            text = autocog.generate(lm, output_type, f"Seed {seed}:", max_tokens=40)
            if reference is not None:
                assert re.fullmatch(reference, text), (output_type, text)
            else:
                assert isinstance(eval(text), int), text  # a well-formed arithmetic expression


def test_partial_utf8_tokens_are_generated(tiny_tf, tiny_llama_lm):
    for lm in (tiny_tf, tiny_llama_lm):
        result = run(lm, autocog.Regex(r"[日本語]{3}"), "Kanji:", max_tokens=16)
        assert re.fullmatch(r"[日本語]{3}", result.text)
        pieces = [vocabulary(lm).tokenizer.decode_bytes([t]) for t in result.tokens]
        assert b"".join(pieces).decode("utf-8") == result.text
        # the tiny vocabulary has no token for these characters: they come as byte tokens, partial UTF-8 each
        assert len(pieces) > 3 and any(_invalid_utf8(p) for p in pieces)


def _invalid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def test_choice_list_equals_choose(tiny_tf, tiny_llama_lm):
    choices = [" red", " green", " blue", " reddish"]
    for lm in (tiny_tf, tiny_llama_lm):
        for prompt in ("The sky is", "Roses are", "Grass:"):
            assert autocog.generate(lm, choices, prompt) == choices[lm.choose(prompt, choices)]


def test_constrained_logprobs_are_the_models(tiny):
    """The mask removes tokens, it does not rescale the kept ones: each token's reported log-prob is the
    unconstrained log_softmax at that position."""
    prompt = "Client:\n"
    result = run(tiny, Client, prompt, max_tokens=96)
    ids = tiny.prompt_tokens(prompt)
    assert len(result.tokens) == len(result.logprobs) > 10
    masked_away = 0
    for k, (token, logprob) in enumerate(zip(result.tokens, result.logprobs)):
        row = tiny.greedy(ids + result.tokens[:k])
        assert logprob == pytest.approx(float(row[token]), abs=1e-4)
        masked_away += int(np.argmax(row)) != token
    assert masked_away > 0  # the constraint did change the greedy path: the test compares something


def test_template_inputs_and_prompt_messages(tiny_tf):
    value = autocog.generate(tiny_tf, autocog.Regex(r"[0-9]{2}"), "Age of {who}:", who="Bob")
    assert re.fullmatch(r"[0-9]{2}", value)
    with pytest.raises(InvalidPromptError, match="who"):
        autocog.generate(tiny_tf, autocog.Regex(r"[0-9]{2}"), "Age of {who}:", whom="Bob")


@pytest.mark.parametrize(
    "output_type, error, match",
    [
        ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, UnsupportedSchemaError, "uniqueItems"),
        (set[int], UnsupportedSchemaError, "uniqueItems"),
        ({"type": "object", "not": {"required": ["a"]}}, UnsupportedSchemaError, "not"),
        (autocog.Regex(r"(?=a)b"), autocog.structured.GrammarError, "look"),
        (autocog.Lark("start: ( x"), autocog.structured.GrammarError, "lark"),
        (autocog.GBNF('root ::= "a'), autocog.structured.GrammarError, "GBNF"),
        ([], autocog.lm.InvalidChoicesError, None),
        (["a", "a"], autocog.lm.InvalidChoicesError, None),
        ("[0-9]+", TypeError, "Regex"),
        (Callable[[int], int], autocog.structured.GrammarError, "JSON schema"),
    ],
)
def test_bad_output_types_fail_before_any_model_call(output_type, error, match):
    spy = SpyLM()
    with pytest.raises(error, match=match):
        autocog.generate(spy, output_type, "x")
    assert spy.calls == 0


def test_budget_too_small_is_a_clear_error(tiny_tf):
    with pytest.raises(IncompleteOutputError, match="max_tokens") as info:
        run(tiny_tf, Client, "Client:\n", max_tokens=6)
    assert info.value.text.startswith('{"name": "')


def test_close_after_ends_long_strings(tiny_tf):
    result = run(tiny_tf, {"type": "string"}, "Text:", max_tokens=40, close_after=5)
    assert json.loads(result.text) == result.value and len(result.tokens) <= 7


class DigitLM(ChoiceLM):
    """One token per printable ASCII character, then EOS; "1" is always the most likely next token, so a number
    never ends by itself: only the finishing constraint's closers end it."""

    chars = [chr(c) for c in range(32, 127)]
    n_vocab = len(chars) + 1

    def tokenize(self, text, bos=False):
        return [self.chars.index(c) for c in text]

    def detokenize(self, tokens):
        return "".join(self.chars[t] for t in tokens if t < len(self.chars))

    def greedy_impl(self, tokens):
        logits = np.zeros(self.n_vocab)
        logits[self.chars.index("1")] = 5.0
        return log_softmax(logits)

    @property
    def eos_token_ids(self):
        return {len(self.chars)}


TWO_NUMBERS = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"],
}


def test_json_closers_end_a_number_before_a_required_key():
    """``,`` is a closer: past the budget, a number followed by a required key ends on ``,`` (the only way to
    close it soonest there), where ``"``, ``}`` and ``]`` are not allowed."""
    from autocog.fta import Complete, Program, Text
    from autocog.structured.engine import JSON_CLOSERS, json_schema

    assert JSON_CLOSERS == ('"', "}", "]", ",")
    lm = DigitLM()
    # '{"a": ' is 6 forced tokens, then "1" until the 8th token; "," and '"b": ' are forced, then one "1" and "}"
    result = run(lm, TWO_NUMBERS, "JSON:", max_tokens=40, close_after=8)
    assert result.text == '{"a": 11, "b": 1}' and result.value == {"a": 11, "b": 1}
    # the program's Complete steps close a JSON pattern with the same closers
    prog = Program([Text("JSON:"), Complete("obj", stop=None, max_tokens=8, pattern=json_schema(TWO_NUMBERS))])
    assert prog.run(lm).best.values == {"obj": '{"a": 11, "b": 1}'}


# --- llama_cpp.server: the constraint goes to the server ---------------------------------------------------


@pytest.fixture(scope="module")
def tiny_api():
    pytest.importorskip("openai")
    from llama_server import LlamaServer

    from autocog.gguf.models import tiny_llama_gguf
    from autocog.lm import OpenAI

    server = LlamaServer(tiny_llama_gguf(), n_ctx=1024)
    lm = OpenAI(model="tiny", base_url=server.base_url)
    yield lm
    lm.close()
    server.stop()


class Badge(BaseModel):
    """Bounded everywhere: a random model on a server (no closing budget there) still ends in valid JSON."""

    code: str = Field(pattern=r"^[A-Z]{2}-\d{2}$")
    level: Literal["a", "b"]
    note: str = Field(max_length=6)
    ok: bool
    counts: list[Literal[1, 2, 3]] = Field(max_length=2)


@pytest.mark.slow
def test_server_native_constraints(tiny_api):
    schema = SCHEMAS["json_schema_pattern_strings"]
    value = autocog.generate(tiny_api, schema, "JSON:", max_tokens=64)
    assert re.fullmatch(r"[A-Z]{2}-[0-9]{2,4}", value["code"]) and 1 <= len(value["note"]) <= 8
    text = autocog.generate(tiny_api, autocog.GBNF('root ::= "color: " ("red" | "green" | "blue")'), "C:")
    assert re.fullmatch(r"color: (red|green|blue)", text)
    assert (
        autocog.generate(tiny_api, ["alpha", "beta"], "Pick:")
        == ["alpha", "beta"][tiny_api.choose("Pick:", ["alpha", "beta"])]
    )
    badge = autocog.generate(tiny_api, Badge, "Badge:", max_tokens=200)
    assert isinstance(badge, Badge) and re.fullmatch(r"[A-Z]{2}-\d{2}", badge.code)
    with pytest.raises(OutputValidationError):  # the server cut the reply at max_tokens
        autocog.generate(tiny_api, Badge, "Badge:", max_tokens=3)
    for output_type in (autocog.Regex("[0-9]+"), autocog.Lark('start: "a"')):
        with pytest.raises(ServerConstraintError, match="llama.cpp server has no native"):
            autocog.generate(tiny_api, output_type, "x")


@pytest.fixture(scope="module")
def smol_llama():
    from autocog.lm import LLaMa

    return LLaMa(**LLaMa.create())


@pytest.mark.slow
def test_course_example_on_smollm2(smol_tf, smol_llama):
    for lm in (smol_tf, smol_llama):
        _check_client(autocog.generate(lm, Client, COURSE_PROMPT, max_tokens=96))


@pytest.mark.slow
@pytest.mark.parametrize("text, name, phone, zip_code", EXTRACTIONS)
def test_extraction_on_smollm2(smol_llama, text, name, phone, zip_code):
    client = autocog.generate(smol_llama, Client, EXTRACTION_PROMPT, max_tokens=96, text=text)
    assert (client.name, client.phone_number, client.zip_code) == (name, phone, zip_code)


@pytest.mark.slow
def test_course_example_on_smollm2_server():
    pytest.importorskip("openai")
    from llama_server import LlamaServer

    from autocog.lm import OpenAI
    from autocog.lm.assets import smollm2_gguf

    server = LlamaServer(smollm2_gguf())
    try:
        lm = OpenAI(model="smollm2", base_url=server.base_url)
        _check_client(autocog.generate(lm, Client, COURSE_PROMPT, max_tokens=96))
        client = autocog.generate(lm, Client, EXTRACTION_PROMPT, max_tokens=96, text=EXTRACTIONS[0][0])
        assert (client.name, client.phone_number, client.zip_code) == EXTRACTIONS[0][1:]
        lm.close()
    finally:
        server.stop()


# --- the engine's interface ------------------------------------------------------------------------------------


class BytesLM(autocog.lm.GreedyLM):
    """A GreedyLM that is neither TfLM nor LLaMa: the engine takes the generic token-bytes path."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def greedy_impl(self, tokens):
        return self.inner.greedy_impl(tokens)

    def tokenize(self, text, bos=False):
        return self.inner.tokenize(text, bos=bos)

    def detokenize(self, tokens):
        return self.inner.detokenize(tokens)

    def choose(self, prompt, choices, **kwargs):
        return self.inner.choose(prompt, choices, **kwargs)

    def token_bytes(self):  # exact bytes, here read from the inner model's engine vocabulary
        reference = vocabulary(self.inner).tokenizer
        return [reference.decode_bytes([i]) for i in range(vocabulary(self.inner).size)]

    @property
    def eos_token_ids(self):
        return self.inner.eos_token_ids

    @property
    def bos_token_id(self):
        return self.inner.bos_token_id


def test_generic_vocabulary_for_any_greedy_lm(tiny_tf):
    lm = BytesLM(tiny_tf)
    assert vocabulary(lm).size == vocabulary(tiny_tf).size
    for output_type in (
        SCHEMAS["json_schema_pattern_strings"],
        Measures,
        autocog.Regex(r"[a-z]{2,4}-[0-9]{3}"),
        autocog.Regex(r"[日本語]{3}"),
    ):
        result = run(lm, output_type, "Data:", max_tokens=96)
        if isinstance(output_type, autocog.Regex):
            assert re.fullmatch(output_type.pattern, result.value)
        else:
            _reference_check(output_type, result.value, result.text)


def test_constraint_rollback(tiny_tf):
    from autocog.structured import GrammarConstraint, as_output

    constraint = GrammarConstraint(as_output(Client).grammar, vocabulary(tiny_tf))
    masks, taken = [], []
    for _ in range(4):
        mask = constraint.allowed().copy()
        masks.append(mask)
        taken.append(int(np.flatnonzero(mask)[-1]))
        constraint.advance(taken[-1])
    constraint.rollback(3)
    assert constraint.tokens == taken[:1] and np.array_equal(constraint.allowed(), masks[1])
    with pytest.raises(autocog.structured.GrammarError):
        constraint.rollback(2)
    with pytest.raises(autocog.structured.GrammarError, match="not allowed"):
        constraint.advance(int(np.flatnonzero(~constraint.allowed())[0]))
