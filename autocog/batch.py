"""The batch API (public path): `predict_proba`, `predict` and their `_examples` forms, and the async
`apredict_proba`, `apredict`; see `autocog.eval.batch`."""

from autocog.eval.batch import (
    Example,
    apredict,
    apredict_proba,
    predict,
    predict_examples,
    predict_proba,
    predict_proba_examples,
)

__all__ = [
    "Example",
    "apredict",
    "apredict_proba",
    "predict",
    "predict_examples",
    "predict_proba",
    "predict_proba_examples",
]
