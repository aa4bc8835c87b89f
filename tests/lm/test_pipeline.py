"""`ChoicePipeline`: transformers' ``pipeline("choice-classification", ...)`` on TfLM's scoring path, on the tiny
random Llama (and SmolLM2, slow)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from conftest import EASY_FACTS

from autocog.errors import InvalidChoicesError, InvalidNormalizationError, InvalidPromptError
from autocog.lm import ScoreRequest, TfLM
from autocog.lm.tf.pipeline import PIPELINE_TASK, ChoicePipeline, register_pipeline

ROOT = Path(__file__).resolve().parents[2]
CHOICES = [" fox", " dog", " the lazy", " quick brown"]
PROMPTS = [
    "the quick brown",
    "a b c",
    "hello world, and then",
    "x y",
    "The fox jumps over",
    "one two three four five six seven",
    "z",
    "the quick brown dog",
    "first, second, third",
    "lazy",
]


@pytest.fixture(scope="module")
def pipe(tiny_path):
    return transformers.pipeline(PIPELINE_TASK, model=str(tiny_path), device="cpu")


@pytest.fixture(scope="module")
def lm(pipe):
    """A TfLM over the pipeline's own model object: the reference numbers."""
    return TfLM(pipe.model, pipe.tokenizer)


def probs_by_label(output):
    return dict(zip(output["labels"], output["scores"]))


def assert_matches(output, result, atol):
    """A pipeline output against a `ChoiceResult`: the same choices, best first, the same probabilities."""
    assert set(output) == {"sequence", "labels", "scores"}
    assert sorted(output["labels"]) == sorted(result.choices)
    assert output["scores"] == sorted(output["scores"], reverse=True)
    assert output["labels"][0] == result.choice
    assert all(isinstance(s, float) for s in output["scores"])
    assert sum(output["scores"]) == pytest.approx(1.0, abs=1e-9)
    by_label = probs_by_label(output)
    np.testing.assert_allclose([by_label[c] for c in result.choices], result.probs, atol=atol, rtol=0)


def assert_same(actual, expected, atol=1e-6):
    """Two pipeline outputs (or lists of them) alike up to float32 rounding (prefix-cache states may differ)."""
    if isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected)
        for a, e in zip(actual, expected):
            assert_same(a, e, atol)
        return
    assert actual["sequence"] == expected["sequence"] and actual["labels"] == expected["labels"]
    np.testing.assert_allclose(actual["scores"], expected["scores"], atol=atol, rtol=0)


def test_registered_on_import_and_again_by_name(monkeypatch):
    from transformers.pipelines import PIPELINE_REGISTRY

    import autocog.lm.tf

    # the extra task name is registered for this test only
    monkeypatch.setattr(PIPELINE_REGISTRY, "supported_tasks", dict(PIPELINE_REGISTRY.supported_tasks))
    monkeypatch.setattr(ChoicePipeline, "_registered_impl", ChoicePipeline._registered_impl)

    assert PIPELINE_TASK == "choice-classification"
    assert PIPELINE_TASK in PIPELINE_REGISTRY.get_supported_tasks()
    assert PIPELINE_REGISTRY.supported_tasks[PIPELINE_TASK]["impl"] is ChoicePipeline
    assert autocog.lm.tf.ChoicePipeline is ChoicePipeline and autocog.lm.tf.register_pipeline is register_pipeline
    assert register_pipeline("my-choices") == "my-choices"
    assert PIPELINE_REGISTRY.supported_tasks["my-choices"]["impl"] is ChoicePipeline


def test_import_tflm_does_not_import_transformers():
    code = (
        "import sys, json, autocog; from autocog.lm import TfLM; import autocog.lm.tf; "
        "print(json.dumps(['transformers' in sys.modules, 'autocog.lm.tf.pipeline' in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout) == [False, False]


def test_a_model_path_gives_choice_distribution_numbers(pipe, lm):
    assert isinstance(pipe, ChoicePipeline)
    pipe.lm.cache.reset(), lm.cache.reset()
    output = pipe(PROMPTS[0], choices=CHOICES)
    assert output["sequence"] == PROMPTS[0]
    result = lm.choice_distribution(PROMPTS[0], CHOICES)
    assert_matches(output, result, atol=0)  # one prompt, same cache state: choice_distribution's path, bit for bit
    # another prefix-cache state (the KV of the previous prompt reused) moves the numbers by float32 rounding only
    assert_matches(pipe(PROMPTS[1], choices=CHOICES), lm.choice_distribution(PROMPTS[1], CHOICES), atol=1e-6)


def test_a_model_object_is_wrapped_without_reloading(tiny_tf):
    pipe = transformers.pipeline(PIPELINE_TASK, model=tiny_tf.model, tokenizer=tiny_tf.tokenizer, device="cpu")
    assert pipe.lm.model is tiny_tf.model and pipe.lm.tokenizer is tiny_tf.tokenizer
    for prompt in PROMPTS[:3]:
        assert_matches(pipe(prompt, choices=CHOICES), tiny_tf.choice_distribution(prompt, CHOICES), atol=1e-6)


@pytest.mark.parametrize("normalization", ["sum", "mean", "char", "pmi"])
def test_normalization(pipe, lm, normalization):
    output = pipe(PROMPTS[1], choices=CHOICES, normalization=normalization)
    assert_matches(output, lm.choice_distribution(PROMPTS[1], CHOICES, normalization=normalization), atol=1e-6)


def test_a_list_is_scored_in_batches_of_batch_size(pipe, lm, monkeypatch):
    """10 prompts at batch_size=4: three scoring batches (4, 4, 2), each one evaluate_trees call; the numbers
    are choice_distribution's within 1e-6 (a packed pass adds float32 rounding only)."""
    batches, passes = [], []
    score_batch, evaluate_trees = pipe.lm.score_batch, pipe.lm.evaluate_trees
    monkeypatch.setattr(pipe.lm, "score_batch", lambda r, **k: (batches.append(len(r)), score_batch(r, **k))[1])
    monkeypatch.setattr(pipe.lm, "evaluate_trees", lambda j, **k: (passes.append(len(j)), evaluate_trees(j, **k))[1])
    outputs = pipe(PROMPTS, choices=CHOICES, batch_size=4)
    assert batches == [4, 4, 2] and passes == [4, 4, 2]
    assert isinstance(outputs, list) and [o["sequence"] for o in outputs] == PROMPTS
    for prompt, output in zip(PROMPTS, outputs):
        assert_matches(output, lm.choice_distribution(prompt, CHOICES), atol=1e-6)
    batches.clear()
    pipe(PROMPTS[:3], choices=CHOICES)  # transformers' default: batch_size 1
    assert batches == [1, 1, 1]


def test_max_batch_tokens_is_this_calls_bound(pipe, lm, monkeypatch):
    """The bound reaches the packing of this call's one scoring batch, which then takes several passes."""
    packings = []
    pack_groups = pipe.lm.pack_groups

    def recording(jobs, limit):
        groups = pack_groups(jobs, limit)
        packings.append((limit, [len(g) for g in groups]))
        return groups

    monkeypatch.setattr(pipe.lm, "pack_groups", recording)
    outputs = pipe(PROMPTS[:6], choices=CHOICES, batch_size=6, max_batch_tokens=30)
    assert len(packings) == 1 and packings[0][0] == 30 and sum(packings[0][1]) == 6 and len(packings[0][1]) > 1
    pipe(PROMPTS[:6], choices=CHOICES, batch_size=6)
    assert packings[1] == (type(pipe.lm).max_batch_tokens, [6])
    assert pipe.lm.max_batch_tokens == type(pipe.lm).max_batch_tokens  # never set on the model
    for prompt, output in zip(PROMPTS, outputs):
        assert_matches(output, lm.choice_distribution(prompt, CHOICES), atol=1e-6)


def test_batch_size_given_to_the_pipeline(tiny_tf, monkeypatch):
    pipe = transformers.pipeline(
        PIPELINE_TASK, model=tiny_tf.model, tokenizer=tiny_tf.tokenizer, device="cpu", batch_size=8, choices=CHOICES
    )
    batches = []
    score_batch = pipe.lm.score_batch
    monkeypatch.setattr(pipe.lm, "score_batch", lambda r, **k: (batches.append(len(r)), score_batch(r, **k))[1])
    pipe(PROMPTS)
    assert batches == [8, 2]


def test_per_prompt_choices_and_dict_inputs(pipe, lm):
    lists = [[" fox", " dog"], [" a", " b", " c"], [" the lazy", " quick", " brown", " x"]]
    prompts = PROMPTS[:3]
    outputs = pipe(prompts, choices=lists, batch_size=3)
    for prompt, choices, output in zip(prompts, lists, outputs):
        assert_matches(output, lm.choice_distribution(prompt, choices), atol=1e-6)
    dicts = [{"prompt": p, "choices": c} for p, c in zip(prompts, lists)]
    assert_same(pipe(dicts, batch_size=3), outputs)
    assert_same(pipe(dicts[0]), pipe(prompts[0], choices=lists[0]))
    # a dict without choices takes the call's
    assert_same(pipe([{"prompt": prompts[0]}], choices=lists[0]), [pipe(prompts[0], choices=lists[0])])


def test_candidate_labels_top_k_prior_and_defaults(tiny_tf, pipe, lm):
    full = pipe(PROMPTS[0], choices=CHOICES)
    assert_same(pipe(PROMPTS[0], candidate_labels=CHOICES), full)
    top = pipe(PROMPTS[0], choices=CHOICES, top_k=2)
    assert_same(top, full | {"labels": full["labels"][:2], "scores": full["scores"][:2]})
    prior = [0.1, 0.2, 0.3, 0.4]
    with_prior = pipe(PROMPTS[0], choices=CHOICES, prior=prior)
    expected = lm.score_batch([ScoreRequest(PROMPTS[0], CHOICES, prior=prior)])[0]
    assert_matches(with_prior, expected, atol=1e-6)
    defaults = transformers.pipeline(
        PIPELINE_TASK, model=tiny_tf.model, tokenizer=tiny_tf.tokenizer, device="cpu", choices=CHOICES, top_k=1
    )
    assert_same(defaults(PROMPTS[0]), top | {"labels": top["labels"][:1], "scores": top["scores"][:1]})
    assert_same(defaults(PROMPTS[0], top_k=2), top)  # a call's parameter overrides the pipeline's


def test_an_iterable_gives_a_lazy_iterator(pipe, monkeypatch):
    calls = []
    score_batch = pipe.lm.score_batch
    monkeypatch.setattr(pipe.lm, "score_batch", lambda r, **k: (calls.append(len(r)), score_batch(r, **k))[1])
    stream = pipe((p for p in PROMPTS[:5]), choices=CHOICES, batch_size=2)
    assert calls == [] and not isinstance(stream, list)
    first = next(stream)
    assert calls == [2]
    rest = list(stream)
    assert calls == [2, 2, 1]
    assert_same([first, *rest], pipe(PROMPTS[:5], choices=CHOICES, batch_size=2))


def test_a_dataset_column(pipe):
    from transformers.pipelines.pt_utils import KeyDataset

    column = KeyDataset([{"text": p} for p in PROMPTS[:3]], "text")
    outputs = pipe(column, choices=CHOICES, batch_size=2)
    assert not isinstance(outputs, list)
    assert_same(list(outputs), pipe(PROMPTS[:3], choices=CHOICES, batch_size=2))


def test_chat_messages(tiny_path):
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_path)
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    pipe = transformers.pipeline(PIPELINE_TASK, model=str(tiny_path), tokenizer=tokenizer, device="cpu")
    lm = TfLM(pipe.model, tokenizer)
    chat = [{"role": "user", "content": "the quick brown"}]
    output = pipe(chat, choices=CHOICES)
    assert output["sequence"] == chat
    assert_matches(output, lm.choice_distribution(chat, CHOICES), atol=1e-6)
    chats = [chat, [{"role": "user", "content": "a b c"}]]
    for c, o in zip(chats, pipe(chats, choices=CHOICES, batch_size=2)):
        assert_matches(o, lm.choice_distribution(c, CHOICES), atol=1e-6)


@pytest.mark.parametrize("device", ["cpu", -1, torch.device("cpu")])
def test_runs_on_the_pipeline_device(tiny_path, device, monkeypatch):
    pipe = transformers.pipeline(PIPELINE_TASK, model=str(tiny_path), device=device)
    assert pipe.device == torch.device("cpu") == pipe.lm.device == pipe.model.device
    seen = []
    forward = pipe.model.forward

    def recording(*args, **kwargs):
        seen.append({v.device for v in kwargs.values() if isinstance(v, torch.Tensor)})
        return forward(*args, **kwargs)

    monkeypatch.setattr(pipe.model, "forward", recording)
    pipe.lm.cache.reset()
    pipe(PROMPTS[:3], choices=CHOICES, batch_size=3)
    assert seen and all(devices == {pipe.device} for devices in seen)
    assert {p.device for p in pipe.model.parameters()} == {pipe.device}


def test_device_map(tiny_path):
    pipe = transformers.pipeline(PIPELINE_TASK, model=str(tiny_path), device_map="cpu")
    assert pipe.device == torch.device("cpu") == pipe.lm.device
    assert pipe(PROMPTS[0], choices=CHOICES)["labels"]


@pytest.mark.parametrize("dtype, expected", [(torch.float64, torch.float64), ("float32", torch.float32)])
def test_dtype(tiny_path, dtype, expected):
    pipe = transformers.pipeline(PIPELINE_TASK, model=str(tiny_path), device="cpu", dtype=dtype)
    assert pipe.model.dtype == expected == pipe.dtype
    lm = TfLM(pipe.model, pipe.tokenizer)
    assert_matches(pipe(PROMPTS[2], choices=CHOICES), lm.choice_distribution(PROMPTS[2], CHOICES), atol=1e-6)


def test_input_errors_name_the_cause(pipe, monkeypatch):
    calls = []
    monkeypatch.setattr(pipe.lm, "score_batch", lambda r, **k: calls.append(r))
    with pytest.raises(InvalidChoicesError, match="no choices"):
        pipe(PROMPTS[0])
    with pytest.raises(InvalidChoicesError, match="no choices"):
        pipe(PROMPTS[:2])
    with pytest.raises(InvalidChoicesError, match="empty"):
        pipe(PROMPTS[0], choices=[])
    with pytest.raises(InvalidChoicesError, match="duplicates"):
        pipe(PROMPTS[0], choices=[" a", " a"])
    with pytest.raises(InvalidNormalizationError, match="'bogus'.*sum, mean, char, pmi"):
        pipe(PROMPTS[0], choices=CHOICES, normalization="bogus")
    with pytest.raises(InvalidChoicesError, match="2 lists of choices for 3 prompts"):
        pipe(PROMPTS[:3], choices=[[" a"], [" b"]])
    with pytest.raises(InvalidChoicesError, match="per prompt needs a list of prompts"):
        pipe(PROMPTS[0], choices=[[" a"], [" b"]])
    with pytest.raises(InvalidChoicesError, match="not both"):
        pipe(PROMPTS[0], choices=CHOICES, candidate_labels=CHOICES)
    with pytest.raises(InvalidPromptError, match="'prompt' key"):
        pipe({"text": "x"}, choices=CHOICES)
    with pytest.raises(InvalidPromptError, match="int"):
        pipe([PROMPTS[0], 3], choices=CHOICES)
    with pytest.raises(InvalidPromptError, match="not int"):
        pipe(3, choices=CHOICES)
    with pytest.raises(ValueError, match="top_k"):
        pipe(PROMPTS[0], choices=CHOICES, top_k=0)
    with pytest.raises(ValueError, match="batch_size"):
        pipe(PROMPTS, choices=CHOICES, batch_size=0)
    with pytest.raises(ValueError, match="max_batch_tokens"):
        pipe(PROMPTS, choices=CHOICES, max_batch_tokens=0)
    # the last prompt of a list is faulty: nothing is scored
    with pytest.raises(InvalidChoicesError, match="empty"):
        pipe([*PROMPTS[:9], {"prompt": "x", "choices": []}], choices=CHOICES, batch_size=2)
    assert calls == []


def test_saved_and_loaded_back_under_the_task(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    assert "custom_pipelines" not in json.loads((tmp_path / "config.json").read_text())
    again = transformers.pipeline(PIPELINE_TASK, model=str(tmp_path), device="cpu")  # no trust_remote_code
    assert_same(again(PROMPTS[0], choices=CHOICES), pipe(PROMPTS[0], choices=CHOICES))


def test_bad_defaults_fail_at_construction(tiny_tf):
    with pytest.raises(InvalidNormalizationError, match="bogus"):
        transformers.pipeline(
            PIPELINE_TASK, model=tiny_tf.model, tokenizer=tiny_tf.tokenizer, device="cpu", normalization="bogus"
        )
    with pytest.raises(InvalidChoicesError, match="empty"):
        transformers.pipeline(PIPELINE_TASK, model=tiny_tf.model, tokenizer=tiny_tf.tokenizer, device="cpu", choices=[])


@pytest.mark.slow
def test_smollm2_easy_facts(smol_tf):
    from autocog.lm.assets import smollm2_transformers

    pipe = transformers.pipeline(PIPELINE_TASK, model=str(smollm2_transformers()), device="cpu", dtype=torch.float32)
    lm = TfLM(pipe.model, pipe.tokenizer)
    prompts = [prompt for prompt, _, _ in EASY_FACTS]
    lists = [choices for _, choices, _ in EASY_FACTS]
    outputs = pipe(prompts, choices=lists, batch_size=4, normalization="mean")
    for (prompt, choices, answer), output in zip(EASY_FACTS, outputs):
        assert output["labels"][0] == choices[answer]
        assert_matches(output, lm.choice_distribution(prompt, choices, normalization="mean"), atol=1e-6)
        assert_matches(output, smol_tf.choice_distribution(prompt, choices, normalization="mean"), atol=1e-6)
    chat = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    output = pipe(chat, choices=["Paris", "London", "Berlin"])
    assert output["labels"][0] == "Paris"
    assert_matches(output, lm.choice_distribution(chat, ["Paris", "London", "Berlin"]), atol=1e-6)
