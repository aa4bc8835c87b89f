"""How the next token is chosen: `SamplingParams` (the settings, checked once) and `sample` (one draw).

>>> params = SamplingParams.from_settings({"max_new_tokens": 8, "temperature": 0.7})
>>> params.max_tokens, params.temperature, params.is_greedy
(8, 0.7, False)
>>> sample(np.log(np.array([0.2, 0.8])), SamplingParams())   # greedy: the argmax
1
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Optional, Union

import numpy as np

__all__ = ["SamplingParams", "sample"]

# AutoCog's and transformers' names for the same settings.
_ALIASES = {"max_new_tokens": "max_tokens"}
# Accepted and ignored: sampling is decided by the temperature.
_IGNORED = frozenset({"do_sample"})


@dataclass(frozen=True)
class SamplingParams:
    """The settings of one generation, checked when built (`ValueError` for a value out of range).

    * ``max_tokens``: the most tokens generated (>= 0; EOS and stop strings end sooner);
    * ``temperature``: 0 is greedy (argmax), above 0 a draw from the log-probs divided by it;
    * ``top_k`` (0 or less: all tokens), ``top_p`` (nucleus, in [0, 1]), ``min_p`` (in [0, 1]: keep the tokens whose
      probability is at least ``min_p`` times the best one's), applied in that order (transformers' order);
    * ``seed``: the draws' seed (None: fresh entropy each call).
    """

    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: Optional[int] = None

    def __post_init__(self) -> None:
        if self.max_tokens is None or isinstance(self.max_tokens, bool) or int(self.max_tokens) < 0:
            raise ValueError(f"max_tokens must be a non-negative int, got {self.max_tokens!r}")
        if float(self.temperature) < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature!r}")
        if not 0.0 <= float(self.top_p) <= 1.0:
            raise ValueError(f"top_p must be in [0, 1], got {self.top_p!r}")
        if not 0.0 <= float(self.min_p or 0.0) <= 1.0:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p!r}")
        # frozen: normalize the types once, so that every reader sees ints and floats
        object.__setattr__(self, "max_tokens", int(self.max_tokens))
        object.__setattr__(self, "temperature", float(self.temperature))
        object.__setattr__(self, "top_p", float(self.top_p))
        object.__setattr__(self, "top_k", int(self.top_k or 0))
        object.__setattr__(self, "min_p", float(self.min_p or 0.0))
        object.__setattr__(self, "seed", None if self.seed is None else int(self.seed))

    @classmethod
    def from_settings(
        cls, settings: Mapping[str, Any], base: Union[SamplingParams, Mapping[str, Any], None] = None
    ) -> SamplingParams:
        """``base`` (default: the defaults above) updated with ``settings``, the keyword settings of
        ``complete`` / ``completion_kwargs``: the field names, ``max_new_tokens`` (an alias of ``max_tokens``)
        and ``do_sample`` (ignored). An unknown name raises `TypeError`."""
        values = base.as_dict() if isinstance(base, SamplingParams) else dict(base or {})
        names = [f.name for f in fields(cls)]
        for key, value in settings.items():
            if key in _IGNORED:
                continue
            key = _ALIASES.get(key, key)
            if key not in names:
                raise TypeError(f"unknown completion setting {key!r}: expected one of {', '.join(names)}")
            values[key] = value
        return cls(**values)

    def replace(self, **settings: Any) -> SamplingParams:
        """A copy with ``settings`` changed (same names as `from_settings`)."""
        return self.from_settings(settings, self)

    def as_dict(self) -> dict[str, Any]:
        """The settings by name, e.g. to build a server's request body."""
        return asdict(self)

    @property
    def is_greedy(self) -> bool:
        """True when decoding takes the argmax (``temperature == 0``)."""
        return self.temperature <= 0


def sample(logprobs: np.ndarray, params: SamplingParams, rng: Optional[np.random.Generator] = None) -> int:
    """The next token from ``logprobs`` under ``params``: the argmax when greedy, else a draw (with ``rng``,
    default a fresh generator) after top-k, top-p and min-p filtering at the temperature."""
    if params.is_greedy:
        return int(np.argmax(logprobs))
    rng = rng if rng is not None else np.random.default_rng()
    scaled = np.asarray(logprobs, dtype=np.float64) / params.temperature
    order = np.argsort(-scaled, kind="stable")
    if params.top_k > 0:
        order = order[: params.top_k]
    probs = np.exp(scaled[order] - scaled[order[0]])
    probs /= probs.sum()
    if params.top_p < 1.0:
        keep = int(np.searchsorted(np.cumsum(probs), params.top_p) + 1)
        order, probs = order[:keep], probs[:keep] / probs[:keep].sum()
    if params.min_p > 0:
        keep = int(np.count_nonzero(probs >= params.min_p * probs[0]))  # probs is sorted, probs[0] the largest
        order, probs = order[:keep], probs[:keep] / probs[:keep].sum()
    return int(order[rng.choice(len(order), p=probs)])
