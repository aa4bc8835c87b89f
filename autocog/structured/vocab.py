"""A backend's vocabulary as the grammar engine needs it: every token id's bytes, EOS, the logits' width.

Each backend supplies its own, through ``lm.token_vocabulary()`` (`autocog.core.tokens.TokenVocabulary`):

* a tokenizer the engine reads natively: ``llguidance.hf.from_tokenizer`` on a Hugging Face (fast)
  tokenizer (`TfLM`), ``llguidance.llamacpp.lltokenizer_from_vocab`` on llama.cpp's vocabulary (`LLaMa`);
* otherwise (or for a slow Hugging Face tokenizer): a generic `TokenizerWrapper` over the backend's
  ``token_bytes()``, by default ``detokenize([i])`` as UTF-8 (exact for whole-character tokens; a token holding
  part of a UTF-8 character reads as U+FFFD there, so a backend that knows its bytes overrides it).

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

from autocog.core.tokens import HUGGINGFACE, LLAMA_CPP, TokenVocabulary
from autocog.structured.engine import llguidance

__all__ = ["GrammarVocabulary", "vocabulary"]


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
    if not callable(getattr(lm, "token_vocabulary", None)):
        raise TypeError(f"{type(lm).__name__} has no token_vocabulary(): token masks need a GreedyLM")
    source: TokenVocabulary = lm.token_vocabulary()
    tokenizer = _native(source) if source.native is not None else None
    if tokenizer is not None:
        return GrammarVocabulary(tokenizer, source.size, list(source.eos))
    return _generic(lm, source)


def _native(source: TokenVocabulary) -> Any:
    """The engine's tokenizer read from a native format, or None when it cannot read this one."""
    assert source.native is not None
    kind, handle = source.native
    eos = list(source.eos) or None
    if kind == HUGGINGFACE:
        from llguidance.hf import from_tokenizer

        try:
            return from_tokenizer(handle, n_vocab=source.size, eos_token=eos)
        except ValueError:  # a slow (Python) tokenizer: the generic path
            return None
    if kind == LLAMA_CPP:
        from llguidance.llamacpp import lltokenizer_from_vocab

        with warnings.catch_warnings():  # llguidance reads token attributes through a deprecated alias
            warnings.simplefilter("ignore", DeprecationWarning)
            return lltokenizer_from_vocab(handle, eos_token=eos)
    return None


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


def _generic(lm: Any, source: TokenVocabulary) -> GrammarVocabulary:
    llg = llguidance()
    eos = list(source.eos)
    tokens = [bytes(b) for b in source.token_bytes()]
    for t in eos:  # EOS reads as no text: give it a name so the engine sees it as a special token
        if t < len(tokens):
            tokens[t] = b"\xff<eos>"
    wrapper = llg.TokenizerWrapper(_LMTokenizer(lm, tokens, eos))
    return GrammarVocabulary(llg.LLTokenizer(wrapper, n_vocab=len(tokens), eos_token=eos or None), len(tokens), eos)
