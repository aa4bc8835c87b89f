"""The prefix KV cache of `autocog.lm.tf.model.TfLM`: the KV of the last token sequence the model evaluated and the
logits at its last position, so that a new call pays only for the tokens after the longest common prefix.
Also the two spellings of transformers' cache argument (``cache`` since 5.x, ``past_key_values`` before).
Every name here is also importable from `autocog.lm.tf.model`.

>>> cache = TfPrefixCache(model)                                # doctest: +SKIP
>>> logits = cache.extend(tokenizer.encode("Hello world"))      # doctest: +SKIP
"""

from __future__ import annotations

import copy
from contextlib import nullcontext
from typing import Any

from autocog.core.prefix_cache import PrefixCache


def cache_kwarg(model) -> str:
    """The name under which the model's forward takes a KV cache (``cache`` since transformers 5.x,
    ``past_key_values`` before)."""
    import inspect

    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def output_cache(out):
    """The KV cache of a forward pass's output, under either name."""
    kv = getattr(out, "cache", None)
    return kv if kv is not None else out.past_key_values


def copy_cache(kv: Any) -> Any:
    """A copy of a transformers ``Cache`` that a pass may extend while ``kv`` stays as it is: what
    ``copy.deepcopy(kv)`` gives (its layers copied, their tensors cloned, any other mutable state deep-copied) at a
    tenth of its cost: deepcopy's bookkeeping over a cache's small objects costs more than a short prefix's tensors.

    >>> past = copy_cache(cache.kv); past.batch_repeat_interleave(4)   # cache.kv keeps one row  # doctest: +SKIP
    """
    import torch

    shared = (bool, int, float, str, type(None), type, torch.device, torch.dtype)  # immutable: not copied

    def value(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return v.clone()
        return v if isinstance(v, shared) else copy.deepcopy(v)

    def layer(item: Any) -> Any:  # transformers 5: a layer object; 4.x: a tensor
        if isinstance(item, (torch.Tensor, type)) or not hasattr(item, "__dict__"):
            return value(item)
        twin = copy.copy(item)
        twin.__dict__.update({name: value(v) for name, v in vars(item).items()})
        return twin

    if not hasattr(kv, "__dict__"):
        return copy.deepcopy(kv)
    twin = copy.copy(kv)
    twin.__dict__.update(
        {name: [layer(item) for item in v] if isinstance(v, list) else value(v) for name, v in vars(kv).items()}
    )
    return twin


class TfPrefixCache(PrefixCache):
    """The KV cache (a transformers ``Cache``, ``kv``) of the last token sequence a model evaluated, and the
    logits at its last position (the keep/reset decision is `autocog.core.prefix_cache.PrefixCache`'s).

    `extend(tokens)` returns the last-position logits of ``tokens``, reusing the KV of the longest common
    prefix with the previous sequence. Any failure resets it, so it never holds a stale state.
    """

    def __init__(self, model: Any):
        self.model = model
        self.cache_kwarg = cache_kwarg(model)
        self.reset()

    def reset(self) -> None:
        self.tokens: list[int] = []
        self.kv: Any = None
        self.last_logits: Any = None
        self.evaluated = 0  # tokens run through the model since creation (for accounting)

    def truncate(self, keep: int) -> int:
        """Keep the first ``keep`` tokens. The KV may hold more than ``tokens`` (a tree pass leaves its trie's
        KV there, dropped here or in `run`, whichever comes first: one crop instead of two)."""
        length = 0 if self.kv is None else self.kv.get_seq_length()
        if length > keep:
            # negative = number of tokens to drop (transformers 4.x and 5.x agree on this form)
            self.kv.crop(keep - length)
        if len(self.tokens) > keep:
            self.tokens = self.tokens[:keep]
            self.last_logits = None
        return keep

    def run(self, tokens: list[int], keep: int, **model_kwargs: Any) -> Any:
        """Feed ``tokens[keep:]`` (plus whatever ``model_kwargs`` adds) on top of the cached ``tokens[:keep]``
        (the KV is first cropped to them), under ``torch.inference_mode`` (entered unless it already is)."""
        import torch

        try:
            if keep:
                self.truncate(keep)
            with nullcontext() if torch.is_inference_mode_enabled() else torch.inference_mode():
                out = self.model(**{self.cache_kwarg: self.kv if keep else None}, use_cache=True, **model_kwargs)
        except BaseException:
            self.reset()
            raise
        self.kv = output_cache(out)
        self.tokens = list(tokens)
        return out

    def run_rest(self, tokens: list[int], keep: int) -> Any:
        import torch

        new = torch.tensor([tokens[keep:]], dtype=torch.long, device=self.model.device)
        out = self.run(tokens, keep, input_ids=new, logits_to_keep=1)
        self.evaluated += new.shape[1]
        return out.logits[0, -1]
