"""The CAPPr functions, written once for every backend: a backend module only builds a `Scorer` and passes
its own defaults.

A `Scorer` turns CAPPr's text conventions into log-probs: ``conditional`` (each prompt, its completions) and
``marginal`` (CAPPr's ``token_logprobs``). `TokenScorer` (transformers, llama.cpp) tokenizes as CAPPr does,
through a `TokenRule`, and scores the token tries with `autocog.lm.scoring.score_tokens`; the OpenAI module
has its own scorer over `autocog.lm.scoring.score`. What happens after is CAPPr's and shared here: the
discount, the average over tokens, the prior, ``normalize``, single inputs and Examples.

CAPPr's conventions (kept exactly): the scored tokens are ``tokens(prompt) + tokens(end_of_prompt +
completion)``, tokenized separately, BOS only in front of the prompt; ``end_of_prompt`` is dropped for
tokenizers that need no prepended space (SentencePiece); with a cached prefix the prompt is tokenized as
``" " + prompt`` without BOS after the prefix's tokens. ``predict_proba`` = exp(mean token log-prob) times the
prior, normalized unless ``normalize=False``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Optional, Protocol, Sequence, Union

import numpy as np

from autocog.cappr import checks
from autocog.cappr.example import Example, as_examples
from autocog.core.lru import LRU
from autocog.core.normalization import apply_prior, normalize_scores
from autocog.lm.scoring import score_tokens

PROGRESS_MIN = 5  # CAPPr shows a progress bar by default from 5 inputs on
LogProbs = list[list[list[float]]]


class TokenRule(Protocol):
    """How a backend tokenizes in CAPPr's way (`autocog.cappr.huggingface.classify.HfRule`, ...)."""

    lm: Any  # a ChoiceLM: its evaluate_trees runs the tries
    needs_space: bool  # BPE: completions are joined with end_of_prompt; SentencePiece: never
    in_cache: bool  # a prefix is cached: prompts follow it after " "

    def prompt_tokens(self, prompts: Sequence[str]) -> list[list[int]]:
        """The tokens of each prompt (text already prefixed by " " in a cache), the cached prefix in front."""
        ...

    def fragment_tokens(self, texts: Sequence[str]) -> list[list[int]]:
        """The tokens of each text as CAPPr tokenizes a completion: no BOS, no EOS."""
        ...

    def text_tokens(self, texts: Sequence[str], add_bos: bool) -> list[list[int]]:
        """The tokens of whole texts (CAPPr's ``token_logprobs``), with BOS when ``add_bos`` and the model adds one."""
        ...


class Scorer(Protocol):
    def conditional(
        self,
        prompts: Sequence[str],
        completions: Sequence[Sequence[str]],
        end_of_prompts: Sequence[str],
        batch_size: int = ...,
        progress: Optional[bool] = None,
    ) -> LogProbs:
        """``[i][j][k]``: log P(token k of completion j of prompt i | prompt i + end_of_prompt, tokens before k)."""
        ...

    def marginal(
        self,
        texts: Sequence[str],
        end_of_prompt: str,
        add_bos: bool,
        batch_size: int = ...,
        progress: Optional[bool] = None,
    ) -> list[list]:
        """CAPPr's ``token_logprobs``: per text, None then the log-prob of each later token given those before."""
        ...


@dataclass
class Batching:
    """``batch_size`` prompts per scoring call; ``progress``: CAPPr's ``show_progress_bar`` (None: from 5 inputs on)."""

    batch_size: int
    progress: Optional[bool] = None

    def bar(self, n: int) -> bool:
        return n >= PROGRESS_MIN if self.progress is None else bool(self.progress)


@dataclass
class TokenScorer:
    """`Scorer` of a token backend: CAPPr's tokenization (the `TokenRule` that ``build`` makes, on first use:
    after the input checks, so that a bad input fails before the model is touched), autocog's trie pass
    (`score_tokens`)."""

    build: Callable[[], TokenRule]
    memo: LRU = field(default_factory=lambda: LRU(64))  # (end_of_prompt, completions) -> their tokens

    @cached_property
    def rule(self) -> TokenRule:
        return self.build()

    def conditional(
        self,
        prompts: Sequence[str],
        completions: Sequence[Sequence[str]],
        end_of_prompts: Sequence[str],
        batch_size: int = 2,
        progress: Optional[bool] = None,
    ) -> LogProbs:
        """CAPPr's ``batch_size`` bounds its pass at ``batch_size`` prompts x their completions, one row each;
        here a prompt and all its completions are one row, so a scoring call takes ``batch_size`` x the most
        completions prompts: as many rows as CAPPr's pass (the backend's own budgets, `TfLM.max_batch_tokens`,
        still bound each packed pass)."""
        start = " " if self.rule.needs_space and self.rule.in_cache else ""
        prompt_tokens = self.rule.prompt_tokens([start + p for p in prompts])
        choice_tokens = [self.completion_tokens(c, e) for c, e in zip(completions, end_of_prompts)]
        run = Batching(batch_size, progress)
        per_call = batch_size * max(len(c) for c in choice_tokens)
        return list(
            score_tokens(self.rule.lm, list(zip(prompt_tokens, choice_tokens)), per_call, run.bar(len(prompts)))
        )

    def completion_tokens(self, completions: Sequence[str], end_of_prompt: str) -> list[list[int]]:
        end_of_prompt = end_of_prompt if self.rule.needs_space else ""
        key = (end_of_prompt, tuple(completions))
        tokens = self.memo.get(key)
        if tokens is None:
            tokens = self.memo[key] = self.rule.fragment_tokens([end_of_prompt + c for c in completions])
        return tokens

    def marginal(
        self,
        texts: Sequence[str],
        end_of_prompt: str,
        add_bos: bool,
        batch_size: int = 16,
        progress: Optional[bool] = None,
    ) -> list[list]:
        end_of_prompt = end_of_prompt if self.rule.needs_space else ""
        tokens = self.rule.text_tokens([end_of_prompt + t for t in texts], add_bos)
        longer = [i for i, t in enumerate(tokens) if len(t) > 1]
        jobs = [(tokens[i][:1], [tokens[i][1:]]) for i in longer]
        out: list[list] = [[None] for _ in texts]  # the first token has no conditional log-prob
        scored = score_tokens(self.rule.lm, jobs, batch_size, Batching(batch_size, progress).bar(len(texts)))
        for i, logprobs in zip(longer, scored):
            out[i] = [None] + list(logprobs[0])
        return out


# --- the public functions, once -------------------------------------------------------------------------


def single_or_list(prompts: Any) -> tuple[bool, list[str]]:
    """CAPPr's prompt checks: a str, or a non-empty ordered collection (list, tuple, array, Series...)."""
    checks.nonempty_and_ordered(prompts, "prompts")
    if isinstance(prompts, str):
        return True, [prompts]
    return False, list(prompts)


def token_logprobs(scorer: Scorer, texts: Any, end_of_prompt: str = " ", add_bos: bool = False, **batch: Any):
    """CAPPr's ``token_logprobs``: a 1-D list for a str, else one list per text (first entry None)."""
    checks.nonempty_and_ordered(texts, "texts")
    checks.end_of_prompt(end_of_prompt)
    single = isinstance(texts, str)
    out = scorer.marginal([texts] if single else list(texts), end_of_prompt, add_bos, **batch)
    return out[0] if single else out


def log_probs_conditional(scorer: Scorer, prompts: Any, completions: Any, end_of_prompt: str = " ", **batch: Any):
    """CAPPr's ``log_probs_conditional``: ``[i][j][k]``, or ``[j][k]`` for a single str prompt."""
    checks.completions(completions)
    checks.end_of_prompt(end_of_prompt)
    single, prompt_list = single_or_list(prompts)  # checked first, as CAPPr does
    completions = list(completions)
    out = scorer.conditional(prompt_list, [completions] * len(prompt_list), [end_of_prompt] * len(prompt_list), **batch)
    return out[0] if single else out


def log_probs_conditional_examples(scorer: Scorer, examples: Any, **batch: Any):
    """CAPPr's ``log_probs_conditional_examples``: ``[i][j][k]``, or ``[j][k]`` for a single Example."""
    single, items = as_examples(examples)
    out = scorer.conditional(
        [e.prompt for e in items], [list(e.completions) for e in items], [e.end_of_prompt for e in items], **batch
    )
    return out[0] if single else out


def posterior(logprobs: Sequence[Sequence[float]], prior: Optional[np.ndarray], normalize: bool) -> np.ndarray:
    """One prompt's probabilities: exp(mean token log-prob) times the prior, normalized (in log space) unless
    ``normalize`` is False."""
    scores = normalize_scores(logprobs, [""] * len(logprobs), "mean")
    if normalize:
        return apply_prior(scores, prior)
    return np.exp(scores) * (1.0 if prior is None else prior)


def predict_proba(
    scorer: Scorer,
    prompts: Any,
    completions: Any,
    prior: Optional[Sequence[float]] = None,
    end_of_prompt: str = " ",
    normalize: bool = True,
    discount_completions: float = 0.0,
    log_marg_probs_completions: Optional[Sequence[Sequence[float]]] = None,
    **batch: Any,
) -> np.ndarray:
    """CAPPr's ``predict_proba``: ``[n_prompts, n_completions]``, or ``[n_completions]`` for a str prompt."""
    prior_array = checks.prior(prior, len(completions))
    checks.normalize(normalize, completions)
    checks.discount(discount_completions, log_marg_probs_completions)
    logprobs = log_probs_conditional(scorer, prompts, completions, end_of_prompt, **batch)
    single = isinstance(prompts, str)
    rows = [logprobs] if single else logprobs
    if discount_completions:
        rows = discounted(
            scorer, list(completions), rows, discount_completions, log_marg_probs_completions, end_of_prompt, batch
        )
    probs = np.array([posterior(row, prior_array, normalize) for row in rows])
    return probs[0] if single else probs


def discounted(
    scorer: Scorer,
    completions: list[str],
    rows: LogProbs,
    discount: float,
    marginal: Optional[Sequence[Sequence[Optional[float]]]],
    end_of_prompt: str,
    batch: dict,
) -> list:
    """CAPPr's experimental discount: each completion token's log-prob plus ``discount`` times its log-prob
    given only the completion's earlier tokens (`token_logprobs`; the first token: 0)."""
    if marginal is None:
        marginal = scorer.marginal(completions, end_of_prompt, False, **batch)
    weights = [discount * np.array([0.0 if x is None else x for x in m], dtype=float) for m in marginal]
    return [[np.asarray(lp, dtype=float) + w for lp, w in zip(row, weights)] for row in rows]


def predict_proba_examples(scorer: Scorer, examples: Any, **batch: Any) -> Union[np.ndarray, list[np.ndarray]]:
    """CAPPr's ``predict_proba_examples``: one row per Example (each with its prior and ``normalize``); a 2-D
    array when every Example has as many completions, else a list of 1-D arrays; 1-D for a single Example."""
    single, items = as_examples(examples)
    logprobs = log_probs_conditional_examples(scorer, items, **batch)
    probs = [posterior(lp, cast_prior(e), e.normalize) for lp, e in zip(logprobs, items)]
    if single:
        return probs[0]
    return np.array(probs) if len({len(p) for p in probs}) == 1 else probs


def cast_prior(example: Example) -> Optional[np.ndarray]:
    return None if example.prior is None else np.asarray(example.prior, dtype=float)


def predict(scorer: Scorer, prompts: Any, completions: Any, **kwargs: Any) -> Union[str, list[str]]:
    """CAPPr's ``predict``: the most probable completion (a str) per prompt."""
    checks.more_than_one(completions)
    probs = predict_proba(scorer, prompts, completions, **kwargs)
    completions = list(completions)
    if isinstance(prompts, str):
        return completions[int(np.argmax(probs))]
    return [completions[int(i)] for i in np.argmax(probs, axis=1)]


def predict_examples(scorer: Scorer, examples: Any, **batch: Any) -> Union[str, list[str]]:
    """CAPPr's ``predict_examples``: the most probable completion of each Example."""
    single, items = as_examples(examples)
    probs = predict_proba_examples(scorer, items, **batch)
    best = [e.completions[int(np.argmax(p))] for e, p in zip(items, probs)]
    return best[0] if single else best
