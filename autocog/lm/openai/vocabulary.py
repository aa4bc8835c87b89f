"""Reading a llama.cpp server's vocabulary through ``/extras/detokenize`` alone (no generation).

llama_cpp.server names the entries of ``top_logprobs`` by each token's text decoded alone with invalid UTF-8
bytes dropped, so several tokens can share a name (on SmolLM2 ``" "`` names 38 tokens such as
``b" \\xe2\\x80"``) and a value read by name can be another token's. `scan_vocabulary` finds every token's
name, so that the names shared by several tokens are known (`shared_texts`).

Generation is never used: llama-cpp-python keeps generating while the text ends inside a UTF-8 character,
so a request that forces such a token (``logit_bias``) never ends (it runs the server out of context).
"""

from __future__ import annotations

import codecs
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional

SEPARATOR = "\x1f"  # between the ids of one detokenize call (the answer is split on its text)
# Python's UnicodeDecodeError: "... codec can't decode byte 0xe2 in position 1: unexpected end of data"
_ERROR = re.compile(r"can't decode bytes? (?:0x([0-9a-f]{2}) )?in position (\d+)(?:-\d+)?: (.*)")

NEVER_VALID = frozenset([0xC0, 0xC1] + list(range(0xF5, 0x100)))  # bytes that no UTF-8 text holds
Decoder = Callable[[list[int]], "tuple[Optional[str], str]"]  # ids -> (text or None, decode error)
Mapper = Callable[[Callable, list], list]


@dataclass
class Vocabulary:
    """Each token id's name (None where it could not be read), and the ids whose bytes end inside a UTF-8
    character (``trailing``: never force those through a llama_cpp.server generation)."""

    names: list = field(default_factory=list)
    trailing: set = field(default_factory=set)

    def shared_texts(self) -> frozenset[str] | _Everything:
        """Names of more than one token; every name when some token's name is unknown."""
        if any(n is None for n in self.names):
            return EVERYTHING
        return frozenset(t for t, n in Counter(self.names).items() if n > 1)


def ends_inside_character(piece: bytes) -> bool:
    """Whether ``piece`` ends with the first bytes of a UTF-8 character (llama-cpp-python then generates on)."""
    decoder = codecs.getincrementaldecoder("utf-8")("ignore")
    decoder.decode(piece, final=False)
    return bool(decoder.getstate()[0])


class _Everything(frozenset):
    """The set of every text (``in`` is always true): what is shared when part of a vocabulary is unknown."""

    def __contains__(self, item: object) -> bool:
        return True

    def __repr__(self) -> str:
        return "EVERYTHING"


EVERYTHING = _Everything()


def scan_vocabulary(
    size: int,
    decode: Decoder,
    separator: list[int],
    mapper: Optional[Mapper] = None,
    chunk: int = 256,
) -> Vocabulary:
    """Every token's name, read through ``decode`` (`LlamaCppServerTokenizer.decode_checked`).

    ``size``: the number of distinct names (the keys of a whole-vocabulary ``top_logprobs`` row), a lower bound
    of the vocabulary size. The server gives no vocabulary size and llama.cpp aborts on an unknown id, so ids
    past ``size`` are read only as far as the names already read prove they exist (at least ``size`` plus the
    repeats seen): the ids past the first point where every name has been seen are not read (a vocabulary
    whose last ids repeat a name would be read short). ``separator``: the ids of `SEPARATOR` between the
    ids of a chunk (chunks that fail are halved); ids that are not valid UTF-8 alone are completed with
    single-byte tokens to read their valid part.

    >>> names = ["a", "b", SEPARATOR]
    >>> decode = lambda ids: ("".join(names[i] for i in ids), "")
    >>> scan_vocabulary(3, decode, [2]).names
    ['a', 'b', '\\x1f']
    """
    if mapper is None:
        mapper = in_order
    names: dict[int, Optional[str]] = {}
    errors: dict[int, str] = {}
    sep_text = decode(separator)[0] if separator else None

    def read(ids: list[int]) -> tuple[dict, dict]:
        if len(ids) == 1:
            text, error = decode(ids)
            return ({ids[0]: text}, {}) if text is not None else ({}, {ids[0]: error})
        if sep_text:
            text, _ = decode([x for i in ids for x in [i] + separator][: -len(separator)])
            if text is not None and len(text.split(sep_text)) == len(ids):
                return dict(zip(ids, text.split(sep_text))), {}
        half = len(ids) // 2
        (a, ea), (b, eb) = read(ids[:half]), read(ids[half:])
        return {**a, **b}, {**ea, **eb}

    start, end = 0, size
    trailing: set[int] = set()
    while start < end:
        new_errors: dict[int, str] = {}
        for found, failed in mapper(read, [list(range(a, min(a + chunk, end))) for a in range(start, end, chunk)]):
            names.update(found)
            new_errors.update(failed)
        errors.update(new_errors)
        for token, (text, cut) in _read_partial(new_errors, errors, decode, mapper).items():
            names[token] = text
            if cut:
                trailing.add(token)
        start = end
        distinct = {t if t is not None else f"\0{i}" for i, t in names.items()}  # an unknown name counts once
        end = size + len(names) - len(distinct)
    return Vocabulary([names[i] for i in range(start)], trailing)


def in_order(fn: Callable, items: list) -> list:
    """``[fn(x) for x in items]``: the `Mapper` of one thread."""
    return [fn(x) for x in items]


def _read_partial(
    todo: dict[int, str], errors: dict[int, str], decode: Decoder, mapper: Mapper
) -> dict[int, tuple[Optional[str], bool]]:
    """{id: (name or None, whether it ends inside a character)} for the ids of ``todo`` (id -> decode error),
    which are not valid UTF-8 alone: completed by single-byte tokens found among ``errors`` (a lead byte in
    front of continuation bytes, continuation bytes after a cut character), the added characters then removed."""
    if not todo:
        return {}
    leads: dict[int, int] = {}  # byte -> id of the token that is exactly that lead byte
    for token, error in errors.items():
        match = _ERROR.search(error)
        if match and match.group(1) and match.group(2) == "0" and "unexpected end" in match.group(3):
            leads[int(match.group(1), 16)] = token
    conts: dict[int, int] = {}  # continuation byte (0x80, 0x90, 0xA0) -> id of the token that is exactly it
    if 0xC2 in leads:
        for token, error in errors.items():
            match = _ERROR.search(error)
            if (
                match
                and match.group(1) in ("80", "90", "a0")
                and match.group(2) == "0"
                and "invalid start" in match.group(3)
                and decode([leads[0xC2], token])[0] == chr(int(match.group(1), 16))
            ):
                conts.setdefault(int(match.group(1), 16), token)
    # after a lead byte, the first continuation byte's range depends on the lead (E0: A0-BF, F0: 90-BF...)
    suffixes: list[list[int]] = [[]] + [
        [conts[first]] + [conts[0x80]] * (n - 1)
        for n in (1, 2, 3)
        for first in (0x80, 0x90, 0xA0)
        if first in conts and 0x80 in conts
    ]

    def name(item: tuple[int, str]) -> tuple[int, Optional[str], bool]:
        token, error = item
        match = _ERROR.search(error)
        if match and match.group(1) and match.group(2) == "0":
            byte = int(match.group(1), 16)
            if "unexpected end" in match.group(3):
                return token, "", True  # exactly one lead byte
            if byte in NEVER_VALID:
                return token, "", False  # a byte no UTF-8 text holds: a byte token alone
        starts_cut = match is not None and match.group(2) == "0" and "invalid start" in match.group(3)
        prefixes = [[leads[b]] for b in (0xC2, 0xE2, 0xF3) if b in leads] if starts_cut else [[]]
        for prefix in prefixes:
            for suffix in suffixes:
                text, _ = decode(prefix + [token] + suffix)
                if text is not None:
                    text = text[1:] if prefix else text
                    return token, (text[:-1] if suffix else text), bool(suffix)
        return token, None, True

    return {token: (text, cut) for token, text, cut in mapper(name, list(todo.items()))}
