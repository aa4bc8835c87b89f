"""The prefix KV cache of `autocog.lm.tf.model.TfLM`: the KV of the last token sequence the model evaluated and the
logits at its last position, so that a new call pays only for the tokens after the longest common prefix.
Also the two spellings of transformers' cache argument (``cache`` since 5.x, ``past_key_values`` before).
Every name here is also importable from `autocog.lm.tf.model`.

>>> cache = PrefixCache(model)                                  # doctest: +SKIP
>>> logits = cache.extend(tokenizer.encode("Hello world"))      # doctest: +SKIP
"""

from __future__ import annotations

from autocog.core.tokens import common_prefix_length


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


class PrefixCache:
    """The KV cache of the last token sequence a model evaluated, and the logits at its last position.

    `extend(tokens)` returns the last-position logits of ``tokens``, reusing the KV of the longest common
    prefix with the previous sequence. Any failure resets it, so it never holds a stale state.
    """

    def __init__(self, model):
        self.model = model
        self.cache_kwarg = cache_kwarg(model)
        self.reset()

    def reset(self) -> None:
        self.tokens: list[int] = []
        self.kv = None
        self.last_logits = None
        self.evaluated = 0  # tokens run through the model since creation (for accounting)

    def truncate(self, keep: int) -> None:
        if self.kv is not None and self.kv.get_seq_length() > keep:
            # negative = number of tokens to drop (transformers 4.x and 5.x agree on this form)
            self.kv.crop(keep - self.kv.get_seq_length())
        if len(self.tokens) > keep:
            self.tokens = self.tokens[:keep]
            self.last_logits = None

    def reusable(self, tokens: list[int]) -> int:
        """Drop what ``tokens`` cannot reuse; return how many of its tokens stay cached. All of them only when
        the last logits are known too, else at least one token is left to run."""
        common = common_prefix_length(self.tokens, tokens)
        if common == len(tokens) == len(self.tokens) and self.last_logits is not None:
            return common
        keep = min(common, len(tokens) - 1)
        self.truncate(keep)
        return keep

    def run(self, tokens: list[int], keep: int, **model_kwargs):
        """Feed ``tokens[keep:]`` (plus whatever ``model_kwargs`` adds) on top of the cached ``tokens[:keep]``."""
        import torch

        try:
            with torch.inference_mode():
                out = self.model(**{self.cache_kwarg: self.kv if keep else None}, use_cache=True, **model_kwargs)
        except BaseException:
            self.reset()
            raise
        self.kv = output_cache(out)
        self.tokens = list(tokens)
        return out

    def extend(self, tokens: list[int]):
        import torch

        keep = self.reusable(tokens)
        if keep == len(tokens):
            return self.last_logits
        new = torch.tensor([tokens[keep:]], dtype=torch.long, device=self.model.device)
        out = self.run(tokens, keep, input_ids=new, logits_to_keep=1)
        self.evaluated += new.shape[1]
        self.last_logits = out.logits[0, -1]
        return self.last_logits
