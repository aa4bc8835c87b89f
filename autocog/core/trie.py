"""The token choice tree: the choices' token lists merged into one trie, so that a shared prefix is scored once.

>>> tree = TokenChoiceTree([[5, 7], [5, 9]])
>>> [n.token for n in tree.nodes], tree.branching_nodes()
([5, 7, 9], 1)
"""

from __future__ import annotations

import math
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, NamedTuple, Optional, Sequence, Union

import numpy as np

from autocog.errors import InvalidChoicesError

NUMPY_DTYPES = ("torch.float32", "torch.float64", "torch.float16")  # torch CPU dtypes numpy can view (not bf16)

MAX_MEMO_READS = 16  # row sets whose gather indices a trie's shape keeps (`TokenChoiceTree.row_reads`)


class RowReads(NamedTuple):
    """What reading next-token rows ``rows`` into node log-probs gathers: for each child of each row, by node index,
    the row's position in ``rows``, the child's node index and its token (int64 arrays, read-only); ``complete``:
    the rows give every node exactly once (``nodes`` is then 0, 1, 2...)."""

    positions: np.ndarray
    nodes: np.ndarray
    tokens: np.ndarray
    complete: bool


@dataclass
class TrieShape:
    """What a trie's structure implies, computed on first use and shared by the tree's copies (never modified
    afterwards): `TokenChoiceTree.internal_nodes`, `max_depth`, `inner_tokens`, `depths`, `inner_depths`,
    `inner_ancestors`, `inner_mask` per fill value, `tips`, `path_steps`, `path_nodes`, `tips_above`, the
    gather indices of `row_reads` per row set, and ``backend``: what a backend derives from it for its passes."""

    internal: Optional[list[int]] = None
    max_depth: Optional[int] = None
    inner_tokens: Optional[list[int]] = None
    depths: Optional[np.ndarray] = None
    inner_depths: Optional[np.ndarray] = None
    inner_ancestors: Optional[np.ndarray] = None
    tips: Optional[list[int]] = None
    path_steps: Optional[list[list[tuple[int, int]]]] = None
    path_nodes: Optional[np.ndarray] = None
    path_spans: Optional[list[tuple[int, int]]] = None
    inner_masks: dict[tuple[str, float], np.ndarray] = field(default_factory=dict)
    reads: dict[tuple[int, ...], RowReads] = field(default_factory=dict)
    tips_above: dict[tuple[tuple[int, ...], int], dict[int, list[int]]] = field(default_factory=dict)
    # what a backend derives from the structure for its own passes (e.g. LLaMa's batch rows), keyed by the backend
    backend: dict[Hashable, Any] = field(default_factory=dict)


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _int_array(values: Sequence[int]) -> np.ndarray:
    return _frozen(np.array(values, dtype=np.int64))


@dataclass(slots=True)
class TreeNode:
    """One token of the trie. ``parent`` is the index of the parent node, -1 under the root;
    ``depth`` is 1 for the first token of a choice; ``ends`` lists the choices whose last token this is."""

    index: int
    token: int
    parent: int
    depth: int
    children: dict[int, int] = field(default_factory=dict)
    ends: list[int] = field(default_factory=list)
    logprob: float = math.nan


class TokenChoiceTree:
    """A trie over the choices' token sequences.

    ``nodes`` lists the unique (prefix, token) pairs, parents before children; evaluating the tree means
    filling each node's ``logprob`` = log P(token | prompt + the path above it). A choice that is a prefix
    of another ("1" and "10") ends on an inner node and stays reachable: its score is the sum over its own
    tokens only.

    >>> tree = TokenChoiceTree([[5], [5, 7], [9]])
    >>> len(tree.nodes), tree.paths[1]
    (3, [0, 1])
    """

    def __init__(self, token_lists: Sequence[Sequence[int]], decode: Optional[Callable[[int], str]] = None):
        self.decode = decode  # token id -> text, for pictures
        nodes: list[TreeNode] = []
        self.roots: dict[int, int] = {}
        self.paths: list[list[int]] = []  # node indices of each choice, root to end
        self.row_argmax: dict[int, int] = {}  # a scored row (-1: after the prompt, else an inner node) -> its argmax
        for j, tokens in enumerate(token_lists):
            if len(tokens) == 0:
                raise InvalidChoicesError(f"choice {j} has no tokens")
            children, parent, path = self.roots, -1, []
            for depth, token in enumerate(tokens, start=1):
                token = int(token)
                if token not in children:
                    node = TreeNode(len(nodes), token, parent, depth)
                    nodes.append(node)
                    children[token] = node.index
                node = nodes[children[token]]
                path.append(node.index)
                children, parent = node.children, node.index
            nodes[path[-1]].ends.append(j)
            self.paths.append(path)
        # ``skeleton``: the nodes as built, for their structure (token, parent, depth, children, ends), shared with
        # every copy; ``nodes`` are this tree's own (a copy makes them on first use, with its log-probs).
        self.skeleton = nodes
        self._nodes: Optional[list[TreeNode]] = nodes
        self._logprobs: Optional[np.ndarray] = None
        self.shape = TrieShape()

    def copy(self) -> TokenChoiceTree:
        """A tree with this one's structure and no scores yet (no log-probs, no argmax): what a cache of trees
        hands out, since scoring fills a tree in. The structure (``roots``, ``paths``, ``skeleton``, `shape`) is
        shared, never modified; the copy's own ``nodes`` are made when first read.

        >>> tree = TokenChoiceTree([[5, 7], [9]]); tree.set_logprobs([-1.0, -2.0, -3.0])
        >>> twin = tree.copy(); twin.paths is tree.paths, [n.logprob for n in twin.nodes][0]
        (True, nan)
        """
        twin = object.__new__(TokenChoiceTree)
        twin.decode, twin.roots, twin.paths, twin.shape = self.decode, self.roots, self.paths, self.shape
        twin.skeleton, twin._nodes, twin._logprobs, twin.row_argmax = self.skeleton, None, None, {}
        return twin

    @property
    def nodes(self) -> list[TreeNode]:
        """The unique (prefix, token) pairs, parents first, each with this tree's ``logprob``."""
        if self._nodes is None:
            values = [math.nan] * len(self.skeleton) if self._logprobs is None else self._logprobs.tolist()
            self._nodes = [
                TreeNode(n.index, n.token, n.parent, n.depth, n.children, n.ends, lp)
                for n, lp in zip(self.skeleton, values)
            ]
        return self._nodes

    # --- structure -----------------------------------------------------------------------------
    @property
    def tokens(self) -> list[int]:
        return [n.token for n in self.skeleton]

    @property
    def parents(self) -> np.ndarray:
        return np.array([n.parent for n in self.skeleton], dtype=np.int64)

    @property
    def depths(self) -> np.ndarray:
        """Each node's depth (int64, read-only: shared with the tree's copies)."""
        shape = self.shape
        if shape.depths is None:
            shape.depths = _frozen(np.array([n.depth for n in self.skeleton], dtype=np.int64))
        return shape.depths

    @property
    def max_depth(self) -> int:
        shape = self.shape
        if shape.max_depth is None:
            shape.max_depth = max(len(p) for p in self.paths)
        return shape.max_depth

    def internal_nodes(self) -> list[int]:
        """Indices of the nodes that have children (their next-token distribution is needed)."""
        shape = self.shape
        if shape.internal is None:
            shape.internal = [n.index for n in self.skeleton if n.children]
        return list(shape.internal)

    def inner_tokens(self) -> list[int]:
        """The token of each of `internal_nodes`, in that order."""
        shape = self.shape
        if shape.inner_tokens is None:
            shape.inner_tokens = [self.skeleton[i].token for i in self.internal_nodes()]
        return list(shape.inner_tokens)

    def inner_depths(self) -> np.ndarray:
        """The depth of each of `internal_nodes`, in that order (int64, read-only: shared with the tree's copies)."""
        shape = self.shape
        if shape.inner_depths is None:
            shape.inner_depths = _frozen(self.depths[self.internal_nodes()])
        return shape.inner_depths

    def inner_ancestors(self) -> np.ndarray:
        """`ancestor_mask` restricted to `internal_nodes` (rows and columns; read-only): the trie part of a
        tree attention mask."""
        shape = self.shape
        if shape.inner_ancestors is None:
            internal = self.internal_nodes()
            shape.inner_ancestors = _frozen(self.ancestor_mask()[np.ix_(internal, internal)])
        return shape.inner_ancestors

    def inner_mask(self, fill: np.floating) -> np.ndarray:
        """`inner_ancestors` as an additive attention block: 0 where an inner node sees an inner node, ``fill``
        elsewhere, in ``fill``'s numpy dtype (read-only, memoized per dtype and value).

        >>> TokenChoiceTree([[5, 7, 8], [6, 1]]).inner_mask(np.float32(-9)).tolist()
        [[0.0, -9.0, -9.0], [0.0, 0.0, -9.0], [-9.0, -9.0, 0.0]]
        """
        key = (fill.dtype.str, float(fill))
        found = self.shape.inner_masks.get(key)
        if found is None:
            found = _frozen(np.where(self.inner_ancestors(), fill.dtype.type(0), fill))
            if len(self.shape.inner_masks) < MAX_MEMO_READS:
                self.shape.inner_masks[key] = found
        return found

    def path_tokens(self, index: int) -> list[int]:
        """Tokens from the root down to node ``index`` included."""
        return [self.skeleton[i].token for i in self.lineage(index)]

    def ancestor_mask(self) -> np.ndarray:
        """Boolean [N, N]: entry [i, j] is True when node j is node i or one of its ancestors."""
        n = len(self.skeleton)
        mask = np.zeros((n, n), dtype=bool)
        for node in self.skeleton:  # parents come first, so their rows are complete
            if node.parent >= 0:
                mask[node.index] = mask[node.parent]
            mask[node.index, node.index] = True
        return mask

    def branching_nodes(self) -> int:
        """Places where a choice must be made: the root and every node with 2+ children or a choice ending
        inside a longer one (the number of requests a top-k descent needs at most)."""
        count = 1 if len(self.roots) > 1 else 0
        return count + sum(1 for n in self.skeleton if len(n.children) + (1 if n.ends and n.children else 0) > 1)

    # --- the read-out: the next-token rows a backend computes -> node log-probs ------------------
    # A row is a next-token distribution: row -1 follows the prompt, row i (an inner node) follows the prompt
    # plus the path down to node i. Node c's log-prob is entry [token of c] of its parent's row.

    def rows(self, depth_first: bool = False) -> list[int]:
        """The rows a read-out needs: -1, then every inner node, in node order (parents first) or, with
        ``depth_first``, in a depth-first walk (each row then extends the previous one's path when it can).

        >>> tree = TokenChoiceTree([[5, 7, 8], [9, 1, 2], [5, 6, 3]])
        >>> tree.rows(), tree.rows(depth_first=True)
        ([-1, 0, 1, 3, 4, 6], [-1, 0, 1, 6, 3, 4])
        """
        if not depth_first:
            return [-1] + self.internal_nodes()
        rows, stack = [-1], list(reversed(self.roots.values()))
        while stack:
            node = self.skeleton[stack.pop()]
            if node.children:
                rows.append(node.index)
                stack.extend(reversed(node.children.values()))
        return rows

    def children_of(self, row: int) -> list[int]:
        """The nodes whose log-probs row ``row`` gives (-1: the roots)."""
        return list((self.roots if row < 0 else self.skeleton[row].children).values())

    def tips(self) -> list[int]:
        """The inner nodes with no inner child, in node order: a pass that runs each inner node once in its own
        sequence needs one sequence per tip (leaves are never run: their log-probs are in their parent's row).

        >>> TokenChoiceTree([[5, 7, 8], [5, 7, 9, 1], [6, 2]]).tips()
        [3, 5]
        """
        shape = self.shape
        if shape.tips is None:
            nodes = self.skeleton
            shape.tips = [
                n.index for n in nodes if n.children and not any(nodes[c].children for c in n.children.values())
            ]
        return list(shape.tips)

    def lineage(self, index: int) -> list[int]:
        """Node indices from the root down to node ``index`` included."""
        path = []
        while index >= 0:
            path.append(index)
            index = self.skeleton[index].parent
        return path[::-1]

    def tips_above(self, tips: Sequence[int], first: int = 0) -> dict[int, list[int]]:
        """Node index -> the numbers (``first``, ``first + 1``... in the order of ``tips``) of the tips at or below
        it, for each node on the way to a tip: the sequence ids a node carries when tip k owns sequence first + k.

        >>> TokenChoiceTree([[5, 7, 8], [5, 9, 1]]).tips_above([1, 3], first=1)
        {0: [1, 2], 1: [1], 3: [2]}
        """
        key = (tuple(tips), first)
        found = self.shape.tips_above.get(key)
        if found is None:
            out: dict[int, list[int]] = {}
            for number, tip in enumerate(tips, start=first):
                for index in self.lineage(tip):
                    out.setdefault(index, []).append(number)
            found = dict(sorted(out.items()))
            if len(self.shape.tips_above) < MAX_MEMO_READS:
                self.shape.tips_above[key] = found
        return {index: list(numbers) for index, numbers in found.items()}

    def empty_logprobs(self) -> np.ndarray:
        """A float64 array of NaN, one per node: what `read_rows` fills."""
        return np.full(len(self.skeleton), np.nan, dtype=np.float64)

    def scatter(self, found: RowReads, picked: np.ndarray) -> np.ndarray:
        """Node log-probs from the float64 values a read picked (``found``: its `row_reads`, ``picked[k]`` the
        log-prob of node ``found.nodes[k]``): ``picked`` itself when the read covers every node once in node order,
        else a new `empty_logprobs` with those nodes filled in."""
        if found.complete:
            return picked
        out = self.empty_logprobs()
        out[found.nodes] = picked
        return out

    def read_rows(
        self,
        rows: Sequence[int],
        values: Any,
        offsets: Union[Sequence[float], np.ndarray, None] = None,
        out: Optional[np.ndarray] = None,
        argmax: Optional[list[int]] = None,
    ) -> np.ndarray:
        """Scatter next-token rows into node log-probs: ``values[k]`` is row ``rows[k]`` (log-probs, or logits
        minus ``offsets[k]``, their log-sum-exp), a [len(rows), vocab] numpy array or torch tensor (gathered
        where it lies). Each child of a row gets ``values[k, token] - offsets[k]`` in ``out`` (float64; a new
        `empty_logprobs` when None), and each row's argmax is recorded (`record_argmax`; ``argmax``: the rows'
        argmax as ints when the caller computed it, for numpy rows). Returns ``out``.

        >>> tree = TokenChoiceTree([[0, 1], [2]])
        >>> tree.read_rows([-1, 0], np.log([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]])).round(3).tolist(), tree.is_greedy()
        ([-0.693, -0.223, -1.386], [True, False])
        """
        found = self.row_reads(rows)
        positions, nodes, tokens, _ = found
        if (
            not isinstance(values, np.ndarray)
            and getattr(values, "is_cpu", False)
            and str(values.dtype) in NUMPY_DTYPES
        ):
            values = values.numpy()  # a torch tensor on the CPU: numpy reads it in place, faster on small rows
        if isinstance(values, np.ndarray):
            if argmax is None:
                argmax = values.argmax(-1).tolist()
            elif len(argmax) != len(values):
                raise ValueError(f"{len(argmax)} argmax ids for {len(values)} rows")
            picked = values[positions, tokens]
        else:  # a torch tensor on a device: gathered there, one transfer for both (argmax ids are exact in float64)
            n, maxima = len(nodes), values.argmax(-1)
            # index tensors from the int64 argmax, not from values: bf16/fp16 cannot hold token ids exactly
            gathered = values[maxima.new_tensor(positions.tolist()), maxima.new_tensor(tokens.tolist())].double()
            both = gathered.new_empty((n + len(values),))
            both[:n] = gathered
            both[n:] = maxima
            host = both.cpu().numpy()
            picked, argmax = host[:n], host[n:].astype(np.int64).tolist()
        self.row_argmax.update(zip(rows, argmax))  # `record_argmax`, of ints already
        if offsets is not None:
            picked = picked - np.asarray(offsets, dtype=np.float64)[positions]
        if out is None:
            return self.scatter(found, np.asarray(picked, dtype=np.float64))
        out[nodes] = picked
        return out

    def row_reads(self, rows: Sequence[int]) -> RowReads:
        """What `read_rows` gathers for ``rows`` (memoized per ``rows``, shared by the tree's copies)."""
        key = tuple(rows)
        found = self.shape.reads.get(key)
        if found is not None:
            return found
        pairs = sorted((child, k) for k, row in enumerate(key) for child in self.children_of(row))
        nodes = [child for child, _ in pairs]
        tokens = [self.skeleton[i].token for i in nodes]
        complete = nodes == list(range(len(self.skeleton)))
        reads = RowReads(_int_array([k for _, k in pairs]), _int_array(nodes), _int_array(tokens), complete)
        if len(self.shape.reads) < MAX_MEMO_READS:
            self.shape.reads[key] = reads
        return reads

    def read_each(self, next_logprobs: Callable[[list[int]], np.ndarray], depth_first: bool = False) -> np.ndarray:
        """The read-out one row at a time: ``next_logprobs(path tokens)`` ([vocab] log-probs after the prompt and
        those tokens) for each of `rows` (``depth_first`` as there)."""
        out = self.empty_logprobs()
        for row in self.rows(depth_first):
            logprobs = next_logprobs(self.path_tokens(row) if row >= 0 else [])
            self.read_rows([row], np.asarray(logprobs)[None], out=out)
        return out

    # --- scores --------------------------------------------------------------------------------
    def set_logprobs(self, logprobs: Union[Sequence[float], np.ndarray]) -> None:
        """Each node's log-prob (``nodes[i].logprob``), in node order."""
        if len(logprobs) != len(self.skeleton):
            raise ValueError(f"expected {len(self.skeleton)} log-probs, got {len(logprobs)}")
        if self._nodes is None:  # a copy whose nodes nobody read yet: they are made with these values
            self._logprobs = np.array(logprobs, dtype=np.float64)
            return
        for node, lp in zip(self._nodes, logprobs):
            node.logprob = float(lp)

    def record_argmax(self, rows: Sequence[int], tokens: Sequence[int]) -> None:
        """Note the argmax token of next-token rows a backend computed (row -1: after the prompt, else after
        an inner node), for `is_greedy` (`read_rows` does it)."""
        if type(rows) is list and type(tokens) is list:  # a backend's lists of ints (`tolist`): as they are
            self.row_argmax.update(zip(rows, tokens))
        else:
            self.row_argmax.update(zip(map(int, rows), map(int, tokens)))

    def is_greedy(self) -> Optional[list[bool]]:
        """Whether each choice is the model's greedy continuation (every token the argmax of its row, lm-eval's
        ``is_greedy``); None when the backend did not report the argmax of a row this needs.

        >>> tree = TokenChoiceTree([[5, 7], [9]]); tree.record_argmax([-1, 0], [5, 8]); tree.is_greedy()
        [False, False]
        """
        out = []
        argmax = self.row_argmax
        for steps in self.path_steps():
            greedy = True
            for parent, token in steps:
                best = argmax.get(parent)
                if best is None:
                    return None
                if best != token:
                    greedy = False
                    break
            out.append(greedy)
        return out

    def path_steps(self) -> list[list[tuple[int, int]]]:
        """Each choice's path as (parent row, token) pairs (shared with the tree's copies: do not modify)."""
        shape = self.shape
        if shape.path_steps is None:
            skeleton = self.skeleton
            shape.path_steps = [[(skeleton[i].parent, skeleton[i].token) for i in path] for path in self.paths]
        return shape.path_steps

    def choice_logprobs(self, logprobs: Union[Sequence[float], np.ndarray, None] = None) -> list[list[float]]:
        """Per-choice lists of token log-probs, read along each choice's path (``logprobs``: one per node, in
        node order; None: this tree's own)."""
        if logprobs is not None:
            values = np.asarray(logprobs, dtype=np.float64)
        elif self._nodes is not None:
            values = np.array([n.logprob for n in self._nodes], dtype=np.float64)
        elif self._logprobs is not None:
            values = self._logprobs
        else:
            values = np.full(len(self.skeleton), math.nan)
        nodes, spans = self.path_nodes()
        flat = values[nodes].tolist()
        return [flat[start:stop] for start, stop in spans]

    def path_nodes(self) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """Every choice's path, concatenated (int64, read-only), and the (start, stop) of each in it (shared with
        the tree's copies: do not modify)."""
        shape = self.shape
        if shape.path_nodes is None or shape.path_spans is None:
            stops = np.cumsum([len(path) for path in self.paths]).tolist()
            shape.path_spans = list(zip([0] + stops[:-1], stops))
            shape.path_nodes = _int_array([i for path in self.paths for i in path])
        return shape.path_nodes, shape.path_spans

    # --- pictures ------------------------------------------------------------------------------
    def to_dot(
        self, choices: Optional[Sequence[str]] = None, probs: Optional[Sequence[float]] = None, title: str = ""
    ) -> str:
        """GraphViz DOT source: one node per token with its text, edges labelled with the token's
        log-prob and probability; a choice's end node shows the choice (and its probability)."""

        def quote(text: str) -> str:
            return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

        lines = ["digraph TokenChoiceTree {", "  rankdir=LR;", '  node [shape=box, fontname="monospace"];']
        if title:
            lines.append(f"  label={quote(title)}; labelloc=t;")
        lines.append('  root [label="prompt", shape=ellipse];')
        for node in self.nodes:
            label = repr(self.decode(node.token)) if self.decode else f"#{node.token}"
            attrs = ""
            if node.ends:
                ended = []
                for j in node.ends:
                    name = repr(choices[j]) if choices is not None else f"choice {j}"
                    ended.append(f"{name}" + (f" p={probs[j]:.3f}" if probs is not None else ""))
                label += "\n→ " + "\n→ ".join(ended)
                attrs = ", style=filled, fillcolor=lightblue"
            lines.append(f"  n{node.index} [label={quote(label)}{attrs}];")
            parent = "root" if node.parent < 0 else f"n{node.parent}"
            edge = ""
            if not math.isnan(node.logprob):
                edge = f" [label={quote(f'{node.logprob:.3f} ({math.exp(node.logprob):.2f})')}]"
            lines.append(f"  {parent} -> n{node.index}{edge};")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def render(self, path: Union[str, Path], **dot_kwargs: Any) -> Path:
        """Write the tree to ``path``: ``.dot`` as DOT source, ``.svg`` / ``.png`` / ``.pdf`` through GraphViz."""
        return render_dot(self.to_dot(**dot_kwargs), path)


def read_packed(reads: Sequence[tuple[TokenChoiceTree, Sequence[int]]], values: Any) -> list[np.ndarray]:
    """Each tree's node log-probs from one block of next-token rows: ``values[a, k]`` ([jobs, columns, vocab]
    log-probs, numpy or torch) is row ``reads[a][1][k]`` of tree ``reads[a][0]`` (columns past a tree's rows are
    ignored). The same as `TokenChoiceTree.read_rows` per tree, with one argmax and one gather for all the trees
    (for a torch tensor on a device: there, then one host transfer) instead of one per tree.

    >>> a, b = TokenChoiceTree([[0], [1]]), TokenChoiceTree([[2, 0], [1]])
    >>> lp = np.log(np.full((2, 2, 3), 1 / 3))
    >>> [x.round(2).tolist() for x in read_packed([(a, [-1]), (b, [-1, 0])], lp)]
    [[-1.1, -1.1], [-1.1, -1.1, -1.1]]
    """
    if not isinstance(values, np.ndarray) and str(values.device) == "cpu" and str(values.dtype) in NUMPY_DTYPES:
        values = values.numpy()
    found = [tree.row_reads(rows) for tree, rows in reads]
    spans = [len(f.positions) for f in found]
    jobs = np.repeat(np.arange(len(found)), spans)
    columns, tokens = (np.concatenate([getattr(f, name) for f in found]) for name in ("positions", "tokens"))
    if isinstance(values, np.ndarray):  # one argmax and one gather for all the jobs
        best = values.argmax(-1)
        picked = values[jobs, columns, tokens].astype(np.float64)
    else:  # on a device: gathered there, one transfer for both (argmax ids are exact in float64)
        argmax = values.argmax(-1)  # [jobs, columns]
        index = [argmax.new_tensor(x.tolist()) for x in (jobs, columns, tokens)]  # int64, as argmax
        gathered = values[index[0], index[1], index[2]].double()
        both = gathered.new_empty((len(gathered) + argmax.numel(),))
        both[: len(gathered)] = gathered
        both[len(gathered) :] = argmax.reshape(-1)
        host = both.cpu().numpy()
        picked, best = host[: len(gathered)], host[len(gathered) :].astype(np.int64).reshape(argmax.shape)
    out, start = [], 0
    for a, ((tree, rows), reads_a, n) in enumerate(zip(reads, found, spans)):
        out.append(tree.scatter(reads_a, picked[start : start + n]))
        tree.record_argmax(rows, best[a, : len(rows)].tolist())
        start += n
    return out


def render_dot(source: str, path: Union[str, Path]) -> Path:
    """Write DOT ``source`` to ``path``, rendered by the ``dot`` program unless the suffix is ``.dot``."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt in ("dot", "gv"):
        path.write_text(source)
        return path
    dot = shutil.which("dot")
    if dot is None:
        raise RuntimeError(
            f"rendering {path.name} needs GraphViz's 'dot' program (apt-get install graphviz); "
            "write a .dot file instead"
        )
    subprocess.run([dot, f"-T{fmt}", "-o", str(path)], input=source.encode(), check=True, capture_output=True)
    return path
