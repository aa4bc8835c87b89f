"""The transformers backend: `TfLM` (any causal LM, or a GGUF file through transformers' loader)."""

from autocog.lm.tf.model import TfLM

__all__ = ["TfLM"]
