"""The offline models (public path of `autocog.lm.assets` and `autocog.gguf.models`): the embedded SmolLM2 GGUF
and its transformers form, and the tiny random Llama built on the fly."""

from autocog.gguf.models import tiny_llama, tiny_llama_gguf
from autocog.lm.assets import smollm2_gguf, smollm2_transformers

__all__ = ["smollm2_gguf", "smollm2_transformers", "tiny_llama", "tiny_llama_gguf"]
