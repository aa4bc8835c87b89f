"""`OpenAI` against llama.cpp's C++ ``llama-server`` (docs/llama-server.md): detection, requests per choice set and
per batch, exact rows (`OpenAI.greedy`), chat equal to the server's own chat endpoint, native structured output,
SmolLM2 Q4_1 against `LLaMa` on the same GGUF, and lm-eval through the server against ``--backend llama``."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openai")

from autocog.errors import StrategyUnavailableError
from autocog.lm import ScoreRequest, score
from autocog.lm.openai import OpenAI
from autocog.lm.openai.dialects.vllm import VllmDialect
from autocog.lm.openai.id_rows import empty_prompt_error

ROOT = Path(__file__).resolve().parents[2]
F32 = 0  # GGML_TYPE_F32
SPREAD = 0.05  # nats: SmolLM2 Q4_1 through llama-server against LLaMa (measured 2.5e-4; batch shapes differ)


def test_the_empty_prompt_refusal_names_the_real_cause():
    assert "the prompt is empty" in str(empty_prompt_error(""))
    message = str(empty_prompt_error("Hello"))
    assert "'Hello'" in message and "no token" in message and "is empty" not in message


def server_lm(server, **kwargs):
    return OpenAI(base_url=server.base_url, api_key="none", max_retries=1, timeout=120, **kwargs)


@pytest.fixture(scope="module")
def tiny(tiny_llama_cpp_server):
    lm = server_lm(tiny_llama_cpp_server)
    yield lm
    lm.close()


@pytest.fixture(scope="module")
def smol(smol_llama_cpp_server):
    lm = server_lm(smol_llama_cpp_server)
    yield lm
    lm.close()


@pytest.fixture(scope="module")
def smol_local():
    pytest.importorskip("llama_cpp")
    from autocog.lm import LLaMa
    from autocog.lm.assets import smollm2_gguf

    return LLaMa(**LLaMa.create(model_path=smollm2_gguf(), n_ctx=4096))


def calls(lm) -> int:
    return sum(lm.requests.get(k, 0) for k in ("completions", "chat"))


# --- tiny F32 GGUF -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_detected_by_props_and_named_in_info(tiny):
    result = tiny.choice_distribution("Count:", [" 1", " 2"])
    assert tiny.server == "llama-server" and result.info["server"] == "llama-server"
    assert result.strategy == "descent" and "token ids" in result.info["reason"]
    assert tiny.n_ctx == 1024 and tiny.tokenizer.name == "llama-server"
    assert not VllmDialect.matches(tiny.session)  # llama-server answers vLLM's /tokenize body with no tokens


@pytest.mark.slow
def test_one_request_per_choice_set_and_at_most_one_per_prompt_in_a_batch(tiny):
    before = calls(tiny)
    result = tiny.choice_distribution("The sky is", [" blue", " green", " the quick brown fox", " the"])
    assert calls(tiny) - before == result.info["requests"] == 1  # every trie node in one request (small vocab)
    prompts = [f"Question {i}: is {i} even?\nAnswer:" for i in range(12)]
    before = calls(tiny)
    batch = list(score(tiny, [ScoreRequest(p, [" yes", " no"]) for p in prompts]))
    assert calls(tiny) - before <= len(prompts) // 4 and batch[0].info["batch_prompts"] >= 4
    one = [tiny.choice_distribution(p, [" yes", " no"]) for p in prompts]
    for b, o in zip(batch, one):
        np.testing.assert_allclose(b.scores, o.scores, atol=1e-5)


@pytest.mark.slow
def test_greedy_is_the_whole_row_of_llama(tiny):
    pytest.importorskip("llama_cpp")
    from autocog.gguf.models import tiny_llama_gguf
    from autocog.lm import LLaMa

    local = LLaMa(**LLaMa.create(model_path=tiny_llama_gguf(), n_ctx=1024, type_k=F32, type_v=F32))
    for prompt in ("The capital of France is", local.tokenize("x y", bos=True)):
        row, expected = tiny.greedy(prompt), local.greedy(prompt)
        assert row.shape == expected.shape and np.isfinite(row).all()
        np.testing.assert_allclose(row, expected, atol=1e-4)
        assert math.isclose(np.logaddexp.reduce(row), 0.0, abs_tol=1e-4)


@pytest.mark.slow
def test_echo_is_refused_with_the_real_cause(tiny):
    with pytest.raises(StrategyUnavailableError, match="llama-server ignores echo.*token-id rows"):
        tiny.choice_distribution("Count:", [" 1", " 2"], strategy="echo")


@pytest.mark.slow
def test_lm_eval_through_llama_server_equals_the_llama_backend(tiny_llama_cpp_server, tmp_path):
    pytest.importorskip("lm_eval")
    from lm_eval_task import TASK, write_task

    from autocog.gguf.models import tiny_llama_gguf

    folder = write_task(tmp_path / "task", n=12)

    def run(*model_args: str) -> dict:
        out = tmp_path / f"{len(list(tmp_path.iterdir()))}.json"
        argv = [sys.executable, "-m", "autocog", "lm-eval", "--tasks", TASK, "--include-path", str(folder)]
        proc = subprocess.run(
            [*argv, *model_args, "--output", str(out)],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"},
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(out.read_text())

    server = run("--backend", "openai", "--base-url", tiny_llama_cpp_server.base_url, "--api-key", "none")
    local = run("--backend", "llama", "--model", str(tiny_llama_gguf()), "--model-args", "type_k=0,type_v=0")
    for metric in ("acc,none", "acc_norm,none"):
        assert server["results"][TASK][metric] == local["results"][TASK][metric], metric
    for a, b in zip(server["samples"][TASK], local["samples"][TASK]):
        assert a["doc_id"] == b["doc_id"] and (a["acc"], a["acc_norm"]) == (b["acc"], b["acc_norm"])
        np.testing.assert_allclose(
            [float(r[0][0]) for r in a["resps"]], [float(r[0][0]) for r in b["resps"]], atol=1e-4, rtol=0
        )


# --- SmolLM2 Q4_1 ---------------------------------------------------------------------------------------------
CASES = [
    ("The capital of France is", [" Paris", " London", " the quick brown fox"]),
    ("Count:", [" 1", " 10", " 100"]),
    ("Q: Is the sky blue?\nA:", [" yes", " no", " maybe"]),
    ("Question: Which is a fruit?\nAnswer:", [" an apple", " a car", " a chair", " a river", " an idea"]),
]


@pytest.mark.slow
def test_smollm2_within_the_batch_shape_spread_and_the_same_choices(smol, smol_local):
    worst = 0.0
    for prompt, choices in CASES:
        result = smol.choice_distribution(prompt, choices)
        expected = smol_local.choice_logprobs(prompt, choices)
        for got, ref in zip(result.token_logprobs, expected):
            assert len(got) == len(ref)
            worst = max(worst, max(abs(a - b) for a, b in zip(got, ref)))
        assert result.index == int(np.argmax([math.fsum(x) for x in expected]))
    assert worst <= SPREAD, worst


@pytest.mark.slow
def test_smollm2_greedy_row(smol, smol_local):
    prompt = "The capital of France is"
    row = smol.greedy(prompt)
    assert row.shape == (49152,)
    assert np.abs(row - smol_local.greedy(prompt)).max() <= SPREAD
    assert int(np.argmax(row)) == int(np.argmax(smol_local.greedy(prompt)))


MESSAGES = [{"role": "user", "content": "Name one fruit."}]


@pytest.mark.slow
def test_chat_equals_the_servers_own_chat_endpoint(smol, smol_llama_cpp_server):
    own = smol_llama_cpp_server.post(
        "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 24, "temperature": 0}
    )["choices"][0]["message"]["content"]
    assert own.strip()
    chat = server_lm(smol_llama_cpp_server, chat=True)
    for lm in (smol, chat):
        assert lm.complete(MESSAGES, max_tokens=24, stop=None) == own
        assert "".join(lm.stream(MESSAGES, max_tokens=24, stop=None)) == own
    first = own.split()[0]
    choices = [" " + first if not first.startswith(" ") else first, " Banana", " Carrot"]
    for lm in (smol, chat):
        result = lm.choice_distribution(MESSAGES, [c.lstrip() for c in choices])
        assert result.info["server"] == "llama-server" and result.index == 0
    np.testing.assert_allclose(
        chat.choice_distribution(MESSAGES, ["Apple", "Car"]).scores,
        smol.choice_distribution(MESSAGES, ["Apple", "Car"]).scores,
        atol=1e-3,  # the same token contexts; the slots' cached prompts differ, so Q4_1 batch shapes do (2e-4)
    )
    chat.close()


@pytest.mark.slow
def test_structured_output_natively_and_validated(smol):
    pydantic = pytest.importorskip("pydantic")
    import autocog

    class Fruit(pydantic.BaseModel):
        name: str
        color: str

    before = calls(smol)
    fruit = autocog.generate(smol, Fruit, MESSAGES + [{"role": "user", "content": "Answer in JSON."}])
    assert isinstance(fruit, Fruit) and fruit.name
    assert calls(smol) - before == 1
    assert autocog.generate(smol, ["yes", "no"], "Is the sky blue? Answer:") in ("yes", "no")
