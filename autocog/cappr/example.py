"""`Example`: one prompt with its own completions, CAPPr's ``cappr.Example`` (same fields, same checks).

`as_examples` also takes ``cappr.Example`` objects (anything with those five attributes).

>>> Example("The sky is", ("blue", "green"), prior=(0.9, 0.1)).completions
('blue', 'green')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional, Sequence

from autocog.cappr import checks

FIELDS = ("prompt", "completions", "prior", "end_of_prompt", "normalize")


@dataclass(frozen=True)
class Example:
    """``prompt``, its ``completions`` (kept as a tuple), an optional ``prior`` over them (kept as a float
    array), ``end_of_prompt`` (``" "`` or ``""``, what joins prompt and completion) and ``normalize``
    (False: the raw completion-after-prompt probabilities)."""

    prompt: str
    completions: Sequence[str]
    prior: Optional[Sequence[float]] = None
    end_of_prompt: Literal[" ", ""] = " "
    normalize: bool = True

    def __post_init__(self):
        if not isinstance(self.prompt, str):
            raise TypeError("prompt must be a string.")
        checks.nonempty(self.prompt, "prompt")
        checks.completions(self.completions)
        object.__setattr__(self, "completions", tuple(self.completions))  # a Series would index by label
        checks.end_of_prompt(self.end_of_prompt)
        object.__setattr__(self, "prior", checks.prior(self.prior, len(self.completions)))
        checks.normalize(self.normalize, self.completions)


def is_example(value: Any) -> bool:
    """An `Example`, a ``cappr.Example``, or anything else with its five attributes."""
    return isinstance(value, Example) or (not isinstance(value, str) and all(hasattr(value, f) for f in FIELDS))


def as_examples(examples: Any) -> tuple[bool, list[Example]]:
    """(was it a single example?, the examples as `Example` objects, checked)."""
    if is_example(examples):
        return True, [_as_example(examples)]
    checks.nonempty_and_ordered(examples, "examples")
    return False, [_as_example(e) for e in examples]


def _as_example(value: Any) -> Example:
    if isinstance(value, Example):
        return value
    if not is_example(value):
        raise TypeError(f"expected an Example, got {type(value).__name__}")
    return Example(**{f: getattr(value, f) for f in FIELDS})
