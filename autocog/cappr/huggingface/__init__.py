"""CAPPr's ``cappr.huggingface`` on autocog: `autocog.cappr.huggingface.classify` (a transformers model and
tokenizer, wrapped as `autocog.lm.TfLM` without reloading)."""

from autocog.cappr.huggingface import classify

__all__ = ["classify"]
