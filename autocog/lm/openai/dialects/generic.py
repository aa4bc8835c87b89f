"""Any other OpenAI-compatible server (SGLang, LM Studio, a proxy...): the OpenAI schema and ``min_p``; never
detected, it is what detection falls back to."""

from __future__ import annotations

from autocog.lm.openai.dialects.base import Dialect


class GenericDialect(Dialect):
    name = "generic"
