"""The grammar engine behind structured output: llguidance, behind a small interface.

* `Grammar`: a grammar in llguidance's format, with its kind and source. Built by `regex`, `lark`, `gbnf`,
  `json_schema`, `choice`; `followed_by(grammar, stops)` appends one of several stop strings.
* `check(grammar)`: the grammar's errors (bad regex, unsupported JSON-schema keyword) as a `GrammarError`,
  without a model.
* `GrammarConstraint(grammar, vocab)`: an `autocog.core.constraint.Constraint` for ``GreedyLM.complete_tokens``:
  the mask of the tokens the grammar allows next (EOS when the text may end), ``advance``, ``done``, ``rollback``.
  ``finish_after=n``: after n tokens the mask keeps only the tokens that close the output soonest (EOS, then
  the ``closers`` in order, e.g. ``'"'``, ``'}'``) when the grammar allows one, so a budget ends in valid text.
* `matches(grammar, text)`: does ``text`` match in full (a byte-level matcher, no model needed).

>>> g = regex(r"[0-9]{3}-[0-9]{4}")
>>> matches(g, "555-0100"), matches(g, "555-010")
(True, False)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import numpy as np

from autocog.errors import AutoCogError, BackendNotInstalledError

__all__ = [
    "JSON_CLOSERS",
    "JSON_OPTIONS",
    "Grammar",
    "GrammarConstraint",
    "GrammarError",
    "IncompleteOutputError",
    "UnsupportedSchemaError",
    "check",
    "choice",
    "followed_by",
    "gbnf",
    "is_empty",
    "json_schema",
    "lark",
    "matches",
    "regex",
    "repair",
]

# Compact JSON with a space after "," and ":" (what models write and what keeps a random model's output short).
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
# The texts that end a JSON value soonest, in the order a finishing constraint prefers them.
JSON_CLOSERS = ('"', "}", "]", ",")


class GrammarError(AutoCogError, ValueError):
    """A grammar, regex or schema the engine rejects (the message quotes the engine's reason)."""


class UnsupportedSchemaError(GrammarError):
    """A JSON schema uses a feature the engine does not implement (the message names the keyword)."""


class IncompleteOutputError(AutoCogError, RuntimeError):
    """Generation stopped (token budget or context) before the text matched the grammar; ``text`` is what came."""

    def __init__(self, message: str, text: str = ""):
        super().__init__(message)
        self.text = text


def llguidance():
    """The llguidance module, or a `BackendNotInstalledError` naming the extra to install."""
    try:
        import llguidance as llg
    except ImportError as error:  # pragma: no cover - the extra is part of `all`
        raise BackendNotInstalledError(
            "structured output needs llguidance: pip install 'autocog[structured]'"
        ) from error
    return llg


@dataclass(frozen=True)
class Grammar:
    """A grammar the engine runs: ``text`` is llguidance's grammar JSON; ``kind`` / ``source`` say where it came
    from (``"regex"``, ``"lark"``, ``"gbnf"``, ``"json_schema"``, ``"choice"``, ``"followed_by"``)."""

    kind: str
    source: Any
    text: str = field(repr=False)

    @property
    def description(self) -> str:
        source = self.source if isinstance(self.source, str) else json.dumps(self.source)
        return f"{self.kind} {source[:80]!r}"


def _escape(text: str) -> str:
    """``text`` as a literal in Rust regex syntax."""
    out = []
    for c in text:
        if c in "\\.+*?()|[]{}^$#&-~":
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        else:
            out.append(c)
    return "".join(out)


def regex(pattern: str) -> Grammar:
    """A full-match regex (Rust ``regex`` syntax: no look-around, no back-references; ``^`` / ``$`` at the
    ends are dropped). Checked now: `GrammarError` for a bad pattern."""
    if not isinstance(pattern, str):
        raise TypeError(f"a regex must be a str, not {type(pattern).__name__}")
    body = pattern[1:] if pattern.startswith("^") else pattern
    if body.endswith("$") and not body.endswith("\\$"):
        body = body[:-1]
    return check(Grammar("regex", body, llguidance().LLMatcher.grammar_from_regex(body)))


def lark(text: str) -> Grammar:
    """A Lark grammar in llguidance's dialect (``start`` rule; ``%json {...}`` embeds a JSON schema)."""
    return check(Grammar("lark", text, llguidance().LLMatcher.grammar_from_lark(text)))


def gbnf(text: str) -> Grammar:
    """A llama.cpp GBNF grammar (``root ::= ...``), converted to Lark by llguidance."""
    llg = llguidance()
    try:
        converted = llg.grammar_from("gbnf", text)
    except ValueError as error:
        raise GrammarError(f"GBNF grammar rejected: {error}") from None
    return check(Grammar("gbnf", text, converted))


def json_schema(schema: Union[dict, str], options: Optional[dict] = None) -> Grammar:
    """A JSON schema (dict or JSON text); ``options``: llguidance's JSON options (default `JSON_OPTIONS`).
    Unsupported keywords raise `UnsupportedSchemaError`."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as error:
            raise GrammarError(f"the JSON schema is not valid JSON: {error}") from None
    if not isinstance(schema, (dict, bool)):
        raise GrammarError(f"a JSON schema must be an object, not {type(schema).__name__}")
    llg = llguidance()
    try:
        text = llg.LLMatcher.grammar_from_json_schema(schema, defaults=dict(options or JSON_OPTIONS))
    except ValueError as error:
        raise UnsupportedSchemaError(f"JSON schema rejected: {error}") from None
    return check(Grammar("json_schema", schema, text))


def choice(options: Sequence[str]) -> Grammar:
    """Exactly one of ``options``."""
    if not options or not all(isinstance(o, str) and o for o in options):
        raise GrammarError(f"choices must be non-empty strings, got {list(options)!r}")
    body = " | ".join(json.dumps(o, ensure_ascii=False) for o in options)
    return check(Grammar("choice", list(options), llguidance().LLMatcher.grammar_from_lark("start: " + body)))


def followed_by(inner: Grammar, stops: Sequence[str]) -> Grammar:
    """``inner`` then exactly one of ``stops`` (nothing appended when ``stops`` is empty)."""
    stops = [s for s in stops if s]
    if not stops:
        return inner
    if inner.kind == "regex":
        return regex(f"(?:{inner.source})(?:{'|'.join(_escape(s) for s in stops)})")
    grammars = _grammar_list(inner.text)
    grammars[0] = dict(grammars[0], name="inner")
    wrapper = "start: @inner (" + " | ".join(json.dumps(s, ensure_ascii=False) for s in stops) + ")"
    text = json.dumps({"grammars": [{"lark_grammar": wrapper}] + grammars})
    return check(Grammar("followed_by", {"inner": inner.source, "kind": inner.kind, "stops": stops}, text))


def _grammar_list(text: str) -> list:
    """The ``grammars`` of llguidance's top-level format (a bare Lark text is one Lark grammar)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return [{"lark_grammar": text}]
    return list(data["grammars"]) if isinstance(data, dict) and "grammars" in data else [{"lark_grammar": text}]


def check(grammar: Grammar) -> Grammar:
    """``grammar`` when the engine accepts it, else a `GrammarError` (`UnsupportedSchemaError` for a schema)."""
    message = llguidance().LLMatcher.validate_grammar(grammar.text)
    if message:
        kind = UnsupportedSchemaError if grammar.kind == "json_schema" else GrammarError
        raise kind(f"{grammar.kind} grammar rejected by llguidance: {message.strip()}")
    return grammar


class GrammarConstraint:
    """The `Constraint` of one generation under ``grammar`` on ``vocab`` (a `GrammarVocabulary`).

    ``finish_after``: tokens after which the mask narrows to EOS, then to the first of ``closers`` (texts, in
    order of preference) that the grammar allows, when one is allowed (the model picks among the allowed tokens
    otherwise). The mask never rescales: the loop reads the model's own log-probs of the kept tokens.

    >>> c = GrammarConstraint(regex("[0-9]+"), vocabulary(lm))        # doctest: +SKIP
    >>> lm.complete_tokens(lm.prompt_tokens("n="), [], SamplingParams(max_tokens=8), constraint=c)   # doctest: +SKIP
    '42'
    """

    def __init__(self, grammar: Grammar, vocab: Any, finish_after: Optional[int] = None, closers: Sequence[str] = ()):
        llg = llguidance()
        self.grammar, self.vocab, self.finish_after = grammar, vocab, finish_after
        self.matcher = llg.LLMatcher(vocab.tokenizer, grammar.text, log_level=0)
        if self.matcher.is_error():
            raise GrammarError(f"{grammar.description}: {self.matcher.get_error()}")
        self.closers = [t for t in (vocab.single_token(c) for c in closers) if t is not None]
        self.tokens: list[int] = []
        self._words = np.zeros((vocab.size + 31) // 32, dtype=np.int32)

    def allowed(self) -> np.ndarray:
        self.matcher.unsafe_compute_mask_ptr(self._words.ctypes.data, self._words.nbytes)
        if self.matcher.is_error():
            raise GrammarError(f"{self.grammar.description}: {self.matcher.get_error()}")
        mask = np.unpackbits(self._words.view(np.uint8), bitorder="little")[: self.vocab.size].view(bool)
        if self.finish_after is not None and len(self.tokens) >= self.finish_after:
            return self._finishing(mask)
        return mask

    def _finishing(self, mask: np.ndarray) -> np.ndarray:
        eos = [t for t in self.vocab.eos if t < len(mask) and mask[t]]
        preferred = eos[:1] or [t for t in self.closers if mask[t]][:1]
        if not preferred:
            return mask
        narrowed = np.zeros_like(mask)
        narrowed[preferred[0]] = True
        return narrowed

    def advance(self, token: int) -> None:
        if not self.matcher.consume_token(int(token)):
            raise GrammarError(
                f"{self.grammar.description}: token {token} is not allowed here: {self.matcher.get_error()}"
            )
        self.tokens.append(int(token))

    def done(self) -> bool:
        return self.matcher.is_stopped()

    def accepting(self) -> bool:
        """True when the text so far matches the grammar in full."""
        if self.matcher.is_error():
            return False
        return self.matcher.is_accepting() or self.matcher.is_stopped()

    def rollback(self, n: int) -> None:
        """Forget the last ``n`` tokens (e.g. to retry a branch)."""
        if n > len(self.tokens) or not self.matcher.rollback(int(n)):
            raise GrammarError(f"cannot roll back {n} of {len(self.tokens)} tokens")
        del self.tokens[len(self.tokens) - n :]


class _Bytes:
    """A 257-token vocabulary (one token per byte, then EOS) for `matches`."""

    eos_token_id, bos_token_id = 256, None
    tokens = [bytes([i]) for i in range(256)] + [b""]

    def __call__(self, text: Union[str, bytes]) -> list[int]:
        return list(text.encode("utf-8") if isinstance(text, str) else text)


_BYTE_TOKENIZER = None


def _byte_matcher(grammar: Grammar) -> Any:
    global _BYTE_TOKENIZER
    llg = llguidance()
    if _BYTE_TOKENIZER is None:
        _BYTE_TOKENIZER = llg.LLTokenizer(llg.TokenizerWrapper(_Bytes()), slices=[])
    return llg.LLMatcher(_BYTE_TOKENIZER, grammar.text, log_level=0)


def _allowed_bytes(matcher: Any) -> np.ndarray:
    bits = np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8)
    return np.unpackbits(bits, bitorder="little")[:256].astype(bool)


def _ended(matcher: Any) -> bool:
    return not matcher.is_error() and (matcher.is_accepting() or matcher.is_stopped())


def matches(grammar: Grammar, text: str) -> bool:
    """True when ``text`` matches ``grammar`` in full (fed byte by byte to a fresh matcher)."""
    matcher = _byte_matcher(grammar)
    for byte in text.encode("utf-8"):
        if not matcher.consume_token(byte):
            return False
    return _ended(matcher)


def is_empty(grammar: Grammar) -> bool:
    """True when no text matches ``grammar`` (e.g. a pattern that needs characters a JSON string escapes)."""
    matcher = _byte_matcher(grammar)
    return not _ended(matcher) and not _allowed_bytes(matcher).any()


def repair(grammar: Grammar, text: str, closers: Sequence[str] = (), max_bytes: int = 256) -> str:
    """The longest prefix of ``text`` that the grammar allows, completed to a match: by the first of
    ``closers`` the grammar takes, else byte by byte (`_next_byte`). For backends that cannot mask (servers
    without a native constraint); `IncompleteOutputError` if no match is reached within ``max_bytes``."""
    matcher = _byte_matcher(grammar)
    data = text.encode("utf-8")
    kept = 0
    for byte in data:
        if matcher.is_stopped() or not _allowed_bytes(matcher)[byte]:
            break
        matcher.consume_token(byte)
        kept += 1
    out = bytearray(data[:kept])
    while not _ended(matcher) and len(out) < kept + max_bytes:
        for closer in closers:
            trial = matcher.deep_copy()
            if all(trial.consume_token(b) for b in closer.encode("utf-8")) and _ended(trial):
                matcher = trial
                out += closer.encode("utf-8")
                break
        else:
            following = _next_byte(matcher)
            if following is None:
                break
            matcher.consume_token(following)
            out.append(following)
    if not _ended(matcher):
        raise IncompleteOutputError(f"{grammar.description}: no completion of {text[:60]!r} found", text)
    return out.decode("utf-8", errors="replace")


_BYTE_ORDER = sorted(range(256), key=lambda b: (b >= 128, not chr(b).isalnum(), not 32 <= b < 127, b))


def _next_byte(matcher: Any) -> Optional[int]:
    """A byte toward the end of the grammar: one that ends it, else the first that changes which bytes may
    follow (leaves a loop such as ``\\w+``), else the first allowed (ASCII digits and letters first)."""
    allowed = _allowed_bytes(matcher)
    first = progress = None
    for byte in _BYTE_ORDER:
        if not allowed[byte]:
            continue
        trial = matcher.deep_copy()
        trial.consume_token(byte)
        if _ended(trial):
            return byte
        first = byte if first is None else first
        if progress is None and not np.array_equal(_allowed_bytes(trial), allowed):
            progress = byte
    return progress if progress is not None else first
