"""Read and write the columns of one Ray Data batch, whatever its format: a dict of numpy arrays (Ray's
``"numpy"``/``"default"``), a ``pandas.DataFrame`` or a ``pyarrow.Table``.

Values are read back as plain Python: Ray stores a list column (``"choices"``, chat messages) in a numpy batch
as an object array of numpy arrays, and a struct as a dict; `plain` turns those into lists, dicts, str, int
and float, which is what the scoring layer checks prompts and choices against. New columns are written in the
batch's own format (pyarrow: with fixed types, so that a batch whose column is all nulls keeps its type).

>>> batch = {"prompt": np.array(["a", "b"], dtype=object)}
>>> Batch(batch).column("prompt")
['a', 'b']
>>> sorted(Batch(batch).with_columns({"error": [None, "bad"]}))
['error', 'prompt']
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np

__all__ = ["Batch", "plain"]


def plain(value: Any) -> Any:
    """``value`` with numpy arrays and scalars turned into lists and Python scalars, at any depth.

    >>> plain(np.array([{"role": "user", "content": np.str_("hi")}], dtype=object))
    [{'role': 'user', 'content': 'hi'}]
    """
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()] if value.dtype == object else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


class Batch:
    """One batch as ``map_batches`` hands it over; ``column`` reads, ``with_columns`` returns a new batch."""

    def __init__(self, data: Any):
        self.data = data
        self.kind = _kind(data)

    @property
    def names(self) -> list[str]:
        return list(self.data.column_names if self.kind == "arrow" else self.data.keys())

    def __len__(self) -> int:
        if self.kind == "arrow":
            return int(self.data.num_rows)
        if self.kind == "pandas":
            return len(self.data)
        return len(next(iter(self.data.values()))) if self.data else 0

    def column(self, name: str) -> list:
        """The column ``name`` as a list of plain values; a KeyError that lists the batch's columns if missing."""
        if name not in self.names:
            raise KeyError(f"the batch has no {name!r} column (its columns: {', '.join(self.names) or 'none'})")
        if self.kind == "arrow":
            return self.data.column(name).to_pylist()
        values = self.data[name]
        return [plain(v) for v in (values.tolist() if self.kind == "pandas" else values)]

    def column_or(self, name: str, fill: Any = None) -> list:
        """`column`, or ``fill`` on every row when the batch has no column ``name``."""
        return self.column(name) if name in self.names else [fill] * len(self)

    def with_columns(self, columns: Mapping[str, list], types: Optional[Mapping[str, Any]] = None) -> Any:
        """The batch with ``columns`` added (or replaced), in its own format; ``types``: pyarrow types by name."""
        if self.kind == "arrow":
            import pyarrow as pa

            table = self.data
            for name, values in columns.items():
                array = pa.array(values, type=(types or {}).get(name))
                if name in table.column_names:
                    table = table.set_column(table.column_names.index(name), name, array)
                else:
                    table = table.append_column(name, array)
            return table
        if self.kind == "pandas":
            import pandas as pd

            # object columns keep the values as they are: None stays None, an int with nulls stays an int
            index = self.data.index
            return self.data.assign(**{n: pd.Series(list(v), index=index, dtype=object) for n, v in columns.items()})
        out = dict(self.data)
        out.update({name: list(values) for name, values in columns.items()})
        return out


def _kind(data: Any) -> str:
    if isinstance(data, Mapping):
        return "dict"
    module = type(data).__module__
    if module.startswith("pyarrow"):
        return "arrow"
    if module.startswith("pandas"):
        return "pandas"
    raise TypeError(
        f"a batch is a dict of arrays, a pandas.DataFrame or a pyarrow.Table, not {type(data).__name__} "
        "(map_batches' batch_format: 'numpy', 'pandas' or 'pyarrow')"
    )
