"""OpenAI's own API (``api.openai.com``): chat models by default, 5 top log-probs on completions, at most 4 stop
strings, no ``min_p``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence
from urllib.parse import urlsplit

from autocog.lm.openai.dialects.base import Dialect

if TYPE_CHECKING:  # pragma: no cover
    from autocog.core.constraint import NativeConstraint
    from autocog.lm.openai.session import Session

COMPLETION_MODELS = ("gpt-3.5-turbo-instruct", "davinci-002", "babbage-002")
MAX_STOPS = 4  # the most stop strings the API takes (more are matched here)


class OpenAIDialect(Dialect):
    name = "openai"
    order = 0
    constraint_kinds = ("json",)

    @classmethod
    def matches(cls, session: Session) -> bool:
        return (urlsplit(str(session.client.base_url)).hostname or "").endswith("openai.com")

    def default_chat(self, model: str) -> bool:
        name = model.lower()
        return not any(name.startswith(m) for m in COMPLETION_MODELS)

    def default_top_logprobs(self, chat: bool) -> int:
        return 20 if chat else 5

    def sampling_extras(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        if float(settings.get("min_p") or 0.0) > 0:
            raise ValueError("OpenAI's API has no min_p: use it with llama.cpp, vLLM or a local backend")
        return {}

    def server_stops(self, stops: Sequence[str], stream: bool) -> list[str]:
        return list(stops) if len(stops) <= MAX_STOPS else []

    def constraint_fields(self, constraint: NativeConstraint, chat: bool) -> tuple[str, dict[str, Any]]:
        """JSON only, on the chat endpoint: ``response_format`` with a ``json_schema``."""
        name = "".join(c if c.isalnum() or c in "_-" else "_" for c in constraint.name)[:64]
        return "chat", {
            "response_format": {"type": "json_schema", "json_schema": {"name": name, "schema": constraint.schema}}
        }
