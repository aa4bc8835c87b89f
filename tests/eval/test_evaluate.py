"""autocog.eval.evaluate: accuracy, intervals, confusion and calibration agree with a by-hand computation."""

import json
import math

import numpy as np
import pytest

from autocog.eval.evaluate import (
    EXAMPLE_DATASET,
    MCItem,
    calibration_bins,
    evaluate,
    load_items,
    record_to_item,
    wilson_interval,
)


def by_hand(lm, items, char_length="choice"):
    """Predictions and probabilities per normalization, straight from `choice_logprobs`; ``char`` divides by
    the choice as the record wrote it (lm-eval's acc_norm) or, with "continuation", as scored."""
    out = {"sum": ([], []), "mean": ([], []), "char": ([], [])}
    for item in items:
        logprobs = lm.choice_logprobs(item.prompt, item.choices)
        totals = [math.fsum(lp) for lp in logprobs]
        scores = {
            "sum": totals,
            "mean": [t / len(lp) for t, lp in zip(totals, logprobs)],
            "char": [t / len(c) for t, c in zip(totals, written(item, char_length))],
        }
        for key, s in scores.items():
            s = np.array(s)
            out[key][0].append(int(np.argmax(s)))
            out[key][1].append(np.exp(s - s.max()) / np.exp(s - s.max()).sum())
    return out


def written(item, char_length):
    return item.raw_choices if char_length == "choice" and item.raw_choices is not None else item.choices


def check_against_by_hand(lm, report, char_length="choice"):
    expected = by_hand(lm, report.items, char_length)
    answers = np.array([item.answer for item in report.items])
    for key, (predictions, probs) in expected.items():
        r = report[key]
        assert list(r.predictions) == predictions, key
        for a, e in zip(r.probs, probs):
            np.testing.assert_allclose(a, e, atol=1e-5, rtol=0)
        correct = int((np.array(predictions) == answers).sum())
        assert r.n_correct == correct and r.accuracy == correct / len(answers)
        assert r.interval == wilson_interval(correct, len(answers))
        assert r.confusion.sum() == len(answers) and np.trace(r.confusion) == correct
        chosen = [p[k] for p, k in zip(probs, predictions)]
        bins = calibration_bins(chosen, np.array(predictions) == answers)
        assert [b["count"] for b in bins] == [b["count"] for b in r.calibration]
        np.testing.assert_allclose([b["confidence"] for b in bins], [b["confidence"] for b in r.calibration], atol=1e-5)


def test_example_dataset_ships_with_the_package():
    items = load_items()
    assert len(items) >= 30
    assert all(3 <= len(it.choices) <= 4 and 0 <= it.answer < len(it.choices) for it in items)
    assert {it.answer for it in items} == {0, 1, 2, 3}
    assert items[0].prompt.startswith("Question: ") and items[0].prompt.endswith("\nAnswer:")
    assert all(c.startswith(" ") for it in items for c in it.choices)
    assert EXAMPLE_DATASET.name == "easy_mc.jsonl"


def test_eval_tiny_equals_by_hand(tiny_tf, tmp_path):
    report = evaluate(tiny_tf, batch_size=5, plot=tmp_path / "calibration.png")
    check_against_by_hand(tiny_tf, report)
    assert (tmp_path / "calibration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = report.format()
    assert "char (acc_norm)" in text and "Wilson" in text and "confusion" in text
    data = report.to_dict(per_item=True)
    json.dumps(data)
    assert data["results"]["sum"]["interval_method"] == "wilson" and len(data["items"]) == len(report.items)


def test_records_and_iterables(tiny_tf, tmp_path):
    records = [
        {"question": "What is the capital of France?", "choices": ["Paris", "Berlin"], "answer": "Paris"},
        {"prompt": "Yes or no? The answer is", "choices": [" Yes", " No", " Maybe"], "answer": 2, "id": "q2"},
    ]
    path = tmp_path / "mc.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    from_file = evaluate(tiny_tf, path, normalizations=["sum", "pmi"])
    from_list = evaluate(tiny_tf, iter(records), normalizations=["sum", "pmi"])  # e.g. a datasets.Dataset
    assert [it.id for it in from_file.items] == ["0", "q2"]
    assert from_file.items[0] == MCItem(
        "Question: What is the capital of France?\nAnswer:", [" Paris", " Berlin"], 0, "0", ["Paris", "Berlin"]
    )
    assert from_file.items[1].raw_choices is None  # a prompt record's choices are scored as written
    for key in ("sum", "pmi"):
        assert list(from_file[key].predictions) == list(from_list[key].predictions)
    pmi = tiny_tf.choice_distribution(records[1]["prompt"], records[1]["choices"], normalization="pmi")
    np.testing.assert_allclose(from_file["pmi"].probs[1], pmi.probs, atol=1e-5)
    assert from_file.name == "mc.jsonl"
    assert len(evaluate(tiny_tf, records, limit=1).items) == 1


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"question": "q", "choices": ["a", "b"], "answer": 5}', "out of range"),
        ('{"question": "q", "choices": ["a", "b"], "answer": "c"}', "not one of the choices"),
        ('{"question": "q", "choices": [], "answer": 0}', "choices"),
        ('{"choices": ["a", "b"], "answer": 0}', "question"),
        ('{"question": "q", "choices": ["a", "b"]', "not valid JSON"),
    ],
)
def test_bad_records(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(ValueError, match=message):
        load_items(path)


def test_field_mapping_and_arc_style_choices():
    hellaswag_like = {
        "ctx": "A man is sitting on a roof. He",
        "endings": [" starts pulling up roofing.", " is ripping"],
        "label": "0",
    }
    item = record_to_item(hellaswag_like, fields={"prompt": "ctx", "choices": "endings", "answer": "label"})
    assert item.prompt == hellaswag_like["ctx"] and item.choices == hellaswag_like["endings"] and item.answer == 0
    arc_like = {
        "question": "Which is a gas?",
        "choices": {"text": ["ice", "steam", "rock"], "label": ["A", "B", "C"]},
        "answerKey": "B",
        "id": "arc-1",
    }
    item = record_to_item(arc_like, fields={"answer": "answerKey"})
    assert item.choices == [" ice", " steam", " rock"] and item.answer == 1 and item.id == "arc-1"
    assert len(load_items([arc_like] * 3, fields={"answer": "answerKey"})) == 3


def test_char_divides_like_lm_evals_acc_norm(tiny_tf):
    """Default: the choice as written (no delimiter space), as lm-eval's acc_norm; "continuation": as scored.
    The two give different predictions on some bundled questions (the tiny model's scores are close)."""
    items = load_items()
    assert items[0].raw_choices == ["London", "Berlin", "Madrid", "Paris"]
    assert items[0].char_texts() == ["London", "Berlin", "Madrid", "Paris"]
    assert items[0].char_texts("continuation") == [" London", " Berlin", " Madrid", " Paris"]
    lm_eval_style = evaluate(tiny_tf, items, normalizations=["char"])
    scored = evaluate(tiny_tf, items, normalizations=["char"], char_length="continuation")
    check_against_by_hand(tiny_tf, evaluate(tiny_tf, items), "choice")
    check_against_by_hand(tiny_tf, evaluate(tiny_tf, items, char_length="continuation"), "continuation")
    assert lm_eval_style.info["char_length"] == "choice" and scored.info["char_length"] == "continuation"
    assert list(lm_eval_style["char"].predictions) != list(scored["char"].predictions)
    with pytest.raises(ValueError, match="char_length"):
        evaluate(tiny_tf, items, char_length="bytes")


def test_evaluate_takes_fields_like_the_cli(tiny_tf, tmp_path):
    records = [
        {"ctx": "Question: What is 2 + 2?\nAnswer:", "endings": [" 4", " 5"], "label": 0},
        {"ctx": "Question: What do bees make?\nAnswer:", "endings": [" honey", " milk"], "label": "1"},
    ]
    path = tmp_path / "renamed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    report = evaluate(tiny_tf, path, fields={"prompt": "ctx", "choices": "endings", "answer": "label"})
    assert [it.choices for it in report.items] == [[" 4", " 5"], [" honey", " milk"]]
    assert [it.answer for it in report.items] == [0, 1]
    check_against_by_hand(tiny_tf, report)
    with pytest.raises(ValueError, match="unknown field"):
        evaluate(tiny_tf, path, fields={"colour": "ctx"})


def test_missing_file():
    with pytest.raises(FileNotFoundError):
        load_items("/nonexistent/questions.jsonl")


def test_statistics():
    lo, hi = wilson_interval(8, 10)
    assert round(lo, 4) == 0.4902 and round(hi, 4) == 0.9433
    assert wilson_interval(0, 10)[0] == 0 and wilson_interval(10, 10)[1] == 1
    lo99, hi99 = wilson_interval(8, 10, 0.99)
    assert lo99 < lo and hi99 > hi
    bins = calibration_bins([0.05, 0.95, 1.0, 0.55], [False, True, True, False], bins=10)
    assert [(b["low"], b["count"], b["accuracy"]) for b in bins] == [(0.0, 1, 0.0), (0.5, 1, 0.0), (0.9, 2, 1.0)]
    assert record_to_item({"question": "x", "choices": ["\na", "b"], "answer": 1}).choices == ["\na", " b"]


@pytest.mark.slow
def test_eval_smollm2_above_chance_and_equal_to_by_hand(smol_tf, tmp_path):
    report = evaluate(smol_tf, plot=tmp_path / "cal.png")
    assert report.chance < 0.35
    for key in ("sum", "mean", "char"):
        assert report[key].accuracy > 0.6, report.format()
        assert report[key].interval[0] > report.chance, report.format()  # above chance with 95% confidence
    check_against_by_hand(smol_tf, report)
