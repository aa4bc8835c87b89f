"""CAPPr's ``cappr.openai`` on autocog: `autocog.cappr.openai.classify` (a model name plus client arguments, on
the `autocog.lm.OpenAI` backend)."""

from autocog.cappr.openai import classify

__all__ = ["classify"]
