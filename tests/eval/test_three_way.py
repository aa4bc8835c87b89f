"""One model, one local multiple-choice dataset, three evaluation paths: `evaluate`, `compare` (two copies of
the model) and lm-eval through the adapter (`autocog.eval.lm_eval`, a local task). The same log-probs must give
the same acc (``sum``) and acc_norm (``char``), item for item where the path exposes items.

The questions mix one-letter and multi-word choices, so that dividing by the choice as written (``"b"``, 1
character: lm-eval's acc_norm) or by the text as scored (``" b"``, 2) ranks some items differently.
"""

import os

import pytest

pytest.importorskip("lm_eval", reason="the lm-eval extra is not installed")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from lm_eval_task import run_task, write_task

from autocog.eval.compare import compare
from autocog.eval.evaluate import evaluate
from autocog.eval.lm_eval import AutocogLM

QUESTIONS = [
    ("Which animal swims?", ["a dog", "fish", "b"], 1),
    ("Which animal barks?", ["a dog", "fish", "b"], 0),
    ("Which letter comes first?", ["a", "the letter z", "q"], 0),
    ("What is one plus one?", ["2", "eleven", "a lot of"], 0),
    ("Which word means no?", ["yes", "n", "never at all"], 2),
    ("What is the first vowel?", ["a", "b", "the letter c"], 0),
    ("What do you write with?", ["a pen", "x", "a glass of water"], 0),
    ("What is frozen water?", ["ice", "i", "hot steam"], 0),
    ("Which is a colour?", ["red", "r", "a table"], 0),
    ("What shines at night?", ["the moon", "m", "sun"], 0),
    ("How many days in a week?", ["7", "seven", "a month"], 0),
    ("What is a cat?", ["an animal", "a", "a car"], 0),
    ("Which is hot?", ["fire", "f", "snow and ice"], 0),
    ("What grows on trees?", ["leaves", "l", "stones"], 0),
    ("What do birds have?", ["wings", "w", "wheels"], 0),
    ("What is the opposite of up?", ["down", "d", "left side"], 0),
    ("What is water made of?", ["H2O", "h", "salt"], 0),
    ("Which is a planet?", ["Mars", "M", "the Sun"], 0),
    ("What is a rose?", ["a flower", "r", "a stone"], 0),
]
RECORDS = [{"question": q, "choices": c, "answer": a} for q, c, a in QUESTIONS]


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    return write_task(tmp_path_factory.mktemp("three_way"), RECORDS)


@pytest.fixture(scope="module")
def tiny_llama_lm():
    pytest.importorskip("llama_cpp")
    from autocog.gguf.models import tiny_llama_gguf
    from autocog.lm import LLaMa

    return LLaMa(**LLaMa.create(model_path=tiny_llama_gguf()))


@pytest.mark.parametrize("model", ["tiny_tf", "tiny_llama_lm"])
def test_evaluate_compare_and_lm_eval_agree(model, task_dir, request):
    lm = request.getfixturevalue(model)
    data = task_dir / "data.jsonl"
    report = evaluate(lm, data)
    table = compare([lm, lm], data, labels=["a", "b"])
    metrics, _ = run_task(task_dir, AutocogLM(lm=lm))
    n = len(RECORDS)
    # the dataset ranks some items differently under the two char lengths: the test can tell them apart
    other = evaluate(lm, data, char_length="continuation")
    assert report["char"].n_correct != other["char"].n_correct
    for ours, theirs in (("sum", "acc"), ("char", "acc_norm")):
        per_item = [float(x) for x in report[ours].correct]
        assert per_item == metrics["per_doc"][theirs], ours
        assert report[ours].accuracy == pytest.approx(metrics[f"{theirs},none"], abs=1e-12)
        for row in table.rows:
            assert (row.accuracy[ours]["correct"], row.accuracy[ours]["n"]) == (report[ours].n_correct, n), ours
            assert row.accuracy[ours]["interval"] == report[ours].interval
    assert report["mean"].n_correct == table.rows[0].accuracy["mean"]["correct"]
