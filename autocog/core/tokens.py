"""Token-sequence helpers shared by the backends, the prefix caches and the scoring layer: `common_prefix_length`,
`FragmentEncoder` (a continuation's tokens with no space added in front, BOS added once), and `TokenVocabulary`
(what a backend tells a grammar engine about its tokens)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

# Tokenizer formats a grammar engine can read directly (`TokenVocabulary.native`).
HUGGINGFACE = "huggingface"  # a transformers (fast) tokenizer object
LLAMA_CPP = "llama.cpp"  # a llama.cpp ``llama_vocab`` pointer


@dataclass(frozen=True)
class TokenVocabulary:
    """A backend's vocabulary for structured output (`GreedyLM.token_vocabulary`).

    ``size``: the width of the next-token rows (masks are that long); ``eos``: the ids that end a generation,
    sorted; ``token_bytes``: each id's bytes in id order (called only when the engine needs them);
    ``native``: ``(format, handle)`` when the engine can read the tokenizer itself, exactly and natively
    (format `HUGGINGFACE` or `LLAMA_CPP`), else None. A backend whose tokenizer is one of those formats
    reuses it: ``native=(HUGGINGFACE, my_hf_tokenizer)``.
    """

    size: int
    eos: list[int]
    token_bytes: Callable[[], list[bytes]]
    native: Optional[tuple[str, Any]] = None


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens two sequences share (what a prefix KV cache can keep)."""
    n = min(len(a), len(b))
    for i in range(min(n, 16)):  # different prompts usually part early (after BOS, a shared header aside)
        if a[i] != b[i]:
            return i
    if list(a[:n]) == list(b[:n]):
        return n
    return int(np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))[0])


def prepend_once(prefix: Sequence[int], ids: Sequence[int]) -> list[int]:
    """``prefix + ids`` unless ``ids`` already starts with ``prefix`` (BOS once: a chat template may have written it).

    >>> prepend_once([1], [5, 6]), prepend_once([1], [1, 5])
    ([1, 5, 6], [1, 5])
    """
    prefix, ids = list(prefix), list(ids)
    return ids if ids[: len(prefix)] == prefix else prefix + ids


class FragmentEncoder:
    """A backend's raw encoder turned into `LM.tokenize`: a text is encoded as a fragment (a continuation, with
    no special token and no space added in front) and the special prefix (BOS) is added once on request.

    ``encode(text)``: the raw token ids, no special token; ``decode(ids)`` its inverse; ``prefix``: what the model
    expects in front of a prompt (``[bos]`` or ``[]``); ``encode_many``: a batch form of ``encode`` (optional).
    SentencePiece tokenizers put a space in front of a text (``decode(encode("a")) != "a"``): a fragment is then
    encoded after an anchor (``"\\n"``) whose tokens are cut off, unless the text merges with it (then as it is).

    >>> enc = FragmentEncoder(lambda t: [ord(c) for c in t], lambda ids: "".join(map(chr, ids)), prefix=[1])
    >>> enc.tokenize("ab"), enc.tokenize("ab", bos=True), enc.tokenize("\\x01a", bos=True)
    ([97, 98], [1, 97, 98], [1, 97])
    """

    ANCHOR_TEXT = "\n"

    def __init__(
        self,
        encode: Callable[[str], list[int]],
        decode: Callable[[list[int]], str],
        prefix: Sequence[int] = (),
        encode_many: Optional[Callable[[list[str]], list[list[int]]]] = None,
    ):
        self.encode = encode
        self.encode_many = encode_many or (lambda texts: [encode(t) for t in texts])
        self.prefix = [int(t) for t in prefix]
        self.anchor: list[int] = [] if decode(encode("a")) == "a" else list(encode(self.ANCHOR_TEXT))

    def tokenize(self, text: str, bos: bool = False) -> list[int]:
        """The ids of ``text`` as a fragment; ``bos``: with the prefix in front, once (a chat template may
        already have written it)."""
        ids = self.cut(text, self.encode(self.ANCHOR_TEXT + text)) if self.anchor else list(self.encode(text))
        return self.with_prefix(ids) if bos else ids

    def fragments(self, texts: Sequence[str]) -> list[list[int]]:
        """``[tokenize(t) for t in texts]`` in one ``encode_many`` call."""
        if not self.anchor:
            return [list(ids) for ids in self.encode_many(list(texts))]
        encoded = self.encode_many([self.ANCHOR_TEXT + text for text in texts])
        return [self.cut(text, ids) for text, ids in zip(texts, encoded)]

    def cut(self, text: str, anchored: Sequence[int]) -> list[int]:
        """The ids of ``text`` from those of anchor + ``text``: the anchor's cut off, or when the text merged with
        it, ``text`` encoded alone."""
        n = len(self.anchor)
        if list(anchored[:n]) == self.anchor:
            return list(anchored[n:])
        return list(self.encode(text))

    def with_prefix(self, ids: list[int]) -> list[int]:
        """``prefix + ids`` unless ``ids`` already starts with the prefix."""
        return prepend_once(self.prefix, ids)
