"""A backend's vocabulary as the grammar engine needs it: every token id's bytes, EOS, the logits' width.

* `TfLM`: ``llguidance.hf.from_tokenizer`` on the Hugging Face (fast) tokenizer;
* `LLaMa`: ``llguidance.llamacpp.lltokenizer_from_vocab`` on llama.cpp's vocabulary;
* any other `GreedyLM`: a generic `TokenizerWrapper` over ``lm.token_bytes()`` when the backend has it, else
  over ``lm.detokenize([i])`` (exact for whole-character tokens; a token holding part of a UTF-8 character
  reads as U+FFFD there, so only the two paths above generate such characters exactly).

Tokens are bytes, so a character that the model's vocabulary splits across tokens (partial UTF-8) is matched
byte by byte and generated correctly. `vocabulary(lm)` is built once per model object (about a second for a
50k vocabulary) and cached.

>>> v = vocabulary(lm)                   # doctest: +SKIP
>>> v.size, sorted(v.eos)                # doctest: +SKIP
(49152, [0, 2])
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass
from typing import Any, Optional, Union

from autocog.structured.engine import llguidance

__all__ = ["GrammarVocabulary", "token_bytes", "vocabulary"]


@dataclass
class GrammarVocabulary:
    """``tokenizer``: the engine's tokenizer; ``size``: the width of the model's next-token rows (masks are
    that long); ``eos``: the ids that end a generation, in order."""

    tokenizer: Any
    size: int
    eos: list[int]

    def single_token(self, text: str) -> Optional[int]:
        """The id of the one token that spells ``text``, or None when it takes several."""
        ids = self.tokenizer.tokenize_str(text)
        return ids[0] if len(ids) == 1 else None


_CACHE: weakref.WeakKeyDictionary[Any, GrammarVocabulary] = weakref.WeakKeyDictionary()


def vocabulary(lm: Any) -> GrammarVocabulary:
    """The engine's view of ``lm``'s vocabulary (cached per model object)."""
    cached = _CACHE.get(lm)
    if cached is None:
        cached = _CACHE[lm] = _build(lm)
    return cached


def _build(lm: Any) -> GrammarVocabulary:
    llguidance()
    eos = sorted(lm.eos_token_ids)
    kind = type(lm).__name__
    if kind == "TfLM" and hasattr(lm, "tokenizer"):
        from llguidance.hf import from_tokenizer

        size = int(lm.model.config.vocab_size)
        try:
            tokenizer = from_tokenizer(lm.tokenizer, n_vocab=size, eos_token=eos or None)
            return GrammarVocabulary(tokenizer, size, eos)
        except ValueError:  # a slow (Python) tokenizer: the generic path below
            pass
    elif kind == "LLaMa" and hasattr(lm, "model"):
        import llama_cpp
        from llguidance.llamacpp import lltokenizer_from_vocab

        vocab = llama_cpp.llama_model_get_vocab(lm.model.model)
        size = int(llama_cpp.llama_vocab_n_tokens(vocab))
        with warnings.catch_warnings():  # llguidance reads token attributes through a deprecated alias
            warnings.simplefilter("ignore", DeprecationWarning)
            tokenizer = lltokenizer_from_vocab(vocab, eos_token=eos or None)
        return GrammarVocabulary(tokenizer, size, eos)
    return _generic(lm, eos)


def token_bytes(lm: Any, size: int) -> list[bytes]:
    """Each token id's bytes: ``lm.token_bytes()`` when the backend has it, else ``detokenize([i])`` as UTF-8."""
    own = getattr(lm, "token_bytes", None)
    if callable(own):
        return [bytes(b) for b in own()]
    return [lm.detokenize([i]).encode("utf-8") for i in range(size)]


class _LMTokenizer:
    """The object llguidance's `TokenizerWrapper` reads: ids, token bytes, and a tokenize call."""

    def __init__(self, lm: Any, tokens: list[bytes], eos: list[int]):
        self.lm, self.tokens = lm, tokens
        self.eos_token_id = eos[0] if eos else len(tokens) - 1
        self.bos_token_id = getattr(lm, "bos_token_id", None)
        self.special_token_ids = list(eos)

    def __call__(self, text: Union[str, bytes]) -> list[int]:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return list(self.lm.tokenize(text))


def _generic(lm: Any, eos: list[int]) -> GrammarVocabulary:
    llg = llguidance()
    size = getattr(lm, "n_vocab", None)
    if size is None:
        size = len(lm.greedy([lm.bos_token_id if lm.bos_token_id is not None else 0]))
    tokens = token_bytes(lm, int(size))
    for t in eos:  # EOS reads as no text: give it a name so the engine sees it as a special token
        if t < len(tokens):
            tokens[t] = b"\xff<eos>"
    wrapper = llg.TokenizerWrapper(_LMTokenizer(lm, tokens, eos))
    return GrammarVocabulary(llg.LLTokenizer(wrapper, n_vocab=len(tokens), eos_token=eos or None), len(tokens), eos)
