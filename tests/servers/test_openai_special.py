"""`autocog.lm.openai.special` and the dialects' ``specials`` without a server: how pmi's unconditional context
(the model's BOS, else its EOS) is found on each kind of server. Against real servers: tests/servers/test_openai.py
(llama_cpp.server, SmolLM2 and the tiny GGUF) and tests/servers/test_vllm.py."""

import pytest

from autocog.errors import RequestFailedError, StrategyUnavailableError
from autocog.lm.openai.dialects import Dialect
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

    def map(self, fn, items):
        return [fn(x) for x in items]


class FakeRequests:
    """What llama_cpp.server answers to a token forced by logit_bias: BOS is produced but left out of the
    log-probs ("length"), an end token stops generation ("stop"), any other token is listed."""

    def __init__(self, kinds):
        self.kinds = kinds
        self.forced = []

    def completion(self, prompt, body, extra):
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


class FakeSession:
    """The parts of a `Session` that the dialects' ``specials`` read."""

    base_url, root_url = "http://x/v1", "http://x"

    def __init__(self, server, ids=None, kinds=None, prefix=(), info=None):
        self.dialect = Dialect.named(server)
        self.tokenizer = FakeTokenizer(ids or {}, prefix)
        self.transport = FakeTransport(info)
        self.requests = FakeRequests(kinds or {})

    @property
    def forced(self):
        return self.requests.forced


SMOL = {"<|endoftext|>": [0], "<|im_start|>": [1], "<|im_end|>": [2]}


def test_server_that_adds_bos_uses_the_empty_prompt():
    lm = FakeSession("llama.cpp", SMOL, prefix=[1])
    assert unconditional_text(lm) == "" and lm.forced == []


def test_llama_cpp_bos_the_server_does_not_add():
    lm = FakeSession("llama.cpp", SMOL, {0: "end", 1: "bos", 2: "end"})
    assert unconditional_text(lm) == "<|im_start|>"
    assert lm.dialect.server_bos == 1 and sorted(lm.forced) == [0, 1, 2]  # each distinct single-token candidate once


def test_llama_cpp_without_bos_takes_the_lowest_end_token():
    lm = FakeSession("llama.cpp", {"<|im_end|>": [2], "</s>": [5], "<|im_start|>": [1]}, {2: "end", 5: "end"})
    assert unconditional_text(lm) == "<|im_end|>" and lm.dialect.server_bos is None


def test_llama_cpp_with_neither_asks_for_unconditional_prompt():
    with pytest.raises(StrategyUnavailableError, match="unconditional_prompt="):
        unconditional_text(FakeSession("llama.cpp", {"<s>": [3]}))


@pytest.mark.parametrize(
    "info,expected",
    [
        ({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}, "<|im_start|>"),
        ({"bos_token": {"content": "<s>"}, "eos_token": "</s>"}, "<s>"),  # an AddedToken as JSON
        ({"bos_token": None, "eos_token": "</s>"}, "</s>"),
    ],
)
def test_vllm_reads_tokenizer_info(info, expected):
    lm = FakeSession("vllm", info=info)
    assert unconditional_text(lm) == expected and lm.transport.urls == ["http://x/tokenizer_info"]


def test_vllm_without_tokenizer_info_says_how_to_fix_it():
    with pytest.raises(StrategyUnavailableError, match="--enable-tokenizer-info-endpoint"):
        unconditional_text(FakeSession("vllm", info=None))
