"""Echo by token ids (`autocog.lm.openai.ids`) without a server: which sequences are sent, how they are packed
into requests, and how a malformed ``prompt_logprobs`` answer is refused. The real server: tests/test_vllm.py."""

from collections import Counter

import pytest

from autocog.errors import MalformedResponseError
from autocog.lm.openai.ids import IdEcho, _Item, _leaves, _read


def test_only_leaves_are_sent_and_prefixes_read_from_them():
    item = _leaves(_Item([1, 2], [[5], [5, 6], [5, 6, 7], [8], [5, 9]]))
    assert item.leaves == [2, 3, 4]
    assert item.leaf == [2, 2, 2, 3, 4]


class _FakeSession:
    def __init__(self, concurrency):
        self.concurrency = concurrency
        self.requests = Counter()


@pytest.mark.parametrize("concurrency,expected", [(1, [6]), (2, [3, 3]), (3, [2, 2, 2]), (8, [1] * 6)])
def test_prompts_stay_whole_and_fill_the_slots(concurrency, expected):
    items = [_leaves(_Item([1], [[2], [3]])) for _ in range(6)]
    sequences = [(i, j) for i, item in enumerate(items) for j in item.leaves]
    packs = IdEcho(_FakeSession(concurrency))._pack(items, sequences)
    assert [len({i for i, _ in p}) for p in packs] == expected  # prompts per request
    assert [s for p in packs for s in p] == sequences


def test_a_prompt_larger_than_a_request_is_split():
    items = [_leaves(_Item([1], [[k] for k in range(2, 12)]))]
    sequences = [(0, j) for j in items[0].leaves]
    packs = IdEcho(_FakeSession(1), max_sequences=4)._pack(items, sequences)
    assert [len(p) for p in packs] == [4, 4, 2]


def test_read_takes_each_tokens_own_logprob_by_id():
    rows = [None, {"7": {"logprob": -1.5}, "3": {"logprob": -0.1}}, {"9": {"logprob": -2.0}}]
    assert _read({"prompt_logprobs": rows, "prompt_token_ids": [1, 7, 9]}, [1, 7, 9], "u") == [None, -1.5, -2.0]


@pytest.mark.parametrize(
    "choice",
    [
        {},
        {"prompt_logprobs": [None, {"7": {"logprob": -1.5}}]},  # one position short
        {"prompt_logprobs": [None, {"3": {"logprob": -1.5}}, {"9": {"logprob": -2.0}}]},  # token 7 missing
        {"prompt_logprobs": [None, {"7": {"logprob": None}}, {"9": {"logprob": -2.0}}]},
        {"prompt_logprobs": [None, {"7": {"logprob": -1.0}}, {"9": {"logprob": -2.0}}], "prompt_token_ids": [1, 7, 8]},
    ],
)
def test_malformed_answers_are_typed_errors(choice):
    with pytest.raises(MalformedResponseError):
        _read(choice, [1, 7, 9], "http://x")


def test_echo_on_the_chat_endpoint_fails_before_sending_anything():
    from vllm_server import free_port

    from autocog.errors import StrategyUnavailableError
    from autocog.lm.openai import OpenAI

    lm = OpenAI(model="m", base_url=f"http://127.0.0.1:{free_port()}/v1", api_key="none", chat=True, server="vllm")
    with pytest.raises(StrategyUnavailableError, match="chat endpoint has no echo"):
        lm.choice_distribution("Q:", [" a", " b"], strategy="echo")
    assert sum(lm.requests.values()) == 0
    lm.close()
