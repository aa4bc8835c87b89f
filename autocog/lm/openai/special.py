"""The model's BOS and EOS as an OpenAI-compatible server shows them, and ``pmi``'s unconditional context.

The local backends score ``pmi``'s unconditional pass after ``[BOS]`` when the model has a BOS token (even one
it does not put in front of prompts: SmolLM2's ``<|im_start|>``), else after its first EOS
(`autocog.lm.choice.ChoiceLM.unconditional_tokens`). `unconditional_text` gives the same context as text:

* the server puts BOS in front of every prompt (its tokenization of ``""``): ``""``;
* llama_cpp.server: the first of `BOS_TEXTS` that the server tokenizes to one id that it treats as BOS, else
  the lowest id among `EOS_TEXTS` that ends generation; a forced one-token request tells them apart (with
  ``logit_bias`` on the id: BOS is produced but left out of the log-probs, an end token stops generation);
  llama_cpp.server shows neither the special tokens' text nor which one is BOS otherwise;
* vLLM: ``GET /tokenizer_info`` (started with ``--enable-tokenizer-info-endpoint``): ``bos_token``, else
  ``eos_token``;
* other servers: the tokenizer's EOS (tiktoken's ``<|endoftext|>``).

Otherwise `StrategyUnavailableError` asks for ``unconditional_prompt=``. The text is sent like any prompt (vLLM:
as the ids the server's tokenizer gives it, special tokens parsed).

>>> unconditional_text(lm)       # SmolLM2 on llama_cpp.server or vLLM         # doctest: +SKIP
'<|im_start|>'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from autocog.errors import (
    MalformedResponseError,
    RequestFailedError,
    RetryExhaustedError,
    StrategyUnavailableError,
)
from autocog.lm.openai.chat import BOS_TEXTS
from autocog.lm.openai.requests import BIAS

if TYPE_CHECKING:  # pragma: no cover
    from autocog.lm.openai.client import OpenAI

EOS_TEXTS = ("</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>", "<|im_end|>", "<|eot_id|>", "[EOS]", "<|end|>")


def unconditional_text(lm: OpenAI) -> str:
    """The text prompt of ``lm``'s unconditional context (see the module docstring)."""
    tokenizer = lm.tokenizer
    prefix = getattr(tokenizer, "special_prefix", None)
    if prefix is not None:
        prefix()
    if tokenizer.bos_token_id is not None:
        return ""  # the server adds BOS: the empty prompt is [BOS]
    if lm.server == "llama.cpp":
        bos, eos = llama_cpp_specials(lm)
    elif lm.server == "vllm":
        bos, eos = vllm_specials(lm)
    else:
        bos, eos = None, _tokenizer_eos(lm)
    text = bos if bos is not None else eos
    if text is None:
        raise StrategyUnavailableError(
            f"the server at {lm.base_url} says neither the model's BOS nor its EOS token, the context of 'pmi''s "
            "unconditional scores: pass unconditional_prompt="
            + (" or start vLLM with --enable-tokenizer-info-endpoint" if lm.server == "vllm" else "")
        )
    return text


def llama_cpp_specials(lm: OpenAI) -> tuple[Optional[str], Optional[str]]:
    """(BOS text, EOS text) on llama_cpp.server, None where not found; asked once per instance. Also records
    ``lm._server_bos``, the id the server leaves out of its echoes (`dropped_bos`)."""
    found = getattr(lm, "_specials", None)
    if found is None:
        texts = list(dict.fromkeys(BOS_TEXTS + EOS_TEXTS))
        ids = {t: i[0] for t, i in zip(texts, lm.tokenizer.encode_many(texts)) if len(i) == 1}
        distinct = sorted(set(ids.values()))
        kinds = dict(zip(distinct, lm._map(lambda i: _forced_kind(lm, i), distinct)))
        bos = next((t for t in BOS_TEXTS if t in ids and kinds[ids[t]] == "bos"), None)
        ends = sorted((i, t) for t, i in ids.items() if kinds[i] == "end")
        lm._server_bos = ids[bos] if bos is not None else None
        found = lm._specials = (bos, ends[0][1] if ends else None)
    return found


def _forced_kind(lm: OpenAI, token: int) -> str:
    """What llama_cpp.server does with ``token`` forced by ``logit_bias`` as the next token: ``"bos"`` (produced,
    left out of the log-probs: llama-cpp-python drops its BOS from every list), ``"end"`` (generation stops:
    an end-of-generation token) or ``"token"``."""
    body = {"max_tokens": 1, "temperature": 0.0, "logprobs": 1, "logit_bias": {str(token): BIAS}}
    data = lm._completion_request("Hello", body, lm._sampling_extras({"top_k": 0}))
    try:
        choice = data["choices"][0]
        tokens = (choice.get("logprobs") or {}).get("tokens") or []
        finish = choice.get("finish_reason")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise MalformedResponseError(f"unexpected answer from {lm.base_url}: {str(data)[:200]}") from None
    if tokens:
        return "token"
    return "end" if finish == "stop" else "bos" if finish == "length" else "token"


def vllm_specials(lm: OpenAI) -> tuple[Optional[str], Optional[str]]:
    """(BOS text, EOS text) from vLLM's ``/tokenizer_info`` (None where absent or the endpoint is off)."""
    found = getattr(lm, "_specials", None)
    if found is None:
        try:
            info = lm.transport.get(lm.root_url + "/tokenizer_info", "models")
        except (RequestFailedError, RetryExhaustedError, MalformedResponseError):
            info = {}
        found = lm._specials = (_text(info, "bos_token"), _text(info, "eos_token"))
    return found


def _text(info: Any, key: str) -> Optional[str]:
    value = info.get(key) if isinstance(info, dict) else None
    if isinstance(value, dict):  # an AddedToken as JSON
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _tokenizer_eos(lm: OpenAI) -> Optional[str]:
    eos = lm.tokenizer.eos_token_id
    return lm.tokenizer.decode([eos]) if eos is not None else None


def dropped_bos(lm: OpenAI) -> Optional[int]:
    """The id llama_cpp.server leaves out of every echo (the model's BOS): the BOS it adds, else the one
    `llama_cpp_specials` found (None when not asked yet)."""
    bos = lm.tokenizer.bos_token_id
    return bos if bos is not None else getattr(lm, "_server_bos", None)
