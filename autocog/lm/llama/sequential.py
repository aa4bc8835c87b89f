"""`PromptByPrompt`: several choice jobs on `LLaMa`'s prefix cache, one ``llama_decode`` per prompt, as
`LLaMa.evaluate_tree` decodes them one by one (so the same numbers, bitwise), with the Python around the decodes
done once per batch instead of once per prompt.

What a prompt alone costs besides its decode is a few dozen small numpy and ctypes calls, each ~3x dearer right
after a decode (it evicts them from the CPU caches) than in a loop. Here every job's batch rows, and the
``llama_batch`` of every decode pointing into them, are built for all the jobs at once
(`autocog.lm.llama.batch.Layout`, also what `decode_prompt_and_trie` decodes); between two decodes there is only
one ``llama_memory_seq_rm`` (`LlamaPrefixCache.drop_from`: the previous prompt's tail and its trie, when the tries
have as many tips), the decode, and one memmove of its logits rows into the cache's reused block
(`LlamaPrefixCache.copy_logits`). The argmax, the log-sum-exps and the read-outs then run once over all the rows.

A job fits when its trie's tips fit the context's sequences, its tokens its cells and its logits rows the block's
budget (`fits`); others go through `LLaMa.evaluate_tree` (chunked, each decode's rows read as they come).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from autocog.core.tokens import common_prefix_length
from autocog.core.trie import RowReads
from autocog.lm.llama.batch import Layout, Part, TrieRows
from autocog.lm.llama.cache import argmax_logsumexp
from autocog.lm.scoring import TreeJob

if TYPE_CHECKING:  # pragma: no cover
    from autocog.lm.llama.cache import LlamaPrefixCache


BLOCK_BYTES = 64 * 2**20  # at most this much float32 logits copied out per `PromptByPrompt` (runs shrink)


def runs(jobs: Sequence[TreeJob], n_vocab: int, budget: Optional[int] = None) -> list[list[TreeJob]]:
    """Consecutive jobs grouped so that a group's logits rows (each prompt's last token and its trie's inner nodes)
    take at most ``budget`` bytes as float32 (default `BLOCK_BYTES`; `fits` keeps bigger jobs out of these runs; given one, it is a group
    of one)."""
    budget = BLOCK_BYTES if budget is None else budget
    groups: list[list[TreeJob]] = []
    size = budget + 1
    for job in jobs:
        rows = (1 + len(TrieRows.whole(job[1]).nodes)) * n_vocab * 4
        if size + rows > budget:
            groups.append([])
            size = 0
        groups[-1].append(job)
        size += rows
    return groups


def fits(cache: LlamaPrefixCache, job: TreeJob, budget: Optional[int] = None) -> bool:
    """Whether a job goes in a `PromptByPrompt` run: its trie in one chunk (its tips as sequences 1..n_seq_max-1,
    prompt + inner nodes in the context) and its logits rows within ``budget`` bytes (default `BLOCK_BYTES`; a
    bigger trie goes through `LLaMa.evaluate_tree`, which reads each decode's rows as they come)."""
    rows = TrieRows.whole(job[1])
    size = (1 + len(rows.nodes)) * cache.n_vocab * 4
    return (
        rows.width <= cache.n_seq_max - 1
        and len(job[0]) + len(rows.nodes) <= cache.n_ctx
        and size <= (BLOCK_BYTES if budget is None else budget)
    )


class PromptByPrompt:
    """`run` returns each job's node log-probs (`TokenChoiceTree.read_rows`' layout). On any failure the cache is
    reset (nothing stale stays); afterwards it holds the last prompt, with no trie cell left."""

    def __init__(self, cache: LlamaPrefixCache, jobs: Sequence[TreeJob]):
        self.cache = cache
        self.jobs = [(list(prompt_tokens), tree) for prompt_tokens, tree in jobs]
        self.rows = [TrieRows.whole(tree) for _, tree in self.jobs]
        previous = cache.tokens
        self.keeps: list[int] = []
        for prompt_tokens, _ in self.jobs:  # what the prefix cache keeps before each (its last token is run again)
            self.keeps.append(min(common_prefix_length(previous, prompt_tokens), len(prompt_tokens) - 1))
            previous = prompt_tokens

    def run(self) -> list[np.ndarray]:
        cache = self.cache
        parts = [Part(p, keep, rows) for (p, _), keep, rows in zip(self.jobs, self.keeps, self.rows)]
        plan = Layout.of(parts, cache)
        block = cache.logits_block(plan.outputs[-1])
        try:
            for j, keep in enumerate(self.keeps):
                width = self.rows[j].width
                if j and width == self.rows[j - 1].width:
                    # the previous prompt's cells are in sequences 0..width (its kept ones were, its new ones were
                    # decoded so): dropping them from keep on (and its trie) is all `truncate` + `widen` would do
                    cache.drop_from(keep)
                else:
                    if j:
                        cache.hold(self.jobs[j - 1][0])
                    cache.truncate(keep)  # also drops the previous trie's cells: they lie past this keep
                    cache.widen(width, keep)
                plan.decode(cache, j, into=(block, plan.outputs[j]))
            cache.settle(self.jobs[-1][0])
        except BaseException:
            cache.reset()
            raise
        return self.read(block.rows, plan)

    def read(self, block: np.ndarray, plan: Layout) -> list[np.ndarray]:
        """Every job's node log-probs from the block of logits rows: one argmax (which gives the rows' maxima too),
        one log-sum-exp and one gather for all."""
        known: dict[int, RowReads] = {}  # per TrieRows (a dataset's jobs share one)
        for (_, tree), rows in zip(self.jobs, self.rows):
            if id(rows) not in known:
                known[id(rows)] = tree.row_reads(rows.read)
        reads = [known[id(rows)] for rows in self.rows]
        if len(known) == 1:  # the same trie after every prompt: one gather
            positions, _, tokens, _ = reads[0]
            where = np.add.outer(np.array(plan.outputs[:-1]), positions)
            picked = block[where, tokens[None, :]].astype(np.float64)
        else:
            offsets = np.repeat(plan.outputs[:-1], [len(r.positions) for r in reads])
            where = np.concatenate([r.positions for r in reads]) + offsets
            picked = block[where, np.concatenate([r.tokens for r in reads])].astype(np.float64)
        best, norms = argmax_logsumexp(block, in_place=True)  # the block is spent after this
        argmax = best.tolist()
        picked -= norms[where]
        per_job: Sequence[np.ndarray] = picked
        if picked.ndim == 1:
            bounds = np.cumsum([0] + [len(r.nodes) for r in reads]).tolist()
            per_job = [picked[bounds[j] : bounds[j + 1]] for j in range(len(reads))]
        out = []
        outputs = plan.outputs
        for j, ((_, tree), rows, found) in enumerate(zip(self.jobs, self.rows, reads)):
            tree.record_argmax(rows.read, argmax[outputs[j] : outputs[j + 1]])
            out.append(tree.scatter(found, per_job[j]))
        return out
