"""Hostile but valid text for any backend: a pool of strings, seeded cases, and a checker (issue 15).

Every backend must either score such a case like the local reference (within the tolerance its docs state)
or refuse it with a typed error whose message names the reason; never an untyped exception, a hang, a wrong
number, or (for servers) a dead server. The shared backend contract suite can run `check_cases` for any
backend; `tests/test_openai.py` runs it through llama_cpp.server against `LLaMa`.

>>> cases = hostile_cases(seed=0, count=3)
>>> len(cases), all(isinstance(c, tuple) and len(c) == 2 for c in cases)
(3, True)
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

# Unicode (accents, CJK, RTL), emoji (with modifiers and joiners), zero-width and control characters (NUL
# included), the literal text of special tokens, backslashes, quotes, braces, whitespace, digits, plain words.
POOL = [
    " Paris",
    "Paris",
    " the",
    "fox",
    " 10",
    "10",
    "b",
    " ",
    "\t",
    "\n",
    "\r\n",
    "  ",
    "ü",
    "é",
    "naïve",
    "東京",
    "مرحبا",
    "Ωμέγα",
    "🙂",
    "👍🏽",
    "👨‍👩‍👧",
    "🇫🇷",
    "\u200b",
    "\u200d",
    "\ufeff",
    "\u202e",
    "\x00",
    "\x01",
    "\x1b[0m",
    "\x7f",
    "<s>",
    "</s>",
    "<unk>",
    "<|endoftext|>",
    "<|im_start|>",
    "[INST]",
    "\\",
    "\\n",
    "\\x00",
    '"',
    "'",
    "`",
    "{",
    "}",
    "{}",
    "}{",
    "[",
    "]",
    "%s",
    "${x}",
]


def hostile_text(rng: random.Random, parts: int) -> str:
    return "".join(rng.choice(POOL) for _ in range(parts))


def hostile_cases(seed: int, count: int, max_choices: int = 8) -> list[tuple[str, list[str]]]:
    """``count`` (prompt, choices) pairs drawn from `POOL` with ``random.Random(seed)``: prompts of 1-4 pieces,
    2-``max_choices`` distinct non-empty choices of 1-4 pieces."""
    rng = random.Random(seed)
    cases = []
    for _ in range(count):
        prompt = hostile_text(rng, rng.randint(1, 4))
        choices: list[str] = []
        for _ in range(rng.randint(2, max_choices)):
            choice = hostile_text(rng, rng.randint(1, 4))
            if choice not in choices:
                choices.append(choice)
        cases.append((prompt, choices))
    return cases


@dataclass
class Tally:
    """What `check_cases` saw: scored cases, refusals by error type, and the worst difference to the reference."""

    scored: int = 0
    refused: dict = field(default_factory=dict)
    refused_as_reference: int = 0  # refusals where the reference refused too (not the backend's fault)
    worst: float = 0.0
    seconds: float = 0.0
    reasons: list = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.scored + sum(self.refused.values())


def check_cases(
    score: Callable,
    reference: Callable,
    cases: list,
    tolerance: float,
    typed: tuple,
    deadline: Optional[float] = None,
    alive: Callable[[], bool] = lambda: True,
) -> Tally:
    """Run ``score(prompt, choices) -> per-token log-probs`` on each case and compare with ``reference`` (the same
    signature). A case is scored (every value within ``tolerance`` of the reference, finite) or refused with an
    error of a ``typed`` class whose message is not empty; anything else fails with the case named. Stops at
    ``deadline`` (``time.monotonic()``); ``alive()`` is checked after every case (a server that died fails)."""
    tally = Tally()
    began = time.monotonic()
    for prompt, choices in cases:
        if deadline is not None and time.monotonic() > deadline:
            break
        try:
            expected = reference(prompt, choices)
        except typed:
            expected = None
        try:
            got = score(prompt, choices)
        except typed as error:
            assert str(error).strip(), f"a refusal without a reason: {type(error).__name__} for {(prompt, choices)!r}"
            name = type(error).__name__
            tally.refused[name] = tally.refused.get(name, 0) + 1
            tally.refused_as_reference += expected is None
            tally.reasons.append(str(error).splitlines()[0][:400])
        else:
            assert expected is not None, f"scored what the reference refuses: {(prompt, choices)!r}"
            assert len(got) == len(expected), (prompt, choices)
            for j, (a, e) in enumerate(zip(got, expected)):
                assert len(a) == len(e), (
                    f"choice {j} has {len(a)} tokens, the reference {len(e)}: {(prompt, choices)!r}"
                )
                for x, y in zip(a, e):
                    assert math.isfinite(x), f"choice {j}: {a} for {(prompt, choices)!r}"
                    tally.worst = max(tally.worst, abs(x - y))
                    assert abs(x - y) <= tolerance, f"choice {j}: {a} vs {e} for {(prompt, choices)!r}"
            tally.scored += 1
        assert alive(), f"the server died on {(prompt, choices)!r}"
    tally.seconds = time.monotonic() - began
    return tally
