"""A toy character-level `ChoiceLM` in numpy: exact, instant, and dependency-free, for testing the base classes."""

import numpy as np

from autocog.lm import ChoiceLM
from autocog.lm.lm import log_softmax

ALPHABET = "abcdefghijklmnopqrstuvwxyz .,:?\n0123456789"
BOS, EOS = len(ALPHABET), len(ALPHABET) + 1


class ToyLM(ChoiceLM):
    """Next-token logits depend on the last two tokens through seeded random tables. Characters outside
    ``ALPHABET`` are dropped by the tokenizer (so some strings tokenize to nothing)."""

    def __init__(self, seed=0, n_ctx=256, **kwargs):
        super().__init__(**kwargs)
        rng = np.random.default_rng(seed)
        vocab = len(ALPHABET) + 2
        self.last = rng.normal(0, 2.0, (vocab, vocab))
        self.before = rng.normal(0, 1.0, (vocab, vocab))
        self._n_ctx = n_ctx
        self.calls = 0

    def tokenize(self, text, bos=False):
        ids = [ALPHABET.index(c) for c in text if c in ALPHABET]
        return [BOS] + ids if bos else ids

    def detokenize(self, tokens):
        return "".join(ALPHABET[t] for t in tokens if t < len(ALPHABET))

    def greedy_impl(self, tokens):
        self.calls += 1
        before = tokens[-2] if len(tokens) > 1 else BOS
        return log_softmax(self.last[tokens[-1]] + self.before[before])

    @property
    def eos_token_ids(self):
        return {EOS}

    @property
    def bos_token_id(self):
        return BOS

    @property
    def n_ctx(self):
        return self._n_ctx


def brute_force(lm, prompt, choices):
    from autocog.lm.lm import split_boundary

    prompt, continuations = split_boundary(prompt, choices)
    ids = lm.tokenize(prompt, bos=True)
    out = []
    for text in continuations:
        toks = lm.tokenize(text)
        out.append([float(lm.greedy_impl(ids + toks[:k])[t]) for k, t in enumerate(toks)])
    return out
