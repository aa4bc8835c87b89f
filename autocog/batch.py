"""The batch API (public path): `predict_proba`, `predict` and their `_examples` forms; see `autocog.eval.batch`."""

from autocog.eval.batch import (
    Example,
    predict,
    predict_examples,
    predict_proba,
    predict_proba_examples,
)

__all__ = ["Example", "predict", "predict_examples", "predict_proba", "predict_proba_examples"]
