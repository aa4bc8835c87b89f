"""Echo by token ids: many (prompt, choices) pairs scored in few completions requests, on servers that take
token-id prompts and lists of prompts (vLLM).

Each choice is sent as the token ids ``prompt ids + choice ids``: the prompt tokenized alone (BOS in front
when the model has one) and the choice tokenized alone, exactly the split the local backends score, so the
boundary is never re-tokenized by the server. Several sequences go in one request (``prompt`` is a list of
id lists), and the requests of a batch are sent ``concurrency`` at a time.

On vLLM the log-probs are read from ``prompt_logprobs=0``: for every position, the log-prob of the token
that is there, keyed by its id (exact whatever its rank; vLLM reports raw log-probs, before any
``logit_bias``). ``return_token_ids`` makes vLLM echo the ids it scored; they are checked against those sent.
A choice whose ids are a prefix of another choice's ids (``" 1"`` and ``" 10"``) is read from the longer
one's sequence: only the trie's leaves are sent.

>>> scorer = IdEcho(session)                                                     # doctest: +SKIP
>>> values, info = scorer.score([("2+2=", ["4", "5"]), ("3+3=", ["6", "7"])])[0]   # doctest: +SKIP
>>> info["requests"]                                                        # doctest: +SKIP
1
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Sequence

from autocog.core.chat import strip_prefix
from autocog.core.checks import split_boundary
from autocog.core.normalization import normalize_scores
from autocog.core.types import ChoiceResult
from autocog.errors import (
    MalformedResponseError,
)
from autocog.lm.openai.chat import ChatPrompt
from autocog.lm.openai.id_rows import IdRows, empty_prompt_error, encode_pairs
from autocog.lm.openai.plans import Parallel, Plan
from autocog.lm.openai.transport import CALL_COUNTER

if TYPE_CHECKING:  # pragma: no cover
    from autocog.lm.openai.session import Session
    from autocog.lm.scoring import CheckedRequest

MAX_SEQUENCES = 64  # sequences per request: beyond this, a request only delays the first answers
MAX_TOKENS = 32768  # tokens per request (prompt tokens of all its sequences)


def takes_token_ids(session: Session) -> tuple[bool, str]:
    """Whether the server scores token-id prompts exactly, with the reason (said in ``result.info``)."""
    if session.chat:
        return False, "the chat endpoint takes messages, not token ids"
    dialect = session.dialect
    return dialect.token_id_prompts, dialect.token_ids_reason()


def id_context(session: Session, prompt_text: str) -> Optional[list[int]]:
    """The ids of ``prompt_text`` as a descent context (BOS included) where the server takes token ids, else
    None (contexts then go as text and the server must split them the same way)."""
    if not takes_token_ids(session)[0]:
        return None
    ids = session.tokenize(prompt_text, bos=True)
    if not ids:
        raise empty_prompt_error(prompt_text)
    return ids


@dataclass
class _Item:
    """One prompt and its continuations, tokenized; ``leaf[j]``: the sequence choice j is read from."""

    prompt: list[int]
    choices: list[list[int]]
    leaves: list[int] = field(default_factory=list)  # indices of the choices that are sent
    leaf: list[int] = field(default_factory=list)


class IdEcho:
    """Scores (prompt text, continuation texts) pairs by token ids through a session's transport (see module).

    ``session`` needs ``concurrency`` for `_pack` alone; ``max_sequences``/``max_tokens``: the most sequences /
    prompt tokens in one request.
    """

    strategy = "echo"

    def __init__(self, session: Session, max_sequences: int = MAX_SEQUENCES, max_tokens: int = MAX_TOKENS):
        self.session = session
        self.max_sequences = max(1, int(max_sequences))
        self.max_tokens = int(max_tokens)
        self._context: Optional[int] = None

    # --- public ---------------------------------------------------------------------------------------
    def score(self, pairs: Sequence[tuple[str, Sequence[str]]]) -> list[tuple[list[list[float]], dict]]:
        """For each (prompt text, continuations): (token log-probs per continuation, info). Input errors
        (empty tokenizations, identical ones, too long for the context) are raised before any completion."""
        return self.session.requests.run(self.score_plan(pairs))

    def score_plan(self, pairs: Sequence[tuple[str, Sequence[str]]]) -> Plan[list[tuple[list[list[float]], dict]]]:
        """`score` as a request plan (`autocog.lm.openai.plans`): every pack yielded together."""
        items = self._tokenize(pairs)
        sequences = [(i, j) for i, item in enumerate(items) for j in item.leaves]
        packs = self._pack(items, sequences)
        answers = (yield Parallel([self._send(items, pack) for pack in packs])) if packs else []
        rows: dict[tuple[int, int], list[Optional[float]]] = {}
        for pack, values in zip(packs, answers):
            rows.update(zip(pack, values))
        requests = len(packs)  # one completions request each (retries count as attempts)
        out = []
        for i, item in enumerate(items):
            start = len(item.prompt)
            logprobs = [
                [math.nan if v is None else float(v) for v in rows[(i, item.leaf[j])][start : start + len(ids)]]
                for j, ids in enumerate(item.choices)
            ]
            info = {
                "layout": "prompt_logprobs",
                "token_ids": True,
                "sequences": len(item.leaves),
                "batch_sequences": len(sequences),
                "batch_prompts": len(items),
                "batch_requests": requests,
                "echo_requests": sum(1 for p in packs if any(s[0] == i for s in p)),
                "exact": [True] * len(item.choices),
                "bounded": logprobs,
            }
            out.append((logprobs, info))
        return out

    # --- steps ----------------------------------------------------------------------------------------
    def _tokenize(self, pairs: Sequence[tuple[str, Sequence[str]]]) -> list[_Item]:
        encoded = encode_pairs(self.session, pairs, self.context_length(), "the model's context")
        return [_leaves(_Item(ids, choices)) for ids, choices in encoded]

    def _pack(self, items: list[_Item], sequences: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
        """The sequences in requests: a prompt's sequences stay together (one request per prompt at most,
        unless it alone exceeds ``max_sequences``/``max_tokens``), and prompts are grouped into about one
        request per slot of the thread pool (``concurrency``) so that every slot gets work."""
        slots = max(1, int(self.session.concurrency))
        target = min(self.max_sequences, max(1, math.ceil(len(sequences) / slots)))
        packs: list[list[tuple[int, int]]] = [[]]
        tokens = 0
        for i, j in sequences:
            n = len(items[i].prompt) + len(items[i].choices[j])
            pack = packs[-1]
            new_prompt = bool(pack) and pack[-1][0] != i
            full = len(pack) >= self.max_sequences or (pack and tokens + n > self.max_tokens)
            if full or (new_prompt and len(pack) >= target):
                packs.append([])
                tokens = 0
            packs[-1].append((i, j))
            tokens += n
        return [p for p in packs if p]

    def _send(self, items: list[_Item], pack: list[tuple[int, int]]) -> Plan[list[list[Optional[float]]]]:
        """One completions request for the sequences of ``pack``: per sequence, the log-prob of each of its
        tokens (None for the first, which nothing predicts)."""
        session = self.session
        prompts = [items[i].prompt + items[i].choices[j] for i, j in pack]
        body = {"max_tokens": 0, "echo": True, "temperature": 0.0}
        data = yield session.requests.completion_request(
            prompts, body, {"prompt_logprobs": 0, "return_token_ids": True}
        )
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or len(choices) != len(prompts):
            raise MalformedResponseError(
                f"{session.base_url} answered {len(choices) if isinstance(choices, list) else 0} "
                f"choices for {len(prompts)} prompts"
            )
        by_index = {c.get("index"): c for c in choices if isinstance(c, dict)}
        return [_read(by_index.get(k), ids, session.base_url) for k, ids in enumerate(prompts)]

    def context_length(self) -> Optional[int]:
        """The server's context length (vLLM's ``max_model_len`` from ``/models``), or None if not said."""
        if self._context is None:
            session = self.session
            data = session.transport.get("/models", "models")
            entries = data.get("data") if isinstance(data, dict) else None
            for entry in entries if isinstance(entries, list) else []:
                if isinstance(entry, dict) and entry.get("id") == session.model:
                    value = entry.get("max_model_len")
                    self._context = int(value) if isinstance(value, int) else 0
            self._context = self._context or 0
        return self._context or None


def _leaves(item: _Item) -> _Item:
    """Mark the choices to send: those whose ids are no prefix of another choice's; every choice is read from
    the first leaf that starts with its ids."""
    choices = item.choices
    item.leaves = [
        j for j, ids in enumerate(choices) if not any(len(o) > len(ids) and o[: len(ids)] == ids for o in choices)
    ]
    item.leaf = [next(k for k in item.leaves if choices[k][: len(ids)] == ids) for ids in choices]
    return item


def _read(choice: Any, ids: list[int], url: str) -> list[Optional[float]]:
    """The log-prob of each token of ``ids`` from one choice of a ``prompt_logprobs`` answer."""
    rows = choice.get("prompt_logprobs") if isinstance(choice, dict) else None
    echoed = choice.get("prompt_token_ids") if isinstance(choice, dict) else None
    if not isinstance(rows, list) or len(rows) != len(ids):
        raise MalformedResponseError(f"{url} answered no prompt_logprobs of {len(ids)} positions: {str(choice)[:200]}")
    if echoed is not None and list(echoed) != ids:
        raise MalformedResponseError(f"{url} scored other token ids than those sent: {str(echoed)[:200]}")
    out: list[Optional[float]] = [None]
    for k in range(1, len(ids)):
        entry = rows[k].get(str(ids[k])) if isinstance(rows[k], dict) else None
        value = entry.get("logprob") if isinstance(entry, dict) else None
        if not isinstance(value, (int, float)) or math.isnan(value):
            raise MalformedResponseError(
                f"{url} gave no log-prob for token {ids[k]} at position {k}: {str(rows[k])[:200]}"
            )
        out.append(float(value))
    return out


class EchoByIds:
    """The token-id strategies on a `Session`: echo by ids (vLLM, `IdEcho`) or next-token rows by ids
    (llama-server, `autocog.lm.openai.id_rows.IdRows`); `score` gives `ChoiceResult`s for checked requests."""

    def __init__(self, session: Session):
        self.session = session
        self.scorer = IdEcho(session)  # keeps the server's context length
        self.rows = IdRows(session)

    def applies(
        self, requests: Sequence[CheckedRequest], strategy: str, exhaustive: bool = False, search: str = "best-first"
    ) -> Optional[str]:
        """Why token ids score ``requests`` here, or None when they do not apply (a server without token-id
        prompts, chat-message prompts; on vLLM also strategy ``descent``, an exhaustive or non-best-first search;
        on llama-server strategy ``echo``, which it ignores): the caller then scores another way. On
        llama-server the rows are every trie node's, exact: any search gets the full distribution."""
        if any(not isinstance(r.prompt, str) for r in requests):
            return None
        dialect = self.session.dialect
        if dialect.id_rows:
            return dialect.token_ids_reason() if strategy in ("auto", "descent") else None
        if strategy not in ("auto", "echo") or exhaustive or search != "best-first":
            return None
        usable, why = takes_token_ids(self.session)
        return why if usable else None

    def context_length(self) -> Optional[int]:
        """The context the server says a sequence holds (llama-server: a slot's; vLLM: ``max_model_len``), or None."""
        dialect = self.session.dialect
        if dialect.id_rows:
            return self.rows.meta()["n_ctx"] or None
        return self.scorer.context_length() if dialect.token_id_prompts else None

    def score(self, requests: Sequence[CheckedRequest], strategy: str, why: str) -> list[ChoiceResult]:
        """`ChoiceResult`s in as few requests as the packing allows (pmi's unconditional scores ride in the same
        requests). Every input is checked before anything is sent."""
        return self.session.requests.run(self.score_plan(requests, strategy, why))

    def score_plan(self, requests: Sequence[CheckedRequest], strategy: str, why: str) -> Plan[list[ChoiceResult]]:
        """`score` as a request plan (`autocog.lm.openai.plans`)."""
        session = self.session
        scorer = self.rows if session.dialect.id_rows else self.scorer
        pairs: list[tuple[str, list[str]]] = []
        plan = []
        for r in requests:
            prompt_text, continuations = split_boundary(r.prompt, r.choices)
            if isinstance(prompt_text, ChatPrompt):  # llama-server: the text its chat endpoint evaluates, BOS once
                renderer = session.renderer
                text = renderer.apply_chat_template(list(prompt_text.messages), True)
                prompt_text = strip_prefix(text, renderer.bos_text())
            if r.end:
                continuations = [c + r.end for c in continuations]
            plan.append((r.choices, r.normalization, len(pairs)))
            pairs.append((prompt_text, continuations))
            if r.normalization == "pmi":
                pairs.append((session.unconditional_prompt, continuations))
        spent: Counter = Counter()
        token = CALL_COUNTER.set(spent)  # this call's requests, whatever else runs at the same time
        try:
            scored = yield from scorer.score_plan(pairs)
        finally:
            CALL_COUNTER.reset(token)
        label = scorer.strategy
        results = []
        for choices, normalization, at in plan:
            logprobs, info = scored[at]
            uncond = scored[at + 1][0] if normalization == "pmi" else None
            scores = normalize_scores(info.pop("bounded"), choices, normalization, uncond)
            is_greedy = info.pop("is_greedy", None)  # llama-server's rows name their argmax
            # requests: this call's own count, or its share of the batch's (batch_requests in all)
            share = spent["completions"] if len(plan) == 1 else spent["completions"] / len(plan)
            info.update(
                server=session.dialect.name,
                endpoint="completions",
                requests=share,
                tokenize_requests=spent["tokenize"] + spent["detokenize"],
                attempts=spent["attempts"],
                reason=f"{'auto' if strategy == 'auto' else label}: {label} by token ids: {why}",
            )
            results.append(
                ChoiceResult(
                    list(choices),
                    logprobs,
                    scores,
                    normalization,
                    strategy=label,
                    unconditional_logprobs=uncond,
                    is_greedy=is_greedy,
                    info=info,
                )
            )
        return results
