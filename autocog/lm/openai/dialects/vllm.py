"""vLLM: ``/tokenize`` and ``/detokenize``, token-id prompts with ``prompt_logprobs`` (echo by ids), ``top_k``
and ``min_p`` as extras, the chat template through ``/tokenize`` with messages, BOS/EOS from
``/tokenizer_info`` (started with ``--enable-tokenizer-info-endpoint``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Optional

from autocog.errors import MalformedResponseError, RequestFailedError, RetryExhaustedError
from autocog.lm.openai.dialects.base import Dialect
from autocog.lm.openai.tokenizers import VllmServerTokenizer

if TYPE_CHECKING:  # pragma: no cover
    from autocog.core.constraint import NativeConstraint
    from autocog.lm.openai.session import Session
    from autocog.lm.openai.tokenizers import Tokenizer


class VllmDialect(Dialect):
    name = "vllm"
    order = 20
    constraint_kinds = ("json", "regex", "lark", "gbnf", "choice")
    token_id_prompts = True
    unconditional_hint = " or start vLLM with --enable-tokenizer-info-endpoint"

    def constraint_fields(self, constraint: NativeConstraint, chat: bool) -> tuple[str, dict[str, Any]]:
        """``structured_outputs``: ``{"json"}``, ``{"regex"}``, ``{"grammar"}`` (Lark or GBNF) or ``{"choice"}``."""
        kind = constraint.kind
        spec: Any = (
            constraint.schema
            if kind == "json"
            else list(constraint.choices or ())
            if kind == "choice"
            else constraint.source
        )
        key = "grammar" if kind in ("lark", "gbnf") else kind
        return ("chat" if chat else "completions"), {"structured_outputs": {key: spec}}

    def __init__(self) -> None:
        self.found: Optional[tuple[Optional[str], Optional[str]]] = None  # (BOS, EOS) once asked

    @classmethod
    def matches(cls, session: Session) -> bool:
        body = {"model": session.transport.model_name or "", "prompt": "a"}
        try:
            data = session.transport.post(session.root_url + "/tokenize", body, retry=False, kind="probe")
        except (RequestFailedError, MalformedResponseError, RetryExhaustedError):
            return False
        # A non-empty list: llama-server answers {"tokens": []} to a body without its "content" field.
        return isinstance(data, dict) and isinstance(data.get("tokens"), list) and bool(data["tokens"])

    def sampling_extras(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        extra = super().sampling_extras(settings)
        if settings.get("top_k"):
            extra["top_k"] = int(settings["top_k"])
        return extra

    def token_ids_reason(self) -> str:
        return (
            "vLLM takes lists of token-id prompts and reports each prompt token's log-prob by id "
            "(prompt_logprobs): exact, the local prompt/choice boundary, several choices and prompts per "
            "request"
        )

    def server_tokenizer(self, session: Session) -> Optional[Tokenizer]:
        return VllmServerTokenizer(session.transport.post, session.root_url, session.model, session.concurrency)

    def chat_template(self, session: Session, messages: list[dict], add_generation_prompt: bool) -> Optional[str]:
        body = {"model": session.model, "messages": messages, "add_generation_prompt": add_generation_prompt}
        data = session.transport.post(session.root_url + "/tokenize", body)
        tokens = data.get("tokens") if isinstance(data, dict) else None
        return session.tokenizer.decode(tokens) if isinstance(tokens, list) and tokens else None  # never ''

    def specials(self, session: Session) -> tuple[Optional[str], Optional[str]]:
        """(BOS text, EOS text) from ``/tokenizer_info`` (None where absent or the endpoint is off)."""
        if self.found is None:
            try:
                info = session.transport.get(session.root_url + "/tokenizer_info", "models")
            except (RequestFailedError, RetryExhaustedError, MalformedResponseError):
                info = {}
            self.found = (token_text(info, "bos_token"), token_text(info, "eos_token"))
        return self.found


def token_text(info: Any, key: str) -> Optional[str]:
    value = info.get(key) if isinstance(info, dict) else None
    if isinstance(value, dict):  # an AddedToken as JSON
        value = value.get("content")
    return value if isinstance(value, str) and value else None
