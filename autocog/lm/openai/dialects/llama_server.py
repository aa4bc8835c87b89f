"""llama-server (llama.cpp's own C++ server, not llama_cpp.server): found by ``GET /props``; ``/tokenize`` and
``/detokenize``, the chat template through ``/apply-template``, BOS/EOS from ``/props``, parallel slots (``-np``),
``json_schema`` and GBNF ``grammar``, and choices scored by token-id rows on ``/completion``
(`autocog.lm.openai.id_rows`; docs/llama-server.md).

Echo is not used: ``/v1/completions`` ignores ``echo`` and returns only generated tokens' log-probs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Optional

from autocog.errors import MalformedResponseError, RequestFailedError, RetryExhaustedError
from autocog.lm.openai.dialects.base import Dialect
from autocog.lm.openai.tokenizers import LlamaServerTokenizer

if TYPE_CHECKING:  # pragma: no cover
    from autocog.core.constraint import NativeConstraint
    from autocog.lm.openai.session import Session
    from autocog.lm.openai.tokenizers import Tokenizer


ECHO_PROBE = "The capital of France is"


class LlamaServerDialect(Dialect):
    name = "llama-server"
    order = 15  # after llama.cpp (llama_cpp.server answers /extras/tokenize, this server does not), before vLLM
    id_rows = True
    constraint_kinds = ("json", "gbnf", "choice")

    def __init__(self) -> None:
        self.props: Optional[dict] = None

    @classmethod
    def matches(cls, session: Session) -> bool:
        """``GET /props`` answers llama-server's fields (``default_generation_settings``, ``total_slots``)."""
        try:
            data = session.transport.get(session.root_url + "/props", "probe", retry=False)
        except (RequestFailedError, MalformedResponseError, RetryExhaustedError):
            return False
        return isinstance(data, dict) and "default_generation_settings" in data and "total_slots" in data

    def server_props(self, session: Session) -> dict:
        """``GET /props``, read once."""
        if self.props is None:
            data = session.transport.get(session.root_url + "/props", "probe")
            self.props = data if isinstance(data, dict) else {}
        return self.props

    def token_ids_reason(self) -> str:
        return (
            "llama-server takes token-id prompts, several per /completion request (one task per parallel slot), "
            "and reports the model's own next-token log-probs by id (n_probs, post_sampling_probs false): every "
            "trie node exact, the local prompt/choice boundary"
        )

    def echo_refusal(self, session: Session) -> Optional[str]:
        """One echo request: llama-server answers only the generated token (the prompt's log-probs are not
        returned, whatever ``echo`` says); the refusal names that, and what scores choices here instead."""
        body = {"prompt": ECHO_PROBE, "max_tokens": 1, "temperature": 0.0, "echo": True, "logprobs": 1}
        data = session.transport.post(session.base_url + "/completions", body, kind="completions")
        choice = (data.get("choices") or [{}])[0] if isinstance(data, dict) else {}
        logprobs = choice.get("logprobs") if isinstance(choice, dict) else None
        entries = (logprobs.get("content") or logprobs.get("tokens") or []) if isinstance(logprobs, dict) else []
        echoed = isinstance(choice, dict) and str(choice.get("text", "")).startswith(ECHO_PROBE)
        if echoed and len(entries) > 1:
            return None  # a future llama-server that echoes: probed as any other server
        return (
            f"llama-server ignores echo: /v1/completions answered {len(entries)} log-prob entr"
            f"{'y' if len(entries) == 1 else 'ies'} for the generated token only, none for the prompt's tokens; "
            "choices are scored exactly by token-id rows on /completion instead (strategy 'auto' or 'descent')"
        )

    def sampling_extras(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """llama-server's sampler defaults (top_k 40, min_p 0.05, top_p 0.95) reset to the plain ones the local
        backends use unless asked (``top_p`` is always sent)."""
        min_p = float(settings.get("min_p") or 0.0)
        return {"repeat_penalty": 1.0, "min_p": min_p, "top_k": int(settings.get("top_k") or 0)}

    def constraint_fields(self, constraint: NativeConstraint, chat: bool) -> tuple[str, dict[str, Any]]:
        """``json_schema`` (converted to a grammar by the server), else a GBNF ``grammar``
        (``constraint.to_gbnf()``: a GBNF grammar as is, choices converted); both endpoints take them."""
        endpoint = "chat" if chat else "completions"
        if constraint.kind == "json":
            return endpoint, {"json_schema": constraint.schema}
        assert constraint.to_gbnf is not None, "a constraint for llama-server needs its GBNF form (to_gbnf)"
        return endpoint, {"grammar": constraint.to_gbnf()}

    def server_tokenizer(self, session: Session) -> Optional[Tokenizer]:
        return LlamaServerTokenizer(session.transport.post, session.root_url, session.concurrency)

    def chat_template(self, session: Session, messages: list[dict], add_generation_prompt: bool) -> Optional[str]:
        """The server's own rendering (``POST /apply-template``): what its chat endpoint evaluates."""
        body = {"messages": messages, "add_generation_prompt": add_generation_prompt}
        data = session.transport.post(session.root_url + "/apply-template", body, kind="tokenize")
        prompt = data.get("prompt") if isinstance(data, dict) else None
        if not isinstance(prompt, str):
            raise MalformedResponseError(f"{session.root_url}/apply-template answered no prompt: {str(data)[:200]}")
        return prompt

    def bos_text(self, session: Session) -> Optional[str]:
        bos = self.server_props(session).get("bos_token")
        return bos if isinstance(bos, str) and bos else None

    def specials(self, session: Session) -> tuple[Optional[str], Optional[str]]:
        """(BOS text, EOS text) as ``/props`` says them."""
        props = self.server_props(session)
        bos, eos = props.get("bos_token"), props.get("eos_token")
        return (bos if isinstance(bos, str) and bos else None), (eos if isinstance(eos, str) and eos else None)
