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
from autocog.core.sampling import SamplingParams, sample
from autocog.core.stops import as_stop_list, find_stop, safe_length
from autocog.core.tokens import TokenVocabulary
from autocog.core.types import Stop
from autocog.errors import InvalidPromptError, TransientError
from autocog.lm.base import LM

if TYPE_CHECKING:  # pragma: no cover
    from autocog.core.constraint import Constraint


T = TypeVar("T")


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
    sampling: SamplingParams = SamplingParams()  # the defaults of `complete` (``completion_kwargs``)

    def __init__(self, completion_kwargs: Optional[dict] = None, max_retries: Optional[int] = None):
        self.sampling = SamplingParams.from_settings(completion_kwargs or {})
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

    # --- the vocabulary, as structured output reads it (autocog.structured.vocab) ----------------
    @property
    def n_vocab(self) -> int:
        """The width of the next-token rows; this default measures one `greedy` row (after BOS, else token 0)."""
        bos = getattr(self, "bos_token_id", None)
        return len(self.greedy([bos if bos is not None else 0]))

    def token_bytes(self) -> list[bytes]:
        """Each token id's bytes, in id order. This default reads ``detokenize([i])`` as UTF-8 for every id below
        `n_vocab`: exact for whole-character tokens, while a token holding part of a UTF-8 character reads as
        U+FFFD, so a backend that knows its bytes overrides it (`LLaMa` does)."""
        return [self.detokenize([i]).encode("utf-8") for i in range(self.n_vocab)]

    def token_vocabulary(self) -> TokenVocabulary:
        """The grammar engine's view of the tokens: row width, EOS ids and `token_bytes` (see
        `autocog.core.tokens.TokenVocabulary`); a backend whose tokenizer the engine reads natively adds it.

        >>> v = lm.token_vocabulary()                 # doctest: +SKIP
        >>> v.size, v.eos, v.token_bytes()[:2]        # doctest: +SKIP
        (44, [43], [b'a', b'b'])
        """
        tokens = self.token_bytes()
        return TokenVocabulary(size=len(tokens), eos=sorted(self.eos_token_ids), token_bytes=lambda: tokens)

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
        ``max_new_tokens``), EOS or a stop string. The settings (see `SamplingParams`) default to the
        constructor's ``completion_kwargs``.

        The text returned ends with a stop string exactly when generation ended on it.

        >>> lm.complete("1, 2, 3,", stop=",", max_tokens=8)   # doctest: +SKIP
        ' 4,'
        """
        tokens, stops, params = self._completion_request(prompt, stop, kwargs)
        return self.complete_tokens(tokens, stops, params)

    def stream(self, prompt: Any, stop: Stop = "\n", **kwargs: Any) -> Iterator[str]:
        """`complete`'s text in pieces, as the tokens come: ``"".join(lm.stream(...)) == lm.complete(...)``.
        A piece never splits a character, and text that may be the start of a stop string is held back
        until it is known not to be (so nothing past a stop is ever yielded). Inputs are checked now.

        >>> for piece in lm.stream("Once upon a time", stop="\\n"): print(piece, end="")    # doctest: +SKIP
        """
        tokens, stops, params = self._completion_request(prompt, stop, kwargs)
        return self.stream_tokens(tokens, stops, params)

    @property
    def completion_kwargs(self) -> dict[str, Any]:
        """The default settings of `complete` / `stream`, by name (``lm.sampling`` as a dict)."""
        return self.sampling.as_dict()

    @completion_kwargs.setter
    def completion_kwargs(self, settings: dict) -> None:
        self.sampling = SamplingParams.from_settings(settings)

    def _completion_request(self, prompt: Any, stop: Stop, kwargs: dict) -> tuple[list[int], list[str], SamplingParams]:
        prompt = self.render_prompt(prompt)
        params = SamplingParams.from_settings(kwargs, self.sampling)
        stops = as_stop_list(stop)
        return self.prompt_tokens(prompt), stops, params

    def complete_tokens(
        self,
        tokens: list[int],
        stops: list[str],
        params: SamplingParams,
        *,
        constraint: Optional[Constraint] = None,
        token_logprobs: Optional[list] = None,
    ) -> str:
        """The decoding loop behind `complete`, after prompt token ids, over `greedy`; backends with a prefix
        cache make each step cost one token. ``constraint`` (see `autocog.core.constraint`) masks the tokens
        that may come next. ``token_logprobs``: a list that receives the model's (unmasked, unscaled) log-prob
        of each token taken, EOS included when generation ends on it. The text is the join of
        `stream_tokens` (one loop for `complete` and `stream`).

        >>> lm.complete_tokens(lm.prompt_tokens("1, 2,"), [","], SamplingParams(max_tokens=4))   # doctest: +SKIP
        ' 3,'
        """
        return "".join(self.stream_tokens(tokens, stops, params, constraint=constraint, token_logprobs=token_logprobs))

    def stream_tokens(
        self,
        tokens: list[int],
        stops: list[str],
        params: SamplingParams,
        *,
        constraint: Optional[Constraint] = None,
        token_logprobs: Optional[list] = None,
    ) -> Iterator[str]:
        """The decoding loop, yielding the new text after each token (see `stream` for what is held back);
        arguments as for `complete_tokens`."""
        rng = np.random.default_rng(params.seed)
        max_tokens = self.generation_budget(len(tokens), params.max_tokens)
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
            token = sample(logprobs, params, rng)
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
