"""Typed errors of prompting programs. Every one names the step at fault (``error.step``) and is raised when
the program is built or when its inputs are checked, always before the first model call."""

from __future__ import annotations

from typing import Optional

from ..lm.errors import AutoCogError


class ProgramError(AutoCogError, ValueError):
    """A program or its inputs are invalid; ``step`` is the name of the step at fault (None for the program)."""

    def __init__(self, message: str, step: Optional[str] = None):
        super().__init__(message)
        self.step = step


class DuplicateStepError(ProgramError):
    """Two steps share a name."""


class UnknownStepError(ProgramError):
    """An edge, the entry or a Choose option leads to a step that does not exist."""


class UnreachableStepError(ProgramError):
    """A step cannot be reached from the entry."""


class UnboundedLoopError(ProgramError):
    """A cycle of steps has no step with ``max_visits``: a run could loop for ever."""


class InvalidStepError(ProgramError):
    """A step's own settings are wrong (empty options, bad token limit, bad text template...)."""


class UndefinedValueError(ProgramError):
    """A Text uses the value of a step that is not run on every path before it."""


class MissingInputError(ProgramError):
    """``run`` was not given an input that a Text step uses."""


class UnknownInputError(ProgramError):
    """``run`` was given an input that no step uses (most often a typo)."""


class UnsupportedFieldError(ProgramError):
    """A pydantic field has a type the structured-output builder cannot constrain."""
