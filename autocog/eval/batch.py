"""Score many prompts at once: probabilities over choices and predictions, as numpy arrays.

The batch counterpart of `LM.choice_distribution` (CAPPr's ``predict_proba`` / ``predict`` /
``*_examples``, in this project's terms). The numbers are those of one ``lm.choice_distribution(prompt,
choices, normalization)`` call per prompt (equal up to float32 rounding on the packed path); only the cost differs.

How it is batched: every function here goes through the scoring layer (`autocog.lm.scoring.score`), which
hands ``batch_size`` prompts at a time to the backend's batch primitive (`LM.score_batch`):

* `TfLM` (transformers): the prompts of a batch go through one forward pass; the prefix all of them share
  (e.g. few-shot examples) is evaluated once, in the model's prefix KV cache, and each prompt's rest and
  its choice trie fill one row, with a tree attention mask: each prompt token and each unique choice token
  is evaluated once, whatever the number of choices. Memory is bounded by ``batch_size`` prompts,
  ``max_batch_tokens`` (rows x padded row length: the call's keyword, else the model's own
  `TfLM.max_batch_tokens`, default `autocog.lm.tf.model.DEFAULT_MAX_BATCH_TOKENS`) and a logits budget; a pass
  that runs out of memory is split in halves instead of failing (see `TfLM.evaluate_trees`).
* `LLaMa` (llama.cpp): the prompts of a batch go through one ``llama_decode`` (per ``n_batch`` tokens),
  one sequence per choice trie leaf, the shared prefix decoded once (see `LLaMa.evaluate_trees`).
* Any other backend: its ``score_batch`` (by default one ``choice_distribution`` per prompt).

Conventions: ``choices`` is one list shared by every prompt, or one list per prompt. Probabilities come
back as a 2-D array ``[n_prompts, n_choices]`` when every prompt has as many choices, else as a list of
1-D arrays (ragged); a single ``str`` prompt gives a 1-D array. ``prior`` (optional) gives a weight per
choice: the posterior is ``probs * prior`` renormalized, computed in log space. Predictions are choice
indices (``np.int64``), like `LM.choose`.

>>> predict_proba(lm, ["2+2=", "3+3="], ["4", "6"])        # doctest: +SKIP
array([[0.91, 0.09],
       [0.12, 0.88]])
>>> predict(lm, ["2+2=", "3+3="], ["4", "6"], prior=[0.5, 0.5])   # doctest: +SKIP
array([0, 1])
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence, Union, cast

import numpy as np

from autocog.core.chat import Messages, check_messages, is_messages
from autocog.core.normalization import apply_prior, check_normalization, check_prior, softmax
from autocog.core.types import ChoiceResult, ScoreRequest
from autocog.errors import InvalidChoicesError, InvalidPromptError
from autocog.lm.base import LM
from autocog.lm.scoring import DEFAULT_BATCH_SIZE, ascore, score

Choices = Union[Sequence[str], Sequence[Sequence[str]]]
Prior = Union[None, Sequence[float], Sequence[Sequence[float]], np.ndarray]
Prompt = Union[str, Messages]  # a text, or a list of chat messages (rendered by the backend)
Prompts = Union[Prompt, Sequence[Prompt]]

__all__ = [
    "Example",
    "apredict",
    "apredict_proba",
    "apply_prior",
    "check_prior",
    "choice_distributions",
    "iter_choice_distributions",
    "predict",
    "predict_examples",
    "predict_proba",
    "predict_proba_examples",
]


@dataclass
class Example:
    """One prompt with its own choices and, optionally, a prior over them.

    >>> Example("The sky is", [" blue", " green"], prior=[0.9, 0.1])
    Example(prompt='The sky is', choices=[' blue', ' green'], prior=[0.9, 0.1])
    """

    prompt: str
    choices: Sequence[str]
    prior: Optional[Sequence[float]] = None


# --- public API ----------------------------------------------------------------------------------------


def predict_proba(
    lm: LM,
    prompts: Prompts,
    choices: Choices,
    prior: Prior = None,
    normalization: Optional[str] = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Optional[bool] = None,
    end: Optional[str] = None,
    max_batch_tokens: Optional[int] = None,
) -> Union[np.ndarray, list[np.ndarray]]:
    """Probability of each choice for each prompt.

    ``prompts``: a list of strings (or one string). ``choices``: one list shared by all prompts, or a list
    of lists, one per prompt. ``prior``: per-choice weights (one list shared, or one per prompt), multiplied
    into the probabilities, then renormalized. ``normalization``: ``sum`` / ``mean`` / ``char`` / ``pmi``
    (default: ``lm.default_normalization``, ``sum``). ``batch_size``: prompts per forward pass (bounds
    memory). ``progress``: a tqdm bar on stderr; ``None`` shows it on runs of 50+ prompts on a terminal.
    ``end``: an optional text scored after every choice (see `ChoiceLM`). ``max_batch_tokens``: the token
    budget of one packed pass for this call only (None: the model's own, `TfLM.max_batch_tokens`); it is
    handed to the backend, the model is left as it is.

    Returns ``[n_prompts, n_choices]`` floats (rows sum to 1), a list of 1-D arrays if the choice lists
    differ in length, or one 1-D array for a single ``str`` prompt.

    >>> predict_proba(lm, ["The sky is", "Grass is"], [" blue", " green"]).round(2)   # doctest: +SKIP
    array([[0.8, 0.2],
           [0.3, 0.7]])
    """
    single, prompt_list, choice_lists, priors = _prepare(prompts, choices, prior)
    results = iter_choice_distributions(
        lm,
        prompt_list,
        choice_lists,
        normalization=normalization,
        batch_size=batch_size,
        progress=progress,
        end=end,
        max_batch_tokens=max_batch_tokens,
        priors=priors,
    )
    return _shape(_all_probs(results), single)


def predict(
    lm: LM,
    prompts: Prompts,
    choices: Choices,
    prior: Prior = None,
    normalization: Optional[str] = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Optional[bool] = None,
    end: Optional[str] = None,
    max_batch_tokens: Optional[int] = None,
) -> Union[np.ndarray, int]:
    """Index of the most probable choice for each prompt (after the prior): ``np.int64`` array of
    ``n_prompts``, or an ``int`` for a single ``str`` prompt. Same arguments as `predict_proba`.

    >>> predict(lm, ["The sky is", "Grass is"], [" blue", " green"])     # doctest: +SKIP
    array([0, 1])
    """
    probs = predict_proba(lm, prompts, choices, prior, normalization, batch_size, progress, end, max_batch_tokens)
    return _predictions(prompts, probs)


def predict_proba_examples(
    lm: LM,
    examples: Iterable[Any],
    normalization: Optional[str] = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Optional[bool] = None,
    end: Optional[str] = None,
    max_batch_tokens: Optional[int] = None,
) -> Union[np.ndarray, list[np.ndarray]]:
    """`predict_proba` over examples: `Example` objects, or any objects / mappings with ``prompt``,
    ``choices`` and optional ``prior``. Returns a 2-D array, or a list of 1-D arrays when ragged.

    >>> predict_proba_examples(lm, [Example("1+1=", ["2", "3"]), Example("Sky:", [" blue", " red", " ?"])])  # doctest: +SKIP
    [array([0.97, 0.03]), array([0.7, 0.2, 0.1])]
    """
    prompts, choices, priors = _unpack_examples(examples)
    return predict_proba(lm, prompts, choices, priors, normalization, batch_size, progress, end, max_batch_tokens)


def predict_examples(
    lm: LM,
    examples: Iterable[Any],
    normalization: Optional[str] = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Optional[bool] = None,
    end: Optional[str] = None,
    max_batch_tokens: Optional[int] = None,
) -> np.ndarray:
    """Index of the most probable choice of each example (``np.int64`` array); see `predict_proba_examples`."""
    return _best(predict_proba_examples(lm, examples, normalization, batch_size, progress, end, max_batch_tokens))


def choice_distributions(
    lm: LM,
    prompts: Sequence[Prompt],
    choices: Choices,
    *,
    normalization: Optional[str] = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Optional[bool] = None,
    end: Optional[str] = None,
    max_batch_tokens: Optional[int] = None,
) -> list[ChoiceResult]:
    """The full `ChoiceResult` of every prompt (scores, per-token log-probs, tree), batched like `predict_proba`.

    >>> [r.choice for r in choice_distributions(lm, ["The sky is"], [" blue", " green"])]   # doctest: +SKIP
    [' blue']
    """
    _, prompt_list, choice_lists, _ = _prepare(prompts, choices, None)
    return list(
        iter_choice_distributions(
            lm,
            prompt_list,
            choice_lists,
            normalization=normalization,
            batch_size=batch_size,
            progress=progress,
            end=end,
            max_batch_tokens=max_batch_tokens,
        )
    )


def iter_choice_distributions(
    lm: LM,
    prompts: Sequence[Prompt],
    choice_lists: Sequence[Sequence[str]],
    *,
    normalization: Optional[str] = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Optional[bool] = None,
    end: Optional[str] = None,
    max_batch_tokens: Optional[int] = None,
    priors: Optional[Sequence[Optional[Sequence[float] | np.ndarray]]] = None,
) -> Iterator[ChoiceResult]:
    """Yield one `ChoiceResult` per prompt, in order, building trees one batch at a time (memory stays flat
    however many prompts there are). ``choice_lists[i]`` are the choices of ``prompts[i]``; ``priors[i]``
    (optional) its prior, applied to ``result.probs``."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if len(prompts) != len(choice_lists):
        raise ValueError(f"{len(prompts)} prompts but {len(choice_lists)} lists of choices")
    requests = _requests(lm, prompts, choice_lists, normalization, end, priors)
    yield from score(lm, requests, batch_size, progress, max_batch_tokens=max_batch_tokens)


async def apredict_proba(
    lm: LM,
    prompts: Prompts,
    choices: Choices,
    prior: Prior = None,
    normalization: Optional[str] = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    end: Optional[str] = None,
    max_batch_tokens: Optional[int] = None,
) -> Union[np.ndarray, list[np.ndarray]]:
    """`predict_proba` awaited (the same arguments but ``progress``, the same arrays): each batch through
    `autocog.lm.scoring.ascore` (docs/async.md).

    >>> await apredict_proba(lm, ["The sky is", "Grass is"], [" blue", " green"])   # doctest: +SKIP
    """
    single, prompt_list, choice_lists, priors = _prepare(prompts, choices, prior)
    requests = _requests(lm, prompt_list, choice_lists, normalization, end, priors)
    probs = [r.probs async for r in ascore(lm, requests, batch_size, False, max_batch_tokens=max_batch_tokens)]
    return _shape(probs, single)


async def apredict(
    lm: LM,
    prompts: Prompts,
    choices: Choices,
    prior: Prior = None,
    normalization: Optional[str] = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    end: Optional[str] = None,
    max_batch_tokens: Optional[int] = None,
) -> Union[np.ndarray, int]:
    """`predict` awaited; see `apredict_proba`."""
    probs = await apredict_proba(lm, prompts, choices, prior, normalization, batch_size, end, max_batch_tokens)
    return _predictions(prompts, probs)


def _requests(
    lm: LM,
    prompts: Sequence[Prompt],
    choice_lists: Sequence[Sequence[str]],
    normalization: Optional[str],
    end: Optional[str],
    priors: Optional[Sequence[Any]],
) -> list[ScoreRequest]:
    normalization = check_normalization(normalization or lm.default_normalization)
    priors = list(priors) if priors is not None else [None] * len(prompts)
    return [ScoreRequest(p, c, normalization, end, w) for p, c, w in zip(prompts, choice_lists, priors)]


# --- input shapes --------------------------------------------------------------------------------------


def _is_choice_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str) and all(isinstance(c, str) for c in value)


def _prepare(
    prompts: Prompts, choices: Choices, prior: Prior
) -> tuple[bool, list[Any], list[list[str]], list[Optional[np.ndarray]]]:
    """(single prompt?, prompts, one choice list per prompt, one prior or None per prompt), checked. A prompt
    may be a list of chat messages (rendered by the backend, see `autocog.core.chat`)."""
    single = isinstance(prompts, str) or is_messages(prompts)
    prompt_list: list[Any]
    if single:
        prompt_list = [prompts]
    elif isinstance(prompts, (Sequence, np.ndarray)):
        prompt_list = list(prompts)
    else:
        raise InvalidPromptError(f"prompts must be a str or a list of str, not {type(prompts).__name__}")
    for i, p in enumerate(prompt_list):
        if is_messages(p):
            check_messages(p)
        elif not isinstance(p, str):
            raise InvalidPromptError(f"prompt {i} is a {type(p).__name__}, not a str or a list of chat messages")
    if isinstance(choices, str) or not isinstance(choices, Sequence) or len(choices) == 0:
        raise InvalidChoicesError("choices must be a non-empty list of strings, or one such list per prompt")
    choice_lists: list[list[str]]
    if all(isinstance(c, str) for c in choices):
        shared = True
        choice_lists = [cast(list[str], list(choices))] * len(prompt_list)
    elif all(_is_choice_list(c) for c in choices):
        shared = False
        if single:
            raise InvalidChoicesError("a single prompt takes one list of choices, not a list of lists")
        if len(choices) != len(prompt_list):
            raise InvalidChoicesError(f"{len(prompt_list)} prompts but {len(choices)} lists of choices")
        choice_lists = [list(c) for c in choices]
    else:
        raise InvalidChoicesError(
            "choices must be a list of strings (shared by every prompt) or a list of such "
            "lists (one per prompt), not a mix"
        )
    return single, prompt_list, choice_lists, _prepare_prior(prior, choice_lists, shared)


def _prepare_prior(prior: Prior, choice_lists: list[list[str]], shared: bool) -> list[Optional[np.ndarray]]:
    """One checked prior (a float array) or None per prompt: ``prior`` is one list for every prompt or one
    per prompt (see `_prepare`)."""
    n = len(choice_lists)
    if prior is None:
        return [None] * n
    array = None
    try:
        array = np.asarray(prior, dtype=np.float64)
    except (TypeError, ValueError):
        pass  # ragged: one list per prompt
    if array is not None and array.ndim == 1:
        # one prior for every prompt: each prompt must have as many choices
        for c in choice_lists:
            check_prior(array, len(c))
        return [array] * n
    per_prompt = list(prior)
    if len(per_prompt) != n:
        raise ValueError(f"{n} prompts but {len(per_prompt)} priors")
    out: list[Optional[np.ndarray]] = []
    for i, (p, c) in enumerate(zip(per_prompt, choice_lists)):
        if p is None:
            out.append(None)
            continue
        try:
            out.append(check_prior(p, len(c)))
        except ValueError as error:
            raise ValueError(f"prior of prompt {i}: {error}") from None
    return out


def _unpack_examples(examples: Iterable[Any]) -> tuple[list[str], list[list[str]], Optional[list]]:
    prompts, choices, priors = [], [], []
    for i, example in enumerate(examples):
        if isinstance(example, Mapping):
            get = example.get
        else:

            def get(key, default=None, _e=example):
                return getattr(_e, key, default)

        prompt, example_choices = get("prompt"), get("choices")
        if prompt is None or example_choices is None:
            raise ValueError(f"example {i} needs a 'prompt' and 'choices' (got {type(example).__name__})")
        if not _is_choice_list(example_choices):
            raise InvalidChoicesError(f"example {i}: choices must be a list of strings")
        prompts.append(prompt)
        choices.append(list(example_choices))
        priors.append(get("prior"))
    if not prompts:
        raise ValueError("no examples")
    return prompts, choices, (priors if any(p is not None for p in priors) else None)


def _predictions(prompts: Prompts, probs: Union[np.ndarray, list[np.ndarray]]) -> Union[np.ndarray, int]:
    """`predict`'s answer from `predict_proba`'s: one index for a single prompt, else `_best`."""
    if isinstance(prompts, str) or is_messages(prompts):
        return int(np.argmax(probs))
    return _best(probs)


def _best(probs: Union[np.ndarray, list[np.ndarray]]) -> np.ndarray:
    """The index of each row's most probable choice (``np.int64``)."""
    return np.array([int(np.argmax(p)) for p in probs], dtype=np.int64)


def _all_probs(results: Iterator[ChoiceResult], chunk: int = 64) -> list[np.ndarray]:
    """``[r.probs for r in results]``; ``chunk`` results at a time with no prior and as many choices: one `softmax`
    over their rows (the same numbers, one call instead of one per result)."""
    out: list[np.ndarray] = []
    while batch := list(islice(results, chunk)):
        if all(r.prior is None for r in batch) and len({len(r.scores) for r in batch}) == 1:
            out.extend(softmax(np.stack([r.scores for r in batch])))
        else:
            out.extend(r.probs for r in batch)
    return out


def _shape(probs: list[np.ndarray], single: bool) -> Union[np.ndarray, list[np.ndarray]]:
    if single:
        return probs[0]
    if len({len(p) for p in probs}) <= 1:
        return np.stack(probs) if probs else np.zeros((0, 0))
    return probs
