"""Search completion settings (temperature, top_p, top_k, min_p, max_tokens, stop, seed...) on a dataset, for any backend.

`search` runs ``lm.complete`` over every item of a dataset for each setting of a grid (`ParameterGrid`) or
of a random sample (`ParameterSampler`), scores the completions with a metric, and returns a table sorted
by mean score with the best settings.

Reproducible: random settings are drawn from ``seed``; every completion gets a seed too (the setting's
``seed`` if it has one, else the search's ``seed``), offset by the item's index so that items draw
independently. The same call gives the same table.

Data: a list of ``(prompt, reference)`` pairs, mappings with ``prompt`` and ``reference`` (or ``answer`` /
``target``), or a JSONL path of such mappings. The metric gets ``(prediction, reference)`` and returns a
float, higher is better (``greater_is_better=False`` for losses); the prediction is the completion without
the stop string it ended on. Built-in metrics: ``"exact"``, ``"contains"``, ``"startswith"``, ``"f1"``.

>>> result = search(lm, [("2+2=", "4"), ("3+3=", "6")], "exact",
...                 grid={"temperature": [0.0, 0.7], "max_tokens": [1, 4]}, seed=0)   # doctest: +SKIP
>>> result.best_params                                                                # doctest: +SKIP
{'max_tokens': 1, 'temperature': 0.0}
>>> print(result.format())                                                             # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import json
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np

from autocog.core.stops import as_stop_list
from autocog.lm.base import LM

Metric = Callable[[str, Any], float]
Grid = Union[Mapping[str, Sequence[Any]], Sequence[Mapping[str, Sequence[Any]]]]

__all__ = ["METRICS", "ParameterGrid", "ParameterSampler", "SearchResult", "SearchRow", "load_pairs", "search"]


def _check_grid(grid: Grid, what: str) -> list[dict]:
    grids = [grid] if isinstance(grid, Mapping) else list(grid)
    if not grids:
        raise ValueError(f"the {what} is empty")
    out = []
    for g in grids:
        if not isinstance(g, Mapping):
            raise TypeError(f"a {what} is a dict of lists (or a list of such dicts), got {type(g).__name__}")
        for key, values in g.items():
            if not isinstance(key, str):
                raise TypeError(f"{what} keys are setting names, got {key!r}")
            if isinstance(values, (str, bytes)) or not (
                isinstance(values, Sequence) or hasattr(values, "rvs") or callable(values)
            ):
                raise TypeError(
                    f"{what} entry {key!r} must be a list of values (wrap a single value in a list), got {values!r}"
                )
            if isinstance(values, Sequence) and len(values) == 0:
                raise ValueError(f"{what} entry {key!r} has no values")
        out.append(dict(g))
    return out


class ParameterGrid:
    """Every combination of a dict of lists, or of each dict in a list of them (scikit-learn's
    ``ParameterGrid``, without scikit-learn). Keys are taken in sorted order, the last one varying fastest.

    >>> list(ParameterGrid({"temperature": [0.0, 1.0], "top_k": [5]}))
    [{'temperature': 0.0, 'top_k': 5}, {'temperature': 1.0, 'top_k': 5}]
    >>> len(ParameterGrid([{"top_p": [0.9, 1.0]}, {"top_k": [1, 5, 10]}])), ParameterGrid({"top_k": [1, 5]})[1]
    (5, {'top_k': 5})
    """

    def __init__(self, param_grid: Grid):
        self.grids = _check_grid(param_grid, "parameter grid")
        for g in self.grids:
            for key, values in g.items():
                if not isinstance(values, Sequence):
                    raise TypeError(f"grid entry {key!r} must be a list of values, got {values!r}")

    def __iter__(self) -> Iterator[dict]:
        for g in self.grids:
            keys = sorted(g)
            for values in itertools.product(*(g[k] for k in keys)):
                yield dict(zip(keys, values))

    def __len__(self) -> int:
        return sum(math.prod(len(v) for v in g.values()) for g in self.grids)

    def __getitem__(self, index: int) -> dict:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"grid index {index} out of range for {len(self)} settings")
        for g in self.grids:
            keys = sorted(g)
            size = math.prod(len(g[k]) for k in keys)
            if index >= size:
                index -= size
                continue
            out = {}
            for key in reversed(keys):  # the last key varies fastest
                index, k = divmod(index, len(g[key]))
                out[key] = g[key][k]
            return {k: out[k] for k in keys}
        raise AssertionError("unreachable")


class ParameterSampler:
    """``n_iter`` random settings from a dict (or list of dicts) of lists, distributions with
    ``rvs(random_state=...)`` (e.g. ``scipy.stats.uniform(0, 1)``) or callables ``f(rng) -> value``
    (``rng`` a ``numpy.random.Generator``). Lists are sampled uniformly. When every entry is a list, settings
    are drawn without repetition (at most the grid's size). Same ``seed``, same settings.

    >>> list(ParameterSampler({"temperature": [0.0, 0.5, 1.0]}, n_iter=2, seed=0))
    [{'temperature': 0.5}, {'temperature': 1.0}]
    >>> s = ParameterSampler({"temperature": lambda rng: round(float(rng.uniform(0, 2)), 2)}, n_iter=2, seed=1)
    >>> len(list(s))
    2
    """

    def __init__(self, param_distributions: Grid, n_iter: int, seed: Optional[int] = None):
        self.distributions = _check_grid(param_distributions, "parameter distribution")
        if not isinstance(n_iter, int) or n_iter < 1:
            raise ValueError(f"n_iter must be a positive int, got {n_iter!r}")
        self.n_iter = n_iter
        self.seed = seed

    def _all_lists(self) -> bool:
        return all(isinstance(v, Sequence) for d in self.distributions for v in d.values())

    def __len__(self) -> int:
        return min(self.n_iter, len(ParameterGrid(self.distributions))) if self._all_lists() else self.n_iter

    def __iter__(self) -> Iterator[dict]:
        rng = np.random.default_rng(self.seed)
        if self._all_lists():
            grid = ParameterGrid(self.distributions)
            for index in rng.choice(len(grid), size=len(self), replace=False):
                yield grid[int(index)]
            return
        for _ in range(self.n_iter):
            d = self.distributions[int(rng.integers(len(self.distributions)))]
            out = {}
            for key in sorted(d):
                values = d[key]
                if hasattr(values, "rvs"):
                    value = values.rvs(random_state=int(rng.integers(2**31)))
                    out[key] = value.item() if hasattr(value, "item") else value
                elif callable(values):
                    out[key] = values(rng)
                else:
                    out[key] = values[int(rng.integers(len(values)))]
            yield out


# --- metrics -------------------------------------------------------------------------------------------


def exact_match(prediction: str, reference: Any) -> float:
    """1.0 when the prediction equals the reference, surrounding whitespace ignored."""
    return float(prediction.strip() == str(reference).strip())


def contains(prediction: str, reference: Any) -> float:
    """1.0 when the reference (stripped) occurs in the prediction."""
    return float(str(reference).strip() in prediction)


def startswith(prediction: str, reference: Any) -> float:
    """1.0 when the prediction, left-stripped, starts with the reference (stripped)."""
    return float(prediction.lstrip().startswith(str(reference).strip()))


def token_f1(prediction: str, reference: Any) -> float:
    """F1 of the whitespace-separated, lower-cased words (SQuAD-style, without the article stripping)."""
    pred, ref = prediction.lower().split(), str(reference).lower().split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


METRICS: dict[str, Metric] = {"exact": exact_match, "contains": contains, "startswith": startswith, "f1": token_f1}


def get_metric(metric: Union[str, Metric]) -> Metric:
    if callable(metric):
        return metric
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: expected one of {', '.join(METRICS)} or a function")
    return METRICS[metric]


# --- data ----------------------------------------------------------------------------------------------


def load_pairs(data: Union[str, Path, Iterable[Any]], limit: Optional[int] = None) -> list[tuple[str, Any]]:
    """``(prompt, reference)`` pairs from pairs, mappings (``prompt`` + ``reference`` / ``answer`` /
    ``target``; a ``question`` is formatted as ``"Question: {question}\\nAnswer:"``) or a JSONL path."""
    if isinstance(data, (str, Path)):
        path = Path(data)
        if not path.is_file():
            raise FileNotFoundError(f"dataset file not found: {path}")
        records: list[Any] = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        data = records
    pairs: list[tuple[str, Any]] = []
    for i, record in enumerate(data):
        if limit is not None and len(pairs) >= limit:
            break
        if isinstance(record, Mapping):
            prompt = record.get("prompt")
            if prompt is None and record.get("question") is not None:
                prompt = f"Question: {record['question']}\nAnswer:"
            reference = next((record[k] for k in ("reference", "answer", "target") if k in record), None)
            if (
                isinstance(reference, int)
                and isinstance(record.get("choices"), list)
                and 0 <= reference < len(record["choices"])
            ):
                reference = record["choices"][reference]  # a multiple-choice record: the right choice's text
        elif isinstance(record, (tuple, list)) and len(record) == 2:
            prompt, reference = record
        else:
            raise ValueError(f"item {i}: expected a (prompt, reference) pair or a mapping, got {record!r}")
        if not isinstance(prompt, str) or reference is None:
            raise ValueError(f"item {i}: needs a str 'prompt' (or 'question') and a 'reference' ('answer' / 'target')")
        pairs.append((prompt, reference))
    if not pairs:
        raise ValueError("the dataset holds no items")
    return pairs


# --- search --------------------------------------------------------------------------------------------


@dataclass
class SearchRow:
    """One setting: ``params``, its mean ``score``, the per-item ``scores`` and ``predictions``, and ``seconds``."""

    params: dict
    score: float
    scores: list[float]
    predictions: list[str]
    seconds: float
    rank: int = 0


@dataclass
class SearchResult:
    """Rows sorted best first (ties keep the search order); ``best_params`` / ``best_score`` of the first."""

    rows: list[SearchRow]
    metric: str
    greater_is_better: bool = True
    info: dict = field(default_factory=dict)

    @property
    def best(self) -> SearchRow:
        return self.rows[0]

    @property
    def best_params(self) -> dict:
        return dict(self.rows[0].params)

    @property
    def best_score(self) -> float:
        return self.rows[0].score

    def to_dict(self) -> dict:
        return {
            "metric": self.metric,
            "greater_is_better": self.greater_is_better,
            "best_params": self.best_params,
            "best_score": self.best_score,
            **self.info,
            "rows": [
                {
                    "rank": r.rank,
                    "score": r.score,
                    "seconds": r.seconds,
                    "params": r.params,
                    "predictions": r.predictions,
                }
                for r in self.rows
            ],
        }

    def format(self, max_rows: Optional[int] = None) -> str:
        """The table, best first, then the best settings."""
        keys = sorted({k for r in self.rows for k in r.params})
        shown = self.rows if max_rows is None else self.rows[:max_rows]
        cells = [
            [str(r.rank), f"{r.score:.4f}", f"{r.seconds:.2f}"]
            + [repr(r.params.get(k, "-")) if k in r.params else "-" for k in keys]
            for r in shown
        ]
        header = ["rank", self.metric, "seconds"] + keys
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
        if max_rows is not None and len(self.rows) > max_rows:
            lines.append(f"... {len(self.rows) - max_rows} more")
        lines.append(f"best: {json.dumps(self.best_params)} ({self.metric} = {self.best_score:.4f})")
        return "\n".join(lines)


def _strip_stop(text: str, stops: list[str]) -> str:
    for s in stops:
        if text.endswith(s):
            return text[: -len(s)]
    return text


def search(
    lm: LM,
    data: Union[str, Path, Iterable[Any]],
    metric: Union[str, Metric] = "exact",
    grid: Optional[Grid] = None,
    distributions: Optional[Grid] = None,
    n_iter: int = 10,
    seed: Optional[int] = 0,
    base: Optional[Mapping[str, Any]] = None,
    greater_is_better: bool = True,
    limit: Optional[int] = None,
    progress: Optional[bool] = None,
) -> SearchResult:
    """Score every setting of ``grid`` (all combinations) or ``n_iter`` draws from ``distributions``.

    ``data``: see the module docstring; ``metric``: a name in `METRICS` or ``f(prediction, reference) ->
    float``; ``base``: settings shared by every run (a setting overrides them); ``stop`` defaults to
    ``"\\n"`` as in `LM.complete` (``None``: no stop string). ``seed``: draws the random settings and,
    offset by the item's index, seeds every completion whose setting has no ``seed``. Returns a
    `SearchResult`, best first.

    >>> search(lm, [("1, 2, 3,", "4")], "contains", grid={"max_tokens": [1, 3]}).best_params   # doctest: +SKIP
    {'max_tokens': 3}
    """
    if grid is not None and distributions is None:
        settings = list(ParameterGrid(grid))
    elif distributions is not None and grid is None:
        settings = list(ParameterSampler(distributions, n_iter, seed))
    else:
        raise ValueError("give exactly one of grid= (every combination) or distributions= (random search)")
    score_fn = get_metric(metric)
    pairs = load_pairs(data, limit)
    metric_name = metric if isinstance(metric, str) else getattr(metric, "__name__", "score")
    bar = None
    if progress or (progress is None and len(settings) * len(pairs) >= 200 and sys.stderr.isatty()):
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(settings) * len(pairs), unit="completion", desc="search", file=sys.stderr)
        except ImportError:  # pragma: no cover
            bar = None
    rows = []
    try:
        for params in settings:
            kwargs = {**(base or {}), **params}
            stop = kwargs.pop("stop", "\n")
            stops = as_stop_list(stop)
            item_seed = kwargs.pop("seed", seed)
            start = time.perf_counter()
            predictions, scores = [], []
            for i, (prompt, reference) in enumerate(pairs):
                run_seed = None if item_seed is None else int(item_seed) + i
                text = lm.complete(prompt, stop=stop, seed=run_seed, **kwargs)
                prediction = _strip_stop(text, stops)
                predictions.append(prediction)
                scores.append(float(score_fn(prediction, reference)))
                if bar is not None:
                    bar.update(1)
            rows.append(
                SearchRow(dict(params), float(np.mean(scores)), scores, predictions, time.perf_counter() - start)
            )
    finally:
        if bar is not None:
            bar.close()
    rows.sort(key=lambda r: -r.score if greater_is_better else r.score)  # stable: ties keep the search order
    for rank, row in enumerate(rows, start=1):
        row.rank = rank
    return SearchResult(
        rows,
        metric_name,
        greater_is_better,
        {
            "n_items": len(pairs),
            "n_settings": len(settings),
            "seed": seed,
            "mode": "grid" if grid is not None else "random",
        },
    )
