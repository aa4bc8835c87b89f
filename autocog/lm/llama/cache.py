"""`LlamaPrefixCache`: LLaMa's llama.cpp context, whose sequence 0 holds the KV of the last token sequence
evaluated, and the ``llama_batch`` it fills (`_Batch`). Used by `autocog.lm.llama.model` and `autocog.lm.llama.batch`."""

from __future__ import annotations

import ctypes
from itertools import chain
from typing import Optional, Sequence

import numpy as np

from autocog.core.checks import check_context
from autocog.core.prefix_cache import PrefixCache
from autocog.errors import TransientError

# sequences `LlamaPrefixCache.drop_sequences` removes one by one; more go in one seq_keep (~4 seq_rm calls of time)
SEQ_RM_MAX = 4


def row_logsumexp(rows: np.ndarray, top: Optional[np.ndarray] = None, in_place: bool = False) -> np.ndarray:
    """float64 log-sum-exp of each row of float32 logits (exp in float32, sums in float64: ~1e-8 off, 5x faster);
    ``top``: the rows' maxima ([rows, 1]) when the caller has them (from an argmax); ``in_place``: ``rows`` may be
    overwritten (no temporary the size of the rows)."""
    if top is None:
        top = rows.max(axis=-1, keepdims=True)
    shifted = np.subtract(rows, top, out=rows if in_place else None)
    sums = np.exp(shifted, out=shifted).sum(axis=-1, dtype=np.float64)
    return np.log(sums) + top[..., 0]  # float64: float32 + float64 promotes exactly


def argmax_logsumexp(rows: np.ndarray, in_place: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Each row's argmax (int64) and its `row_logsumexp` (``in_place`` as there), the argmax's values as the rows'
    maxima: one pass over the rows for both instead of an argmax and a max."""
    best = rows.argmax(-1)
    return best, row_logsumexp(rows, top=rows[np.arange(len(rows)), best][:, None], in_place=in_place)


class LogitsBlock:
    """``rows``: float32 logits rows ([n_rows, n_vocab], C-contiguous) that `LlamaPrefixCache.copy_logits` fills
    decode after decode, with its address and row size read once. Kept by the cache and reused (`use`) while it
    is big enough: a fresh block's pages fault in as they are first written."""

    def __init__(self, capacity: int, n_vocab: int):
        self.buffer = np.empty((capacity, n_vocab), dtype=np.float32)
        self.capacity, self.row_bytes = capacity, n_vocab * 4
        self.address = self.buffer.ctypes.data
        self.use(capacity)

    def use(self, n_rows: int) -> LogitsBlock:
        """Its first ``n_rows`` rows are `rows` (at most `capacity`)."""
        if n_rows > self.capacity:
            raise ValueError(f"a block of {self.capacity} rows cannot hold {n_rows}")
        self.n_rows, self.rows = n_rows, self.buffer[:n_rows]
        return self


class _Batch:
    """A ``llama_batch`` over numpy buffers that we fill ourselves: up to ``capacity`` tokens, each
    tagged with up to ``n_seq`` sequence ids."""

    def __init__(self, llama_cpp, capacity: int, n_seq: int):
        i32 = ctypes.POINTER(ctypes.c_int32)
        self.capacity, self.n_seq = capacity, n_seq
        self.token = np.zeros(capacity, dtype=np.int32)
        self.pos = np.zeros(capacity, dtype=np.int32)
        self.n_seq_id = np.zeros(capacity, dtype=np.int32)
        self.seq_id = np.zeros((capacity, n_seq), dtype=np.int32)
        self.logits = np.zeros(capacity, dtype=np.int8)
        row = self.seq_id.strides[0]
        base = self.seq_id.ctypes.data
        self._rows = (i32 * capacity)(*[ctypes.cast(base + i * row, i32) for i in range(capacity)])
        self.struct = llama_cpp.llama_batch(
            n_tokens=0,
            token=self.token.ctypes.data_as(i32),
            embd=None,
            pos=self.pos.ctypes.data_as(i32),
            n_seq_id=self.n_seq_id.ctypes.data_as(i32),
            seq_id=ctypes.cast(self._rows, ctypes.POINTER(i32)),
            logits=self.logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)),
        )

    def fill(
        self, tokens: Sequence[int], positions: Sequence[int], seqs: Sequence[Sequence[int]], logits: Sequence[bool]
    ) -> int:
        """Token k of the batch: ``tokens[k]`` at position ``positions[k]`` in the sequences ``seqs[k]``, its logits
        kept when ``logits[k]``; returns the number of tokens."""
        n = len(tokens)
        counts = [len(s) for s in seqs]
        self.token[:n] = tokens
        self.pos[:n] = positions
        self.n_seq_id[:n] = counts
        rows = np.repeat(np.arange(n), counts)
        starts = np.repeat(np.cumsum(counts) - counts, counts)
        self.seq_id[rows, np.arange(len(rows)) - starts] = list(chain.from_iterable(seqs))
        self.logits[:n] = logits
        self.struct.n_tokens = n
        return n

    def fill_sequence(self, tokens: Sequence[int], start: int, last_logits: bool) -> int:
        """Tokens ``tokens`` at positions ``start...`` of sequence 0; logits for the last one only if asked."""
        n = len(tokens)
        self.token[:n] = tokens
        self.pos[:n] = np.arange(start, start + n, dtype=np.int32)
        self.n_seq_id[:n] = 1
        self.seq_id[:n, 0] = 0
        self.logits[:n] = 0
        self.logits[n - 1] = int(last_logits)
        self.struct.n_tokens = n
        return n


class LlamaPrefixCache(PrefixCache):
    """A llama.cpp context whose sequence 0 holds the KV of the last token sequence evaluated (the keep/reset
    decision is `autocog.core.prefix_cache.PrefixCache`'s).

    `extend(tokens)` returns the logits (float32, [n_vocab]) at the last position of ``tokens``, reusing the
    KV of the longest common prefix with the previous sequence and decoding only the rest. Any failure
    clears the context, so the cache is never stale. ``evaluated`` counts every token decoded.

    Sequences 1..``wide`` also hold sequence 0's cells below position ``wide_upto`` (and nothing else): a
    choice trie's tips decode in those sequences (`widen`), and a dataset that scores the same number of tips
    after each prompt tags each prompt token with them as it is decoded instead of copying and dropping them
    per call (`settle` drops only the trie's own cells).
    """

    def __init__(self, llama_cpp, context, n_vocab: int):
        self.llama_cpp = llama_cpp
        self.context = context  # llama_cpp._internals.LlamaContext: frees the native context before the model
        self.ctx = context.ctx
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.n_vocab = n_vocab
        self.n_ctx = int(llama_cpp.llama_n_ctx(self.ctx))
        self.n_batch = int(llama_cpp.llama_n_batch(self.ctx))
        self.n_seq_max = int(llama_cpp.llama_n_seq_max(self.ctx))
        self.batch = _Batch(llama_cpp, self.n_batch, self.n_seq_max)
        self.logits_views: dict[tuple[int, int], np.ndarray] = {}  # (address, rows) -> a view of them
        self.block: Optional[LogitsBlock] = None  # `logits_block`'s, at most BLOCK_BYTES (sequential.py) of rows
        # 0, 1, 2...: the sequence ids of a token in sequences 0..k (a `Layout`'s prompt tokens point to it)
        self.sequence_ids = np.arange(self.n_seq_max, dtype=np.int32)
        self.sequence_ids_address = self.sequence_ids.ctypes.data
        # llama_get_logits returning the address as an int (llama-cpp-python's returns a float pointer, whose address
        # costs a from_buffer to read): the same C function
        self.logits_address = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)(
            ctypes.cast(llama_cpp.llama_get_logits, ctypes.c_void_p).value or 0
        )
        self.evaluated = 0
        self.reset()

    def reset(self) -> None:
        """Forget everything: the next call decodes from scratch."""
        self.tokens: list[int] = []
        self.last_logits: Optional[np.ndarray] = None
        self.wide = self.wide_upto = 0
        if self.ctx is not None:
            self.llama_cpp.llama_memory_clear(self.memory, False)

    def close(self) -> None:
        if self.context is not None:
            self.context.close()
        self.context = self.ctx = self.memory = None
        self.block = None

    def _check_open(self) -> None:
        if self.ctx is None:
            raise RuntimeError("this LLaMa was closed: its llama.cpp context is freed")

    # --- primitives ------------------------------------------------------------------------------
    def decode(self, batch=None) -> None:
        """``llama_decode`` of ``batch`` (a ``llama_batch``; default: `batch` as filled); counts its tokens. Slot
        exhaustion is transient."""
        if self.ctx is None:
            self._check_open()
        struct = self.batch.struct if batch is None else batch
        n = struct.n_tokens
        rc = self.llama_cpp.llama_decode(self.ctx, struct)
        if rc == 1:
            raise TransientError("llama_decode found no KV-cache slot for the batch (context full)")
        if rc != 0:
            raise RuntimeError(f"llama_decode failed with code {rc} on a batch of {n} tokens")
        self.evaluated += n

    def logits(self, index: int) -> np.ndarray:
        """A view of the logits of batch row ``index`` (valid until the next decode)."""
        ptr = self.llama_cpp.llama_get_logits_ith(self.ctx, index)
        if not ptr:
            raise RuntimeError(f"llama.cpp returned no logits for batch row {index}")
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def output_logits(self, n_outputs: int) -> np.ndarray:
        """A view of the logits of the last decode's ``n_outputs`` output tokens, in batch order ([n_outputs,
        n_vocab] float32; valid until the next decode): one call instead of one per row."""
        address = self.logits_address(self.ctx)
        if not address:
            raise RuntimeError("llama.cpp returned no logits for the batch")
        key = (address, n_outputs)
        view = self.logits_views.get(key)
        if view is None:  # a view costs ~5 us to make; the buffer moves only when llama.cpp regrows it
            if len(self.logits_views) >= 64:
                self.logits_views.clear()
            rows = (ctypes.c_float * (n_outputs * self.n_vocab)).from_address(address)
            view = self.logits_views[key] = np.ctypeslib.as_array(rows).reshape(n_outputs, self.n_vocab)
        return view

    def logits_block(self, n_rows: int) -> LogitsBlock:
        """A `LogitsBlock` of ``n_rows`` rows: the cache's own, reused, or a bigger one that replaces it."""
        block = self.block
        if block is None or block.capacity < n_rows:
            block = self.block = LogitsBlock(n_rows, self.n_vocab)
        return block.use(n_rows)

    def copy_logits(self, block: LogitsBlock, row: int, n_outputs: int) -> None:
        """Copy the last decode's ``n_outputs`` output rows into ``block.rows[row : row + n_outputs]``: one memmove,
        no view."""
        if not 0 <= row <= block.n_rows - n_outputs:
            raise ValueError(f"rows {row}:{row + n_outputs} do not fit a block of {block.n_rows}")
        address = self.logits_address(self.ctx)
        if not address:
            raise RuntimeError("llama.cpp returned no logits for the batch")
        ctypes.memmove(block.address + row * block.row_bytes, address, n_outputs * block.row_bytes)

    def remove(self, seq_id: int, start: int) -> bool:
        """Drop the cells of ``seq_id`` (-1: all sequences) at positions ``>= start``."""
        return bool(self.llama_cpp.llama_memory_seq_rm(self.memory, seq_id, start, -1))

    def drop_from(self, position: int) -> None:
        """Drop every cell at ``position`` or later, in all sequences (no bookkeeping: `PromptByPrompt` keeps it for
        a run of tree decodes and calls `settle` at the end)."""
        if not self.remove(-1, position):
            raise RuntimeError("llama.cpp refused to drop part of the KV cache (a recurrent model?)")

    def drop_sequences(self, n: int) -> None:
        """Drop sequences 1..n, the only ones besides 0 in use: the cells only they held are freed, sequence 0's
        cells lose their ids. Up to `SEQ_RM_MAX` of them one ``llama_memory_seq_rm`` each, more with one
        ``llama_memory_seq_keep(0)`` (the same cells; it costs about four ``seq_rm`` calls)."""
        if n <= SEQ_RM_MAX:
            for s in range(1, n + 1):
                self.remove(s, -1)
        elif n > 0:
            self.llama_cpp.llama_memory_seq_keep(self.memory, 0)
        self.wide = self.wide_upto = 0

    def widen(self, n_seqs: int, keep: int) -> None:
        """Make sequences 1..``n_seqs``, and no others, hold sequence 0's cells at positions ``[0, keep)`` (what
        the cache keeps of ``tokens``): copied (``llama_memory_seq_cp``, no data moves) only where they do not
        yet, extra sequences dropped. A decode then tags the tokens from ``keep`` on with sequences 0..n_seqs."""
        if self.wide == n_seqs and self.wide_upto >= keep:  # a dataset's usual case: already so
            self.wide_upto = keep
            return
        if self.wide > n_seqs:
            self.drop_sequences(self.wide)
        upto = min(self.wide_upto, keep)
        for s in range(1, n_seqs + 1):
            start = upto if s <= self.wide else 0
            if start < keep:
                self.llama_cpp.llama_memory_seq_cp(self.memory, 0, s, start, keep)
        self.wide, self.wide_upto = n_seqs, keep

    def settle(self, tokens: Sequence[int]) -> None:
        """After a tree decode over the prompt ``tokens`` (its new tokens tagged with sequences 0..``wide``): drop
        every cell past the prompt (the trie's, in any sequence); the cache then holds ``tokens`` (`hold`)."""
        self.remove(-1, len(tokens))
        self.hold(tokens)

    def hold(self, tokens: Sequence[int]) -> None:
        """The cache holds ``tokens`` (their last logits unknown) after a tree decode whose trie cells, all past them,
        stay until the next `truncate` drops them with the prompt's tail (`settle` drops them now)."""
        self.tokens, self.last_logits = list(tokens), None
        self.wide_upto = len(tokens)

    # --- the prefix cache ------------------------------------------------------------------------
    def extend(self, tokens: Sequence[int]) -> np.ndarray:
        if not tokens:
            raise ValueError("nothing to evaluate: the token list is empty")
        self._check_open()
        check_context(len(tokens), self.n_ctx)
        return super().extend(tokens)

    def truncate(self, keep: int) -> int:
        try:
            if not self.remove(-1, keep):  # partial removal refused (recurrent models): start over
                self.llama_cpp.llama_memory_clear(self.memory, False)
                keep = 0
        except BaseException:
            self.reset()
            raise
        self.tokens, self.last_logits = self.tokens[:keep], None
        self.wide_upto = min(self.wide_upto, keep)
        return keep

    def run_rest(self, tokens: list[int], keep: int) -> np.ndarray:
        try:
            for start in range(keep, len(tokens), self.n_batch):
                chunk = tokens[start : start + self.n_batch]
                last = start + len(chunk) == len(tokens)
                self.batch.fill_sequence(chunk, start, last)
                self.decode()
                self.tokens = tokens[: start + len(chunk)]
            return self.logits(self.batch.struct.n_tokens - 1).copy()
        except BaseException:
            self.reset()
            raise
