"""The echo scorer: each choice appended to the prompt and sent with ``echo`` and ``logprobs``; the log-probs of
its tokens read back where the probe found them (``"direct"``: ``token_logprobs``; ``"shifted"``: the previous
position's ``top_logprobs``). docs/openai.md explains what each server answers.

>>> EchoByText(session).score("Q: 2+2?\\nA:", [" 4", " 5"])[0]          # doctest: +SKIP
[[-0.3], [-2.1]]
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

from autocog.errors import StrategyUnavailableError, TokenizerMismatchError
from autocog.lm.openai.parsing import Echo
from autocog.lm.openai.plans import Parallel, Plan
from autocog.lm.openai.requests import BIAS, WHOLE_VOCABULARY
from autocog.lm.openai.rows import refine

if TYPE_CHECKING:  # pragma: no cover
    from autocog.lm.openai.session import Session


class EchoByText:
    """The echo strategy on a `Session`: `score` gives the per-token log-probs of texts after a prompt text."""

    def __init__(self, session: Session):
        self.session = session

    def score(self, prompt_text: str, texts: list[str]) -> tuple[list[list[float]], dict]:
        """(token log-probs of each text, info): what `EchoCall.run` gives."""
        return self.session.requests.run(self.score_plan(prompt_text, texts))

    def score_plan(self, prompt_text: str, texts: list[str]) -> Plan[tuple[list[list[float]], dict]]:
        """`score` as a request plan (`autocog.lm.openai.plans`)."""
        return (yield from EchoCall(self.session, prompt_text, texts).run())


class EchoCall:
    """Per-token log-probs of ``texts`` after ``prompt_text`` by echo, for one call.

    Fields: ``known`` (texts scored by earlier calls), ``single`` (texts that are one token after the prompt, read
    from the prompt's next-token row on llama.cpp), ``leaves`` (texts echoed; their prefixes are read from them),
    ``regions`` (text -> the echo and the token range that spell it), ``missing`` (context -> token -> places
    whose value no echo gave: one fill request per context).
    """

    def __init__(self, session: Session, prompt_text: str, texts: list[str]):
        self.session, self.prompt_text, self.texts = session, prompt_text, texts
        self.wide = session.dialect.wide
        self.layout = session.probe()["echo"]
        self.top = session.top_logprobs if self.layout == "shifted" or self.wide else 1
        self.ambiguous = session.ambiguous_texts()  # texts that name several tokens in a row: read by id instead
        self.known = self.cached()
        self.single = self._single_tokens([j for j in range(len(texts)) if j not in self.known])
        rest = [j for j in range(len(texts)) if j not in self.known and j not in self.single]
        self.rest = rest
        self.leaves = [j for j in rest if not any(texts[o] != texts[j] and texts[o].startswith(texts[j]) for o in rest)]
        self.regions: dict[int, tuple[Echo, list]] = {}  # text -> (echo, the entry index of each token or None)
        self.ids = self._token_ids()
        self.bos = session.dialect.dropped_bos(session) if self.ids is not None else None
        if self.ids is not None and self.ids["prompt"][:1] == [self.bos] and self.bos is not None:
            self.layout = "direct"  # llama_cpp.server aligns the echo of a prompt that starts with its BOS
        self.second: list[int] = []
        self.missing: dict[str, dict[str, list[tuple[int, int]]]] = {}

    def cached(self) -> dict[int, tuple[list[str], list[float]]]:
        """{index: (pieces, log-probs)} of the texts already scored after the prompt (the session's LRU)."""
        known = {}
        for j, text in enumerate(self.texts):
            hit = self.session.scored.get((self.prompt_text, text))
            if hit is not None:
                known[j] = hit
        return known

    def run(self) -> Plan[tuple[list[list[float]], dict]]:
        """The request plan of this call: the echoes yielded together (`Parallel`); the fills, when some value is
        missing, sent by the sync transport from the plan's step."""
        texts = self.texts
        yield from self._echo_leaves()
        token_logprobs, pieces = self._read()
        if self.missing:
            self._fill({texts[j]: token for j, token in self.single.items()}, token_logprobs)
        self._check_pieces(pieces)
        for j in range(len(texts)):
            if j not in self.known:
                self.session.scored[(self.prompt_text, texts[j])] = (pieces[j], token_logprobs[j])
        info = {
            "layout": self.layout,
            "echo_requests": len(self.leaves) + len(self.second),
            "from_next_token_row": len(self.single),
            "from_cache": len(self.known),
            "fill_requests": len(self.missing),
            "filled": sum(len(v) for m in self.missing.values() for v in m.values()),
            "tokens": pieces,
            "exact": [True] * len(texts),
            "bounded": token_logprobs,
        }
        return token_logprobs, info

    def _single_tokens(self, candidates: list[int]) -> dict[int, int]:
        """{index: token id} of the texts the server splits, after the prompt, into exactly one token that spells
        the text (only where one request can return a whole next-token row: llama.cpp)."""
        session, texts = self.session, self.texts
        if not self.wide or not candidates:
            return {}
        encoded = session.tokenizer.encode_many([self.prompt_text] + [self.prompt_text + texts[j] for j in candidates])
        head, out = encoded[0], {}
        for j, ids in zip(candidates, encoded[1:]):
            if len(ids) == len(head) + 1 and ids[:-1] == head and session.piece(ids[-1]) == texts[j]:
                out[j] = ids[-1]
        return out

    def _token_ids(self) -> Optional[dict]:
        """On llama.cpp with the server's own tokenizer: {"prompt": ids, j: the ids of text j after the prompt}, so
        that echoed entries are matched by id (a token that is part of a character or a special token has no text
        of its own to match); None elsewhere, or when a text merges with the prompt."""
        session = self.session
        if not (session.dialect.echo_by_ids and session.tokenizer.is_server and self.rest):
            return None
        encoded = session.tokenizer.encode_many(
            [self.prompt_text] + [self.prompt_text + self.texts[j] for j in self.rest]
        )
        ids: dict = {"prompt": encoded[0]}
        for j, full in zip(self.rest, encoded[1:]):
            if full[: len(encoded[0])] != encoded[0] or len(full) == len(encoded[0]):
                return None
            ids[j] = full[len(encoded[0]) :]
        return ids

    def _locate(self, echo: Echo, k: int, j: int) -> Optional[list]:
        """The entry of each token of text ``j`` in the echo of text ``k`` (``j`` a prefix of ``k``), None for a
        token the server leaves out (BOS); None when the echo does not hold text ``j``'s tokens where expected."""
        if self.ids is None:
            found = region(echo, self.texts[k], self.texts[j])
            return None if found is None else list(range(*found))
        return entries(echo, self.ids["prompt"], self.ids[k], self.ids[j], self.bos, self.session.vocabulary())

    def _echoes(self, indices: list[int]) -> Plan[list[Echo]]:
        """The echoes of texts ``indices`` after the prompt, yielded together."""
        if not indices:
            return []
        echo, prompt = self.session.requests.echo_plan, self.prompt_text
        return (yield Parallel([echo(prompt + self.texts[j], self.top) for j in indices]))

    def _echo_leaves(self) -> Plan[None]:
        """One echo per leaf, in parallel; a prefix text reads its tokens from a longer text's echo, else its own."""
        session, texts = self.session, self.texts
        answers = dict(zip(self.leaves, (yield from self._echoes(self.leaves))))
        for j in self.rest:
            sources = [j] if j in answers else [k for k in self.leaves if texts[k].startswith(texts[j])]
            for k in sources:
                found = self._locate(answers[k], k, j)
                if found is not None:
                    self.regions[j] = (answers[k], found)
                    break
            else:
                if j in answers:
                    raise session.merged(j, texts[j])
                self.second.append(j)  # a prefix the longer choices' tokens do not split at: its own request
        for j, answer in zip(self.second, (yield from self._echoes(self.second))):
            found = self._locate(answer, j, j)
            if found is None:
                raise session.merged(j, texts[j])
            self.regions[j] = (answer, found)

    def _read(self) -> tuple[list[list[float]], list[list[str]]]:
        """The values the echoes give (NaN where none: recorded in ``missing``) and each text's token pieces."""
        texts, layout = self.texts, self.layout
        token_logprobs: list[list[float]] = [[] for _ in texts]
        pieces: list[list[str]] = [[] for _ in texts]
        root_rows = [row(echo, at[0], layout) for echo, at in self.regions.values() if at and at[0] is not None]
        for j in range(len(texts)):
            if j in self.known:
                pieces[j], token_logprobs[j] = list(self.known[j][0]), list(self.known[j][1])
                continue
            if j in self.single:
                value = (
                    None
                    if texts[j] in self.ambiguous
                    else next((r[texts[j]] for r in root_rows if texts[j] in r), None)
                )
                slots = [(self.prompt_text, texts[j], value)]
            else:
                slots = self._slots(*self.regions[j])
                if any(v is None for _, _, v in slots) and "".join(t for _, t, _ in slots) != texts[j]:
                    raise StrategyUnavailableError(
                        f"choice {j} ({texts[j]!r}) holds a token with no text of its own (part of a character or "
                        "a special token) whose log-prob the echo does not give, and a text prompt cannot end there: "
                        f"it cannot be scored exactly on {self.session.base_url}"
                    )
            for position, (context, token, value) in enumerate(slots):
                if value is None:
                    self.missing.setdefault(context, {}).setdefault(token, []).append((j, position))
                token_logprobs[j].append(math.nan if value is None else float(value))
                pieces[j].append(token)
        return token_logprobs, pieces

    def _slots(self, echo: Echo, at: list) -> list[tuple[str, str, Optional[float]]]:
        """(context, token text, value or None) for the echoed entries ``at`` (None: an entry left out)."""
        slots, spelled = [], ""
        for i in at:
            token = echo.tokens[i] if i is not None else ""
            if i is None:
                value = None
            elif self.layout == "direct":
                value = echo.logprobs[i]  # by token id
            else:
                value = None if token in self.ambiguous else row(echo, i, self.layout).get(token)
            slots.append((self.prompt_text + spelled, token, value if token or self.ids else None))
            spelled += token
        return slots

    def _fill(self, ids: dict[str, int], token_logprobs: list[list[float]]) -> None:
        """Values echo did not give: one next-token request per context. On llama.cpp it asks for the whole
        vocabulary's log-probs, so it fills every gap at that context; elsewhere logit_bias reveals the rest.
        ``ids``: token ids already known by token text (the others are encoded)."""
        for (_context, wanted), found in self.session.transport.map(
            lambda item: (item, self._fill_one(item, ids)), list(self.missing.items())
        ):
            for token, places in wanted.items():
                for j, k in places:
                    token_logprobs[j][k] = found[token]

    def _fill_one(self, item: tuple[str, dict], ids: dict[str, int]) -> dict[str, float]:
        session = self.session
        context, wanted = item
        pre = session.probe()["bias"] == "pre"

        def token_id(text: str) -> int:
            if text in ids:
                return ids[text]
            found = session.tokenizer.encode(text)
            if len(found) != 1:
                raise StrategyUnavailableError(
                    f"echo gave no log-prob for token {text!r} and the tokenizer cannot name its id"
                )
            return found[0]

        # Reported before the bias: biasing the wanted tokens makes the best of them the produced token (exact;
        # and never EOS, which llama_cpp.server answers without log-probs) and leaves the top log-probs
        # unbiased. Reported after it: an unbiased request first, then `refine`.
        bias = {token_id(t): BIAS for t in wanted} if pre else None
        nxt = session.requests.next(context, bias, k=WHOLE_VOCABULARY if self.wide else None, fresh=True)
        if nxt.token is None and not nxt.top:
            raise session.no_logprobs(context)
        found = {t: nxt.top[t] for t in wanted if t in nxt.top and t not in self.ambiguous}
        if nxt.logprob is not None and (nxt.token in wanted or (pre and len(wanted) == 1)):
            found[nxt.token if nxt.token in wanted else next(iter(wanted))] = nxt.logprob  # by id
        rest = [t for t in wanted if t not in found]
        if rest:
            found.update(refine(session, context, [(t, token_id(t), t) for t in rest], None if pre else nxt))
        return found

    def _check_pieces(self, pieces: list[list[str]]) -> None:
        """With a local tokenizer, the server's split of each choice must be the tokenizer's."""
        session = self.session
        tokenizer = session.local_tokenizer
        if tokenizer is None:
            return
        for j, text in enumerate(self.texts):
            local = [session.piece(t) for t in tokenizer.encode(text)]
            if all("\ufffd" not in p for p in local) and local != pieces[j]:
                raise TokenizerMismatchError(
                    f"choice {j} ({text!r}): the server at {session.base_url} (model {session.model!r}) splits it as "
                    f"{pieces[j]} but the tokenizer {tokenizer!r} as {local}"
                )


# --- where the echoed tokens lie ---------------------------------------------------------------------------
def entries(
    echo: Echo, prompt: list[int], echoed: list[int], text: list[int], bos: Optional[int], vocabulary: Optional[object]
) -> Optional[list]:
    """The entry of each of ``text``'s ids (a prefix of ``echoed``, the ids after ``prompt`` in the echo) among
    llama_cpp.server's echoed entries, which leave out BOS wherever it stands (None for those); None when the
    echo's length or its token names do not match the ids."""
    kept = [t for t in prompt + echoed if t != bos]
    if len(echo.tokens) not in (len(kept), len(kept) + 1):
        return None
    at: list[Optional[int]] = []
    i = sum(1 for t in prompt if t != bos)
    for t in text:
        if t == bos:
            at.append(None)
            continue
        names = getattr(vocabulary, "names", None)
        if names is not None and (t >= len(names) or names[t] != echo.tokens[i]):
            return None
        at.append(i)
        i += 1
    return at


def row(echo: Echo, i: int, layout: str) -> dict:
    """The top log-probs of the distribution that predicts echoed token ``i``: at ``i`` (``"direct"``) or at
    ``i - 1`` (``"shifted"``); {} where the server gives none."""
    if layout == "direct":
        return echo.top[i] or {}
    return (echo.top[i - 1] or {}) if i >= 1 else {}


def prompt_ends(echo: Echo) -> list[int]:
    """Where the echoed prompt tokens may end, most likely first: before the first token whose offset lies
    past the prompt; before tokens that spell the generated text; at the end of the lists (llama_cpp.server
    drops the generated token when the model has no BOS). The caller keeps the first that spells its text."""
    ends = [sum(1 for o in echo.offsets if o < echo.length)]
    if echo.generated:
        e, spelled = len(echo.tokens), ""
        while e > 0 and len(spelled) < len(echo.generated):
            e -= 1
            spelled = echo.tokens[e] + spelled
        if spelled == echo.generated:
            ends.append(e)
    return list(dict.fromkeys(ends + [len(echo.tokens)]))


def region_start(echo: Echo, tail: str) -> Optional[tuple[int, int]]:
    """(s, n): the echoed prompt tokens [s, n) spell ``tail``, the text the prompt ends with; None when no
    token boundary falls where ``tail`` starts (the server merged it with the text before). Works on the
    token texts, not the offsets (special tokens have no text but shift some servers' offsets)."""
    for n in prompt_ends(echo):
        s, spelled = n, ""
        while s > 0 and len(spelled) < len(tail):
            s -= 1
            spelled = echo.tokens[s] + spelled
        if spelled == tail and s < n:
            return s, n
    return None


def region(echo: Echo, echoed: str, text: str) -> Optional[tuple[int, int]]:
    """Indices [s, e) of the echoed tokens that spell ``text``, a prefix of ``echoed`` (the choice text that
    ends the echoed prompt), or None when the tokens do not split there."""
    found = region_start(echo, echoed)
    if found is None:
        return None
    s, n = found
    e, spelled = s, ""
    while e < n and len(spelled) < len(text):
        spelled += echo.tokens[e]
        e += 1
    return (s, e) if spelled == text else None
