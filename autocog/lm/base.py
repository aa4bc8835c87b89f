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

from abc import ABC, abstractmethod
from functools import cached_property
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterator, Optional, Sequence

from autocog.core.chat import RenderCache, check_messages, is_messages, missing_template, render_template
from autocog.core.checks import check_prompt
from autocog.core.normalization import DEFAULT_NORMALIZATION
from autocog.core.types import ChoiceResult, Stop
from autocog.errors import InvalidPromptError
from autocog.lm.aio import worker_for
from autocog.lm.scoring import check_requests

if TYPE_CHECKING:  # pragma: no cover
    from autocog.core.types import ScoreRequest


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

    def score_batch(
        self, requests: Sequence[ScoreRequest], max_batch_tokens: Optional[int] = None
    ) -> list[ChoiceResult]:
        """One `ChoiceResult` per `ScoreRequest` (the scoring layer's primitive; see `autocog.lm.scoring`).

        This default checks every request first (`autocog.lm.scoring.check_requests`), then scores them one
        by one with ``choice_distribution`` (``max_batch_tokens``, a per-call budget of packed passes, has
        nothing to bound here); `ChoiceLM` scores them in batched passes."""
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

    @classmethod
    def option_names(cls) -> Optional[set[str]]:
        """The keywords ``create`` passes on through its ``**kwargs`` to the library underneath, when the backend
        can list them: `autocog.lm.registry.check_keywords` then names an unknown one instead of letting the
        library swallow it. None (the default): not listed."""
        return None

    # --- chat prompts and streaming (see autocog.core.chat and docs/chat.md) -----------------------------------
    chat_template: Optional[str] = None  # a jinja2 chat template overriding the model's own (None: the model's)

    def apply_chat_template(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        """The text of ``messages`` (``[{"role": ..., "content": ...}]``) under the model's chat template; with
        ``add_generation_prompt`` it ends with the header of the assistant's turn. A model without a template
        raises `ChatTemplateError` (pass ``chat_template=``); bad messages raise `InvalidPromptError`.

        >>> lm.apply_chat_template([{"role": "user", "content": "Hi"}])        # doctest: +SKIP
        '<|im_start|>system\\n...<|im_end|>\\n<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n'
        """
        messages = check_messages(messages)
        template = self.chat_template
        if template is None:
            raise missing_template(type(self).__name__)
        return self.render_cache.render(
            lambda: render_template(template, messages, add_generation_prompt),
            template,
            messages,
            add_generation_prompt,
        )

    @cached_property
    def render_cache(self) -> RenderCache:
        """The model's recent chat renderings (`autocog.core.chat.RenderCache`): repeated messages render once.
        Per model, so per tokenizer and special tokens; created on first use."""
        return RenderCache()

    def render_prompt(self, prompt: Any) -> str:
        """The one hook every prompt goes through: a str is returned as is, a list of chat messages is rendered
        with `apply_chat_template` and the generation prompt (a choice or a completion then starts the
        assistant's reply); anything else raises `InvalidPromptError`."""
        if isinstance(prompt, str):
            return prompt
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

    # --- the async API (docs/async.md): the same calls, awaited --------------------------------------------
    # By default each runs the sync call in the model's worker thread, one call at a time per model
    # (`autocog.lm.aio`); `OpenAI` sends its requests natively instead.
    async def acomplete(self, prompt: Any, stop: Stop = "\n", **kwargs: Any) -> str:
        """``await lm.acomplete(...) == lm.complete(...)``, without blocking the event loop."""
        return await worker_for(self).run(self.complete, prompt, stop=stop, **kwargs)

    def astream(self, prompt: Any, stop: Stop = "\n", **kwargs: Any) -> AsyncIterator[str]:
        """`stream`'s pieces as an async iterator: ``async for piece in lm.astream(...)``; inputs are checked at
        the first piece. A consumer that stops early closes the generation (at once with
        ``await pieces.aclose()``)."""
        return worker_for(self).stream(lambda: self.stream(prompt, stop=stop, **kwargs))

    async def achoose(self, prompt: Any, choices: Sequence[str], **kwargs: Any) -> int:
        """``await lm.achoose(...) == lm.choose(...)``."""
        return await worker_for(self).run(self.choose, prompt, choices, **kwargs)

    async def achoice_distribution(
        self, prompt: Any, choices: Sequence[str], normalization: Optional[str] = None, **kwargs: Any
    ) -> ChoiceResult:
        """The `ChoiceResult` of `choice_distribution`, awaited."""
        return await worker_for(self).run(
            self.choice_distribution, prompt, choices, normalization=normalization, **kwargs
        )

    async def achoice_logprobs(self, prompt: Any, choices: Sequence[str], **kwargs: Any) -> list[list[float]]:
        """`choice_logprobs`, awaited."""
        return await worker_for(self).run(self.choice_logprobs, prompt, choices, **kwargs)

    async def ascore_batch(
        self, requests: Sequence[ScoreRequest], max_batch_tokens: Optional[int] = None
    ) -> list[ChoiceResult]:
        """`score_batch`, awaited (the primitive of `autocog.lm.scoring.ascore`)."""
        limits = {} if max_batch_tokens is None else {"max_batch_tokens": max_batch_tokens}
        return await worker_for(self).run(self.score_batch, list(requests), **limits)
