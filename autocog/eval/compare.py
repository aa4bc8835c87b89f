"""Compare models on the same multiple-choice items: the baseline (e.g. the transformers checkpoint) and its
GGUF conversions and quantizations (``autocog eval --model A --model B ...``).

Every model scores the same items through the batch API (`autocog.eval.batch.choice_distributions`, one call
per model). The first model is the **reference**. Per model, the table gives:

* accuracy under each normalization (``sum``, ``mean``, ``char``; ``pmi`` on request) with its Wilson
  interval (`autocog.eval.evaluate.wilson_interval`), ranked by the loop `evaluate` uses
  (`autocog.eval.scores.ItemScores`: the same log-probs give `evaluate`'s and lm-eval's accuracies);
* ``|Δ logp|``: the mean over every (item, choice) of ``|log P_model(choice | prompt) − log P_ref(choice |
  prompt)|``, where ``log P(choice | prompt)`` is the sum of the choice's token log-probs (a per-choice
  total, so it stays defined when two models tokenize a choice differently);
* ``KL``: the mean over items of ``KL(P_ref ‖ P_model)`` (nats) between the choice distributions under the
  first normalization (``sum`` by default: softmax of the total log-probs);
* ``agree``: the fraction of items on which the model picks the reference's choice (first normalization);
* ``size`` on disk (the GGUF file, or every file of a transformers directory), load and scoring seconds.

Models: `LM` objects, or specs ``[BACKEND:]PATH``: a registered backend's name and a colon (``llama:``) picks
the backend; without one a ``.gguf`` file goes to ``llama`` and a directory to ``tf`` (``default_backend`` otherwise).

>>> table = compare(["hf_dir/", "model-f16.gguf", "model-q4_k_m.gguf"])     # doctest: +SKIP
>>> print(table.format()); table.plot("comparison.png")                   # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np

from autocog.core.normalization import check_normalization, log_softmax
from autocog.core.types import ChoiceResult
from autocog.eval.batch import DEFAULT_BATCH_SIZE, choice_distributions
from autocog.eval.evaluate import (
    DEFAULT_NORMALIZATIONS,
    DEFAULT_TEMPLATE,
    NORMALIZATION_NAMES,
    MCItem,
    check_char_length,
    load_items,
)
from autocog.eval.scores import ItemScores
from autocog.lm.base import LM
from autocog.lm.registry import BACKENDS

__all__ = ["Comparison", "ModelRow", "ModelSpec", "compare", "compare_results", "parse_model_spec", "size_on_disk"]


@dataclass
class ModelSpec:
    """Where a model comes from: ``backend`` and ``path`` (a file, directory or model name), and its label."""

    backend: str
    path: Optional[str] = None  # None: the backend's default model (the embedded SmolLM2 on tf and llama)
    label: str = ""

    def __post_init__(self):
        if not self.label:
            name = (Path(self.path).name or self.path) if self.path else "embedded SmolLM2"
            self.label = f"{name} ({self.backend})"

    def load(self, **kwargs: Any) -> LM:
        from autocog.lm import load

        return load(self.backend, model=self.path or None, **kwargs)


def parse_model_spec(text: str, default_backend: str = "tf") -> ModelSpec:
    """``[BACKEND:]PATH`` -> `ModelSpec` (see the module docstring for the inference rules).

    >>> parse_model_spec("llama:m.gguf"), parse_model_spec("m.gguf").backend
    (ModelSpec(backend='llama', path='m.gguf', label='m.gguf (llama)'), 'llama')
    """
    prefix, rest = BACKENDS.split_prefix(text)
    if prefix is not None:
        return ModelSpec(prefix, rest)
    if text.endswith(".gguf"):
        return ModelSpec("llama", text)
    if Path(text).is_dir():
        return ModelSpec("tf", text)
    return ModelSpec(default_backend, text)


def size_on_disk(path: Union[str, Path, None]) -> Optional[int]:
    """Bytes of a file, or of every file under a directory; None when ``path`` is not on disk."""
    if path is None:
        return None
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return None


def lm_path(lm: LM) -> Optional[str]:
    """The file or directory an `LM` was loaded from, when the backend tells (LLaMa, TfLM)."""
    model = getattr(lm, "model", None)
    path = getattr(model, "model_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
    return str(path) if path and Path(path).exists() else None


@dataclass
class ModelRow:
    """One model's line of the table (see the module docstring for each number)."""

    label: str
    accuracy: dict[str, dict]  # normalization -> {"accuracy", "correct", "n", "interval"}
    mean_abs_delta_logprob: float
    kl: float
    agreement: float
    size_bytes: Optional[int] = None
    load_seconds: Optional[float] = None
    score_seconds: Optional[float] = None
    backend: str = ""
    path: str = ""

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Comparison:
    """The comparison of `compare`: ``rows[0]`` is the reference. `format` (text), `to_markdown` (the model
    card's table), `to_dict`, `plot` (PNG)."""

    rows: list[ModelRow]
    normalizations: list[str]
    dataset: str = ""
    n_items: int = 0
    confidence: float = 0.95
    info: dict = field(default_factory=dict)

    def __getitem__(self, label: str) -> ModelRow:
        for row in self.rows:
            if row.label == label:
                return row
        raise KeyError(f"no model {label!r}: {', '.join(r.label for r in self.rows)}")

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "n": self.n_items,
            "confidence": self.confidence,
            "normalizations": self.normalizations,
            "reference": self.rows[0].label if self.rows else None,
            "models": [r.to_dict() for r in self.rows],
            **self.info,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Comparison:
        rows = [ModelRow(**{k: v for k, v in row.items()}) for row in data["models"]]
        for row in rows:
            for acc in row.accuracy.values():
                acc["interval"] = tuple(acc["interval"])
        known = {"dataset", "n", "confidence", "normalizations", "reference", "models"}
        return cls(
            rows,
            list(data["normalizations"]),
            data.get("dataset", ""),
            data.get("n", 0),
            data.get("confidence", 0.95),
            info={k: v for k, v in data.items() if k not in known},
        )

    def _cells(self, row: ModelRow) -> list[str]:
        size = "" if row.size_bytes is None else f"{row.size_bytes / 1e6:.1f} MB"
        cells = [row.label, size]
        for n in self.normalizations:
            a = row.accuracy[n]
            cells.append(f"{a['accuracy']:.3f} [{a['interval'][0]:.2f}, {a['interval'][1]:.2f}]")
        cells += [
            f"{row.mean_abs_delta_logprob:.4f}",
            f"{row.kl:.1e}" if row.kl else "0",
            f"{row.agreement:.3f}",
            "" if row.load_seconds is None else f"{row.load_seconds:.1f}",
            "" if row.score_seconds is None else f"{row.score_seconds:.1f}",
        ]
        return cells

    def _header(self) -> list[str]:
        return (
            ["model", "size"]
            + [NORMALIZATION_NAMES.get(n, n) for n in self.normalizations]
            + ["|Δ logp|", "KL", "agree", "load s", "score s"]
        )

    def format(self) -> str:
        """A fixed-width text table, the reference first."""
        header, rows = self._header(), [self._cells(r) for r in self.rows]
        widths = [max(len(c[i]) for c in [header] + rows) for i in range(len(header))]
        lines = [
            f"dataset: {self.dataset} ({self.n_items} questions); accuracy [{self.confidence:.0%} Wilson "
            f"CI]; |Δ logp|, KL ({self.normalizations[0]}) and agree against {self.rows[0].label}"
        ]
        for cells in [header] + rows:
            lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))))
        return "\n".join(lines)

    def to_markdown(self) -> str:
        """The same table in GitHub Markdown."""
        header = self._header()

        def row(cells: list[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

        lines = [row(header), "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
        lines += [row(self._cells(r)) for r in self.rows]
        return "\n".join(lines)

    def plot(self, path: Union[str, Path]) -> Path:
        """Write the comparison plot: accuracy with Wilson intervals per normalization (left), KL and
        |Δ logp| against the reference (right, log scale), model sizes in the labels."""
        return plot_comparison(self, path)


def compare_results(
    items: Sequence[MCItem],
    results: Sequence[Sequence[ChoiceResult]],
    labels: Sequence[str],
    normalizations: Sequence[str] = DEFAULT_NORMALIZATIONS,
    confidence: float = 0.95,
    meta: Optional[Sequence[dict]] = None,
    dataset: str = "",
    char_length: str = "choice",
) -> Comparison:
    """The `Comparison` of precomputed ``results[m][i]`` (the `ChoiceResult` of model m on item i, e.g. from
    `choice_distributions`); ``results[0]`` is the reference. ``meta[m]`` may give ``size_bytes``,
    ``load_seconds``, ``score_seconds``, ``backend``, ``path``. Each model's items are ranked by
    `ItemScores` (the loop of `evaluate`); ``char_length``: what ``char`` divides by (default the choice as
    written, lm-eval's acc_norm; see `autocog.eval.scores`)."""
    per_model = [ItemScores.from_results(items, r, normalizations, char_length) for r in results]
    normalizations = per_model[0].normalizations if per_model else list(normalizations)
    first = normalizations[0]
    reports = [{n: scored.result(n, confidence) for n in normalizations} for scored in per_model]
    reference, ref_predictions = per_model[0].scores[first], reports[0][first].predictions
    ref_totals = [r.logprobs for r in results[0]]
    rows = []
    for m, (model_results, scored, report) in enumerate(zip(results, per_model, reports)):
        totals = [r.logprobs for r in model_results]
        delta = float(np.mean(np.concatenate([np.abs(a - b) for a, b in zip(totals, ref_totals)])))
        kl = float(
            np.mean(
                [
                    np.sum(np.exp(log_softmax(p)) * (log_softmax(p) - log_softmax(q)))
                    for p, q in zip(reference, scored.scores[first])
                ]
            )
        )
        agree = float(np.mean(report[first].predictions == ref_predictions))
        extra = dict((meta or [{}] * len(results))[m])
        accuracy = {
            n: {"accuracy": r.accuracy, "correct": r.n_correct, "n": r.n, "interval": r.interval}
            for n, r in report.items()
        }
        rows.append(ModelRow(labels[m], accuracy, delta, max(kl, 0.0), agree, **extra))
    return Comparison(rows, list(normalizations), dataset, len(items), confidence, info={"char_length": char_length})


def compare(
    models: Sequence[Union[LM, str, ModelSpec]],
    dataset: Union[str, Path, Iterable[Any], None] = None,
    normalizations: Sequence[str] = DEFAULT_NORMALIZATIONS,
    labels: Optional[Sequence[str]] = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    confidence: float = 0.95,
    limit: Optional[int] = None,
    template: str = DEFAULT_TEMPLATE,
    default_backend: str = "tf",
    progress: Optional[bool] = None,
    load_kwargs: Optional[dict[str, dict]] = None,
    dataset_name: Optional[str] = None,
    char_length: str = "choice",
) -> Comparison:
    """Score ``dataset`` (default: the bundled easy_mc.jsonl) on every model and compare them to the first.

    ``models``: `LM` objects, `ModelSpec`, or ``[BACKEND:]PATH`` strings (loaded one at a time with
    ``load_kwargs[backend]``, e.g. ``{"llama": {"n_threads": 2}}``, scored, then released). ``labels``:
    names for the table (default: file name and backend). ``char_length``: what ``char`` divides by, as in
    `evaluate` (default the choice as written: lm-eval's acc_norm). Returns a `Comparison`.
    """
    if len(models) < 1:
        raise ValueError("compare needs at least one model")
    if labels is not None and len(labels) != len(models):
        raise ValueError(f"{len(labels)} labels for {len(models)} models")
    normalizations = [check_normalization(n) for n in normalizations]
    check_char_length(char_length)
    items = load_items(dataset, template=template, limit=limit)
    scoring = "pmi" if "pmi" in normalizations else "sum"
    specs = [m if isinstance(m, (LM, ModelSpec)) else parse_model_spec(str(m), default_backend) for m in models]
    results, meta, names = [], [], []
    for k, spec in enumerate(specs):
        start = time.perf_counter()
        lm = spec if isinstance(spec, LM) else spec.load(**(load_kwargs or {}).get(spec.backend, {}))
        loaded = time.perf_counter()
        out = choice_distributions(
            lm,
            [it.prompt for it in items],
            [it.choices for it in items],
            normalization=scoring,
            batch_size=batch_size,
            progress=progress,
        )
        done = time.perf_counter()
        path = spec.path if isinstance(spec, ModelSpec) else lm_path(lm)
        backend = spec.backend if isinstance(spec, ModelSpec) else type(lm).__name__
        meta.append(
            {
                "size_bytes": size_on_disk(path),
                "load_seconds": None if isinstance(spec, LM) else loaded - start,
                "score_seconds": done - loaded,
                "backend": backend,
                "path": str(path or ""),
            }
        )
        names.append(
            labels[k]
            if labels
            else spec.label
            if isinstance(spec, ModelSpec)
            else f"{Path(path).name if path else 'model ' + str(k)} ({backend})"
        )
        results.append(out)
        if not isinstance(spec, LM) and hasattr(lm, "close"):
            lm.close()
        del lm
    if len(set(names)) != len(names):
        names = [f"{k}: {name}" for k, name in enumerate(names)]
    name = dataset_name or (
        Path(dataset).name
        if isinstance(dataset, (str, Path))
        else "easy_mc.jsonl"
        if dataset is None
        else type(dataset).__name__
    )
    return compare_results(items, results, names, normalizations, confidence, meta, name, char_length)


def plot_comparison(comparison: Comparison, path: Union[str, Path]) -> Path:
    """The plot of `Comparison.plot` (matplotlib's Agg canvas: no display, no pyplot state)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("the comparison plot needs matplotlib: pip install autocog[eval]") from None
    path = Path(path)
    rows, norms = comparison.rows, comparison.normalizations

    def size(b: Optional[int]) -> str:
        return "" if b is None else f"\n{b / 1e6:.1f} MB" if b < 1e10 else f"\n{b / 1e9:.1f} GB"

    names = [r.label.replace(" (", "\n(") + size(r.size_bytes) for r in rows]
    fig = Figure(figsize=(max(8, 2.2 * len(rows) + 4), 4.8))
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    x = np.arange(len(rows))
    width = 0.8 / len(norms)
    for k, n in enumerate(norms):
        acc = np.array([r.accuracy[n]["accuracy"] for r in rows])
        low = acc - np.array([r.accuracy[n]["interval"][0] for r in rows])
        high = np.array([r.accuracy[n]["interval"][1] for r in rows]) - acc
        left.bar(
            x + (k - (len(norms) - 1) / 2) * width,
            acc,
            width,
            yerr=[low, high],
            capsize=3,
            label=NORMALIZATION_NAMES.get(n, n),
        )
    left.set(
        xticks=x,
        ylim=(0, 1.05),
        ylabel="accuracy",
        title=f"Accuracy on {comparison.dataset} ({comparison.n_items} questions, "
        f"{comparison.confidence:.0%} Wilson CI)",
    )
    left.set_xticklabels(names, fontsize=7)
    left.legend(fontsize=8, loc="upper center", ncol=len(norms), bbox_to_anchor=(0.5, -0.22))
    others = rows[1:] or rows  # the reference's drift against itself is 0: not drawn
    floor = 1e-7  # a zero drawn at the floor of the log axis
    xr = np.arange(len(others))
    right.bar(xr - 0.2, [max(r.kl, floor) for r in others], 0.4, label=f"KL(ref ‖ model), {norms[0]}")
    right.bar(xr + 0.2, [max(r.mean_abs_delta_logprob, floor) for r in others], 0.4, label="mean |Δ log P(choice)|")
    right.set(xticks=xr, yscale="log", ylabel="nats", title=f"Drift against {rows[0].label}")
    right.set_xticklabels(names[len(rows) - len(others) :], fontsize=7)
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
