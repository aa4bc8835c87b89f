"""`TfLM`: Hugging Face transformers causal language models.

Fast paths: the KV of the longest common prefix with the previous call is kept (`TfPrefixCache`), so
programs and decoding loops only pay for new tokens; `evaluate_tree` scores the whole choice trie in one
forward pass over the cached prompt, with a 4D tree attention mask (each trie token sees the prompt and
its own ancestors) and depth-based position ids; `evaluate_trees` scores many prompts' tries in one
forward pass (`TfLM.packed_pass`): the prefix all of them share is evaluated once, in the prefix cache.
The cache itself is `autocog.lm.tf.cache`.
"""

from __future__ import annotations

from itertools import chain
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from autocog.core.chat import check_messages, missing_template
from autocog.core.tokens import HUGGINGFACE, FragmentEncoder, TokenVocabulary
from autocog.core.trie import TokenChoiceTree, read_packed
from autocog.errors import ModelNotFoundError, missing_backend
from autocog.lm.choice import ChoiceLM
from autocog.lm.scoring import TreeJob, shared_prefix
from autocog.lm.tf.cache import TfPrefixCache, cache_kwarg, copy_cache, output_cache

DEFAULT_MAX_BATCH_TOKENS = 4096  # rows x padded row length of one packed pass
LOGITS_BUDGET_BYTES = 512 * 2**20  # at most this much float32 logits per packed pass (batches shrink)
# torch float dtypes numpy has, by name: `additive_mask` builds those in numpy
NUMPY_FLOATS: dict[str, type[np.floating]] = {
    "torch.float32": np.float32,
    "torch.float16": np.float16,
    "torch.float64": np.float64,
}
# Keyword arguments of transformers' from_pretrained that `TfLM.create` passes on (`option_names`): any other key
# would be silently swallowed by transformers' config.
PRETRAINED_KEYS = frozenset(
    {
        "revision",
        "trust_remote_code",
        "attn_implementation",
        "low_cpu_mem_usage",
        "device_map",
        "cache_dir",
        "local_files_only",
        "subfolder",
        "variant",
        "use_safetensors",
        "torch_dtype",
    }
)

__all__ = [
    "CausalMasks",
    "DEFAULT_MAX_BATCH_TOKENS",
    "DTYPES",
    "LOGITS_BUDGET_BYTES",
    "PRETRAINED_KEYS",
    "TfLM",
    "TfPrefixCache",
    "cache_kwarg",
    "output_cache",
    "packed_layout",
    "parse_dtype",
]


# dtype names `TfLM.create` takes -> torch's ("auto": the checkpoint's dtype, transformers' own spelling)
DTYPES = {
    **dict.fromkeys(("float32", "fp32", "float"), "float32"),
    **dict.fromkeys(("bfloat16", "bf16"), "bfloat16"),
    **dict.fromkeys(("float16", "fp16", "half"), "float16"),
    "auto": "auto",
}


def parse_dtype(value: Any) -> Any:
    """A torch dtype from its name (`DTYPES`), a torch dtype as is, ``"auto"`` and None as they are.

    >>> parse_dtype("bf16")                                        # doctest: +SKIP
    torch.bfloat16
    """
    if value is None or not isinstance(value, str):
        return value
    name = DTYPES.get(value.strip().lower().removeprefix("torch."))
    if name is None:
        raise ValueError(f"unknown dtype {value!r}: expected one of {', '.join(DTYPES)}")
    if name == "auto":
        return name
    torch, _ = _require_torch()
    return getattr(torch, name)


def _require_torch():
    try:
        import torch
        import transformers
    except ImportError as error:
        raise missing_backend(getattr(error, "name", None) or "transformers", "transformers") from error
    return torch, transformers


class TfLM(ChoiceLM):
    """A transformers causal LM (fields ``model``, ``tokenizer``, ``device``).

    >>> lm = TfLM(**TfLM.create(model_path=path, device="cpu"), completion_kwargs={"max_new_tokens": 20})  # doctest: +SKIP
    >>> lm.choose("Question: What is the capital of France?\\nAnswer:", [" Paris", " London", " Berlin"])  # doctest: +SKIP
    0
    """

    max_batch_tokens: Optional[int] = DEFAULT_MAX_BATCH_TOKENS  # the default budget of `evaluate_trees`

    def __init__(
        self,
        model,
        tokenizer,
        device: Union[str, Any, None] = None,
        completion_kwargs: Optional[dict] = None,
        max_retries: Optional[int] = None,
        chat_template: Optional[str] = None,
    ):
        torch, _ = _require_torch()
        super().__init__(completion_kwargs=completion_kwargs, max_retries=max_retries)
        if device is not None:
            model = model.to(torch.device(device))
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.chat_template = chat_template  # None: the tokenizer's own
        self.device = self.model.device
        self.first_parameter: Any = None  # `placement`'s, found on first use
        self.masks = CausalMasks()
        self.cache = TfPrefixCache(self.model)
        self.encoder = FragmentEncoder(
            self.encode_raw, self.tokenizer.decode, prefix=self._find_special_prefix(), encode_many=self.encode_raw_many
        )

    @classmethod
    def create(
        cls,
        model_path: Union[str, Path, None] = None,
        device: str = "cpu",
        dtype: Union[str, Any, None] = None,
        gguf_file: Optional[str] = None,
        n_threads: Optional[int] = None,
        **model_kwargs: Any,
    ) -> dict:
        """Constructor arguments (``model``, ``tokenizer``, ``device``) for a local model directory, a ``.gguf``
        file (converted once, then cached), or the embedded SmolLM2-135M-Instruct when ``model_path`` is None.

        ``dtype``: a torch dtype or its name (`DTYPES`: ``float32``, ``bfloat16``, ``float16``, their short forms
        ``fp32`` / ``bf16`` / ``fp16``, or ``auto``, the checkpoint's; default: float32 on CPU, the checkpoint's
        elsewhere); ``device_map`` (transformers' / accelerate's: ``"auto"``, ``{"": "cuda:1"}``...): the model is
        placed by ``from_pretrained`` and never moved afterwards (``device`` is then unused); ``n_threads``:
        torch's CPU threads (``torch.set_num_threads``, for the whole process); other keywords go to
        ``from_pretrained`` (`PRETRAINED_KEYS`).

        >>> TfLM(**TfLM.create(device="cuda", dtype="bf16"))                     # doctest: +SKIP
        >>> TfLM(**TfLM.create(model_path=path, device_map="auto", dtype="float16"))  # doctest: +SKIP
        """
        torch, transformers = _require_torch()
        dtype = parse_dtype(dtype)  # a bad name fails before any file is read
        if n_threads:
            torch.set_num_threads(n_threads)
        from autocog.lm.assets import gguf_to_transformers, smollm2_transformers

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
        placed = model_kwargs.get("device_map") is not None
        if dtype is None and not placed and str(device).startswith("cpu"):
            dtype = torch.float32
        if dtype is not None:
            model_kwargs["dtype"] = dtype
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        model = transformers.AutoModelForCausalLM.from_pretrained(path, **model_kwargs)
        return {"model": model, "tokenizer": tokenizer, "device": None if placed else device}

    @classmethod
    def option_names(cls) -> set[str]:
        return set(PRETRAINED_KEYS)

    # --- tokens --------------------------------------------------------------------------------
    def _find_special_prefix(self) -> list[int]:
        """The special tokens (BOS) the tokenizer puts in front of a text, found by encoding a probe."""
        plain = self.tokenizer.encode("a", add_special_tokens=False)
        full = self.tokenizer.encode("a", add_special_tokens=True)
        for start in range(len(full) - len(plain) + 1):
            if full[start : start + len(plain)] == plain:
                return full[:start]
        return []

    def encode_raw(self, text: str) -> list[int]:
        """The tokenizer's ids of ``text``, no special token added (`tokenize` builds on it)."""
        backend = self.direct_backend()
        if backend is not None:
            return backend.encode(text, add_special_tokens=False).ids
        return self.tokenizer.encode(text, add_special_tokens=False)

    def encode_raw_many(self, texts: list[str]) -> list[list[int]]:
        backend = self.direct_backend()
        if backend is not None:
            return [encoding.ids for encoding in backend.encode_batch(texts, add_special_tokens=False)]
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def direct_backend(self) -> Any:
        """The fast tokenizer's Rust ``backend_tokenizer`` when calling it gives exactly the ids of
        ``tokenizer.encode(text, add_special_tokens=False)`` (no truncation or padding set on it, special tokens
        split as the tokenizer says), else None. transformers' own wrapper costs 2-5x the encoding of a short text."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if (
            backend is None
            or backend.truncation is not None
            or backend.padding is not None
            or bool(getattr(backend, "encode_special_tokens", False))
            != bool(getattr(self.tokenizer, "split_special_tokens", False))
        ):
            return None
        return backend

    def tokenize(self, text: str, bos: bool = False) -> list[int]:
        """Token ids of ``text`` as a fragment (`autocog.core.tokens.FragmentEncoder`); ``bos``: BOS once in front."""
        return self.encoder.tokenize(text, bos)

    def apply_chat_template(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        """The tokenizer's own ``apply_chat_template(messages, tokenize=False)`` (or ``chat_template=``'s), kept in
        `render_cache`.

        >>> lm.apply_chat_template([{"role": "user", "content": "Hi"}])[-22:]     # doctest: +SKIP
        '<|im_start|>assistant\\n'
        """
        messages = check_messages(messages)
        template = self.chat_template or getattr(self.tokenizer, "chat_template", None)
        if not template:
            raise missing_template(f"the tokenizer of {type(self).__name__}")
        import jinja2

        from autocog.errors import ChatTemplateError

        def render() -> str:
            try:
                return self.tokenizer.apply_chat_template(
                    messages, chat_template=template, tokenize=False, add_generation_prompt=add_generation_prompt
                )
            except jinja2.TemplateError as error:
                raise ChatTemplateError(f"the chat template failed: {error}") from error

        return self.render_cache.render(render, template, messages, add_generation_prompt)

    def tokenize_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.encoder.fragments(texts)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.tokenizer.decode(
            [int(t) for t in tokens], skip_special_tokens=True, clean_up_tokenization_spaces=False
        )

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
        """The config's ``max_position_embeddings``, read once per config object (a transformers 5 config's
        attribute reads cost ~1 us, and the scoring layer checks every prompt against it)."""
        config = self.model.config
        known = self.__dict__.get("_n_ctx_of")
        if known is None or known[0] is not config:
            known = self.__dict__["_n_ctx_of"] = (config, getattr(config, "max_position_embeddings", None))
        return known[1]

    def token_vocabulary(self) -> TokenVocabulary:
        """The Hugging Face tokenizer itself, for the grammar engine to read natively (a slow tokenizer falls
        back on `token_bytes`); ``size``: the config's ``vocab_size``."""
        return TokenVocabulary(
            size=int(self.model.config.vocab_size),
            eos=sorted(self.eos_token_ids),
            token_bytes=self.token_bytes,
            native=(HUGGINGFACE, self.tokenizer),
        )

    @property
    def tokens_evaluated(self) -> int:
        return self.cache.evaluated

    # --- evaluation ----------------------------------------------------------------------------
    def greedy_impl(self, tokens: list[int]) -> np.ndarray:
        import torch

        logits = self.cache.extend(tokens)
        return torch.log_softmax(logits.float(), dim=-1).cpu().numpy()

    def placement(self) -> tuple[Any, Any]:
        """(device, dtype) of the model's inputs: its first parameter's, when floating point (what transformers'
        ``model.device`` and ``model.dtype`` find by walking every parameter, ~10 us a call on a small model).
        The parameter object is found once: moving or converting the module keeps its parameter objects (unless
        torch's ``overwrite_module_params_on_conversion`` is set: then it is looked up on every call)."""
        import torch

        first = self.first_parameter
        if first is None or torch.__future__.get_overwrite_module_params_on_conversion():
            first = self.first_parameter = next(self.model.parameters(), None)
        if first is None or not first.is_floating_point():
            return self.model.device, self.model.dtype
        return first.device, first.dtype

    def recover(self, error: BaseException) -> None:
        import torch

        self.cache.reset()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def evaluate_tree(self, prompt_tokens: list[int], tree: TokenChoiceTree) -> np.ndarray:
        """One forward pass over the prompt's uncached tokens and the trie's inner nodes (a leaf's log-prob is
        read from its parent's logits, so leaves are never run).

        The input is ``new prompt tokens + inner trie tokens``; the 4D mask lets a prompt token see the tokens
        before it and a trie token see the whole prompt and its own ancestors; trie positions are
        ``P + depth - 1``. Afterwards the cache holds the prompt (the trie's KV is cropped by the next call that
        runs the model: `TfPrefixCache.run`)."""
        import torch

        with torch.inference_mode():  # no autograd bookkeeping on any op here (the logits are inference tensors)
            return self.tree_pass(prompt_tokens, tree)

    def tree_pass(self, prompt_tokens: list[int], tree: TokenChoiceTree) -> np.ndarray:
        """`evaluate_tree`'s body, under ``torch.inference_mode``."""
        import torch

        cache, (device, dtype) = self.cache, self.placement()
        keep = cache.reusable(prompt_tokens)
        n_prompt, n_new = len(prompt_tokens), len(prompt_tokens) - keep
        rows = tree.rows()  # -1 (after the prompt), then the inner nodes
        n_inner = len(rows) - 1
        if n_new or n_inner:
            steps = np.empty((2, 1, n_new + n_inner), dtype=np.int64)  # the input ids, then the position ids
            steps[0, 0] = prompt_tokens[keep:] + tree.inner_tokens()
            steps[1, 0, :n_new] = np.arange(keep, n_prompt)
            np.add(tree.inner_depths(), n_prompt - 1, out=steps[1, 0, n_new:])
            on_host = device.type == "cpu"
            ids, positions = (torch.from_numpy(steps) if on_host else torch.from_numpy(steps).to(device)).unbind()
            out = cache.run(
                prompt_tokens,
                keep,
                input_ids=ids,
                attention_mask=self.masks.tree_mask(tree, keep, n_prompt, dtype, None if on_host else device),
                position_ids=positions,
                # the last rows: the prompt's last token (when new), then the inner nodes
                logits_to_keep=n_inner + (1 if n_new else 0),
            )
            cache.evaluated += n_new + n_inner
            logits = out.logits[0].float()
            if n_new:  # row 0 is the prompt's last token: the rows are already in read-out order
                cache.last_logits = logits[0]
            else:
                logits = torch.cat([cache.last_logits.float()[None], logits])
        else:
            logits = cache.last_logits.float()[None]
        logprobs = torch.log_softmax(logits, dim=-1)  # row 0: after the prompt; row 1 + k: after inner node k
        return tree.read_rows(rows, logprobs.numpy() if logprobs.is_cpu else logprobs)

    # --- many prompts at once ------------------------------------------------------------------
    def evaluate_trees(self, jobs: Sequence[TreeJob], max_batch_tokens: Optional[int] = None) -> list[np.ndarray]:
        """Node log-probs of every (prompt tokens, trie) job. One job: `evaluate_tree` (the prefix cache then
        holds its prompt). Several: `packed_pass` over groups that fit ``max_batch_tokens`` (rows x padded
        row length, the shared prefix aside; None: the model's own ``self.max_batch_tokens``) and
        `LOGITS_BUDGET_BYTES`; a group that runs out of memory is split in halves. A subclass that overrides
        `evaluate_tree` keeps it (its jobs go one by one)."""
        jobs = [(list(prompt_tokens), tree) for prompt_tokens, tree in jobs]
        if len(jobs) <= 1 or type(self).evaluate_tree is not TfLM.evaluate_tree:
            return super().evaluate_trees(jobs)
        limit = self.max_batch_tokens if max_batch_tokens is None else max_batch_tokens
        out: list[np.ndarray] = []
        for group in self.pack_groups(jobs, limit):
            out.extend(self.evaluate_split(group, self.packed_pass))
        return out

    def pack_groups(self, jobs: list[TreeJob], max_batch_tokens: Optional[int]) -> list[list[TreeJob]]:
        """Consecutive jobs grouped so that each packed pass stays within the memory budgets: at most
        ``max_batch_tokens`` rows x padded row length (None or 0: no bound) and `LOGITS_BUDGET_BYTES`."""
        vocab = int(getattr(self.model.config, "vocab_size", 0) or 0)
        max_columns = max(1, LOGITS_BUDGET_BYTES // (4 * vocab)) if vocab else None
        shared = shared_prefix(jobs)
        groups: list[list[TreeJob]] = []
        group: list[TreeJob] = []
        longest = columns = 0
        for job in jobs:
            prompt_tokens, tree = job
            n_inner = len(tree.internal_nodes())
            size = len(prompt_tokens) - shared + n_inner
            job_columns = 1 + n_inner  # logits kept: the prompt's last token and the inner nodes
            n = len(group) + 1
            if group and (
                (max_batch_tokens and n * max(longest, size) > max_batch_tokens)
                or (max_columns and n * max(columns, job_columns) > max_columns)
            ):
                groups.append(group)
                group, longest, columns = [], 0, 0
            group.append(job)
            longest, columns = max(longest, size), max(columns, job_columns)
        if group:
            groups.append(group)
        return groups

    def packed_pass(self, jobs: list[TreeJob]) -> list[np.ndarray]:
        """One forward pass for several prompts: row ``a`` holds prompt a's tokens after the prefix all the
        prompts share, then the nodes of its trie, with a tree attention mask (a trie node sees the prompt
        and its own ancestors) and depth-based position ids. The shared prefix is evaluated once, in the
        prefix cache (which keeps it for the next call), and its KV repeated along the batch dimension.

        Rows are left-padded so that every prompt ends in the same column: the columns whose logits are
        needed (each prompt's last token, the tries' inner nodes) then coincide across rows when the
        prompts share their choices, and ``logits_to_keep`` keeps only those."""

        import torch

        shared = shared_prefix(jobs)
        suffixes = [prompt_tokens[shared:] for prompt_tokens, _ in jobs]
        inners = [tree.internal_nodes() for _, tree in jobs]
        ids, positions, allowed, last = packed_layout(jobs, shared, suffixes, inners)
        n_rows, width = ids.shape
        n_columns = width - last  # logits kept: every prompt's last token, then the inner nodes (all needed)

        cache, (device, dtype) = self.cache, self.placement()
        mask = additive_mask(allowed, dtype)
        past = None
        if shared:
            cache.extend(jobs[0][0][:shared])
            cache.truncate(shared)
            past = copy_cache(cache.kv)  # the cache keeps the prefix for the next call; the copy is expanded
            past.batch_repeat_interleave(n_rows)
        try:
            with torch.inference_mode():
                out = self.model(
                    input_ids=torch.from_numpy(ids).to(device),
                    position_ids=torch.from_numpy(positions).to(device),
                    attention_mask=mask[:, None].to(device),
                    use_cache=past is not None,
                    logits_to_keep=n_columns,
                    **{cache.cache_kwarg: past},
                )
                logits = out.logits
                del out, past
                # row 0 of logits[a]: after the prompt; row 1 + k: after inner node inner[k]
                logprobs = torch.log_softmax(logits.float(), dim=-1)
                results = read_packed([(tree, [-1] + inner) for (_, tree), inner in zip(jobs, inners)], logprobs)
        except BaseException:
            cache.reset()
            raise
        cache.evaluated += int(sum(len(x) + len(inner) for x, inner in zip(suffixes, inners)))
        return results


def additive_mask(allowed: np.ndarray, dtype: Any) -> Any:
    """The float attention mask of a boolean one (``allowed[q, k]``: query q sees key k): 0 where allowed, the
    dtype's lowest value elsewhere, as a CPU tensor of ``dtype``."""
    import torch

    lowest = torch.finfo(dtype).min
    kind = NUMPY_FLOATS.get(str(dtype))
    if kind is not None:  # built in numpy (one pass) where numpy has the dtype; the values are exactly 0 and lowest
        return torch.from_numpy(np.where(allowed, kind(0), kind(lowest)))
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill_(torch.from_numpy(~allowed), lowest)


class CausalMasks:
    """Additive attention masks of `TfLM.tree_pass`, per torch dtype: 0 where a query sees a key, the dtype's
    lowest value elsewhere, built in numpy (bf16: in float32, which holds its values exactly, converted by
    torch). A causal block is a copy of a strided view of one line per dtype (``edges``: n zeros then n lowest
    values; row q of the view starts one element before row q - 1), so no [n, n] triangle is built or kept; a
    trie's own block is memoized in its shape (`TokenChoiceTree.inner_mask`).

    >>> CausalMasks().causal(torch.float16, first=1, rows=2, columns=4).tolist()  # doctest: +SKIP
    [[0.0, 0.0, -65504.0, -65504.0], [0.0, 0.0, 0.0, -65504.0]]
    """

    MIN_LENGTH = 256  # the shortest line's n (it grows by powers of two)

    def __init__(self) -> None:
        self.kinds: dict[Any, tuple[type[np.floating], np.floating, bool]] = {}  # torch dtype -> `kind`
        self.edges: dict[type[np.floating], np.ndarray] = {}

    def kind(self, dtype: Any) -> tuple[type[np.floating], np.floating, bool]:
        """The numpy dtype a mask of torch ``dtype`` is built in, the lowest value in it and whether it is
        ``dtype`` itself (else the mask is converted)."""
        found = self.kinds.get(dtype)
        if found is None:
            import torch

            kind = NUMPY_FLOATS.get(str(dtype))
            native = kind is not None
            kind = kind or np.float32
            found = self.kinds[dtype] = (kind, kind(torch.finfo(dtype).min), native)
        return found

    def causal(self, dtype: Any, first: int, rows: int, columns: int) -> np.ndarray:
        """A new [rows, columns] array in `kind` (dtype): row q sees the keys 0 .. ``first + q``."""
        kind, lowest, _ = self.kind(dtype)
        length = max(first + rows, columns)  # row q of the view starts at edge[half - 1 - first - q]
        edge = self.edges.get(kind)
        if edge is None or len(edge) < 2 * length:
            half = max(self.MIN_LENGTH, 1 << (length - 1).bit_length())
            edge = np.zeros(2 * half, dtype=kind)
            edge[half:] = lowest
            self.edges[kind] = edge
        half, step = len(edge) // 2, edge.itemsize
        return np.ndarray((rows, columns), kind, edge, (half - 1 - first) * step, (-step, step)).copy()

    def tree_mask(self, tree: TokenChoiceTree, keep: int, n_prompt: int, dtype: Any, device: Any = None) -> Any:
        """The [1, 1, queries, keys] mask of a tree pass, on ``device`` (None: the CPU): ``n_prompt - keep`` new
        prompt tokens, each seeing the prompt up to itself, then the trie's inner nodes, each seeing the whole
        prompt and its own inner ancestors."""
        import torch

        _, lowest, native = self.kind(dtype)
        inner = tree.inner_mask(lowest)
        n_new, n_inner = n_prompt - keep, len(inner)
        mask = self.causal(dtype, keep, n_new + n_inner, n_prompt + n_inner)
        mask[n_new:, n_prompt:] = inner
        tensor = torch.from_numpy(mask[None, None])
        return tensor if device is None and native else tensor.to(device, dtype)


def packed_layout(
    jobs: Sequence[TreeJob], shared: int, suffixes: Sequence[list[int]], inners: Sequence[list[int]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The inputs of `TfLM.packed_pass`: ``ids`` and ``positions`` (rows x columns), ``allowed`` (rows x columns
    x (``shared`` + columns): which key each query sees) and ``last``, the column of every prompt's last token.
    ``suffixes[a]``: job a's prompt tokens after the ``shared`` prefix; ``inners[a]``: its trie's inner nodes.
    A row is left padding, the suffix, then the inner nodes; padding sees only itself."""
    last = max(len(x) for x in suffixes) - 1  # the column of every prompt's last token
    width = last + 1 + max(len(inner) for inner in inners)
    n_rows = len(jobs)
    ids = np.zeros((n_rows, width), dtype=np.int64)
    positions = np.zeros((n_rows, width), dtype=np.int64)
    seen = np.zeros((n_rows, width, width), dtype=bool)  # the keys after the shared prefix
    nodes = last + 1  # the first trie column of every row
    lengths = np.array([len(x) for x in suffixes], dtype=np.int64)
    begins = nodes - lengths  # each row's first suffix column
    stops = nodes + np.array([len(inner) for inner in inners], dtype=np.int64)  # each row's end
    # the suffixes, all at once: row a's k-th token goes to column begins[a] + k, at position shared + k
    rows = np.repeat(np.arange(n_rows), lengths)
    within = np.arange(len(rows)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    ids[rows, begins[rows] + within] = np.fromiter(chain.from_iterable(suffixes), dtype=np.int64, count=len(rows))
    positions[rows, begins[rows] + within] = shared + within
    # the tries, one assignment per distinct shape (a dataset's prompts share their choices' trie)
    by_shape: dict[int, tuple[TokenChoiceTree, list[int]]] = {}
    for a, (_, tree) in enumerate(jobs):
        by_shape.setdefault(id(tree.shape), (tree, []))[1].append(a)
    for tree, members in by_shape.values():
        picked, stop = np.array(members), nodes + len(tree.inner_depths())
        ids[picked, nodes:stop] = tree.inner_tokens()
        positions[picked, nodes:stop] = shared + lengths[picked, None] - 1 + tree.inner_depths()
        seen[picked, nodes:stop, nodes:stop] = tree.inner_ancestors()  # a trie node sees its ancestors
    columns = np.arange(width)
    query, key = columns[None, :, None], columns[None, None, :]
    real = (query >= begins[:, None, None]) & (query < stops[:, None, None])  # [rows, width, 1]: not padding
    prompt_key = (key >= begins[:, None, None]) & (key < nodes)
    seen |= real & prompt_key & ((key <= query) | (query >= nodes))  # causal in the suffix; the trie sees it all
    seen[:, columns, columns] |= ~real[:, :, 0]  # padding sees itself
    allowed = np.empty((n_rows, width, shared + width), dtype=bool)
    allowed[:, :, :shared] = real  # the shared prefix
    allowed[:, :, shared:] = seen
    return ids, positions, allowed, last
