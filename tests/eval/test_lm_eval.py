"""The lm-evaluation-harness adapter (`autocog.eval.lm_eval`) against lm-eval's own ``hf`` model, offline.

A local JSONL multiple-choice task (``dataset_path: json``) is written by the tests; the same questions go
through ``simple_evaluate`` with the adapter and with ``hf`` on the same transformers directory: the
log-likelihoods must agree within 1e-4, with the same ``is_greedy``, acc and acc_norm.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lm_eval", reason="the lm-eval extra is not installed")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from lm_eval.api.instance import Instance
from lm_eval.api.registry import get_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from lm_eval_task import TASK, run_task, write_task

from autocog.core.types import ScoreRequest
from autocog.eval.evaluate import evaluate
from autocog.eval.lm_eval import AutocogLM, parse_model_args
from autocog.lm import load
from autocog.lm.scoring import DEFAULT_BATCH_SIZE, score

ROOT = Path(__file__).resolve().parents[2]


def assert_same_as_evaluate(lm, folder, metrics):
    """`autocog.eval.evaluate` on the task's data file: its sum / char predictions are lm-eval's acc / acc_norm."""
    report = evaluate(lm, folder / "data.jsonl")
    assert [float(x) for x in report["sum"].correct] == metrics["per_doc"]["acc"]
    assert [float(x) for x in report["char"].correct] == metrics["per_doc"]["acc_norm"]


def assert_same_as_hf(ours, theirs, atol=1e-4):
    (our_metrics, our_answers), (hf_metrics, hf_answers) = ours, theirs
    assert len(our_answers) == len(hf_answers) > 0
    for mine, ref in zip(our_answers, hf_answers):
        np.testing.assert_allclose([a[0] for a in mine], [r[0] for r in ref], atol=atol, rtol=0)
        assert [a[1] for a in mine] == [r[1] for r in ref]
    for metric in ("acc,none", "acc_norm,none"):
        assert our_metrics[metric] == hf_metrics[metric], metric
    assert our_metrics["per_doc"] == hf_metrics["per_doc"]


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    return write_task(tmp_path_factory.mktemp("lm_eval_task"), n=12)


@pytest.fixture(scope="module")
def tiny_adapter(tiny_path):
    return AutocogLM(backend="tf", model=str(tiny_path))


@pytest.fixture(scope="module")
def tiny_hf(tiny_path):
    return get_model("hf")(pretrained=str(tiny_path), dtype="float32", device="cpu", batch_size=4)


def instances(kind, args):
    return [Instance(kind, {}, a, i) for i, a in enumerate(args)]


# --- registration and model_args -------------------------------------------------------------------------


def test_registered_beside_lm_evals_own_models():
    assert get_model("autocog") is AutocogLM
    assert get_model("hf").__name__ == "HFLM"  # importing the adapter must not hide lm-eval's models


def test_parse_model_args():
    assert parse_model_args("backend=llama,model=/m.gguf,n_ctx=512,verbose=False") == {
        "backend": "llama",
        "model": "/m.gguf",
        "n_ctx": 512,
        "verbose": False,
    }
    assert parse_model_args("") == {}
    for bad in ("backend=tf,model", "model=", "=x", "n_ctx=1,n_ctx=2"):
        with pytest.raises(ValueError, match="model_args"):
            parse_model_args(bad)


@pytest.mark.parametrize(
    "args, error, words",
    [
        ("backend=gpt", ValueError, "unknown backend 'gpt'"),
        ("backend=tf,model={tiny},colour=red", TypeError, "'colour'"),
        ("backend=tf,model={tiny},batch_size=0", ValueError, "batch_size"),
        ("backend=tf,model={tiny},max_gen_toks=-3", ValueError, "max_gen_toks"),
        ("backend=tf,model={tiny},pretrained={tiny}", ValueError, "not both"),
        ("backend=tf,model=/no/such/dir", Exception, "/no/such/dir"),
        ("backend=llama,model={tiny},colour=red", TypeError, "colour"),
    ],
)
def test_bad_model_args_are_clear_errors(args, error, words, tiny_path):
    with pytest.raises(error, match=words.replace("(", r"\(")):
        AutocogLM.create_from_arg_string(args.format(tiny=tiny_path))


def test_lm_eval_settings_reach_the_adapter(tiny_path):
    lm = AutocogLM.create_from_arg_string(
        f"pretrained={tiny_path},max_length=64", {"batch_size": "auto", "device": "cpu", "max_batch_size": None}
    )
    assert lm.batch_size == DEFAULT_BATCH_SIZE == 32 and lm.max_length == 64 and lm.lm.n_ctx == 1024


# --- exact numbers on the numpy toy model (generic backend paths) ----------------------------------------


def toy_reference(lm, context, continuation):
    """(log P, is_greedy) by brute force: the context's trailing whitespace moves into the continuation."""
    stripped = context.rstrip()
    ids = lm.tokenize(stripped, bos=True) if stripped else [lm.bos_token_id]
    toks = lm.tokenize(context[len(stripped) :] + continuation)
    rows = [lm.greedy_impl(ids + toks[:k]) for k in range(len(toks))]
    return math.fsum(float(r[t]) for r, t in zip(rows, toks)), all(int(np.argmax(r)) == t for r, t in zip(rows, toks))


def test_loglikelihood_exact_on_the_toy_model():
    """Every request against brute force, greedy continuations included (decoded from the toy model)."""
    from toy import ToyLM

    lm = ToyLM(seed=3)
    adapter = AutocogLM(lm=lm, batch_size=3)
    contexts = ["question: 2+2?\nanswer:", "the sky is ", "", "abc", "yes or no? "]
    reqs = []
    for context in contexts:
        stripped = context.rstrip()
        ids = lm.tokenize(stripped, bos=True) if stripped else [lm.bos_token_id]
        greedy = []
        for _ in range(3):
            greedy.append(int(np.argmax(lm.greedy_impl(ids + greedy))))
        moved = context[len(stripped) :]
        decoded = lm.detokenize(greedy)
        conts = {
            decoded[len(moved) :] if decoded.startswith(moved) and len(decoded) > len(moved) else decoded,
            decoded[:1],
            " blue",
            "x",
            " 42",
            "no",
        }
        reqs += [(context, c) for c in sorted(conts) if c]
    answers = adapter.loglikelihood(instances("loglikelihood", reqs), disable_tqdm=True)
    expected = [toy_reference(lm, c, x) for c, x in reqs]
    np.testing.assert_allclose([a[0] for a in answers], [e[0] for e in expected], atol=1e-9, rtol=0)
    assert [a[1] for a in answers] == [e[1] for e in expected]
    assert sum(e[1] for e in expected) >= 5 and sum(not e[1] for e in expected) >= 10


def test_rolling_exact_on_the_toy_model():
    from toy import BOS, ToyLM

    lm = ToyLM(seed=1)
    text = "the quick brown fox jumps over the lazy dog. " * 3
    toks = lm.tokenize(text)
    for max_length in (7, 32, 1000):
        total = AutocogLM(lm=lm, max_length=max_length).loglikelihood_rolling(
            instances("loglikelihood_rolling", [(text,)]), True
        )[0]
        # brute force over lm-eval's own windows (each token predicted once, the context as the window gives it)
        expected = 0.0
        for context, predicted in map(make_disjoint_window, get_rolling_token_windows(toks, BOS, max_length, 1)):
            for k, t in enumerate(predicted):
                expected += float(lm.greedy_impl(context + predicted[:k])[t])
        assert abs(total - expected) < 1e-9, max_length


def test_backends_without_token_rows(tiny_tf):
    """An `LM` that only scores choices and completes (as OpenAI does): is_greedy by greedy decoding, rolling
    refused with a clear error."""
    from toy import ToyLM

    from autocog.lm.base import LM

    class ChoicesOnly(LM):
        def __init__(self):
            self.inner = ToyLM(seed=3)

        def tokenize(self, text, bos=False):
            return self.inner.tokenize(text, bos)

        def detokenize(self, tokens):
            return self.inner.detokenize(tokens)

        def complete(self, prompt, stop="\n", **kwargs):
            return self.inner.complete(prompt, stop=stop, **kwargs)

        def choose(self, prompt, choices, **kwargs):
            return self.inner.choose(prompt, choices, **kwargs)

        def choice_distribution(self, prompt, choices, normalization=None, **kwargs):
            return self.inner.choice_distribution(prompt, choices, normalization=normalization, **kwargs)

    lm = ChoicesOnly()
    greedy = lm.complete("the sky is", stop=None, max_tokens=3)
    reqs = [("the sky is", greedy), ("the sky is", greedy[:1]), ("the sky is", " blue"), ("the sky is ", "x")]
    answers = AutocogLM(lm=lm).loglikelihood(instances("loglikelihood", reqs), disable_tqdm=True)
    expected = [toy_reference(lm.inner, c, x) for c, x in reqs]
    assert [a[1] for a in answers] == [e[1] for e in expected] == [True, True, False, False]
    np.testing.assert_allclose([a[0] for a in answers], [e[0] for e in expected], atol=1e-9, rtol=0)
    with pytest.raises(NotImplementedError, match="tf or llama"):
        AutocogLM(lm=lm).loglikelihood_rolling(instances("loglikelihood_rolling", [("abc",)]), True)


# --- numbers against lm-eval's hf model (tiny model) -----------------------------------------------------


def test_task_matches_hf_on_tiny(task_dir, tiny_adapter, tiny_hf):
    ours = run_task(task_dir, tiny_adapter)
    theirs = run_task(task_dir, tiny_hf)
    assert_same_as_hf(ours, theirs)
    assert_same_as_evaluate(tiny_adapter.lm, task_dir, ours[0])


def test_loglikelihood_edge_cases_match_hf(tiny_adapter, tiny_hf):
    reqs = [
        ("Question: What is 2 + 2?\nAnswer: ", "4"),  # trailing space moves into the continuation
        ("Question: What is 2 + 2?\nAnswer:", " 4"),
        ("Question: What is 2 + 2?\nAnswer:", " 4"),  # a duplicate request
        ("Question: What is 2 + 2?\nAnswer:", "4"),  # no space: a different continuation
        ("", "The quick brown fox"),  # empty context: conditioned on BOS
        ("Yes or no?", " Yes. No. Maybe."),
    ]
    ours = tiny_adapter.loglikelihood(instances("loglikelihood", reqs), disable_tqdm=True)
    theirs = tiny_hf.loglikelihood(instances("loglikelihood", reqs), disable_tqdm=True)
    np.testing.assert_allclose([o[0] for o in ours], [t[0] for t in theirs], atol=1e-4, rtol=0)
    assert [o[1] for o in ours] == [t[1] for t in theirs]
    assert ours[0] == ours[1] == ours[2] and ours[3][0] != ours[1][0]


def test_is_greedy_is_exact(tiny_adapter, tiny_tf):
    """Prefixes of the greedy decode are greedy; one token changed (first or second position) is not.
    (On the seeded tiny model, "The quick brown" decodes to tokens that round-trip through text.)"""
    context = "The quick brown"
    tokens = tiny_tf.tokenize(context, bos=True)
    greedy = []
    for _ in range(4):
        greedy.append(int(np.argmax(tiny_tf.greedy(tokens + greedy))))
    conts = [tiny_tf.detokenize(greedy[:n]) for n in (1, 2, 4)]
    runner_up = [int(np.argsort(tiny_tf.greedy(tokens + greedy[:k]))[-2]) for k in (0, 1)]
    wrong = [tiny_tf.detokenize([runner_up[0]]), tiny_tf.detokenize(greedy[:1] + [runner_up[1]])]
    for text, expected in zip(
        conts + wrong, [greedy[:1], greedy[:2], greedy, [runner_up[0]], greedy[:1] + [runner_up[1]]]
    ):
        assert tiny_tf.tokenize(text) == expected  # the texts stand for exactly these tokens
    answers = tiny_adapter.loglikelihood(
        instances("loglikelihood", [(context, c) for c in conts + wrong]), disable_tqdm=True
    )
    assert [a[1] for a in answers] == [True, True, True, False, False]
    # each alone (no sibling to compare with) gives the same flags
    alone = [tiny_adapter.loglikelihood(instances("loglikelihood", [(context, c)]), True)[0] for c in conts + wrong]
    assert [a[1] for a in alone] == [a[1] for a in answers]
    np.testing.assert_allclose([a[0] for a in alone], [a[0] for a in answers], atol=1e-5, rtol=0)


def test_rolling_matches_hf_with_windows(tiny_path, tiny_tf):
    """Windows of 16 tokens over texts of 1 to ~60 tokens; lm-eval's hf without the BOS its tokenizer would add."""
    texts = [
        "The quick brown fox jumps over the lazy dog. 1 10 100 1000",
        "Yes",
        "Let's think step by step: first, second, third, then the result. " * 3,
    ]
    ours = AutocogLM(lm=tiny_tf, max_length=16).loglikelihood_rolling(
        instances("loglikelihood_rolling", [(t,) for t in texts]), True
    )
    hf = get_model("hf")(
        pretrained=str(tiny_path), dtype="float32", device="cpu", max_length=16, add_bos_token=False, batch_size=4
    )
    theirs = hf.loglikelihood_rolling(instances("loglikelihood_rolling", [(t,) for t in texts]), True)
    assert len(tiny_tf.tokenize(texts[2])) > 3 * 16
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)
    # one window (the model's context): the text as one choice after BOS, through the scoring layer
    whole = AutocogLM(lm=tiny_tf).loglikelihood_rolling(instances("loglikelihood_rolling", [(texts[2],)]), True)
    (result,) = score(tiny_tf, [ScoreRequest("", [texts[2]])])
    assert abs(whole[0] - result.logprobs[0]) < 1e-4 and abs(whole[0] - ours[2]) > 1e-2  # the windows did cut


def test_generate_until_matches_hf(tiny_adapter, tiny_hf):
    reqs = [
        ("Question: What is the capital of France?\nAnswer:", {"until": ["\n"], "max_gen_toks": 12}),
        ("The quick brown", {"until": [".", "Answer"], "max_gen_toks": 20, "do_sample": False}),
        ("1 10", {"until": "zzz", "max_gen_toks": 5, "temperature": 0.0}),
    ]
    ours = tiny_adapter.generate_until(instances("generate_until", reqs), disable_tqdm=True)
    theirs = tiny_hf.generate_until(instances("generate_until", reqs), disable_tqdm=True)
    assert ours == theirs and any(ours)
    assert not any(
        stop in text
        for text, (_, kw) in zip(ours, reqs)
        for stop in ([kw["until"]] if isinstance(kw["until"], str) else kw["until"])
    )


def test_llama_backend_through_the_adapter(tiny_adapter):
    """The same weights as F32 GGUF through llama.cpp give the same log-likelihoods and greedy flags."""
    pytest.importorskip("llama_cpp", reason="the llama extra is not installed")
    from autocog.gguf.models import tiny_llama_gguf

    llama = AutocogLM.create_from_arg_string(f"backend=llama,model={tiny_llama_gguf()},n_ctx=512,type_k=0,type_v=0")
    reqs = [("Question: What is the capital of France?\nAnswer:", c) for c in (" Paris", " Berlin", " London")]
    reqs += [("The quick brown fox", " jumps over the lazy dog"), ("", "Yes")]
    ours = llama.loglikelihood(instances("loglikelihood", reqs), disable_tqdm=True)
    ref = tiny_adapter.loglikelihood(instances("loglikelihood", reqs), disable_tqdm=True)
    np.testing.assert_allclose([o[0] for o in ours], [r[0] for r in ref], atol=1e-3, rtol=0)
    assert [o[1] for o in ours] == [r[1] for r in ref]
    text = "The quick brown fox jumps over the lazy dog. 1 10 100 1000"
    rolling = [
        AutocogLM(lm=m.lm, max_length=8).loglikelihood_rolling(instances("loglikelihood_rolling", [(text,)]), True)[0]
        for m in (llama, tiny_adapter)
    ]
    assert abs(rolling[0] - rolling[1]) < 1e-3


# --- the command line --------------------------------------------------------------------------------------


def test_cli_lm_eval_end_to_end(task_dir, tiny_path, tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "autocog",
            "lm-eval",
            "--tasks",
            TASK,
            "--include-path",
            str(task_dir),
            "--model",
            str(tiny_path),
            "--threads",
            "1",
            "--limit",
            "5",
            "--model-args",
            "dtype=float32",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert TASK in proc.stdout and "acc_norm" in proc.stdout
    data = json.loads(out.read_text())
    metrics = data["results"][TASK]
    assert 0 <= metrics["acc,none"] <= 1 and len(data["samples"][TASK]) == 5
    assert all(len(s["resps"]) == len(s["doc"]["choices"]) for s in data["samples"][TASK])


def test_cli_lm_eval_help(capsys):
    from autocog.cli.app import build_parser, main

    with pytest.raises(SystemExit) as exit:
        main(["lm-eval", "--help"])
    out = capsys.readouterr().out
    assert exit.value.code == 0 and out.startswith("usage: autocog lm-eval")
    assert all(
        option in out
        for option in ("--tasks", "--include-path", "--model-args", "--limit", "--output", "--backend", "--model")
    )
    assert "lm-eval" in build_parser().format_help()


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--tasks", "no_such_task_xyz"], ["unknown task", "no_such_task_xyz"]),
        (["--tasks", TASK, "--model-args", "dtype"], ["model_args", "KEY=VALUE"]),
        (["--tasks", TASK, "--model-args", "model=/x"], ["repeats", "model"]),
        (["--tasks", TASK, "--include-path", "/no/such/dir"], ["--include-path", "/no/such/dir"]),
    ],
)
def test_cli_lm_eval_usage_errors(argv, words, task_dir, tiny_path, capsys):
    from autocog.cli.app import EXIT_USAGE, main

    full = ["lm-eval", "--model", str(tiny_path)] + argv
    if "--include-path" not in argv:
        full += ["--include-path", str(task_dir)]
    assert main(full) == EXIT_USAGE
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and all(w in lines[0] for w in words), lines


# --- SmolLM2 -------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_task_matches_hf_on_smollm2(tmp_path):
    from autocog.lm.assets import smollm2_transformers

    path = smollm2_transformers()
    folder = write_task(tmp_path / "task", n=32)
    ours = run_task(folder, "autocog", f"backend=tf,model={path},dtype=float32", batch_size=8)
    theirs = run_task(folder, "hf", f"pretrained={path},dtype=float32", batch_size=8, device="cpu")
    assert_same_as_hf(ours, theirs)
    assert_same_as_evaluate(load("tf", model=str(path)), folder, ours[0])
    assert ours[0]["acc,none"] > 0.5  # SmolLM2 knows most of these easy facts
