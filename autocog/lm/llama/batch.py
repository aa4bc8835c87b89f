"""`LLaMa`'s batch primitive: the choice tries of several prompts in one ``llama_decode``; and `decode_entries`,
the one decode-and-read loop of both of LLaMa's tree decoders (this one and `LLaMa.decode_chunk`).

Opt-in (``LLaMa(group_tokens=N)``): equal to one by one to 1e-5 on F32 weights, up to 0.3 nats off on
quantized SmolLM2, as much as llama.cpp's own results move with the shape of its decodes (docs/scoring.md,
"Several prompts per decode on quantized models"). By default each prompt has its own decode, as
`LLaMa.evaluate_tree` runs it (`autocog.lm.llama.sequential`); `decode_prompt_and_trie` is that decode and
`TrieRows` a trie's part of it.

Each prompt gets one sequence per *tip* of its trie (an inner node none of whose children is inner); several
prompts are decoded whole in their own sequences (see the note in `PackedDecode`). One batch holds, prompt
after prompt, the prompt's own tokens (tagged with all of its sequences) and the inner nodes of its trie
(each tagged with the sequences of the tips below it, at position ``len(prompt) + depth - 1``). Attention
then sees exactly the prompt and a node's ancestors. A trie's leaves are never decoded: their log-probs
are read from their parent's logits. Logits are kept for each prompt's last token and each inner node.

Jobs are grouped so that a group needs at most ``n_seq_max - 1`` sequences, fits the KV cells left and holds
at most ``LLaMa.group_tokens`` tokens (a decode's cost grows with the cells it attends over: small groups,
each removed before the next, keep it linear); a group longer than ``n_batch`` tokens goes in several
decodes (earlier tokens stay in the KV cache).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Hashable, Iterable, Optional, Sequence

import numpy as np

from autocog.core.trie import MAX_MEMO_READS
from autocog.lm.llama.cache import row_logsumexp
from autocog.lm.scoring import TreeJob, shared_prefix

if TYPE_CHECKING:  # pragma: no cover
    from autocog.core.trie import TokenChoiceTree
    from autocog.lm.llama.cache import LlamaPrefixCache


# One token of a decode: (token, position, sequence ids, tag). A tag that is not None asks for the token's logits
# and names the row it gives to the reader (`decode_entries`).
Entry = tuple[int, int, Sequence[int], Optional[Hashable]]
Reader = Callable[[list, np.ndarray, np.ndarray], object]


def decode_entries(cache: LlamaPrefixCache, entries: Iterable[Entry], read: Reader) -> None:
    """Decode ``entries`` in order, ``batch.capacity`` tokens per ``llama_decode``. After each decode,
    ``read(tags, logits, norms)``: the tags of the tokens that asked for logits, their logits rows (float32,
    [len(tags), n_vocab], valid until the next decode) and each row's log-sum-exp (float64), so that the log-probs
    are ``logits - norms``."""
    capacity = cache.batch.capacity
    chunk: list[Entry] = []
    for entry in entries:
        chunk.append(entry)
        if len(chunk) == capacity:
            _decode_and_read(cache, chunk, read)
            chunk = []
    if chunk:
        _decode_and_read(cache, chunk, read)


def _decode_and_read(cache: LlamaPrefixCache, chunk: list[Entry], read: Reader) -> None:
    tokens, positions, seqs, all_tags = zip(*chunk)
    cache.batch.fill(tokens, positions, seqs, [tag is not None for tag in all_tags])
    cache.decode()
    tags = [tag for tag in all_tags if tag is not None]
    if tags:
        logits = cache.output_logits(len(tags))
        read(tags, logits, row_logsumexp(logits))


@dataclass(frozen=True)
class TrieRows:
    """The inner nodes of a trie chunk (the lineages of some of its tips, parents first) as decode rows: each
    node's token, depth, sequence ids (the tips below it, numbered from 1; padded to ``width``) and their count.
    Memoized per trie structure and chunk (`of`), shared by the tree's copies."""

    nodes: list[int]
    tokens: np.ndarray
    depths: np.ndarray
    seq_ids: np.ndarray
    counts: np.ndarray
    width: int
    lists: tuple[list[int], list[int], list[int]]  # tokens, depths, counts as lists (batches build lists)

    @classmethod
    def whole(cls, tree: TokenChoiceTree) -> TrieRows:
        """`of` all the trie's tips (memoized without building the tips' key)."""
        found = tree.shape.backend.get("llama-rows")
        if found is None:
            found = tree.shape.backend["llama-rows"] = cls.of(tree, tree.tips())
        return found

    @classmethod
    def of(cls, tree: TokenChoiceTree, tips: Sequence[int]) -> TrieRows:
        key = ("llama-rows", tuple(tips))
        found = tree.shape.backend.get(key)
        if found is None:
            seqs = tree.tips_above(tips, first=1)
            nodes = list(seqs)
            width = len(tips)
            seq_ids = np.zeros((len(nodes), max(width, 1)), dtype=np.int32)
            for row, ids in enumerate(seqs.values()):
                seq_ids[row, : len(ids)] = ids
            skeleton = tree.skeleton
            tokens = [skeleton[i].token for i in nodes]
            depths = [skeleton[i].depth for i in nodes]
            counts = [len(ids) for ids in seqs.values()]
            found = cls(
                nodes=nodes,
                tokens=np.array(tokens, dtype=np.int32),
                depths=np.array(depths, dtype=np.int32),
                seq_ids=seq_ids,
                counts=np.array(counts, dtype=np.int32),
                width=width,
                lists=(tokens, depths, counts),
            )
            if len(tree.shape.backend) < MAX_MEMO_READS:
                tree.shape.backend[key] = found
        return found


@dataclass
class Part:
    """One prompt's share of a `Layout`: its tokens from ``keep`` on (in sequences 0..``rows.width``, the last one's
    logits kept when there is one), then ``rows`` at positions ``len(prompt) + depth - 1``, the logits of those
    where ``wanted`` (None: all) kept."""

    prompt_tokens: Sequence[int]
    keep: int
    rows: TrieRows
    wanted: Optional[Sequence[bool]] = None

    def tags(self) -> list[int]:
        """What each kept logits row is, in order: -1 (after the prompt), then the wanted nodes."""
        head = [-1] if self.keep < len(self.prompt_tokens) else []
        if self.wanted is None:
            return head + self.rows.nodes
        return head + [node for node, wanted in zip(self.rows.nodes, self.wanted) if wanted]


@dataclass
class Layout:
    """The decode rows of several parts, concatenated (part j's rows are ``starts[j]:starts[j + 1]``), and the range
    of each part's kept logits rows among all of them (``outputs[j]:outputs[j + 1]``)."""

    tokens: np.ndarray
    positions: np.ndarray
    seq_ids: np.ndarray
    counts: np.ndarray
    logits: np.ndarray
    starts: list[int]
    outputs: list[int]

    @classmethod
    def of(cls, parts: Sequence[Part]) -> Layout:
        """Built as lists, then one array each: for many parts the conversions cost less than per-part numpy calls."""
        tokens: list[int] = []
        positions: list[int] = []
        counts: list[int] = []
        logits: list[int] = []
        trie_rows: list[int] = []
        starts, outputs = [0], [0]
        for part in parts:
            n, keep, rows = len(part.prompt_tokens), part.keep, part.rows
            trie_tokens, depths, trie_counts = rows.lists
            wanted = [1] * len(trie_tokens) if part.wanted is None else [int(w) for w in part.wanted]
            tokens += part.prompt_tokens[keep:]
            tokens += trie_tokens
            positions += range(keep, n)
            positions += [n - 1 + depth for depth in depths]
            counts += [rows.width + 1] * (n - keep)
            counts += trie_counts
            logits += [0] * (n - keep - 1) + [1] if keep < n else []
            logits += wanted
            trie_rows += range(starts[-1] + n - keep, len(tokens))
            starts.append(len(tokens))
            outputs.append(outputs[-1] + (keep < n) + sum(wanted))
        widths = {part.rows.seq_ids.shape[1] for part in parts}
        width = 1 + max(widths)
        seq_ids = np.empty((len(tokens), width), dtype=np.int32)
        seq_ids[:] = np.arange(width, dtype=np.int32)  # a prompt token: sequences 0..tips (its count says how many)
        if trie_rows:
            blocks = [part.rows.seq_ids for part in parts]
            if len(widths) > 1:
                blocks = [np.pad(b, ((0, 0), (0, width - 1 - b.shape[1]))) for b in blocks]
            seq_ids[trie_rows, : width - 1] = np.concatenate(blocks)
        return cls(
            tokens=np.array(tokens, dtype=np.int32),
            positions=np.array(positions, dtype=np.int32),
            seq_ids=seq_ids,
            counts=np.array(counts, dtype=np.int32),
            logits=np.array(logits, dtype=np.int8),
            starts=starts,
            outputs=outputs,
        )

    def decode(self, cache: LlamaPrefixCache, j: int, take: Callable[[int, np.ndarray], object]) -> None:
        """Decode part j's rows, ``batch.capacity`` tokens per ``llama_decode``; after each, ``take(first, logits)``:
        the index of its first kept row among part j's and those rows' logits (valid until the next decode)."""
        capacity, load = cache.batch.capacity, cache.batch.load
        first, stop = 0, self.starts[j + 1]
        for start in range(self.starts[j], stop, capacity):
            end = min(start + capacity, stop)
            load(
                self.tokens[start:end],
                self.positions[start:end],
                self.seq_ids[start:end],
                self.counts[start:end],
                self.logits[start:end],
            )
            cache.decode()
            n_out = (
                self.outputs[j + 1] - self.outputs[j] - first
                if end == stop
                else int(np.count_nonzero(self.logits[start:end]))
            )
            if n_out:
                take(first, cache.output_logits(n_out))
            first += n_out


def decode_prompt_and_trie(cache: LlamaPrefixCache, part: Part, read: Reader) -> None:
    """Decode one `Part` (`Layout.decode`), each decode's rows read as they come: ``read`` as in `decode_entries`,
    the tags -1 (after the prompt) or the node index."""
    tags = part.tags()
    Layout.of([part]).decode(
        cache, 0, lambda first, logits: read(tags[first : first + len(logits)], logits, row_logsumexp(logits))
    )


@dataclass
class JobPlan:
    """One job's part of a packed decode: its inner nodes (parents first), the sequence ids of each, and all
    the job's sequence ids (one per tip, at least one)."""

    prompt_tokens: list[int]
    tree: TokenChoiceTree
    inner: list[int]
    seqs_of: dict[int, list[int]]
    seqs: list[int]

    @classmethod
    def build(cls, prompt_tokens: list[int], tree: TokenChoiceTree, first_seq: int) -> JobPlan:
        tips = tree.tips()
        seqs = list(range(first_seq, first_seq + max(1, len(tips))))
        return cls(prompt_tokens, tree, tree.internal_nodes(), tree.tips_above(tips, first_seq), seqs)


def job_size(prompt_tokens: Sequence[int], tree: TokenChoiceTree, shared: int) -> tuple[int, int]:
    """(sequences, KV cells) a job needs in a packed decode after a shared prefix of ``shared`` tokens."""
    return max(1, len(tree.tips())), len(prompt_tokens) - shared + len(tree.internal_nodes())


def pack_groups(jobs: Sequence[TreeJob], max_seqs: int, max_cells: int, max_tokens: int) -> list[list[TreeJob]]:
    """Consecutive jobs grouped so that a group needs at most ``max_seqs`` sequences, ``max_cells`` KV cells
    in all and ``max_tokens`` tokens besides the prefix all the jobs share (a job too big on its own is a
    group of one). Every token of a decode attends over every cell of the unified KV cache, so a group's
    cost grows with the square of its size: groups of about one ``n_batch`` are the fastest."""
    shared = shared_prefix(jobs)
    groups: list[list[TreeJob]] = []
    group: list[TreeJob] = []
    seqs = cells = 0
    for job in jobs:
        n_seqs, n_cells = job_size(job[0], job[1], shared)
        if group and (seqs + n_seqs > max_seqs or shared + cells + n_cells > max_cells or cells + n_cells > max_tokens):
            groups.append(group)
            group, seqs, cells = [], 0, 0
        group.append(job)
        seqs, cells = seqs + n_seqs, cells + n_cells
    if group:
        groups.append(group)
    return groups


class PackedDecode:
    """One packed decode over ``jobs`` on ``cache`` (a `LlamaPrefixCache`); `run` returns each job's node
    log-probs. The extra sequences are removed afterwards; on any failure the cache is reset."""

    def __init__(self, cache: LlamaPrefixCache, jobs: Sequence[TreeJob]):
        self.cache = cache
        # No shared prefix copied between the prompts: each prompt's own sequences hold all of its tokens. Copied
        # prefix cells moved SmolLM2 Q4_1's later prompts by up to 0.3, the same batch-shape rounding as without
        # them (docs/scoring.md). (One prompt goes through `LLaMa.evaluate_tree`, on the prefix cache.)
        self.plans: list[JobPlan] = []
        next_seq = 1
        for prompt_tokens, tree in jobs:
            plan = JobPlan.build(list(prompt_tokens), tree, next_seq)
            next_seq += len(plan.seqs)
            self.plans.append(plan)
        self.n_seqs = next_seq - 1
        if self.n_seqs > cache.n_seq_max - 1:
            raise ValueError(f"a packed decode needs {self.n_seqs} sequences but the context has {cache.n_seq_max - 1}")
        self.out = [tree.empty_logprobs() for _, tree in jobs]

    def stream(self) -> Iterable[Entry]:
        """The tokens to decode, in order; a tag (job, inner node index or -1 for the prompt's last token) on
        the tokens whose logits are read."""
        for k, plan in enumerate(self.plans):
            last = len(plan.prompt_tokens) - 1
            for i, token in enumerate(plan.prompt_tokens):
                yield token, i, plan.seqs, (k, -1) if i == last else None
            n_prompt = len(plan.prompt_tokens)
            for index in plan.inner:
                node = plan.tree.skeleton[index]
                yield node.token, n_prompt + node.depth - 1, plan.seqs_of[index], (k, index)

    def run(self) -> list[np.ndarray]:
        cache = self.cache
        try:
            cache.reset()
            decode_entries(cache, self.stream(), self.read)
        except BaseException:
            cache.reset()
            raise
        finally:
            cache.drop_sequences(self.n_seqs)
        return self.out

    def read(self, tags: list[tuple[int, int]], logits: np.ndarray, norms: np.ndarray) -> None:
        """The rows of one decode into the jobs' node log-probs (a job's rows are consecutive)."""
        start = 0
        while start < len(tags):
            k = tags[start][0]
            end = start
            while end < len(tags) and tags[end][0] == k:
                end += 1
            rows = [index for _, index in tags[start:end]]
            self.plans[k].tree.read_rows(rows, logits[start:end], norms[start:end], out=self.out[k])
            start = end
