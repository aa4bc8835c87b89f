"""Test-only shim so that CAPPr 0.9.6 (the reference of tests/cappr and bench/cappr.py) runs under transformers 5
and numpy 2: `apply()` before importing ``cappr``.

* transformers 5 removed ``DynamicCache.from_legacy_cache`` / ``to_legacy_cache`` (tuples of (keys, values) per
  layer), which CAPPr's KV cache calls;
* numpy 2 moved ``np.VisibleDeprecationWarning`` to ``np.exceptions``.

>>> apply(); import cappr.huggingface.classify     # doctest: +SKIP
"""

import numpy as np


def _from_legacy_cache(cls, past_key_values=None):
    return cls() if past_key_values is None else cls(ddp_cache_data=tuple(past_key_values))


def _to_legacy_cache(self):
    return tuple((layer.keys, layer.values) for layer in self.layers)


def apply() -> None:
    """Patch the two names in place (idempotent)."""
    if not hasattr(np, "VisibleDeprecationWarning"):
        np.VisibleDeprecationWarning = np.exceptions.VisibleDeprecationWarning  # type: ignore[attr-defined]
    from transformers import DynamicCache

    if not hasattr(DynamicCache, "from_legacy_cache"):
        DynamicCache.from_legacy_cache = classmethod(_from_legacy_cache)  # type: ignore[attr-defined]
    if not hasattr(DynamicCache, "to_legacy_cache"):
        DynamicCache.to_legacy_cache = _to_legacy_cache  # type: ignore[attr-defined]
