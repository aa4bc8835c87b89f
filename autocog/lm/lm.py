"""The abstract language model every backend implements, and the scoring shared by all of them.

Conventions, for every backend:

* **Prompt/choice boundary.** A choice is a continuation of the prompt: the text scored is exactly
  ``prompt + choice``. Trailing whitespace of the prompt is moved to the front of every choice before
  tokenizing (lm-evaluation-harness does the same), because BPE tokenizers glue a space to the word
  after it: ``("Answer: ", ["Paris"])`` is scored as ``("Answer:", [" Paris"])``. A leading space in a
  choice is part of that choice, so ``" Yes"`` and ``"Yes"`` are different continuations with
  different scores.
* **BOS** is added once, in front of the prompt, when the model's tokenizer asks for it; never in front
  of a choice.
* **Scores are log-probabilities** (natural log), summed, never multiplied as probabilities.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence, Union

import numpy as np

from .errors import ContextLengthError, InvalidChoicesError, InvalidPromptError

if TYPE_CHECKING:  # pragma: no cover
    from .choice import TokenChoiceTree
    from .scoring import ScoreRequest

NORMALIZATIONS = ("sum", "mean", "char", "pmi")
DEFAULT_NORMALIZATION = "sum"

Stop = Union[str, Sequence[str], None]


@dataclass
class ChoiceResult:
    """What scoring a list of choices gives back.

    ``token_logprobs[j][k]`` is log P(token k of choice j | prompt + the tokens of choice j before k);
    ``scores[j]`` is choice j's score under ``normalization``; ``probs`` is ``softmax(scores)`` (sums to 1);
    ``index`` is the best choice. ``tree`` is the token choice tree when the backend built one, and
    ``strategy`` names how the scores were obtained (``"tree"``, ``"echo"``, ``"descent"``...).
    ``greedy[j]`` says whether choice j is the model's greedy continuation (each of its tokens the argmax of
    its next-token row, lm-eval's ``is_greedy``), None when the backend did not see the rows.

    >>> r = lm.choice_distribution("2+2=", ["4", "5"]); r.choice, r.probs   # doctest: +SKIP
    ('4', array([0.93, 0.07]))
    """

    choices: list[str]
    token_logprobs: list[list[float]]
    scores: np.ndarray
    normalization: str
    tree: Optional["TokenChoiceTree"] = None
    strategy: str = "tree"
    unconditional_logprobs: Optional[list[list[float]]] = None
    info: dict = field(default_factory=dict)
    prior: Optional[np.ndarray] = None  # weights per choice: probs is the posterior (see `apply_prior`)
    greedy: Optional[list[bool]] = None  # per choice: every token the argmax of its row (None: not known)

    @property
    def probs(self) -> np.ndarray:
        return softmax(self.scores) if self.prior is None else apply_prior(self.scores, self.prior)

    @property
    def index(self) -> int:
        return int(np.argmax(self.scores if self.prior is None else self.probs))

    @property
    def choice(self) -> str:
        return self.choices[self.index]

    @property
    def logprobs(self) -> np.ndarray:
        """Total log-probability of each choice (the ``sum`` score, whatever the normalization)."""
        return np.array([math.fsum(lp) for lp in self.token_logprobs])

    def __repr__(self) -> str:
        probs = ", ".join(f"{c!r}: {p:.3f}" for c, p in zip(self.choices, self.probs))
        return f"ChoiceResult(best={self.choice!r}, normalization={self.normalization!r}, probs={{{probs}}})"


def softmax(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    shifted = np.exp(scores - scores.max())
    return shifted / shifted.sum()


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable log_softmax of a 1-D array (same dtype out as in)."""
    logits = np.asarray(logits)
    shifted = logits - logits.max()
    return shifted - np.log(np.exp(shifted).sum())


def apply_prior(scores: np.ndarray, prior: Optional[Sequence[float]]) -> np.ndarray:
    """``softmax(scores)`` times ``prior``, renormalized, computed as ``softmax(scores + log(prior))``.

    A zero prior weight gives the choice probability 0; weights need not sum to 1.

    >>> apply_prior(np.log([0.5, 0.5]), [3, 1])
    array([0.75, 0.25])
    """
    scores = np.asarray(scores, dtype=np.float64)
    if prior is None:
        return softmax(scores)
    weights = check_prior(prior, len(scores))
    with np.errstate(divide="ignore"):
        return softmax(scores + np.log(weights))


def check_prior(prior: Sequence[float], n_choices: int) -> np.ndarray:
    """The prior as a float array, or a ValueError: it needs one finite weight >= 0 per choice, not all 0."""
    try:
        weights = np.asarray(prior, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"a prior must be a list of numbers, got {prior!r}") from error
    if weights.ndim != 1 or len(weights) != n_choices:
        raise ValueError(f"the prior has shape {weights.shape} but there are {n_choices} choices")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError(f"prior weights must be finite, >= 0 and not all 0, got {list(weights)}")
    return weights


def normalize_scores(
    token_logprobs: Sequence[Sequence[float]],
    choices: Sequence[str],
    normalization: str,
    unconditional: Optional[Sequence[Sequence[float]]] = None,
) -> np.ndarray:
    """Per-choice scores from per-token log-probs.

    ``sum``: total log-prob (AutoCog's default); ``mean``: total / number of tokens (geometric mean per token,
    CAPPr's default); ``char``: total / number of characters of the choice (lm-eval's acc_norm);
    ``pmi``: total minus the total of the same tokens scored without the prompt (``unconditional``).
    """
    check_normalization(normalization)
    sums = np.array([math.fsum(lp) for lp in token_logprobs], dtype=np.float64)
    if normalization == "sum":
        return sums
    if normalization == "mean":
        return sums / np.array([len(lp) for lp in token_logprobs], dtype=np.float64)
    if normalization == "char":
        return sums / np.array([max(len(c), 1) for c in choices], dtype=np.float64)
    if unconditional is None:
        raise ValueError("normalization 'pmi' needs the unconditional log-probs of the choices")
    return sums - np.array([math.fsum(lp) for lp in unconditional], dtype=np.float64)


def check_normalization(normalization: str) -> str:
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {normalization!r}: expected one of {', '.join(NORMALIZATIONS)}")
    return normalization


def check_prompt(prompt: Any) -> str:
    if not isinstance(prompt, str):
        raise InvalidPromptError(f"the prompt must be a str, not {type(prompt).__name__}")
    return prompt


def check_choices(choices: Any) -> list[str]:
    """The choices as a list, or an `InvalidChoicesError` naming what is wrong with them."""
    if isinstance(choices, str) or not isinstance(choices, Sequence):
        raise InvalidChoicesError(f"choices must be a list of strings, not {type(choices).__name__}")
    choices = list(choices)
    if not choices:
        raise InvalidChoicesError("the list of choices is empty")
    seen: dict[str, int] = {}
    for j, choice in enumerate(choices):
        if not isinstance(choice, str):
            raise InvalidChoicesError(f"choice {j} is a {type(choice).__name__}, not a str: {choice!r}")
        if not choice:
            raise InvalidChoicesError(f"choice {j} is the empty string")
        if choice in seen:
            raise InvalidChoicesError(f"choice {j} ({choice!r}) duplicates choice {seen[choice]}")
        seen[choice] = j
    return choices


def split_boundary(prompt: str, choices: Sequence[str]) -> tuple[str, list[str]]:
    """Move the prompt's trailing whitespace to the front of every choice (see the module docstring).

    >>> split_boundary("Answer: ", ["Paris", "London"])
    ('Answer:', [' Paris', ' London'])
    """
    stripped = prompt.rstrip()
    moved = prompt[len(stripped):]
    return stripped, [moved + c for c in choices]


def check_context(n_tokens: int, n_ctx: Optional[int], what: str = "prompt") -> None:
    if n_ctx is not None and n_tokens > n_ctx:
        raise ContextLengthError(
            f"the {what} needs {n_tokens} tokens but the model's context holds {n_ctx} tokens"
        )


def as_stop_list(stop: Stop) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        stops = [stop]
    else:
        stops = list(stop)
    for s in stops:
        if not isinstance(s, str) or not s:
            raise ValueError(f"stop strings must be non-empty str, got {s!r}")
    return stops


def find_stop(text: str, stops: Sequence[str], start: int = 0) -> Optional[int]:
    """End index (exclusive) of the earliest stop string in ``text[start:]``, or None.

    The completion contract: the text returned ends with the stop string exactly when generation
    ended on it, so callers keep ``text[:find_stop(...)]``.
    """
    best: Optional[int] = None
    for s in stops:
        i = text.find(s, start)
        if i >= 0 and (best is None or i + len(s) < best):
            best = i + len(s)
    return best


class LM(ABC):
    """A language model: text in, tokens, completions and choices out.

    A backend implements the four abstract methods. ``complete`` returns the generated text; when
    generation stopped on a stop string, the returned text ends with that string (AutoCog's contract),
    otherwise (EOS, token limit) it does not. ``choose`` returns the index of the best choice.

    >>> lm.complete("The capital of France is", stop="\\n")      # doctest: +SKIP
    ' Paris.\\n'
    >>> lm.choose("Q: Capital of France?\\nA:", [" Paris", " London"])   # doctest: +SKIP
    0
    """

    default_normalization: str = DEFAULT_NORMALIZATION

    @abstractmethod
    def tokenize(self, text: str, bos: bool = False) -> list[int]:
        """Token ids of ``text``; with ``bos=True`` BOS is prepended when the model expects one.

        A fragment (``bos=False``) gets no special token and no added prefix space:
        ``detokenize(tokenize(" Paris")) == " Paris"``.
        """

    def tokenize_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """``[tokenize(t) for t in texts]`` (fragments, no BOS); backends override it with a batched call."""
        return [self.tokenize(text) for text in texts]

    @abstractmethod
    def detokenize(self, tokens: Sequence[int]) -> str:
        """The text of ``tokens`` (special tokens dropped); the inverse of ``tokenize`` on fragments."""

    @abstractmethod
    def complete(self, prompt: str, stop: Stop = "\n", **kwargs: Any) -> str:
        """Continue ``prompt`` until a stop string, EOS or the token limit; see the class docstring."""

    @abstractmethod
    def choose(self, prompt: str, choices: Sequence[str], **kwargs: Any) -> int:
        """Index of the most likely continuation of ``prompt`` among ``choices``."""

    # Richer scoring: backends that can score choices override `choice_distribution`.
    def choice_distribution(
        self, prompt: str, choices: Sequence[str], normalization: Optional[str] = None, **kwargs: Any
    ) -> ChoiceResult:
        """Score every choice: a `ChoiceResult` with the distribution, the per-token log-probs and the tree."""
        raise NotImplementedError(f"{type(self).__name__} does not score choices")

    def choice_logprobs(self, prompt: str, choices: Sequence[str], **kwargs: Any) -> list[list[float]]:
        """``[j][k]`` = log P(token k of choice j | prompt + choice j's tokens before k).

        >>> lm.choice_logprobs("1 + 1 =", [" 2", " 11"])     # doctest: +SKIP
        [[-0.51], [-4.2, -1.3]]
        """
        return self.choice_distribution(prompt, choices, **kwargs).token_logprobs

    def score_batch(self, requests: Sequence["ScoreRequest"]) -> list[ChoiceResult]:
        """One `ChoiceResult` per `ScoreRequest` (the scoring layer's primitive; see `autocog.lm.scoring`).

        This default checks every request first (`autocog.lm.scoring.check_requests`), then scores them one
        by one with ``choice_distribution``; `ChoiceLM` scores them in batched passes."""
        from .scoring import check_requests

        checked, _ = check_requests(self, requests, render=False)
        results = []
        for c in checked:
            kwargs = {"end": c.end} if c.end is not None else {}
            result = self.choice_distribution(c.prompt, c.choices, normalization=c.normalization, **kwargs)
            if c.prior is not None:
                result.prior = c.prior
            results.append(result)
        return results

    @property
    def n_ctx(self) -> Optional[int]:
        """The model's context length in tokens, when known."""
        return None

    # --- chat prompts and streaming (see autocog.lm.chat and docs/chat.md) -----------------------------------
    chat_template: Optional[str] = None  # a jinja2 chat template overriding the model's own (None: the model's)

    def apply_chat_template(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        """The text of ``messages`` (``[{"role": ..., "content": ...}]``) under the model's chat template; with
        ``add_generation_prompt`` it ends with the header of the assistant's turn. A model without a template
        raises `ChatTemplateError` (pass ``chat_template=``); bad messages raise `InvalidPromptError`.

        >>> lm.apply_chat_template([{"role": "user", "content": "Hi"}])        # doctest: +SKIP
        '<|im_start|>system\\n...<|im_end|>\\n<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n'
        """
        from .chat import check_messages, missing_template, render_template

        messages = check_messages(messages)
        if self.chat_template is None:
            raise missing_template(type(self).__name__)
        return render_template(self.chat_template, messages, add_generation_prompt)

    def render_prompt(self, prompt: Any) -> str:
        """The one hook every prompt goes through: a str is returned as is, a list of chat messages is rendered
        with `apply_chat_template` and the generation prompt (a choice or a completion then starts the
        assistant's reply); anything else raises `InvalidPromptError`."""
        if isinstance(prompt, str):
            return prompt
        from .chat import is_messages

        if is_messages(prompt):
            return self.apply_chat_template(prompt, add_generation_prompt=True)
        if isinstance(prompt, (list, tuple)) and not prompt:
            raise InvalidPromptError("the prompt is an empty list (expected a str or a list of chat messages)")
        return check_prompt(prompt)

    def stream(self, prompt: Any, stop: Stop = "\n", **kwargs: Any) -> Iterator[str]:
        """The text of ``complete(prompt, stop, **kwargs)`` in pieces, as it is generated:
        ``"".join(lm.stream(...)) == lm.complete(...)``. This default yields the whole completion at once;
        backends that generate token by token override it."""
        text = self.complete(prompt, stop=stop, **kwargs)
        return iter([text] if text else [])
