"""How a structured program writes each JSON value as steps, and reads the value back from a path's values.

`Builder` collects the steps (structural text merged into Text steps, labels for forward routes); a `Spec`
per value kind (`StrSpec`, `NumberSpec`, `EnumSpec`, `ObjectSpec`, `ListSpec`, `NullableSpec`) emits its
steps under a JSON-pointer path (``emit``) and reads its value back (``extract``). `autocog.fta.compiler`
turns pydantic annotations into specs; `autocog.fta.structured` makes the program.

>>> b = Builder(); EnumSpec(["true", "false"], [True, False]).emit(b, "/ok", ""); [s.name for s in b.finish()]
['/ok']
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

from autocog.fta.steps import END, Choose, Complete, Step, Text

INDENT = "  "


def _braces(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


class Builder:
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


class Spec:
    nullable = False

    def emit(self, b: Builder, path: str, indent: str, opened: bool = False) -> None:
        raise NotImplementedError

    def extract(self, values: dict, path: str) -> Any:
        raise NotImplementedError

    def opening(self) -> Optional[str]:
        """The first character of the value when it is fixed (string, object, list), else None."""
        return None


@dataclass
class StrSpec(Spec):
    pattern: Any  # an engine Grammar of the string's content
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


NUMBER_STOPS = (",", "\n")  # what follows a value in the JSON the program writes


@dataclass
class NumberSpec(Spec):
    pattern: Any  # an engine Grammar of the number (or null)
    kind: type
    bounds: dict

    def emit(self, b, path, indent, opened=False):
        b.step(Complete(path, stop=list(NUMBER_STOPS), max_tokens=24, pattern=self.pattern, keep_stop=False))

    def extract(self, values, path):
        value = json.loads(values[path])
        return None if value is None else self.kind(value)


@dataclass
class EnumSpec(Spec):
    options: list[str]
    values: list[Any]

    def emit(self, b, path, indent, opened=False):
        b.step(Choose(path, self.options))

    def extract(self, values, path):
        return self.values[self.options.index(values[path])]


@dataclass
class ObjectSpec(Spec):
    model: type
    fields: list[tuple[str, str, Spec]]  # (attribute name, JSON key, spec)

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
class ListSpec(Spec):
    item: Spec
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
class NullableSpec(Spec):
    inner: Spec

    def emit(self, b, path, indent, opened=False):
        after = b.reserve()
        b.step(Choose(f"{path}#null", {"null": after, self.inner.opening(): None}))
        self.inner.emit(b, path, indent, opened=True)
        b.place(after)

    def extract(self, values, path):
        if values.get(f"{path}#null") == "null":
            return None
        return self.inner.extract(values, path)
