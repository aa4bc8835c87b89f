"""The transformers backend: `TfLM` (any causal LM, or a GGUF file through transformers' loader), and
`ChoicePipeline`, the transformers pipeline of task ``"choice-classification"`` over it (`autocog.lm.tf.pipeline`,
imported on first use: it registers the task with transformers)."""

from typing import Any

from autocog.lm.tf.model import TfLM

__all__ = ["PIPELINE_TASK", "ChoicePipeline", "TfLM", "register_pipeline"]

_PIPELINE_NAMES = frozenset({"PIPELINE_TASK", "ChoicePipeline", "register_pipeline"})


def __getattr__(name: str) -> Any:
    """The pipeline's names, from `autocog.lm.tf.pipeline` (which imports transformers) on first use."""
    if name not in _PIPELINE_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from autocog.lm.tf import pipeline

    return getattr(pipeline, name)
