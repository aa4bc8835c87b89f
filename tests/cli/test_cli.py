"""The command line end to end, in subprocesses: every command on the tiny model and on SmolLM2, bad arguments."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from run_cli import autocog, ok, one_line_error

from autocog.cli.app import EXIT_ERROR, EXIT_USAGE, build_parser, main

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ["complete", "choose", "run", "eval", "search", "bench"]

PROGRAM = """
from autocog.fta import Choose, Program, Text

program = Program([Text("Question: {q}\\nAnswer:"), Choose("answer", [" Paris", " Berlin", " London"])])
inputs = {"q": "What is the capital of France?"}
"""

FUNCTION_PROGRAM = """
def program(lm, prompt="Question: What is the capital of France?\\nAnswer:"):
    return [" Paris", " Berlin"][lm.choose(prompt, [" Paris", " Berlin"])]
"""


@pytest.fixture(scope="module")
def tiny(tiny_path):
    return ["--model", tiny_path, "--threads", "1"]


# --- in-process: help and argument errors (no model is loaded) ---------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_help_on_each_command(command, capsys):
    with pytest.raises(SystemExit) as exit:
        main([command, "--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: autocog {command}") and "--backend" in out and "--model" in out


@pytest.mark.parametrize(
    "argv, words",
    [
        (["frobnicate"], ["invalid choice"]),
        (["choose", "prompt only"], ["required", "CHOICE"]),
        (["choose", "p", " a", " b", "--normalization", "max"], ["--normalization"]),
        (["complete", "p", "--temperature", "-1"], ["--temperature", ">= 0"]),
        (["complete", "p", "--max-tokens", "many"], ["--max-tokens"]),
        (["eval", "--batch-size", "0"], ["--batch-size", "positive"]),
        (["eval", "--confidence", "1"], ["--confidence"]),
        (["run", "p.py", "--threshold", "2"], ["--threshold"]),
        (["choose", "p", " a", "--backend", "gpt"], ["--backend"]),
    ],
)
def test_usage_errors_exit_2_with_one_line(argv, words, capsys):
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == EXIT_USAGE
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("autocog") and "error:" in lines[0]
    assert all(w in lines[0] for w in words), lines[0]


@pytest.mark.parametrize(
    "argv, code, words",
    [
        (["choose", "p", " a", " a"], EXIT_USAGE, ["duplicates"]),
        (["choose", "p", " a", ""], EXIT_USAGE, ["empty"]),
        (["search", "--grid", "colour=red"], EXIT_USAGE, ["unknown setting"]),
        (["search", "--grid", "{bad json"], EXIT_USAGE, ["JSON"]),
        (["search", "--base", "[1]"], EXIT_USAGE, ["--base"]),
        (["complete", "p", "--stop", "x", "--no-stop"], EXIT_USAGE, ["--no-stop"]),
        (["choose", "p", " a", " b", "--base-url", "http://x"], EXIT_USAGE, ["--backend openai"]),
        (["bench", "no-such-script"], EXIT_USAGE, ["no bench script"]),
        (["eval", "--fields", "question"], EXIT_USAGE, ["--fields"]),
        (["eval", "--fields", "colour=x"], EXIT_USAGE, ["unknown field"]),
        (["eval", "/no/such/file.jsonl"], EXIT_ERROR, ["FileNotFoundError", "/no/such/file.jsonl"]),
        (["run", "/no/such/program.py"], EXIT_ERROR, ["not found"]),
    ],
)
def test_errors_before_loading_a_model(argv, code, words, capsys):
    assert main(argv) == code
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and all(w in lines[0] for w in words), lines


def test_parser_lists_every_command():
    text = build_parser().format_help()
    assert all(c in text for c in COMMANDS) and "Exit codes" in text


# --- subprocesses on the tiny model ----------------------------------------------------------------------


def test_complete_and_choose_tiny(tiny, tiny_tf, tmp_path):
    prompt = "Question: What is the capital of France?\nAnswer:"
    out = ok(autocog("complete", *tiny, "The quick brown", "--max-tokens", "4", "--no-stop"))
    assert out == tiny_tf.complete("The quick brown", stop=None, max_tokens=4) + "\n"

    tree = tmp_path / "tree.dot"
    out = ok(autocog("choose", *tiny, prompt.replace("\n", "\\n"), " Paris", " Berlin", " the quick", "--tree", tree))
    expected = tiny_tf.choice_distribution(prompt, [" Paris", " Berlin", " the quick"])
    rows = [line for line in out.splitlines() if line.startswith(("*", " ")) and "'" in line]
    assert rows[0].startswith("*") and rows[0].split()[-1] == repr(expected.choice).split()[-1]
    assert f"{expected.probs.max():.3f}" in rows[0]
    assert tree.read_text().startswith("digraph TokenChoiceTree")

    data = json.loads(
        ok(autocog("choose", *tiny, "-", " Paris", " Berlin", "--json", "--normalization", "mean", stdin=prompt))
    )
    mean = tiny_tf.choice_distribution(prompt, [" Paris", " Berlin"], normalization="mean")
    assert data["index"] == mean.index and data["normalization"] == "mean"
    assert data["probs"] == pytest.approx(list(mean.probs), abs=1e-5)


def test_run_tiny(tiny, tiny_tf, tmp_path):
    path = tmp_path / "program.py"
    path.write_text(PROGRAM)
    out = ok(autocog("run", *tiny, path, "--width", "3", "--paths", "2"))
    expected = tiny_tf.choice_distribution(
        "Question: What is the capital of France?\nAnswer:", [" Paris", " Berlin", " London"]
    )
    assert out.splitlines()[0].startswith("best path: p=") and f"answer: {expected.choice!r}" in out
    assert "path 2:" in out
    data = json.loads(ok(autocog("run", *tiny, path, "--json", "--input", "q=What is the capital of Germany?")))
    germany = tiny_tf.choice_distribution(
        "Question: What is the capital of Germany?\nAnswer:", [" Paris", " Berlin", " London"]
    )
    assert "Germany" in data["text"] and data["values"]["answer"] == germany.choice
    one_line_error(autocog("run", *tiny, path, "--input", "x=1"), EXIT_USAGE, "unknown input")
    function = tmp_path / "function.py"
    function.write_text(FUNCTION_PROGRAM)
    prompt, choices = "Question: What is the capital of France?\nAnswer:", [" Paris", " Berlin"]
    assert ok(autocog("run", *tiny, function)).strip() == choices[tiny_tf.choose(prompt, choices)].strip()
    (tmp_path / "empty.py").write_text("x = 1\n")
    one_line_error(autocog("run", *tiny, tmp_path / "empty.py"), EXIT_ERROR, "defines no `program`")


def test_eval_tiny(tiny, tiny_tf, tmp_path):
    plot, report = tmp_path / "calibration.png", tmp_path / "report.json"
    out = ok(autocog("eval", *tiny, "--limit", "8", "--batch-size", "3", "--plot", plot, "--json", report))
    assert "char (acc_norm)" in out and "Wilson" in out and "confusion" in out
    assert plot.read_bytes()[:4] == b"\x89PNG"
    data = json.loads(report.read_text())
    from autocog.eval.evaluate import evaluate

    expected = evaluate(tiny_tf, limit=8)
    for key in ("sum", "mean", "char"):
        assert data["results"][key]["accuracy"] == expected[key].accuracy
    assert len(data["items"]) == 8


def test_search_tiny(tiny, tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text(
        "".join(
            json.dumps({"prompt": p, "reference": "the"}) + "\n"
            for p in ["The quick brown fox", "Yes or no?", "1 10 100"]
        )
    )
    out = ok(
        autocog(
            "search", *tiny, data, "--grid", "max_tokens=1,2", "--grid", '{"temperature": [0, 1.0]}', "--metric", "f1"
        )
    )
    lines = out.strip().splitlines()
    assert lines[0].split()[:2] == ["rank", "f1"] and len(lines) == 1 + 4 + 1 and lines[-1].startswith("best: {")
    result = json.loads(
        ok(autocog("search", *tiny, data, "--grid", "max_tokens=1,2,3", "--random", "2", "--seed", "3", "--json", "-"))
    )
    assert len(result["rows"]) == 2 and result["mode"] == "random"


def test_bench_tiny(tiny):
    out = ok(autocog("bench", *tiny, "--prompts", "3", "--choices", "3"))
    assert "predict_proba (batch)" in out and "choose, one by one" in out
    listing = ok(autocog("bench", "--list"))
    assert "choose" in listing


def test_runtime_errors_exit_1(tmp_path):
    one_line_error(
        autocog("choose", "--model", tmp_path / "missing", "p", " a", " b"), EXIT_ERROR, "ModelNotFoundError"
    )
    (tmp_path / "not-a-model.gguf").write_text("hello")
    one_line_error(autocog("complete", "--model", tmp_path / "not-a-model.gguf", "p"), EXIT_ERROR, "GGUF")


# --- SmolLM2 (the embedded default model) ----------------------------------------------------------------


@pytest.mark.slow
def test_every_command_on_smollm2(tmp_path):
    prompt = "Question: What is the capital of France?\\nAnswer:"
    assert (
        ok(
            autocog(
                "complete",
                "Question: What is the capital of France?\\nAnswer: The capital of France is",
                "--max-tokens",
                "3",
            )
        )
        .strip()
        .startswith("Paris")
    )
    out = ok(autocog("choose", prompt, " Paris", " London", " Berlin"))
    assert [l for l in out.splitlines() if l.startswith("*")][0].endswith("' Paris'")
    program = tmp_path / "program.py"
    program.write_text(PROGRAM)
    assert "answer: ' Paris'" in ok(autocog("run", program))
    out = ok(autocog("eval", "--plot", tmp_path / "cal.png"))
    accuracy = float([l for l in out.splitlines() if l.startswith("char")][0].split()[2])
    assert accuracy > 0.6
    data = tmp_path / "capitals.jsonl"
    data.write_text(
        json.dumps(
            {
                "prompt": "Question: What is the capital of France?\nAnswer: The capital of France is",
                "reference": "Paris",
            }
        )
        + "\n"
    )
    # one token gives " Paris" (an exact match), three give " Paris." or more: the shorter setting must win
    out = ok(autocog("search", data, "--grid", "max_tokens=3,1", "--metric", "exact"))
    assert json.loads(out.strip().splitlines()[-1].split("best: ")[1].rsplit(" (", 1)[0]) == {"max_tokens": 1}
    assert "predict_proba" in ok(autocog("bench", "--prompts", "4"))


@pytest.mark.slow
def test_llama_backend_choose_on_smollm2():
    pytest.importorskip("llama_cpp")
    out = ok(
        autocog(
            "choose",
            "--backend",
            "llama",
            "Question: What is the capital of France?\\nAnswer:",
            " Paris",
            " London",
            " Berlin",
        )
    )
    assert [l for l in out.splitlines() if l.startswith("*")][0].endswith("' Paris'")


@pytest.fixture(scope="module")
def tiny_server():
    """`python -m llama_cpp.server` on the tiny GGUF, on a free loopback port."""
    pytest.importorskip("llama_cpp.server.app")
    import socket
    import time
    import urllib.request

    from autocog.gguf.models import tiny_llama_gguf

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(tiny_llama_gguf()),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "1024",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(url + "/models", timeout=2).read()
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    pytest.fail("llama_cpp.server did not start")
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_openai_backend_against_a_local_server(tiny_server, tiny_tf):
    prompt = "Question: What is the capital of France?\nAnswer:"
    data = json.loads(
        ok(
            autocog(
                "choose",
                "--backend",
                "openai",
                "--base-url",
                tiny_server,
                prompt,
                " Paris",
                " Berlin",
                " the quick",
                "--json",
            )
        )
    )
    expected = tiny_tf.choice_distribution(prompt, [" Paris", " Berlin", " the quick"])
    assert data["index"] == expected.index
    assert data["probs"] == pytest.approx(list(expected.probs), abs=1e-3)
    out = ok(
        autocog(
            "complete",
            "--backend",
            "openai",
            "--base-url",
            tiny_server,
            "The quick brown",
            "--max-tokens",
            "4",
            "--no-stop",
        )
    )
    assert out == tiny_tf.complete("The quick brown", stop=None, max_tokens=4) + "\n"
