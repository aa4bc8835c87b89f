"""Running a `Program`: depth-first exploration into a thought tree, through the public `LM` API only.

* Text: no model call; its text is appended to the prompt.
* Complete: on a `GreedyLM`, ``lm.generate`` (the one decoding loop; greedy, the same tokens as
  ``lm.complete`` with ``temperature=0``, plus their log-probs and, for a ``pattern``, the grammar engine's
  token mask; see `autocog.fta.decoding`); on any other `LM`, ``lm.complete`` (patterns repaired after the fact).
* Choose: ``lm.choice_distribution`` (``lm.choose`` alone when a backend cannot score: the option taken then
  has probability 1 and the others are pruned).

Every model call gets the whole prompt as text, exactly what a user would pass by hand, so a backend with a
prefix cache reuses the longest common prefix with its previous call. Token accounting: the sequences the
model reads are inserted in a token trie (`TokenStats.unique`); the backend's ``tokens_evaluated`` counter
gives what it actually ran.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np

from autocog.core.checks import split_boundary
from autocog.core.trie import TokenChoiceTree
from autocog.core.types import ChoiceResult, ScoreRequest
from autocog.fta.decoding import complete_text, decode, step_logprob
from autocog.fta.program import Program
from autocog.fta.steps import END, Choose, Complete, Step, Text
from autocog.fta.tree import Path, ProgramResult, ThoughtNode, TokenStats
from autocog.lm.base import LM
from autocog.lm.choice import ChoiceLM
from autocog.lm.greedy import GreedyLM
from autocog.lm.scoring import TreeJob, score_trees


class TokenTrie:
    """A trie of token sequences; ``size`` counts its nodes (the unique (prefix, token) pairs)."""

    def __init__(self) -> None:
        self.root: dict = {}
        self.size = 0

    def insert(self, tokens) -> None:
        node = self.root
        for t in tokens:
            nxt = node.get(t)
            if nxt is None:
                nxt = node[t] = {}
                self.size += 1
            node = nxt


class DepthFirst:
    """A tree evaluator for `autocog.lm.scoring.score_trees`: one ``greedy`` call per row of each trie (the
    prompt, then its inner nodes depth first: `TokenChoiceTree.read_each`). ``last`` is the last inner node run
    (its path is what the prefix cache holds afterwards; -1: none)."""

    def __init__(self, lm: GreedyLM):
        self.lm = lm
        self.last = -1

    def __call__(self, jobs: Sequence[TreeJob]) -> list[np.ndarray]:
        return [self.walk(list(prompt_tokens), tree) for prompt_tokens, tree in jobs]

    def walk(self, prompt_tokens: list[int], tree: TokenChoiceTree) -> np.ndarray:
        out = tree.read_each(lambda path: self.lm.greedy(prompt_tokens + path), depth_first=True)
        self.last = tree.rows(depth_first=True)[-1]
        return out

    def cached_per_choice(self, tree: TokenChoiceTree) -> list[int]:
        """How many of each choice's tokens the prefix cache holds after the walk."""
        cached, last = set(), self.last
        while last >= 0:
            cached.add(last)
            last = tree.nodes[last].parent
        return [sum(n in cached for n in path) for path in tree.paths]


class _State:
    """Where a path stands: the prompt so far, values, visits per step, its score and its last node."""

    __slots__ = ("latest", "node", "prompt", "score", "step", "turns", "values", "visits")

    def __init__(self, step, prompt, values, latest, visits, score, node, turns=None):
        self.step, self.prompt, self.values, self.latest = step, prompt, values, latest
        self.visits, self.score, self.node = visits, score, node
        self.turns: list[list[str]] = turns if turns is not None else []  # [role, text] of a chat program

    def fork(self, node: ThoughtNode) -> _State:
        return _State(
            self.step,
            self.prompt,
            {k: (list(v) if isinstance(v, list) else v) for k, v in self.values.items()},
            dict(self.latest),
            dict(self.visits),
            self.score,
            node,
            [list(t) for t in self.turns],
        )

    def append(self, text: str, role: Optional[str] = None, reply: bool = False) -> None:
        """Add ``text`` to the prompt: a new turn of ``role``, the current turn, or (``reply``: what the model
        wrote) the assistant's reply, opened when the current turn is someone else's."""
        self.prompt += text
        if role is not None:
            self.turns.append([role, text])
        elif self.turns:
            if reply and self.turns[-1][0] != "assistant":
                self.turns.append(["assistant", ""])
            self.turns[-1][1] += text


class Explorer:
    """One run of ``program`` on ``lm`` (see the module docstring); `run` returns the `ProgramResult`."""

    def __init__(
        self,
        program: Program,
        lm: LM,
        width: Optional[int],
        threshold: float,
        completion_scores: bool,
        scoring: str = "prefix",
    ):
        self.program, self.lm, self.scoring = program, lm, scoring
        self.width, self.threshold, self.completion_scores = width, threshold, completion_scores
        self.token_lm: Optional[GreedyLM] = lm if isinstance(lm, GreedyLM) else None  # the masked decoding path
        self.trie = TokenTrie()
        self.calls = {"complete": 0, "choose": 0}
        self.counter = 0

    # --- helpers ---------------------------------------------------------------------------------------------
    def node(self, **kwargs: Any) -> ThoughtNode:
        self.counter += 1
        return ThoughtNode(id=self.counter, **kwargs)

    def prompt_ids(self, text: Any) -> list[int]:
        text = self.lm.render_prompt(text)  # chat messages (for a chat server: accounting only)
        if self.token_lm is not None:
            return self.token_lm.prompt_tokens(text)
        return list(self.lm.tokenize(text, bos=True))

    def prompt_of(self, state: _State) -> Any:
        """What the model is given: the plain prompt, or for a chat program the conversation rendered with the
        model's template plus the assistant's reply so far (the messages themselves while the reply is empty and
        the backend renders them, e.g. a chat server)."""
        if not state.turns:
            return state.prompt
        messages = [{"role": role, "content": text} for role, text in state.turns]
        reply = messages.pop()["content"] if messages[-1]["role"] == "assistant" else ""
        if not reply and self.token_lm is None:
            return messages
        return self.lm.apply_chat_template(messages, add_generation_prompt=True) + reply

    def open(self, target: str, state: _State) -> bool:
        """True when ``target`` can still be entered on this path (END always can)."""
        if target == END:
            return True
        bound = self.program.by_name[target].max_visits
        return bound is None or state.visits.get(target, 0) < bound

    def store(self, state: _State, step: Step, value: Any) -> None:
        if step.name in self.program.looped:
            state.values.setdefault(step.name, []).append(value)
        else:
            state.values[step.name] = value
        state.latest[step.name] = value

    # --- the run -------------------------------------------------------------------------------------------
    def tokens_so_far(self) -> Optional[int]:
        """The backend's ``tokens_evaluated``, or None when it keeps no count (GreedyLM's default, OpenAI)."""
        prop = getattr(type(self.lm), "tokens_evaluated", None)
        if prop is None or prop is GreedyLM.tokens_evaluated:
            return None
        count = getattr(self.lm, "tokens_evaluated", None)
        return None if count is None else int(count)

    def run(self, inputs: dict) -> ProgramResult:
        before = self.tokens_so_far()
        root = self.node(step="", kind="root")
        start = _State(self.program.entry, "", {}, dict(inputs), {}, 0.0, root)
        leaves: list[tuple[_State, str]] = []
        stack = [start]
        while stack:
            state = stack.pop()
            while True:
                if state.step == END:
                    leaves.append((state, "end"))
                    break
                step = self.program.by_name[state.step]
                state.visits[step.name] = state.visits.get(step.name, 0) + 1
                if isinstance(step, Choose):
                    state.append("", reply=True)  # a chat program: the model writes the assistant's reply
                    children = self.choose(step, state)
                    if not children:
                        leaves.append((state, "bound"))
                    stack.extend(reversed(children))  # best option explored first
                    break
                if isinstance(step, Text):
                    text = step.render(state.latest)
                    state.node = state.node.add(self.node(step=step.name, kind="text", text=text, score=0.0))
                    state.append(text, role=step.role)
                else:
                    assert isinstance(step, Complete)  # the three kinds of step
                    state.append("", reply=True)
                    self.complete(step, state)
                    state.append(state.node.text, reply=True)
                target = self.program.successor(step)
                if not self.open(target, state):
                    leaves.append((state, "bound"))
                    break
                state.step = target
        paths = []
        for state, status in leaves:
            state.node.status = status
            paths.append(
                Path(
                    values=state.values, score=state.score, text=state.prompt, status=status, nodes=state.node.lineage()
                )
            )
        paths.sort(key=lambda p: -p.score)
        after = self.tokens_so_far()
        evaluated = after - before if after is not None and before is not None else None
        stats = TokenStats(evaluated=evaluated, unique=self.trie.size, calls=dict(self.calls))
        settings = {
            "width": self.width,
            "threshold": self.threshold,
            "completion_scores": self.completion_scores,
            "scoring": self.scoring,
            "inputs": inputs,
        }
        return ProgramResult(paths=paths, tree=root, tokens=stats, settings=settings)

    # --- Choose ---------------------------------------------------------------------------------------------
    def choose(self, step: Choose, state: _State) -> list[_State]:
        options = [o for o in step.options if self.open(self.program.successor(step, o), state)]
        if not options:
            return []
        kwargs = {}
        if step.normalization is not None:
            kwargs["normalization"] = step.normalization
        if step.end is not None:
            kwargs["end"] = step.end
        self.calls["choose"] += 1
        prompt = self.prompt_of(state)
        self.account_choose(self.lm.render_prompt(prompt), options, step)
        result = None
        if self.scoring == "prefix" and isinstance(self.lm, ChoiceLM) and step.normalization != "pmi":
            result = self.score_prefix(self.lm, prompt, options, step)
        else:
            try:
                result = self.lm.choice_distribution(prompt, options, **kwargs)
            except NotImplementedError:
                pass
        if result is not None:
            probs = np.asarray(result.probs, dtype=np.float64)
            logprobs = result.logprobs
        else:  # a backend that only chooses: the option taken is certain, the others are not scored
            index = self.lm.choose(prompt, options, **kwargs)
            probs = np.zeros(len(options))
            probs[index] = 1.0
            logprobs = np.full(len(options), math.nan)
        width = step.width if step.width is not None else self.width
        threshold = step.threshold if step.threshold is not None else self.threshold
        order = sorted(range(len(options)), key=lambda j: (-probs[j], j))
        kept = [j for j in order if probs[j] >= threshold and probs[j] > 0][: width if width is not None else None]
        if not kept:
            kept = order[:1]
        children = []
        for j in order:
            option = options[j]
            prob = float(probs[j])
            node = self.node(
                step=step.name,
                kind="choose",
                text=option,
                value=option,
                option=j,
                prob=prob,
                score=math.log(prob) if prob > 0 else -math.inf,
                logprob=float(logprobs[j]),
                choice=result,
                pruned=j not in kept,
            )
            state.node.add(node)
            if j in kept:
                child = state.fork(node)
                child.score += node.score
                child.append(option, reply=True)
                self.store(child, step, option)
                child.step = self.program.successor(step, option)
                children.append(child)
        if result is not None and isinstance(result.info.get("cached"), list) and len(children) > 1:
            # explore first the kept option whose tokens the prefix cache still holds (results are sorted later)
            cached = result.info["cached"]
            first = max(range(len(children)), key=lambda k: (cached[children[k].node.option], -k))
            children.insert(0, children.pop(first))
        return children

    def score_prefix(self, lm: ChoiceLM, prompt: str, options: list[str], step: Choose) -> ChoiceResult:
        """`ChoiceLM.choice_distribution` through the scoring layer (its checks, trie and normalization), with
        the trie evaluated depth-first through ``lm.greedy`` (`DepthFirst`): the prefix cache extends the
        previous call by one token each time and leaves are never run. The option a path then takes is read
        once more when the path goes on."""
        walk = DepthFirst(lm)
        request = ScoreRequest(prompt, options, step.normalization, step.end)
        result = score_trees(lm, [request], evaluate=walk, strategy="prefix")[0]
        assert result.tree is not None  # the trie path always keeps its tree
        result.info["cached"] = walk.cached_per_choice(result.tree)
        return result

    def account_choose(self, prompt: str, options: list[str], step: Choose) -> None:
        context, continuations = split_boundary(prompt, options)
        prefix = self.prompt_ids(context) if context else []
        end = list(self.lm.tokenize(step.end)) if step.end else []
        for text in continuations:
            self.trie.insert(prefix + list(self.lm.tokenize(text)) + end)
        if step.normalization == "pmi" and hasattr(self.lm, "unconditional_tokens"):
            base = list(self.lm.unconditional_tokens())
            for text in continuations:
                self.trie.insert(base + list(self.lm.tokenize(text)) + end)

    # --- Complete --------------------------------------------------------------------------------------------
    def complete(self, step: Complete, state: _State) -> None:
        self.calls["complete"] += 1
        if self.token_lm is not None:
            appended, value, logprob, n_tokens = self.decode(self.token_lm, step, self.prompt_of(state))
        else:
            appended, value, logprob, n_tokens = self.complete_text(step, self.prompt_of(state))
        score = logprob if (self.completion_scores and not math.isnan(logprob)) else 0.0
        node = self.node(
            step=step.name, kind="complete", text=appended, value=value, score=score, logprob=logprob, n_tokens=n_tokens
        )
        state.node = state.node.add(node)
        state.score += score
        self.store(state, step, value)

    def decode(self, lm: GreedyLM, step: Complete, prompt: str) -> tuple[str, str, float, int]:
        """``lm.complete_tokens`` (greedy, the step's grammar as constraint): ``(text appended, value, log-prob,
        tokens)``."""
        out = decode(lm, step, prompt)
        self.trie.insert(out.read)
        return out.appended, out.value, out.logprob, out.n_tokens

    def complete_text(self, step: Complete, prompt: str) -> tuple[str, str, float, int]:
        """``lm.complete`` for backends without next-token log-probs (a pattern is repaired afterwards)."""
        out = complete_text(self.lm, step, prompt)
        self.trie.insert(self.prompt_ids(prompt) + list(self.lm.tokenize(out.appended)))
        logprob = math.nan
        if self.completion_scores and out.appended:
            scored = step_logprob(self.lm, prompt, out.appended)
            logprob = math.nan if scored is None else scored
        return out.appended, out.value, logprob, out.n_tokens
