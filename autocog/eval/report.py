"""The reports of `autocog.eval.evaluate`: Wilson intervals, calibration bins and ECE, one `NormalizationResult`
per normalization (accuracy, confusion, calibration), the `EvalReport` that gathers them (text table,
JSON-ready dict, calibration plot). Every name here is also importable from `autocog.eval.evaluate`.

>>> [round(x, 3) for x in wilson_interval(8, 10)]
[0.49, 0.943]
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from autocog.core.normalization import softmax
from autocog.eval.items import MCItem

NORMALIZATION_NAMES = {"sum": "sum (acc)", "mean": "mean/token", "char": "char (acc_norm)", "pmi": "pmi"}


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
    low = 0.0 if correct == 0 else max(0.0, center - half)  # exact at the ends (rounding aside)
    high = 1.0 if correct == n else min(1.0, center + half)
    return (low, high)


def calibration_bins(
    confidences: Union[Sequence[float], np.ndarray], correct: Union[Sequence[bool], np.ndarray], bins: int = 10
) -> list[dict]:
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
            out.append(
                {
                    "low": b / bins,
                    "high": (b + 1) / bins,
                    "count": int(sel.sum()),
                    "confidence": round(float(conf[sel].mean()), 12),
                    "accuracy": float(ok[sel].mean()),
                }
            )
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

    @classmethod
    def from_scores(
        cls,
        normalization: str,
        scores: Sequence[np.ndarray],
        answers: np.ndarray,
        size: int,
        confidence: float = 0.95,
        bins: int = 10,
    ) -> NormalizationResult:
        """Rank each question's normalized ``scores`` (an array per question) against ``answers`` (the right
        choices' indices); ``size`` is the confusion table's side (the most choices of a question).

        >>> NormalizationResult.from_scores("sum", [np.array([0.0, -1.0])], np.array([0]), 2).accuracy
        1.0
        """
        probs = [softmax(s) for s in scores]
        predictions = np.array([int(np.argmax(s)) for s in scores], dtype=np.int64)
        correct = predictions == answers
        confusion = np.zeros((size, size), dtype=np.int64)
        np.add.at(confusion, (answers, predictions), 1)
        chosen = [float(p[k]) for p, k in zip(probs, predictions)]
        return cls(
            normalization,
            predictions,
            probs,
            correct,
            confusion,
            wilson_interval(int(correct.sum()), len(answers), confidence),
            calibration_bins(chosen, correct, bins),
            confidence,
        )

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
        return {
            "normalization": self.normalization,
            "accuracy": self.accuracy,
            "correct": self.n_correct,
            "n": self.n,
            "interval": list(self.interval),
            "interval_method": "wilson",
            "confidence_level": self.confidence_level,
            "ece": self.ece,
            "confusion": self.confusion.tolist(),
            "calibration": self.calibration,
        }


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
        out = {
            "dataset": self.name,
            "n": len(self.items),
            "chance": self.chance,
            "results": {k: v.to_dict() for k, v in self.results.items()},
            **self.info,
        }
        if per_item:
            out["items"] = [
                {
                    "id": item.id,
                    "prompt": item.prompt,
                    "choices": item.choices,
                    "answer": item.answer,
                    **{f"prediction_{k}": int(r.predictions[i]) for k, r in self.results.items()},
                    **{f"probs_{k}": [float(p) for p in r.probs[i]] for k, r in self.results.items()},
                }
                for i, item in enumerate(self.items)
            ]
        return out

    def format(self, confusion: Optional[str] = None) -> str:
        """A text report: accuracy, interval and ECE per normalization, then the confusion table of
        ``confusion`` (default: the last normalization, ``char`` by default)."""
        sizes = sorted({len(item.choices) for item in self.items})
        size_text = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
        level = next(iter(self.results.values())).confidence_level if self.results else 0.95
        lines = [
            f"dataset: {self.name or 'items'} ({len(self.items)} questions, {size_text} choices, "
            f"chance {self.chance:.3f})",
            f"{'normalization':<16} {'accuracy':>8}  {'correct':>9}  {f'{level:.0%} CI (Wilson)':<17} {'ECE':>6}",
        ]
        for key, r in self.results.items():
            lo, hi = r.interval
            lines.append(
                f"{NORMALIZATION_NAMES.get(key, key):<16} {r.accuracy:>8.3f}  {f'{r.n_correct}/{r.n}':>9}  "
                f"{f'[{lo:.3f}, {hi:.3f}]':<17} {r.ece:>6.3f}"
            )
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
        cal = (
            r.calibration
            if bins is None
            else calibration_bins([float(p[i]) for p, i in zip(r.probs, r.predictions)], r.correct, bins)
        )
        x = [b["confidence"] for b in cal]
        y = [b["accuracy"] for b in cal]
        label = f"{NORMALIZATION_NAMES.get(key, key)}: acc {r.accuracy:.2f}, ECE {r.ece:.2f}"
        top.plot(x, y, marker=markers[k % len(markers)], label=label)
        centers = [(b["low"] + b["high"]) / 2 for b in cal]
        width = (cal[0]["high"] - cal[0]["low"]) / (len(report.results) + 1) if cal else 0.1
        bottom.bar(
            [c + (k - (len(report.results) - 1) / 2) * width for c in centers],
            [b["count"] for b in cal],
            width=width,
            label=key,
        )
    top.set(
        xlim=(0, 1),
        ylim=(0, 1.02),
        ylabel="accuracy",
        title=f"Calibration on {report.name or 'dataset'} ({len(report.items)} questions)",
    )
    top.legend(loc="lower right", fontsize=8)
    bottom.set(xlabel="probability of the chosen answer", ylabel="questions")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
