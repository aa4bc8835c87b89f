"""autocog on Ray Data (``pip install autocog[ray]``): score, complete and generate over a ``ray.data.Dataset``
with one LM per actor, on one machine or a cluster. See docs/ray.md.

* `ChoiceScorer`, `Completer`, `Generator`: callable classes for ``Dataset.map_batches`` (`autocog.ray.actors`);
* `score`, `complete`, `generate`: ``map_batches`` with them in one call (`autocog.ray.dataset`).

``import autocog`` never imports Ray; ``import autocog.ray`` without it raises `BackendNotInstalledError`
(an ImportError) naming the extra.

>>> import ray, autocog.ray                                                               # doctest: +SKIP
>>> ds = ray.data.from_items([{"prompt": "The sky is"}, {"prompt": "Grass is"}])          # doctest: +SKIP
>>> autocog.ray.score(ds, backend="llama", choices=[" blue", " green"]).take_all()        # doctest: +SKIP
"""

from __future__ import annotations

from autocog.errors import BackendNotInstalledError

try:
    import pyarrow  # noqa: F401
    import ray.data  # noqa: F401
except ImportError as error:
    raise BackendNotInstalledError(
        f"autocog.ray needs Ray Data, which cannot be imported ({error}): pip install autocog[ray]"
    ) from error

from autocog.ray.actors import ChoiceScorer, Completer, Generator
from autocog.ray.dataset import complete, generate, score

__all__ = ["ChoiceScorer", "Completer", "Generator", "complete", "generate", "score"]
