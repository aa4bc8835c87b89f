"""From pydantic annotations to the field specs of `autocog.fta.specs`: `Compiler` maps each field's type
(``str``, ``int``, ``float``, ``bool``, ``Literal``, ``Enum``, nested ``BaseModel``, ``list[X]``,
``Optional[X]``) and constraints (``Field(...)``, ``Annotated[...]``) to a spec; free strings and numbers get
their grammars from `autocog.structured.fields`. An unsupported type raises `UnsupportedFieldError` naming
the field.

>>> Compiler(max_items=8, string_tokens=48).spec(bool, {}, "/ok")
EnumSpec(options=['true', 'false'], values=[True, False])
"""

from __future__ import annotations

import enum
import json
import types
import typing
from typing import TYPE_CHECKING, Any, Sequence, Union

from autocog.errors import UnsupportedFieldError

if TYPE_CHECKING:  # pragma: no cover - pydantic is imported when a model is compiled
    from pydantic import BaseModel
from autocog.fta.specs import (
    EnumSpec,
    ListSpec,
    NullableSpec,
    NumberSpec,
    ObjectSpec,
    Spec,
    StrSpec,
)


def field_constraints(metadata: Sequence[Any]) -> dict:
    """The constraints (``min_length`` ... ``multiple_of``) that a field's metadata sets."""
    out: dict = {}
    for item in metadata:
        inner = getattr(item, "metadata", None)
        if isinstance(inner, list):  # a FieldInfo inside Annotated
            out.update(field_constraints(inner))
        for key in ("min_length", "max_length", "pattern", "ge", "gt", "le", "lt", "multiple_of"):
            value = getattr(item, key, None)
            if value is not None:
                out[key] = value
    return out


def unwrap(annotation: Any) -> tuple[Any, dict]:
    """The bare type and the constraints of an ``Annotated[...]`` annotation."""
    constraints: dict = {}
    while typing.get_origin(annotation) is typing.Annotated:
        args = typing.get_args(annotation)
        annotation = args[0]
        constraints.update(field_constraints(args[1:]))
    return annotation, constraints


class Compiler:
    """Specs from annotations; lists without ``max_length`` hold at most ``max_items``, a free string at most
    ``string_tokens`` tokens."""

    def __init__(self, max_items: int, string_tokens: int):
        self.max_items, self.string_tokens = max_items, string_tokens

    def error(self, where: str, message: str) -> UnsupportedFieldError:
        return UnsupportedFieldError(f"field {where!r}: {message}", step=where)

    def spec(self, annotation: Any, constraints: dict, where: str) -> Spec:
        from pydantic import BaseModel

        annotation, more = unwrap(annotation)
        constraints = {**constraints, **more}
        origin = typing.get_origin(annotation)
        if origin is Union or (hasattr(types, "UnionType") and isinstance(annotation, types.UnionType)):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1 or len(args) == len(typing.get_args(annotation)):
                raise self.error(where, f"only Optional[X] unions are supported, not {annotation}")
            inner = self.spec(args[0], constraints, where)
            if isinstance(inner, EnumSpec):
                return EnumSpec(inner.options + ["null"], inner.values + [None])
            if isinstance(inner, NumberSpec):
                return self._number(inner.kind, inner.bounds, where, nullable=True)
            return NullableSpec(inner)
        if annotation is bool:
            return EnumSpec(["true", "false"], [True, False])
        if origin is typing.Literal:
            values = list(typing.get_args(annotation))
            return self._enum(values, where)
        if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
            members = list(annotation)
            self._jsonable([m.value for m in members], where)
            return EnumSpec([json.dumps(m.value) for m in members], members)
        if annotation is str:
            return self._string(constraints, where)
        if annotation in (int, float):
            return self._number(annotation, constraints, where)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return self.model(annotation, where)
        if origin in (list, typing.List):
            item_type = typing.get_args(annotation)
            item = self.spec(item_type[0] if item_type else str, {}, f"{where}/*")
            low = int(constraints.get("min_length", 0))
            high = constraints.get("max_length", self.max_items)
            high = int(min(high, max(self.max_items, low)))
            if low > high:
                raise self.error(where, f"min_length {low} exceeds the bound {high} on list length")
            return ListSpec(item, low, high)
        raise self.error(
            where,
            f"type {annotation!r} is not supported (str, int, float, bool, Literal, Enum, "
            "BaseModel, list[...] and Optional[...] are)",
        )

    def _jsonable(self, values: list, where: str) -> bool:
        for v in values:
            if v is not None and not isinstance(v, (str, int, float, bool)):
                raise self.error(where, f"enum value {v!r} is not a JSON scalar")
        if len({json.dumps(v) for v in values}) < len(values):
            raise self.error(where, "two enum values have the same JSON text")
        return True

    def _enum(self, values: list, where: str) -> EnumSpec:
        self._jsonable(values, where)
        return EnumSpec([json.dumps(v) for v in values], values)

    def _string(self, constraints: dict, where: str) -> StrSpec:
        from autocog.structured import GrammarError
        from autocog.structured.fields import string_content

        max_length = constraints.get("max_length")
        tokens = self.string_tokens if max_length is None else max(1, min(self.string_tokens, int(max_length) + 1))
        try:
            grammar = string_content(int(constraints.get("min_length", 0)), max_length, constraints.get("pattern"))
        except GrammarError as error:
            raise self.error(where, str(error)) from None
        return StrSpec(grammar, raw="pattern" in constraints, max_tokens=tokens)

    def _number(self, kind: type, constraints: dict, where: str, nullable: bool = False) -> NumberSpec:
        from autocog.structured import GrammarError
        from autocog.structured.fields import number

        bounds = {k: constraints.get(k) for k in ("ge", "gt", "le", "lt", "multiple_of")}
        try:
            return NumberSpec(number(kind, nullable=nullable, **bounds), kind, bounds)
        except GrammarError as error:
            raise self.error(where, str(error)) from None

    def model(self, model: type[BaseModel], where: str = "") -> ObjectSpec:
        fields = []
        for name, info in model.model_fields.items():
            key = info.alias or name
            spec = self.spec(info.annotation, field_constraints(info.metadata), f"{where}/{name}")
            fields.append((name, key, spec))
        return ObjectSpec(model, fields)
