"""`LRU`: a bounded, thread-safe mapping that forgets the least recently used entry first.

The one cache type of the project (choice tokens, pmi's unconditional log-probs, a server's scored texts and
token ids). ``maxsize=0`` keeps nothing.

>>> cache = LRU(2)
>>> cache["a"], cache["b"] = 1, 2
>>> cache.get("a"), cache.get("b")
(1, 2)
>>> cache["c"] = 3            # forgets "a", the least recently used
>>> list(cache)
['b', 'c']
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from typing import Generic, Optional, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(Generic[K, V]):
    """At most ``maxsize`` entries; a read (`get`, `[]`, ``in`` does not count) makes an entry the most recent."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 0:
            raise ValueError(f"maxsize must be >= 0, got {maxsize}")
        self.maxsize = maxsize
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K, default: Optional[V] = None) -> Optional[V]:
        with self._lock:
            if key not in self._data:
                return default
            self._data.move_to_end(key)
            return self._data[key]

    def __getitem__(self, key: K) -> V:
        with self._lock:
            value = self._data[key]
            self._data.move_to_end(key)
            return value

    def __setitem__(self, key: K, value: V) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._data))

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
