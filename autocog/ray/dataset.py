"""One call for the common case: `score`, `complete` and `generate` map a ``ray.data.Dataset`` with the
matching class of `autocog.ray.actors` and return the mapped Dataset (lazy, streamed, like any
``map_batches``).

Ray's settings, keyword-only in every helper: ``concurrency`` (actors: an int, or ``(min, max)`` for an
autoscaling pool; each holds one LM), ``num_gpus`` / ``num_cpus`` (per actor), ``batch_size`` (rows per Ray
batch, which is also the backend batch) and ``map_kwargs`` (anything else for ``map_batches``: ``memory``,
``accelerator_type``, ``runtime_env``...). Every other keyword goes to `autocog.lm.load`.

>>> ds = ray.data.from_items([{"prompt": "2+2="}, {"prompt": "3+3="}])                  # doctest: +SKIP
>>> autocog.ray.score(ds, backend="llama", choices=["4", "6"], concurrency=2).take_all()  # doctest: +SKIP
[{'prompt': '2+2=', 'probs': [0.9, 0.1], 'prediction': 0, 'error': None}, ...]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import ray.data

from autocog.core.types import Stop
from autocog.lm.scoring import DEFAULT_BATCH_SIZE
from autocog.ray.actors import ChoiceScorer, Completer, Generator

__all__ = ["Actors", "complete", "generate", "score"]

Concurrency = Union[int, tuple[int, int]]


@dataclass
class Actors:
    """The actor pool of one ``map_batches``: ``concurrency`` actors (or ``(min, max)``), ``num_gpus`` and
    ``num_cpus`` each, ``batch_size`` rows per call, ``map_kwargs`` passed on as they are."""

    concurrency: Concurrency = 1
    num_gpus: Optional[float] = None
    num_cpus: Optional[float] = None
    batch_size: int = DEFAULT_BATCH_SIZE
    map_kwargs: dict = field(default_factory=dict)

    def compute(self) -> ray.data.ActorPoolStrategy:
        if isinstance(self.concurrency, tuple):
            low, high = self.concurrency
            return ray.data.ActorPoolStrategy(min_size=low, max_size=high)
        if isinstance(self.concurrency, bool) or not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise ValueError(f"concurrency must be a positive int or a (min, max) pair, got {self.concurrency!r}")
        return ray.data.ActorPoolStrategy(size=self.concurrency)

    def map(self, dataset: ray.data.Dataset, cls: type, constructor_kwargs: dict) -> ray.data.Dataset:
        """``dataset.map_batches(cls, ...)`` over pyarrow batches (plain values, no numpy round trip)."""
        return dataset.map_batches(
            cls,
            fn_constructor_kwargs=constructor_kwargs,
            batch_size=self.batch_size,
            batch_format="pyarrow",
            compute=self.compute(),
            num_gpus=self.num_gpus,
            num_cpus=self.num_cpus,
            **self.map_kwargs,
        )


def score(
    dataset: ray.data.Dataset,
    backend: str,
    model: Any = None,
    choices: Optional[Sequence[str]] = None,
    *,
    normalization: Optional[str] = None,
    prior: Optional[Sequence[float]] = None,
    end: Optional[str] = None,
    max_batch_tokens: Optional[int] = None,
    raise_errors: bool = False,
    concurrency: Concurrency = 1,
    num_gpus: Optional[float] = None,
    num_cpus: Optional[float] = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    map_kwargs: Optional[dict] = None,
    **load_kwargs: Any,
) -> ray.data.Dataset:
    """``dataset`` with ``"probs"``, ``"prediction"`` and ``"error"`` added by `ChoiceScorer` actors."""
    actors = Actors(concurrency, num_gpus, num_cpus, batch_size, dict(map_kwargs or {}))
    kwargs = dict(
        backend=backend,
        model=model,
        choices=choices,
        normalization=normalization,
        prior=prior,
        batch_size=batch_size,
        end=end,
        max_batch_tokens=max_batch_tokens,
        raise_errors=raise_errors,
    )
    return actors.map(dataset, ChoiceScorer, {**kwargs, **load_kwargs})


def complete(
    dataset: ray.data.Dataset,
    backend: str,
    model: Any = None,
    stop: Stop = "\n",
    *,
    complete_kwargs: Optional[dict] = None,
    raise_errors: bool = False,
    concurrency: Concurrency = 1,
    num_gpus: Optional[float] = None,
    num_cpus: Optional[float] = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    map_kwargs: Optional[dict] = None,
    **load_kwargs: Any,
) -> ray.data.Dataset:
    """``dataset`` with ``"completion"`` and ``"error"`` added by `Completer` actors."""
    actors = Actors(concurrency, num_gpus, num_cpus, batch_size, dict(map_kwargs or {}))
    kwargs = dict(backend=backend, model=model, stop=stop, complete_kwargs=complete_kwargs, raise_errors=raise_errors)
    return actors.map(dataset, Completer, {**kwargs, **load_kwargs})


def generate(
    dataset: ray.data.Dataset,
    backend: str,
    model: Any = None,
    *,
    output_type: Any,
    generate_kwargs: Optional[dict] = None,
    raise_errors: bool = False,
    concurrency: Concurrency = 1,
    num_gpus: Optional[float] = None,
    num_cpus: Optional[float] = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    map_kwargs: Optional[dict] = None,
    **load_kwargs: Any,
) -> ray.data.Dataset:
    """``dataset`` with ``"output"`` (JSON) and ``"error"`` added by `Generator` actors."""
    actors = Actors(concurrency, num_gpus, num_cpus, batch_size, dict(map_kwargs or {}))
    kwargs = dict(
        backend=backend,
        model=model,
        output_type=output_type,
        generate_kwargs=generate_kwargs,
        raise_errors=raise_errors,
    )
    return actors.map(dataset, Generator, {**kwargs, **load_kwargs})
