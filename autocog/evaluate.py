"""Multiple-choice evaluation: accuracy under several normalizations, confidence intervals, a confusion
table and a calibration plot (``autocog eval`` on the command line).

Data: JSONL files (one object a line) or Hugging Face ``datasets`` objects (any iterable of mappings; the
``datasets`` package is only needed to load a dataset by name). A record has

* ``question`` (formatted with ``template``, default ``"Question: {question}\\nAnswer:"``; every choice then
  gets a leading space unless it starts with whitespace) **or** ``prompt`` (used verbatim, with the choices
  verbatim);
* ``choices``: a list of strings;
* ``answer``: the index of the right choice (an int), or the right choice's text.

Scores: each question is scored once (`autocog.batch`), then ranked under each normalization from the
same per-token log-probs: ``sum`` (total log-prob: lm-eval's ``acc``), ``mean`` (per token: CAPPr's
default), ``char`` (per character: lm-eval's ``acc_norm``), and ``pmi`` on request.

Which characters ``char`` counts (``char_length``): by default (``"choice"``) the choice as the record
writes it, which is what lm-eval's ``acc_norm`` divides by: for a ``question`` record the raw choice
(``"Paris"``, 5 characters, although ``" Paris"`` is scored, as lm-eval's ``target_delimiter`` is), for a
``prompt`` record the choice verbatim. ``"continuation"`` counts the scored continuation, delimiter space
included (6 for ``" Paris"``), as ``lm.choice_distribution(..., normalization="char")`` does. The interval is the **Wilson score interval** (default 95%). Calibration: the chosen
choice's probability (softmax of the normalized scores) against accuracy, in equal-width bins, with the
expected calibration error (ECE).

The package ships `EXAMPLE_DATASET`, 32 easy general-knowledge questions written for this project.

>>> report = evaluate(lm, EXAMPLE_DATASET)                          # doctest: +SKIP
>>> report["char"].accuracy, report["char"].interval                # doctest: +SKIP
(0.84, (0.68, 0.93))
>>> report.plot("calibration.png")                                  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from .lm.scoring import DEFAULT_BATCH_SIZE, ScoreRequest, score
from .lm.lm import LM, check_normalization, normalize_scores, softmax

DEFAULT_TEMPLATE = "Question: {question}\nAnswer:"
DEFAULT_NORMALIZATIONS = ("sum", "mean", "char")
CHAR_LENGTHS = ("choice", "continuation")
FIELDS = ("question", "prompt", "choices", "answer", "id")
NORMALIZATION_NAMES = {"sum": "sum (acc)", "mean": "mean/token", "char": "char (acc_norm)", "pmi": "pmi"}
EXAMPLE_DATASET = Path(__file__).resolve().parent / "data" / "easy_mc.jsonl"

__all__ = [
    "MCItem", "NormalizationResult", "EvalReport", "evaluate", "load_items", "load_jsonl", "record_to_item",
    "wilson_interval", "calibration_bins", "EXAMPLE_DATASET", "DEFAULT_TEMPLATE",
]


@dataclass
class MCItem:
    """One multiple-choice question, ready to score: ``lm.choose(prompt, choices)`` should be ``answer``."""

    prompt: str
    choices: list[str]
    answer: int
    id: Optional[str] = None
    raw_choices: Optional[list[str]] = None  # as the record wrote them (no delimiter space), for char lengths

    def char_texts(self, char_length: str = "choice") -> list[str]:
        """The texts whose characters ``char`` divides by: the choices as written (``"choice"``, lm-eval's
        acc_norm) or as scored (``"continuation"``, delimiter space included).

        >>> MCItem("Q:", [" Paris", " Rome"], 0, raw_choices=["Paris", "Rome"]).char_texts()
        ['Paris', 'Rome']
        """
        check_char_length(char_length)
        return list(self.raw_choices if char_length == "choice" and self.raw_choices is not None else self.choices)


def check_char_length(char_length: str) -> str:
    if char_length not in CHAR_LENGTHS:
        raise ValueError(f"char_length must be one of {', '.join(CHAR_LENGTHS)}, got {char_length!r}")
    return char_length


# --- loading -------------------------------------------------------------------------------------------


def record_to_item(record: Mapping[str, Any], template: str = DEFAULT_TEMPLATE, index: int = 0,
                   fields: Optional[Mapping[str, str]] = None) -> MCItem:
    """An `MCItem` from a record with ``question`` or ``prompt``, ``choices`` and ``answer`` (see module doc).

    ``fields`` renames the record's columns, e.g. ``{"question": "ctx", "choices": "endings", "answer":
    "label"}``. ``choices`` may also be a mapping with ``text`` (and ``label``) lists, as in ARC and
    CommonsenseQA, where ``answer`` may then be a label (``"B"``).

    >>> record_to_item({"question": "2+2?", "choices": ["4", "5"], "answer": "4"})
    MCItem(prompt='Question: 2+2?\\nAnswer:', choices=[' 4', ' 5'], answer=0, id='0', raw_choices=['4', '5'])
    """
    where = f"record {index}"
    if not isinstance(record, Mapping):
        raise ValueError(f"{where}: expected an object, got {type(record).__name__}")
    if fields:
        record = {**record, **{ours: record[theirs] for ours, theirs in fields.items() if theirs in record}}
    choices = record.get("choices")
    labels: list[str] = []
    if isinstance(choices, Mapping) and "text" in choices:
        labels = [str(x) for x in choices.get("label", [])]
        choices = choices["text"]
    if not isinstance(choices, (list, tuple)) or not choices or not all(isinstance(c, str) for c in choices):
        raise ValueError(f"{where}: 'choices' must be a non-empty list of strings")
    raw = list(choices)
    written = None
    if "prompt" in record and record["prompt"] is not None:
        prompt, choices = str(record["prompt"]), raw
    elif "question" in record and record["question"] is not None:
        prompt = template.format(question=record["question"])
        choices, written = [c if c[:1].isspace() else " " + c for c in raw], raw
    else:
        raise ValueError(f"{where}: needs a 'question' or a 'prompt' field")
    answer = record.get("answer")
    if isinstance(answer, bool) or answer is None:
        raise ValueError(f"{where}: 'answer' must be a choice index or a choice's text, got {answer!r}")
    if isinstance(answer, str):
        if answer in raw:
            answer = raw.index(answer)
        elif answer in labels:
            answer = labels.index(answer)
        elif answer.strip().isdigit():
            answer = int(answer.strip())
        else:
            raise ValueError(f"{where}: answer {answer!r} is not one of the choices")
    try:
        answer = int(answer)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: 'answer' must be a choice index or a choice's text, got {answer!r}") from None
    if not 0 <= answer < len(choices):
        raise ValueError(f"{where}: answer index {answer} is out of range for {len(choices)} choices")
    return MCItem(prompt, choices, answer, str(record.get("id", index)), written)


def load_jsonl(path: Union[str, Path]) -> list[dict]:
    """The records of a JSONL file (blank lines skipped); a ValueError names the first bad line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset file not found: {path}")
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from None
    return records


def load_items(source: Union[str, Path, Iterable[Any], None] = None, template: str = DEFAULT_TEMPLATE,
               limit: Optional[int] = None, split: Optional[str] = None, config: Optional[str] = None,
               fields: Optional[Mapping[str, str]] = None) -> list[MCItem]:
    """Questions from ``source``: a JSONL path (default: `EXAMPLE_DATASET`), ``"hf:NAME"`` (loaded with
    ``datasets.load_dataset(NAME, config, split=split)``), or any iterable of records / `MCItem` (a
    Hugging Face ``Dataset`` object, a list of dicts). ``limit`` keeps the first N; ``fields`` renames
    columns (see `record_to_item`)."""
    unknown = sorted(set(fields or {}) - set(FIELDS))
    if unknown:
        raise ValueError(f"fields: unknown field(s) {', '.join(unknown)}: expected {', '.join(FIELDS)}")
    if source is None:
        source = EXAMPLE_DATASET
    if isinstance(source, str) and source.startswith("hf:"):
        try:
            import datasets
        except ImportError:
            raise ImportError("loading a Hugging Face dataset by name needs the 'datasets' package: "
                              "pip install datasets") from None
        source = datasets.load_dataset(source[3:], config, split=split or "test")
    if isinstance(source, (str, Path)):
        records: Iterable[Any] = load_jsonl(source)
    elif isinstance(source, Iterable):
        records = source
    else:
        raise TypeError(f"a dataset is a JSONL path or an iterable of records, not {type(source).__name__}")
    items = []
    for i, record in enumerate(records):
        if limit is not None and len(items) >= limit:
            break
        items.append(record if isinstance(record, MCItem) else record_to_item(record, template, i, fields))
    if not items:
        raise ValueError("the dataset holds no questions")
    return items


# --- statistics ----------------------------------------------------------------------------------------


def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``correct / n`` (good at small n and near 0 or 1).

    >>> [round(x, 3) for x in wilson_interval(8, 10)]
    [0.49, 0.943]
    """
    if n <= 0:
        return (0.0, 1.0)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    p = correct / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    low = 0.0 if correct == 0 else max(0.0, center - half)   # exact at the ends (rounding aside)
    high = 1.0 if correct == n else min(1.0, center + half)
    return (low, high)


def calibration_bins(confidences: Sequence[float], correct: Sequence[bool], bins: int = 10) -> list[dict]:
    """Equal-width bins over [0, 1] of the chosen probability: per non-empty bin its range, ``count``,
    mean ``confidence`` and ``accuracy``.

    >>> calibration_bins([0.9, 0.95, 0.3], [True, False, False], bins=2)
    [{'low': 0.0, 'high': 0.5, 'count': 1, 'confidence': 0.3, 'accuracy': 0.0}, {'low': 0.5, 'high': 1.0, 'count': 2, 'confidence': 0.925, 'accuracy': 0.5}]
    """
    conf = np.asarray(confidences, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        sel = which == b
        if sel.any():
            out.append({"low": b / bins, "high": (b + 1) / bins, "count": int(sel.sum()),
                        "confidence": round(float(conf[sel].mean()), 12), "accuracy": float(ok[sel].mean())})
    return out


def expected_calibration_error(bins: list[dict]) -> float:
    total = sum(b["count"] for b in bins)
    return sum(b["count"] / total * abs(b["accuracy"] - b["confidence"]) for b in bins) if total else 0.0


# --- results -------------------------------------------------------------------------------------------


@dataclass
class NormalizationResult:
    """Accuracy and calibration of one normalization. ``predictions[i]`` is the index chosen for question
    i, ``probs[i]`` its distribution over the choices, ``confusion[a, p]`` counts questions whose answer is
    at position a and whose prediction is at position p."""

    normalization: str
    predictions: np.ndarray
    probs: list[np.ndarray]
    correct: np.ndarray
    confusion: np.ndarray
    interval: tuple[float, float]
    calibration: list[dict]
    confidence_level: float

    @property
    def n(self) -> int:
        return len(self.correct)

    @property
    def n_correct(self) -> int:
        return int(self.correct.sum())

    @property
    def accuracy(self) -> float:
        return self.n_correct / self.n if self.n else 0.0

    @property
    def ece(self) -> float:
        return expected_calibration_error(self.calibration)

    def to_dict(self) -> dict:
        return {"normalization": self.normalization, "accuracy": self.accuracy, "correct": self.n_correct,
                "n": self.n, "interval": list(self.interval), "interval_method": "wilson",
                "confidence_level": self.confidence_level, "ece": self.ece,
                "confusion": self.confusion.tolist(), "calibration": self.calibration}


@dataclass
class EvalReport:
    """What `evaluate` returns: one `NormalizationResult` per normalization (``report["char"]``), the items,
    and helpers to print (`format`), serialize (`to_dict`) and plot (`plot`)."""

    items: list[MCItem]
    results: dict[str, NormalizationResult]
    name: str = ""
    info: dict = field(default_factory=dict)

    def __getitem__(self, normalization: str) -> NormalizationResult:
        return self.results[normalization]

    @property
    def chance(self) -> float:
        """Expected accuracy of a uniform random guess."""
        return float(np.mean([1 / len(item.choices) for item in self.items]))

    def to_dict(self, per_item: bool = False) -> dict:
        out = {"dataset": self.name, "n": len(self.items), "chance": self.chance,
               "results": {k: v.to_dict() for k, v in self.results.items()}, **self.info}
        if per_item:
            out["items"] = [
                {"id": item.id, "prompt": item.prompt, "choices": item.choices, "answer": item.answer,
                 **{f"prediction_{k}": int(r.predictions[i]) for k, r in self.results.items()},
                 **{f"probs_{k}": [float(p) for p in r.probs[i]] for k, r in self.results.items()}}
                for i, item in enumerate(self.items)]
        return out

    def format(self, confusion: Optional[str] = None) -> str:
        """A text report: accuracy, interval and ECE per normalization, then the confusion table of
        ``confusion`` (default: the last normalization, ``char`` by default)."""
        sizes = sorted({len(item.choices) for item in self.items})
        size_text = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
        level = next(iter(self.results.values())).confidence_level if self.results else 0.95
        lines = [f"dataset: {self.name or 'items'} ({len(self.items)} questions, {size_text} choices, "
                 f"chance {self.chance:.3f})",
                 f"{'normalization':<16} {'accuracy':>8}  {'correct':>9}  {f'{level:.0%} CI (Wilson)':<17} {'ECE':>6}"]
        for key, r in self.results.items():
            lo, hi = r.interval
            lines.append(f"{NORMALIZATION_NAMES.get(key, key):<16} {r.accuracy:>8.3f}  {f'{r.n_correct}/{r.n}':>9}  "
                         f"{f'[{lo:.3f}, {hi:.3f}]':<17} {r.ece:>6.3f}")
        key = confusion or list(self.results)[-1]
        r = self.results[key]
        labels = [chr(ord("A") + k) if k < 26 else str(k) for k in range(r.confusion.shape[0])]
        width = max(3, len(str(int(r.confusion.max()))) + 1)
        lines.append(f"confusion ({key}): rows = answer position, columns = predicted position")
        lines.append("    " + "".join(f"{label:>{width}}" for label in labels))
        for label, row in zip(labels, r.confusion):
            lines.append(f"{label:<4}" + "".join(f"{int(v):>{width}}" for v in row))
        return "\n".join(lines)

    def plot(self, path: Union[str, Path], bins: Optional[int] = None) -> Path:
        """Write a calibration plot (PNG, or any format matplotlib knows by the suffix): accuracy against the
        chosen probability per bin for each normalization, the diagonal, and the bin counts below."""
        return plot_calibration(self, path, bins)


def evaluate(lm: LM, dataset: Union[str, Path, Iterable[Any], None] = None,
             normalizations: Sequence[str] = DEFAULT_NORMALIZATIONS, batch_size: int = DEFAULT_BATCH_SIZE,
             progress: Optional[bool] = None, confidence: float = 0.95, bins: int = 10,
             template: str = DEFAULT_TEMPLATE, limit: Optional[int] = None, plot: Union[str, Path, None] = None,
             chat: bool = False, fields: Optional[Mapping[str, str]] = None,
             char_length: str = "choice") -> EvalReport:
    """Evaluate ``lm`` on multiple-choice questions (see the module docstring for the data format).

    ``dataset``: a JSONL path, ``"hf:NAME"``, or an iterable of records (default: `EXAMPLE_DATASET`).
    Every question is scored once; each normalization in ``normalizations`` ranks the same log-probs.
    ``confidence``: level of the Wilson interval; ``bins``: calibration bins; ``plot``: also write the
    calibration plot there. ``chat=True`` applies the model's chat template: each prompt becomes one user
    message and the choices start the assistant's reply, without their leading whitespace (lm-eval's
    ``--apply_chat_template`` drops its target delimiter the same way; see `chat_items`). ``fields`` renames
    the records' columns (``{"question": "ctx", ...}``, as the CLI's ``--fields``). ``char_length``: what
    ``char`` divides by (see the module docstring; default the choice as written, lm-eval's acc_norm).
    Returns an `EvalReport`.

    >>> print(evaluate(lm, limit=10).format())          # doctest: +SKIP
    """
    normalizations = [check_normalization(n) for n in normalizations]
    if not normalizations:
        raise ValueError("no normalization to evaluate")
    check_char_length(char_length)
    items = load_items(dataset, template=template, limit=limit, fields=fields)
    if chat:
        items = chat_items(items)
    scoring = "pmi" if "pmi" in normalizations else "sum"
    scores: dict[str, list[np.ndarray]] = {n: [] for n in normalizations}
    results = score(lm, [ScoreRequest(it.prompt, it.choices, scoring) for it in items], batch_size, progress)
    for item, result in zip(items, results):
        texts = item.char_texts(char_length)
        for n in normalizations:
            scores[n].append(normalize_scores(result.token_logprobs, texts, n, result.unconditional_logprobs))
    answers = np.array([item.answer for item in items], dtype=np.int64)
    size = max(len(item.choices) for item in items)
    report = {}
    for n in normalizations:
        probs = [softmax(s) for s in scores[n]]
        predictions = np.array([int(np.argmax(s)) for s in scores[n]], dtype=np.int64)
        correct = predictions == answers
        confusion = np.zeros((size, size), dtype=np.int64)
        np.add.at(confusion, (answers, predictions), 1)
        chosen = [float(p[k]) for p, k in zip(probs, predictions)]
        report[n] = NormalizationResult(n, predictions, probs, correct, confusion,
                                        wilson_interval(int(correct.sum()), len(items), confidence),
                                        calibration_bins(chosen, correct, bins), confidence)
    name = Path(dataset).name if isinstance(dataset, (str, Path)) else ("easy_mc.jsonl" if dataset is None else
                                                                          type(dataset).__name__)
    out = EvalReport(items, report, name, info={"char_length": char_length})
    if plot is not None:
        out.plot(plot, bins)
    return out


def chat_items(items: Sequence[MCItem]) -> list[MCItem]:
    """The items as chat prompts: a text prompt becomes ``[{"role": "user", "content": prompt}]`` (a list of
    messages is kept), and each choice loses its leading whitespace, since the reply starts right after the
    template's assistant header.

    >>> chat_items([MCItem("Q: 2+2?\\nA:", [" 4", " 5"], 0)])[0].choices
    ['4', '5']
    """
    out = []
    for item in items:
        prompt = [{"role": "user", "content": item.prompt}] if isinstance(item.prompt, str) else item.prompt
        out.append(MCItem(prompt, [c.lstrip() for c in item.choices], item.answer, item.id, item.raw_choices))
    return out


def plot_calibration(report: EvalReport, path: Union[str, Path], bins: Optional[int] = None) -> Path:
    """The calibration plot of `EvalReport.plot` (matplotlib's Agg canvas: no display, no pyplot state)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("the calibration plot needs matplotlib: pip install autocog[eval]") from None
    path = Path(path)
    fig = Figure(figsize=(6, 6.5))
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    top.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    markers = "osd^v"
    for k, (key, r) in enumerate(report.results.items()):
        cal = r.calibration if bins is None else calibration_bins(
            [float(p[i]) for p, i in zip(r.probs, r.predictions)], r.correct, bins)
        x = [b["confidence"] for b in cal]
        y = [b["accuracy"] for b in cal]
        label = f"{NORMALIZATION_NAMES.get(key, key)}: acc {r.accuracy:.2f}, ECE {r.ece:.2f}"
        top.plot(x, y, marker=markers[k % len(markers)], label=label)
        centers = [(b["low"] + b["high"]) / 2 for b in cal]
        width = (cal[0]["high"] - cal[0]["low"]) / (len(report.results) + 1) if cal else 0.1
        bottom.bar([c + (k - (len(report.results) - 1) / 2) * width for c in centers], [b["count"] for b in cal],
                   width=width, label=key)
    top.set(xlim=(0, 1), ylim=(0, 1.02), ylabel="accuracy",
            title=f"Calibration on {report.name or 'dataset'} ({len(report.items)} questions)")
    top.legend(loc="lower right", fontsize=8)
    bottom.set(xlabel="probability of the chosen answer", ylabel="questions")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
