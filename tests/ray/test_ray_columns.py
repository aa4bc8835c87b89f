"""autocog.ray.columns: one batch in Ray's three formats reads back as plain values and takes new columns."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from autocog.ray.columns import Batch, plain

MESSAGES = [{"role": "user", "content": "hi"}]
ROWS = {"prompt": ["a", MESSAGES], "choices": [["x", "y"], None]}


def formats():
    """The same two rows as a numpy dict (object arrays of arrays, as Ray stores lists), pandas and a dict of lists."""
    numpy = {
        "prompt": np.array(["a", np.array(MESSAGES, dtype=object)], dtype=object),
        "choices": np.array([np.array(["x", "y"], dtype=object), None], dtype=object),
    }
    return {"numpy": numpy, "pandas": pd.DataFrame(numpy), "lists": dict(ROWS)}


@pytest.mark.parametrize("kind", ["numpy", "pandas", "lists"])
def test_columns_read_as_plain_values(kind):
    batch = Batch(formats()[kind])
    assert len(batch) == 2
    assert batch.column("prompt") == ROWS["prompt"]
    assert batch.column("choices") == ROWS["choices"]
    assert batch.column_or("prior") == [None, None]
    with pytest.raises(KeyError, match="no 'prior' column.*prompt, choices"):
        batch.column("prior")


def test_arrow_batches_keep_their_types():
    table = pa.table({"prompt": ["a", "b"]})
    out = Batch(table).with_columns({"error": [None, None], "prompt": ["c", "d"]}, types={"error": pa.string()})
    assert out.schema.field("error").type == pa.string()  # all null, still a string column
    assert out.to_pylist() == [{"prompt": "c", "error": None}, {"prompt": "d", "error": None}]


def test_plain_and_a_bad_batch():
    assert plain({"a": np.int64(3), "b": (np.float32(0.5),)}) == {"a": 3, "b": [0.5]}
    assert plain(np.array([[1, 2]])) == [[1, 2]]
    with pytest.raises(TypeError, match="batch_format"):
        Batch([1, 2])


@pytest.mark.parametrize("kind", ["numpy", "pandas", "lists"])
def test_new_columns_keep_python_values(kind):
    new = {"probs": [[0.25, 0.75], None], "prediction": [1, None], "error": [None, "ValueError: bad"]}
    out = Batch(Batch(formats()[kind]).with_columns(new))
    assert {name: out.column(name) for name in new} == new
    assert out.column("prompt") == ROWS["prompt"]
