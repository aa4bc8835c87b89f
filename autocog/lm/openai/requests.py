"""The requests that scoring and generation send (one next token, a walk, an echo, a completion), as a mixin
of `OpenAI`: the body each server expects and the answer parsed (`autocog.lm.openai.parsing`).

>>> lm._next("The capital of France is", k=5).top          # doctest: +SKIP
{' Paris': -0.8, ' the': -2.1, ...}
"""

from __future__ import annotations

import os
from typing import Any, Optional

from autocog.errors import StrategyUnavailableError
from autocog.lm.openai.parsing import (
    Echo,
    Next,
    gbnf_literal,
    parse_chat_next,
    parse_echo,
    parse_next,
    parse_walk,
)

BIAS = 100.0  # the largest logit_bias OpenAI accepts


class Requests:
    """Request helpers of `OpenAI` (they read its configuration: ``server``, ``chat``, ``model``...)."""

    def _next(
        self,
        context: str,
        bias: Optional[dict] = None,
        k: Optional[int] = None,
        fresh: bool = False,
        partial: str = "refuse",
    ) -> Next:
        """One next-token request (greedy, ``max_tokens=1``) with the top ``k`` log-probs, optionally biased.

        ``fresh`` (llama.cpp servers): first send a one-token request that shares no prefix with ``context``, the
        two under the transport's ``serial`` lock so that no other thread's request comes between them.
        llama_cpp.server keeps the previous prompt's KV and evaluates only the tokens past the common prefix,
        the last one alone when ``context`` ends within it; on quantized weights a one-token batch rounds
        differently from longer ones (measured: 0.02 nats on SmolLM2 Q4_1 for "iv" after " Ky"), while echo
        and `LLaMa` evaluate batches. Echo's fills ask for a fresh evaluation so that they agree with them.
        ``partial``: what to do with biased tokens that end inside a UTF-8 character (`_safe_bias`):
        ``"refuse"``, ``"drop"`` or ``"allow"``."""
        if bias and self.wide and partial != "allow":
            bias = self._safe_bias(bias, partial == "drop")
        if fresh and self.wide:
            tail = self._last_tokens_text(context)  # tokenized before the lock: no other lock taken under it
            with self.transport.serial:  # the reset and this request adjacent on the server (docs/openai.md)
                if self._shares_last_tokens(context, tail):
                    self._completion_request("." if context.startswith("\n") else "\n", {"max_tokens": 1}, {})
                return self._next(context, bias, k, partial="allow")
        k = k or self.top_logprobs
        body: dict = {"max_tokens": 1, "temperature": 0.0}
        if bias:
            body["logit_bias"] = {str(t): float(b) for t, b in bias.items()}
        extra = self._sampling_extras({"top_k": 0})
        if self.chat:
            body.update(logprobs=True, top_logprobs=k)
            return parse_chat_next(self._chat_request(context, body, extra))
        body["logprobs"] = k
        return parse_next(self._completion_request(context, body, extra), self.base_url)

    def _safe_bias(self, bias: dict, drop: bool) -> dict:
        """``bias`` without the tokens that end inside a UTF-8 character: llama-cpp-python generates on until
        the character is complete, and a bias that keeps choosing such a token never lets it (the request runs
        the server out of context). ``drop``: leave them out; else refuse."""
        vocabulary = self.vocabulary()
        cut = [t for t in bias if vocabulary is not None and (t in vocabulary.trailing or t >= len(vocabulary.names))]
        if cut and not drop:
            raise StrategyUnavailableError(
                f"token {cut[0]} ends inside a UTF-8 character: forcing it through logit_bias would make "
                f"llama_cpp.server at {self.base_url} generate until its context is full; it cannot be scored "
                "on its own there"
            )
        return {t: b for t, b in bias.items() if t not in cut}

    def _walk_request(
        self, context: str, suffixes: list[str], bias: dict, max_tokens: int, k: int
    ) -> list[tuple[str, Optional[float], dict]]:
        """A greedy completion of ``context`` constrained to one of ``suffixes`` (a llama.cpp grammar), with
        ``bias`` on the suffixes' tokens so that their own tokenization wins: [(token text, its log-prob, the
        top-``k`` log-probs at that step)]. llama.cpp reports log-probs before the bias and the grammar."""
        body: dict = {
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "logprobs": k,
            "logit_bias": {str(t): float(b) for t, b in bias.items()},
        }
        extra = dict(
            self._sampling_extras({"top_k": 0}),
            grammar="root ::= " + " | ".join(gbnf_literal(x) for x in dict.fromkeys(suffixes)),
        )
        return parse_walk(self._completion_request(context, body, extra), self.base_url)

    def _last_tokens_text(self, context: str) -> Optional[int]:
        """The length of the text of ``context``'s last two tokens (None: fewer than two tokens)."""
        ids = self.tokenizer.encode(context)
        return len(self.tokenizer.decode(ids[-2:])) if len(ids) >= 2 else None

    def _shares_last_tokens(self, context: str, tail: Optional[int]) -> bool:
        """Whether the last prompt sent may share ``context`` up to one of its last two tokens, whose text is
        ``tail`` characters long (then the server would evaluate fewer than two tokens; an unknown state
        counts as shared)."""
        last = self.transport.last_prompt
        if last is None or tail is None:
            return True
        return len(os.path.commonprefix([last, context]))  # noqa: RUF071 (texts, not paths) > len(context) - tail

    def _echo_request(self, text: str, top: int) -> Echo:
        body = {"max_tokens": 1, "temperature": 0.0, "echo": True, "logprobs": top}
        return parse_echo(
            self._completion_request(text, body, self._sampling_extras({"top_k": 0})), text, self.base_url
        )

    def _completion_request(self, prompt: str, body: dict, extra: dict) -> Any:
        params = dict(model=self.model, prompt=prompt, **body)
        if extra:
            params["extra_body"] = extra
        return self._call(
            "completion",
            "completions",
            lambda t: self.client.completions.with_raw_response.create(**params, timeout=t).http_response,
            prompt=prompt if isinstance(prompt, str) else None,
        )

    def _chat_request(self, prompt: str, body: dict, extra: dict) -> Any:
        params = dict(model=self.model, messages=self.chat_messages(prompt), **body)  # see chat.py
        if extra:
            params["extra_body"] = extra
        return self._call(
            "chat completion",
            "chat",
            lambda t: self.client.chat.completions.with_raw_response.create(**params, timeout=t).http_response,
        )

    def _sampling_extras(self, settings: dict) -> dict:
        """Sampler settings outside the OpenAI schema: llama.cpp's server defaults (repeat_penalty 1.1, min_p
        0.05, top_k 40) are reset to the plain ones the local backends use unless asked. ``min_p`` goes to
        every server but OpenAI's API, which has none (a ValueError, before any request)."""
        min_p = float(settings.get("min_p") or 0.0)
        if min_p > 0 and self.server == "openai":
            raise ValueError("OpenAI's API has no min_p: use it with llama.cpp, vLLM or a local backend")
        if self.server == "llama.cpp":
            return {"repeat_penalty": 1.0, "min_p": min_p, "top_k": int(settings.get("top_k") or 0)}
        extra = {"min_p": min_p} if min_p > 0 else {}
        if self.server == "vllm" and settings.get("top_k"):
            extra["top_k"] = int(settings["top_k"])
        return extra

    # --- the transport --------------------------------------------------------------------------------
    def _call(self, what: str, kind: str, send: Any, retry: bool = True, prompt: Optional[str] = None) -> Any:
        return self.transport.call(what, kind, send, retry, prompt)

    def _post(self, url: str, body: dict, retry: bool = True, kind: Optional[str] = None) -> Any:
        return self.transport.post(url, body, retry, kind)

    def post_json(self, url: str, body: dict) -> Any:
        """POST JSON with the retry policy (the server tokenizers, structured output); counted in ``requests``
        by endpoint (``chat``, ``completions``, ``tokenize``...) like every other request."""
        return self.transport.post(url, body)

    def _map(self, fn: Any, items: list) -> list:
        return self.transport.map(fn, items)

    @property
    def requests(self):
        """What was sent, by kind (see `Transport`)."""
        return self.transport.requests

    # --- shared by the scorers ------------------------------------------------------------------------
    def _no_logprobs(self, context: str) -> StrategyUnavailableError:
        return StrategyUnavailableError(
            f"the server at {self.base_url} (model {self.model!r}) returns no log-probs for the token after "
            f"{context[-40:]!r}"
            + (
                " (llama_cpp.server gives none after an empty prompt: pass unconditional_prompt= for 'pmi')"
                if not context
                else ""
            )
        )

    def _piece(self, token: int) -> str:
        piece = self._pieces.get(token)
        if piece is None:
            piece = self.tokenizer.decode([token])
            self._pieces[token] = piece
        return piece

    def _merged(self, j: int, text: str, strategy: str = "echo") -> StrategyUnavailableError:
        if strategy == "echo":
            return StrategyUnavailableError(
                f"the server at {self.base_url} tokenizes the prompt and choice {j} ({text!r}) across their "
                "boundary (no token starts where the choice starts): echo cannot score it; use strategy='descent'"
            )
        return StrategyUnavailableError(
            f"the server at {self.base_url} tokenizes the prompt and a prefix of choice {j} ({text!r}) across "
            "their boundary, and it takes prompts as text only: the choice's own tokens cannot be scored after "
            "the prompt's (end the prompt on a word boundary, e.g. with a space moved into the choices)"
        )
