"""A toy character-level `ChoiceLM` in numpy: exact, instant, and dependency-free, for testing the base classes."""

import numpy as np

from autocog.core.normalization import log_softmax
from autocog.lm import LM, ChoiceLM

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
    from autocog.core.checks import split_boundary

    prompt, continuations = split_boundary(prompt, choices)
    ids = lm.tokenize(prompt, bos=True)
    out = []
    for text in continuations:
        toks = lm.tokenize(text)
        out.append([float(lm.greedy_impl(ids + toks[:k])[t]) for k, t in enumerate(toks)])
    return out


# --- helpers ----------------------------------------------------------------------------------------------


class SpyLM(LM):
    """Counts every model call; answers nothing useful (for tests that must fail before any call)."""

    def __init__(self):
        self.calls = 0

    def tokenize(self, text, bos=False):
        self.calls += 1
        return [ord(c) for c in text]

    def detokenize(self, tokens):
        self.calls += 1
        return "".join(map(chr, tokens))

    def complete(self, prompt, stop="\n", **kwargs):
        self.calls += 1
        return "x"

    def choose(self, prompt, choices, **kwargs):
        self.calls += 1
        return 0


class TextOnlyLM(LM):
    """An OpenAI-like backend: complete, choose and choice_distribution only (no next-token log-probs)."""

    def __init__(self, inner, scores=True):
        self.inner, self.scores = inner, scores
        self.calls = {"complete": 0, "choose": 0, "choice_distribution": 0}

    def tokenize(self, text, bos=False):
        return self.inner.tokenize(text, bos=bos)

    def detokenize(self, tokens):
        return self.inner.detokenize(tokens)

    def complete(self, prompt, stop="\n", **kwargs):
        self.calls["complete"] += 1
        return self.inner.complete(prompt, stop=stop, **kwargs)

    def choose(self, prompt, choices, **kwargs):
        self.calls["choose"] += 1
        return self.inner.choose(prompt, choices, **kwargs)

    def choice_distribution(self, prompt, choices, normalization=None, **kwargs):
        if not self.scores:
            raise NotImplementedError("this backend only chooses")
        self.calls["choice_distribution"] += 1
        return self.inner.choice_distribution(prompt, choices, normalization=normalization, **kwargs)
