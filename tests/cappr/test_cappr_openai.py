"""`autocog.cappr.openai.classify` against a real server: ``llama_cpp.server`` on the tiny Llama's F32 GGUF,
compared with the llama_cpp drop-in on the same file (itself checked against CAPPr's reference in
test_llama_cpp.py). CAPPr's own openai module needs tiktoken's encoding of an OpenAI model name, which this
model has not."""

import numpy as np
import pytest
from cappr_base import COMPLETIONS, PROMPTS, assert_log_probs_close, assert_proba_close, assert_ragged_close

import autocog.cappr.llama_cpp.classify as reference
import autocog.cappr.openai.classify as ours
from autocog.cappr import Example
from autocog.errors import UserCanceledError
from autocog.gguf.models import tiny_llama_gguf

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client():
    openai = pytest.importorskip("openai")
    from llama_server import LlamaServer

    server = LlamaServer(tiny_llama_gguf(), n_ctx=1024)
    try:
        yield openai.OpenAI(base_url=server.base_url, api_key="none")
    finally:
        server.stop()


@pytest.fixture(scope="module")
def llama():
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(str(tiny_llama_gguf()), n_ctx=512, logits_all=True, verbose=False)


@pytest.mark.parametrize("kind", sorted(COMPLETIONS))
def test_log_probs_conditional(client, llama, kind):
    assert_log_probs_close(
        ours.log_probs_conditional(PROMPTS, COMPLETIONS[kind], "tiny", client=client),
        reference.log_probs_conditional(PROMPTS, COMPLETIONS[kind], llama),
    )


def test_predict_proba_and_predict(client, llama):
    args = (PROMPTS, COMPLETIONS["multi"])
    probs = ours.predict_proba(*args, "tiny", client=client, prior=(0.5, 0.3, 0.2))
    assert_proba_close(probs, reference.predict_proba(*args, llama, prior=(0.5, 0.3, 0.2)))
    single = ours.predict_proba(PROMPTS[0], COMPLETIONS["multi"], "tiny", client=client, prior=(0.5, 0.3, 0.2))
    np.testing.assert_allclose(single, probs[0], atol=1e-6)
    assert ours.predict(*args, "tiny", client=client) == reference.predict(*args, llama)
    unnormalized = ours.predict_proba(PROMPTS, ["Paris"], "tiny", client=client, normalize=False)
    assert_proba_close(unnormalized, reference.predict_proba(PROMPTS, ["Paris"], llama, normalize=False), False)


def test_examples_and_repeats(client, llama):
    examples = [
        Example(PROMPTS[0], ("Paris", "Berlin is"), prior=(0.25, 0.75)),
        Example(PROMPTS[1], ("jumps", "the lazy dog", "jumps")),  # a repeat: CAPPr allows it
        Example(PROMPTS[2], ("Yes",), normalize=False),
    ]
    assert_ragged_close(
        ours.predict_proba_examples(examples, "tiny", client=client),
        reference.predict_proba_examples(examples, llama),
        [True, True, False],
    )
    assert ours.predict_examples(examples[:2], "tiny", client=client) == reference.predict_examples(examples[:2], llama)


def test_token_logprobs_and_discount(client, llama):
    """llama_cpp.server puts BOS in front of every prompt, so each text's log-probs are conditioned on BOS: the
    reference is the llama_cpp drop-in's with add_bos=True, its BOS entry dropped."""
    texts = COMPLETIONS["multi"]
    with_bos = [[None] + r[2:] for r in reference.token_logprobs(texts, llama, add_bos=True)]
    for o, r in zip(ours.token_logprobs(texts, "tiny", client=client), with_bos):
        assert o[0] is None and len(o) == len(r)
        np.testing.assert_allclose(o[1:], r[1:], atol=1e-4)
    args = (PROMPTS, COMPLETIONS["multi"])
    assert_proba_close(
        ours.predict_proba(*args, "tiny", client=client, discount_completions=1.0),
        reference.predict_proba(*args, llama, discount_completions=1.0, log_marg_probs_completions=with_bos),
    )


def test_ask_if_ok(client, monkeypatch):
    monkeypatch.setattr("builtins.input", lambda message: "n")
    with pytest.raises(UserCanceledError):
        ours.predict_proba(PROMPTS, COMPLETIONS["multi"], "tiny", client=client, ask_if_ok=True)
