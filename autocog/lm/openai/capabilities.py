"""What a server can do, measured once (`Capabilities.probe`), and whether the local tokenizer is the model's
(`Capabilities.check_tokenizer`). docs/openai.md explains the echo layouts and the bias modes.

>>> session.probe()["echo"], session.probe()["bias"]          # llama_cpp.server, SmolLM2    # doctest: +SKIP
('shifted', 'pre')
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Optional

from autocog.errors import RequestFailedError, StrategyUnavailableError, TokenizerMismatchError
from autocog.lm.openai.echo import region_start
from autocog.lm.openai.parsing import Next
from autocog.lm.openai.requests import BIAS

if TYPE_CHECKING:  # pragma: no cover
    from autocog.lm.openai.session import Session

log = logging.getLogger("autocog.lm.openai")

PROBE_PROMPTS = ("The capital of France is", "Once upon a time, there was a", "1, 2, 3, 4,")
TOKENIZER_PROBE = 'Tokenizer check: naïve café, 12,345.67 ünïcödé → 東京 🙂 <div class="x">\tdone</div>'
PROBE_TOLERANCE = 2e-3


class Capabilities:
    """The probe and the tokenizer check of one `Session` (each done once)."""

    def __init__(self, session: Session):
        self.session = session
        self.found: Optional[dict] = None
        self.tokenizer_checked = False

    def probe(self) -> dict:
        """What this server can do, measured once: ``echo`` (``"direct"``, ``"shifted"`` or None, with
        ``echo_reason``), ``bias`` (``"pre"``: log-probs reported before logit_bias, ``"post"``, or None, with
        ``bias_reason``) and the numbers compared.

        >>> lm.probe()["echo"]          # doctest: +SKIP
        'shifted'
        """
        with self.session.lock:
            if self.found is None:
                self.found = self.measure()
        return self.found

    def measure(self) -> dict:
        caps: dict = {"echo": None, "echo_reason": "", "bias": None, "bias_reason": "", "checks": []}
        refused = self.session.dialect.echo_refusal(self.session)
        if refused is not None:  # the dialect scores another way (llama-server: token-id rows)
            caps.update(echo_reason=refused, bias_reason=refused)
            return caps
        first = None
        for probe_prompt in PROBE_PROMPTS:
            nxt = self.session.requests.next(probe_prompt)
            if nxt.token and nxt.logprob is not None and nxt.top:
                first = (probe_prompt, nxt)
                break
        if first is None:
            reason = "the server returns no log-probs for the next token"
            caps.update(echo_reason=reason, bias_reason=reason)
            return caps
        probe_prompt, nxt = first
        if self.session.settings.check_tokenizer:
            self.check_tokenizer(probe_usage=(probe_prompt, nxt.usage))
        caps["bias"], caps["bias_reason"] = self.probe_bias(probe_prompt, nxt)
        if self.session.chat:
            caps["echo_reason"] = "the chat endpoint has no echo"
        else:
            caps["echo"], caps["echo_reason"] = self.probe_echo(probe_prompt, nxt, caps["checks"])
        log.info("probed %s: echo=%s bias=%s", self.session.base_url, caps["echo"], caps["bias"])
        return caps

    def probe_echo(self, probe_prompt: str, nxt: Next, checks: list) -> tuple[Optional[str], str]:
        candidates = [(nxt.token, nxt.logprob)] + sorted(
            ((t, v) for t, v in nxt.top.items() if t != nxt.token), key=lambda tv: -tv[1]
        )
        tried = 0
        for token, expected in candidates:
            if not token or not token.strip() or tried >= 3:
                continue
            tried += 1
            try:
                echo = self.session.requests.echo(probe_prompt + token, 1)
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

    def probe_bias(self, probe_prompt: str, nxt: Next) -> tuple[Optional[str], str]:
        try:
            tokenizer = self.session.tokenizer
        except StrategyUnavailableError as error:
            return None, f"logit_bias needs token ids: {error}"
        ranked = sorted(((t, v) for t, v in nxt.top.items() if t != nxt.token), key=lambda tv: -tv[1])
        for text, expected in ranked[:5]:
            if not text or "\ufffd" in text:
                continue
            ids = tokenizer.encode(text)
            if len(ids) != 1:
                continue
            biased = self.session.requests.next(probe_prompt, {ids[0]: BIAS}, partial="allow")  # a whole character
            if biased.token != text:
                raise TokenizerMismatchError(
                    f"the tokenizer {tokenizer!r} gives id {ids[0]} for {text!r}, but a logit_bias on that id made "
                    f"the server at {self.session.base_url} (model {self.session.model!r}) produce {biased.token!r}: the ids differ"
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
        if self.tokenizer_checked:
            return
        self.tokenizer_checked = True
        try:
            tokenizer = self.session.tokenizer
        except StrategyUnavailableError:
            return
        if tokenizer.is_server:
            return
        short, short_usage = (
            probe_usage if probe_usage else (PROBE_PROMPTS[0], self.session.requests.next(PROBE_PROMPTS[0]).usage)
        )
        long_usage = self.session.requests.next(TOKENIZER_PROBE).usage
        if short_usage is None or long_usage is None:
            return
        local = len(tokenizer.encode(TOKENIZER_PROBE)) - len(tokenizer.encode(short))
        remote = long_usage - short_usage
        if local != remote:
            raise TokenizerMismatchError(
                f"the tokenizer {tokenizer!r} does not match model {self.session.model!r} on {self.session.base_url}: the server "
                f"counts {long_usage} and {short_usage} prompt tokens for two probe texts, {remote} apart, the "
                f"tokenizer counts {local} apart; pass the model's tokenizer (tokenizer=...)"
            )
