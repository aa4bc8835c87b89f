"""A local lm-evaluation-harness multiple-choice task (``dataset_path: json``), written and run offline.

>>> folder = write_task(tmp_path, records)                            # doctest: +SKIP
>>> metrics, answers = run_task(folder, "autocog", "backend=tf")      # doctest: +SKIP
"""

import json
from pathlib import Path
from typing import Optional, Sequence

import lm_eval
from lm_eval.tasks import TaskManager

from autocog.eval.items import EXAMPLE_DATASET

TASK = "autocog_easy_mc"


def write_task(folder: Path, records: Optional[Sequence[dict]] = None, n: int = 32, name: str = TASK) -> Path:
    """A multiple-choice task over ``records`` (default: the first ``n`` bundled questions; each has
    ``question``, ``choices``, ``answer``), as lm-eval's arc_easy is written: raw choices,
    ``target_delimiter`` " " (the default), acc and acc_norm."""
    folder.mkdir(parents=True, exist_ok=True)
    if records is None:
        records = [json.loads(line) for line in EXAMPLE_DATASET.read_text().splitlines() if line.strip()][:n]
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / f"{name}.yaml").write_text(
        f"task: {name}\n"
        "dataset_path: json\n"
        "dataset_kwargs:\n"
        "  data_files:\n"
        f"    test: {folder / 'data.jsonl'}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\n'
        "doc_to_target: answer\n"
        'doc_to_choice: "{{choices}}"\n'
        "metric_list:\n"
        "  - metric: acc\n"
        "    aggregation: mean\n"
        "    higher_is_better: true\n"
        "  - metric: acc_norm\n"
        "    aggregation: mean\n"
        "    higher_is_better: true\n"
    )
    return folder


def run_task(folder: Path, model, model_args=None, name: str = TASK, **kwargs):
    """``simple_evaluate`` of the task in ``folder``: (metrics with ``per_doc`` acc / acc_norm lists in
    document order, per-document lists of the (log-likelihood, is_greedy) answers)."""
    results = lm_eval.simple_evaluate(
        model=model,
        model_args=model_args,
        tasks=[name],
        log_samples=True,
        task_manager=TaskManager(include_path=str(folder)),
        **kwargs,
    )
    samples = sorted(results["samples"][name], key=lambda s: s["doc_id"])
    answers = [[tuple(r[0]) for r in s["resps"]] for s in samples]
    metrics = dict(results["results"][name], per_doc={k: [s[k] for s in samples] for k in ("acc", "acc_norm")})
    return metrics, answers
