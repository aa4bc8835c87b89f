"""``cappr.huggingface.classify`` on autocog: the same functions, signatures, defaults and outputs, for a
transformers ``(model, tokenizer)`` pair, scored by `autocog.lm.TfLM` (the objects are wrapped, not reloaded).

Each prompt is evaluated once and its completions as one token trie (each unique completion token once),
one row per prompt in a packed forward pass; ``batch_size`` counts CAPPr's rows (prompts x completions), so a
scoring call takes ``batch_size`` x completions prompts, within `TfLM.max_batch_tokens` per pass. CAPPr's KV
cache is replaced by that pass, so
``batch_size_completions`` and ``logits_all`` change nothing (they are checked and accepted). `cache_model` /
`cache` keep a shared prefix: its tokens go in front of every prompt, and TfLM's prefix KV cache evaluates
them once. The model runs in eval mode and without gradients; its mode is restored after each call.

>>> from autocog.cappr.huggingface.classify import predict_proba       # doctest: +SKIP
>>> predict_proba(["Ice cream is"], ("in the freezer", "on the stove"), model_and_tokenizer=(model, tokenizer))  # doctest: +SKIP
array([[0.7, 0.3]])
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Literal, Optional, Sequence, Union

import numpy as np

from autocog.cappr import checks, core
from autocog.core.lru import LRU
from autocog.errors import CacheClearedError
from autocog.lm.tf import TfLM

WRAPPERS: LRU[tuple[int, int], tuple[Any, Any, TfLM]] = LRU(4)  # (model, tokenizer) ids -> their TfLM


@dataclass(eq=False)
class CachedModel:
    """What `cache_model` returns in place of the model (CAPPr's ``_ModelWithCache``): the model and the
    tokens of the cached prefix(es); any other attribute is the model's. ``prefixes`` None: the cache was
    cleared on leaving `cache`, and the object can no longer be used."""

    model: Any
    prefixes: Optional[list[list[int]]]

    def __getattr__(self, name: str) -> Any:
        if name in ("model", "prefixes"):
            raise AttributeError(name)
        return getattr(self.model, name)


@dataclass
class HfRule:
    """CAPPr's tokenization with a transformers tokenizer (`autocog.cappr.core.TokenRule`)."""

    lm: TfLM
    tokenizer: Any
    prefixes: Optional[list[list[int]]] = None

    def __post_init__(self):
        eos = self.tokenizer.eos_token_id
        self.adds_eos = eos is not None and self.tokenizer("a")["input_ids"][-1:] == [eos]
        self.needs_space = checks.needs_prepended_space(
            lambda text: self.encode([text], special=True)[0], self.tokenizer.bos_token_id
        )
        self.in_cache = self.prefixes is not None

    def encode(self, texts: Sequence[str], special: bool) -> list[list[int]]:
        """Token ids; ``special``: as the tokenizer adds them (BOS), but never EOS (CAPPr turns it off)."""
        ids = [list(t) for t in self.tokenizer(list(texts), add_special_tokens=special)["input_ids"]]
        return [t[:-1] for t in ids] if special and self.adds_eos else ids

    def prompt_tokens(self, prompts: Sequence[str]) -> list[list[int]]:
        if self.prefixes is None:
            return self.encode(prompts, special=True)
        return [p + t for p, t in zip(broadcast(self.prefixes, len(prompts)), self.encode(prompts, special=False))]

    def fragment_tokens(self, texts: Sequence[str]) -> list[list[int]]:
        return self.encode(texts, special=False)

    def text_tokens(self, texts: Sequence[str], add_bos: bool) -> list[list[int]]:
        return self.encode(texts, special=add_bos)


def broadcast(prefixes: list[list[int]], n: int) -> list[list[int]]:
    """One prefix for every input, or one prefix per input (CAPPr's broadcast of its cached batch)."""
    if len(prefixes) == 1:
        return prefixes * n
    if len(prefixes) == n:
        return prefixes
    raise ValueError(f"Could not broadcast {len(prefixes)} cached inputs with {n} new inputs.")


def wrap(model_and_tokenizer: tuple[Any, Any]) -> tuple[HfRule, Any]:
    """(the tokenization rule over the model's `TfLM`, the plain model), reusing the TfLM of a pair seen before."""
    model, tokenizer = model_and_tokenizer
    prefixes = None
    if isinstance(model, CachedModel):
        if model.prefixes is None:
            raise CacheClearedError(
                "This model is no longer usable. It was used in a context where clear_cache_on_exit=True. If you "
                "instead meant to retain the cache for future use, then use: `cached_model_and_tokenizer = "
                "cache_model(model_and_tokenizer, prefixes)`"
            )
        model, prefixes = model.model, model.prefixes
    key = (id(model), id(tokenizer))
    found = WRAPPERS.get(key)
    if found is None or found[0] is not model or found[1] is not tokenizer:
        found = WRAPPERS[key] = (model, tokenizer, TfLM(model=model, tokenizer=tokenizer))
    return HfRule(found[2], tokenizer, prefixes), model


@contextmanager
def scorer(model_and_tokenizer: tuple[Any, Any]) -> Iterator[core.TokenScorer]:
    """A `TokenScorer` for the pair, wrapped on first use; the model runs in eval mode, its mode restored after."""
    model = strip_cache(model_and_tokenizer[0])
    training = getattr(model, "training", None)

    def build() -> HfRule:
        rule, plain = wrap(model_and_tokenizer)
        plain.eval()
        return rule

    try:
        yield core.TokenScorer(build)
    finally:
        if training is not None:
            model.train(training)


def check_batch(batch_size: int, batch_size_completions: Optional[int] = None) -> None:
    checks.batch_size(batch_size)
    checks.batch_size(batch_size_completions, "batch_size_completions", optional=True)


def token_logprobs(
    texts: Union[str, Sequence[str]],
    model_and_tokenizer: tuple[Any, Any],
    end_of_prompt: Literal[" ", ""] = " ",
    show_progress_bar: Optional[bool] = None,
    add_bos: bool = False,
    batch_size: int = 16,
    **kwargs: Any,
) -> Union[list, list[list]]:
    """Each text's token log-probs given the tokens before it (the first one None); ``end_of_prompt`` goes in
    front of each text, BOS only with ``add_bos``. A cached prefix is not used (these are marginal log-probs)."""
    check_batch(batch_size)
    with scorer((strip_cache(model_and_tokenizer[0]), model_and_tokenizer[1])) as s:
        return core.token_logprobs(s, texts, end_of_prompt, add_bos, batch_size=batch_size, progress=show_progress_bar)


def strip_cache(model: Any) -> Any:
    return model.model if isinstance(model, CachedModel) else model


def cache_model(
    model_and_tokenizer: tuple[Any, Any], prefixes: Union[str, Sequence[str]], logits_all: bool = True
) -> tuple[CachedModel, Any]:
    """The model with ``prefixes`` cached: every later prompt scored with it starts with a prefix, joined by
    " " (BPE tokenizers). One prefix for all prompts, or one per prompt. Cached again, the new prefixes follow
    the old (no BOS, no space added). Returns (cached model, the same tokenizer)."""
    checks.nonempty_and_ordered(prefixes, "prefixes")
    texts = [prefixes] if isinstance(prefixes, str) else list(prefixes)
    tokenizer = model_and_tokenizer[1]
    rule, plain = wrap(model_and_tokenizer)
    new = rule.encode(texts, special=rule.prefixes is None)
    if rule.prefixes is not None:
        old = rule.prefixes if len(rule.prefixes) == len(new) else broadcast(rule.prefixes, len(new))
        new = [o + n for o, n in zip(old, new)]
    return CachedModel(plain, new), tokenizer


@contextmanager
def cache(
    model_and_tokenizer: tuple[Any, Any],
    prefixes: Union[str, Sequence[str]],
    clear_cache_on_exit: bool = True,
    logits_all: bool = True,
) -> Iterator[tuple[CachedModel, Any]]:
    """In this context every prompt scored with the yielded (model, tokenizer) starts with ``prefixes`` + " ".
    On exit the cached model is cleared (then unusable: `CacheClearedError`) or, with
    ``clear_cache_on_exit=False``, set back to the cache the given model had (a model that had none keeps
    this context's prefixes)."""
    model = model_and_tokenizer[0]
    before = model.prefixes if isinstance(model, CachedModel) else None
    cached = cache_model(model_and_tokenizer, prefixes, logits_all=logits_all)
    try:
        yield cached
    finally:
        if clear_cache_on_exit:
            cached[0].prefixes = None
        elif before is not None:
            cached[0].prefixes = before


def log_probs_conditional(
    prompts: Union[str, Sequence[str]],
    completions: Sequence[str],
    model_and_tokenizer: tuple[Any, Any],
    end_of_prompt: Literal[" ", ""] = " ",
    show_progress_bar: Optional[bool] = None,
    batch_size: int = 2,
    batch_size_completions: Optional[int] = None,
    **kwargs: Any,
) -> Union[list[list[float]], list[list[list[float]]]]:
    """``[i][j][k]`` = log P(token k of completions[j] | prompts[i] + end_of_prompt + earlier tokens of
    completions[j]); ``[j][k]`` for a single str prompt."""
    check_batch(batch_size, batch_size_completions)
    with scorer(model_and_tokenizer) as s:
        return core.log_probs_conditional(
            s, prompts, completions, end_of_prompt, batch_size=batch_size, progress=show_progress_bar
        )


def log_probs_conditional_examples(
    examples: Any,
    model_and_tokenizer: tuple[Any, Any],
    show_progress_bar: Optional[bool] = None,
    batch_size: int = 2,
    batch_size_completions: Optional[int] = None,
) -> Union[list[list[float]], list[list[list[float]]]]:
    """`log_probs_conditional` for `Example` (or ``cappr.Example``) objects, each with its own completions."""
    check_batch(batch_size, batch_size_completions)
    with scorer(model_and_tokenizer) as s:
        return core.log_probs_conditional_examples(s, examples, batch_size=batch_size, progress=show_progress_bar)


def predict_proba(
    prompts: Union[str, Sequence[str]],
    completions: Sequence[str],
    model_and_tokenizer: tuple[Any, Any],
    prior: Optional[Sequence[float]] = None,
    end_of_prompt: Literal[" ", ""] = " ",
    normalize: bool = True,
    discount_completions: float = 0.0,
    log_marg_probs_completions: Optional[Sequence[Sequence[float]]] = None,
    show_progress_bar: Optional[bool] = None,
    batch_size: int = 2,
    batch_size_completions: Optional[int] = None,
) -> np.ndarray:
    """Probability of each completion after each prompt: exp(mean token log-prob) times ``prior``, normalized
    over the completions unless ``normalize=False``. ``[n_prompts, n_completions]``, 1-D for a str prompt."""
    check_batch(batch_size, batch_size_completions)
    with scorer(model_and_tokenizer) as s:
        return core.predict_proba(
            s,
            prompts,
            completions,
            prior=prior,
            end_of_prompt=end_of_prompt,
            normalize=normalize,
            discount_completions=discount_completions,
            log_marg_probs_completions=log_marg_probs_completions,
            batch_size=batch_size,
            progress=show_progress_bar,
        )


def predict_proba_examples(
    examples: Any,
    model_and_tokenizer: tuple[Any, Any],
    show_progress_bar: Optional[bool] = None,
    batch_size: int = 2,
    batch_size_completions: Optional[int] = None,
) -> Union[np.ndarray, list[np.ndarray]]:
    """`predict_proba` per `Example` (its prior, its ``normalize``): a 2-D array, or a list of 1-D arrays when
    the numbers of completions differ; 1-D for a single Example."""
    check_batch(batch_size, batch_size_completions)
    with scorer(model_and_tokenizer) as s:
        return core.predict_proba_examples(s, examples, batch_size=batch_size, progress=show_progress_bar)


def predict(
    prompts: Union[str, Sequence[str]],
    completions: Sequence[str],
    model_and_tokenizer: tuple[Any, Any],
    prior: Optional[Sequence[float]] = None,
    end_of_prompt: Literal[" ", ""] = " ",
    discount_completions: float = 0.0,
    log_marg_probs_completions: Optional[Sequence[Sequence[float]]] = None,
    show_progress_bar: Optional[bool] = None,
    batch_size: int = 2,
    batch_size_completions: Optional[int] = None,
) -> Union[str, list[str]]:
    """The most probable completion (a str) after each prompt; see `predict_proba`."""
    check_batch(batch_size, batch_size_completions)
    with scorer(model_and_tokenizer) as s:
        return core.predict(
            s,
            prompts,
            completions,
            prior=prior,
            end_of_prompt=end_of_prompt,
            discount_completions=discount_completions,
            log_marg_probs_completions=log_marg_probs_completions,
            batch_size=batch_size,
            progress=show_progress_bar,
        )


def predict_examples(
    examples: Any,
    model_and_tokenizer: tuple[Any, Any],
    show_progress_bar: Optional[bool] = None,
    batch_size: int = 2,
    batch_size_completions: Optional[int] = None,
) -> Union[str, list[str]]:
    """The most probable completion of each `Example`; see `predict_proba_examples`."""
    check_batch(batch_size, batch_size_completions)
    with scorer(model_and_tokenizer) as s:
        return core.predict_examples(s, examples, batch_size=batch_size, progress=show_progress_bar)
