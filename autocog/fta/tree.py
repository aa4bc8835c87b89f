"""The thought tree a run explores, its paths (one full run each, scored) and the run's token accounting.

Scores are natural logs. A Choose node scores ``log p`` where ``p`` is the taken option's probability in the
step's normalized distribution; a Complete node scores 0 (greedy decoding has one continuation) unless the
run asked for ``completion_scores``, then the log-prob of its generated tokens; a Text node scores 0. A
path's score is the sum along it, so without pruning and completion scores the probabilities of the paths
sum to 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Any, Iterator, Optional, Union

from autocog.core.trie import render_dot
from autocog.core.types import ChoiceResult


@dataclass(eq=False)
class ThoughtNode:
    """One executed step: ``text`` appended to the prompt, ``value`` stored (Complete: text; Choose: option).

    ``score``: what the node adds to its path's score; ``logprob``: the model's log-prob of ``text`` when known
    (NaN otherwise); ``prob``: a Choose option's probability in its distribution (1 elsewhere). ``choice``
    (Choose nodes) is the `ChoiceResult` the option came from, shared by its siblings; ``pruned`` options were
    scored but not explored; ``status`` of a leaf: ``"end"`` (reached END) or ``"bound"`` (a loop bound left no
    successor)."""

    step: str
    kind: str
    text: str = ""
    value: Any = None
    score: float = 0.0
    logprob: float = math.nan
    prob: float = 1.0
    option: int = -1
    choice: Optional[ChoiceResult] = None
    pruned: bool = False
    status: Optional[str] = None
    n_tokens: int = 0
    parent: Optional[ThoughtNode] = field(default=None, repr=False)
    children: list[ThoughtNode] = field(default_factory=list, repr=False)
    id: int = 0

    def add(self, child: ThoughtNode) -> ThoughtNode:
        child.parent = self
        self.children.append(child)
        return child

    def walk(self) -> Iterator[ThoughtNode]:
        """This node and its descendants, depth-first (parents first)."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def lineage(self) -> list[ThoughtNode]:
        """Nodes from the root down to this one."""
        out: list[ThoughtNode] = []
        node: Optional[ThoughtNode] = self
        while node is not None:
            out.append(node)
            node = node.parent
        return out[::-1]


@dataclass
class Path:
    """One full run: ``values`` (step name -> value; a list for steps inside a loop), ``score`` (sum of the
    nodes' scores), ``text`` (the whole prompt at the end), ``status`` (``"end"`` or ``"bound"``), ``nodes``
    (root to leaf).

    >>> result.best.values, result.best.probability     # doctest: +SKIP
    ({'reasoning': ' ...', 'answer': ' B'}, 0.83)
    """

    values: dict
    score: float
    text: str
    status: str
    nodes: list[ThoughtNode] = field(repr=False)

    @property
    def probability(self) -> float:
        return math.exp(self.score)

    @property
    def steps(self) -> list[str]:
        """Names of the steps run, in order."""
        return [n.step for n in self.nodes if n.kind != "root"]

    def node(self, name: str) -> ThoughtNode:
        """The (latest) node of step ``name`` on this path."""
        for n in reversed(self.nodes):
            if n.step == name:
                return n
        raise KeyError(f"step {name!r} is not on this path (steps: {', '.join(dict.fromkeys(self.steps))})")

    def choice(self, name: str) -> ChoiceResult:
        """The distribution a Choose step scored on this path (the latest, inside a loop): draw its token
        choice tree with ``path.choice("answer").tree.to_dot()``."""
        node = self.node(name)
        if node.choice is None:
            raise KeyError(f"step {name!r} is not a Choose step scored with choice_distribution")
        return node.choice


@dataclass
class TokenStats:
    """Token accounting of a run. ``evaluated``: tokens the backend ran through the model (its
    ``tokens_evaluated`` counter; None when the backend has none, e.g. OpenAI). ``unique``: the nodes of the
    token trie of every sequence the model had to read: each call's prompt (as the model tokenizes it)
    followed by what the call generated or scored (a Complete's tokens, every option of a Choose, pruned
    ones included). ``calls``: model calls per kind."""

    evaluated: Optional[int]
    unique: int
    calls: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """``evaluated / unique`` (NaN when not counted): 1.0 is the physical limit, each token once."""
        if self.evaluated is None or not self.unique:
            return math.nan
        return self.evaluated / self.unique


def dot_quote(text: str) -> str:
    """``text`` as a quoted Graphviz string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def snippet(text: str, limit: int = 40) -> str:
    text = repr(text)[1:-1]
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class ProgramResult:
    """What `Program.run` gives back: ``paths`` best first, ``best`` (= ``paths[0]``), the thought ``tree``
    (its root node), ``tokens`` (`TokenStats`), and the run's settings.

    >>> result = prog.run(lm, width=2, q="...")     # doctest: +SKIP
    >>> result.best.values["answer"], [round(p.probability, 2) for p in result.paths]   # doctest: +SKIP
    (' B', [0.71, 0.22])
    """

    paths: list[Path]
    tree: ThoughtNode
    tokens: TokenStats
    settings: dict = field(default_factory=dict)

    @property
    def best(self) -> Path:
        return self.paths[0]

    @property
    def values(self) -> dict:
        """The best path's values."""
        return self.best.values

    def nodes(self) -> list[ThoughtNode]:
        return list(self.tree.walk())

    def to_dot(self, max_text: int = 40, title: str = "") -> str:
        """The thought tree as GraphViz DOT: a node per executed step (its step name and text), edges labelled
        with the option's probability and log score (Choose) or the tokens' log-prob (Complete); the best
        path in bold red, pruned options dashed, each leaf with its path's probability."""
        best = {id(n) for n in self.best.nodes}
        leaf_score = {id(p.nodes[-1]): p for p in self.paths}
        lines = [
            "digraph ThoughtTree {",
            "  rankdir=LR;",
            '  node [shape=box, fontname="monospace", fontsize=10];',
            '  edge [fontname="monospace", fontsize=9];',
        ]
        if title:
            lines.append(f"  label={dot_quote(title)}; labelloc=t;")
        for node in self.tree.walk():
            nid = f"t{node.id}"
            if node.kind == "root":
                lines.append(f'  {nid} [label="start", shape=ellipse];')
                continue
            label = f"{node.step}: {snippet(node.text, max_text)}"
            attrs = []
            if node.kind == "choose":
                attrs.append("shape=box, style=rounded")
            if node.pruned:
                attrs.append('style="dashed", color=gray50, fontcolor=gray50')
            if id(node) in leaf_score:
                path = leaf_score[id(node)]
                label += f"\n[{path.status}] p={path.probability:.3g} (score {path.score:.3f})"
                attrs.append("peripheries=2")
            if id(node) in best:
                attrs.append("color=red")
            lines.append(f"  {nid} [label={dot_quote(label)}{', ' if attrs else ''}{', '.join(attrs)}];")
            edge_label = ""
            if node.kind == "choose":
                edge_label = f"p={node.prob:.3f} ({math.log(node.prob) if node.prob > 0 else -math.inf:.3f})"
            elif node.kind == "complete" and not math.isnan(node.logprob):
                edge_label = f"logp={node.logprob:.2f} ({node.n_tokens} tok)"
            eattrs = [f"label={dot_quote(edge_label)}"] if edge_label else []
            if id(node) in best:
                eattrs.append("color=red, penwidth=2")
            if node.pruned:
                eattrs.append("style=dashed, color=gray50, fontcolor=gray50")
            assert node.parent is not None  # only the root has none, and it was drawn above
            lines.append(f"  t{node.parent.id} -> {nid}{' [' + ', '.join(eattrs) + ']' if eattrs else ''};")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def render(self, path: Union[str, FilePath], **dot_kwargs: Any) -> FilePath:
        """Write the thought tree to ``path`` (``.dot``, or ``.svg`` / ``.png`` / ``.pdf`` through GraphViz)."""
        return render_dot(self.to_dot(**dot_kwargs), path)

    def __repr__(self) -> str:
        return (
            f"ProgramResult({len(self.paths)} path(s), best={self.best.values!r}, p={self.best.probability:.3g}, "
            f"tokens evaluated={self.tokens.evaluated} unique={self.tokens.unique})"
        )
