"""autocog.ray on a local Ray (2 CPUs) with the tiny random Llama (llama.cpp, F32 KV): Ray's scores equal the
batch API's in one process, with 1 and 2 actors; per-row choices, chat prompts, a bad row; Completer, Generator.
The classes are also called directly (no Ray) where that is enough."""

import json
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("llama_cpp")

from randomized import make_prompts
from references import EXACT

import autocog
from autocog.batch import predict_proba
from autocog.gguf.models import tiny_llama_gguf
from autocog.lm import load
from autocog.ray import ChoiceScorer, Completer, Generator
from autocog.ray.actors import score_rows

TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}<|assistant|>\n"
LOAD = dict(n_ctx=512, n_threads=1, n_threads_batch=1, chat_template=TEMPLATE, **EXACT)
CHOICES = [" yes", " no", " the quick", " the quick brown", "1", "10"]
PROMPTS = make_prompts(20, seed=3)
ATOL = 1e-6


@pytest.fixture(scope="module")
def lm():
    return load("llama", model=str(tiny_llama_gguf()), **LOAD)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    with warnings.catch_warnings():  # Ray Data's DataContext() warns about its own deprecated fields
        warnings.simplefilter("ignore", DeprecationWarning)
        ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


def scorer(**kwargs):
    return dict(backend="llama", model=str(tiny_llama_gguf()), **LOAD, **kwargs)


# the one Ray run of the default suite (a local Ray: ~5 s to start, ~2 s per run): 2 actors
@pytest.mark.parametrize("concurrency", [pytest.param(1, marks=pytest.mark.slow), 2])
def test_score_equals_predict_proba(local_ray, lm, concurrency):
    ds = ray.data.from_items([{"prompt": p, "id": i} for i, p in enumerate(PROMPTS)], override_num_blocks=4)
    rows = autocog.ray.score(ds, choices=CHOICES, batch_size=4, concurrency=concurrency, **scorer()).take_all()
    rows.sort(key=lambda r: r["id"])
    expected = predict_proba(lm, PROMPTS, CHOICES, batch_size=4)
    np.testing.assert_allclose(np.array([r["probs"] for r in rows]), expected, atol=ATOL, rtol=0)
    assert [r["prediction"] for r in rows] == list(expected.argmax(axis=1))
    assert {r["error"] for r in rows} == {None}
    assert [r["prompt"] for r in rows] == PROMPTS  # the input columns stay


@pytest.mark.slow  # a local Ray: ~5 s to start, ~2 s per run
def test_map_batches_per_row_choices_and_a_bad_row(local_ray, lm):
    """Ray's default (numpy) batches, ragged per-row choices; the duplicate-choice row gets an error, its batch
    mates are still scored (as a batch of their own)."""
    choice_lists = [CHOICES[: 2 + i % 4] for i in range(len(PROMPTS))]
    choice_lists[5] = [" yes", " yes"]
    ds = ray.data.from_items([{"prompt": p, "choices": c} for p, c in zip(PROMPTS, choice_lists)])
    rows = ds.map_batches(
        ChoiceScorer,
        fn_constructor_kwargs=scorer(batch_size=8),
        batch_size=8,
        compute=ray.data.ActorPoolStrategy(size=1),
    ).take_all()
    assert len(rows) == len(PROMPTS)
    bad = [r for r in rows if r["error"] is not None]
    assert len(bad) == 1 and bad[0]["prompt"] == PROMPTS[5]
    assert re.fullmatch(r"InvalidChoicesError: choice 1 \(' yes'\) duplicates choice 0", bad[0]["error"])
    assert bad[0]["probs"] is None and bad[0]["prediction"] is None
    good = [i for i in range(len(PROMPTS)) if i != 5]
    expected = predict_proba(lm, [PROMPTS[i] for i in good], [choice_lists[i] for i in good], batch_size=8)
    by_prompt = {r["prompt"]: r for r in rows}
    for i, e in zip(good, expected):
        np.testing.assert_allclose(by_prompt[PROMPTS[i]]["probs"], e, atol=ATOL, rtol=0)
        assert by_prompt[PROMPTS[i]]["prediction"] == int(np.argmax(e))


@pytest.mark.slow  # a local Ray: ~5 s to start, ~2 s per run
def test_chat_prompts(local_ray, lm):
    chats = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": p}] for p in PROMPTS[:6]]
    ds = ray.data.from_items([{"prompt": c} for c in chats], override_num_blocks=2)
    rows = autocog.ray.score(ds, choices=CHOICES, batch_size=3, **scorer()).take_all()
    by_text = {r["prompt"][1]["content"]: r for r in rows}
    expected = predict_proba(lm, chats, CHOICES, batch_size=3)
    for chat, e in zip(chats, expected):
        np.testing.assert_allclose(by_text[chat[1]["content"]]["probs"], e, atol=ATOL, rtol=0)


@pytest.mark.slow  # a local Ray: ~5 s to start, ~2 s per run
def test_completer_and_generator(local_ray, lm):
    prompts = PROMPTS[:4]
    ds = ray.data.from_items([{"prompt": p} for p in prompts])
    settings = dict(max_tokens=6)
    rows = autocog.ray.complete(ds, stop="\n", complete_kwargs=settings, batch_size=2, **scorer()).take_all()
    assert {r["prompt"]: r["completion"] for r in rows} == {p: lm.complete(p, stop="\n", **settings) for p in prompts}
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    out = autocog.ray.generate(ds, output_type=schema, generate_kwargs=dict(max_tokens=24), batch_size=2, **scorer())
    got = {r["prompt"]: json.loads(r["output"]) for r in out.take_all()}
    assert got == {p: autocog.generate(lm, schema, p, max_tokens=24) for p in prompts}
    assert all(isinstance(v["n"], int) for v in got.values())


# --- the classes called directly (no Ray) ---------------------------------------------------------------


def test_a_bad_request_splits_its_batch_in_halves(lm, monkeypatch):
    import autocog.ray.actors as actors

    sizes = []
    real = actors.score

    def spy(lm_, requests, **kwargs):
        sizes.append(len(requests))
        return real(lm_, requests, **kwargs)

    monkeypatch.setattr(actors, "score", spy)
    requests = [autocog.ScoreRequest(p, CHOICES) for p in PROMPTS[:8]]
    requests[6] = autocog.ScoreRequest(PROMPTS[6], [" a", ""])
    out = score_rows(lm, requests, batch_size=8)
    assert [type(o).__name__ for o in out] == ["ChoiceResult"] * 6 + ["InvalidChoicesError", "ChoiceResult"]
    assert sizes == [8, 4, 4, 2, 2, 1, 1]  # the bad request is isolated in log2(8) splits
    expected = predict_proba(lm, PROMPTS[:6], CHOICES)
    np.testing.assert_allclose(np.stack([o.probs for o in out[:6]]), expected, atol=ATOL, rtol=0)


def test_rows_without_choices_and_raise_errors():
    import pyarrow as pa

    direct = ChoiceScorer(**scorer())  # no shared choices
    out = direct(pa.table({"prompt": ["a", "b"], "choices": [None, [" x", " y"]]})).to_pylist()
    assert out[0]["error"].startswith("ValueError: the row has no 'choices'") and out[1]["error"] is None
    strict = ChoiceScorer(**scorer(choices=[" x", " x"], raise_errors=True))
    with pytest.raises(autocog.errors.InvalidChoicesError):
        strict({"prompt": np.array(["a"], dtype=object)})
    generator = Generator(**scorer(), output_type=autocog.Regex("[0-9]{3}"), generate_kwargs=dict(max_tokens=8))
    rows = generator({"prompt": np.array(["Number:", ""], dtype=object)})
    assert re.fullmatch(r'"[0-9]{3}"', rows["output"][0]) and rows["error"] == [None, None]
    completer = Completer(**scorer(), complete_kwargs=dict(max_tokens=-1))
    rows = completer({"prompt": ["x"]})
    assert rows["completion"] == [None] and rows["error"][0].startswith("ValueError: max_tokens")


def test_import_autocog_does_not_import_ray_and_a_missing_ray_names_the_extra():
    code = (
        "import sys, autocog, autocog.lm, autocog.batch; assert 'ray' not in sys.modules\n"
        "sys.modules['ray'] = None\n"
        "try:\n    import autocog.ray\nexcept ImportError as e:\n    print(type(e).__name__, e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("BackendNotInstalledError autocog.ray needs Ray Data") and "pip install autocog[ray]" in out
