"""The descent scorer: walks the choices' token trie with next-token requests (``max_tokens=1``, top log-probs,
``logit_bias`` on a node's children), or on llama.cpp with walks (a grammar over the choices' remaining text and a
bias on their tokens: one request scores a whole path). Searches: ``best-first``, ``greedy``, ``full`` (see
docs/openai.md).

>>> token_logprobs, info, tree = Descent(session).score("2+2=", ["4", "5"], "full")     # doctest: +SKIP
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import TYPE_CHECKING, Any, Optional

from autocog.core.checks import check_choice_tokens
from autocog.core.trie import TokenChoiceTree
from autocog.errors import StrategyUnavailableError
from autocog.lm.openai.ids import id_context
from autocog.lm.openai.parsing import Next, produced, unique_pieces
from autocog.lm.openai.plans import Plan
from autocog.lm.openai.requests import BIAS, WHOLE_VOCABULARY
from autocog.lm.openai.rows import first_row, refine_plan

if TYPE_CHECKING:  # pragma: no cover
    from autocog.lm.openai.session import Session


class Descent:
    """The descent strategy on a `Session`: `score` walks the trie of texts after a prompt text."""

    def __init__(self, session: Session):
        self.session = session

    def score(self, prompt_text: str, texts: list[str], search: str) -> tuple[list[list[float]], dict, TokenChoiceTree]:
        """(token log-probs, info, tree): what `DescentCall.run` gives."""
        return self.session.requests.run(self.score_plan(prompt_text, texts, search))

    def score_plan(
        self, prompt_text: str, texts: list[str], search: str
    ) -> Plan[tuple[list[list[float]], dict, TokenChoiceTree]]:
        """`score` as a request plan (`autocog.lm.openai.plans`): one request after another, as the search decides."""
        return (yield from DescentCall(self.session, prompt_text, texts, search).run())


class DescentCall:
    """One descent over the trie of ``texts`` after ``prompt_text``.

    Node values: ``exact`` (node -> log-prob), ``bound`` (node -> an upper bound while not exact); ``evaluated``
    (parent, -1 for the root -> its first row), ``rows`` (parents whose children all got a value or a bound from a
    walk), ``taken`` (parent -> the child a walk or a greedy step went through).
    """

    def __init__(self, session: Session, prompt_text: str, texts: list[str], search: str):
        self.session, self.prompt_text, self.texts, self.search = session, prompt_text, texts, search
        self.requests = session.requests
        self.tokenizer = session.tokenizer
        token_lists = self.tokenizer.encode_many(texts)
        check_choice_tokens(token_lists, texts)
        unique = sorted({t for ts in token_lists for t in ts})
        self.pieces = dict(zip(unique, session.transport.map(session.piece, unique)))
        self.tree = TokenChoiceTree(token_lists, session.piece)
        self.nodes = self.tree.nodes
        self.exact: dict[int, float] = {}
        self.bound: dict[int, float] = {}
        self.evaluated: dict[int, Next] = {}
        self.rows: set[int] = set()
        self.taken: dict[int, int] = {}
        self.order = itertools.count()
        self.prompt_ids = self.tokenizer.encode(prompt_text) if any(len(p) > 1 for p in self.tree.paths) else []
        self.pre = session.probe()["bias"] == "pre"
        self.walks = session.dialect.grammar and not session.chat and self.pre
        self.ambiguous = session.ambiguous_texts()
        self.top = session.top_logprobs
        self.id_prefix = id_context(session, prompt_text)

    def run(self) -> Plan[tuple[list[list[float]], dict, TokenChoiceTree]]:
        """The request plan of this descent (every method that sends is a plan, composed by ``yield from``)."""
        winner = None
        if self.search == "greedy":
            winner = yield from self._greedy()
        elif self.search == "full":
            yield from self._full()
        else:
            winner = yield from self._best_first()
        return self._result(winner)

    # --- the trie -------------------------------------------------------------------------------------
    def children_of(self, parent: int) -> list[int]:
        return list((self.tree.roots if parent < 0 else self.nodes[parent].children).values())

    def spec(self, index: int) -> tuple:
        token = self.nodes[index].token
        return (index, token, self.pieces[token])

    def piece(self, index: int) -> str:
        return self.pieces[self.nodes[index].token]

    def choice_through(self, parent: int) -> int:
        return next(j for j, p in enumerate(self.tree.paths) if parent in p)

    def context_of(self, parent: int) -> Any:
        """The text to send for the row of ``parent``'s children: the prompt and the path's text, which the server
        must split into the prompt's tokens and then the path's (contexts go as text)."""
        session, prompt = self.session, self.prompt_text
        if self.id_prefix is not None:  # vLLM: token ids, never re-tokenized
            return self.id_prefix + ([] if parent < 0 else self.tree.path_tokens(parent))
        if parent < 0:
            return prompt
        if session.chat:
            raise StrategyUnavailableError(
                "the chat endpoint cannot continue a partial reply, so descent scores only the first token of "
                f"a reply; scoring past {self.piece(parent)!r} needs a completions model (or choices "
                "that are single tokens, or that differ at their first token with the default search)"
            )
        path = self.tree.path_tokens(parent)
        texts_path = [self.pieces[t] for t in path]
        if all(p and "\ufffd" not in p for p in texts_path):
            context = prompt + "".join(texts_path)
        else:
            context = prompt + self.tokenizer.decode(path)
        if "\ufffd" in context[len(prompt) :]:
            j = self.choice_through(parent)
            raise StrategyUnavailableError(
                f"choice {j} ({self.texts[j]!r}) has tokens that split a UTF-8 character, and a text prompt cannot "
                f"end inside one: descent cannot score past {context[len(prompt) :]!r} on {session.base_url}"
            )
        if self.tokenizer.encode(context) != self.prompt_ids + path:
            j = self.choice_through(parent)
            raise session.merged(j, self.texts[j], "descent")
        return context

    def below(self, parent: int, within: Optional[int]) -> list[int]:
        """The choices that continue past ``parent`` (through ``within`` if given)."""
        depth = 0 if parent < 0 else self.nodes[parent].depth
        return [
            j
            for j, path in enumerate(self.tree.paths)
            if len(path) > depth
            and (parent < 0 or path[depth - 1] == parent)
            and (within is None or path[depth] == within)
        ]

    def upper(self, index: int) -> float:
        total = 0.0
        while index >= 0:
            total += self.exact.get(index, self.bound.get(index, 0.0))
            index = self.nodes[index].parent
        return total

    # --- requests -------------------------------------------------------------------------------------
    def expand(self, parent: int) -> Plan[None]:
        kids = self.children_of(parent)
        row = first_row(self.session, self.context_of(parent), [self.spec(k) for k in kids])
        first, values, bounds = yield from row
        self.evaluated[parent] = first
        self.exact.update(values)
        self.bound.update(bounds)

    def refine(self, index: int) -> Plan[None]:
        parent = self.nodes[index].parent
        todo = [k for k in self.children_of(parent) if k not in self.exact]
        if self.pre:
            todo = [index]  # one request per child: the biased token's exact log-prob
        specs = [self.spec(k) for k in todo]
        self.exact.update(
            (yield from refine_plan(self.session, self.context_of(parent), specs, self.evaluated.get(parent)))
        )
        for k in todo:
            self.bound.pop(k, None)

    def read_row(self, kids: list[int], row: dict) -> list[int]:
        """Exact values from a next-token ``row`` for the ``kids`` it names unambiguously; the others."""
        unique = unique_pieces([self.spec(k) for k in kids], self.ambiguous)
        rest = []
        for k in kids:
            if k in self.exact:
                continue
            if self.piece(k) in unique and self.piece(k) in row:
                self.exact[k] = row[self.piece(k)]
                self.bound.pop(k, None)
            else:
                rest.append(k)
        return rest

    def walk(self, parent: int, within: Optional[int] = None) -> Plan[bool]:
        """One request down the trie from ``parent`` (through ``within``): a grammar that allows only the choices'
        remaining text and a logit_bias on their tokens make llama.cpp follow the trie, taking the best token at
        each step; every step returns the exact log-prob of the token taken and the top log-probs of its
        siblings. False (nothing sent) where the text cannot be written as a grammar."""
        context = self.context_of(parent)
        depth = 0 if parent < 0 else self.nodes[parent].depth
        chosen = self.below(parent, within)
        suffixes = []
        for j in chosen:
            full = self.prompt_text + self.texts[j]
            if not full.startswith(context) or any(
                not self.piece(i) or "\ufffd" in self.piece(i) for i in self.tree.paths[j][depth:]
            ):
                return False
            suffixes.append(full[len(context) :])
        if any("\x00" in x for x in suffixes):
            return False  # llama.cpp's grammar parser ends a literal at NUL: the rest would be unconstrained
        bias = {self.nodes[i].token: BIAS for j in chosen for i in self.tree.paths[j][depth:]}
        steps = yield from self.requests.walk_plan(
            context, suffixes, bias, max(len(self.tree.paths[j]) - depth for j in chosen), self.top
        )
        if not steps:
            raise self.session.no_logprobs(context)
        self._follow(parent, steps)
        return True

    def _follow(self, parent: int, steps: list) -> None:
        """Record a walk's steps: the row of each node passed and the exact value of the child taken."""
        node = parent
        for piece, value, row in steps:
            kids = self.children_of(node)
            vals = sorted(row.values(), reverse=True)
            floor = vals[min(len(vals), self.top) - 1] if vals else 0.0
            for k in self.read_row(kids, row):
                # A child named in the row but not read (its text is shared) may lie above the floor.
                cap = 0.0 if self.piece(k) in row else floor
                self.bound[k] = min(self.bound.get(k, cap), cap)
            self.rows.add(node)
            match = [k for k in kids if self.piece(k) == piece]
            if len(match) != 1 or value is None:
                break  # the server left the trie (another split of the text): the rows so far stand
            self.taken[node] = match[0]
            self.exact.setdefault(match[0], value)
            self.bound.pop(match[0], None)
            node = match[0]

    def open_row(self, parent: int) -> Plan[None]:
        """Values or bounds for every child of ``parent``: a walk where it can, else one request."""
        if parent in self.rows or parent in self.evaluated:
            return
        walked = self.walks and (yield from self.walk(parent))
        if not walked:
            yield from self.expand(parent)

    def score(self, index: int) -> Plan[None]:
        """The exact log-prob of ``index`` (its parent's row already gave it a bound). On llama.cpp: one request
        for the parent's whole next-token row when several siblings lack a value, else a walk."""
        parent = self.nodes[index].parent
        missing = [k for k in self.children_of(parent) if k not in self.exact]
        if self.walks and len(missing) > 1:
            bias = {self.nodes[k].token: BIAS for k in missing}
            row = yield from self.requests.next_plan(self.context_of(parent), bias, partial="drop", k=WHOLE_VOCABULARY)
            self.read_row(missing, row.top)
        if index not in self.exact and self.walks:
            yield from self.walk(parent, index)
        if index not in self.exact:
            yield from self.refine(index)

    # --- searches -------------------------------------------------------------------------------------
    def _greedy(self) -> Plan[int]:
        """The first AutoCog's descent: at a branching node, a bias on the children makes the server produce the
        best of them (whatever it reports); on llama.cpp one walk goes all the way down. A choice that ends where
        longer ones go on wins under ``sum`` (its extensions only add negative log-probs)."""
        session, nodes = self.session, self.nodes
        node = -1
        while node < 0 or not nodes[node].ends:
            kids = self.children_of(node)
            decide = len(kids) > 1 and node not in self.taken
            if decide and self.walks:
                decide = not ((yield from self.walk(node)) and node in self.taken)
            if decide:
                context = self.context_of(node)
                nxt = yield from self.requests.next_plan(context, {nodes[k].token: BIAS for k in kids})
                if nxt.token is None:
                    raise session.no_logprobs(context)
                match = produced(kids, self.piece, nxt.token)
                if len(match) != 1:
                    raise StrategyUnavailableError(
                        f"the server produced {nxt.token!r}, which matches {len(match)} of the choice tokens "
                        f"{[self.piece(k) for k in kids]}: greedy descent cannot tell which won"
                    )
                if self.pre and nxt.logprob is not None:
                    self.exact[match[0]] = nxt.logprob
                    self.read_row(kids, nxt.top)
                self.taken[node] = match[0]
            node = self.taken.get(node, kids[0])
        return node

    def _full(self) -> Plan[None]:
        """Every node, exactly."""
        parents = [-1] + self.tree.internal_nodes()
        if self.walks:
            for parent in parents:
                yield from self.open_row(parent)
                for k in self.children_of(parent):
                    if k not in self.exact:
                        yield from self.score(k)
            return
        for parent in parents:
            yield from self.expand(parent)
        for parent in parents:
            missing = [k for k in self.children_of(parent) if k not in self.exact]
            for k in missing if self.pre else missing[:1]:
                yield from self.refine(k)

    def _best_first(self) -> Plan[Optional[int]]:
        """The exact best choice under ``sum``: nodes expanded best upper bound first, until a complete choice
        beats every bound. Ties go to the inexact entry: a choice wins only when no bound of another can reach
        its score."""
        nodes, exact = self.nodes, self.exact
        yield from self.open_row(-1)
        heap = [(-self.upper(k), 1 if k in exact else 0, next(self.order), k) for k in self.children_of(-1)]
        heapq.heapify(heap)
        while heap:
            key, _, _, index = heapq.heappop(heap)
            current = self.upper(index)
            if current < -key - 1e-12:  # stale: a sibling's refinement lowered it
                heapq.heappush(heap, (-current, 1 if index in exact else 0, next(self.order), index))
                continue
            if index not in exact:
                yield from self.score(index)
                heapq.heappush(heap, (-self.upper(index), 1, next(self.order), index))
                continue
            if nodes[index].ends:
                return index
            yield from self.open_row(index)
            for k in nodes[index].children.values():
                heapq.heappush(heap, (-self.upper(k), 1 if k in exact else 0, next(self.order), k))
        return None

    def _result(self, winner: Optional[int]) -> tuple[list[list[float]], dict, TokenChoiceTree]:
        tree, nodes, exact, bound = self.tree, self.nodes, self.exact, self.bound
        token_logprobs = [[exact.get(i, math.nan) for i in path] for path in tree.paths]
        bounded: list = []
        if self.search == "greedy":  # a decision, not a distribution: all the mass on the choice reached
            bounded = [[0.0] if nodes[path[-1]].index == winner else [-math.inf] for path in tree.paths]
        for path in tree.paths if self.search != "greedy" else []:
            values = []
            for i in path:
                if i in exact:
                    values.append(exact[i])
                elif i in bound:
                    values.append(bound[i])
                else:
                    break  # below an eliminated node: the partial sum above bounds the choice
            bounded.append(values)
        tree.set_logprobs([exact.get(i, math.nan) for i in range(len(nodes))])
        info = {
            "bias": self.session.probe()["bias"],
            "exact": [all(i in exact for i in p) for p in tree.paths],
            "nodes_scored": len(exact),
            "nodes": len(nodes),
            "search": self.search,
            "branching_nodes": tree.branching_nodes(),
            "winner": None if winner is None else nodes[winner].ends[0],
            "bounded": bounded,
        }
        return token_logprobs, info, tree
