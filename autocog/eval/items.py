"""Multiple-choice questions for `autocog.eval.evaluate`: the `MCItem` type and its loaders (JSONL files, Hugging
Face datasets, any iterable of records); see `autocog.eval.evaluate` for the record format. Every name here is also
importable from `autocog.eval.evaluate`.

>>> record_to_item({"question": "2+2?", "choices": ["4", "5"], "answer": "4"}).choices
[' 4', ' 5']
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

from autocog.core.chat import Messages

DEFAULT_TEMPLATE = "Question: {question}\nAnswer:"
CHAR_LENGTHS = ("choice", "continuation")
FIELDS = ("question", "prompt", "choices", "answer", "id")
EXAMPLE_DATASET = Path(__file__).resolve().parents[1] / "data" / "easy_mc.jsonl"


@dataclass
class MCItem:
    """One multiple-choice question, ready to score: ``lm.choose(prompt, choices)`` should be ``answer``."""

    prompt: Union[str, Messages]  # chat messages after `autocog.eval.evaluate.chat_items`
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


def record_to_item(
    record: Mapping[str, Any],
    template: str = DEFAULT_TEMPLATE,
    index: int = 0,
    fields: Optional[Mapping[str, str]] = None,
) -> MCItem:
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


def load_items(
    source: Union[str, Path, Iterable[Any], None] = None,
    template: str = DEFAULT_TEMPLATE,
    limit: Optional[int] = None,
    split: Optional[str] = None,
    config: Optional[str] = None,
    fields: Optional[Mapping[str, str]] = None,
) -> list[MCItem]:
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
            raise ImportError(
                "loading a Hugging Face dataset by name needs the 'datasets' package: pip install datasets"
            ) from None
        source = datasets.load_dataset(source[3:], config, split=split or "test")
    if isinstance(source, (str, Path)):
        records: Iterable[Any] = load_jsonl(source)
    elif isinstance(source, Iterable):
        records = source
    else:
        raise TypeError(f"a dataset is a JSONL path or an iterable of records, not {type(source).__name__}")
    items: list[MCItem] = []
    for i, record in enumerate(records):
        if limit is not None and len(items) >= limit:
            break
        items.append(record if isinstance(record, MCItem) else record_to_item(record, template, i, fields))
    if not items:
        raise ValueError("the dataset holds no questions")
    return items
