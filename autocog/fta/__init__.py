"""Prompting programs: the finite thought automaton (FTA), thought trees, and structured output.

A `Program` is an automaton of steps run on any `autocog.lm.LM`:

* `Text` ``(text, name=None, next=None, max_visits=None)``: fixed text; ``{name}`` fields take program inputs
  or the values of earlier steps.
* `Complete` ``(name, stop="\\n", max_tokens=64, next=None, max_visits=None, pattern=None, keep_stop=True)``:
  greedy free text up to a stop string; ``pattern`` (a regex, ``autocog.Regex`` / ``Lark`` / ``GBNF`` or an
  engine `Grammar`) constrains it: the grammar engine (llguidance, `autocog.structured`) masks the tokens.
* `Choose` ``(name, options, next=None, normalization=None, width=None, threshold=None, end=None,
  max_visits=None)``: one option, scored by the model; ``options`` as a dict routes each option to a step.
* `END`: the successor that ends a run.
* Turns: `System`, `User`, `Assistant` (or ``Text(..., role=)``) make the program a chat: each opens a message
  of that role; a Text without role continues the current one; Complete and Choose write the assistant's
  reply. Every model call gets the conversation rendered with the model's chat template plus the reply so far
  (a chat server gets the messages themselves while the reply is empty), so the program runs the same on a
  chat server and on a local model (see docs/chat.md).
* `Program` ``(steps, entry=None, edges=None, name="program")``: checked when built (`ProgramError` and its
  subclasses name the step at fault); ``.run(lm, width=1, threshold=0.0, completion_scores=False,
  scoring="prefix", inputs=None, **inputs) -> ProgramResult``; ``.inputs``; ``.looped`` (steps on a cycle);
  ``.successor(step, option=None)``; ``.to_dot(result=None)`` / ``.render(path)``.
* `ProgramResult`: ``.paths`` best first, ``.best``, ``.values`` (the best path's), ``.tree`` (root
  `ThoughtNode`), ``.tokens`` (`TokenStats`: ``evaluated``, ``unique``, ``ratio``, ``calls``),
  ``.to_dot()`` / ``.render(path)``.
* `Path`: ``.values``, ``.score`` (sum of log-probs), ``.probability``, ``.text``, ``.status``, ``.nodes``,
  ``.choice(name)`` (the `ChoiceResult` of a Choose: ``.tree.to_dot()`` draws its token choice tree).
* Structured output: `structured_program` ``(model, prompt, max_items=8, name=None) -> StructuredProgram``
  (a `Program` whose results carry ``.value``, a validated pydantic instance) and `fill` ``(lm, model,
  prompt, **inputs)`` for one call. Free fields are constrained by the grammar engine (`autocog.structured`).

Scores are natural-log probabilities: a Choose contributes the log of the taken option's probability
(normalized per step), a Complete 0 (or its tokens' log-prob with ``completion_scores=True``), a Text 0.
Pruning is per Choose (``threshold`` on the option's probability, then the ``width`` best; the best option
always stays). Exploration is depth-first, best option first, and every call passes the whole prompt as text,
so a backend's prefix cache evaluates each token of the thought tree about once (``result.tokens``).
Only the public `LM` API is used: ``complete`` and ``choice_distribution`` (or ``choose``) on any backend;
``greedy`` on a `GreedyLM` (greedy decoding, token masking, depth-first scoring of a Choose's option trie).

>>> from autocog.fta import Program, Text, Complete, Choose
>>> prog = Program([Text("Question: {q}\\nLet's think step by step:"), Complete("reasoning", max_tokens=64),
...                 Text("Answer:"), Choose("answer", [" A", " B", " C", " D"])])
>>> prog.inputs
['q']
>>> result = prog.run(lm, q="...", width=2)                   # doctest: +SKIP
>>> result.best.values                                        # doctest: +SKIP
{'reasoning': ' ...', 'answer': ' B'}
"""

from autocog.errors import (
    DuplicateStepError,
    InvalidStepError,
    MissingInputError,
    ProgramError,
    UnboundedLoopError,
    UndefinedValueError,
    UnknownInputError,
    UnknownStepError,
    UnreachableStepError,
    UnsupportedFieldError,
)
from autocog.fta.program import Program
from autocog.fta.steps import END, Assistant, Choose, Complete, Step, System, Text, User
from autocog.fta.tree import Path, ProgramResult, ThoughtNode, TokenStats

__all__ = [
    "END",
    "Assistant",
    "Choose",
    "Complete",
    "DuplicateStepError",
    "InvalidStepError",
    "MissingInputError",
    "Path",
    "Program",
    "ProgramError",
    "ProgramResult",
    "Step",
    "StructuredProgram",
    "StructuredResult",
    "System",
    "Text",
    "ThoughtNode",
    "TokenStats",
    "UnboundedLoopError",
    "UndefinedValueError",
    "UnknownInputError",
    "UnknownStepError",
    "UnreachableStepError",
    "UnsupportedFieldError",
    "User",
    "fill",
    "structured_program",
]


def __getattr__(name):
    if name in ("structured_program", "StructuredProgram", "StructuredResult", "fill"):
        from autocog.fta import structured

        return getattr(structured, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
