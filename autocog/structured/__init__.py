"""Structured output on the llguidance grammar engine: `generate(lm, output_type, prompt=None, **inputs)`.

* `generate` / `run` (`autocog.structured.generate`): pydantic models and other types, JSON schemas,
  `Regex`, `Lark`, `GBNF`, lists of choices; locally through ``GreedyLM.complete_tokens`` with a
  `GrammarConstraint`, on servers through their native constraint (`autocog.structured.server`).
* The engine (`autocog.structured.engine`): `Grammar` and its builders, `GrammarConstraint`, `matches`.
* Vocabularies (`autocog.structured.vocab`): each backend's tokens as bytes for the engine.

Programs keep their own structure on top (`autocog.fta.structured_program`): enum-like fields are Choose
steps the thought tree scores, free fields are Complete steps constrained by this engine. See
``docs/structured.md``.
"""

from autocog.structured.engine import (
    Grammar,
    GrammarConstraint,
    GrammarError,
    IncompleteOutputError,
    UnsupportedSchemaError,
    check,
    choice,
    followed_by,
    gbnf,
    json_schema,
    lark,
    matches,
    regex,
)
from autocog.structured.generate import Generation, generate, run
from autocog.structured.server import ServerConstraintError
from autocog.structured.types import (
    GBNF,
    Lark,
    Output,
    OutputValidationError,
    Regex,
    as_output,
)
from autocog.structured.vocab import GrammarVocabulary, vocabulary

__all__ = [
    "GBNF",
    "Generation",
    "Grammar",
    "GrammarConstraint",
    "GrammarError",
    "IncompleteOutputError",
    "Lark",
    "Output",
    "OutputValidationError",
    "Regex",
    "ServerConstraintError",
    "UnsupportedSchemaError",
    "GrammarVocabulary",
    "as_output",
    "check",
    "choice",
    "followed_by",
    "gbnf",
    "generate",
    "json_schema",
    "lark",
    "matches",
    "regex",
    "run",
    "vocabulary",
]
