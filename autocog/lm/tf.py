"""`TfLM`: Hugging Face transformers causal language models.

Fast paths: the KV of the longest common prefix with the previous call is kept (`PrefixCache`), so
programs and decoding loops only pay for new tokens; `evaluate_tree` scores the whole choice trie in one
forward pass over the cached prompt, with a 4D tree attention mask (each trie token sees the prompt and
its own ancestors) and depth-based position ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from .choice import ChoiceLM, TokenChoiceTree
from .errors import ModelNotFoundError, missing_backend
from .greedy import common_prefix_length


def cache_argument(model) -> str:
    """The keyword under which ``model``'s forward takes the KV cache: ``cache`` (transformers >= 5.24, where
    ``past_key_values`` is deprecated) or ``past_key_values`` (4.x and early 5.x)."""
    import inspect

    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - an opaque forward
        return "past_key_values"
    return "cache" if "cache" in params and "past_key_values" not in params else "past_key_values"


def output_cache(out):
    """The KV cache a forward pass returned (``out.cache`` on transformers >= 5.24, else ``past_key_values``)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def _require_torch():
    try:
        import torch
        import transformers
    except ImportError as error:
        raise missing_backend(getattr(error, "name", None) or "transformers", "transformers") from error
    return torch, transformers


class PrefixCache:
    """The KV cache of the last token sequence a model evaluated, and the logits at its last position.

    `extend(tokens)` returns the last-position logits of ``tokens``, reusing the KV of the longest common
    prefix with the previous sequence. Any failure resets it, so it never holds a stale state.
    """

    def __init__(self, model):
        self.model = model
        self.cache_key = cache_argument(model)
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
                out = self.model(**{self.cache_key: self.kv if keep else None}, use_cache=True, **model_kwargs)
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


class TfLM(ChoiceLM):
    """A transformers causal LM (fields ``model``, ``tokenizer``, ``device``).

    >>> lm = TfLM(**TfLM.create(model_path=path, device="cpu"), completion_kwargs={"max_new_tokens": 20})  # doctest: +SKIP
    >>> lm.choose("Question: What is the capital of France?\\nAnswer:", [" Paris", " London", " Berlin"])  # doctest: +SKIP
    0
    """

    def __init__(self, model, tokenizer, device: Union[str, Any, None] = None,
                 completion_kwargs: Optional[dict] = None, max_retries: Optional[int] = None,
                 chat_template: Optional[str] = None):
        torch, _ = _require_torch()
        super().__init__(completion_kwargs=completion_kwargs, max_retries=max_retries)
        if device is not None:
            model = model.to(torch.device(device))
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.chat_template = chat_template  # None: the tokenizer's own
        self.device = self.model.device
        self.cache = PrefixCache(self.model)
        self._special_prefix = self._find_special_prefix()
        self._fragment_anchor = self._find_fragment_anchor()

    @classmethod
    def create(cls, model_path: Union[str, Path, None] = None, device: str = "cpu", dtype: Union[str, Any, None] = None,
               gguf_file: Optional[str] = None, **model_kwargs: Any) -> dict:
        """Constructor arguments (``model``, ``tokenizer``, ``device``) for a local model directory, a ``.gguf``
        file (converted once, then cached), or the embedded SmolLM2-135M-Instruct when ``model_path`` is None.

        ``dtype``: a torch dtype or its name (default: float32 on CPU, the checkpoint's dtype elsewhere)."""
        torch, transformers = _require_torch()
        from ..models import gguf_to_transformers, smollm2_transformers

        if model_path is None:
            path = smollm2_transformers()
        else:
            path = Path(model_path)
            if gguf_file is not None:
                path = path / gguf_file
            if path.suffix == ".gguf":
                path = gguf_to_transformers(path)
            elif not path.is_dir():
                raise ModelNotFoundError(f"model path not found (or not a directory): {model_path}")
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        if dtype is None and str(device).startswith("cpu"):
            dtype = torch.float32
        if dtype is not None:
            model_kwargs["dtype"] = dtype
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        model = transformers.AutoModelForCausalLM.from_pretrained(path, **model_kwargs)
        return {"model": model, "tokenizer": tokenizer, "device": device}

    # --- tokens --------------------------------------------------------------------------------
    def _find_special_prefix(self) -> list[int]:
        """The special tokens (BOS) the tokenizer puts in front of a text, found by encoding a probe."""
        plain = self.tokenizer.encode("a", add_special_tokens=False)
        full = self.tokenizer.encode("a", add_special_tokens=True)
        for start in range(len(full) - len(plain) + 1):
            if full[start:start + len(plain)] == plain:
                return full[:start]
        return []

    def _find_fragment_anchor(self) -> list[int]:
        """SentencePiece tokenizers add a space in front of a fragment; tokenizing after an anchor avoids it."""
        if self.tokenizer.decode(self.tokenizer.encode("a", add_special_tokens=False)) == "a":
            return []
        return self.tokenizer.encode("\n", add_special_tokens=False)

    def tokenize(self, text: str, bos: bool = False) -> list[int]:
        if self._fragment_anchor:
            ids = self.tokenizer.encode("\n" + text, add_special_tokens=False)[len(self._fragment_anchor):]
        else:
            ids = self.tokenizer.encode(text, add_special_tokens=False)
        if bos and ids[:len(self._special_prefix)] != self._special_prefix:  # BOS once (a chat template may write it)
            ids = self._special_prefix + ids
        return ids

    def apply_chat_template(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        """The tokenizer's own ``apply_chat_template(messages, tokenize=False)`` (or ``chat_template=``'s).

        >>> lm.apply_chat_template([{"role": "user", "content": "Hi"}])[-22:]     # doctest: +SKIP
        '<|im_start|>assistant\\n'
        """
        from .chat import check_messages, missing_template

        messages = check_messages(messages)
        template = self.chat_template or getattr(self.tokenizer, "chat_template", None)
        if not template:
            raise missing_template(f"the tokenizer of {type(self).__name__}")
        import jinja2

        from .errors import ChatTemplateError

        try:
            return self.tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                                      add_generation_prompt=add_generation_prompt)
        except jinja2.TemplateError as error:
            raise ChatTemplateError(f"the chat template failed: {error}") from error

    def tokenize_batch(self, texts: Sequence[str]) -> list[list[int]]:
        anchor = self._fragment_anchor
        prefix = "\n" if anchor else ""
        encoded = self.tokenizer([prefix + text for text in texts], add_special_tokens=False)["input_ids"]
        return [ids[len(anchor):] for ids in encoded]

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.tokenizer.decode([int(t) for t in tokens], skip_special_tokens=True,
                                     clean_up_tokenization_spaces=False)

    @property
    def bos_token_id(self) -> Optional[int]:
        return self.tokenizer.bos_token_id

    @property
    def eos_token_ids(self) -> set[int]:
        ids = set()
        for source in (self.tokenizer.eos_token_id, getattr(self.model.generation_config, "eos_token_id", None)):
            if isinstance(source, int):
                ids.add(source)
            elif source:
                ids.update(int(t) for t in source)
        return ids

    @property
    def n_ctx(self) -> Optional[int]:
        return getattr(self.model.config, "max_position_embeddings", None)

    @property
    def tokens_evaluated(self) -> int:
        return self.cache.evaluated

    # --- evaluation ----------------------------------------------------------------------------
    def greedy_impl(self, tokens: list[int]) -> np.ndarray:
        import torch

        logits = self.cache.extend(tokens)
        return torch.log_softmax(logits.float(), dim=-1).cpu().numpy()

    def recover(self, error: BaseException) -> None:
        import torch

        self.cache.reset()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def evaluate_tree(self, prompt_tokens: list[int], tree: TokenChoiceTree) -> np.ndarray:
        """One forward pass over the prompt's uncached tokens and the trie's unique tokens.

        The input is ``new prompt tokens + trie tokens``; the 4D mask lets a prompt token see the tokens before
        it and a trie token see the whole prompt and its own ancestors; trie positions are ``P + depth - 1``.
        Afterwards the cache holds exactly the prompt."""
        import torch

        cache, device, dtype = self.cache, self.model.device, self.model.dtype
        keep = cache.reusable(prompt_tokens)
        n_prompt, n_nodes, n_new = len(prompt_tokens), len(tree.nodes), len(prompt_tokens) - keep
        internal = tree.internal_nodes()
        if n_new or internal:
            allowed = np.zeros((n_new + n_nodes, n_prompt + n_nodes), dtype=bool)
            allowed[:n_new, :n_prompt] = np.tril(np.ones((n_new, n_prompt), dtype=bool), k=keep)
            allowed[n_new:, :n_prompt] = True
            allowed[n_new:, n_prompt:] = tree.ancestor_mask()
            mask = torch.zeros(allowed.shape, dtype=dtype)
            mask[~torch.from_numpy(allowed)] = torch.finfo(dtype).min
            ids = torch.tensor([prompt_tokens[keep:] + tree.tokens], dtype=torch.long, device=device)
            positions = np.concatenate([np.arange(keep, n_prompt), n_prompt + tree.depths - 1])
            keep_rows = ([n_new - 1] if n_new else []) + [n_new + i for i in internal]
            try:
                out = cache.run(prompt_tokens, keep, input_ids=ids, attention_mask=mask[None, None].to(device),
                                position_ids=torch.from_numpy(positions)[None].to(device),
                                logits_to_keep=torch.tensor(keep_rows, device=device))
            finally:
                cache.truncate(n_prompt)  # the prompt's KV stays; the trie's is dropped
            cache.evaluated += n_new + n_nodes
            logits = out.logits[0].float()
            if n_new:
                cache.last_logits, logits = logits[0], logits[1:]
            rows = logits
        else:
            rows = cache.last_logits.new_empty((0, cache.last_logits.shape[-1]))
        logprobs = torch.log_softmax(torch.cat([cache.last_logits.float()[None], rows.float()]), dim=-1)
        # row 0: after the prompt; row 1 + k: after internal node internal[k]
        row_of = {node: k + 1 for k, node in enumerate(internal)}
        parent_rows = torch.tensor([row_of[n.parent] if n.parent >= 0 else 0 for n in tree.nodes],
                                   device=logprobs.device)
        tokens = torch.tensor(tree.tokens, device=logprobs.device)
        return logprobs[parent_rows, tokens].double().cpu().numpy()
