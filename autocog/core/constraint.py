"""The interface between the decoding loop (`GreedyLM.complete_tokens`) and a grammar engine.

A `Constraint` is stateful: the loop asks which tokens may come next, samples among them, and tells the
constraint which token was taken. The mask only removes tokens: the log-probs of the kept tokens are those
of the unconstrained model (reported as such, never renormalized).

>>> constraint.allowed()            # numpy bool [vocab], or None when every token is allowed   # doctest: +SKIP
>>> constraint.advance(token_id)    # the loop took this token                                # doctest: +SKIP
>>> constraint.done()               # True: the output is complete, the loop stops            # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Constraint(Protocol):
    def allowed(self) -> Optional[np.ndarray]:
        """Boolean mask over the vocabulary of the tokens that may come next (EOS included when the output
        may end here), or None when any token may."""

    def advance(self, token: int) -> None:
        """Record that ``token`` was generated."""

    def done(self) -> bool:
        """True when nothing more may be generated (the loop stops without asking the model again)."""


@dataclass(frozen=True)
class NativeConstraint:
    """An output constraint as a server takes it (what a server dialect turns into request fields).

    ``kind``: ``"json"``, ``"regex"``, ``"lark"``, ``"gbnf"`` or ``"choice"``; ``schema``: the JSON schema (json);
    ``source``: the grammar's text (regex, lark, gbnf); ``choices``: the strings (choice); ``name``: a name for the
    schema; ``to_gbnf``: the same constraint as a GBNF grammar, for servers that only take GBNF (computed on demand,
    by the structured-output layer)."""

    kind: str
    schema: Optional[dict] = None
    source: Optional[str] = None
    choices: Optional[tuple[str, ...]] = None
    name: str = "output"
    to_gbnf: Optional[Callable[[], str]] = None
