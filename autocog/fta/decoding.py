"""Complete steps on the one decoding loop: ``GreedyLM.complete_tokens`` with the step's grammar as constraint.

`decode` runs a `Complete` step on a `GreedyLM` (greedy; with a ``pattern``, the grammar engine's
`GrammarConstraint` masks the tokens, and ``max_tokens`` is the budget after which the value is closed as soon
as the pattern allows, with ``CLOSING_SLACK`` more tokens to get there). `complete_text` runs it on any other
`LM` (``lm.complete``; a pattern is repaired after the fact by `autocog.structured.engine.repair`).
Both return a `StepText`.

>>> out = decode(lm, step, "Zip: ")          # doctest: +SKIP
>>> out.value, out.appended, out.logprob     # doctest: +SKIP
('94110', '94110', -3.2)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from autocog.core.sampling import SamplingParams
from autocog.fta.steps import Complete
from autocog.lm.greedy import GreedyLM

__all__ = ["CLOSING_SLACK", "Recorder", "StepText", "complete_text", "decode"]

CLOSING_SLACK = 32


@dataclass
class StepText:
    """``appended``: the text the prompt goes on with; ``value``: what the step stores; ``logprob``: the sum of
    the tokens' log-probs (NaN when unknown); ``n_tokens``: tokens generated; ``read``: the ids the model read
    (empty when unknown)."""

    appended: str
    value: str
    logprob: float
    n_tokens: int
    read: list = field(default_factory=list)


class Recorder:
    """A `Constraint` that records the tokens taken, around an optional inner constraint."""

    def __init__(self, inner: Any = None):
        self.inner = inner
        self.tokens: list[int] = []

    def allowed(self):
        return None if self.inner is None else self.inner.allowed()

    def advance(self, token: int) -> None:
        self.tokens.append(int(token))
        if self.inner is not None:
            self.inner.advance(token)

    def done(self) -> bool:
        return self.inner is not None and self.inner.done()


def _split(step: Complete, text: str) -> tuple[str, str]:
    """``(appended, value)`` of a step's text that may end with one of its stop strings."""
    ended_by = next((s for s in sorted(step.stop, key=len, reverse=True) if text.endswith(s)), None)
    value = text[: len(text) - len(ended_by)] if ended_by else text
    return (text if (ended_by is None or step.keep_stop) else value), value


def decode(lm: GreedyLM, step: Complete, prompt: str) -> StepText:
    """Run ``step`` after ``prompt`` on ``lm.complete_tokens`` (greedy)."""
    ids = lm.prompt_tokens(prompt)
    inner = None
    budget = step.max_tokens
    if step.grammar is not None:
        from autocog.structured.engine import JSON_CLOSERS, GrammarConstraint, IncompleteOutputError
        from autocog.structured.vocab import vocabulary

        inner = GrammarConstraint(
            step.grammar, vocabulary(lm), finish_after=step.max_tokens, closers=tuple(step.stop) + JSON_CLOSERS
        )
        budget += CLOSING_SLACK
    recorder = Recorder(inner)
    logprobs: list = []
    stops = [] if inner is not None else step.stop
    params = SamplingParams(max_tokens=budget)  # greedy
    text = lm.complete_tokens(ids, stops, params, constraint=recorder, token_logprobs=logprobs)
    if inner is not None and not inner.accepting():
        raise IncompleteOutputError(
            f"step {step.name!r}: the text {text[:60]!r} does not match the pattern "
            f"{step.pattern.description} after {len(recorder.tokens)} tokens",
            text,
        )
    appended, value = _split(step, text)
    return StepText(appended, value, math.fsum(logprobs), len(logprobs), ids + recorder.tokens[:-1])


def complete_text(lm: Any, step: Complete, prompt: str) -> StepText:
    """Run ``step`` with ``lm.complete`` (backends without next-token log-probs); ``logprob`` is NaN."""
    text = lm.complete(prompt, stop=step.stop or None, max_tokens=step.max_tokens)
    if step.grammar is not None:
        from autocog.structured.engine import JSON_CLOSERS, repair

        text = repair(step.grammar, text, closers=tuple(step.stop) + JSON_CLOSERS)
    appended, value = _split(step, text)
    return StepText(appended, value, math.nan, len(lm.tokenize(appended)))


def step_logprob(lm: Any, prompt: str, appended: str) -> Optional[float]:
    """The log-prob of ``appended`` after ``prompt`` from ``lm.choice_distribution`` (None if it cannot score)."""
    try:
        return float(lm.choice_distribution(prompt, [appended]).logprobs[0])
    except NotImplementedError:
        return None
