"""The llama.cpp backend: `LLaMa` (a GGUF file through llama-cpp-python)."""

from autocog.lm.llama.model import LLaMa

__all__ = ["LLaMa"]
