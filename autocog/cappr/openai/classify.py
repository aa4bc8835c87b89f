"""``cappr.openai.classify`` on autocog: the same functions, signatures, defaults and outputs, for a model name
plus ``client`` (an ``openai.OpenAI``, e.g. with ``base_url=`` for a local server) or ``api_key``, scored by
`autocog.lm.OpenAI` (`autocog.lm.scoring.score`).

A prompt's completions are scored with OpenAI's strategies (echo, or a one-token completion read from the
prompt's next-token row on llama.cpp servers), ``concurrency`` requests in flight; the text scored is
``prompt + end_of_prompt + completion``, as in CAPPr, and the completion's tokens are those the server
gives that text. ``ask_if_ok=True`` counts the tokens and asks before any request.

>>> from autocog.cappr.openai.classify import predict          # doctest: +SKIP
>>> predict("Ice cream is", ("in the freezer", "on the stove"), model="gpt-3.5-turbo-instruct")  # doctest: +SKIP
'in the freezer'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional, Sequence, Union

import numpy as np

from autocog.cappr import core
from autocog.core.lru import LRU
from autocog.core.types import ScoreRequest
from autocog.errors import UserCanceledError
from autocog.lm.openai import OpenAI
from autocog.lm.scoring import DEFAULT_BATCH_SIZE, score

WRAPPERS: LRU[tuple, tuple[Any, OpenAI]] = LRU(4)  # (model, id(client), api_key) -> (client, its OpenAI)


@dataclass
class OpenAIScorer:
    """`autocog.cappr.core.Scorer` over an `OpenAI` backend; ``ask_if_ok``: confirm before the requests."""

    lm: OpenAI
    ask_if_ok: bool = False

    def conditional(
        self,
        prompts: Sequence[str],
        completions: Sequence[Sequence[str]],
        end_of_prompts: Sequence[str],
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: Optional[bool] = None,
    ) -> core.LogProbs:
        texts = [[e + c for c in cs] for cs, e in zip(completions, end_of_prompts)]
        self.confirm([p + t for p, ts in zip(prompts, texts) for t in ts])
        # the scoring layer wants distinct choices; CAPPr allows repeats: score each once, give it back per place
        requests = [ScoreRequest(p, list(dict.fromkeys(ts)), "mean") for p, ts in zip(prompts, texts)]
        run = core.Batching(batch_size, progress)
        out = []
        for ts, result in zip(texts, score(self.lm, requests, batch_size, run.bar(len(prompts)))):
            found = dict(zip(result.choices, result.token_logprobs))
            out.append([list(found[t]) for t in ts])
        return out

    def marginal(
        self,
        texts: Sequence[str],
        end_of_prompt: str,
        add_bos: bool,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: Optional[bool] = None,
    ) -> list[list]:
        texts = [end_of_prompt + t for t in texts]
        self.confirm(texts)
        out: list[list] = [[None] for _ in texts]
        heads = {}
        for i, text in enumerate(texts):
            tokens = self.lm.tokenize(text)
            head = self.lm.detokenize(tokens[:1])
            if len(tokens) > 1 and text.startswith(head) and len(head) < len(text):
                heads[i] = head
        requests = [ScoreRequest(heads[i], [texts[i][len(heads[i]) :]], "mean") for i in heads]
        for i, result in zip(
            heads, score(self.lm, requests, batch_size, core.Batching(batch_size, progress).bar(len(texts)))
        ):
            out[i] = [None] + list(result.token_logprobs[0])
        return out

    def confirm(self, texts: Sequence[str]) -> None:
        if not self.ask_if_ok:
            return
        n_tokens = sum(len(self.lm.tokenize(t)) for t in texts)
        answer = input(f"This will send {len(texts)} texts, {n_tokens} tokens, to {self.lm.model}. Proceed? (y/n): ")
        if answer.strip().lower() not in ("y", "yes"):
            raise UserCanceledError("canceled: the requests were not sent")


def scorer(model: str, client: Any = None, api_key: Optional[str] = None, ask_if_ok: bool = False) -> OpenAIScorer:
    """The `OpenAIScorer` of a model name and client arguments, its `OpenAI` made once and reused."""
    key = (model, id(client), api_key)
    found = WRAPPERS.get(key)
    if found is None or found[0] is not client:
        found = WRAPPERS[key] = (client, OpenAI(model=model, client=client, api_key=api_key))
    return OpenAIScorer(found[1], ask_if_ok)


def token_logprobs(
    texts: Union[str, Sequence[str]],
    model: str,
    client: Any = None,
    end_of_prompt: Literal[" ", ""] = " ",
    show_progress_bar: Optional[bool] = None,
    ask_if_ok: bool = False,
    api_key: Optional[str] = None,
    **kwargs: Any,
) -> Union[list, list[list]]:
    """Each text's token log-probs given the tokens before it (the first one None), ``end_of_prompt`` in front."""
    s = scorer(model, client, api_key, ask_if_ok)
    return core.token_logprobs(s, texts, end_of_prompt, False, progress=show_progress_bar)


def log_probs_conditional(
    prompts: Union[str, Sequence[str]],
    completions: Sequence[str],
    model: str,
    client: Any = None,
    end_of_prompt: Literal[" ", ""] = " ",
    show_progress_bar: Optional[bool] = None,
    ask_if_ok: bool = False,
    api_key: Optional[str] = None,
    **kwargs: Any,
) -> Union[list[list[float]], list[list[list[float]]]]:
    """``[i][j][k]`` = log P(token k of completions[j] | prompts[i] + end_of_prompt + earlier tokens of
    completions[j]); ``[j][k]`` for a single str prompt."""
    s = scorer(model, client, api_key, ask_if_ok)
    return core.log_probs_conditional(s, prompts, completions, end_of_prompt, progress=show_progress_bar)


def log_probs_conditional_examples(
    examples: Any,
    model: str,
    client: Any = None,
    show_progress_bar: Optional[bool] = None,
    ask_if_ok: bool = False,
    api_key: Optional[str] = None,
) -> Union[list[list[float]], list[list[list[float]]]]:
    """`log_probs_conditional` for `Example` (or ``cappr.Example``) objects, each with its own completions."""
    s = scorer(model, client, api_key, ask_if_ok)
    return core.log_probs_conditional_examples(s, examples, progress=show_progress_bar)


def predict_proba(
    prompts: Union[str, Sequence[str]],
    completions: Sequence[str],
    model: str,
    client: Any = None,
    prior: Optional[Sequence[float]] = None,
    end_of_prompt: Literal[" ", ""] = " ",
    normalize: bool = True,
    discount_completions: float = 0.0,
    log_marg_probs_completions: Optional[Sequence[Sequence[float]]] = None,
    show_progress_bar: Optional[bool] = None,
    ask_if_ok: bool = False,
    api_key: Optional[str] = None,
) -> np.ndarray:
    """Probability of each completion after each prompt: exp(mean token log-prob) times ``prior``, normalized
    over the completions unless ``normalize=False``. ``[n_prompts, n_completions]``, 1-D for a str prompt."""
    return core.predict_proba(
        scorer(model, client, api_key, ask_if_ok),
        prompts,
        completions,
        prior=prior,
        end_of_prompt=end_of_prompt,
        normalize=normalize,
        discount_completions=discount_completions,
        log_marg_probs_completions=log_marg_probs_completions,
        progress=show_progress_bar,
    )


def predict_proba_examples(
    examples: Any,
    model: str,
    client: Any = None,
    show_progress_bar: Optional[bool] = None,
    ask_if_ok: bool = False,
    api_key: Optional[str] = None,
) -> Union[np.ndarray, list[np.ndarray]]:
    """`predict_proba` per `Example` (its prior, its ``normalize``); see the huggingface module."""
    return core.predict_proba_examples(scorer(model, client, api_key, ask_if_ok), examples, progress=show_progress_bar)


def predict(
    prompts: Union[str, Sequence[str]],
    completions: Sequence[str],
    model: str,
    client: Any = None,
    prior: Optional[Sequence[float]] = None,
    end_of_prompt: Literal[" ", ""] = " ",
    discount_completions: float = 0.0,
    log_marg_probs_completions: Optional[Sequence[Sequence[float]]] = None,
    show_progress_bar: Optional[bool] = None,
    ask_if_ok: bool = False,
    api_key: Optional[str] = None,
) -> Union[str, list[str]]:
    """The most probable completion (a str) after each prompt; see `predict_proba`."""
    return core.predict(
        scorer(model, client, api_key, ask_if_ok),
        prompts,
        completions,
        prior=prior,
        end_of_prompt=end_of_prompt,
        discount_completions=discount_completions,
        log_marg_probs_completions=log_marg_probs_completions,
        progress=show_progress_bar,
    )


def predict_examples(
    examples: Any,
    model: str,
    client: Any = None,
    show_progress_bar: Optional[bool] = None,
    ask_if_ok: bool = False,
    api_key: Optional[str] = None,
) -> Union[str, list[str]]:
    """The most probable completion of each `Example`; see `predict_proba_examples`."""
    return core.predict_examples(scorer(model, client, api_key, ask_if_ok), examples, progress=show_progress_bar)
