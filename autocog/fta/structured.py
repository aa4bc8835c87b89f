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
``model.model_validate``. The field specs (how a value is written and read back) are in `autocog.fta.specs`,
the mapping from annotations to specs in `autocog.fta.compiler`.

>>> class Profile(BaseModel):                                   # doctest: +SKIP
...     name: str
...     phone: str = Field(pattern=r"^[0-9]{3}-[0-9]{4}$")
...     zip: str = Field(pattern=r"^[0-9]{5}$")
>>> prog = structured_program(Profile, "Text: {text}\\nThe client's profile as JSON:\\n")      # doctest: +SKIP
>>> prog.run(lm, text="Alice, 555-0100, lives in 94110").value                            # doctest: +SKIP
Profile(name='Alice', phone='555-0100', zip='94110')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from autocog.fta.compiler import Compiler
from autocog.fta.program import Program
from autocog.fta.specs import Builder, ObjectSpec
from autocog.fta.steps import Step, Text
from autocog.fta.tree import Path, ProgramResult

if TYPE_CHECKING:  # pragma: no cover - pydantic is imported when a program is built
    from pydantic import BaseModel

__all__ = ["StructuredProgram", "StructuredResult", "fill", "structured_program"]


# --- the program ----------------------------------------------------------------------------------------------


@dataclass(repr=False)
class StructuredResult(ProgramResult):
    """A `ProgramResult` whose paths also read as instances: ``value`` (the best path's), ``instance(path)``."""

    program: Optional[StructuredProgram] = None

    @property
    def value(self):
        """The best path as a validated instance of the program's model."""
        return self.instance(self.best)

    def instance(self, path: Path):
        if self.program is None:
            raise ValueError("this result has no program to read instances with")
        return self.program.parse(path.values)


class StructuredProgram(Program):
    """A `Program` that writes an instance of ``model`` as JSON; ``run`` returns a `StructuredResult`."""

    def __init__(self, model: type[BaseModel], spec: ObjectSpec, steps: list[Step], name: str):
        super().__init__(steps, name=name)
        self.model, self.spec = model, spec

    def parse(self, values: dict):
        """The validated model instance described by a path's ``values``."""
        return self.model.model_validate(self.spec.extract(values, ""))

    def run(self, lm, *args: Any, **kwargs: Any) -> StructuredResult:
        result = super().run(lm, *args, **kwargs)
        return StructuredResult(
            paths=result.paths, tree=result.tree, tokens=result.tokens, settings=result.settings, program=self
        )


def structured_program(
    model: type, prompt: Optional[str] = None, max_items: int = 8, string_tokens: int = 48, name: Optional[str] = None
) -> StructuredProgram:
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
    spec = Compiler(max_items, string_tokens).model(model)
    builder = Builder()
    prompt = f"{model.__name__} as JSON:\n" if prompt is None else prompt
    if prompt:
        builder.step(Text(prompt, name="prompt"))
    spec.emit(builder, "", "")
    return StructuredProgram(model, spec, builder.finish(), name=name or model.__name__)


def fill(lm, model: type, prompt: Optional[str] = None, width: Optional[int] = 1, **inputs: Any):
    """Fill in ``model`` on ``lm`` in one call: ``structured_program(model, prompt).run(lm, ...).value`` (the
    program's way; `autocog.generate` is the grammar engine's).

    >>> fill(lm, Profile, "Text: {text}\\nJSON:\\n", text="Alice, 555-0100, 94110")     # doctest: +SKIP
    Profile(name='Alice', phone='555-0100', zip='94110')
    """
    return structured_program(model, prompt).run(lm, width=width, inputs=inputs).value
