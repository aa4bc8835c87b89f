"""`PromptByPrompt`: several choice jobs on `LLaMa`'s prefix cache, one ``llama_decode`` per prompt, as
`LLaMa.evaluate_tree` decodes them one by one (so the same numbers, bitwise), with the Python around the decodes
done once per batch instead of once per prompt.

What a prompt alone costs besides its decode is a few dozen small numpy and ctypes calls, each ~3x dearer right
after a decode (it evicts them from the CPU caches) than in a loop. Here every job's batch rows (tokens, positions,
sequence ids, logits flags: the layout of `autocog.lm.llama.batch.decode_prompt_and_trie`) are built as arrays for
all the jobs at once; each decode only loads its slice, and its logits rows are copied out; the log-sum-exps and
the read-outs then run once over all the rows. Between two prompts one ``llama_memory_seq_rm`` (the next prompt's
`truncate`) drops both the previous prompt's tail and its trie's cells.

A job fits when its trie's tips fit the context's sequences, its tokens its cells and its logits rows the block's
budget (`fits`); others go through `LLaMa.evaluate_tree` (chunked, each decode's rows read as they come).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from autocog.core.tokens import common_prefix_length
from autocog.lm.llama.batch import TrieRows
from autocog.lm.llama.cache import row_logsumexp
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


@dataclass
class Layout:
    """All the jobs' decode rows, concatenated (job j's rows are ``starts[j]:starts[j + 1]``), and where each job's
    logits rows go in the block the decodes fill (``outputs[j]:outputs[j + 1]``)."""

    tokens: np.ndarray
    positions: np.ndarray
    seq_ids: np.ndarray
    counts: np.ndarray
    logits: np.ndarray
    starts: list[int]
    outputs: list[int]


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

    def layout(self) -> Layout:
        """The rows of every job: its prompt from its keep on (in sequences 0..its tips, the last token's logits
        kept), then its trie's inner nodes (`TrieRows`, every one's logits kept). Built as lists, then one array
        each: a group's conversions cost less than per-job numpy calls."""
        tokens: list[int] = []
        positions: list[int] = []
        counts: list[int] = []
        logits: list[int] = []
        trie_rows: list[int] = []
        starts, outputs = [0], [0]
        for (prompt_tokens, _), keep, rows in zip(self.jobs, self.keeps, self.rows):
            n, (trie_tokens, depths, trie_counts) = len(prompt_tokens), rows.lists
            tokens += prompt_tokens[keep:]
            tokens += trie_tokens
            positions += range(keep, n)
            positions += [n - 1 + depth for depth in depths]
            counts += [rows.width + 1] * (n - keep)
            counts += trie_counts
            logits += [0] * (n - keep - 1)
            logits += [1] * (1 + len(trie_tokens))
            trie_rows += range(starts[-1] + n - keep, len(tokens))
            starts.append(len(tokens))
            outputs.append(outputs[-1] + 1 + len(trie_tokens))
        widths = {rows.seq_ids.shape[1] for rows in self.rows}
        width = 1 + max(widths)
        seq_ids = np.empty((len(tokens), width), dtype=np.int32)
        seq_ids[:] = np.arange(width, dtype=np.int32)  # a prompt token: sequences 0..tips (its count says how many)
        if trie_rows:
            blocks = [rows.seq_ids for rows in self.rows]
            if len(widths) > 1:
                blocks = [np.pad(b, ((0, 0), (0, width - 1 - b.shape[1]))) for b in blocks]
            seq_ids[trie_rows, : width - 1] = np.concatenate(blocks)
        return Layout(
            tokens=np.array(tokens, dtype=np.int32),
            positions=np.array(positions, dtype=np.int32),
            seq_ids=seq_ids,
            counts=np.array(counts, dtype=np.int32),
            logits=np.array(logits, dtype=np.int8),
            starts=starts,
            outputs=outputs,
        )

    def run(self) -> list[np.ndarray]:
        cache = self.cache
        plan = self.layout()
        block = np.empty((plan.outputs[-1], cache.n_vocab), dtype=np.float32)
        capacity, load = cache.batch.capacity, cache.batch.load
        tokens, positions, seq_ids, counts, logits = plan.tokens, plan.positions, plan.seq_ids, plan.counts, plan.logits
        try:
            for j, (prompt_tokens, _) in enumerate(self.jobs):
                keep = self.keeps[j]
                cache.truncate(keep)  # also drops the previous trie's cells: they lie past this keep
                cache.widen(self.rows[j].width, keep)
                row, stop = plan.outputs[j], plan.starts[j + 1]
                for start in range(plan.starts[j], stop, capacity):
                    end = min(start + capacity, stop)
                    load(
                        tokens[start:end],
                        positions[start:end],
                        seq_ids[start:end],
                        counts[start:end],
                        logits[start:end],
                    )
                    cache.decode()
                    n_out = plan.outputs[j + 1] - row if end == stop else int(np.count_nonzero(logits[start:end]))
                    block[row : row + n_out] = cache.output_logits(n_out)
                    row += n_out
                cache.hold(prompt_tokens)
            cache.settle(self.jobs[-1][0])
        except BaseException:
            cache.reset()
            raise
        return self.read(block, plan)

    def read(self, block: np.ndarray, plan: Layout) -> list[np.ndarray]:
        """Every job's node log-probs from the block of logits rows: one argmax (which gives the rows' maxima too),
        one log-sum-exp and one gather for all."""
        best = block.argmax(-1)
        top = np.take_along_axis(block, best[:, None], -1)
        argmax = best.tolist()
        reads = [tree.row_reads([-1] + rows.nodes) for (_, tree), rows in zip(self.jobs, self.rows)]
        if all(rows is self.rows[0] for rows in self.rows):  # the same trie after every prompt: one gather
            positions, nodes, tokens = reads[0]
            where = np.add.outer(np.array(plan.outputs[:-1]), positions)
            picked = block[where, tokens[None, :]].astype(np.float64)
        else:
            offsets = np.repeat(plan.outputs[:-1], [len(positions) for positions, _, _ in reads])
            where = np.concatenate([positions for positions, _, _ in reads]) + offsets
            picked = block[where, np.concatenate([tokens for _, _, tokens in reads])].astype(np.float64)
        picked -= row_logsumexp(block, top=top, in_place=True)[where]  # the block is spent after this
        per_job: Sequence[np.ndarray] = picked
        if picked.ndim == 1:
            bounds = np.cumsum([0] + [len(nodes) for _, nodes, _ in reads]).tolist()
            per_job = [picked[bounds[j] : bounds[j + 1]] for j in range(len(reads))]
        out = []
        for j, ((_, tree), rows, (_, nodes, _)) in enumerate(zip(self.jobs, self.rows, reads)):
            if len(nodes) == len(tree.skeleton):  # every node read once (row_reads sorts by node): as they are
                logprobs = per_job[j]
            else:
                logprobs = tree.empty_logprobs()
                logprobs[nodes] = per_job[j]
            tree.record_argmax([-1] + rows.nodes, argmax[plan.outputs[j] : plan.outputs[j + 1]])
            out.append(logprobs)
        return out
