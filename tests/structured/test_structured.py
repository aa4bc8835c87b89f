"""Structured output programs (autocog.fta.structured) and the grammar engine behind their free fields
(autocog.structured.engine / fields, llguidance): on tiny random models the text is garbage but every result
validates; on SmolLM2 (slow) the course's client profile comes out right."""

import enum
import json
import random
import re
from typing import List, Literal, Optional

import numpy as np
import pytest
from pydantic import BaseModel, Field
from toy import SpyLM, TextOnlyLM

from autocog.fta import UnsupportedFieldError, fill, structured_program
from autocog.structured import GrammarConstraint, GrammarError, engine, vocabulary
from autocog.structured.fields import number, string_content

# --- models ------------------------------------------------------------------------------------------------


class ClientProfile(BaseModel):
    """The course example."""

    name: str = Field(max_length=40)
    phone: str = Field(pattern=r"^[0-9]{3}-[0-9]{3}-[0-9]{4}$")
    zip_code: str = Field(pattern=r"^[0-9]{5}$")


class Color(enum.Enum):
    red = "red"
    green = "green"
    blue = "blue"


class Address(BaseModel):
    street: str = Field(max_length=30)
    city: str
    zip_code: str = Field(pattern=r"^\d{5}$")


class Person(BaseModel):
    name: str
    age: int = Field(ge=0)
    height: float
    balance: float
    member: bool
    color: Color
    size: Literal["S", "M", "L"]
    rank: Literal[1, 2, 3]
    nickname: Optional[str] = None
    lucky: Optional[int] = None
    favorite: Optional[Color] = None
    address: Address
    tags: List[str] = Field(default_factory=list, max_length=3)
    scores: list[int] = Field(min_length=1, max_length=3)
    friends: list[Address] = Field(default_factory=list, max_length=2)
    home: Optional[Address] = None


class Escapes(BaseModel):
    text: str
    code: str = Field(pattern=r"^[A-Z]{2}-\d+$", max_length=8)
    letters: List[Literal["a", "b"]] = Field(min_length=2, max_length=4)


PROMPT = "Text: {text}\nJSON:\n"


def prompt_text(result, text):
    return PROMPT.format(text=text)


def check_result(prog, result, text):
    """Every path validates, and its JSON text says what its instance says."""
    for path in result.paths:
        instance = result.instance(path)
        assert isinstance(instance, prog.model)
        written = path.text[len(prompt_text(result, text)) :]
        assert json.loads(written) == json.loads(instance.model_dump_json(by_alias=True)), written


# --- structured output on tiny random models ------------------------------------------------------------------


@pytest.fixture(scope="module", params=[0, 1, 2])
def tiny_seeded(request):
    from autocog.gguf.models import tiny_llama
    from autocog.lm import TfLM

    return TfLM(**TfLM.create(model_path=tiny_llama(seed=request.param)))


class Small(BaseModel):
    flag: bool
    maybe: Optional[str] = Field(default=None, max_length=6)
    tags: list[str] = Field(default_factory=list, max_length=2)


@pytest.mark.parametrize("model, width", [(ClientProfile, 1), (Person, 1), (Escapes, 1), (Small, 2)])
def test_always_validates_on_random_models(tiny_seeded, model, width):
    prog = structured_program(model, PROMPT, string_tokens=8)
    text = "Alice Martin, 415-555-0132, 12 Elm St, Springfield 94110"
    result = prog.run(tiny_seeded, text=text, width=width)
    assert len(result.paths) >= width
    check_result(prog, result, text)
    assert result.tokens.evaluated <= 1.1 * result.tokens.unique, result.tokens


def test_lists_and_options_branch(tiny_tf):
    prog = structured_program(Small, PROMPT, string_tokens=3)
    result = prog.run(tiny_tf, text="x", width=None)  # every branch: 2 flags x (null | string) x 0-2 tags
    check_result(prog, result, "x")
    instances = [result.instance(p) for p in result.paths]
    assert len(instances) == 2 * 2 * 3
    assert {(i.flag, i.maybe is None, len(i.tags)) for i in instances} == {
        (f, m, n) for f in (True, False) for m in (True, False) for n in (0, 1, 2)
    }
    assert sum(p.probability for p in result.paths) == pytest.approx(1.0)


def test_numbers_are_generated_within_bounds(tiny_tf):
    class Bounded(BaseModel):
        stars: int = Field(ge=1, le=5)
        ratio: float = Field(gt=0, lt=1)
        temperature: int = Field(ge=-40, le=60)
        triple: int = Field(multiple_of=3, ge=0)
        maybe: Optional[int] = Field(default=None, ge=10, le=12)

    prog = structured_program(Bounded, PROMPT)
    for width in (1, 3):
        result = prog.run(tiny_tf, text="garbage", width=width)
        for path in result.paths:
            value = result.instance(path)
            assert 1 <= value.stars <= 5 and 0 < value.ratio < 1 and -40 <= value.temperature <= 60
            assert value.triple % 3 == 0 and (value.maybe is None or 10 <= value.maybe <= 12)
            # the written text is the number itself (the engine enforces bounds; nothing is clamped afterwards)
            assert json.loads(path.text[len(PROMPT.format(text="garbage")) :])["stars"] == value.stars
    assert prog.by_name["/stars"].pattern.kind == "json_schema"


def test_text_only_backend_repairs_and_validates(tiny_tf):
    prog = structured_program(Person, PROMPT, string_tokens=6)
    result = prog.run(TextOnlyLM(tiny_tf), text="Bob")
    check_result(prog, result, "Bob")


def test_fill_and_program_shape(tiny_tf):
    value = fill(tiny_tf, ClientProfile, PROMPT, text="Alice, 415-555-0132, 94110")
    assert isinstance(value, ClientProfile) and re.fullmatch(r"\d{5}", value.zip_code)
    prog = structured_program(ClientProfile, PROMPT)
    assert prog.inputs == ["text"]
    assert [s.kind for s in prog.steps if s.kind != "text"] == ["complete"] * 3
    enums = structured_program(Person, PROMPT)
    kinds = {s.name: s.kind for s in enums.steps}
    assert kinds["/member"] == kinds["/color"] == kinds["/size"] == kinds["/favorite"] == "choose"
    assert enums.by_name["/favorite"].options == ['"red"', '"green"', '"blue"', "null"]
    assert kinds["/home#null"] == kinds["/tags#open"] == kinds["/scores#more0"] == "choose"
    assert kinds["/address/city"] == kinds["/friends/1/zip_code"] == "complete"


@pytest.mark.parametrize(
    "annotation, message",
    [
        (dict, "dict"),
        (Optional[List[dict]], "dict"),
        (int | str, "Optional"),
        (set[int], "set"),
    ],
)
def test_unsupported_fields_fail_before_any_model_call(annotation, message):
    model = type("Bad", (BaseModel,), {"__annotations__": {"ok": str, "bad": annotation}})
    with pytest.raises(UnsupportedFieldError, match=message) as info:
        structured_program(model)
    assert info.value.step.startswith("/bad") and "'/bad" in str(info.value)


def test_unsupported_constraints():
    class Crossed(BaseModel):
        n: str = Field(min_length=5, max_length=2)

    class BadPattern(BaseModel):
        code: str = Field(pattern=r"^\bword$")  # word boundaries: valid for pydantic, not for the engine

    class QuoteOnly(BaseModel):
        quote: str = Field(pattern=r'^"$')

    class Empty(BaseModel):
        n: int = Field(gt=1, lt=2)

    for model, field in [(Crossed, "n"), (BadPattern, "code"), (QuoteOnly, "quote"), (Empty, "n")]:
        with pytest.raises(UnsupportedFieldError) as info:
            structured_program(model)
        assert info.value.step == "/" + field and repr("/" + field) in str(info.value)
    with pytest.raises(TypeError):
        structured_program(dict)
    spy = SpyLM()
    with pytest.raises(Exception):
        structured_program(ClientProfile, PROMPT).run(spy)  # missing input 'text'
    assert spy.calls == 0


# --- the grammar engine -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "regex",
    [
        r"(ab|a)*c?",
        r"[a-c]{2,3}x+",
        r"\w+@\w+\.com",
        r"(?:0|[1-9]\d*)(\.\d+)?",
        r"[^abc]{1,2}d",
        r"a|b|cd*",
        r"^\d{3}-\d{4}$",
        r"[-a.]+",
        r"x{0}y",
        r"(a|)b",
        r"[\d.]+",
        r"\s?\S",
    ],
)
def test_regex_matches_like_re_and_repairs(regex):
    grammar, reference = engine.regex(regex), re.compile(regex.strip("^$"))
    rng = random.Random(regex)
    for _ in range(300):
        s = "".join(rng.choice("abcdxy@.com019- \t") for _ in range(rng.randint(0, 7)))
        assert engine.matches(grammar, s) == bool(reference.fullmatch(s)), s
        completed = engine.repair(grammar, s)
        assert reference.fullmatch(completed), (s, completed)


@pytest.mark.parametrize("regex", ["(ab", "a)", "[ab", "*a", r"a\1", r"(?=a)", r"\bword", "a{2,1}", "a^b"])
def test_regex_rejects_unsupported_syntax(regex):
    with pytest.raises(GrammarError, match="regex"):
        engine.regex(regex)


def test_field_grammars():
    assert engine.matches(number(int), "-12") and not engine.matches(number(int), "012")
    assert not engine.matches(number(int, ge=0), "-1") and engine.matches(number(int, ge=0), "0")
    assert engine.matches(number(float), "3.25") and engine.matches(number(float), "-100000")
    assert not engine.matches(number(float), "10000000000000001")  # FLOAT_LIMIT: digits exact as a double
    assert not engine.matches(number(float, gt=0, lt=1), "1") and engine.matches(number(float, gt=0, lt=1), "0.5")
    assert engine.matches(number(int, nullable=True), "null") and not engine.matches(number(int), "null")
    s = string_content(max_length=4)
    assert engine.matches(s, 'ab\\"c') and not engine.matches(s, 'a"b') and not engine.matches(s, "a\nb")
    assert not engine.matches(s, "abcde") and engine.matches(s, "\u00e9t\u00e9")
    assert engine.matches(string_content(), "caf\u00e9 \u65e5\u672c")  # decoded Unicode, not only escapes
    repaired = engine.repair(string_content(min_length=2), "")
    assert engine.matches(string_content(min_length=2), repaired) and len(json.loads(f'"{repaired}"')) == 2
    assert engine.repair(number(int), "-") == "-0"
    pattern = string_content(pattern=r"^[A-Z]{2}-\d+$", max_length=6)
    assert engine.matches(pattern, "AB-123") and not engine.matches(pattern, "AB-1234")


def test_masks_allow_exactly_the_consumable_tokens(tiny_tf):
    vocab = vocabulary(tiny_tf)
    ids = range(vocab.size)
    for grammar in [
        string_content(),
        number(int),
        engine.followed_by(engine.regex(r"\d{3}-\d{4}"), ['"']),
        engine.json_schema({"type": "object", "properties": {"a": {"type": "string"}}}),
    ]:
        constraint = GrammarConstraint(grammar, vocab)
        for step in range(6):
            if constraint.done():
                break
            mask = constraint.allowed()
            assert mask.shape == (vocab.size,) and mask.any()
            for t in ids:  # the mask says exactly which tokens the matcher accepts
                assert constraint.matcher.deep_copy().consume_token(t) == bool(mask[t]), (grammar.kind, step, t)
            allowed = [t for t in np.flatnonzero(mask) if t not in vocab.eos]
            if not allowed:
                break
            constraint.advance(allowed[step % len(allowed)])


# --- SmolLM2: the course example -------------------------------------------------------------------------------

PROFILE_PROMPT = "Extract the client profile from the message.\nMessage: {text}\nProfile (JSON):\n"
PROFILE_CASES = [
    (
        "Hi, this is Maria Lopez. You can reach me at 415-555-0132. I live in San Francisco, 94110.",
        "Maria Lopez",
        "415-555-0132",
        "94110",
    ),
    ("Client: John Smith, phone 212-555-0199, ZIP 10001, New York.", "John Smith", "212-555-0199", "10001"),
]


@pytest.mark.slow
@pytest.mark.parametrize("text, name, phone, zip_code", PROFILE_CASES)
def test_client_profile_on_smollm2(smol_tf, text, name, phone, zip_code):
    result = structured_program(ClientProfile, PROFILE_PROMPT).run(smol_tf, text=text)
    profile = result.value
    assert isinstance(profile, ClientProfile)
    assert name in profile.name
    assert profile.phone == phone and profile.zip_code == zip_code
    assert result.tokens.evaluated <= 1.1 * result.tokens.unique
