"""`GreedyLM`: a model that gives the log-probs of the next token, with retries and a generic decoding loop."""

from __future__ import annotations

from abc import abstractmethod
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Iterator,
    Optional,
    Sequence,
    TypeVar,
    Union,
)

import numpy as np

from autocog.core.checks import check_context, check_prompt
from autocog.core.retry import Retry
from autocog.core.sampling import sample
from autocog.core.stops import as_stop_list, find_stop, safe_length
from autocog.core.types import Stop
from autocog.errors import InvalidPromptError, TransientError
from autocog.lm.base import LM

if TYPE_CHECKING:  # pragma: no cover
    from autocog.core.constraint import Constraint


T = TypeVar("T")

# Completion settings a user may pass to `complete` or as `completion_kwargs`; AutoCog's
# `max_new_tokens` is accepted as an alias of `max_tokens`.
COMPLETION_DEFAULTS = {"max_tokens": 64, "temperature": 0.0, "top_p": 1.0, "top_k": 0, "seed": None, "min_p": 0.0}


def is_out_of_memory(error: BaseException) -> bool:
    """True for the allocation failures worth a retry after the caches are cleared (CUDA or host OOM)."""
    if isinstance(error, (MemoryError, TransientError)):
        return True
    if type(error).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError, without importing torch
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


class GreedyLM(LM):
    """An `LM` that exposes next-token log-probs.

    A backend implements `greedy_impl` (log-probs after a list of token ids), `tokenize`, `detokenize`
    and, optionally, faster versions of `complete`. `greedy` adds input checks and a bounded retry:
    transient faults (`is_transient`, e.g. out of memory) are retried up to ``max_retries`` times with
    exponential backoff, after `recover` (clear caches); any other exception propagates at once.

    >>> lp = lm.greedy("The capital of France is")         # doctest: +SKIP
    >>> lp.shape, float(np.exp(lp).sum())                   # doctest: +SKIP
    ((49152,), 1.0)
    """

    max_retries: int = 3
    retry_backoff: float = 0.05  # seconds, doubled after every failed attempt

    def __init__(self, completion_kwargs: Optional[dict] = None, max_retries: Optional[int] = None):
        self.completion_kwargs = self._completion_settings(completion_kwargs or {}, COMPLETION_DEFAULTS)
        if max_retries is not None:
            self.max_retries = max_retries

    # --- primitives a backend implements ---------------------------------------------------------
    @abstractmethod
    def greedy_impl(self, tokens: list[int]) -> np.ndarray:
        """Log-probs (log_softmax of the last position's logits) of the token that follows ``tokens``."""

    @property
    def eos_token_ids(self) -> set[int]:
        """Token ids that end a generation."""
        return set()

    @property
    def tokens_evaluated(self) -> int:
        """Tokens run through the model so far (backends with a prefix cache count only new tokens)."""
        return 0

    def is_transient(self, error: BaseException) -> bool:
        return is_out_of_memory(error)

    def recover(self, error: BaseException) -> None:
        """Called before a retry: drop caches so that the next attempt starts clean."""

    # --- public API ------------------------------------------------------------------------------
    def greedy(self, prompt: Union[str, Sequence[int]]) -> np.ndarray:
        """Log-probs of the next token after ``prompt`` (text, tokenized with BOS, or token ids), shape [vocab]."""
        tokens = self.prompt_tokens(prompt)
        return self.with_retry(self.greedy_impl, tokens)

    def prompt_tokens(self, prompt: Union[str, Sequence[int]]) -> list[int]:
        """Token ids of a prompt given as text (BOS added when the model expects it), as chat messages
        (rendered, see `render_prompt`) or as ids; checked."""
        if isinstance(prompt, (list, tuple)) and prompt and isinstance(prompt[0], dict):
            prompt = self.render_prompt(prompt)
        if isinstance(prompt, str):
            tokens = self.tokenize(prompt, bos=True)
        elif isinstance(prompt, (list, tuple, np.ndarray)):
            tokens = [int(t) for t in prompt]
        else:
            check_prompt(prompt)
            raise AssertionError("unreachable")
        if not tokens:
            raise InvalidPromptError("the prompt is empty and the model adds no BOS token: nothing to condition on")
        check_context(len(tokens), self.n_ctx)
        return tokens

    @property
    def retry_policy(self) -> Retry:
        """The `Retry` of `with_retry`: ``max_retries`` retries, ``retry_backoff`` seconds doubled after each."""
        return Retry(max_retries=self.max_retries, backoff=self.retry_backoff)

    def with_retry(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``fn``; retry transient faults (bounded, `recover` before each retry), then raise
        `RetryExhaustedError` listing them."""
        return self.retry_policy.call(
            lambda: fn(*args, **kwargs),
            is_transient=self.is_transient,
            recover=self.recover,
            what=f"{type(self).__name__}.{getattr(fn, '__name__', 'call')} (a transient fault)",
        )

    def complete(self, prompt: str, stop: Stop = "\n", **kwargs: Any) -> str:
        """Generate after ``prompt`` (a str or chat messages): greedy (``temperature=0``, the default) or
        sampled (``temperature``, ``top_p``, ``top_k``, ``min_p``, ``seed``), up to ``max_tokens`` (alias
        ``max_new_tokens``), EOS or a stop string.

        The text returned ends with a stop string exactly when generation ended on it.

        >>> lm.complete("1, 2, 3,", stop=",", max_tokens=8)   # doctest: +SKIP
        ' 4,'
        """
        tokens, stops, settings = self._completion_request(prompt, stop, kwargs)
        return self.generate(tokens, stops, **settings)

    def stream(self, prompt: Any, stop: Stop = "\n", **kwargs: Any) -> Iterator[str]:
        """`complete`'s text in pieces, as the tokens come: ``"".join(lm.stream(...)) == lm.complete(...)``.
        A piece never splits a character, and text that may be the start of a stop string is held back
        until it is known not to be (so nothing past a stop is ever yielded). Inputs are checked now.

        >>> for piece in lm.stream("Once upon a time", stop="\\n"): print(piece, end="")    # doctest: +SKIP
        """
        tokens, stops, settings = self._completion_request(prompt, stop, kwargs)
        return self.generate_pieces(tokens, stops, **settings)

    def _completion_request(self, prompt: Any, stop: Stop, kwargs: dict) -> tuple[list[int], list[str], dict]:
        prompt = self.render_prompt(prompt)
        settings = self._completion_settings(kwargs, self.completion_kwargs)
        stops = as_stop_list(stop)
        return self.prompt_tokens(prompt), stops, settings

    def generate(
        self,
        tokens: list[int],
        stops: list[str],
        max_tokens: int,
        temperature: float,
        top_p: float,
        top_k: int,
        seed: Optional[int],
        constraint: Optional[Constraint] = None,
        min_p: float = 0.0,
        token_logprobs: Optional[list] = None,
    ) -> str:
        """The decoding loop behind `complete`, over `greedy`; backends with a prefix cache make each step
        cost one token. ``constraint`` (see `autocog.core.constraint`) masks the tokens that may come next.
        ``token_logprobs``: a list that receives the model's (unmasked, unscaled) log-prob of each token taken,
        EOS included when generation ends on it. The text is the join of `generate_pieces` (one loop for
        `complete` and `stream`)."""
        return "".join(
            self.generate_pieces(
                tokens, stops, max_tokens, temperature, top_p, top_k, seed, constraint, min_p, token_logprobs
            )
        )

    def generate_pieces(
        self,
        tokens: list[int],
        stops: list[str],
        max_tokens: int,
        temperature: float,
        top_p: float,
        top_k: int,
        seed: Optional[int],
        constraint: Optional[Constraint] = None,
        min_p: float = 0.0,
        token_logprobs: Optional[list] = None,
    ) -> Iterator[str]:
        """The decoding loop, yielding the new text after each token (see `stream` for what is held back)."""
        rng = np.random.default_rng(seed)
        max_tokens = self.generation_budget(len(tokens), max_tokens)
        eos = self.eos_token_ids
        generated: list[int] = []
        text, sent = "", 0  # the decoded text, and how many of its characters were yielded
        longest_stop = max((len(s) for s in stops), default=0)
        for _ in range(max_tokens):
            if constraint is not None and constraint.done():
                break
            logprobs = self.with_retry(self.greedy_impl, tokens + generated)
            if constraint is not None:
                mask = constraint.allowed()
                if mask is not None:
                    logprobs = np.where(mask[: len(logprobs)], logprobs, -np.inf)
            token = sample(logprobs, temperature, top_p, top_k, rng, min_p)
            if token_logprobs is not None:
                token_logprobs.append(float(logprobs[token]))
            if constraint is not None:
                constraint.advance(token)
            if token in eos:
                break
            generated.append(token)
            previous = len(text)
            text = self.detokenize(generated)
            if stops:
                end = find_stop(text, stops, max(0, previous - longest_stop))
                if end is not None:
                    if end > sent:
                        yield text[sent:end]
                    return
            ready = safe_length(text, stops)
            if ready > sent:
                yield text[sent:ready]
                sent = ready
        if len(text) > sent:
            yield text[sent:]

    def generation_budget(self, n_prompt: int, max_tokens: int) -> int:
        """``max_tokens`` capped so that generation stops at a full context instead of failing (the last
        token generated is never fed to the model)."""
        if self.n_ctx is None:
            return int(max_tokens)
        return min(int(max_tokens), max(0, self.n_ctx - n_prompt + 1))

    @staticmethod
    def _completion_settings(kwargs: dict, defaults: dict) -> dict:
        settings = dict(defaults)
        for key, value in kwargs.items():
            key = "max_tokens" if key == "max_new_tokens" else key
            if key == "do_sample":
                continue  # sampling is decided by temperature
            if key not in COMPLETION_DEFAULTS:
                raise TypeError(f"unknown completion setting {key!r}: expected one of {', '.join(COMPLETION_DEFAULTS)}")
            settings[key] = value
        if settings["max_tokens"] is None or int(settings["max_tokens"]) < 0:
            raise ValueError(f"max_tokens must be a non-negative int, got {settings['max_tokens']!r}")
        if float(settings["temperature"]) < 0:
            raise ValueError(f"temperature must be >= 0, got {settings['temperature']!r}")
        if not 0.0 <= float(settings.get("min_p") or 0.0) <= 1.0:
            raise ValueError(f"min_p must be in [0, 1], got {settings['min_p']!r}")
        return settings
