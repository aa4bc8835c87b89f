"""Multiple-choice evaluation: accuracy under several normalizations, confidence intervals, a confusion
table and a calibration plot (``autocog eval`` on the command line).

Data: JSONL files (one object a line) or Hugging Face ``datasets`` objects (any iterable of mappings; the
``datasets`` package is only needed to load a dataset by name). A record has

* ``question`` (formatted with ``template``, default ``"Question: {question}\\nAnswer:"``; every choice then
  gets a leading space unless it starts with whitespace) **or** ``prompt`` (used verbatim, with the choices
  verbatim);
* ``choices``: a list of strings;
* ``answer``: the index of the right choice (an int), or the right choice's text.

Scores: each question is scored once, through the scoring layer (`autocog.lm.scoring.score`: one
`ScoreRequest` per question, ``batch_size`` questions per backend call; with ``pmi`` requested the
unconditional pass runs too), then ranked under each normalization from the same per-token log-probs:
``sum`` (total log-prob: lm-eval's ``acc``), ``mean`` (per token: CAPPr's default), ``char`` (per
character: lm-eval's ``acc_norm``), and ``pmi`` on request.

Which characters ``char`` counts (``char_length``): by default (``"choice"``) the choice as the record
writes it, which is what lm-eval's ``acc_norm`` divides by: for a ``question`` record the raw choice
(``"Paris"``, 5 characters, although ``" Paris"`` is scored, as lm-eval's ``target_delimiter`` is), for a
``prompt`` record the choice verbatim. ``"continuation"`` counts the scored continuation, delimiter space
included (6 for ``" Paris"``), as ``lm.choice_distribution(..., normalization="char")`` does. The ranking
is `autocog.eval.scores.ItemScores`, the loop `compare` and the lm-eval adapter share.

The interval is the **Wilson score interval** (default 95%). Calibration: the chosen choice's probability
(softmax of the normalized scores) against accuracy, in equal-width bins, with the expected calibration
error (ECE). Loading lives in `autocog.eval.items`, intervals and reports in `autocog.eval.report`.

The package ships `EXAMPLE_DATASET`, 32 easy general-knowledge questions written for this project.

>>> report = evaluate(lm, EXAMPLE_DATASET)                          # doctest: +SKIP
>>> report["char"].accuracy, report["char"].interval                # doctest: +SKIP
(0.84, (0.68, 0.93))
>>> report.plot("calibration.png")                                  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

from autocog.core.normalization import check_normalization
from autocog.core.types import ScoreRequest
from autocog.eval.items import (
    CHAR_LENGTHS,
    DEFAULT_TEMPLATE,
    EXAMPLE_DATASET,
    FIELDS,
    MCItem,
    check_char_length,
    load_items,
    load_jsonl,
    record_to_item,
)
from autocog.eval.report import (
    NORMALIZATION_NAMES,
    EvalReport,
    NormalizationResult,
    calibration_bins,
    expected_calibration_error,
    plot_calibration,
    wilson_interval,
)
from autocog.eval.scores import DEFAULT_NORMALIZATIONS, ItemScores
from autocog.lm.base import LM
from autocog.lm.scoring import DEFAULT_BATCH_SIZE, score

__all__ = [
    "MCItem",
    "NormalizationResult",
    "EvalReport",
    "evaluate",
    "load_items",
    "load_jsonl",
    "record_to_item",
    "wilson_interval",
    "calibration_bins",
    "EXAMPLE_DATASET",
    "DEFAULT_TEMPLATE",
    # also importable from here: the pieces of autocog.eval.items and autocog.eval.report
    "chat_items",
    "check_char_length",
    "expected_calibration_error",
    "plot_calibration",
    "DEFAULT_NORMALIZATIONS",
    "NORMALIZATION_NAMES",
    "CHAR_LENGTHS",
    "FIELDS",
]


def evaluate(
    lm: LM,
    dataset: Union[str, Path, Iterable[Any], None] = None,
    normalizations: Sequence[str] = DEFAULT_NORMALIZATIONS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Optional[bool] = None,
    confidence: float = 0.95,
    bins: int = 10,
    template: str = DEFAULT_TEMPLATE,
    limit: Optional[int] = None,
    plot: Union[str, Path, None] = None,
    chat: bool = False,
    fields: Optional[Mapping[str, str]] = None,
    char_length: str = "choice",
) -> EvalReport:
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
    results = list(score(lm, [ScoreRequest(it.prompt, it.choices, scoring) for it in items], batch_size, progress))
    scored = ItemScores.from_results(items, results, normalizations, char_length)
    report = {n: scored.result(n, confidence, bins) for n in normalizations}
    name = (
        Path(dataset).name
        if isinstance(dataset, (str, Path))
        else ("easy_mc.jsonl" if dataset is None else type(dataset).__name__)
    )
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
