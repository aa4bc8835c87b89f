"""`LLaMa`'s decode rows: `Layout` (the rows of prompts and their tries, and a ``llama_batch`` per decode pointing
into them) for the default decodes, one prompt and its trie each (`decode_prompt_and_trie`,
`autocog.lm.llama.sequential`); and `PackedDecode`, several prompts' tries in one ``llama_decode`` (its loop:
`decode_entries`).

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

import ctypes
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable, Hashable, Iterable, Optional, Sequence

import numpy as np

from autocog.core.trie import MAX_MEMO_READS
from autocog.lm.llama.cache import argmax_logsumexp, row_logsumexp
from autocog.lm.scoring import TreeJob, shared_prefix

if TYPE_CHECKING:  # pragma: no cover
    from autocog.core.trie import TokenChoiceTree
    from autocog.lm.llama.cache import LlamaPrefixCache, LogitsBlock


# One token of a decode: (token, position, sequence ids, tag). A tag that is not None asks for the token's logits
# and names the row it gives to the reader (`decode_entries`).
Entry = tuple[int, int, Sequence[int], Optional[Hashable]]
Reader = Callable[[list, np.ndarray, np.ndarray], object]
TrieReader = Callable[[list, np.ndarray, np.ndarray, list], object]  # a `Reader` also given the rows' argmax


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
    read: list[int]  # the rows a decode of the prompt's last token and these nodes reads: -1, then the nodes
    row_addresses: list[int]  # where each node's row of seq_ids lies (what a `Layout`'s llama_batch points to)

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
                read=[-1] + nodes,
                row_addresses=[seq_ids.ctypes.data + row * seq_ids.strides[0] for row in range(len(nodes))],
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


def address_of(array: np.ndarray) -> int:
    """The address of a writable contiguous array's data (what ``array.ctypes.data`` gives, at a third of its cost)."""
    return ctypes.addressof(ctypes.c_char.from_buffer(array))  # type: ignore[arg-type]  # (numpy arrays are buffers)


@lru_cache(maxsize=4)
def batch_dtype(llama_batch: Any) -> np.dtype:
    """A numpy dtype laid out as the ``llama_batch`` struct (its int32 ``n_tokens``, then pointers as uintp)."""
    fields = {name: getattr(llama_batch, name).offset for name, _ in llama_batch._fields_}
    return np.dtype(
        {
            "names": list(fields),
            "formats": [np.int32] + [np.uintp] * (len(fields) - 1),
            "offsets": list(fields.values()),
            "itemsize": ctypes.sizeof(llama_batch),
        }
    )


@dataclass
class Layout:
    """The decode rows of several parts, concatenated (part j's rows are ``starts[j]:starts[j + 1]``), the range of
    each part's kept logits rows among all of them (``outputs[j]:outputs[j + 1]``), and a ``llama_batch`` per decode
    (``batches``, their pointers into these arrays): part j's rows cut every ``n_batch`` tokens, its decodes
    ``decodes[j]:decodes[j + 1]``, decode d keeping ``kept[d]`` logits rows. A token's sequence ids are a row it
    points to (``seq_rows``): a prompt token's the cache's `LlamaPrefixCache.sequence_ids` (its count says how many),
    a trie node's its row of `TrieRows.seq_ids`."""

    parts: Sequence[Part]  # (held: the batches point into their `TrieRows`)
    tokens: np.ndarray
    positions: np.ndarray
    counts: np.ndarray
    logits: np.ndarray
    seq_rows: np.ndarray
    starts: list[int]
    outputs: list[int]
    decodes: list[int]
    kept: list[int]
    batches: Any

    @classmethod
    def of(cls, parts: Sequence[Part], cache: LlamaPrefixCache) -> Layout:
        """Built as lists, then one array each: for many parts the conversions cost less than per-part numpy calls
        (and less than numpy over all the parts at once: at these sizes each numpy call costs more than its work)."""
        tokens: list[int] = []
        positions: list[int] = []
        counts: list[int] = []
        logits: list[int] = []
        seq_rows: list[int] = []
        starts, outputs, decodes = [0], [0], [0]
        cuts: list[int] = []
        kept: list[int] = []
        capacity, prompt_row = cache.batch.capacity, cache.sequence_ids_address
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
            seq_rows += [prompt_row] * (n - keep)
            seq_rows += rows.row_addresses
            start = starts[-1]
            outputs.append(outputs[-1] + (keep < n) + sum(wanted))
            size = len(tokens) - start
            if 0 < size <= capacity:  # one decode (the usual case): it keeps all of the part's rows
                cuts.append(start)
                kept.append(outputs[-1] - outputs[-2])
            elif size:
                part_cuts = range(start, len(tokens), capacity)
                cuts += part_cuts
                kept += [sum(logits[a : a + capacity]) for a in part_cuts]
            starts.append(len(tokens))
            decodes.append(len(cuts))
        bounds = cuts + [len(tokens)]
        layout = cls(
            parts=parts,
            tokens=np.array(tokens, dtype=np.int32),
            positions=np.array(positions, dtype=np.int32),
            counts=np.array(counts, dtype=np.int32),
            logits=np.array(logits, dtype=np.int8),
            seq_rows=np.array(seq_rows, dtype=np.uintp),
            starts=starts,
            outputs=outputs,
            decodes=decodes,
            kept=kept,
            batches=None,
        )
        layout.batches = layout.native(cache.llama_cpp.llama_batch, bounds)
        return layout

    def native(self, llama_batch: Any, bounds: list[int]) -> Any:
        """One ``llama_batch`` (the ctypes struct type) per decode, decode d over rows ``bounds[d]:bounds[d + 1]``, its
        pointers into this layout's arrays: filled for all the decodes at once through a numpy view of the structs
        (the addresses as Python ints: at a few dozen decodes, cheaper than numpy arithmetic)."""
        batches = (llama_batch * (len(bounds) - 1))()  # zeroed: no embd
        if len(bounds) == 1:  # nothing to decode
            return batches
        view = np.frombuffer(batches, dtype=batch_dtype(llama_batch))
        view["n_tokens"] = [b - a for a, b in zip(bounds, bounds[1:])]
        for name, array in (
            ("token", self.tokens),
            ("pos", self.positions),
            ("n_seq_id", self.counts),
            ("seq_id", self.seq_rows),
            ("logits", self.logits),
        ):
            base, size = address_of(array), array.itemsize
            view[name] = [base + first * size for first in bounds[:-1]]
        return batches

    def decode(
        self,
        cache: LlamaPrefixCache,
        j: int,
        *,
        take: Optional[Callable[[int, np.ndarray], object]] = None,
        into: Optional[tuple[LogitsBlock, int]] = None,
    ) -> None:
        """Decode part j's rows (its ``batches``); after each decode, its kept logits rows are copied into ``into``
        (a `LogitsBlock` and the row where part j's first one goes) or handed to ``take(first, logits)``: the index
        of the first among part j's kept rows, and the rows (valid until the next decode). Exactly one of the two."""
        if (take is None) == (into is None):
            raise TypeError("Layout.decode takes exactly one of take= and into=")
        first = 0
        for d in range(self.decodes[j], self.decodes[j + 1]):
            cache.decode(self.batches[d])
            n_out = self.kept[d]
            if n_out:
                if into is not None:
                    cache.copy_logits(into[0], into[1] + first, n_out)
                elif take is not None:
                    take(first, cache.output_logits(n_out))
                first += n_out


def decode_prompt_and_trie(cache: LlamaPrefixCache, part: Part, read: TrieReader) -> None:
    """Decode one `Part` (`Layout.decode`), each decode's rows read as they come: ``read(tags, logits, norms,
    argmax)`` as in `decode_entries` (the tags -1, after the prompt, or the node index), with each row's argmax (a
    list of ints: one pass over the rows gives it and the maxima the log-sum-exp starts from)."""
    tags = part.tags()

    def take(first: int, logits: np.ndarray) -> None:
        best, norms = argmax_logsumexp(logits)
        read(tags[first : first + len(logits)], logits, norms, best.tolist())

    Layout.of([part], cache).decode(cache, 0, take=take)


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
