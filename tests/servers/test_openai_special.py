"""`autocog.lm.openai.special` without a server: how pmi's unconditional context (the model's BOS, else its EOS)
is found on each kind of server. Against real servers: tests/test_openai.py (llama_cpp.server, SmolLM2 and the
tiny GGUF) and tests/test_vllm.py."""

import pytest

from autocog.errors import RequestFailedError, StrategyUnavailableError
from autocog.lm.openai.special import unconditional_text


class FakeTokenizer:
    eos_token_id = None

    def __init__(self, ids, prefix=()):
        self.ids, self.prefix = ids, list(prefix)
        self.bos_token_id = None

    def special_prefix(self):
        self.bos_token_id = self.prefix[0] if self.prefix else None
        return self.prefix

    def encode_many(self, texts):
        return [self.ids.get(t, [90, 91]) for t in texts]


class FakeTransport:
    def __init__(self, info):
        self.info = info
        self.urls = []

    def get(self, url, kind):
        self.urls.append(url)
        if self.info is None:
            raise RequestFailedError("HTTP 404", 404)
        return self.info


class FakeLM:
    """What llama_cpp.server answers to a token forced by logit_bias: BOS is produced but left out of the
    log-probs ("length"), an end token stops generation ("stop"), any other token is listed."""

    base_url, root_url = "http://x/v1", "http://x"

    def __init__(self, server, ids=None, kinds=None, prefix=(), info=None):
        self.server = server
        self.tokenizer = FakeTokenizer(ids or {}, prefix)
        self.kinds = kinds or {}
        self.transport = FakeTransport(info)
        self.forced = []

    def _map(self, fn, items):
        return [fn(x) for x in items]

    def _sampling_extras(self, settings):
        return {}

    def _completion_request(self, prompt, body, extra):
        token = int(next(iter(body["logit_bias"])))
        self.forced.append(token)
        kind = self.kinds.get(token, "token")
        return {
            "choices": [
                {
                    "text": "",
                    "finish_reason": "stop" if kind == "end" else "length",
                    "logprobs": {"tokens": [] if kind in ("bos", "end") else ["x"]},
                }
            ]
        }


SMOL = {"<|endoftext|>": [0], "<|im_start|>": [1], "<|im_end|>": [2]}


def test_server_that_adds_bos_uses_the_empty_prompt():
    lm = FakeLM("llama.cpp", SMOL, prefix=[1])
    assert unconditional_text(lm) == "" and lm.forced == []


def test_llama_cpp_bos_the_server_does_not_add():
    lm = FakeLM("llama.cpp", SMOL, {0: "end", 1: "bos", 2: "end"})
    assert unconditional_text(lm) == "<|im_start|>"
    assert lm._server_bos == 1 and sorted(lm.forced) == [0, 1, 2]  # each distinct single-token candidate once


def test_llama_cpp_without_bos_takes_the_lowest_end_token():
    lm = FakeLM("llama.cpp", {"<|im_end|>": [2], "</s>": [5], "<|im_start|>": [1]}, {2: "end", 5: "end"})
    assert unconditional_text(lm) == "<|im_end|>" and lm._server_bos is None


def test_llama_cpp_with_neither_asks_for_unconditional_prompt():
    with pytest.raises(StrategyUnavailableError, match="unconditional_prompt="):
        unconditional_text(FakeLM("llama.cpp", {"<s>": [3]}))


@pytest.mark.parametrize(
    "info,expected",
    [
        ({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}, "<|im_start|>"),
        ({"bos_token": {"content": "<s>"}, "eos_token": "</s>"}, "<s>"),  # an AddedToken as JSON
        ({"bos_token": None, "eos_token": "</s>"}, "</s>"),
    ],
)
def test_vllm_reads_tokenizer_info(info, expected):
    lm = FakeLM("vllm", info=info)
    assert unconditional_text(lm) == expected and lm.transport.urls == ["http://x/tokenizer_info"]


def test_vllm_without_tokenizer_info_says_how_to_fix_it():
    with pytest.raises(StrategyUnavailableError, match="--enable-tokenizer-info-endpoint"):
        unconditional_text(FakeLM("vllm", info=None))


def test_openai_package_modules_and_functions_stay_small():
    # How we like code: modules under ~400 lines, functions under ~80 (client.py was 421 lines).
    import ast
    from pathlib import Path

    import autocog.lm.openai as package

    for path in sorted(Path(package.__file__).parent.glob("*.py")):
        source = path.read_text()
        assert source.count("\n") <= 400, path.name
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno - node.lineno < 80, f"{path.name}: {node.name}"
