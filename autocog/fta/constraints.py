"""Character-level constraints for free text, enforced by token masking over `GreedyLM.greedy`.

A `Pattern` is a regular expression (a small, safe subset of Python's syntax) that the generated text must
match in full, plus the *terminators*: strings that end the value once the text matches (``'"'`` after a
JSON string, ``","`` or ``"\\n"`` after a number). The regex is compiled to an NFA (Thompson), then
explored lazily as a DFA whose transitions are memoized per character. At each decoding step the model's
next-token log-probs are masked to the tokens whose text the DFA can consume from its current state, or
that, from an accepting state, start with a terminator (then the value ends there and the rest of that
token's text is dropped). EOS is allowed only in an accepting state. If the token budget runs out before
the text matches, the shortest completion that matches is appended (``"-"`` becomes ``"-0"``), so the
value always matches.

Why hand-written and not llguidance / xgrammar / outlines-core: the constraints a program needs are per
field and tiny (JSON string content, number syntax, a user ``pattern``), while the structure around them
(keys, punctuation, enums, list continuation) is the program itself, made of Text and Choose steps that
the thought tree must see and score. The grammar engines mask a whole JSON schema at once and need the
backend's tokenizer object (a Hugging Face tokenizer or llama.cpp vocabulary): one adapter per backend, and
enum branches hidden inside the grammar. Masking here only uses the public `LM` API (`detokenize` of each
token id, `greedy`), so it works unchanged on every `GreedyLM` (TfLM, LLaMa). The price: regex subset only
(no look-around, no back-references), and characters that a byte-level vocabulary splits across tokens
(partial UTF-8, shown as U+FFFD) cannot be generated inside a constrained value.

>>> p = Pattern(r"-?(0|[1-9][0-9]*)", terminators=(",",))
>>> p.matches("-12"), p.matches("012"), p.shortest_completion("-")
(True, False, '0')
"""

from __future__ import annotations

import weakref
from collections import deque
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np

__all__ = ["Pattern", "PatternError", "JSON_STRING_CHAR", "json_string", "integer", "number", "token_texts"]


class PatternError(ValueError):
    """The regular expression uses syntax outside the supported subset, or is malformed."""


# --- character classes -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CharClass:
    """A set of characters: explicit ``chars`` plus inclusive ``ranges``, optionally negated, minus ``exclude``."""

    chars: frozenset = frozenset()
    ranges: tuple = ()
    negated: bool = False
    exclude: frozenset = frozenset()   # never matched (used to keep JSON-unsafe characters out)

    def __contains__(self, c: str) -> bool:
        if c in self.exclude:
            return False
        inside = c in self.chars or any(lo <= c <= hi for lo, hi in self.ranges)
        return inside != self.negated

    def without(self, chars: Iterable[str]) -> "CharClass":
        return CharClass(self.chars, self.ranges, self.negated, self.exclude | frozenset(chars))

    def representative(self) -> Optional[str]:
        """One character of the class (for shortest completions), or None if it is empty."""
        candidates = sorted(self.chars) + [lo for lo, _ in self.ranges] if not self.negated else []
        candidates += list("0aA _-.x1")
        for c in candidates:
            if c in self:
                return c
        for code in range(0x20, 0x250):
            if chr(code) in self:
                return chr(code)
        return None


DIGITS = CharClass(ranges=(("0", "9"),))
WORD = CharClass(chars=frozenset("_"), ranges=(("a", "z"), ("A", "Z"), ("0", "9")))
SPACE = CharClass(chars=frozenset(" \t\n\r\f\v"))
ANY = CharClass(chars=frozenset("\n"), negated=True)
CONTROL = frozenset(chr(c) for c in range(0x20)) | {"\x7f"}
JSON_UNSAFE = frozenset('"\\') | CONTROL


# --- parser: regex subset -> AST ---------------------------------------------------------------------------
# AST nodes: ("class", CharClass) | ("cat", [nodes]) | ("alt", [nodes]) | ("rep", node, min, max|None)

class _Parser:
    def __init__(self, source: str):
        self.s, self.i = source, 0

    def error(self, message: str) -> PatternError:
        return PatternError(f"{message} at position {self.i} of pattern {self.s!r}")

    def peek(self) -> Optional[str]:
        return self.s[self.i] if self.i < len(self.s) else None

    def take(self) -> str:
        c = self.s[self.i]
        self.i += 1
        return c

    def parse(self):
        node = self.alternation()
        if self.i != len(self.s):
            raise self.error("unbalanced ')'")
        return node

    def alternation(self):
        branches = [self.concatenation()]
        while self.peek() == "|":
            self.take()
            branches.append(self.concatenation())
        return branches[0] if len(branches) == 1 else ("alt", branches)

    def concatenation(self):
        items = []
        while self.peek() not in (None, "|", ")"):
            items.append(self.repetition())
        return ("cat", items)

    def repetition(self):
        atom = self.atom()
        while self.peek() in ("*", "+", "?", "{"):
            c = self.peek()
            if c == "{":
                bounds = self.braces()
                if bounds is None:
                    break
                lo, hi = bounds
            else:
                self.take()
                lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
            if self.peek() == "?":   # lazy quantifier: same language
                self.take()
            if self.peek() == "+":
                raise self.error("possessive quantifiers are not supported")
            atom = ("rep", atom, lo, hi)
        return atom

    def braces(self):
        j = self.s.find("}", self.i)
        body = self.s[self.i + 1:j] if j > 0 else ""
        parts = body.split(",")
        if j < 0 or len(parts) > 2 or not all(p.strip().isdigit() or (k == 1 and p.strip() == "") for k, p in enumerate(parts)):
            return None   # a literal '{'
        self.i = j + 1
        lo = int(parts[0])
        hi = lo if len(parts) == 1 else (int(parts[1]) if parts[1].strip() else None)
        if hi is not None and hi < lo:
            raise self.error(f"bad repetition {{{body}}}")
        return lo, hi

    def atom(self):
        c = self.take()
        if c == "(":
            if self.s.startswith("?:", self.i):
                self.i += 2
            elif self.peek() == "?":
                raise self.error("look-around and named groups are not supported")
            node = self.alternation()
            if self.peek() != ")":
                raise self.error("missing ')'")
            self.take()
            return node
        if c == "[":
            return ("class", self.char_class())
        if c == ".":
            return ("class", ANY)
        if c == "\\":
            return ("class", self.escape(in_class=False))
        if c in "*+?":
            raise self.error(f"nothing to repeat before {c!r}")
        if c in "^$":
            raise self.error("anchors are only supported at the very start and end")
        return ("class", CharClass(chars=frozenset(c)))

    def escape(self, in_class: bool) -> CharClass:
        if self.peek() is None:
            raise self.error("trailing backslash")
        c = self.take()
        named = {"d": DIGITS, "w": WORD, "s": SPACE}
        if c in named:
            return named[c]
        if c.lower() in named:
            base = named[c.lower()]
            return CharClass(base.chars, base.ranges, not base.negated)
        simple = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "0": "\x00"}
        if c in simple:
            return CharClass(chars=frozenset(simple[c]))
        if c == "x":
            code = self.s[self.i:self.i + 2]
            self.i += 2
            return CharClass(chars=frozenset(chr(int(code, 16))))
        if c == "u":
            code = self.s[self.i:self.i + 4]
            self.i += 4
            return CharClass(chars=frozenset(chr(int(code, 16))))
        if c.isalnum():
            raise self.error(f"escape \\{c} is not supported")
        return CharClass(chars=frozenset(c))

    def char_class(self) -> CharClass:
        negated = self.peek() == "^"
        if negated:
            self.take()
        chars, ranges, subclasses = set(), [], []
        first = True
        while True:
            c = self.peek()
            if c is None:
                raise self.error("missing ']'")
            if c == "]" and not first:
                self.take()
                break
            first = False
            self.take()
            if c == "\\":
                sub = self.escape(in_class=True)
                if len(sub.chars) == 1 and not sub.ranges and not sub.negated:
                    c = next(iter(sub.chars))
                else:
                    subclasses.append(sub)
                    continue
            if self.peek() == "-" and self.i + 1 < len(self.s) and self.s[self.i + 1] != "]":
                self.take()
                hi = self.take()
                if hi == "\\":
                    hi = next(iter(self.escape(in_class=True).chars))
                if hi < c:
                    raise self.error(f"bad range {c}-{hi}")
                ranges.append((c, hi))
            else:
                chars.add(c)
        for sub in subclasses:   # \d inside [...]: merge (negated sub-classes are rare; refuse them)
            if sub.negated:
                raise self.error("negated escapes (\\D, \\W, \\S) inside [...] are not supported")
            chars |= sub.chars
            ranges.extend(sub.ranges)
        return CharClass(frozenset(chars), tuple(ranges), negated)


# --- NFA ---------------------------------------------------------------------------------------------------

MAX_NFA_STATES = 20000


class _NFA:
    def __init__(self):
        self.eps: list[list[int]] = []
        self.moves: list[list[tuple[CharClass, int]]] = []

    def state(self) -> int:
        self.eps.append([])
        self.moves.append([])
        if len(self.eps) > MAX_NFA_STATES:
            raise PatternError(f"pattern too large once its counted repetitions are expanded (> {MAX_NFA_STATES} states)")
        return len(self.eps) - 1

    def build(self, node, exclude: frozenset) -> tuple[int, int]:
        kind = node[0]
        if kind == "class":
            start, end = self.state(), self.state()
            self.moves[start].append((node[1].without(exclude) if exclude else node[1], end))
            return start, end
        if kind == "cat":
            start = end = self.state()
            for item in node[1]:
                s, e = self.build(item, exclude)
                self.eps[end].append(s)
                end = e
            return start, end
        if kind == "alt":
            start, end = self.state(), self.state()
            for branch in node[1]:
                s, e = self.build(branch, exclude)
                self.eps[start].append(s)
                self.eps[e].append(end)
            return start, end
        _, item, lo, hi = node
        start = end = self.state()
        for _ in range(lo):
            s, e = self.build(item, exclude)
            self.eps[end].append(s)
            end = e
        if hi is None:
            s, e = self.build(item, exclude)
            self.eps[end].append(s)
            self.eps[e].append(s)
            loop_end = self.state()
            self.eps[end].append(loop_end)
            self.eps[e].append(loop_end)
            return start, loop_end
        final = self.state()
        self.eps[end].append(final)
        for _ in range(hi - lo):
            s, e = self.build(item, exclude)
            self.eps[end].append(s)
            self.eps[e].append(final)
            end = e
        return start, final


# --- the pattern: lazy DFA ---------------------------------------------------------------------------------

class Pattern:
    """A full-match regular-expression constraint with terminators; see the module docstring.

    ``regex``: the pattern (``^`` / ``$`` at its ends are allowed and ignored: the match is always full).
    ``terminators``: strings that may end the value once it matches (empty: the value ends only at EOS or at
    the token limit). ``exclude``: characters never generated (e.g. ``'"'`` and ``'\\\\'`` inside a JSON string).
    ``max_chars``: a length limit checked outside the automaton (cheaper than ``{0,n}`` for long strings).

    >>> Pattern(r"\\d{3}-\\d{4}").matches("555-0100")
    True
    """

    def __init__(self, regex: str, terminators: Sequence[str] = (), exclude: Iterable[str] = (), name: str = "",
                 max_chars: Optional[int] = None):
        if not isinstance(regex, str):
            raise PatternError(f"a pattern must be a str, not {type(regex).__name__}")
        if max_chars is not None and (not isinstance(max_chars, int) or max_chars < 0):
            raise PatternError(f"max_chars must be a non-negative int, got {max_chars!r}")
        self.regex = regex
        self.max_chars = max_chars
        self.name = name or regex
        self.terminators = tuple(terminators)
        for t in self.terminators:
            if not isinstance(t, str) or not t:
                raise PatternError(f"terminators must be non-empty strings, got {t!r}")
        self.exclude = frozenset(exclude)
        body = regex[1:] if regex.startswith("^") else regex
        if body.endswith("$") and not body.endswith("\\$"):
            body = body[:-1]
        nfa = _NFA()
        self._start_nfa, self._accept_nfa = nfa.build(_Parser(body).parse(), self.exclude)
        self._nfa = nfa
        self._sets: list[frozenset] = []
        self._ids: dict[frozenset, int] = {}
        self._delta: list[dict[str, int]] = []
        self._accepting: list[bool] = []
        self._distance: dict[int, Optional[str]] = {}
        self.start = self._intern(self._closure({self._start_nfa}))

    def __repr__(self) -> str:
        return f"Pattern({self.regex!r}, terminators={self.terminators!r})"

    @property
    def key(self) -> tuple:
        return (self.regex, self.terminators, tuple(sorted(self.exclude)))

    def fits(self, text: str) -> bool:
        return self.max_chars is None or len(text) <= self.max_chars

    # --- DFA states --------------------------------------------------------------------------------------
    def _closure(self, states: Iterable[int]) -> frozenset:
        stack, seen = list(states), set(states)
        while stack:
            for t in self._nfa.eps[stack.pop()]:
                if t not in seen:
                    seen.add(t)
                    stack.append(t)
        return frozenset(seen)

    def _intern(self, nfa_states: frozenset) -> int:
        if nfa_states not in self._ids:
            self._ids[nfa_states] = len(self._sets)
            self._sets.append(nfa_states)
            self._delta.append({})
            self._accepting.append(self._accept_nfa in nfa_states)
        return self._ids[nfa_states]

    def step(self, state: int, char: str) -> int:
        """The DFA state after ``char`` from ``state``, or -1 when the pattern cannot continue with it."""
        delta = self._delta[state]
        nxt = delta.get(char)
        if nxt is None:
            targets = {t for s in self._sets[state] for cls, t in self._nfa.moves[s] if char in cls}
            nxt = self._intern(self._closure(targets)) if targets else -1
            delta[char] = nxt
        return nxt

    def accepting(self, state: int) -> bool:
        return state >= 0 and self._accepting[state]

    def walk(self, text: str, state: Optional[int] = None) -> int:
        """The state after ``text`` (-1 if it leaves the pattern)."""
        state = self.start if state is None else state
        for c in text:
            state = self.step(state, c)
            if state < 0:
                return -1
        return state

    def matches(self, text: str) -> bool:
        return self.fits(text) and self.accepting(self.walk(text))

    def consume(self, text: str, state: int) -> tuple[int, int, bool]:
        """Feed a token's ``text`` from ``state``: ``(new_state, chars_consumed, terminated)``.

        ``terminated`` is True when the pattern stopped in an accepting state right before a terminator;
        ``new_state`` is -1 when the token is not allowed."""
        for k, c in enumerate(text):
            nxt = self.step(state, c)
            if nxt < 0:
                if self._accepting[state] and any(text.startswith(t, k) for t in self.terminators):
                    return state, k, True
                return -1, k, False
            state = nxt
        return state, len(text), False

    def _representatives(self, state: int) -> list[str]:
        reps = []
        for s in self._sets[state]:
            for cls, _ in self._nfa.moves[s]:
                r = cls.representative()
                if r is not None and r not in reps:
                    reps.append(r)
        return reps

    def shortest_completion(self, text_or_state) -> Optional[str]:
        """The shortest text that, appended, makes the value match ('' if it already does; None if it never can)."""
        state = self.walk(text_or_state) if isinstance(text_or_state, str) else text_or_state
        if state < 0:
            return None
        if state in self._distance:
            return self._distance[state]
        seen, queue = {state: ""}, deque([state])
        result = None
        while queue:
            s = queue.popleft()
            if self._accepting[s]:
                result = seen[s]
                break
            for c in self._representatives(s):
                t = self.step(s, c)
                if t >= 0 and t not in seen:
                    seen[t] = seen[s] + c
                    queue.append(t)
        self._distance[state] = result
        return result

    def live(self, state: int) -> bool:
        """True when some continuation from ``state`` matches."""
        return state >= 0 and self.shortest_completion(state) is not None

    def repair(self, text: str) -> str:
        """The longest prefix of ``text`` the pattern can continue, completed to a match (for backends that
        cannot mask tokens: text from ``complete`` is repaired after the fact)."""
        state, kept = self.start, 0
        for k, c in enumerate(text):
            if self.max_chars is not None and k >= self.max_chars:
                break
            nxt = self.step(state, c)
            if nxt < 0 or not self.live(nxt):
                break
            state, kept = nxt, k + 1
        return text[:kept] + (self.shortest_completion(state) or "")

    # --- token masks ---------------------------------------------------------------------------------------
    def mask(self, vocab: "Vocabulary", state: int) -> np.ndarray:
        """Boolean mask over token ids: the tokens allowed from ``state`` (see the module docstring)."""
        cache = vocab.masks.setdefault(self.key, {})
        if state in cache:
            return cache[state]
        allowed = np.zeros(vocab.size, dtype=bool)
        first_ok: dict[str, bool] = {}
        accepting = self._accepting[state]
        for first, ids in vocab.by_first_char.items():
            ok = first_ok.get(first)
            if ok is None:
                nxt = self.step(state, first)
                ok = nxt >= 0 or (accepting and any(t.startswith(first) for t in self.terminators))
                first_ok[first] = ok
            if not ok:
                continue
            for t in ids:
                new, _, terminated = self.consume(vocab.texts[t], state)
                if terminated or (new >= 0 and self.live(new)):
                    allowed[t] = True
        if accepting:
            allowed[list(vocab.eos)] = True
        cache[state] = allowed
        return allowed


# --- the vocabulary as text ------------------------------------------------------------------------------

class Vocabulary:
    """The text of every token id of an `LM`, found through its public ``detokenize``.

    A token is decoded after an anchor token and the anchor's text removed, so that tokenizers that drop a
    leading space when decoding (SentencePiece) still give ``" Paris"``. Tokens whose text is empty
    (special tokens) or holds U+FFFD (a partial UTF-8 sequence) are never allowed in a constrained value.
    """

    def __init__(self, lm, size: int):
        self.size = size
        self.eos = sorted(t for t in getattr(lm, "eos_token_ids", set()) if 0 <= t < size)
        anchor = lm.tokenize("0") or lm.tokenize("a")
        prefix = lm.detokenize(anchor) if anchor else ""
        texts = []
        for t in range(size):
            try:
                text = lm.detokenize(anchor + [t]) if anchor else lm.detokenize([t])
            except Exception:   # ids past the tokenizer's vocabulary (padding rows of the output layer)
                text = ""
            text = text[len(prefix):] if anchor and text.startswith(prefix) else (lm.detokenize([t]) if text else "")
            texts.append(text)
        self.texts = texts
        self.by_first_char: dict[str, list[int]] = {}
        for t, text in enumerate(texts):
            if text and "\ufffd" not in text and t not in self.eos:
                self.by_first_char.setdefault(text[0], []).append(t)
        self.masks: dict[tuple, dict[int, np.ndarray]] = {}
        self.lengths = np.array([len(text) for text in texts], dtype=np.int64)
        self._term_starts: dict[tuple, np.ndarray] = {}

    def fitting(self, pattern: Pattern, remaining: int) -> np.ndarray:
        """Tokens whose text fits in ``remaining`` characters, or that start with one of the pattern's
        terminators (they end the value at once), or EOS."""
        starts = self._term_starts.get(pattern.terminators)
        if starts is None:
            starts = np.array([any(text.startswith(t) for t in pattern.terminators) for text in self.texts], dtype=bool)
            starts[self.eos] = True
            self._term_starts[pattern.terminators] = starts
        return (self.lengths <= remaining) | starts


_VOCABULARIES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def token_texts(lm, size: int) -> Vocabulary:
    """The `Vocabulary` of ``lm`` (built once per model object, then cached)."""
    vocab = _VOCABULARIES.get(lm)
    if vocab is None or vocab.size != size:
        vocab = Vocabulary(lm, size)
        _VOCABULARIES[lm] = vocab
    return vocab


# --- ready-made patterns --------------------------------------------------------------------------------

JSON_STRING_CHAR = r'(?:[^"\\\x00-\x1f]|\\["\\/bfnrt])'


def json_string(min_length: int = 0, max_length: Optional[int] = None) -> Pattern:
    """The content of a JSON string (escapes allowed, no raw control characters), ended by ``'"'``."""
    return Pattern(f"{JSON_STRING_CHAR}{{{min_length},}}", terminators=('"',), name="json string", max_chars=max_length)


NUMBER_TERMINATORS = (",", "\n", "}", "]", " ")


def integer(signed: bool = True, max_digits: int = 18) -> Pattern:
    """A JSON integer (no leading zeros), ended by what may follow a number in JSON."""
    sign = "-?" if signed else ""
    return Pattern(f"{sign}(?:0|[1-9][0-9]{{0,{max_digits - 1}}})", NUMBER_TERMINATORS, name="integer")


def number(signed: bool = True, max_digits: int = 15, max_decimals: int = 8) -> Pattern:
    """A JSON number without exponent: ``-12``, ``3.25``."""
    sign = "-?" if signed else ""
    return Pattern(f"{sign}(?:0|[1-9][0-9]{{0,{max_digits - 1}}})(?:\\.[0-9]{{1,{max_decimals}}})?",
                   NUMBER_TERMINATORS, name="number")
