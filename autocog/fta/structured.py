"""Structured output: a `Program` built from a pydantic model, whose result is a validated instance.

The program writes the instance as indented JSON. Keys, braces and commas are Text; an enum-like field
(``bool``, ``Literal``, ``Enum``) is a Choose among its JSON values, which the thought tree scores; a free field
is a Complete constrained by the grammar engine (llguidance, see `autocog.structured.fields`), so the text
always parses and validates:

===========================  ===================================================================================
``str``                      JSON string content (escapes allowed, no raw control characters), ``min_length`` /
                             ``max_length`` enforced in characters; with ``pattern``: that regex (Rust syntax),
                             minus ``"``, ``\\`` and control characters (so the text needs no escaping)
``int`` / ``float``          a JSON number; ``ge`` / ``gt`` / ``le`` / ``lt`` / ``multiple_of`` enforced exactly by
                             the engine while generating
``bool``, ``Literal``,       a Choose among ``true`` / ``false`` or the JSON of each value
``Enum``
nested ``BaseModel``         its fields, in order, between braces
``list[X]``                  bounded (``max_length`` or the builder's ``max_items``): a Choose after each item
                             between ``,`` (one more) and ``]`` (done), unrolled up to the bound
``Optional[X]``              ``null`` is one more option of a Choose; for a number, an alternative of its
                             grammar; for a string, object or list, a Choose between ``null`` and the opening
                             character, which branches the program
===========================  ===================================================================================

Step names are JSON pointers into the instance (``/name``, ``/address/city``, ``/tags/0``), so they never clash
with the prompt's ``{inputs}``; the structural Choose steps of a value add ``#open`` / ``#more<i>`` (lists) and
``#null`` (optional values). Values are read back from a path's values (not by parsing its text), then
``model.model_validate``.

>>> class Profile(BaseModel):                                   # doctest: +SKIP
...     name: str
...     phone: str = Field(pattern=r"^[0-9]{3}-[0-9]{4}$")
...     zip: str = Field(pattern=r"^[0-9]{5}$")
>>> prog = structured_program(Profile, "Text: {text}\\nThe client's profile as JSON:\\n")      # doctest: +SKIP
>>> prog.run(lm, text="Alice, 555-0100, lives in 94110").value                            # doctest: +SKIP
Profile(name='Alice', phone='555-0100', zip='94110')
"""

from __future__ import annotations

import enum
import json
import types
import typing
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

from .errors import UnsupportedFieldError
from .program import Program
from .steps import END, Choose, Complete, Step, Text
from .tree import Path, ProgramResult

__all__ = ["structured_program", "StructuredProgram", "StructuredResult", "generate"]

INDENT = "  "


def _braces(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


class _Builder:
    """Collects steps; structural text is merged into Text steps; labels name positions for forward routes."""

    def __init__(self):
        self.steps: list[Step] = []
        self.pending = ""
        self.placed: list[str] = []
        self.alias: dict[str, str] = {}
        self.count = 0

    def text(self, text: str) -> None:
        self.pending += text

    def flush(self) -> None:
        if self.pending:
            self._append(Text(_braces(self.pending), name=f"#t{len(self.steps)}"))
            self.pending = ""

    def step(self, step: Step) -> None:
        self.flush()
        self._append(step)

    def _append(self, step: Step) -> None:
        for label in self.placed:
            self.alias[label] = step.name
        self.placed = []
        self.steps.append(step)

    def reserve(self) -> str:
        self.count += 1
        return f"#L{self.count}"

    def place(self, label: str) -> None:
        """``label`` names the next step appended (the position right after what was emitted so far)."""
        self.flush()
        self.placed.append(label)

    def finish(self) -> list[Step]:
        self.flush()
        for label in self.placed:
            self.alias[label] = END
        for step in self.steps:
            if isinstance(step, Choose):
                step.routes = {o: self.alias.get(t, t) if t is not None else None for o, t in step.routes.items()}
        return self.steps


# --- field specs ---------------------------------------------------------------------------------------------

class _Spec:
    nullable = False

    def emit(self, b: _Builder, path: str, indent: str, opened: bool = False) -> None:
        raise NotImplementedError

    def extract(self, values: dict, path: str) -> Any:
        raise NotImplementedError

    def opening(self) -> Optional[str]:
        """The first character of the value when it is fixed (string, object, list), else None."""
        return None


@dataclass
class _Str(_Spec):
    pattern: Any          # an engine Grammar of the string's content
    raw: bool
    max_tokens: int

    def opening(self):
        return '"'

    def emit(self, b, path, indent, opened=False):
        if not opened:
            b.text('"')
        b.step(Complete(path, stop='"', max_tokens=self.max_tokens, pattern=self.pattern, keep_stop=False))
        b.text('"')

    def extract(self, values, path):
        text = values[path]
        return text if self.raw else json.loads('"' + text + '"')


NUMBER_STOPS = (",", "\n")   # what follows a value in the JSON the program writes


@dataclass
class _Number(_Spec):
    pattern: Any          # an engine Grammar of the number (or null)
    kind: type
    bounds: dict

    def emit(self, b, path, indent, opened=False):
        b.step(Complete(path, stop=list(NUMBER_STOPS), max_tokens=24, pattern=self.pattern, keep_stop=False))

    def extract(self, values, path):
        value = json.loads(values[path])
        return None if value is None else self.kind(value)


@dataclass
class _Enum(_Spec):
    options: list[str]
    values: list[Any]

    def emit(self, b, path, indent, opened=False):
        b.step(Choose(path, self.options))

    def extract(self, values, path):
        return self.values[self.options.index(values[path])]


@dataclass
class _Object(_Spec):
    model: type
    fields: list[tuple[str, str, _Spec]]   # (attribute name, JSON key, spec)

    def opening(self):
        return "{"

    def emit(self, b, path, indent, opened=False):
        if not opened:
            b.text("{")
        inner = indent + INDENT
        for k, (name, key, spec) in enumerate(self.fields):
            b.text("\n" + inner + json.dumps(key) + ": ")
            spec.emit(b, f"{path}/{name}", inner)
            if k + 1 < len(self.fields):
                b.text(",")
        b.text("\n" + indent + "}" if self.fields else "}")

    def extract(self, values, path):
        return {key: spec.extract(values, f"{path}/{name}") for name, key, spec in self.fields}


@dataclass
class _List(_Spec):
    item: _Spec
    min_items: int
    max_items: int

    def opening(self):
        return "["

    def emit(self, b, path, indent, opened=False):
        if not opened:
            b.text("[")
        inner = indent + INDENT
        after = b.reserve()
        close = "\n" + indent + "]"
        if self.max_items == 0:
            b.text("]")
            return
        if self.min_items == 0:
            b.step(Choose(f"{path}#open", {"\n" + inner: None, "]": after}))
        else:
            b.text("\n" + inner)
        for i in range(self.max_items):
            self.item.emit(b, f"{path}/{i}", inner)
            if i + 1 == self.max_items:
                b.text(close)
            elif i + 1 < self.min_items:
                b.text(",\n" + inner)
            else:
                b.step(Choose(f"{path}#more{i}", {",\n" + inner: None, close: after}))
        b.place(after)

    def count(self, values, path) -> int:
        if self.min_items == 0 and values.get(f"{path}#open") == "]":
            return 0
        n = max(self.min_items, 1)
        while n < self.max_items and values.get(f"{path}#more{n - 1}", "").startswith(","):
            n += 1
        return n

    def extract(self, values, path):
        return [self.item.extract(values, f"{path}/{i}") for i in range(self.count(values, path))]


@dataclass
class _Nullable(_Spec):
    inner: _Spec

    def emit(self, b, path, indent, opened=False):
        after = b.reserve()
        b.step(Choose(f"{path}#null", {"null": after, self.inner.opening(): None}))
        self.inner.emit(b, path, indent, opened=True)
        b.place(after)

    def extract(self, values, path):
        if values.get(f"{path}#null") == "null":
            return None
        return self.inner.extract(values, path)


# --- from annotations to specs ------------------------------------------------------------------------------

def _constraints(metadata: Sequence[Any]) -> dict:
    out: dict = {}
    for item in metadata:
        inner = getattr(item, "metadata", None)
        if isinstance(inner, list):   # a FieldInfo inside Annotated
            out.update(_constraints(inner))
        for key in ("min_length", "max_length", "pattern", "ge", "gt", "le", "lt", "multiple_of"):
            value = getattr(item, key, None)
            if value is not None:
                out[key] = value
    return out


def _unwrap(annotation: Any) -> tuple[Any, dict]:
    """The bare type and the constraints of an ``Annotated[...]`` annotation."""
    constraints: dict = {}
    while typing.get_origin(annotation) is typing.Annotated:
        args = typing.get_args(annotation)
        annotation = args[0]
        constraints.update(_constraints(args[1:]))
    return annotation, constraints


class _Compiler:
    def __init__(self, max_items: int, string_tokens: int):
        self.max_items, self.string_tokens = max_items, string_tokens

    def error(self, where: str, message: str) -> UnsupportedFieldError:
        return UnsupportedFieldError(f"field {where!r}: {message}", step=where)

    def spec(self, annotation: Any, constraints: dict, where: str) -> _Spec:
        from pydantic import BaseModel

        annotation, more = _unwrap(annotation)
        constraints = {**constraints, **more}
        origin = typing.get_origin(annotation)
        if origin is Union or (hasattr(types, "UnionType") and isinstance(annotation, getattr(types, "UnionType"))):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1 or len(args) == len(typing.get_args(annotation)):
                raise self.error(where, f"only Optional[X] unions are supported, not {annotation}")
            inner = self.spec(args[0], constraints, where)
            if isinstance(inner, _Enum):
                return _Enum(inner.options + ["null"], inner.values + [None])
            if isinstance(inner, _Number):
                return self._number(inner.kind, inner.bounds, where, nullable=True)
            return _Nullable(inner)
        if annotation is bool:
            return _Enum(["true", "false"], [True, False])
        if origin is typing.Literal:
            values = list(typing.get_args(annotation))
            return self._enum(values, where)
        if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
            members = list(annotation)
            return _Enum([json.dumps(m.value) for m in members], members) if self._jsonable(
                [m.value for m in members], where) else None
        if annotation is str:
            return self._string(constraints, where)
        if annotation in (int, float):
            return self._number(annotation, constraints, where)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return self.model(annotation, where)
        if origin in (list, typing.List):
            args = typing.get_args(annotation)
            item = self.spec(args[0] if args else str, {}, f"{where}/*")
            low = int(constraints.get("min_length", 0))
            high = constraints.get("max_length", self.max_items)
            high = int(min(high, max(self.max_items, low)))
            if low > high:
                raise self.error(where, f"min_length {low} exceeds the bound {high} on list length")
            return _List(item, low, high)
        raise self.error(where, f"type {annotation!r} is not supported (str, int, float, bool, Literal, Enum, "
                                "BaseModel, list[...] and Optional[...] are)")

    def _jsonable(self, values: list, where: str) -> bool:
        for v in values:
            if v is not None and not isinstance(v, (str, int, float, bool)):
                raise self.error(where, f"enum value {v!r} is not a JSON scalar")
        if len({json.dumps(v) for v in values}) < len(values):
            raise self.error(where, "two enum values have the same JSON text")
        return True

    def _enum(self, values: list, where: str) -> _Enum:
        self._jsonable(values, where)
        return _Enum([json.dumps(v) for v in values], values)

    def _string(self, constraints: dict, where: str) -> _Str:
        from ..structured import GrammarError
        from ..structured.fields import string_content

        max_length = constraints.get("max_length")
        tokens = self.string_tokens if max_length is None else max(1, min(self.string_tokens, int(max_length) + 1))
        try:
            grammar = string_content(int(constraints.get("min_length", 0)), max_length, constraints.get("pattern"))
        except GrammarError as error:
            raise self.error(where, str(error)) from None
        return _Str(grammar, raw="pattern" in constraints, max_tokens=tokens)

    def _number(self, kind: type, constraints: dict, where: str, nullable: bool = False) -> _Number:
        from ..structured import GrammarError
        from ..structured.fields import number

        bounds = {k: constraints.get(k) for k in ("ge", "gt", "le", "lt", "multiple_of")}
        try:
            return _Number(number(kind, nullable=nullable, **bounds), kind, bounds)
        except GrammarError as error:
            raise self.error(where, str(error)) from None

    def model(self, model: type, where: str = "") -> _Object:
        fields = []
        for name, info in model.model_fields.items():
            key = info.alias or name
            spec = self.spec(info.annotation, _constraints(info.metadata), f"{where}/{name}")
            fields.append((name, key, spec))
        return _Object(model, fields)


# --- the program ----------------------------------------------------------------------------------------------

@dataclass(repr=False)
class StructuredResult(ProgramResult):
    """A `ProgramResult` whose paths also read as instances: ``value`` (the best path's), ``instance(path)``."""

    program: Optional["StructuredProgram"] = None

    @property
    def value(self):
        """The best path as a validated instance of the program's model."""
        return self.instance(self.best)

    def instance(self, path: Path):
        return self.program.parse(path.values)


class StructuredProgram(Program):
    """A `Program` that writes an instance of ``model`` as JSON; ``run`` returns a `StructuredResult`."""

    def __init__(self, model: type, spec: _Object, steps: list[Step], name: str):
        super().__init__(steps, name=name)
        self.model, self.spec = model, spec

    def parse(self, values: dict):
        """The validated model instance described by a path's ``values``."""
        return self.model.model_validate(self.spec.extract(values, ""))

    def run(self, lm, *args: Any, **kwargs: Any) -> StructuredResult:
        result = super().run(lm, *args, **kwargs)
        return StructuredResult(paths=result.paths, tree=result.tree, tokens=result.tokens,
                                settings=result.settings, program=self)


def structured_program(model: type, prompt: Optional[str] = None, max_items: int = 8, string_tokens: int = 48,
                       name: Optional[str] = None) -> StructuredProgram:
    """A program that fills in ``model`` (a pydantic ``BaseModel`` subclass) after ``prompt``.

    ``prompt``: a Text template (``{name}`` fields are the program's inputs; double literal braces); default
    ``"<ModelName> as JSON:\\n"``. ``max_items`` bounds lists without ``max_length``; ``string_tokens`` bounds
    each free string. Unsupported field types raise `UnsupportedFieldError` naming the field.

    >>> prog = structured_program(Profile, "Text: {text}\\nJSON:\\n")        # doctest: +SKIP
    >>> prog.inputs                                                          # doctest: +SKIP
    ['text']
    """
    from pydantic import BaseModel

    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError(f"structured_program needs a pydantic BaseModel subclass, not {model!r}")
    if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 0:
        raise ValueError(f"max_items must be an int >= 0, got {max_items!r}")
    spec = _Compiler(max_items, string_tokens).model(model)
    builder = _Builder()
    prompt = f"{model.__name__} as JSON:\n" if prompt is None else prompt
    if prompt:
        builder.step(Text(prompt, name="prompt"))
    spec.emit(builder, "", "")
    return StructuredProgram(model, spec, builder.finish(), name=name or model.__name__)


def generate(lm, model: type, prompt: Optional[str] = None, width: Optional[int] = 1, **inputs: Any):
    """Fill in ``model`` on ``lm`` in one call: ``structured_program(model, prompt).run(lm, ...).value``.

    >>> generate(lm, Profile, "Text: {text}\\nJSON:\\n", text="Alice, 555-0100, 94110")     # doctest: +SKIP
    Profile(name='Alice', phone='555-0100', zip='94110')
    """
    return structured_program(model, prompt).run(lm, width=width, inputs=inputs).value
