"""autocog.eval.batch: batched scores equal one-by-one scores; priors; splitting under batch_size and memory faults."""

import threading

import numpy as np
import pytest
from randomized import make_prompts

import autocog.lm.tf.model as tf_module
from autocog.eval.batch import (
    Example,
    apply_prior,
    choice_distributions,
    predict,
    predict_examples,
    predict_proba,
    predict_proba_examples,
)
from autocog.lm import ChoiceLM, InvalidChoicesError, TfLM
from autocog.lm.scoring import shared_prefix

CHOICES = [" yes", " no", " the quick", " the quick brown", "1", "10"]


def one_by_one(lm, prompts, choice_lists, normalization="sum"):
    return [lm.choice_distribution(p, c, normalization=normalization) for p, c in zip(prompts, choice_lists)]


@pytest.mark.parametrize("normalization", ["sum", "mean", "char", "pmi"])
@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_batch_equals_one_by_one(tiny_tf, normalization, batch_size):
    prompts = make_prompts(11, seed=batch_size) + ["Count: 1", "Count: 1 10", "C", "", "Count: 1"]
    expected = one_by_one(tiny_tf, prompts, [CHOICES] * len(prompts), normalization)
    probs = predict_proba(tiny_tf, prompts, CHOICES, normalization=normalization, batch_size=batch_size)
    assert probs.shape == (len(prompts), len(CHOICES))
    np.testing.assert_allclose(probs, np.stack([r.probs for r in expected]), atol=1e-5, rtol=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    predictions = predict(tiny_tf, prompts, CHOICES, normalization=normalization, batch_size=batch_size)
    for r, k in zip(expected, predictions):
        top = np.sort(r.probs)
        if top[-1] - top[-2] > 1e-5:  # ("" under pmi ties every choice: argmax of rounding noise)
            assert k == r.index


def test_token_logprobs_equal_choice_logprobs(tiny_tf):
    prompts = make_prompts(9, seed=5, header="Let's think step by step.\n")
    results = choice_distributions(tiny_tf, prompts, CHOICES, batch_size=4)
    for prompt, result in zip(prompts, results):
        expected = tiny_tf.choice_logprobs(prompt, CHOICES)
        for a, e in zip(result.token_logprobs, expected):
            np.testing.assert_allclose(a, e, atol=1e-5, rtol=0)
        assert result.tree is not None and result.choices == CHOICES


def test_ragged_choices_give_a_list_of_arrays(tiny_tf):
    prompts = make_prompts(5, seed=1)
    choice_lists = [
        [" yes", " no"],
        [" 1", " 10", " 100"],
        [" the", " the quick"],
        [" A", " B", " C", " D"],
        [" x", " y"],
    ]
    probs = predict_proba(tiny_tf, prompts, choice_lists, batch_size=2)
    assert isinstance(probs, list) and [len(p) for p in probs] == [2, 3, 2, 4, 2]
    for p, r in zip(probs, one_by_one(tiny_tf, prompts, choice_lists)):
        np.testing.assert_allclose(p, r.probs, atol=1e-5, rtol=0)
    # same-length per-prompt lists give a 2-D array
    same = predict_proba(tiny_tf, prompts[:2], [[" yes", " no"], [" no", " yes"]])
    assert isinstance(same, np.ndarray) and same.shape == (2, 2)


def test_single_prompt_and_examples(tiny_tf):
    prompt = "Question: What is the capital of France?\nAnswer:"
    choices = [" Paris", " Berlin", " London"]
    one = predict_proba(tiny_tf, prompt, choices)
    assert one.shape == (3,)
    np.testing.assert_allclose(one, tiny_tf.choice_distribution(prompt, choices).probs, atol=1e-6)
    assert predict(tiny_tf, prompt, choices) == tiny_tf.choose(prompt, choices)

    examples = [
        Example(prompt, choices),
        {"prompt": "Yes or no?", "choices": [" Yes", " No"], "prior": [1, 3]},
        Example("The answer is", [" A", " B", " C"]),
    ]
    probs = predict_proba_examples(tiny_tf, examples, batch_size=2)
    assert isinstance(probs, list)
    np.testing.assert_allclose(probs[0], one, atol=1e-5)
    lone = tiny_tf.choice_distribution("Yes or no?", [" Yes", " No"]).probs
    np.testing.assert_allclose(probs[1], lone * [1, 3] / (lone * [1, 3]).sum(), atol=1e-5)
    assert list(predict_examples(tiny_tf, examples)) == [int(np.argmax(p)) for p in probs]


def test_prior_changes_the_prediction_as_the_math_says(tiny_tf):
    prompts = make_prompts(6, seed=2)
    choices = [" yes", " no"]
    plain = predict_proba(tiny_tf, prompts, choices)
    # flip each prompt's prediction: weight the losing choice so that its posterior is exactly 0.8
    for i, p in enumerate(plain):
        lose = int(np.argmin(p))
        prior = np.ones(2)
        prior[lose] = 4 * p[1 - lose] / p[lose]  # posterior odds lose:win = prior * p_lose / p_win = 4
        post = predict_proba(tiny_tf, prompts[i], choices, prior=prior)
        np.testing.assert_allclose(post[lose], 0.8, atol=1e-6)
        assert predict(tiny_tf, prompts[i], choices, prior=prior) == lose
    # a shared prior: posterior = probs * prior / sum, row by row
    prior = [0.2, 0.8]
    post = predict_proba(tiny_tf, prompts, choices, prior=prior)
    expected = plain * prior / (plain * prior).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(post, expected, atol=1e-6)
    # a zero weight removes a choice; a uniform prior changes nothing
    assert np.all(predict_proba(tiny_tf, prompts, choices, prior=[0, 1])[:, 0] == 0)
    np.testing.assert_allclose(predict_proba(tiny_tf, prompts, choices, prior=[5, 5]), plain, atol=1e-9)


def test_apply_prior_in_log_space():
    np.testing.assert_allclose(apply_prior(np.log([0.5, 0.5]), [3, 1]), [0.75, 0.25])
    # scores far below exp's range still give the right posterior
    np.testing.assert_allclose(apply_prior(np.array([-2000.0, -2001.0]), [1, np.e]), [0.5, 0.5])


def test_batch_larger_than_batch_size_is_split(tiny_tf, monkeypatch):
    sizes = []
    real = TfLM.packed_pass

    def counting(lm, jobs):
        sizes.append(len(jobs))
        return real(lm, jobs)

    monkeypatch.setattr(TfLM, "packed_pass", counting)
    prompts = make_prompts(23, seed=3)
    probs = predict_proba(tiny_tf, prompts, CHOICES, batch_size=5)
    assert sizes == [5, 5, 5, 5, 3]  # 23 prompts, 5 per forward pass
    assert probs.shape == (23, len(CHOICES))


def test_batch_that_runs_out_of_memory_is_split(tiny_tf, monkeypatch):
    """A forward pass over more than 60 tokens 'runs out of memory': the batch is halved until it fits."""
    prompts = make_prompts(12, seed=4)
    expected = np.stack([r.probs for r in one_by_one(tiny_tf, prompts, [CHOICES] * 12)])
    model = tiny_tf.model
    real_forward = model.forward
    seen = []

    def forward(*args, **kwargs):
        n = kwargs["input_ids"].numel()
        seen.append(n)
        if n > 60:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", forward)
    probs = predict_proba(tiny_tf, prompts, CHOICES, batch_size=12)
    monkeypatch.undo()
    np.testing.assert_allclose(probs, expected, atol=1e-5, rtol=0)
    assert max(seen) > 60 and any(n <= 60 for n in seen)


def test_max_batch_tokens_bounds_each_pass(tiny_tf, monkeypatch):
    lengths = []
    real_forward = tiny_tf.model.forward

    def forward(*args, **kwargs):
        lengths.append(kwargs["input_ids"].numel())
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(tiny_tf.model, "forward", forward)
    prompts = make_prompts(20, seed=6)
    probs = predict_proba(tiny_tf, prompts, CHOICES, batch_size=100, max_batch_tokens=120)
    monkeypatch.undo()
    assert max(lengths) <= 120 and len(lengths) > 2
    np.testing.assert_allclose(probs, predict_proba(tiny_tf, prompts, CHOICES, batch_size=1), atol=1e-5)


def test_max_batch_tokens_is_per_call_and_leaves_the_model_alone(tiny_tf, monkeypatch):
    """A call's limit bounds its own passes only; the model's own ``max_batch_tokens`` is the default."""
    lengths = []
    real_forward = tiny_tf.model.forward

    def forward(*args, **kwargs):
        lengths.append(kwargs["input_ids"].numel())
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(tiny_tf, "max_batch_tokens", 150)  # the user's own setting
    monkeypatch.setattr(tiny_tf.model, "forward", forward)
    prompts = make_prompts(20, seed=6)
    expected = predict_proba(tiny_tf, prompts, CHOICES, batch_size=1)
    lengths.clear()
    np.testing.assert_allclose(
        predict_proba(tiny_tf, prompts, CHOICES, batch_size=100, max_batch_tokens=60), expected, atol=1e-5
    )
    assert tiny_tf.max_batch_tokens == 150 and max(lengths) <= 60
    lengths.clear()
    np.testing.assert_allclose(predict_proba(tiny_tf, prompts, CHOICES, batch_size=100), expected, atol=1e-5)
    assert 60 < max(lengths) <= 150  # without a limit the call keeps the model's


def test_two_threads_with_different_limits_do_not_interfere(tiny_tf, monkeypatch):
    """Both calls are inside the backend at once (a barrier in `TfLM.pack_groups`); each keeps its own
    limit. The passes themselves take turns (one model, one prefix cache)."""
    limits = {"small": 60, "large": 100_000}
    barrier = threading.Barrier(len(limits), timeout=120)
    turn = threading.Lock()
    seen: dict[str, list[int]] = {name: [] for name in limits}
    real_pack, real_pass = TfLM.pack_groups, TfLM.packed_pass

    def pack_groups(lm, jobs, max_batch_tokens):
        barrier.wait()
        return real_pack(lm, jobs, max_batch_tokens)

    def packed_pass(lm, jobs):
        with turn:
            shared = shared_prefix(jobs)
            seen[threading.current_thread().name].append(
                len(jobs) * max(len(p) - shared + len(t.internal_nodes()) for p, t in jobs)
            )
            return real_pass(lm, jobs)

    prompts = make_prompts(20, seed=6)
    expected = predict_proba(tiny_tf, prompts, CHOICES, batch_size=1)
    monkeypatch.setattr(TfLM, "pack_groups", pack_groups)
    monkeypatch.setattr(TfLM, "packed_pass", packed_pass)
    out: dict[str, np.ndarray] = {}

    def run(name: str) -> None:
        out[name] = predict_proba(tiny_tf, prompts, CHOICES, batch_size=100, max_batch_tokens=limits[name])

    threads = [threading.Thread(target=run, args=(name,), name=name) for name in limits]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert set(out) == set(limits)
    for name, limit in limits.items():
        np.testing.assert_allclose(out[name], expected, atol=1e-5)
        assert seen[name] and max(seen[name]) <= limit, name
    assert len(seen["large"]) == 1 < len(seen["small"])
    assert tiny_tf.max_batch_tokens == tf_module.DEFAULT_MAX_BATCH_TOKENS


def test_llama_max_batch_tokens_caps_group_tokens(monkeypatch):
    """On LLaMa a call's limit caps ``group_tokens`` (tokens per grouped decode) for that call only."""
    pytest.importorskip("llama_cpp")
    import autocog.lm.llama.model as llama_model
    from autocog.gguf.models import tiny_llama_gguf
    from autocog.lm import LLaMa

    lm = LLaMa(**LLaMa.create(model_path=tiny_llama_gguf(), n_ctx=512), group_tokens=256)
    budgets = []
    real = llama_model.pack_groups
    monkeypatch.setattr(llama_model, "pack_groups", lambda *args: budgets.append(args[3]) or real(*args))
    prompts = make_prompts(6, seed=2)
    capped = predict_proba(lm, prompts, CHOICES, max_batch_tokens=40)
    default = predict_proba(lm, prompts, CHOICES)
    assert budgets == [40, 256] and lm.group_tokens == 256
    np.testing.assert_allclose(capped, default, atol=1e-4)


def test_logits_budget_shrinks_batches(tiny_tf, monkeypatch):
    sizes = []
    real = TfLM.packed_pass
    monkeypatch.setattr(TfLM, "packed_pass", lambda lm, jobs: sizes.append(len(jobs)) or real(lm, jobs))
    # room for the logits of about 3 prompts' columns per pass (vocab 384, float32)
    monkeypatch.setattr(tf_module, "LOGITS_BUDGET_BYTES", 4 * 384 * 3 * 5)
    prompts = make_prompts(10, seed=9)
    probs = predict_proba(tiny_tf, prompts, [" yes", " no", " the quick"], batch_size=10)
    assert max(sizes) <= 3 and sum(sizes) <= 10
    monkeypatch.undo()
    np.testing.assert_allclose(probs, predict_proba(tiny_tf, prompts, [" yes", " no", " the quick"]), atol=1e-5)


def test_shared_prefix_is_evaluated_once(tiny_tf):
    header = "Let's think step by step: first, second, third, then the result.\n" * 3
    prompts = make_prompts(16, seed=7, header=header)
    before = tiny_tf.tokens_evaluated
    predict_proba(tiny_tf, prompts, CHOICES, batch_size=8)
    used = tiny_tf.tokens_evaluated - before
    naive = sum(len(tiny_tf.tokenize(p, bos=True)) for p in prompts)
    assert used < naive / 2


def test_other_backends_use_their_own_choice_distribution(tiny_tf, monkeypatch):
    generic = type("GenericTfLM", (TfLM,), {"evaluate_tree": ChoiceLM.evaluate_tree})(tiny_tf.model, tiny_tf.tokenizer)
    packed = []
    monkeypatch.setattr(TfLM, "packed_pass", lambda lm, jobs: packed.append(len(jobs)))
    prompts = make_prompts(4, seed=8)
    generic_probs = predict_proba(generic, prompts, CHOICES)
    assert packed == []  # a subclass with its own evaluate_tree is not packed
    monkeypatch.undo()
    np.testing.assert_allclose(generic_probs, predict_proba(tiny_tf, prompts, CHOICES), atol=1e-5)


def test_progress_bar(tiny_tf, capsys):
    predict_proba(tiny_tf, make_prompts(3), CHOICES, progress=True)
    assert "3/3" in capsys.readouterr().err
    predict_proba(tiny_tf, make_prompts(3), CHOICES, progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "prompts, choices, prior, error",
    [
        (["a"], [], None, InvalidChoicesError),
        (["a"], "yes", None, InvalidChoicesError),
        (["a", "b"], [[" x", " y"]], None, InvalidChoicesError),  # 2 prompts, 1 list
        (["a"], [" x", [" y"]], None, InvalidChoicesError),  # mixed
        (["a"], [" x", " x"], None, InvalidChoicesError),  # duplicate
        (["a"], [" x", " y"], [1.0], ValueError),  # prior length
        (["a"], [" x", " y"], [-1.0, 2.0], ValueError),  # negative weight
        (["a"], [" x", " y"], [0.0, 0.0], ValueError),  # all zero
        ([1], [" x", " y"], None, ValueError),  # non-str prompt
    ],
)
def test_bad_inputs(tiny_tf, prompts, choices, prior, error):
    with pytest.raises(error):
        predict_proba(tiny_tf, prompts, choices, prior=prior)


def test_bad_batch_size(tiny_tf):
    with pytest.raises(ValueError, match="batch_size"):
        predict_proba(tiny_tf, ["a"], [" x", " y"], batch_size=0)
