"""The scoring layer: every caller that scores choices (``choose``, ``choice_distribution``, ``choice_logprobs``,
the batch API, ``evaluate``, programs, the lm-eval adapter) goes through here.

A request is (prompt, choices, normalization, end, prior); the answer one `ChoiceResult` per request, in order.
The layer does, once per request and in one place (CAPPr's decorator idea):

1. **checks, before any model call**: the prompt (a str; a list of chat messages is rendered with the
   backend's ``apply_chat_template``), the choices (non-empty, unique, non-empty strings), the
   normalization, ``end``, the prior; for token backends also the tokens (no empty choice, no two choices
   with the same tokens) and the context length. A bad request in a batch fails the whole batch before
   the model runs; the error names the request (``request 3: ...``).
2. **the model**: one backend primitive over the whole batch. `ChoiceLM` backends implement
   ``evaluate_trees(jobs) -> list[np.ndarray]``: the log-prob of every node of each (prompt tokens, trie) job
   (`TfLM`: packed passes; `LLaMa`: one ``llama_decode`` over many sequences; any other: one ``greedy``
   per inner node, prompt after prompt). Other backends implement ``lm.score_batch(requests)``.
3. **normalization and priors, after**: `normalize_scores` (``pmi``'s unconditional pass is run once per
   set of choice tokens and cached on the model), then the prior (``probs = softmax(scores) * prior``,
   renormalized).

`score` cuts a stream of requests into batches of ``batch_size``, so memory stays flat however many there are;
`ascore` is its async form (``async for r in ascore(lm, requests)``, the same results; docs/async.md).
``max_batch_tokens`` (optional) bounds the tokens of one packed pass for this call only (`TfLM`: rows x padded
row length; `LLaMa`: tokens per grouped decode): it is handed down, ``score_batch(requests, max_batch_tokens=N)``
then ``evaluate_trees(jobs, max_batch_tokens=N)``, never set on the model, so concurrent calls keep their own.
Left None, the backend's own setting holds (`TfLM.max_batch_tokens`) and the keyword is not passed at all.

>>> [r.choice for r in score(lm, [ScoreRequest("2+2=", ["4", "5"]), ScoreRequest("3+3=", ["6", "9"])])]  # doctest: +SKIP
['4', '6']
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Iterable, Iterator, Optional, Sequence

import numpy as np

from autocog.core.chat import check_messages, is_messages
from autocog.core.checks import check_choices, check_context
from autocog.core.normalization import (
    check_normalization,
    check_prior,
    normalize_scores,
)
from autocog.core.tokens import common_prefix_length
from autocog.core.trie import TokenChoiceTree
from autocog.core.types import ChoiceResult, ScoreRequest
from autocog.errors import AutoCogError, InvalidChoicesError, InvalidPromptError

if TYPE_CHECKING:  # pragma: no cover
    from autocog.lm.base import LM


# requests per backend batch. Memory is bounded by the backends' own budgets (tokens per pass, logits bytes), not by
# this; what it sets is how often the phases of a batch (checks and tokenizing, the model, the read-out) take turns.
# Each phase starts cold after the others (~0.6 ms a batch on the tiny model, docs/performance.md "Round 5"):
# 32 halves that share of 16's per prompt, and packs twice as many prompts per pass.
DEFAULT_BATCH_SIZE = 32
PROGRESS_THRESHOLD = 50  # requests: a bar is shown by default on runs at least this long (on a terminal)

# (prompt tokens, trie): what `ChoiceLM.evaluate_trees` scores.
TreeJob = tuple[list[int], "TokenChoiceTree"]
Evaluator = Callable[[Sequence[TreeJob]], list[np.ndarray]]


@dataclass
class CheckedRequest:
    """A request that passed the checks: ``prompt`` is a str (or the messages, for a backend that takes them),
    ``normalization`` is resolved, ``prior`` is a float array or None."""

    prompt: Any
    choices: list[str]
    normalization: str
    end: Optional[str]
    prior: Optional[np.ndarray]


# --- 1. checks ------------------------------------------------------------------------------------------


def check_request(
    lm: LM, request: ScoreRequest, render: bool = True, choices: Optional[list[str]] = None
) -> CheckedRequest:
    """The checks of one request (no model call). ``render``: turn chat messages into a str with
    ``lm.apply_chat_template`` (token backends); else messages are passed on as they are. ``choices``: the
    request's choices as already checked (`check_requests`: the same list object as an earlier request's)."""
    if not isinstance(request, ScoreRequest):
        raise TypeError(f"expected a ScoreRequest, got {type(request).__name__}")
    prompt = request.prompt
    if render:
        prompt = lm.render_prompt(prompt)  # a str as is; chat messages through the model's template
    elif is_messages(prompt):
        prompt = check_messages(prompt)
    elif not isinstance(prompt, str):
        raise InvalidPromptError(f"the prompt must be a str (or a list of chat messages), not {type(prompt).__name__}")
    if choices is None:
        choices = check_choices(request.choices)
    normalization = check_normalization(request.normalization or lm.default_normalization)
    end = request.end
    if end is not None and not isinstance(end, str):
        raise TypeError(f"end must be a str or None, not {type(end).__name__}")
    prior = None if request.prior is None else check_prior(request.prior, len(choices))
    return CheckedRequest(prompt, choices, normalization, end or None, prior)


def check_requests(
    lm: LM,
    requests: Sequence[ScoreRequest],
    render: bool = True,
    build: Optional[Callable[[CheckedRequest], Any]] = None,
) -> tuple[list[CheckedRequest], list[Any]]:
    """`check_request` on every request, then ``build`` (e.g. tokens and trie, which check more) on each; an
    error in a batch of several names the request's index and keeps its type. A choice list shared by consecutive
    requests (the same object, as the batch API passes one list for all prompts) is checked once."""
    checked, built = [], []
    shared: tuple[Any, Optional[list[str]]] = (None, None)
    for i, request in enumerate(requests):
        try:
            same = request.choices is shared[0] and shared[1] is not None
            c = check_request(lm, request, render, choices=shared[1] if same else None)
            shared = (request.choices, c.choices)
            checked.append(c)
            if build is not None:
                built.append(build(c))
        except (AutoCogError, ValueError, TypeError) as error:
            if len(requests) == 1:
                raise
            raise _renamed(error, f"request {i}: {error}") from error
    return checked, built


def _renamed(error: Exception, message: str) -> Exception:
    try:
        return type(error)(message)
    except Exception:  # an error class with another constructor: keep the original
        return error


# --- 2 + 3. the tree path: evaluate, normalize ------------------------------------------------------------


def score_trees(
    lm: Any,
    requests: Sequence[ScoreRequest],
    evaluate: Optional[Evaluator] = None,
    strategy: str = "tree",
    max_batch_tokens: Optional[int] = None,
) -> list[ChoiceResult]:
    """The scoring of a `ChoiceLM` (its ``score_batch``): check every request and build its trie
    (``lm.build_tree``), evaluate all the tries with ONE call of ``evaluate`` (default
    ``lm.evaluate_trees``, given ``max_batch_tokens`` when set), then normalize and apply the priors.
    ``evaluate`` may be another order of evaluation of the same numbers (the program executor walks the trie
    depth-first through ``lm.greedy``)."""
    if evaluate is None:
        evaluate = (
            lm.evaluate_trees
            if max_batch_tokens is None
            else partial(lm.evaluate_trees, max_batch_tokens=max_batch_tokens)
        )
    checked, built = check_requests(lm, requests, build=lambda c: lm.checked_tree(c.prompt, c.choices, c.end))
    jobs = [(prompt_tokens, tree) for prompt_tokens, tree, _ in built]
    logprobs = evaluate(jobs)
    unconditional = _unconditional(lm, checked, jobs, evaluate)
    info = {"batch": len(jobs)} if len(jobs) > 1 else {}
    results = []
    for k, (c, (_, tree), lp) in enumerate(zip(checked, jobs, logprobs)):
        tree.set_logprobs(lp)
        results.append(
            finish(
                c,
                tree.choice_logprobs(),
                unconditional.get(k),
                tree=tree,
                strategy=strategy,
                info=dict(info),
                is_greedy=tree.is_greedy(),
            )
        )
    return results


def _unconditional(
    lm: Any, checked: list[CheckedRequest], jobs: list[TreeJob], evaluate: Evaluator
) -> dict[int, list[list[float]]]:
    """``pmi``: the choices' log-probs after ``lm.unconditional_tokens()``, once per set of choice tokens (one
    ``evaluate`` call for the sets this batch adds), kept in ``lm.unconditional_cache`` (an `LRU`)."""
    wanted = [k for k, c in enumerate(checked) if c.normalization == "pmi"]
    if not wanted:
        return {}
    cache = lm.unconditional_cache
    context = list(lm.unconditional_tokens())
    keys = {
        k: (tuple(context), tuple(tuple(jobs[k][1].skeleton[n].token for n in path) for path in jobs[k][1].paths))
        for k in wanted
    }
    found: dict[tuple, list[list[float]]] = {}
    for k in wanted:
        value = cache.get(keys[k])
        if value is not None:
            found[keys[k]] = value
    missing = list(dict.fromkeys(keys[k] for k in wanted if keys[k] not in found))
    if missing:
        trees = [TokenChoiceTree([list(p) for p in key[1]]) for key in missing]
        for key, tree, lp in zip(missing, trees, evaluate([(list(context), t) for t in trees])):
            found[key] = cache[key] = tree.choice_logprobs(lp)
    return {k: [list(x) for x in found[keys[k]]] for k in wanted}


def shared_prefix(jobs: Sequence[TreeJob]) -> int:
    """Length of the token prefix every job's prompt shares, leaving each prompt at least its last token
    (batch primitives evaluate it once)."""
    first = jobs[0][0]
    shared = min(len(prompt_tokens) for prompt_tokens, _ in jobs) - 1
    for prompt_tokens, _ in jobs[1:]:
        shared = min(shared, common_prefix_length(first, prompt_tokens))
    return max(shared, 0)


def finish(
    request: CheckedRequest,
    token_logprobs: list[list[float]],
    unconditional: Optional[list[list[float]]] = None,
    **fields: Any,
) -> ChoiceResult:
    """The `ChoiceResult` of a checked request from its per-token log-probs: normalization, then the prior."""
    scores = normalize_scores(token_logprobs, request.choices, request.normalization, unconditional)
    return ChoiceResult(
        list(request.choices),
        token_logprobs,
        scores,
        request.normalization,
        unconditional_logprobs=unconditional,
        prior=request.prior,
        **fields,
    )


# --- token-level requests ------------------------------------------------------------------------------


def score_tokens(
    lm: Any,
    jobs: Iterable[tuple[Sequence[int], Sequence[Sequence[int]]]],
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Optional[bool] = None,
    total: Optional[int] = None,
) -> Iterator[list[list[float]]]:
    """Per-token log-probs of pre-tokenized requests, for callers with their own tokenization rule (the CAPPr
    drop-in, `autocog.cappr`): each job is (prompt tokens, one token list per choice); yields ``[j][k]`` = log
    P(token k of choice j | prompt + choice j's tokens before k), in order. Each job's choices become one
    `TokenChoiceTree` and ``batch_size`` jobs go to ONE ``lm.evaluate_trees`` call (a `ChoiceLM`: the
    packed trie pass). Checks, before the model runs on a batch: a non-empty prompt, non-empty choices,
    the context length. Choices with the same tokens are allowed (they share a path).

    >>> next(score_tokens(lm, [([1, 5, 9], [[4], [4, 7]])]))      # doctest: +SKIP
    [[-0.3], [-0.3, -2.1]]
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if total is None and hasattr(jobs, "__len__"):
        total = len(jobs)  # type: ignore[arg-type]
    bar = _progress_bar(total, progress)
    try:
        batch: list[TreeJob] = []
        for prompt_tokens, choice_tokens in jobs:
            batch.append(_token_job(lm, prompt_tokens, choice_tokens, len(batch)))
            if len(batch) >= batch_size:
                yield from _evaluate_token_jobs(lm, batch, bar)
                batch = []
        if batch:
            yield from _evaluate_token_jobs(lm, batch, bar)
    finally:
        if bar is not None:
            bar.close()


def _token_job(lm: Any, prompt_tokens: Sequence[int], choice_tokens: Sequence[Sequence[int]], index: int) -> TreeJob:
    prompt = [int(t) for t in prompt_tokens]
    if not prompt:
        raise InvalidPromptError(f"job {index}: the prompt has no tokens (and no BOS): nothing to condition on")
    if not choice_tokens:
        raise InvalidChoicesError(f"job {index}: no choices")
    tree = TokenChoiceTree([[int(t) for t in tokens] for tokens in choice_tokens])
    check_context(len(prompt) + tree.max_depth, lm.n_ctx, "prompt plus the longest choice")
    return prompt, tree


def _evaluate_token_jobs(lm: Any, batch: list[TreeJob], bar) -> list[list[list[float]]]:
    results = [tree.choice_logprobs(lp) for (_, tree), lp in zip(batch, lm.evaluate_trees(batch))]
    if bar is not None:
        bar.update(len(batch))
    return results


# --- the stream -----------------------------------------------------------------------------------------


def score(
    lm: LM,
    requests: Iterable[ScoreRequest],
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Optional[bool] = None,
    total: Optional[int] = None,
    max_batch_tokens: Optional[int] = None,
) -> Iterator[ChoiceResult]:
    """Yield one `ChoiceResult` per request, in order, scoring ``batch_size`` requests per ``lm.score_batch``
    call (which bounds memory). ``progress``: a tqdm bar on stderr (None: shown for 50+ requests on a
    terminal; ``total`` is its length when ``requests`` has no ``len``). ``max_batch_tokens``: this call's
    token budget per packed pass (None: the backend's own; see the module docstring)."""
    limits = _limits(batch_size, max_batch_tokens)
    bar = _progress_bar(_total(requests, total), progress)
    try:
        for batch in _batches(requests, batch_size):
            priors = _priors(batch)
            yield from _finish_batch(lm, batch, lm.score_batch(batch, **limits), priors, bar)
    finally:
        if bar is not None:
            bar.close()


async def ascore(
    lm: LM,
    requests: Iterable[ScoreRequest],
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Optional[bool] = None,
    total: Optional[int] = None,
    max_batch_tokens: Optional[int] = None,
) -> AsyncIterator[ChoiceResult]:
    """`score` for the async API: ``async for result in ascore(lm, requests)``, the same results in the same
    order, each batch awaited through ``lm.ascore_batch`` (docs/async.md)."""
    limits = _limits(batch_size, max_batch_tokens)
    bar = _progress_bar(_total(requests, total), progress)
    try:
        for batch in _batches(requests, batch_size):
            priors = _priors(batch)
            for result in _finish_batch(lm, batch, await lm.ascore_batch(batch, **limits), priors, bar):
                yield result
    finally:
        if bar is not None:
            bar.close()


def _limits(batch_size: int, max_batch_tokens: Optional[int]) -> dict[str, int]:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if max_batch_tokens is not None and (
        not isinstance(max_batch_tokens, int) or isinstance(max_batch_tokens, bool) or max_batch_tokens < 1
    ):
        raise ValueError(f"max_batch_tokens must be a positive int or None, got {max_batch_tokens!r}")
    return {} if max_batch_tokens is None else {"max_batch_tokens": max_batch_tokens}


def _total(requests: Iterable[ScoreRequest], total: Optional[int]) -> Optional[int]:
    if total is None and hasattr(requests, "__len__"):
        return len(requests)  # type: ignore[arg-type]
    return total


def _batches(requests: Iterable[ScoreRequest], batch_size: int) -> Iterator[list[ScoreRequest]]:
    batch: list[ScoreRequest] = []
    for request in requests:
        batch.append(request)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _priors(batch: list[ScoreRequest]) -> list[Optional[np.ndarray]]:
    return [None if r.prior is None else check_prior(r.prior, len(check_choices(r.choices))) for r in batch]


def _finish_batch(
    lm: LM, batch: list[ScoreRequest], results: list[ChoiceResult], priors: list[Optional[np.ndarray]], bar
) -> list[ChoiceResult]:
    if len(results) != len(batch):
        raise RuntimeError(f"{type(lm).__name__}.score_batch returned {len(results)} results for {len(batch)} requests")
    for result, prior in zip(results, priors):
        if prior is not None and result.prior is None:  # a backend's own score_batch: the layer adds the prior
            result.prior = prior
    if bar is not None:
        bar.update(len(batch))
    return results


def _progress_bar(total: Optional[int], progress: Optional[bool]):
    if progress is None:
        progress = total is not None and total >= PROGRESS_THRESHOLD and sys.stderr.isatty()
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency, but the bar is optional
        return None
    return tqdm(total=total, unit="prompt", desc="scoring", file=sys.stderr)
