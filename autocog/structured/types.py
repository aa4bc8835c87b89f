"""Output types of `autocog.generate`: what the caller passes, the grammar the engine runs, how a reply is read.

==============================  =======================================  ==========================================
output type                     grammar                                  returned
==============================  =======================================  ==========================================
pydantic ``BaseModel`` subclass  its JSON schema (objects closed: no     a validated instance
                                extra keys are generated)
other type (``list[int]``,      ``TypeAdapter(t).json_schema()``         ``TypeAdapter(t).validate_json(text)``
``dict[str, float]``, unions)
JSON schema ``dict``            the schema                               the parsed JSON, checked with jsonschema
``Regex(pattern)``              the regex, full match                    the text
``Lark(text)`` / ``GBNF(text)``  the grammar                              the text
``list`` of strings             one of them                              the string (``lm.choose`` picks it)
==============================  =======================================  ==========================================

Everything is compiled (and unsupported JSON-schema keywords rejected) by `as_output`, before any model call.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, Callable, Optional

from autocog.errors import AutoCogError
from autocog.structured import engine
from autocog.structured.engine import JSON_CLOSERS, Grammar, GrammarError

__all__ = ["GBNF", "Lark", "Output", "OutputValidationError", "Regex", "as_output"]


class OutputValidationError(AutoCogError, ValueError):
    """A reply (typically a server's) does not validate against the output type; ``text`` is the reply."""

    def __init__(self, message: str, text: str = ""):
        super().__init__(message)
        self.text = text


@dataclass(frozen=True)
class Regex:
    """Text matching ``pattern`` in full (Rust regex syntax, as outlines' ``Regex``).

    >>> Regex(r"[0-9]{5}")
    Regex(pattern='[0-9]{5}')
    """

    pattern: str


@dataclass(frozen=True)
class Lark:
    """Text in the language of a Lark grammar (llguidance's dialect; the ``start`` rule)."""

    grammar: str


@dataclass(frozen=True)
class GBNF:
    """Text in the language of a llama.cpp GBNF grammar (the ``root`` rule)."""

    grammar: str


@dataclass
class Output:
    """A resolved output type: ``kind`` (``"json"``, ``"regex"``, ``"lark"``, ``"gbnf"``, ``"choice"``), the
    ``grammar``, the ``schema`` (json), the ``choices`` (choice), ``closers`` (texts that end a value soonest,
    for a finishing constraint), ``parse`` (text -> value, raises `OutputValidationError`)."""

    kind: str
    grammar: Grammar
    parser: Callable[[str], Any]
    schema: Optional[dict] = None
    choices: Optional[list] = None
    source: Any = None
    closers: tuple = ()

    def parse(self, text: str) -> Any:
        return self.parser(text)


def _closed(schema: Any) -> Any:
    """A copy of a pydantic schema whose objects allow no extra keys (pydantic ignores them anyway)."""
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


def _validator(parse: Callable[[str], Any], what: str) -> Callable[[str], Any]:
    def run(text: str) -> Any:
        try:
            return parse(text)
        except (ValueError, TypeError) as error:  # pydantic's ValidationError and JSONDecodeError are ValueErrors
            raise OutputValidationError(
                f"the reply is not a valid {what}: {error}\nreply: {text[:300]!r}", text
            ) from None

    return run


def _json_schema_output(schema: dict) -> Output:
    grammar = engine.json_schema(schema)

    def parse(text: str) -> Any:
        value = json.loads(text)
        try:
            import jsonschema
        except ImportError:  # pragma: no cover - jsonschema is part of the structured extra
            return value
        try:
            jsonschema.validate(value, schema)
        except jsonschema.ValidationError as error:
            raise ValueError(error.message) from None
        return value

    return Output(
        "json",
        grammar,
        _validator(parse, "instance of the JSON schema"),
        schema=schema,
        source=schema,
        closers=JSON_CLOSERS,
    )


def _type_output(output_type: Any) -> Output:
    from pydantic import BaseModel, TypeAdapter
    from pydantic.errors import PydanticSchemaGenerationError, PydanticUserError

    parse: Callable[[str], Any]
    try:
        if isinstance(output_type, type) and issubclass(output_type, BaseModel):
            schema, parse = output_type.model_json_schema(), output_type.model_validate_json
            name = output_type.__name__
        else:
            adapter = TypeAdapter(output_type)
            schema, parse, name = adapter.json_schema(), adapter.validate_json, repr(output_type)
    except (PydanticSchemaGenerationError, PydanticUserError) as error:
        raise GrammarError(f"{output_type!r} has no JSON schema: {error}") from None
    schema = _closed(schema)
    grammar = engine.json_schema(schema)
    return Output("json", grammar, _validator(parse, name), schema=schema, source=output_type, closers=JSON_CLOSERS)


def _text_output(kind: str, grammar: Grammar, source: Any) -> Output:
    def parse(text: str) -> str:
        if not engine.matches(grammar, text):
            raise ValueError(f"it does not match the {kind}")
        return text

    return Output(kind, grammar, _validator(parse, f"match of the {kind}"), source=source)


def as_output(output_type: Any) -> Output:
    """Resolve an output type (see the module docstring); `GrammarError` / `UnsupportedSchemaError` /
    `TypeError` name what is wrong, before any model call."""
    if isinstance(output_type, Regex):
        return _text_output("regex", engine.regex(output_type.pattern), output_type)
    if isinstance(output_type, Lark):
        return _text_output("lark", engine.lark(output_type.grammar), output_type)
    if isinstance(output_type, GBNF):
        return _text_output("gbnf", engine.gbnf(output_type.grammar), output_type)
    if isinstance(output_type, (list, tuple)):
        from autocog.core.checks import check_choices

        choices = check_choices(list(output_type))
        out = _text_output("choice", engine.choice(choices), output_type)
        out.choices = choices
        return out
    if isinstance(output_type, dict):
        return _json_schema_output(copy.deepcopy(output_type))
    if isinstance(output_type, str):
        raise TypeError(
            "a str output type is ambiguous: pass autocog.Regex(...), autocog.Lark(...), "
            "autocog.GBNF(...) or a list of choices"
        )
    return _type_output(output_type)
