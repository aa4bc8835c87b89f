"""Next-token rows by token id (llama.cpp's C++ ``llama-server``): every node of the choices' trie in few requests.

Each (prompt, choices) pair is tokenized as the local backends split it: the prompt alone (BOS in front when the
model has one), each choice alone. Token k of a choice needs the model's distribution after the prompt and the
choice's first k tokens: one *context* per trie node; shared prefixes, and the same prompt across a batch, are
sent once. The contexts go to ``/completion`` as token-id prompts, many per request (``prompt`` is a list of id
lists: one task each, run on the server's parallel slots), with ``n_predict: 1``, ``n_probs`` and
``post_sampling_probs: false``: the answer names the top ``n_probs`` tokens of the model's own distribution
(softmax of the raw logits, before logit_bias, grammar and samplers) by id, with their log-probs.

A child outside a context's top ``n_probs`` (round 1) is asked in round 2, with that token forced by
``logit_bias``: one request per distinct token, for all the contexts that miss it (the forced token's reported
log-prob is again the raw distribution's, by id, checked). Past `FORCED_TOKENS` distinct tokens, a context that
misses several gets its whole row instead (``n_probs`` = the vocabulary: ~0.5 s and 4 MB on SmolLM2's 49,152
tokens, against ~0.06 s a forced request; measured in docs/llama-server.md). The prompt cache (``cache_prompt``, on) keeps each
slot's last context, so a node's context costs its new tokens only.

>>> rows = IdRows(session)                                                       # doctest: +SKIP
>>> values, info = rows.score([("2+2=", ["4", "5"])])[0]; info["batch_requests"]    # doctest: +SKIP
1
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from autocog.core.checks import check_choice_tokens
from autocog.errors import ContextLengthError, MalformedResponseError, StrategyUnavailableError
from autocog.lm.openai.plans import Parallel, Plan, Post
from autocog.lm.openai.requests import BIAS

if TYPE_CHECKING:  # pragma: no cover
    from autocog.lm.openai.session import Session

MAX_CONTEXTS = 64  # token-id prompts per request: beyond this, a request only delays the first answers
MIN_TOP = 1000  # n_probs of round 1 at least: ~80 bytes of JSON each, measured as cheap as 32 on SmolLM2
FORCED_TOKENS = 8  # distinct missing tokens forced one request each (~0.06 s); past it, whole rows (~0.5 s)
WHOLE_ROW = 2048  # vocabularies up to this size are asked whole in round 1 (no round 2)

Context = tuple[int, ...]


def empty_prompt_error(prompt_text: str) -> StrategyUnavailableError:
    """The refusal for a prompt with no token in front of the first choice token, naming the real cause."""
    if prompt_text:
        return StrategyUnavailableError(
            f"the server's tokenizer gave no token for the prompt {prompt_text[:40]!r} and the model adds no BOS: "
            "no log-prob predicts the first choice token"
        )
    return StrategyUnavailableError(
        "the prompt is empty and the model adds no BOS: no log-prob predicts the first choice token "
        "(pass unconditional_prompt= for 'pmi')"
    )


def encode_pairs(
    session: Session, pairs: Sequence[tuple[str, Sequence[str]]], limit: Optional[int], holder: str
) -> list[tuple[list[int], list[list[int]]]]:
    """Each ``(prompt, choices)`` as token ids, the split the local backends score: BOS (when the model has one)
    and the prompt alone, each choice alone, every distinct text tokenized once. Checked before anything is
    sent: a token in front of the first choice token, every choice tokenizable, the prompt and each choice
    within ``limit`` tokens (``holder`` says what holds them, for the `ContextLengthError`)."""
    texts = list(dict.fromkeys([p for p, _ in pairs] + [c for _, cs in pairs for c in cs]))
    encoded = dict(zip(texts, session.tokenizer.encode_many(texts)))
    bos = session.tokenize("", bos=True)  # [BOS] or []
    out = []
    for prompt, continuations in pairs:
        prompt_ids = bos + encoded[prompt]
        if not prompt_ids:
            raise empty_prompt_error(prompt)
        choices = [encoded[c] for c in continuations]
        check_choice_tokens(choices, continuations)
        for j, ids in enumerate(choices):
            if limit is not None and len(prompt_ids) + len(ids) > limit:
                raise ContextLengthError(
                    f"the prompt and choice {j} need {len(prompt_ids) + len(ids)} tokens "
                    f"but {holder} on {session.base_url} holds {limit}"
                )
        out.append((prompt_ids, choices))
    return out


@dataclass
class _Item:
    """One prompt's ids and its choices' ids."""

    prompt: list[int]
    choices: list[list[int]]


@dataclass
class _Plan:
    """The contexts of a batch: ``needed`` (context -> the child ids read there), ``found`` (context -> id ->
    log-prob), ``best`` (context -> its row's argmax), ``requests`` (sent, all rounds)."""

    needed: dict[Context, set[int]] = field(default_factory=dict)
    found: dict[Context, dict[int, float]] = field(default_factory=dict)
    best: dict[Context, int] = field(default_factory=dict)  # the argmax of each context's row
    requests: int = 0


class IdRows:
    """Scores (prompt text, continuation texts) pairs by next-token rows through ``/completion`` (see module)."""

    strategy = "descent"

    def __init__(self, session: Session, max_contexts: int = MAX_CONTEXTS):
        self.session = session
        self.max_contexts = max(1, int(max_contexts))
        self._meta: Optional[dict] = None
        self._plain: Optional[int] = None

    # --- what the server says once -------------------------------------------------------------------
    def meta(self) -> dict:
        """``n_vocab`` (``/v1/models``' meta) and ``n_ctx`` (a slot's context, ``/props``), read once."""
        if self._meta is None:
            session = self.session
            data = session.transport.get("/models", "models")
            entries = data.get("data") if isinstance(data, dict) else None
            meta = next((e.get("meta") for e in entries or [] if isinstance(e, dict) and e.get("meta")), None) or {}
            props = session.dialect.server_props(session)
            settings = props.get("default_generation_settings") or {}
            self._meta = {"n_vocab": int(meta.get("n_vocab") or 0), "n_ctx": int(settings.get("n_ctx") or 0)}
        return self._meta

    # --- public ---------------------------------------------------------------------------------------
    def score(self, pairs: Sequence[tuple[str, Sequence[str]]]) -> list[tuple[list[list[float]], dict]]:
        """For each (prompt text, continuations): (token log-probs per continuation, info). Input errors are
        raised before any completion request."""
        return self.session.requests.run(self.score_plan(pairs))

    def score_plan(self, pairs: Sequence[tuple[str, Sequence[str]]]) -> Plan[list[tuple[list[list[float]], dict]]]:
        """`score` as a request plan (`autocog.lm.openai.plans`): each round's packs yielded together."""
        items = self._tokenize(pairs)
        plan = _Plan()
        for item in items:
            for ids in item.choices:
                for k, token in enumerate(ids):
                    plan.needed.setdefault(tuple(item.prompt + ids[:k]), set()).add(token)
        yield from self._round_one(plan)
        yield from self._round_two(plan)
        out = []
        for item in items:
            logprobs = [
                [plan.found[tuple(item.prompt + ids[:k])][t] for k, t in enumerate(ids)] for ids in item.choices
            ]
            contexts = {tuple(item.prompt + ids[:k]) for ids in item.choices for k in range(len(ids))}
            info = {
                "layout": "rows",
                "token_ids": True,
                "sequences": len(contexts),
                "batch_sequences": len(plan.needed),
                "batch_prompts": len(items),
                "batch_requests": plan.requests,
                "exact": [True] * len(item.choices),
                "is_greedy": [
                    all(plan.best[tuple(item.prompt + ids[:k])] == t for k, t in enumerate(ids)) for ids in item.choices
                ],
                "bounded": logprobs,
            }
            out.append((logprobs, info))
        return out

    def row(self, ids: list[int]) -> np.ndarray:
        """The whole next-token log-prob row after ``ids`` (one request; float64, every id exact); the caller
        checks the context length (`OpenAI.greedy`)."""
        n_vocab = self.meta()["n_vocab"]
        if n_vocab <= 0:
            raise StrategyUnavailableError(f"{self.session.base_url} does not say its vocabulary size (n_vocab)")
        answer = self.session.requests.run(self._send([tuple(ids)], n_vocab, self.plain_token()))[0]
        if answer is None:
            raise MalformedResponseError(f"{self.session.base_url} answered no log-probs (n_probs) for a row")
        row = np.full(n_vocab, -np.inf)
        for token, value in answer["top"].items():
            row[token] = value
        if not np.all(np.isfinite(row)):
            raise MalformedResponseError(f"{self.session.base_url} answered a row without every token's log-prob")
        return row

    # --- steps ----------------------------------------------------------------------------------------
    def _tokenize(self, pairs: Sequence[tuple[str, Sequence[str]]]) -> list[_Item]:
        limit = self.meta()["n_ctx"] or None
        return [_Item(ids, choices) for ids, choices in encode_pairs(self.session, pairs, limit, "a slot's context")]

    def _round_one(self, plan: _Plan) -> Plan[None]:
        """Every context's top row: ``n_probs`` covers the widest node (the whole row on small vocabularies)."""
        n_vocab = self.meta()["n_vocab"]
        widest = max((len(c) for c in plan.needed.values()), default=1)
        n_probs = max(MIN_TOP, self.session.top_logprobs, 4 * widest)
        if n_vocab and (n_vocab <= WHOLE_ROW or n_probs >= n_vocab):
            n_probs = n_vocab
        contexts = list(plan.needed)
        answers = yield from self._send_all([(contexts, n_probs, self.plain_token())], plan)
        for context, answer in zip(contexts, answers[0]):
            if answer is None:
                raise MalformedResponseError(f"{self.session.base_url} answered no log-probs (n_probs) for a row")
            plan.found[context] = answer["top"]
            plan.best[context] = max(answer["top"], key=answer["top"].__getitem__)

    def _round_two(self, plan: _Plan) -> Plan[None]:
        """The children missing from their context's row, forced by logit_bias: one request per distinct token,
        all the contexts that miss it together. Past `FORCED_TOKENS` distinct tokens, a context missing several
        gets its whole row instead (one request for all of them), as does a token that ends inside a UTF-8
        character."""
        absent = {c: sorted(needed - set(plan.found[c])) for c, needed in plan.needed.items()}
        distinct = {t for ts in absent.values() for t in ts}
        many = len(distinct) > FORCED_TOKENS  # then a context missing several children costs one whole row
        missing: dict[int, list[Context]] = {}
        whole: list[Context] = []
        for context, tokens in absent.items():
            if many and len(tokens) > 1:
                whole.append(context)
                continue
            for token in tokens:
                missing.setdefault(token, []).append(context)
        jobs: list[tuple[list[Context], int, Optional[int]]] = [(cs, 1, t) for t, cs in missing.items()]
        forced = yield from self._send_all(jobs, plan)
        for (token, contexts), answered in zip(missing.items(), forced):
            for context, answer in zip(contexts, answered):
                if answer is None:  # no log-probs for a token that ends inside a character
                    whole.append(context)
                    continue
                if answer["token"] != token:
                    raise MalformedResponseError(
                        f"a logit_bias of {BIAS} on token {token} made {self.session.base_url} produce token "
                        f"{answer['token']}: its log-prob cannot be read"
                    )
                plan.found[context][token] = answer["logprob"]
        if whole:
            contexts = list(dict.fromkeys(whole))
            n_vocab = self.meta()["n_vocab"]
            rows = yield from self._send_all([(contexts, n_vocab, self.plain_token())], plan)
            for context, answer in zip(contexts, rows[0]):
                if answer is None:
                    raise MalformedResponseError(f"{self.session.base_url} answered no log-probs for a whole row")
                plan.found[context].update(answer["top"])

    def plain_token(self) -> int:
        """A token made of whole ASCII characters, forced as the one generated token of a row request: llama-server
        reports no log-probs for a generated token that ends inside a UTF-8 character (it waits for the rest)."""
        if self._plain is None:
            tokenizer = self.session.tokenizer
            for text in ("a", "0", " ", "\n"):
                ids = tokenizer.encode(text)
                if len(ids) == 1:
                    self._plain = ids[0]
                    break
            else:
                raise StrategyUnavailableError(f"no ASCII character is a single token on {self.session.base_url}")
        return self._plain

    def _send_all(
        self, jobs: list[tuple[list[Context], int, Optional[int]]], plan: _Plan
    ) -> Plan[list[list[Optional[dict]]]]:
        """Per job (contexts, n_probs, forced token): the answers, in packs of ``max_contexts`` sent ``concurrency``
        at a time (one `Parallel`: no request waits on another)."""
        step = self.max_contexts
        packs = [
            (i, job[0][k : k + step], job[1], job[2]) for i, job in enumerate(jobs) for k in range(0, len(job[0]), step)
        ]
        plan.requests += len(packs)
        answers = (yield Parallel([self._send(p[1], p[2], p[3]) for p in packs])) if packs else []
        out: list[list[Optional[dict]]] = [[] for _ in jobs]
        for pack, answered in zip(packs, answers):
            out[pack[0]].extend(answered)
        return out

    def _send(self, contexts: list[Context], n_probs: int, forced: Optional[int] = None) -> Plan[list[Optional[dict]]]:
        """One ``/completion`` request for ``contexts``: per context, ``{"token", "logprob", "top"}`` (the
        produced id, its log-prob, and id -> log-prob of the top ``n_probs``), None where the produced token ends
        inside a UTF-8 character (no log-probs then)."""
        session = self.session
        body: dict[str, Any] = {
            "prompt": [list(c) for c in contexts],
            "n_predict": 1,
            "n_probs": n_probs,
            "post_sampling_probs": False,
            "temperature": 0.0,
            "cache_prompt": True,
            "response_fields": ["index", "completion_probabilities"],  # not the settings echoed per result
        }
        if forced is not None:
            body["logit_bias"] = [[forced, BIAS]]
        data = yield Post(session.root_url + "/completion", body, kind="completions")
        results = data if isinstance(data, list) else [data]
        if len(results) != len(contexts):
            raise MalformedResponseError(
                f"{session.base_url} answered {len(results)} results for {len(contexts)} token-id prompts"
            )
        by_index = {r.get("index", k): r for k, r in enumerate(results) if isinstance(r, dict)}
        return [_read(by_index.get(k), session.base_url) for k in range(len(contexts))]


def _read(result: Any, url: str) -> Optional[dict]:
    """``{"token", "logprob", "top"}`` from one ``/completion`` result with ``n_probs`` (None: no log-probs)."""
    if isinstance(result, dict) and "index" in result and "completion_probabilities" not in result:
        return None
    probs = result.get("completion_probabilities") if isinstance(result, dict) else None
    entry = probs[0] if isinstance(probs, list) and probs and isinstance(probs[0], dict) else None
    top = entry.get("top_logprobs") if entry is not None else None
    if entry is None or not isinstance(top, list) or not isinstance(entry.get("id"), int):
        raise MalformedResponseError(f"{url} answered no pre-sampling log-probs (n_probs): {str(result)[:200]}")
    row: dict[int, float] = {}
    for t in top:
        value = t.get("logprob") if isinstance(t, dict) else None
        if not isinstance(value, (int, float)) or not isinstance(t.get("id"), int):
            raise MalformedResponseError(f"{url} answered a malformed top_logprobs entry: {str(t)[:200]}")
        row[int(t["id"])] = _finite(float(value))
    return {"token": int(entry["id"]), "logprob": _finite(float(entry.get("logprob", math.nan))), "top": row}


def _finite(value: float) -> float:
    """llama-server writes log(0) as the lowest float32: -inf, as the local backends give it."""
    return -math.inf if value <= -3.0e38 else value
