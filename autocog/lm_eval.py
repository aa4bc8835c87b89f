"""``import autocog.lm_eval`` registers the model ``autocog`` with lm-evaluation-harness (public path of
`autocog.eval.lm_eval`)."""

from autocog.eval.lm_eval import *  # noqa: F403
from autocog.eval.lm_eval import __all__  # noqa: F401
