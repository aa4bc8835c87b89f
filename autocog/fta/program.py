"""`Program`: an automaton of steps, checked when built, run into a thought tree.

Edges. A step goes to its ``next`` (a step name or `END`); when ``next`` is None it goes to the step listed
after it, and the last step to `END`. A Choose may route each option (``Choose(..., {" yes": "again", " no":
END})``); ``edges`` passed to `Program` set the same things from outside: ``{"check": "think"}`` or
``{"more": {" yes": "item"}}``. The entry is the first step unless ``entry`` names another one.

Checks at build time (a `ProgramError` subclass naming the step): duplicate names, an edge or the entry to an
unknown step, a step unreachable from the entry, no way to reach END, a cycle without a bounded step
(``max_visits``), a Text that uses a value not set on every path before it. At run time, before any model
call: missing or unknown inputs.

Loops. Entering a step counts a visit; once a step has had ``max_visits`` visits on a path, the edges into it
are closed on that path: a Choose drops the options that lead there (the others share the probability), and
a step whose only successor is closed ends the path with status ``"bound"``. The value of a step that can
run more than once (it lies on a cycle) is the list of its values; ``{name}`` in a Text gives the latest.

Exploration is depth-first, best option first, so consecutive model calls share the longest prefix and a
backend with a prefix cache (TfLM, LLaMa) evaluates each token of the thought tree about once. Pruning is
per Choose: options whose probability is below ``threshold`` are dropped, then all but the ``width`` most
probable; the most probable option is always kept.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Mapping, Optional, Sequence, Union

from autocog.errors import (
    DuplicateStepError,
    InvalidStepError,
    MissingInputError,
    ProgramError,
    UnboundedLoopError,
    UndefinedValueError,
    UnknownInputError,
    UnknownStepError,
    UnreachableStepError,
)
from autocog.fta.steps import END, Choose, Complete, Step, Text
from autocog.fta.tree import ProgramResult
from autocog.lm.base import LM

EdgeSpec = Union[str, Mapping[str, Optional[str]]]


class Program:
    """A finite thought automaton; see the module docstring for edges, checks, loops and exploration.

    ``steps``: the steps in their default order; ``entry``: the first step run (default: ``steps[0]``);
    ``edges``: successors set from outside (``{step: successor}`` or ``{choose_step: {option: successor}}``).
    The program keeps copies of the steps, so a step object may be reused elsewhere.

    >>> prog = Program([Text("Q: {q}\\nA:"), Choose("answer", [" yes", " no"])])
    >>> prog.inputs, [s.name for s in prog.steps]
    (['q'], ['text0', 'answer'])
    """

    def __init__(
        self,
        steps: Sequence[Step],
        entry: Optional[str] = None,
        edges: Optional[Mapping[str, EdgeSpec]] = None,
        name: str = "program",
    ):
        if isinstance(steps, Step) or not isinstance(steps, Sequence) or not steps:
            raise ProgramError("a program needs a non-empty list of steps")
        self.name = name
        self.steps: list[Step] = []
        self.by_name: dict[str, Step] = {}
        for k, step in enumerate(steps):
            if not isinstance(step, Step):
                raise ProgramError(f"step {k} is a {type(step).__name__}, not a Text, Complete or Choose step")
            step = copy.copy(step)
            if isinstance(step, Choose):
                step.routes = dict(step.routes)
            if step.name is None:
                step.name = f"text{k}"
            if step.name in self.by_name:
                raise DuplicateStepError(
                    f"two steps are named {step.name!r} (steps {self.steps.index(self.by_name[step.name])} and {k})",
                    step=step.name,
                )
            self.steps.append(step)
            self.by_name[step.name] = step
        self._default_next = {
            s.name: (self.steps[k + 1].name if k + 1 < len(self.steps) else END) for k, s in enumerate(self.steps)
        }
        for source, spec in (edges or {}).items():
            self._set_edge(source, spec)
        self.entry = self.steps[0].name if entry is None else entry
        if self.entry not in self.by_name:
            raise UnknownStepError(
                f"the entry {self.entry!r} is not a step of the program (steps: {', '.join(self.by_name)})",
                step=self.entry,
            )
        self._check_targets()
        self._check_reachable()
        self.looped = self._find_loops()
        self.inputs = self._check_values()

    # --- edges ---------------------------------------------------------------------------------------------
    def _set_edge(self, source: str, spec: EdgeSpec) -> None:
        step = self.by_name.get(source)
        if step is None:
            raise UnknownStepError(
                f"edges name an unknown step {source!r} (steps: {', '.join(self.by_name)})", step=source
            )
        if isinstance(spec, Mapping):
            if not isinstance(step, Choose):
                raise InvalidStepError(
                    f"step {source!r} is a {step.kind} step: only a Choose routes options", step=source
                )
            for option, target in spec.items():
                if option not in step.options:
                    raise InvalidStepError(
                        f"step {source!r} has no option {option!r} (options: {step.options})", step=source
                    )
                step.routes[option] = target
        else:
            step.next = spec

    def successor(self, step: Union[str, Step], option: Optional[str] = None) -> str:
        """The name of the step after ``step`` (after ``option``, for a Choose), or `END`."""
        step = self.by_name[step] if isinstance(step, str) else step
        if option is not None and isinstance(step, Choose):
            target = step.routes.get(option)
            if target is not None:
                return target
        return step.next if step.next is not None else self._default_next[step.name]

    def out_edges(self, step: Step) -> list[tuple[Optional[str], str]]:
        """``(option or None, target)`` for every edge leaving ``step``."""
        if isinstance(step, Choose):
            return [(o, self.successor(step, o)) for o in step.options]
        return [(None, self.successor(step))]

    def _targets(self, step: Step) -> list[str]:
        return list(dict.fromkeys(t for _, t in self.out_edges(step)))

    # --- checks --------------------------------------------------------------------------------------------
    def _check_targets(self) -> None:
        for step in self.steps:
            for option, target in self.out_edges(step):
                if target != END and target not in self.by_name:
                    via = f" (option {option!r})" if option is not None else ""
                    raise UnknownStepError(
                        f"step {step.name!r}{via} leads to an unknown step {target!r} "
                        f"(steps: {', '.join(self.by_name)}, or {END!r})",
                        step=step.name,
                    )

    def _check_reachable(self) -> None:
        seen, stack, reaches_end = {self.entry}, [self.entry], False
        while stack:
            for target in self._targets(self.by_name[stack.pop()]):
                if target == END:
                    reaches_end = True
                elif target not in seen:
                    seen.add(target)
                    stack.append(target)
        unreachable = [s.name for s in self.steps if s.name not in seen]
        if unreachable:
            raise UnreachableStepError(
                f"step {unreachable[0]!r} cannot be reached from the entry {self.entry!r}"
                + (f" (nor can {', '.join(map(repr, unreachable[1:]))})" if unreachable[1:] else ""),
                step=unreachable[0],
            )
        if not reaches_end:
            raise ProgramError(f"no path from the entry {self.entry!r} reaches {END}", step=self.entry)

    def _sccs(self, names: Sequence[str]) -> list[list[str]]:
        """Strongly connected components of the subgraph on ``names`` (Tarjan, iterative)."""
        allowed = set(names)
        graph = {n: [t for t in self._targets(self.by_name[n]) if t in allowed] for n in names}
        index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]
        for root in names:
            if root in index:
                continue
            work = [(root, iter(graph[root]))]
            index[root] = low[root] = counter[0]
            counter[0] += 1
            stack.append(root)
            on_stack.add(root)
            while work:
                node, it = work[-1]
                advanced = False
                for nxt in it:
                    if nxt not in index:
                        index[nxt] = low[nxt] = counter[0]
                        counter[0] += 1
                        stack.append(nxt)
                        on_stack.add(nxt)
                        work.append((nxt, iter(graph[nxt])))
                        advanced = True
                        break
                    if nxt in on_stack:
                        low[node] = min(low[node], index[nxt])
                if advanced:
                    continue
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in graph[node]:
                        out.append(component[::-1])
        return out

    def _find_loops(self) -> set[str]:
        names = [s.name for s in self.steps]
        looped = {n for component in self._sccs(names) for n in component}
        unbounded = [n for n in names if self.by_name[n].max_visits is None]
        cycles = self._sccs(unbounded)
        if cycles:
            cycle = sorted(cycles[0], key=names.index)
            raise UnboundedLoopError(
                f"steps {' -> '.join(cycle)} form a loop with no bound: give one of them "
                f"max_visits (e.g. step {cycle[0]!r})",
                step=cycle[0],
            )
        return looped

    def _check_values(self) -> list[str]:
        """Inputs used by Text steps; raise `UndefinedValueError` for a value that may not be set yet."""
        produced = {s.produces for s in self.steps if s.produces}
        for step in self.steps:
            if isinstance(step, Text):
                step.fields  # noqa: B018 - parse the template now, to report a bad one at build time
        preds: dict[str, list[str]] = {s.name: [] for s in self.steps}
        for step in self.steps:
            for target in self._targets(step):
                if target != END:
                    preds[target].append(step.name)
        everything = frozenset(produced)
        before = {s.name: (frozenset() if s.name == self.entry else everything) for s in self.steps}
        changed = True
        while changed:  # must-be-set analysis: a value is set before a step if it is set on every path there
            changed = False
            for step in self.steps:
                if step.name == self.entry:
                    continue
                incoming = [before[p] | _produced(self.by_name[p]) for p in preds[step.name]]
                new = frozenset.intersection(*incoming) if incoming else frozenset()
                if new != before[step.name]:
                    before[step.name], changed = new, True
        inputs: list[str] = []
        for step in self.steps:
            if not isinstance(step, Text):
                continue
            for name in step.fields:
                if name in produced:
                    if name not in before[step.name]:
                        raise UndefinedValueError(
                            f"step {step.name!r} uses {{{name}}}, the value of step {name!r}, "
                            f"which is not set on every path that reaches {step.name!r}",
                            step=step.name,
                        )
                elif name not in inputs:
                    inputs.append(name)
        return inputs

    def check_inputs(self, inputs: Mapping[str, Any]) -> dict:
        """The inputs as a dict, or a `MissingInputError` / `UnknownInputError` naming the step that uses them."""
        for name in self.inputs:
            if name not in inputs:
                users = [s.name for s in self.steps if isinstance(s, Text) and name in s.fields]
                raise MissingInputError(
                    f"step {users[0]!r} uses the input {{{name}}}, which was not given "
                    f"(inputs: {', '.join(self.inputs)})",
                    step=users[0],
                )
        for name in inputs:
            if name not in self.inputs:
                hint = (
                    f"the program's inputs are {', '.join(self.inputs)}"
                    if self.inputs
                    else "the program takes no input"
                )
                raise UnknownInputError(f"unknown input {name!r}: {hint}", step=None)
        return dict(inputs)

    # --- running ------------------------------------------------------------------------------------------
    def run(
        self,
        lm: LM,
        width: Optional[int] = 1,
        threshold: float = 0.0,
        completion_scores: bool = False,
        scoring: str = "prefix",
        inputs: Optional[Mapping[str, Any]] = None,
        **kw_inputs: Any,
    ) -> ProgramResult:
        """Explore the program on ``lm`` into a thought tree; paths come back best first.

        ``width``: options explored per Choose (None: all); ``threshold``: options below this probability are
        pruned; a Choose may override both. ``completion_scores``: add the log-prob of each Complete's tokens
        to the path scores (default: paths are scored by their choices only). ``scoring``: how a Choose is
        scored on a `ChoiceLM` (TfLM, LLaMa): ``"prefix"`` (default) walks the option trie depth-first with
        ``lm.greedy``, so the prefix cache never runs a token twice within the Choose and pruned options'
        last tokens are never run (the fewest tokens); ``"distribution"`` calls ``lm.choice_distribution``
        (one batched pass over the trie: fewer forward calls, but the options a path takes are run again when
        it goes on). Other backends, and ``pmi``, always use ``choice_distribution``. Inputs come as keywords,
        or in ``inputs`` for names that clash with these settings. Inputs are checked before any model call.

        >>> result = prog.run(lm, width=2, q="2 + 2 = ?")            # doctest: +SKIP
        >>> result.best.values["answer"], result.tokens.ratio         # doctest: +SKIP
        (' yes', 1.02)
        """
        from autocog.fta.execute import Explorer

        if not isinstance(lm, LM):
            raise TypeError(f"run needs an autocog.lm.LM, not {type(lm).__name__}")
        if width is not None and (isinstance(width, bool) or not isinstance(width, int) or width < 1):
            raise ValueError(f"width must be an int >= 1 or None, got {width!r}")
        if not (0.0 <= float(threshold) <= 1.0) or math.isnan(float(threshold)):
            raise ValueError(f"threshold must be a probability in [0, 1], got {threshold!r}")
        overlap = set(inputs or {}) & set(kw_inputs)
        if overlap:
            raise ValueError(f"input(s) {', '.join(sorted(overlap))} given twice")
        values = self.check_inputs({**(inputs or {}), **kw_inputs})
        if scoring not in ("prefix", "distribution"):
            raise ValueError(f"scoring must be 'prefix' or 'distribution', got {scoring!r}")
        explorer = Explorer(
            self, lm, width=width, threshold=float(threshold), completion_scores=completion_scores, scoring=scoring
        )
        return explorer.run(values)

    # --- picture --------------------------------------------------------------------------------------------
    def to_dot(self, result: Optional[ProgramResult] = None, max_text: int = 30, title: str = "") -> str:
        """The automaton as GraphViz DOT: Text boxes, Complete ellipses, Choose diamonds, option labels on the
        edges, loop bounds on the steps. With a ``result``, each edge also shows how many thought-tree edges
        went through it and the mean probability of the options taken there."""
        from autocog.fta.tree import dot_quote, snippet

        usage: dict[tuple[str, str], list[float]] = {}
        if result is not None:  # each thought-tree edge realizes an automaton edge; a Choose's option prob is on it
            for node in result.tree.walk():
                if node.kind == "root" or node.pruned:
                    continue
                parent = node.parent
                assert parent is not None  # only the root has none
                source = parent.step if parent.kind != "root" else "__start__"
                usage.setdefault((source, node.step), []).append(parent.prob if parent.kind == "choose" else 1.0)
                if node.status == "end":
                    usage.setdefault((node.step, END), []).append(node.prob if node.kind == "choose" else 1.0)
        lines = [
            f"digraph {dot_quote(self.name)} {{",
            "  rankdir=TB;",
            '  node [fontname="monospace", fontsize=10];',
            '  edge [fontname="monospace", fontsize=9];',
        ]
        if title:
            lines.append(f"  label={dot_quote(title)}; labelloc=t;")
        lines.append('  __start__ [label="", shape=point, width=0.15];')
        lines.append(f'  __end__ [label="{END}", shape=doublecircle, fontsize=8];')
        for step in self.steps:
            if isinstance(step, Text):
                label, shape = f"{step.name}\n{snippet(step.text, max_text)}", "box"
            elif isinstance(step, Complete):
                label = f"{step.name}\ncomplete ≤{step.max_tokens} tok, stop={step.stop!r}"
                if step.pattern is not None:
                    source = step.pattern.source if isinstance(step.pattern.source, str) else step.pattern.kind
                    label += f"\n/{snippet(source, max_text)}/"
                shape = "ellipse"
            else:
                assert isinstance(step, Choose)  # the three kinds of step
                label, shape = f"{step.name}\nchoose ({len(step.options)})", "diamond"
            if step.max_visits is not None:
                label += f"\n≤ {step.max_visits} visits"
            lines.append(f"  {_node_id(step.name)} [label={dot_quote(label)}, shape={shape}];")

        def edge(source: str, target: str, label: str) -> str:
            stats = usage.get((source, target))
            if stats:
                label = (label + "\n" if label else "") + f"×{len(stats)} p̄={sum(stats) / len(stats):.2f}"
            attrs = f" [label={dot_quote(label)}]" if label else ""
            dst = "__end__" if target == END else _node_id(target)
            src = "__start__" if source == "__start__" else _node_id(source)
            return f"  {src} -> {dst}{attrs};"

        lines.append(edge("__start__", self.entry, ""))
        for step in self.steps:
            if isinstance(step, Choose):
                grouped: dict[str, list[str]] = {}
                for option in step.options:
                    grouped.setdefault(self.successor(step, option), []).append(option)
                for target, options in grouped.items():
                    lines.append(edge(step.name, target, " | ".join(snippet(o, 12) for o in options)))
            else:
                lines.append(edge(step.name, self.successor(step), ""))
        lines.append("}")
        return "\n".join(lines) + "\n"

    def render(self, path, **dot_kwargs: Any):
        """Write the automaton to ``path`` (``.dot``, or ``.svg`` / ``.png`` through GraphViz)."""
        from autocog.core.trie import render_dot

        return render_dot(self.to_dot(**dot_kwargs), path)

    def __repr__(self) -> str:
        return (
            f"Program({self.name!r}, steps=[{', '.join(repr(s) for s in self.steps)}], "
            f"inputs={getattr(self, 'inputs', None)})"
        )


def _node_id(name: str) -> str:
    return '"s:' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _produced(step: Step) -> frozenset[str]:
    """The value ``step`` sets, as a set (empty for a Text)."""
    return frozenset({step.produces}) if step.produces else frozenset()
