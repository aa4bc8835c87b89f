"""`LLaMa`: GGUF models through llama-cpp-python (``llama_cpp.Llama``), with no fork of it.

LLaMa evaluates in its own llama.cpp context, created on the ``Llama``'s weights (shared, not copied) with
a unified KV cache and ``n_seq_max`` sequences; the ``Llama``'s own context stays free for direct use.

Fast paths:

* sequence 0 holds the KV of the last token sequence evaluated (`LlamaPrefixCache`): the longest common
  prefix with the next call is kept, so programs and decoding loops pay only for new tokens;
* `LLaMa.evaluate_tree` scores a whole choice trie in one ``llama_decode`` with the prompt's uncached tokens:
  those go in sequence 0 and in one sequence per tip of the trie (an inner node with no inner child), every
  inner trie token in the sequences of the tips below it, at position ``len(prompt) + depth - 1``. Attention
  then sees exactly the prompt and the token's ancestors. Leaves are never decoded: their log-probs come from
  their parent's logits. Afterwards only the trie's cells are dropped; the prompt's cells keep the tip
  sequences for the next trie (`LlamaPrefixCache.widen`), so a dataset pays no copy or drop per tip.
* `LLaMa.evaluate_trees` runs those same decodes for a batch with the Python around them done once
  (`autocog.lm.llama.sequential`), or, opt-in, several prompts per decode (`autocog.lm.llama.batch`).
"""

from __future__ import annotations

import ctypes
import threading
from itertools import groupby
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np

from autocog.core.chat import check_messages, missing_template, render_template
from autocog.core.checks import check_context
from autocog.core.tokens import LLAMA_CPP, FragmentEncoder, TokenVocabulary
from autocog.core.trie import TokenChoiceTree
from autocog.errors import (
    BackendNotInstalledError,
    ContextLengthError,
    ModelNotFoundError,
    TransientError,
    missing_backend,
)
from autocog.lm.choice import ChoiceLM
from autocog.lm.llama.batch import PackedDecode, Part, TrieRows, decode_prompt_and_trie, pack_groups
from autocog.lm.llama.cache import LlamaPrefixCache, row_logsumexp
from autocog.lm.llama.sequential import PromptByPrompt, fits, runs
from autocog.lm.scoring import TreeJob

DEFAULT_N_SEQ_MAX = 256  # capped by llama_max_parallel_sequences(); a batch of prompts needs one per trie tip
# Tokens per decode when several prompts share one (0: one prompt per decode). Several prompts per decode agree
# with one by one to 1e-5 on F32 weights but move quantized models' log-probs by up to 0.3 nats (llama.cpp's
# rounding depends on the decode's shape; docs/scoring.md, "Several prompts per decode"): opt-in.
# Every token attends over every cell of the unified KV cache, so on CPU groups of ~128 tokens were fastest.
DEFAULT_GROUP_TOKENS = 0


def _require_llama_cpp():
    try:
        import llama_cpp
    except ImportError as error:
        raise missing_backend("llama-cpp-python", "llama") from error
    return llama_cpp


TOKEN_BUFFER_KEPT = 1 << 16  # tokens: a bigger output array for `LLaMa.encode_raw` is not kept


class LLaMa(ChoiceLM):
    """A GGUF model through llama-cpp-python (field ``model``: a ``llama_cpp.Llama``).

    ``n_seq_max``: sequences of LLaMa's context; a choice tree with more tips than ``n_seq_max - 1`` (or
    more inner tokens than the context has room for after the prompt) is evaluated in several batches, and
    a batch of prompts is grouped so that each group needs at most ``n_seq_max - 1`` sequences.
    ``group_tokens``: tokens per decode of several prompts (default 0: one prompt per decode, its last
    token and its trie together; see `DEFAULT_GROUP_TOKENS` for why several prompts per decode is opt-in).
    ``lm.cache`` is the prefix cache: ``lm.cache.reset()`` forgets it (benchmarks), ``lm.tokens_evaluated``
    counts the tokens decoded. `close` frees LLaMa's context (its KV cache) before the object goes away.

    >>> lm = LLaMa(**LLaMa.create())            # the embedded SmolLM2-135M-Instruct   # doctest: +SKIP
    >>> lm.choose("Question: What is the capital of France?\\nAnswer:", [" Paris", " London", " Berlin"])  # doctest: +SKIP
    0
    >>> lm.complete("The capital of France is", stop=".", max_tokens=16)                  # doctest: +SKIP
    ' Paris.'
    """

    def __init__(
        self,
        model,
        n_seq_max: int = DEFAULT_N_SEQ_MAX,
        completion_kwargs: Optional[dict] = None,
        max_retries: Optional[int] = None,
        chat_template: Optional[str] = None,
        group_tokens: int = DEFAULT_GROUP_TOKENS,
    ):
        llama_cpp = _require_llama_cpp()
        if not isinstance(model, llama_cpp.Llama):
            raise TypeError(f"model must be a llama_cpp.Llama, not {type(model).__name__}")
        super().__init__(completion_kwargs=completion_kwargs, max_retries=max_retries)
        self.model = model
        self.chat_template = chat_template or (getattr(model, "metadata", None) or {}).get("tokenizer.chat_template")
        self.group_tokens = int(group_tokens)
        self._llama_cpp = llama_cpp
        self._vocab = llama_cpp.llama_model_get_vocab(model.model)
        self._n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        bos = int(llama_cpp.llama_vocab_bos(self._vocab))
        self._bos = bos if bos >= 0 else None
        # recurrent states cannot share cells between sequences: those models take the generic tree walk
        self._recurrent = bool(
            llama_cpp.llama_model_is_recurrent(model.model) or llama_cpp.llama_model_is_hybrid(model.model)
        )
        self._eos = {t for t in range(self._n_vocab) if llama_cpp.llama_vocab_is_eog(self._vocab, t)}
        self._pieces: dict[int, bytes] = {}
        self._token_buffers = threading.local()  # `encode_raw`'s output array, one per thread, reused
        self.cache = LlamaPrefixCache(llama_cpp, self._new_context(n_seq_max), self._n_vocab)
        prefix = [self._bos] if add_bos and self._bos is not None else []
        self.encoder = FragmentEncoder(self.encode_raw, self.detokenize, prefix=prefix)

    @classmethod
    def create(
        cls,
        model_path: Union[str, Path, None] = None,
        n_ctx: int = 2048,
        n_threads: Optional[int] = None,
        verbose: bool = False,
        **llama_kwargs: Any,
    ) -> dict:
        """Constructor arguments (``{"model": llama_cpp.Llama}``) for a GGUF file, or for the embedded
        SmolLM2-135M-Instruct when ``model_path`` is None. Other keyword arguments go to ``llama_cpp.Llama``
        (e.g. ``n_batch``, ``n_gpu_layers``, ``type_k``).

        >>> LLaMa(**LLaMa.create("model.gguf", n_ctx=4096))         # doctest: +SKIP
        """
        llama_cpp = _require_llama_cpp()
        from autocog.lm.assets import check_gguf, smollm2_gguf

        path = smollm2_gguf() if model_path is None else Path(model_path)
        check_gguf(path)
        try:
            model = llama_cpp.Llama(
                model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, verbose=verbose, **llama_kwargs
            )
        except ValueError as error:  # llama-cpp-python's "Failed to load model from file"
            raise ModelNotFoundError(f"llama.cpp could not load {path}: {error}") from error
        return {"model": model}

    def _new_context(self, n_seq_max: int):
        """A context on the model's weights with the ``Llama``'s settings, a unified KV cache and
        ``n_seq_max`` sequences (a unified cache lets one cell belong to many sequences)."""
        from llama_cpp import _internals
        from llama_cpp._utils import suppress_stdout_stderr

        llama_cpp = self._llama_cpp
        if not hasattr(llama_cpp, "llama_memory_seq_cp") or "kv_unified" not in dict(
            llama_cpp.llama_context_params._fields_
        ):
            raise BackendNotInstalledError(
                "LLaMa needs llama.cpp's memory API and unified KV cache (llama-cpp-python 0.3.36 is tested): "
                "pip install -U 'llama-cpp-python>=0.3.36'"
            )
        n_seq_max = max(1, min(int(n_seq_max), int(llama_cpp.llama_max_parallel_sequences())))
        params = llama_cpp.llama_context_params.from_buffer_copy(self.model.context_params)
        params.n_seq_max = n_seq_max
        params.kv_unified = True
        params.embeddings = False
        with suppress_stdout_stderr(disable=self.model.verbose):
            return _internals.LlamaContext(model=self.model._model, params=params, verbose=self.model.verbose)

    def close(self) -> None:
        """Free LLaMa's llama.cpp context now (the ``Llama`` and its weights are left alone)."""
        self.cache.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    # --- tokens --------------------------------------------------------------------------------
    def encode_raw(self, text: str) -> list[int]:
        """llama.cpp's ids of ``text``, no BOS added (`tokenize` builds on it). The output array is this thread's,
        reused while it is big enough (up to `TOKEN_BUFFER_KEPT` tokens): a fresh one per call costs ~3 us."""
        data = text.encode("utf-8")
        if not data:
            return []
        llama_cpp = self._llama_cpp
        buffers = self._token_buffers
        buf = getattr(buffers, "array", None)
        size = len(data) + 8
        for _ in range(2):
            if buf is None or len(buf) < size:
                buf = (llama_cpp.llama_token * max(size, 256))()
                if size <= TOKEN_BUFFER_KEPT:
                    buffers.array = buf
            # add_special=False (BOS is ours to add), parse_special=True (like HF tokenizers and Llama.__call__)
            n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, len(buf), False, True)
            if n >= 0:
                return buf[:n]  # a new list of ints
            size = -n
        raise RuntimeError(f"llama.cpp failed to tokenize {text!r}")

    def tokenize(self, text: str, bos: bool = False) -> list[int]:
        """Token ids of ``text``; ``bos=True`` prepends BOS when the model adds one. Special-token text
        (``"<|im_start|>"``) becomes the special token, as with transformers' tokenizers.

        >>> lm.detokenize(lm.tokenize(" Paris"))                      # doctest: +SKIP
        ' Paris'
        >>> lm.tokenize("a", bos=True)[0] == lm.bos_token_id         # doctest: +SKIP
        True
        """
        return self.encoder.tokenize(text, bos)

    def apply_chat_template(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        """The GGUF's ``tokenizer.chat_template`` (or ``chat_template=``) rendered as transformers renders it,
        with ``bos_token`` and ``eos_token`` the texts of the model's BOS and EOS: the same text as `TfLM` on the
        same model. A BOS the template writes is not doubled by ``tokenize(text, bos=True)``. Kept in `render_cache`."""
        messages = check_messages(messages)
        if not self.chat_template:
            raise missing_template("this GGUF (no tokenizer.chat_template in its metadata)")
        llama_cpp = self._llama_cpp
        special = {
            "bos_token": llama_cpp.llama_vocab_bos(self._vocab),
            "eos_token": llama_cpp.llama_vocab_eos(self._vocab),
        }
        variables = {name: self._special_text(int(t)) for name, t in special.items() if t >= 0}
        template = self.chat_template
        return self.render_cache.render(
            lambda: render_template(template, messages, add_generation_prompt, **variables),
            template,
            messages,
            add_generation_prompt,
            **variables,
        )

    def _special_text(self, token: int) -> str:
        """The text of a (special) token, as the tokenizer writes it (``"<|im_start|>"``)."""
        buf = ctypes.create_string_buffer(256)
        n = self._llama_cpp.llama_token_to_piece(self._vocab, token, buf, 256, 0, True)
        return buf.raw[: max(n, 0)].decode("utf-8", errors="replace")

    def _piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            if not 0 <= token < self._n_vocab:
                raise ValueError(f"token id {token} is outside the vocabulary [0, {self._n_vocab})")
            size = 64
            while True:
                buf = ctypes.create_string_buffer(size)
                n = self._llama_cpp.llama_token_to_piece(self._vocab, token, buf, size, 0, False)
                if n >= 0:
                    break
                size = -n
            piece = self._pieces[token] = buf.raw[:n]
        return piece

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Text of ``tokens``, special tokens dropped. The tokens' bytes are joined before decoding, so a
        character split across tokens survives; incomplete trailing bytes become U+FFFD.

        >>> lm.detokenize(lm.tokenize(" café"))                       # doctest: +SKIP
        ' café'
        """
        return b"".join(self._piece(int(t)) for t in tokens).decode("utf-8", errors="replace")

    @property
    def bos_token_id(self) -> Optional[int]:
        return self._bos

    @property
    def eos_token_ids(self) -> set[int]:
        """Every end-of-generation token llama.cpp knows for this model (EOS, EOT, ``<|im_end|>``...)."""
        return set(self._eos)

    @property
    def n_ctx(self) -> int:
        return self.cache.n_ctx

    @property
    def n_vocab(self) -> int:
        return self._n_vocab

    def token_bytes(self) -> list[bytes]:
        """Each token's bytes as llama.cpp spells them (exact, partial UTF-8 included; control tokens empty)."""
        return [self._piece(i) for i in range(self._n_vocab)]

    def token_vocabulary(self) -> TokenVocabulary:
        """llama.cpp's vocabulary itself, for the grammar engine to read natively."""
        return TokenVocabulary(
            size=self._n_vocab,
            eos=sorted(self.eos_token_ids),
            token_bytes=self.token_bytes,
            native=(LLAMA_CPP, self._vocab),
        )

    @classmethod
    def option_names(cls) -> set[str]:
        """``llama_cpp.Llama``'s keywords, which `create` passes on."""
        from autocog.lm.registry import named_keywords

        return named_keywords(_require_llama_cpp().Llama.__init__)

    @property
    def tokens_evaluated(self) -> int:
        return self.cache.evaluated

    # --- evaluation ----------------------------------------------------------------------------
    def greedy_impl(self, tokens: list[int]) -> np.ndarray:
        logits = self.cache.extend(tokens)
        return (logits.astype(np.float64) - row_logsumexp(logits[None])[0]).astype(np.float32)

    def is_transient(self, error: BaseException) -> bool:
        return isinstance(error, TransientError) or super().is_transient(error)

    def recover(self, error: BaseException) -> None:
        self.cache.reset()

    def evaluate_tree(self, prompt_tokens: list[int], tree: TokenChoiceTree) -> np.ndarray:
        """Log-prob of every node of ``tree`` after ``prompt_tokens``: the prompt's uncached tokens and the trie's
        inner tokens in one ``llama_decode`` (per ``n_batch`` tokens), then one more per further chunk of tips
        when the tips outnumber ``n_seq_max - 1`` or the tokens outgrow the context (`tip_chunks`)."""
        if self._recurrent:
            return super().evaluate_tree(prompt_tokens, tree)
        cache = self.cache
        check_context(len(prompt_tokens), cache.n_ctx)
        keep = cache.reusable(prompt_tokens)  # all of the prompt only when its last logits are known
        out = tree.empty_logprobs()
        if keep == len(prompt_tokens) and cache.last_logits is not None:
            first = cache.last_logits[None]
            tree.read_rows([-1], first, row_logsumexp(first), out=out)
            if not tree.internal_nodes():
                return out
        chunks = self.tip_chunks(tree, cache.n_seq_max - 1, cache.n_ctx - len(prompt_tokens))
        try:
            for number, tips in enumerate(chunks):
                self.decode_chunk(tree, tips, prompt_tokens, keep, out, first=number == 0)
                keep = len(prompt_tokens)
        except BaseException:
            cache.reset()
            raise
        return out

    def evaluate_trees(self, jobs: Sequence[TreeJob], max_batch_tokens: Optional[int] = None) -> list[np.ndarray]:
        """Node log-probs of several (prompt tokens, trie) jobs. By default (``group_tokens`` 0) the decodes of
        `evaluate_tree`, one per prompt, with the Python around them batched (`prompt_by_prompt`; a trie with more
        tips than sequences goes through `evaluate_tree`); with ``group_tokens``, `packed_decode` over groups of
        jobs that fit the context's sequences and KV cells (see `autocog.lm.llama.batch`). A run that finds no KV
        slot is split in halves. ``max_batch_tokens`` caps ``group_tokens`` for this call."""
        jobs = [(list(prompt_tokens), tree) for prompt_tokens, tree in jobs]
        if len(jobs) <= 1 or self._recurrent or type(self).evaluate_tree is not LLaMa.evaluate_tree:
            return super().evaluate_trees(jobs)
        out: list[np.ndarray] = []
        max_seqs, max_cells = self.cache.n_seq_max - 1, self.cache.n_ctx
        group_tokens = max(0, self.group_tokens)
        if max_batch_tokens is not None:
            group_tokens = min(group_tokens, max_batch_tokens)
        if not group_tokens:  # one decode per prompt, the Python around them once (`PromptByPrompt`)
            for fit, run in groupby(jobs, key=lambda job: fits(self.cache, job)):
                if not fit:
                    out.extend(self.evaluate_each(run))
                    continue
                for group in runs(list(run), self.n_vocab):
                    out.extend(self.evaluate_split(group, self.prompt_by_prompt))
            return out
        for group in pack_groups(jobs, max_seqs, max_cells, group_tokens):
            out.extend(self.evaluate_split(group, self.packed_decode))
        return out

    def evaluate_each(self, jobs: Iterable[TreeJob]) -> list[np.ndarray]:
        """`evaluate_tree` on each job (retried on transient faults)."""
        return [self.with_retry(self.evaluate_tree, list(prompt_tokens), tree) for prompt_tokens, tree in jobs]

    def prompt_by_prompt(self, jobs: list[TreeJob]) -> list[np.ndarray]:
        """`evaluate_tree`'s decodes (and numbers) for several jobs, the Python around them batched
        (`autocog.lm.llama.sequential.PromptByPrompt`)."""
        return PromptByPrompt(self.cache, jobs).run()

    def packed_decode(self, jobs: list[TreeJob]) -> list[np.ndarray]:
        """Several prompts' tries in one ``llama_decode`` per ``n_batch`` tokens (`llama_batch.PackedDecode`)."""
        return PackedDecode(self.cache, jobs).run()

    @staticmethod
    def tip_chunks(tree: TokenChoiceTree, max_seqs: int, max_cells: int) -> list[list[int]]:
        """The trie's tips (`TokenChoiceTree.tips`: leaves are never decoded, their log-probs come from their parent's
        logits), grouped: at most ``max_seqs`` tips and ``max_cells`` unique nodes on their paths per group; one group
        when all fit (none: one empty group). Otherwise tips are sorted by their tokens so that groups share prefixes."""
        tips = tree.tips()
        if len(tips) <= max_seqs and len(tree.internal_nodes()) <= max_cells:
            return [tips]
        if max_seqs < 1:
            raise ValueError("LLaMa needs n_seq_max >= 2 to evaluate a choice tree")
        paths = [tree.lineage(tip) for tip in tips]
        chunks: list[list[int]] = []
        current: list[int] = []
        nodes: set[int] = set()
        for path in sorted(paths, key=lambda p: [tree.skeleton[i].token for i in p]):
            new = [i for i in path if i not in nodes]
            if current and (len(current) == max_seqs or len(nodes) + len(new) > max_cells):
                chunks.append(current)
                current, nodes, new = [], set(), path
            if len(new) > max_cells:
                raise ContextLengthError(
                    f"a choice needs {len(path)} tokens after the prompt but the context has room for {max_cells}"
                )
            current.append(path[-1])
            nodes.update(new)
        chunks.append(current)
        return chunks

    def decode_chunk(
        self,
        tree: TokenChoiceTree,
        tips: list[int],
        prompt_tokens: list[int],
        keep: int,
        out: np.ndarray,
        first: bool = True,
    ) -> None:
        """One decode (per ``n_batch`` tokens) of the prompt's tokens from ``keep`` on, in sequences 0..len(tips) (its
        last one's row read), and the inner nodes on the paths to ``tips`` (each in the sequences of the tips below
        it, at position ``len(prompt) + depth - 1``; `TrieRows`); the rows of the nodes whose children have no
        log-prob yet go into ``out`` (all of them in the ``first`` chunk). Sequences 1..len(tips) first get the kept prompt (`LlamaPrefixCache.widen`);
        afterwards only the trie's cells are dropped (`LlamaPrefixCache.settle`)."""
        cache = self.cache
        rows = TrieRows.of(tree, tips)
        wanted = None  # the first chunk: no inner node's children are read yet, every row is needed
        if not first:  # a node's row is read unless an earlier chunk filled all its children
            missing = np.isnan(out).tolist()
            skeleton = tree.skeleton
            wanted = [any(missing[c] for c in skeleton[i].children.values()) for i in rows.nodes]
        cache.widen(rows.width, keep)
        decode_prompt_and_trie(
            cache,
            Part(prompt_tokens, keep, rows, wanted),
            lambda tags, logits, norms, argmax: tree.read_rows(tags, logits, norms, out=out, argmax=argmax),
        )
        cache.settle(prompt_tokens)
