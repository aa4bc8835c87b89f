"""The steps of a program: `Text`, `Complete`, `Choose`, and the `END` marker.

Every step has a ``name`` (unique in its program), a successor ``next`` (a step name, `END`, or None for
"the step listed after me"; `END` after the last one) and an optional ``max_visits``, the bound that makes a
loop through the step finite. Complete and Choose store a value under their name; a Text may use program
inputs and earlier values as ``{name}`` fields (``{{`` and ``}}`` for literal braces).

>>> Text("Question: {q}\\nAnswer:"), Complete("reasoning", stop="\\n", max_tokens=64)      # doctest: +SKIP
>>> Choose("again", {" yes": "think", " no": END})                                       # doctest: +SKIP
"""

from __future__ import annotations

import string
from typing import Any, Mapping, Optional, Sequence, Union

from autocog.core.checks import check_choices
from autocog.core.normalization import NORMALIZATIONS
from autocog.core.stops import as_stop_list
from autocog.errors import InvalidChoicesError, InvalidStepError

END = "END"
"""The successor that ends a run."""

Successor = Optional[str]


def _check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidStepError(f"a {what} needs a non-empty str name, got {name!r}", step=None)
    if name == END:
        raise InvalidStepError(f"{END!r} is reserved for the end of the program and cannot name a step", step=name)
    return name


def _check_visits(name: Optional[str], max_visits: object) -> Optional[int]:
    if max_visits is None:
        return None
    if isinstance(max_visits, bool) or not isinstance(max_visits, int) or max_visits < 1:
        raise InvalidStepError(f"step {name!r}: max_visits must be an int >= 1, got {max_visits!r}", step=name)
    return max_visits


class Step:
    """Base of all steps: ``name``, ``next`` (successor), ``max_visits`` (loop bound). ``kind`` names the class."""

    kind = "step"
    name: str
    next: Successor
    max_visits: Optional[int]

    @property
    def produces(self) -> Optional[str]:
        """The name of the value this step stores, or None."""
        return None

    def successors(self) -> list[str]:
        """Explicit successors (names); None entries mean the default successor."""
        return [self.next] if self.next is not None else []

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class Text(Step):
    """Fixed text appended to the prompt; ``{name}`` fields take program inputs or earlier step values.

    ``name`` defaults to ``text<k>`` (k: its position in the program). The value of a step that runs inside a
    loop is the latest one.

    >>> Text("Question: {q}\\n").fields
    ['q']
    """

    kind = "text"

    def __init__(
        self,
        text: str,
        name: Optional[str] = None,
        next: Successor = None,
        max_visits: Optional[int] = None,
        role: Optional[str] = None,
    ):
        if not isinstance(text, str):
            raise InvalidStepError(f"Text {name!r}: text must be a str, not {type(text).__name__}", step=name)
        if role is not None and role not in TURN_ROLES:
            raise InvalidStepError(
                f"Text {name!r}: unknown role {role!r}: expected one of {', '.join(TURN_ROLES)}", step=name
            )
        self.role = role  # None: the text goes on the current turn (or the plain prompt)
        self.text = text
        # None until the Program names it (text0, text1, ...)
        self.name = _check_name(name, "Text") if name is not None else None  # type: ignore[assignment]
        self.next = next
        self.max_visits = _check_visits(name, max_visits)
        self._fields: Optional[list[str]] = None

    @property
    def fields(self) -> list[str]:
        """Names used as ``{name}`` in the text, in order of first use."""
        if self._fields is None:
            fields: list[str] = []
            try:
                parsed = list(string.Formatter().parse(self.text))
            except ValueError as error:
                raise InvalidStepError(
                    f"step {self.name!r}: bad text template ({error}): {self.text!r}", step=self.name
                ) from None
            for _, field, _, _ in parsed:
                if field is None:
                    continue
                base = field.split(".")[0].split("[")[0]
                if not base.isidentifier():
                    raise InvalidStepError(
                        f"step {self.name!r}: the template field {{{field}}} must start with a "
                        f"name (positional fields are not allowed)",
                        step=self.name,
                    )
                if base not in fields:
                    fields.append(base)
            self._fields = fields
        return self._fields

    def render(self, values: Mapping[str, object]) -> str:
        return self.text.format_map(values) if self.fields or "{" in self.text or "}" in self.text else self.text


TURN_ROLES = ("system", "user", "assistant")


def System(text: str, name: Optional[str] = None, next: Successor = None, max_visits: Optional[int] = None) -> Text:
    """A Text that opens a system turn: the program's prompt becomes a chat, rendered with the model's template.

    >>> System("Answer with one word.").role
    'system'
    """
    return Text(text, name, next, max_visits, role="system")


def User(text: str, name: Optional[str] = None, next: Successor = None, max_visits: Optional[int] = None) -> Text:
    """A Text that opens a user turn; the Complete and Choose steps after it write the assistant's reply."""
    return Text(text, name, next, max_visits, role="user")


def Assistant(text: str, name: Optional[str] = None, next: Successor = None, max_visits: Optional[int] = None) -> Text:
    """A Text that opens an assistant turn with fixed text (the model's next steps continue it)."""
    return Text(text, name, next, max_visits, role="assistant")


class Complete(Step):
    """Free text generated by the model until a stop string, EOS or ``max_tokens``.

    The value stored under ``name`` is the text without the stop string; the prompt goes on with the stop
    string included when ``keep_stop`` (the default: a step stopped by ``"\\n"`` leaves the prompt on a new
    line). ``pattern`` constrains the text: a regex string, an ``autocog.Regex`` / ``Lark`` / ``GBNF``, or an
    engine `Grammar` (`autocog.structured`). On a `GreedyLM` the grammar engine masks tokens so that the value
    matches in full and then one of the stop strings (if any) ends it; ``max_tokens`` is then the budget
    after which the value is closed as soon as the pattern allows. On other backends the completion is
    repaired after the fact (its longest valid prefix, completed). Decoding is greedy (``lm.complete`` with
    ``temperature=0`` gives the same text without a pattern).

    >>> Complete("zip", stop='"', max_tokens=8, pattern=r"[0-9]{5}")     # doctest: +SKIP
    """

    kind = "complete"

    def __init__(
        self,
        name: str,
        stop: Union[str, Sequence[str], None] = "\n",
        max_tokens: int = 64,
        next: Successor = None,
        max_visits: Optional[int] = None,
        pattern: Any = None,
        keep_stop: bool = True,
    ):
        self.name = _check_name(name, "Complete")
        self.next = next
        self.max_visits = _check_visits(name, max_visits)
        try:
            self.stop = as_stop_list(stop)
        except ValueError as error:
            raise InvalidStepError(f"step {name!r}: {error}", step=name) from None
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise InvalidStepError(f"step {name!r}: max_tokens must be an int >= 1, got {max_tokens!r}", step=name)
        self.max_tokens = max_tokens
        self.keep_stop = bool(keep_stop)
        self.pattern, self.grammar = _step_grammar(name, pattern, self.stop)

    @property
    def produces(self) -> str:
        return self.name


class Choose(Step):
    """One option among several, scored by the model; the option taken may pick the successor.

    ``options``: a list of strings, or a dict ``{option: successor}`` (successor: a step name, `END`, or None
    for the default one); ``next`` gives the successor of the options the dict does not route. The value
    stored under ``name`` is the option text; the prompt goes on with it. ``normalization`` (``"sum"``,
    ``"mean"``, ``"char"``, ``"pmi"``; default: the LM's) turns per-token log-probs into the distribution over
    options; the step's score is the log of the taken option's probability in that distribution.
    ``width`` / ``threshold`` override the run's pruning for this step; ``end`` is passed to
    ``choice_distribution`` (text scored after each option, e.g. ``"\\n"``).

    >>> Choose("answer", [" A", " B", " C", " D"], normalization="sum")       # doctest: +SKIP
    """

    kind = "choose"

    def __init__(
        self,
        name: str,
        options: Union[Sequence[str], Mapping[str, Successor]],
        next: Successor = None,
        normalization: Optional[str] = None,
        width: Optional[int] = None,
        threshold: Optional[float] = None,
        end: Optional[str] = None,
        max_visits: Optional[int] = None,
    ):
        self.name = _check_name(name, "Choose")
        self.next = next
        self.max_visits = _check_visits(name, max_visits)
        if isinstance(options, Mapping):
            routes = dict(options)
            options = list(routes)
        else:
            routes = {}
        try:
            self.options = check_choices(options)
        except InvalidChoicesError as error:
            raise InvalidStepError(f"step {name!r}: {error}", step=name) from None
        self.routes: dict[str, Successor] = routes
        if normalization is not None and normalization not in NORMALIZATIONS:
            raise InvalidStepError(
                f"step {name!r}: unknown normalization {normalization!r}: expected one of {', '.join(NORMALIZATIONS)}",
                step=name,
            )
        self.normalization = normalization
        if width is not None and (isinstance(width, bool) or not isinstance(width, int) or width < 1):
            raise InvalidStepError(f"step {name!r}: width must be an int >= 1, got {width!r}", step=name)
        if threshold is not None and not (0.0 <= float(threshold) <= 1.0):
            raise InvalidStepError(
                f"step {name!r}: threshold must be a probability in [0, 1], got {threshold!r}", step=name
            )
        self.width, self.threshold, self.end = width, threshold, end

    @property
    def produces(self) -> str:
        return self.name

    def successors(self) -> list[str]:
        out = [t for t in self.routes.values() if t is not None]
        if self.next is not None:
            out.append(self.next)
        return out


def _step_grammar(name: str, pattern: Any, stops: list) -> tuple:
    """``(pattern, grammar)``: the pattern as an engine `Grammar`, and that grammar followed by a stop string."""
    if pattern is None:
        return None, None
    from autocog.structured import engine
    from autocog.structured.types import GBNF, Lark, Regex

    try:
        if isinstance(pattern, str):
            pattern = engine.regex(pattern)
        elif isinstance(pattern, Regex):
            pattern = engine.regex(pattern.pattern)
        elif isinstance(pattern, Lark):
            pattern = engine.lark(pattern.grammar)
        elif isinstance(pattern, GBNF):
            pattern = engine.gbnf(pattern.grammar)
        elif not isinstance(pattern, engine.Grammar):
            raise InvalidStepError(
                f"step {name!r}: pattern must be a regex str, autocog.Regex / Lark / GBNF or a "
                f"Grammar, not {type(pattern).__name__}",
                step=name,
            )
        if engine.is_empty(pattern):
            raise InvalidStepError(f"step {name!r}: the pattern {pattern.description} matches no text", step=name)
        return pattern, engine.followed_by(pattern, stops)
    except engine.GrammarError as error:
        raise InvalidStepError(f"step {name!r}: {error}", step=name) from None
