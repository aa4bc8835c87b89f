"""The next-token rows of a trie node: the first request at a node (`first_row`) and the exact log-probs that
logit_bias reveals (`refine`), for descent and echo's fills. Values read by token text are trusted only where
the text names one token (`Session.ambiguous_texts`); a produced token's value is its own (by id).

>>> nxt, exact, bounds = session.requests.run(first_row(session, "2+2=", [(0, 19, "4"), (1, 20, "5")]))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from autocog.errors import StrategyUnavailableError, TokenizerMismatchError
from autocog.lm.openai.parsing import Next, produced, same_piece, unique_pieces
from autocog.lm.openai.plans import Plan
from autocog.lm.openai.requests import BIAS

if TYPE_CHECKING:  # pragma: no cover
    from autocog.lm.openai.session import Session


def first_row(session: Session, context: str, children: list[tuple]) -> Plan[tuple[Next, dict, dict]]:
    """The first request at a trie node: exact log-probs of the children it reveals, bounds for the others (a
    request plan, `autocog.lm.openai.plans`).

    ``children``: (key, token id, piece text). Servers reporting log-probs before the bias get a bias on
    every child (the produced token is the best child, exactly scored); the others an unbiased request.
    """
    biased = session.probe()["bias"] == "pre"
    bias = session.requests.safe_bias({c[1]: BIAS for c in children}, drop=True) if biased else None
    if biased and not bias:
        biased, bias = False, None  # every child ends inside a character: an unbiased row
    unbiased = {c[0] for c in children if bias is not None and c[1] not in bias}  # not below the produced child
    nxt = yield from session.requests.next_plan(context, bias, partial="allow")
    if nxt.token is None and not nxt.top:
        raise session.no_logprobs(context)
    unique = unique_pieces(children, session.ambiguous_texts())
    exact: dict = {}
    for key, _token, piece in children:
        if piece in unique and piece in nxt.top:
            exact[key] = nxt.top[piece]
    if biased and nxt.logprob is not None:
        made = produced(children, lambda c: c[2], nxt.token)
        if len(children) == 1 and not unbiased:
            exact[children[0][0]] = nxt.logprob
        elif len(made) == 1 and made[0][2] in unique_pieces(children):  # by id: the bias chose it
            exact[made[0][0]] = nxt.logprob
        elif nxt.token and "\ufffd" not in nxt.token and not made and unique:
            raise TokenizerMismatchError(
                f"a logit_bias on the ids of {[c[2] for c in children]} made the server at {session.base_url} "
                f"(model {session.model!r}) produce {nxt.token!r}: the tokenizer's ids are not the model's"
            )
    natural = [v for t, v in nxt.top.items() if not (biased and t == nxt.token)]
    floor = min(natural) if natural else 0.0  # a child outside the top log-probs is below all of them
    if biased and nxt.logprob is not None:
        floor = min(floor, nxt.logprob)  # and below the best child, which the bias made the server produce
    # A child whose text the row names without reading it (a shared text) may lie above the floor.
    bounds = {
        key: 0.0 if piece in nxt.top or key in unbiased or "\ufffd" in piece else floor
        for key, _, piece in children
        if key not in exact
    }
    return nxt, exact, bounds


def refine(session: Session, context: str, children: list[tuple], first: Optional[Next]) -> dict:
    """Exact log-probs of ``children`` at ``context`` through logit_bias (see `first_row`)."""
    return session.requests.run(refine_plan(session, context, children, first))


def refine_plan(session: Session, context: str, children: list[tuple], first: Optional[Next]) -> Plan[dict]:
    """`refine` as a request plan (`autocog.lm.openai.plans`)."""
    out: dict = {}
    if session.probe()["bias"] is None:
        raise StrategyUnavailableError(
            f"a log-prob outside the top {session.top_logprobs} is needed, and "
            f"logit_bias cannot reveal it here: {session.probe()['bias_reason']}"
        )
    if session.probe()["bias"] == "pre":
        for key, token, piece in children:
            nxt = yield from session.requests.next_plan(context, {token: BIAS})
            if nxt.logprob is None:
                if token == session.tokenizer.bos_token_id:
                    raise StrategyUnavailableError(
                        f"choice token {piece!r} is BOS (id {token}), which llama_cpp.server leaves out of every "
                        f"log-prob list it returns: it cannot be scored on {session.base_url}"
                    )
                raise session.no_logprobs(context)
            if not same_piece(piece, nxt.token) and piece and "\ufffd" not in piece and nxt.token:
                raise TokenizerMismatchError(
                    f"a logit_bias on id {token} ({piece!r}) made the server at {session.base_url} (model "
                    f"{session.model!r}) produce {nxt.token!r}: the tokenizer's ids are not the model's"
                )
            out[key] = nxt.logprob
        return out
    # Reported after the bias: biased values are read against an unbiased reference token r:
    # log p(u) = q(u) - q(r) - BIAS + log p(r), with q the biased answer and log p(r) from `first`.
    if first is None:
        first = yield from session.requests.next_plan(context)
    size = max(1, session.top_logprobs - 1)
    for start in range(0, len(children), size):
        chunk = children[start : start + size]
        names = {c[2] for c in chunk}
        reference = max(((t, v) for t, v in first.top.items() if t not in names), key=lambda tv: tv[1], default=None)
        if reference is None:
            raise StrategyUnavailableError("no unbiased reference token to read biased log-probs against")
        nxt = yield from session.requests.next_plan(context, {c[1]: BIAS for c in chunk})
        if reference[0] not in nxt.top:
            raise StrategyUnavailableError(
                f"the reference token {reference[0]!r} is missing from the biased top log-probs: ask for more "
                "top_logprobs"
            )
        shift = reference[1] - nxt.top[reference[0]] - BIAS
        for key, _token, piece in chunk:
            if piece not in nxt.top:
                raise StrategyUnavailableError(f"the biased token {piece!r} is missing from the top log-probs")
            out[key] = nxt.top[piece] + shift
    return out
