"""The callable classes handed to ``ray.data.Dataset.map_batches``: one LM per actor, built in the actor by
``autocog.lm.load(backend, model=model, **load_kwargs)`` (any registered backend: ``tf``, ``llama``, ``openai``
for a vLLM or llama.cpp server, a plugin's).

* `ChoiceScorer`: rows ``{"prompt", ["choices"], ["prior"]}`` get ``"probs"`` (floats, in choice order) and
  ``"prediction"`` (the best choice's index), through the scoring layer (`autocog.lm.scoring.score`): the
  rows of a Ray batch are one backend batch (split in ``batch_size`` prompts when the Ray batch is larger).
* `Completer`: rows ``{"prompt"}`` get ``"completion"`` (`LM.complete`).
* `Generator`: rows ``{"prompt"}`` get ``"output"``, the JSON of the value `autocog.generate` validated.

A prompt is a str or a list of chat messages (``{"role", "content"}`` dicts, rendered with the model's chat
template). Every class adds an ``"error"`` column: None for a row that went through, else
``"ErrorType: message"``, with the row's own outputs null; a bad row never stops the job (pass
``raise_errors=True`` to raise instead). When a batch fails, it is split in halves until the failing rows
stand alone, so the other rows are still scored in batches.

>>> ds = ray.data.from_items([{"prompt": "2+2="}, {"prompt": "3+3="}])                  # doctest: +SKIP
>>> ds.map_batches(ChoiceScorer, fn_constructor_kwargs=dict(backend="llama", choices=["4", "6"]),
...                batch_size=16, compute=ray.data.ActorPoolStrategy(size=2)).take_all()  # doctest: +SKIP
[{'prompt': '2+2=', 'probs': [0.9, 0.1], 'prediction': 0, 'error': None}, ...]
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

import pyarrow as pa

from autocog.core.types import ChoiceResult, ScoreRequest, Stop
from autocog.lm.base import LM
from autocog.lm.registry import load
from autocog.lm.scoring import DEFAULT_BATCH_SIZE, score
from autocog.ray.columns import Batch

__all__ = ["ChoiceScorer", "Completer", "Generator", "LMSpec", "describe", "score_rows"]

PROMPT, CHOICES, PRIOR, ERROR = "prompt", "choices", "prior", "error"
PROBS, PREDICTION, COMPLETION, OUTPUT = "probs", "prediction", "completion", "output"

Outcome = Union[Any, Exception]  # a row's value, or what went wrong with it


@dataclass
class LMSpec:
    """How an actor builds its LM: ``load(backend, model=model, **load_kwargs)``."""

    backend: str
    model: Any = None
    load_kwargs: dict = field(default_factory=dict)

    def build(self) -> LM:
        return load(self.backend, model=None if self.model is None else str(self.model), **self.load_kwargs)


def describe(error: BaseException) -> str:
    """The ``"error"`` cell of a failed row: ``"ErrorType: message"``."""
    return f"{type(error).__name__}: {error}"


def score_rows(
    lm: LM, requests: Sequence[ScoreRequest], batch_size: int, max_batch_tokens: Optional[int] = None
) -> list[Outcome]:
    """One `ChoiceResult` or exception per request, in order: ``batch_size`` requests per scoring-layer call;
    a call that fails is split in halves until each failing request stands alone."""
    out: list[Outcome] = []
    for start in range(0, len(requests), batch_size):
        out.extend(_score_or_split(lm, list(requests[start : start + batch_size]), max_batch_tokens))
    return out


def _score_or_split(lm: LM, requests: list[ScoreRequest], max_batch_tokens: Optional[int]) -> list[Outcome]:
    try:
        return list(score(lm, requests, batch_size=len(requests), progress=False, max_batch_tokens=max_batch_tokens))
    except Exception as error:
        if len(requests) == 1:
            return [error]
        half = len(requests) // 2
        return _score_or_split(lm, requests[:half], max_batch_tokens) + _score_or_split(
            lm, requests[half:], max_batch_tokens
        )


def _each(prompts: Sequence[Any], call: Callable[[Any], Any], workers: int) -> list[Outcome]:
    """``call(prompt)`` or its exception for each prompt, ``workers`` at a time (a server's ``concurrency``)."""

    def one(prompt: Any) -> Outcome:
        try:
            return call(prompt)
        except Exception as error:
            return error

    if workers <= 1 or len(prompts) <= 1:
        return [one(p) for p in prompts]
    with ThreadPoolExecutor(min(workers, len(prompts)), thread_name_prefix="autocog-ray") as pool:
        return list(pool.map(one, prompts))


def _errors(outcomes: Sequence[Outcome], raise_errors: bool) -> list[Optional[str]]:
    for outcome in outcomes:
        if raise_errors and isinstance(outcome, Exception):
            raise outcome
    return [describe(o) if isinstance(o, Exception) else None for o in outcomes]


class ChoiceScorer:
    """A ``map_batches`` class: the probability of each choice for each row's prompt.

    ``choices``: shared by every row, unless a row has its own ``"choices"`` (a list of str; null: the shared
    ones). ``normalization``, ``prior`` (one weight per choice; a row's ``"prior"`` wins), ``end``: as in
    `autocog.batch.predict_proba`. ``batch_size``: prompts per backend batch (set map_batches' ``batch_size``
    to the same, so that one Ray batch is one backend batch). ``max_batch_tokens``: the token budget of one
    packed pass. ``load_kwargs`` go to `autocog.lm.load` (``n_threads``, ``device``, ``base_url``...).

    Adds ``"probs"`` (list of float, summing to 1), ``"prediction"`` (int) and ``"error"``.
    """

    def __init__(
        self,
        backend: str,
        model: Any = None,
        choices: Optional[Sequence[str]] = None,
        normalization: Optional[str] = None,
        prior: Optional[Sequence[float]] = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        *,
        end: Optional[str] = None,
        max_batch_tokens: Optional[int] = None,
        raise_errors: bool = False,
        **load_kwargs: Any,
    ):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.choices = None if choices is None else list(choices)
        self.normalization = normalization
        self.prior = None if prior is None else list(prior)
        self.batch_size = batch_size
        self.end = end
        self.max_batch_tokens = max_batch_tokens
        self.raise_errors = raise_errors
        self.lm = LMSpec(backend, model, load_kwargs).build()

    def request(self, prompt: Any, choices: Any, prior: Any) -> ScoreRequest:
        """A row's `ScoreRequest` (its own choices and prior, else the shared ones); checked by the scoring layer."""
        choices = self.choices if choices is None else choices
        if choices is None:
            raise ValueError("the row has no 'choices' and the scorer was given none (choices=...)")
        return ScoreRequest(prompt, choices, self.normalization, self.end, self.prior if prior is None else prior)

    def __call__(self, data: Any) -> Any:
        batch = Batch(data)
        n = len(batch)
        prompts = batch.column(PROMPT)
        choices = batch.column_or(CHOICES)
        priors = batch.column_or(PRIOR)
        outcomes: list[Outcome] = [None] * n
        requests, where = [], []
        for i, row in enumerate(zip(prompts, choices, priors)):
            try:
                requests.append(self.request(*row))
                where.append(i)
            except Exception as error:
                outcomes[i] = error
        for i, outcome in zip(where, score_rows(self.lm, requests, self.batch_size, self.max_batch_tokens)):
            outcomes[i] = outcome
        errors = _errors(outcomes, self.raise_errors)
        results = [o if isinstance(o, ChoiceResult) else None for o in outcomes]
        return batch.with_columns(
            {
                PROBS: [None if r is None else [float(p) for p in r.probs] for r in results],
                PREDICTION: [None if r is None else int(r.index) for r in results],
                ERROR: errors,
            },
            types={PROBS: pa.list_(pa.float64()), PREDICTION: pa.int64(), ERROR: pa.string()},
        )


class Completer:
    """A ``map_batches`` class: ``lm.complete(prompt, stop=stop, **complete_kwargs)`` for each row.

    ``complete_kwargs``: the settings of `LM.complete` (``max_tokens``, ``temperature``, ``seed``...). Rows are
    completed one after the other, or ``lm.concurrency`` at a time on a server (`OpenAI`'s ``concurrency``).
    Adds ``"completion"`` (str) and ``"error"``.
    """

    def __init__(
        self,
        backend: str,
        model: Any = None,
        stop: Stop = "\n",
        complete_kwargs: Optional[dict] = None,
        *,
        raise_errors: bool = False,
        **load_kwargs: Any,
    ):
        self.stop = stop
        self.complete_kwargs = dict(complete_kwargs or {})
        self.raise_errors = raise_errors
        self.lm = LMSpec(backend, model, load_kwargs).build()

    def complete(self, prompt: Any) -> str:
        return self.lm.complete(prompt, stop=self.stop, **self.complete_kwargs)

    def __call__(self, data: Any) -> Any:
        batch = Batch(data)
        outcomes = _each(batch.column(PROMPT), self.complete, getattr(self.lm, "concurrency", 1))
        errors = _errors(outcomes, self.raise_errors)
        texts = [None if e is not None else o for o, e in zip(outcomes, errors)]
        return batch.with_columns(
            {COMPLETION: texts, ERROR: errors}, types={COMPLETION: pa.string(), ERROR: pa.string()}
        )


class Generator:
    """A ``map_batches`` class: ``autocog.generate(lm, output_type, prompt, **generate_kwargs)`` for each row.

    ``output_type``: what `autocog.generate` takes (a pydantic model, a JSON schema dict, ``autocog.Regex``...;
    it must pickle: a class importable by the actors, or a schema). ``generate_kwargs``: ``max_tokens``,
    ``temperature``, ``seed``... Adds ``"output"`` (the JSON text of the validated value: ``json.loads`` gives
    it back; a regex's text is a JSON string) and ``"error"``.
    """

    def __init__(
        self,
        backend: str,
        model: Any = None,
        *,
        output_type: Any,
        generate_kwargs: Optional[dict] = None,
        raise_errors: bool = False,
        **load_kwargs: Any,
    ):
        from autocog.structured.types import as_output

        as_output(output_type)  # a bad type fails when the actor starts, not on every row
        self.output_type = output_type
        self.generate_kwargs = dict(generate_kwargs or {})
        self.raise_errors = raise_errors
        self.lm = LMSpec(backend, model, load_kwargs).build()

    def generate(self, prompt: Any) -> str:
        import pydantic_core

        from autocog.structured.generate import generate

        value = generate(self.lm, self.output_type, prompt, **self.generate_kwargs)
        return pydantic_core.to_json(value).decode()

    def __call__(self, data: Any) -> Any:
        batch = Batch(data)
        outcomes = _each(batch.column(PROMPT), self.generate, getattr(self.lm, "concurrency", 1))
        errors = _errors(outcomes, self.raise_errors)
        texts = [None if e is not None else o for o, e in zip(outcomes, errors)]
        return batch.with_columns({OUTPUT: texts, ERROR: errors}, types={OUTPUT: pa.string(), ERROR: pa.string()})
