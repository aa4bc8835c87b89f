"""References the llama.cpp tests compare against: llama.cpp evaluated from scratch, and the exact KV settings."""

import llama_cpp
import numpy as np

from autocog.core.checks import split_boundary

# F32 weights and an F32 KV cache: llama.cpp then agrees with transformers to ~1e-5.
EXACT = dict(type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)


def brute_force_llama(lm, ref, prompt, choices):
    """Reference: prompt + choice evaluated from scratch for every choice, through llama.cpp itself."""
    prompt, continuations = split_boundary(prompt, choices)
    prompt_ids = lm.tokenize(prompt, bos=True)
    out = []
    for text in continuations:
        ids = lm.tokenize(text)
        logprobs = all_logprobs(ref, prompt_ids + ids)
        out.append([float(logprobs[len(prompt_ids) + k - 1, t]) for k, t in enumerate(ids)])
    return out


def all_logprobs(ref, ids):
    """log_softmax of the logits at every position of ``ids``, evaluated from scratch."""
    ref.reset()
    ref.eval(ids)
    logits = np.array(ref.scores[: len(ids)], dtype=np.float64)
    top = logits.max(axis=1, keepdims=True)
    return logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))


def counting_decodes(lm):
    """Record the tokens of each of ``lm``'s llama_decode calls (a list that fills as it decodes); ``del
    lm.cache.decode`` undoes it."""
    calls = []
    decode = lm.cache.decode
    lm.cache.decode = lambda batch=None: (
        calls.append(int((lm.cache.batch.struct if batch is None else batch).n_tokens)),
        decode(batch),
    )[1]
    return calls
