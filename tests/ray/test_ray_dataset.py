"""autocog.ray.dataset: the helpers hand map_batches the class, the LM's keywords and Ray's settings (no cluster:
a stand-in Dataset records the call; tests/ray/test_ray_actors.py runs them on a local Ray)."""

import pytest

ray = pytest.importorskip("ray")

import autocog.ray
from autocog.ray import ChoiceScorer, Completer, Generator


class Recorder:
    """Records ``map_batches``' arguments instead of running them."""

    def map_batches(self, fn, **kwargs):
        self.fn, self.kwargs = fn, kwargs
        return self


def test_score_passes_load_keywords_and_ray_settings():
    ds = autocog.ray.score(
        Recorder(),
        backend="openai",
        model="m",
        choices=[" a", " b"],
        base_url="http://127.0.0.1:8000/v1",
        parallel=16,
        concurrency=3,
        num_gpus=1,
        batch_size=8,
        map_kwargs={"scheduling_strategy": "SPREAD"},
    )
    assert ds.fn is ChoiceScorer
    constructor = ds.kwargs["fn_constructor_kwargs"]
    assert constructor["parallel"] == 16 and constructor["base_url"] == "http://127.0.0.1:8000/v1"
    assert constructor["batch_size"] == 8 == ds.kwargs["batch_size"]  # one Ray batch = one backend batch
    assert (constructor["backend"], constructor["model"], constructor["choices"]) == ("openai", "m", [" a", " b"])
    compute = ds.kwargs["compute"]
    assert isinstance(compute, ray.data.ActorPoolStrategy) and compute.min_size == compute.max_size == 3
    assert ds.kwargs["num_gpus"] == 1 and ds.kwargs["num_cpus"] is None
    assert ds.kwargs["scheduling_strategy"] == "SPREAD" and ds.kwargs["batch_format"] == "pyarrow"


def test_complete_generate_and_an_autoscaling_pool():
    ds = autocog.ray.complete(Recorder(), "llama", stop=".", complete_kwargs={"max_tokens": 4}, concurrency=(1, 4))
    assert ds.fn is Completer and ds.kwargs["fn_constructor_kwargs"]["complete_kwargs"] == {"max_tokens": 4}
    assert (ds.kwargs["compute"].min_size, ds.kwargs["compute"].max_size) == (1, 4)
    ds = autocog.ray.generate(Recorder(), "llama", output_type={"type": "integer"}, n_threads=1)
    assert ds.fn is Generator and ds.kwargs["fn_constructor_kwargs"]["n_threads"] == 1
    for bad in (0, True, 1.5):
        with pytest.raises(ValueError, match="concurrency must be a positive int"):
            autocog.ray.score(Recorder(), "llama", concurrency=bad)
