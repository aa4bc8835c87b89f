"""``cappr.llama_cpp.classify`` on autocog: the same functions, signatures, defaults and outputs, for a
``llama_cpp.Llama``, scored by `autocog.lm.LLaMa` (the weights are shared, not reloaded; LLaMa evaluates in its
own llama.cpp context, so the ``Llama``'s state is CAPPr's alone).

Each prompt's completions are one token trie: the prompt is decoded once (its shared prefix kept in LLaMa's
prefix cache) and every unique completion token once, in one ``llama_decode`` per prompt. The cache is
CAPPr's: `cache_model` / `cache` evaluate a prefix in the ``Llama`` itself (``model.n_tokens``), and with
``reset_model=False`` those tokens go in front of every prompt; ``reset_model=True`` (the default) resets
the ``Llama`` before and after, as CAPPr does.

>>> from autocog.cappr.llama_cpp.classify import predict       # doctest: +SKIP
>>> predict(["Ice cream is"], ("in the freezer", "on the stove"), model=llama_cpp.Llama("model.gguf"))  # doctest: +SKIP
['in the freezer']
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Literal, Optional, Sequence, Union

import numpy as np

from autocog.cappr import checks, core
from autocog.core.lru import LRU
from autocog.lm.llama import LLaMa
from autocog.lm.scoring import DEFAULT_BATCH_SIZE

WRAPPERS: LRU[int, tuple[Any, LLaMa]] = LRU(4)  # id of a Llama -> (it, its LLaMa)


@dataclass
class LlamaRule:
    """CAPPr's tokenization with a ``llama_cpp.Llama`` (`autocog.cappr.core.TokenRule`); the cached prefix
    is the ``Llama``'s evaluated tokens."""

    lm: LLaMa
    model: Any

    def __post_init__(self):
        self.needs_space = checks.needs_prepended_space(
            lambda text: self.model.tokenize(text.encode()), self.model.token_bos()
        )
        self.prefix = [int(t) for t in self.model.input_ids[: self.model.n_tokens]]
        self.in_cache = bool(self.prefix)

    def prompt_tokens(self, prompts: Sequence[str]) -> list[list[int]]:
        return [self.prefix + self.model.tokenize(p.encode(), add_bos=not self.prefix) for p in prompts]

    def fragment_tokens(self, texts: Sequence[str]) -> list[list[int]]:
        return self.text_tokens(texts, add_bos=False)

    def text_tokens(self, texts: Sequence[str], add_bos: bool) -> list[list[int]]:
        return [self.model.tokenize(t.encode(), add_bos=add_bos) for t in texts]


def lm_for(model: Any) -> LLaMa:
    """The `LLaMa` over ``model``, made once per ``Llama`` (kept for the 4 last ones)."""
    found = WRAPPERS.get(id(model))
    if found is None or found[0] is not model:
        found = WRAPPERS[id(model)] = (model, LLaMa(model=model))
    return found[1]


@contextmanager
def scorer(model: Any, reset_model: bool) -> Iterator[core.TokenScorer]:
    """A `TokenScorer` for ``model``, made on first use; with ``reset_model`` the ``Llama`` is reset then and
    after the call (CAPPr)."""

    def build() -> LlamaRule:
        if reset_model:
            model.reset()
        return LlamaRule(lm_for(model), model)

    s = core.TokenScorer(build)
    try:
        yield s
    finally:
        if reset_model and "rule" in vars(s):
            model.reset()


def batch(show_progress_bar: Optional[bool]) -> dict:
    return {"batch_size": DEFAULT_BATCH_SIZE, "progress": show_progress_bar}


def token_logprobs(
    texts: Union[str, Sequence[str]],
    model: Any,
    end_of_prompt: Literal[" ", ""] = " ",
    show_progress_bar: Optional[bool] = None,
    add_bos: bool = False,
    **kwargs: Any,
) -> Union[list, list[list]]:
    """Each text's token log-probs given the tokens before it (the first one None); ``end_of_prompt`` goes in
    front of each text, BOS only with ``add_bos``. Resets the ``Llama`` afterwards, as CAPPr does."""
    with scorer(model, reset_model=True) as s:
        return core.token_logprobs(s, texts, end_of_prompt, add_bos, **batch(show_progress_bar))


def cache_model(model: Any, prefix: str) -> Any:
    """Evaluate ``prefix`` in the ``Llama`` (BOS in front if nothing is cached yet) so that later calls with
    ``reset_model=False`` score every prompt after it (joined by " "). Returns ``model``."""
    if prefix:
        model.eval(model.tokenize(prefix.encode(), add_bos=model.n_tokens == 0))
    return model


@contextmanager
def cache(model: Any, prefix: str, reset_model: bool = True) -> Iterator[Any]:
    """In this context (use ``reset_model=False`` in it) every prompt starts with ``prefix + " "``; on exit the
    ``Llama`` is back to the tokens it had (after the reset, when ``reset_model``)."""
    if reset_model:
        model.reset()
    n_tokens = model.n_tokens
    try:
        yield cache_model(model, prefix)
    finally:
        model.n_tokens = n_tokens


def log_probs_conditional(
    prompts: Union[str, Sequence[str]],
    completions: Sequence[str],
    model: Any,
    end_of_prompt: Literal[" ", ""] = " ",
    show_progress_bar: Optional[bool] = None,
    reset_model: bool = True,
    **kwargs: Any,
) -> Union[list[list[float]], list[list[list[float]]]]:
    """``[i][j][k]`` = log P(token k of completions[j] | prompts[i] + end_of_prompt + earlier tokens of
    completions[j]); ``[j][k]`` for a single str prompt."""
    with scorer(model, reset_model) as s:
        return core.log_probs_conditional(s, prompts, completions, end_of_prompt, **batch(show_progress_bar))


def log_probs_conditional_examples(
    examples: Any, model: Any, show_progress_bar: Optional[bool] = None, reset_model: bool = True
) -> Union[list[list[float]], list[list[list[float]]]]:
    """`log_probs_conditional` for `Example` (or ``cappr.Example``) objects, each with its own completions."""
    with scorer(model, reset_model) as s:
        return core.log_probs_conditional_examples(s, examples, **batch(show_progress_bar))


def predict_proba(
    prompts: Union[str, Sequence[str]],
    completions: Sequence[str],
    model: Any,
    end_of_prompt: Literal[" ", ""] = " ",
    prior: Optional[Sequence[float]] = None,
    normalize: bool = True,
    discount_completions: float = 0.0,
    log_marg_probs_completions: Optional[Sequence[Sequence[float]]] = None,
    show_progress_bar: Optional[bool] = None,
    reset_model: bool = True,
) -> np.ndarray:
    """Probability of each completion after each prompt: exp(mean token log-prob) times ``prior``, normalized
    over the completions unless ``normalize=False``. ``[n_prompts, n_completions]``, 1-D for a str prompt."""
    with scorer(model, reset_model) as s:
        return core.predict_proba(
            s,
            prompts,
            completions,
            prior=prior,
            end_of_prompt=end_of_prompt,
            normalize=normalize,
            discount_completions=discount_completions,
            log_marg_probs_completions=log_marg_probs_completions,
            **batch(show_progress_bar),
        )


def predict_proba_examples(
    examples: Any, model: Any, show_progress_bar: Optional[bool] = None, reset_model: bool = True
) -> Union[np.ndarray, list[np.ndarray]]:
    """`predict_proba` per `Example` (its prior, its ``normalize``): a 2-D array, or a list of 1-D arrays when
    the numbers of completions differ; 1-D for a single Example."""
    with scorer(model, reset_model) as s:
        return core.predict_proba_examples(s, examples, **batch(show_progress_bar))


def predict(
    prompts: Union[str, Sequence[str]],
    completions: Sequence[str],
    model: Any,
    end_of_prompt: Literal[" ", ""] = " ",
    prior: Optional[Sequence[float]] = None,
    discount_completions: float = 0.0,
    log_marg_probs_completions: Optional[Sequence[Sequence[float]]] = None,
    show_progress_bar: Optional[bool] = None,
    reset_model: bool = True,
) -> Union[str, list[str]]:
    """The most probable completion (a str) after each prompt; see `predict_proba`."""
    with scorer(model, reset_model) as s:
        return core.predict(
            s,
            prompts,
            completions,
            prior=prior,
            end_of_prompt=end_of_prompt,
            discount_completions=discount_completions,
            log_marg_probs_completions=log_marg_probs_completions,
            **batch(show_progress_bar),
        )


def predict_examples(
    examples: Any, model: Any, show_progress_bar: Optional[bool] = None, reset_model: bool = True
) -> Union[str, list[str]]:
    """The most probable completion of each `Example`; see `predict_proba_examples`."""
    with scorer(model, reset_model) as s:
        return core.predict_examples(s, examples, **batch(show_progress_bar))
