"""Grammars of single JSON values, for programs that write JSON field by field (`autocog.fta.structured`).

* `string_content(min_length, max_length, pattern)`: the text between a JSON string's quotes. Without a
  pattern: any JSON string content (escapes allowed, no raw control characters), the length counted in decoded
  characters. With a pattern: text that matches it in full and needs no escaping (no ``"``, ``\\``, control
  characters), so the content is the value as is. `UnsupportedSchemaError` when no such text exists.
* `number(kind, ge=, gt=, le=, lt=, multiple_of=, nullable=)`: a JSON integer or number whose bounds the
  engine enforces exactly (llguidance's JSON-schema numbers), or ``null`` when ``nullable``. A float without a
  bound on one side is kept within ``FLOAT_LIMIT`` there (1e15: its digits stay exact as a double).

>>> matches(string_content(max_length=3), 'a\\\\"b')
True
>>> matches(number(int, ge=1, le=5), "6")
False
"""

from __future__ import annotations

import json
from typing import Optional

from autocog.structured.engine import (
    Grammar,
    UnsupportedSchemaError,
    is_empty,
    json_schema,
    lark,
    matches,
    regex,
)

__all__ = ["JSON_SAFE_CHAR", "JSON_STRING_CHAR", "matches", "number", "string_content"]

JSON_STRING_CHAR = r'(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})'
JSON_SAFE_CHAR = r'[^"\\\x00-\x1f]'
FLOAT_LIMIT = 1e15


def _repeat(char: str, min_length: int, max_length: Optional[int]) -> str:
    return f"{char}{{{int(min_length)},{'' if max_length is None else int(max_length)}}}"


def string_content(min_length: int = 0, max_length: Optional[int] = None, pattern: Optional[str] = None) -> Grammar:
    """The content of a JSON string (see the module docstring)."""
    if max_length is not None and max_length < min_length:
        raise UnsupportedSchemaError(f"max_length {max_length} < min_length {min_length}")
    if pattern is None:
        return regex(_repeat(JSON_STRING_CHAR, min_length, max_length))
    body = pattern[1:] if pattern.startswith("^") else pattern
    if body.endswith("$") and not body.endswith("\\$"):
        body = body[:-1]
    safe = _repeat(JSON_SAFE_CHAR, min_length, max_length)
    grammar = lark("start: CONTENT\nCONTENT: /" + body.replace("/", "\\/") + "/ & /" + safe + "/")
    if is_empty(grammar):
        raise UnsupportedSchemaError(
            f"no text without JSON escapes ('\"', '\\\\', control characters) matches "
            f"the pattern {pattern!r} within the length bounds"
        )
    return Grammar("pattern", pattern, grammar.text)


def number(
    kind: type = float,
    ge: Optional[float] = None,
    gt: Optional[float] = None,
    le: Optional[float] = None,
    lt: Optional[float] = None,
    multiple_of: Optional[float] = None,
    nullable: bool = False,
) -> Grammar:
    """A JSON integer (``kind=int``) or number within the bounds (see the module docstring)."""
    schema: dict = {"type": "integer" if kind is int else "number"}
    if kind is not int:
        ge = -FLOAT_LIMIT if ge is None and gt is None else ge
        le = FLOAT_LIMIT if le is None and lt is None else le
    for key, value in (
        ("minimum", ge),
        ("exclusiveMinimum", gt),
        ("maximum", le),
        ("exclusiveMaximum", lt),
        ("multipleOf", multiple_of),
    ):
        if value is not None:
            schema[key] = value
    if nullable:
        schema = {"anyOf": [schema, {"type": "null"}]}
    grammar = json_schema(schema)
    if is_empty(grammar):
        raise UnsupportedSchemaError(f"no number satisfies {json.dumps(schema)}")
    return grammar
