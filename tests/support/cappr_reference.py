"""CAPPr 0.9.6, the drop-in's reference, imported behind its shim (`cappr_shim`: transformers 5, numpy 2). The
tests import CAPPr from here, so the shim is in place first whatever the test order, and only where CAPPr is used.

>>> from cappr_reference import hf_classify, hf_no_cache     # doctest: +SKIP
"""

import cappr_shim

cappr_shim.apply()

import cappr
from cappr.huggingface import classify as hf_classify
from cappr.huggingface import classify_no_cache as hf_no_cache
from cappr.llama_cpp import _classify_no_cache as llama_no_cache
from cappr.llama_cpp import classify as llama_classify

__all__ = ["cappr", "hf_classify", "hf_no_cache", "llama_classify", "llama_no_cache"]
