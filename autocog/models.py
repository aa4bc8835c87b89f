"""The offline models (public path of `autocog.gguf.models`): the embedded SmolLM2 GGUF and its transformers
form, and the tiny random Llama built on the fly."""

from autocog.gguf.models import (
    smollm2_gguf,
    smollm2_transformers,
    tiny_llama,
    tiny_llama_gguf,
)

__all__ = ["smollm2_gguf", "smollm2_transformers", "tiny_llama", "tiny_llama_gguf"]
