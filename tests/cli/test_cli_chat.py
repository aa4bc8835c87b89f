"""``autocog eval --chat`` and ``autocog complete --chat`` / ``--system``: the command line prints what the Python
API gives for the same input (SmolLM2's chat template, the ``tf`` backend; slow), and a model without a
template is a one-line error (tiny model, fast)."""

import json

import pytest
from run_cli import autocog, ok, one_line_error

from autocog.cli.app import EXIT_ERROR
from autocog.eval.evaluate import evaluate

QUESTION = "What is the capital of France?"


def user(text):
    return [{"role": "user", "content": text}]


@pytest.mark.slow
def test_eval_chat_equals_evaluate_chat(smol_tf, tmp_path):
    report_path = tmp_path / "report.json"
    out = ok(autocog("eval", "--chat", "--limit", "8", "--batch-size", "4", "--json", report_path))
    data = json.loads(report_path.read_text())
    expected = evaluate(smol_tf, limit=8, batch_size=4, chat=True)
    expected.name = "easy_mc.jsonl"
    assert out == expected.format() + "\n"
    reference = expected.to_dict(per_item=True)
    for key in ("sum", "mean", "char"):
        got, want = data["results"][key], reference["results"][key]
        assert (got["accuracy"], got["correct"], got["confusion"]) == (
            want["accuracy"],
            want["correct"],
            want["confusion"],
        )
        assert got["ece"] == pytest.approx(want["ece"], abs=2e-5)
    for got, want in zip(data["items"], reference["items"], strict=True):
        # chat mode: the prompt is one user message, the choices lose their delimiter space
        assert got["prompt"] == want["prompt"] and got["prompt"][0]["role"] == "user"
        assert got["choices"] == want["choices"] and not any(c[:1].isspace() for c in got["choices"])
        for key in ("sum", "mean", "char"):
            assert got[f"prediction_{key}"] == want[f"prediction_{key}"]
            # a fresh process and a warm prefix cache split the passes differently (measured 1.6e-6)
            assert got[f"probs_{key}"] == pytest.approx(want[f"probs_{key}"], abs=2e-5)
    # the template really changes the scores: the plain run ranks other probabilities
    plain = evaluate(smol_tf, limit=8, batch_size=4).to_dict(per_item=True)
    drift = max(
        abs(a - b) for p, c in zip(plain["items"], data["items"]) for a, b in zip(p["probs_sum"], c["probs_sum"])
    )
    assert drift > 0.01


@pytest.mark.slow
def test_complete_chat_equals_complete_messages(smol_tf):
    out = ok(autocog("complete", "--chat", QUESTION, "--max-tokens", "12"))
    expected = smol_tf.complete(user(QUESTION), stop="\n", max_tokens=12)
    assert expected.strip() and out == (expected if expected.endswith("\n") else expected + "\n")
    assert out != smol_tf.complete(QUESTION, stop="\n", max_tokens=12) + "\n"  # the prompt went through the template

    system = "You answer in one word."
    out = ok(autocog("complete", "--system", system, "-", "--max-tokens", "8", "--no-stop", stdin=QUESTION))
    messages = [{"role": "system", "content": system}, *user(QUESTION)]
    expected = smol_tf.complete(messages, stop=None, max_tokens=8)
    assert out == (expected if expected.endswith("\n") else expected + "\n")


@pytest.mark.parametrize("command", [["complete", "--chat", "Hi"], ["eval", "--chat", "--limit", "2"]])
def test_chat_without_a_template_is_one_line_error(tiny_path, command):
    one_line_error(
        autocog(*command, "--model", tiny_path, "--threads", "1"), EXIT_ERROR, "ChatTemplateError", "chat_template"
    )
