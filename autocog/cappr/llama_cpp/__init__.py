"""CAPPr's ``cappr.llama_cpp`` on autocog: `autocog.cappr.llama_cpp.classify` (a ``llama_cpp.Llama``, wrapped as
`autocog.lm.LLaMa` without reloading)."""

from autocog.cappr.llama_cpp import classify

__all__ = ["classify"]
