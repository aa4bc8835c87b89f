"""What a server can do, measured once (`Capabilities.probe`), and its vocabulary's token names (llama.cpp):
a mixin of `OpenAI`. docs/openai.md explains the echo layouts and the bias modes.

>>> lm.probe()["echo"], lm.probe()["bias"]          # llama_cpp.server, SmolLM2    # doctest: +SKIP
('shifted', 'pre')
"""

from __future__ import annotations

import logging
import time
from typing import Optional
from urllib.parse import urlsplit

from autocog.errors import (
    MalformedResponseError,
    RequestFailedError,
    RetryExhaustedError,
    StrategyUnavailableError,
    TokenizerMismatchError,
)
from autocog.lm.openai.echo import region_start
from autocog.lm.openai.parsing import Next
from autocog.lm.openai.requests import BIAS
from autocog.lm.openai.vocabulary import SEPARATOR, Vocabulary, scan_vocabulary

log = logging.getLogger("autocog.lm.openai")

PROBE_PROMPTS = ("The capital of France is", "Once upon a time, there was a", "1, 2, 3, 4,")
TOKENIZER_PROBE = 'Tokenizer check: naïve café, 12,345.67 ünïcödé → 東京 🙂 <div class="x">\tdone</div>'
PROBE_TOLERANCE = 2e-3
WHOLE_VOCABULARY = 1 << 20  # top_logprobs that a llama.cpp server answers with every token's log-prob
_VOCABULARIES: dict = {}  # (server root, model) -> its `Vocabulary` (see `scan_vocabulary`)


class Capabilities:
    """Server detection, the probe, the tokenizer check and the vocabulary of `OpenAI`."""

    def _detect_server(self) -> str:
        host = urlsplit(str(self.client.base_url)).hostname or ""
        if host.endswith("openai.com"):
            return "openai"
        for kind, path, body in (
            ("llama.cpp", "/extras/tokenize", {"input": "a"}),
            ("vllm", "/tokenize", {"model": self._model or "", "prompt": "a"}),
        ):
            try:
                data = self._post(self.root_url + path, body, retry=False, kind="probe")
            except (RequestFailedError, MalformedResponseError, RetryExhaustedError):
                continue
            if isinstance(data, dict) and isinstance(data.get("tokens"), list):
                return kind
        return "generic"

    def probe(self) -> dict:
        """What this server can do, measured once: ``echo`` (``"direct"``, ``"shifted"`` or None, with
        ``echo_reason``), ``bias`` (``"pre"``: log-probs reported before logit_bias, ``"post"``, or None, with
        ``bias_reason``) and the numbers compared.

        >>> lm.probe()["echo"]          # doctest: +SKIP
        'shifted'
        """
        with self._lock:
            if self._capabilities is None:
                self._capabilities = self._probe()
        return self._capabilities

    def _probe(self) -> dict:
        caps: dict = {"echo": None, "echo_reason": "", "bias": None, "bias_reason": "", "checks": []}
        first = None
        for probe_prompt in PROBE_PROMPTS:
            nxt = self._next(probe_prompt)
            if nxt.token and nxt.logprob is not None and nxt.top:
                first = (probe_prompt, nxt)
                break
        if first is None:
            reason = "the server returns no log-probs for the next token"
            caps.update(echo_reason=reason, bias_reason=reason)
            return caps
        probe_prompt, nxt = first
        if self._check_tokenizer:
            self.check_tokenizer(probe_usage=(probe_prompt, nxt.usage))
        caps["bias"], caps["bias_reason"] = self._probe_bias(probe_prompt, nxt)
        if self.chat:
            caps["echo_reason"] = "the chat endpoint has no echo"
        else:
            caps["echo"], caps["echo_reason"] = self._probe_echo(probe_prompt, nxt, caps["checks"])
        log.info("probed %s: echo=%s bias=%s", self.base_url, caps["echo"], caps["bias"])
        return caps

    def _probe_echo(self, probe_prompt: str, nxt: Next, checks: list) -> tuple[Optional[str], str]:
        candidates = [(nxt.token, nxt.logprob)] + sorted(
            ((t, v) for t, v in nxt.top.items() if t != nxt.token), key=lambda tv: -tv[1]
        )
        tried = 0
        for token, expected in candidates:
            if not token or not token.strip() or tried >= 3:
                continue
            tried += 1
            try:
                echo = self._echo_request(probe_prompt + token, 1)
            except RequestFailedError as error:
                return None, f"echo with logprobs was refused: {error}"
            found = region_start(echo, token)
            if found is None or found[1] - found[0] != 1:
                continue  # the server split the text differently at the boundary: try another token
            i = found[0]
            direct = echo.logprobs[i]
            shifted = (echo.top[i - 1] or {}).get(token) if i >= 1 else None
            checks.append(
                {"token": token, "expected": expected, "token_logprobs": direct, "previous_top_logprobs": shifted}
            )
            if direct is not None and abs(direct - expected) <= PROBE_TOLERANCE:
                return "direct", f"token_logprobs reproduce the log-prob of {token!r}"
            if shifted is not None and abs(shifted - expected) <= PROBE_TOLERANCE:
                return "shifted", (
                    f"token_logprobs are shifted by one position ({direct} for {token!r}, expected "
                    f"{expected}); the previous position's top_logprobs hold the right value"
                )
            return None, (
                f"echo gives neither the log-prob of {token!r} ({expected}) in token_logprobs "
                f"({direct}) nor in the previous position's top_logprobs ({shifted})"
            )
        return None, "no probe continuation could be echoed back on a clean token boundary"

    def _probe_bias(self, probe_prompt: str, nxt: Next) -> tuple[Optional[str], str]:
        try:
            tokenizer = self.tokenizer
        except StrategyUnavailableError as error:
            return None, f"logit_bias needs token ids: {error}"
        ranked = sorted(((t, v) for t, v in nxt.top.items() if t != nxt.token), key=lambda tv: -tv[1])
        for text, expected in ranked[:5]:
            if not text or "\ufffd" in text:
                continue
            ids = tokenizer.encode(text)
            if len(ids) != 1:
                continue
            biased = self._next(probe_prompt, {ids[0]: BIAS}, partial="allow")  # a whole character
            if biased.token != text:
                raise TokenizerMismatchError(
                    f"the tokenizer {tokenizer!r} gives id {ids[0]} for {text!r}, but a logit_bias on that id made "
                    f"the server at {self.base_url} (model {self.model!r}) produce {biased.token!r}: the ids differ"
                )
            if biased.logprob is None:
                return None, "the server returns no log-prob for a biased token"
            if abs(biased.logprob - expected) <= PROBE_TOLERANCE:
                return "pre", "log-probs are reported before logit_bias"
            if biased.logprob > expected + 1.0:
                return "post", "log-probs are reported after logit_bias (renormalized)"
            return None, f"a biased token reads {biased.logprob}, expected {expected} or close to 0"
        return None, "no probe token is a single token of the tokenizer"

    def check_tokenizer(self, probe_usage: Optional[tuple] = None) -> None:
        """Compare the local tokenizer with the server: the difference of ``usage.prompt_tokens`` between two
        prompts must equal the difference of their local token counts (BOS and chat templates cancel out).
        Raises `TokenizerMismatchError`; a no-op for the server's own tokenizer or a server without ``usage``."""
        if self._tokenizer_checked:
            return
        self._tokenizer_checked = True
        try:
            tokenizer = self.tokenizer
        except StrategyUnavailableError:
            return
        if tokenizer.is_server:
            return
        short, short_usage = probe_usage if probe_usage else (PROBE_PROMPTS[0], self._next(PROBE_PROMPTS[0]).usage)
        long_usage = self._next(TOKENIZER_PROBE).usage
        if short_usage is None or long_usage is None:
            return
        local = len(tokenizer.encode(TOKENIZER_PROBE)) - len(tokenizer.encode(short))
        remote = long_usage - short_usage
        if local != remote:
            raise TokenizerMismatchError(
                f"the tokenizer {tokenizer!r} does not match model {self.model!r} on {self.base_url}: the server "
                f"counts {long_usage} and {short_usage} prompt tokens for two probe texts, {remote} apart, the "
                f"tokenizer counts {local} apart; pass the model's tokenizer (tokenizer=...)"
            )

    def ambiguous_texts(self) -> frozenset:
        """Token texts that name more than one token id in this server's ``top_logprobs``.

        llama_cpp.server keys ``top_logprobs`` by each token's text with invalid UTF-8 bytes dropped, and a
        later (less likely) token overwrites an earlier one of the same text: on SmolLM2, ``" "`` also names 37
        tokens such as ``b" \\xe2\\x80"``, so the value under ``" "`` can be theirs. A value read by such a text is
        not trusted (it is asked for by token id: a biased request). Found once per server: from the
        tokenizer's vocabulary when it can list one, else by scanning the server's ``/extras/detokenize``
        (`scan_vocabulary`); empty on other servers (their keys mark broken bytes instead of dropping them).

        >>> sorted(lm.ambiguous_texts())      # SmolLM2 on llama_cpp.server    # doctest: +SKIP
        ['', ' ', 'о', 'י']
        """
        if self._ambiguous is None:
            self._ambiguous = self._find_ambiguous()
        return self._ambiguous

    def _find_ambiguous(self) -> frozenset:
        vocabulary = self.vocabulary()
        return frozenset() if vocabulary is None else vocabulary.shared_texts()

    def vocabulary(self) -> Optional[Vocabulary]:
        """Every token's name in ``top_logprobs`` and the tokens that end inside a character, on llama.cpp
        servers (None elsewhere): from the tokenizer when it can list its vocabulary, else read through the
        server's ``/extras/detokenize`` once per server (`scan_vocabulary`; ~2 s for SmolLM2's 49,152 tokens)."""
        if self.server != "llama.cpp":
            return None
        key = (self.root_url, self.model)
        with self._vocab_lock:
            if key not in _VOCABULARIES:
                listed = self.tokenizer.vocabulary()
                _VOCABULARIES[key] = listed if listed is not None else self._scan_vocabulary()
        return _VOCABULARIES[key]

    def _scan_vocabulary(self) -> Vocabulary:
        tokenizer = self.tokenizer
        decode = getattr(tokenizer, "decode_checked", None)
        keys = self._next(PROBE_PROMPTS[0], k=WHOLE_VOCABULARY).top
        if decode is None or not keys:
            return Vocabulary([None])  # unknown: no value is read by name
        separator = tokenizer.encode(SEPARATOR)
        started = time.monotonic()
        vocabulary = scan_vocabulary(len(keys), decode, separator, self._map)
        log.info(
            "read %d token names from %s in %.1f s", len(vocabulary.names), self.base_url, time.monotonic() - started
        )
        return vocabulary
