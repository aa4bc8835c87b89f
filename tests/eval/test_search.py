"""autocog.eval.search: grids, random sampling, and a search that must find the setting the metric prefers."""

import numpy as np
import pytest

from autocog.eval.search import ParameterGrid, ParameterSampler, load_pairs, search, token_f1
from autocog.lm import LM


class ScriptedLM(LM):
    """Completes with the first ``max_tokens`` words of a fixed answer; above temperature 0 it draws words
    from a seeded generator. Records the seeds it was given."""

    ANSWER = "one two three four five six"

    def __init__(self):
        self.seeds = []

    def tokenize(self, text, bos=False):
        return list(range(len(text.split())))

    def detokenize(self, tokens):
        return ""

    def complete(self, prompt, stop="\n", max_tokens=64, temperature=0.0, top_p=1.0, top_k=0, seed=None):
        self.seeds.append(seed)
        words = self.ANSWER.split()[:max_tokens]
        if temperature > 0:
            rng = np.random.default_rng(seed)
            words = [str(rng.integers(100)) for _ in words]
        return " " + " ".join(words) + ("\n" if stop == "\n" else "")

    def choose(self, prompt, choices, **kwargs):
        return 0


def test_parameter_grid():
    grid = ParameterGrid({"top_k": [1, 5], "temperature": [0.0, 0.5, 1.0]})
    settings = list(grid)
    assert len(grid) == 6 == len(settings)
    assert settings[0] == {"temperature": 0.0, "top_k": 1} and settings[1] == {"temperature": 0.0, "top_k": 5}
    assert [grid[i] for i in range(len(grid))] == settings and grid[-1] == settings[-1]
    both = ParameterGrid([{"top_p": [0.9, 1.0]}, {"top_k": [1, 5, 10], "stop": [None, "\n"]}])
    assert len(both) == 8 == len(list(both)) and [both[i] for i in range(8)] == list(both)
    with pytest.raises(IndexError):
        grid[6]
    with pytest.raises(TypeError, match="wrap a single value"):
        ParameterGrid({"stop": "\n"})
    with pytest.raises(ValueError, match="no values"):
        ParameterGrid({"top_k": []})


def test_parameter_sampler_is_reproducible():
    space = {"temperature": [0.0, 0.3, 0.7, 1.0], "top_k": [0, 10, 50]}
    a = list(ParameterSampler(space, n_iter=5, seed=3))
    assert a == list(ParameterSampler(space, n_iter=5, seed=3))
    assert len({tuple(sorted(s.items())) for s in a}) == 5  # no repeats when every entry is a list
    assert len(list(ParameterSampler(space, n_iter=100, seed=0))) == 12  # capped at the grid's size

    class Uniform:  # a scipy.stats-like distribution
        def rvs(self, random_state=None):
            return np.random.default_rng(random_state).uniform(0, 2)

    mixed = {"temperature": Uniform(), "top_p": lambda rng: float(rng.uniform(0.5, 1.0)), "max_tokens": [4, 8]}
    b = list(ParameterSampler(mixed, n_iter=6, seed=1))
    assert b == list(ParameterSampler(mixed, n_iter=6, seed=1)) and len(b) == 6
    assert all(0 <= s["temperature"] <= 2 and 0.5 <= s["top_p"] <= 1 and s["max_tokens"] in (4, 8) for s in b)
    assert b != list(ParameterSampler(mixed, n_iter=6, seed=2))


def test_grid_search_finds_the_preferred_setting():
    lm = ScriptedLM()
    data = [(f"Count {i}:", "one two three") for i in range(5)]
    result = search(lm, data, "exact", grid={"max_tokens": [1, 2, 3, 4], "temperature": [0.0, 1.0]}, seed=7)
    assert result.best_params == {"max_tokens": 3, "temperature": 0.0} and result.best_score == 1.0
    assert [r.score for r in result.rows] == sorted((r.score for r in result.rows), reverse=True)
    assert result.rows[1].score < 1.0 and [r.rank for r in result.rows] == list(range(1, 9))
    assert result.best.predictions == [" one two three"] * 5  # the stop string is not part of the prediction
    # every completion was seeded: the search seed plus the item index
    assert lm.seeds[:5] == [7, 8, 9, 10, 11]
    text = result.format()
    assert text.splitlines()[0].split()[:3] == ["rank", "exact", "seconds"]
    assert 'best: {"max_tokens": 3, "temperature": 0.0}' in text


def test_losses_custom_metrics_and_base_settings():
    lm = ScriptedLM()
    data = [{"prompt": "Count:", "reference": "one two three four"}]
    # a loss: distance in words from the reference; lower is better
    result = search(
        lm,
        data,
        lambda p, r: abs(len(p.split()) - len(r.split())),
        greater_is_better=False,
        grid={"max_tokens": [2, 4, 6]},
        base={"temperature": 0.0, "stop": None},
    )
    assert result.best_params == {"max_tokens": 4} and result.best_score == 0
    assert result.metric == "<lambda>"
    assert token_f1("one two", "one two three four") == pytest.approx(2 * 1 * 0.5 / 1.5)


def test_random_search_is_reproducible():
    space = {"max_tokens": [1, 2, 3, 4, 5], "temperature": [0.0, 0.5, 1.5], "seed": [1, 2]}
    data = [(f"Q{i}", "one two") for i in range(3)]
    a = search(ScriptedLM(), data, "f1", distributions=space, n_iter=6, seed=11)
    b = search(ScriptedLM(), data, "f1", distributions=space, n_iter=6, seed=11)
    assert [(r.params, r.scores, r.predictions) for r in a.rows] == [
        (r.params, r.scores, r.predictions) for r in b.rows
    ]
    assert a.info["mode"] == "random" and a.info["n_settings"] == 6


def test_bad_search_arguments(tmp_path):
    lm = ScriptedLM()
    with pytest.raises(ValueError, match="exactly one"):
        search(lm, [("a", "b")], grid={"max_tokens": [1]}, distributions={"max_tokens": [1]})
    with pytest.raises(ValueError, match="unknown metric"):
        search(lm, [("a", "b")], "bleu", grid={"max_tokens": [1]})
    with pytest.raises(ValueError, match="reference"):
        load_pairs([{"prompt": "a"}])
    with pytest.raises(FileNotFoundError):
        load_pairs(tmp_path / "missing.jsonl")
    path = tmp_path / "d.jsonl"
    path.write_text('{"question": "2+2?", "choices": ["3", "4"], "answer": 1}\n')
    assert load_pairs(path) == [("Question: 2+2?\nAnswer:", "4")]


def test_search_on_the_tiny_model_must_pick_the_right_length(tiny_tf):
    """References are the greedy 3-token completions: only max_tokens=3 at temperature 0 matches them all."""
    prompts = [
        "Question: What is the capital of France?\nAnswer:",
        "The quick brown fox",
        "Yes or no?",
        "name: Alice, phone:",
        "Let's think step by step:",
        "1 10 100",
    ]
    data = []
    for prompt in prompts:
        outs = {k: tiny_tf.complete(prompt, stop=None, max_tokens=k) for k in (1, 3, 6)}
        if len(set(outs.values())) == 3:  # keep prompts where the lengths give different texts
            data.append((prompt, outs[3]))
    assert len(data) >= 3
    grid = {"max_tokens": [1, 3, 6], "temperature": [0.0, 1.5], "stop": [None]}
    result = search(tiny_tf, data, lambda p, r: float(p == r), grid=grid, seed=0)
    assert result.best_params == {"max_tokens": 3, "stop": None, "temperature": 0.0}
    assert result.best_score == 1.0 and result.rows[1].score < 1.0
    again = search(tiny_tf, data, lambda p, r: float(p == r), grid=grid, seed=0)
    assert [r.predictions for r in again.rows] == [r.predictions for r in result.rows]
