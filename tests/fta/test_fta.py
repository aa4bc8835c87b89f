"""Prompting programs (autocog.fta): the automaton's checks, runs against hand-made references, pruning,
token accounting, backends without next-token log-probs, pictures, and the examples and notebook (slow)."""

import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from toy import SpyLM, TextOnlyLM

from autocog.fta import (
    END,
    Choose,
    Complete,
    DuplicateStepError,
    InvalidStepError,
    MissingInputError,
    Program,
    ProgramError,
    Text,
    UnboundedLoopError,
    UndefinedValueError,
    UnknownInputError,
    UnknownStepError,
    UnreachableStepError,
)
from autocog.structured.engine import repair

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "What is the capital of France?"


def branch_loop_program():
    """Chain of thought, a branch (the answer routes), and a loop bounded by ``retry.max_visits``."""
    return Program(
        [
            Text("Question: {q}\nLet's think step by step:"),
            Complete("reasoning", stop="\n", max_tokens=10),
            Text("\nAnswer:", name="ask"),
            Choose("answer", {" A": "check", " B": "check", " C": END}),
            Text("\nAre you sure?", name="check"),
            Choose("sure", {" yes": END, " no": "retry"}),
            Text(" Because", name="retry", max_visits=2),
            Complete("why", stop=".", max_tokens=4, next="ask"),
        ]
    )


def by_hand(lm, q, width=None):
    """The same program written by hand with complete and choice_distribution: every path's values and score."""
    paths = []

    def complete(prompt, stop, max_tokens):
        text = lm.complete(prompt, stop=stop, max_tokens=max_tokens)
        return text, (text[: -len(stop)] if text.endswith(stop) else text)

    def explore(prompt, values, score, retries):
        # ask
        prompt += "\nAnswer:"
        options = [" A", " B", " C"]
        dist = lm.choice_distribution(prompt, options)
        order = sorted(range(3), key=lambda j: -dist.probs[j])[:width]
        for j in order:
            v = {k: list(x) if isinstance(x, list) else x for k, x in values.items()}
            v.setdefault("answer", []).append(options[j])
            s = score + math.log(dist.probs[j])
            if options[j] == " C":
                paths.append((v, s))
                continue
            p = prompt + options[j] + "\nAre you sure?"
            sure = [" yes", " no"] if retries < 2 else [" yes"]
            d2 = lm.choice_distribution(p, sure)
            for k in sorted(range(len(sure)), key=lambda k: -d2.probs[k])[:width]:
                v2 = {key: list(x) if isinstance(x, list) else x for key, x in v.items()}
                v2.setdefault("sure", []).append(sure[k])
                s2 = s + math.log(d2.probs[k])
                if sure[k] == " yes":
                    paths.append((v2, s2))
                    continue
                p2 = p + sure[k] + " Because"
                text, value = complete(p2, ".", 4)
                v2.setdefault("why", []).append(value)
                explore(p2 + text, v2, s2, retries + 1)

    prompt = f"Question: {q}\nLet's think step by step:"
    text, value = complete(prompt, "\n", 10)
    explore(prompt + text, {"reasoning": value}, 0.0, 0)
    return sorted(paths, key=lambda p: -p[1])


def choose_nodes(result):
    """The decision points of a run: for each Choose, its options' nodes (kept and pruned)."""
    groups = {}
    for node in result.tree.walk():
        if node.kind == "choose":
            groups.setdefault(id(node.parent), []).append(node)
    return list(groups.values())


# --- runs against references ---------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [1, 2, None])
def test_branch_and_loop_match_by_hand(tiny_tf, width):
    prog = branch_loop_program()
    assert prog.looped == {"ask", "answer", "check", "sure", "retry", "why"}
    result = prog.run(tiny_tf, q=QUESTION, width=width)
    expected = by_hand(tiny_tf, QUESTION, width)
    assert len(result.paths) == len(expected)
    assert any(p.status == "end" for p in result.paths)
    for path, (values, score) in zip(result.paths, expected):
        assert path.values == values
        assert path.score == pytest.approx(score, abs=1e-4)
    assert result.best.values == expected[0][0]
    assert sum(p.probability for p in result.paths) <= 1 + 1e-6
    if width is None:  # nothing pruned: the paths' probabilities sum to one
        assert sum(p.probability for p in result.paths) == pytest.approx(1.0, abs=1e-6)
    if width == 1:
        assert len(result.paths) == 1


def test_loop_actually_loops_and_is_bounded(tiny_tf):
    result = branch_loop_program().run(tiny_tf, q=QUESTION, width=None)
    retries = [len(p.values.get("why", [])) for p in result.paths]
    assert max(retries) == 2  # max_visits=2 on "retry"
    # on a path that used both retries, the last "sure" could only say yes
    for path in result.paths:
        if len(path.values.get("why", [])) == 2 and len(path.values["sure"]) == 3:
            assert path.values["sure"][-1] == " yes"
            assert path.node("sure").prob == 1.0


def test_values_and_text_of_a_path(tiny_tf):
    prog = Program(
        [
            Text("Question: {q}\nAnswer:"),
            Choose("answer", [" Paris", " Berlin"]),
            Text(" Because {answer} is"),
            Complete("why", stop=".", max_tokens=5),
        ]
    )
    result = prog.run(tiny_tf, q=QUESTION, width=2)
    for path in result.paths:
        answer = path.values["answer"]
        assert path.text.startswith(f"Question: {QUESTION}\nAnswer:{answer} Because {answer} is")
        assert path.text.endswith(path.node("why").text)
        assert path.steps == ["text0", "answer", "text2", "why"]


# --- pruning -----------------------------------------------------------------------------------------------


def pruning_program():
    return Program(
        [
            Text("The answer is"),
            Choose("first", [" A", " B", " C", " D", " E"]),
            Text(". Then"),
            Choose("second", [" yes", " no", " maybe", " 10"]),
        ]
    )


@pytest.mark.parametrize("width", [1, 2, 3])
def test_width_keeps_the_most_probable_options(tiny_tf, width):
    full = pruning_program().run(tiny_tf, width=None)
    result = pruning_program().run(tiny_tf, width=width)
    groups = choose_nodes(result)
    assert groups
    for nodes in groups:
        kept = [n for n in nodes if not n.pruned]
        pruned = [n for n in nodes if n.pruned]
        assert len(kept) == min(width, len(nodes))
        probs = nodes[0].choice.probs
        best = sorted(range(len(probs)), key=lambda j: -probs[j])[:width]
        assert sorted(n.option for n in kept) == sorted(best)  # fails if the worst were kept
        assert min(n.prob for n in kept) >= max((n.prob for n in pruned), default=0.0)
    scores = [p.score for p in result.paths]
    assert scores == sorted(scores, reverse=True)  # best first
    assert len(result.paths) == width * width
    # the kept paths are the full run's paths through the kept options, with the same scores
    full_scores = {tuple(p.values.values()): p.score for p in full.paths}
    for path in result.paths:
        assert path.score == pytest.approx(full_scores[tuple(path.values.values())], abs=1e-6)
    # width 1 is the greedy path: the best option at every step
    if width == 1:
        first = full.tree.children[0].children
        assert result.best.values["first"] == max(first, key=lambda n: n.prob).value


@pytest.mark.parametrize("threshold", [0.05, 0.2, 0.5, 0.99])
def test_threshold_keeps_likely_options(tiny_tf, threshold):
    result = pruning_program().run(tiny_tf, width=None, threshold=threshold)
    for nodes in choose_nodes(result):
        best = max(nodes, key=lambda n: n.prob)
        assert not best.pruned  # the best option always stays
        for n in nodes:
            if n is not best:
                assert n.pruned == (n.prob < threshold)


def test_step_overrides_run_pruning(tiny_tf):
    prog = Program(
        [
            Text("The answer is"),
            Choose("first", [" A", " B", " C"], width=3),
            Text(". Then"),
            Choose("second", [" yes", " no"], width=1),
        ]
    )
    result = prog.run(tiny_tf, width=2)
    assert len(result.paths) == 3
    assert len({p.values["second"] for p in result.paths if p.values["first"] == " A"}) == 1


def test_normalization_per_choose(tiny_tf):
    options = [" the", " the quick brown fox", " A"]
    for normalization in ("sum", "mean", "char"):
        prog = Program([Text("The answer is"), Choose("x", options, normalization=normalization)])
        result = prog.run(tiny_tf, width=None)
        expected = tiny_tf.choice_distribution("The answer is", options, normalization=normalization).probs
        got = {p.values["x"]: p.probability for p in result.paths}
        np.testing.assert_allclose([got[o] for o in options], expected, atol=1e-6)


# --- token accounting ------------------------------------------------------------------------------------


def accounting_program():
    return Program(
        [
            Text("Question: {q}\nLet's think step by step:"),
            Complete("reasoning", stop="\n", max_tokens=24),
            Text("\nSo the answer is"),
            Choose("answer", [" Paris", " Berlin", " London", " Madrid"]),
            Text(". Confidence:"),
            Choose("confidence", [" high", " low"]),
            Text("\nExplain:"),
            Complete("explanation", stop="\n", max_tokens=12),
        ]
    )


@pytest.mark.parametrize(
    "scoring, width", [("prefix", 1), ("prefix", 2), ("prefix", 4), ("distribution", 1), ("distribution", 2)]
)
def test_token_accounting_tiny(tiny_tf, scoring, width):
    tiny_tf.cache.reset()  # start cold: every token of the tree is new
    result = accounting_program().run(tiny_tf, q=QUESTION, width=width, scoring=scoring)
    stats = result.tokens
    assert stats.evaluated is not None and stats.unique > 0
    assert stats.evaluated <= 1.1 * stats.unique, (stats.evaluated, stats.unique)
    assert stats.calls["complete"] == 1 + width * min(width, 2)
    # the paths share their prefix: far fewer tokens than running every path from scratch
    from_scratch = sum(len(tiny_tf.tokenize(p.text, bos=True)) for p in result.paths)
    if width > 1:
        assert stats.evaluated < 0.75 * from_scratch
    print(
        f"{scoring} width={width}: evaluated {stats.evaluated}, unique {stats.unique}, ratio {stats.ratio:.3f}, "
        f"from scratch {from_scratch}"
    )


def test_prefix_scoring_matches_choice_distribution(tiny_tf):
    prog = accounting_program()
    a = prog.run(tiny_tf, q=QUESTION, width=4, scoring="prefix")
    b = prog.run(tiny_tf, q=QUESTION, width=4, scoring="distribution")
    assert [p.values for p in a.paths] == [p.values for p in b.paths]
    np.testing.assert_allclose([p.score for p in a.paths], [p.score for p in b.paths], atol=1e-5)
    assert a.best.choice("answer").strategy == "prefix" and b.best.choice("answer").strategy == "tree"
    assert a.tokens.evaluated < b.tokens.evaluated


def test_token_accounting_branch_and_loop(tiny_tf):
    tiny_tf.cache.reset()
    result = branch_loop_program().run(tiny_tf, q=QUESTION, width=None)
    assert result.tokens.evaluated <= 1.1 * result.tokens.unique, result.tokens


# --- other backends --------------------------------------------------------------------------------------


def test_text_only_backend_gives_the_same_tree(tiny_tf):
    prog = branch_loop_program()
    local = prog.run(tiny_tf, q=QUESTION, width=2)
    remote_lm = TextOnlyLM(tiny_tf)
    remote = prog.run(remote_lm, q=QUESTION, width=2)
    assert [p.values for p in remote.paths] == [p.values for p in local.paths]
    np.testing.assert_allclose([p.score for p in remote.paths], [p.score for p in local.paths], atol=1e-5)
    assert remote.tokens.evaluated is None and remote.tokens.unique > 0
    assert remote_lm.calls["complete"] == remote.tokens.calls["complete"] > 0


@pytest.fixture(scope="module")
def tiny_llama_lm():
    pytest.importorskip("llama_cpp")
    from autocog.gguf.models import tiny_llama_gguf
    from autocog.lm import LLaMa

    return LLaMa(**LLaMa.create(model_path=tiny_llama_gguf()))


def test_llama_backend_gives_the_same_tree(tiny_tf, tiny_llama_lm):
    """The tiny model's GGUF holds the same F32 weights: same paths, same scores, same token counts."""
    prog = branch_loop_program()
    tiny_tf.cache.reset()
    local = prog.run(tiny_tf, q=QUESTION, width=2)
    tiny_llama_lm.cache.reset()
    other = prog.run(tiny_llama_lm, q=QUESTION, width=2)
    assert [p.values for p in other.paths] == [p.values for p in local.paths]
    np.testing.assert_allclose([p.score for p in other.paths], [p.score for p in local.paths], atol=1e-3, rtol=1e-3)
    assert other.tokens.unique == local.tokens.unique
    assert other.tokens.evaluated <= 1.1 * other.tokens.unique


@pytest.mark.slow
def test_openai_backend_gives_the_same_tree(tiny_tf):
    """On llama_cpp.server (tiny model) through the OpenAI backend: complete and choice_distribution only."""
    pytest.importorskip("openai")
    from llama_server import LlamaServer

    from autocog.gguf.models import tiny_llama_gguf
    from autocog.lm import OpenAI

    server = LlamaServer(tiny_llama_gguf(), n_ctx=1024)
    try:
        lm = OpenAI(model="tiny", base_url=server.base_url)
        # the program equals its steps run by hand on the same backend
        remote = branch_loop_program().run(lm, q=QUESTION, width=2)
        expected = by_hand(lm, QUESTION, 2)
        assert [p.values for p in remote.paths] == [values for values, _ in expected]
        np.testing.assert_allclose([p.score for p in remote.paths], [score for _, score in expected], atol=1e-6)
        assert remote.tokens.evaluated is None and remote.tokens.calls["complete"] > 0
        # choices agree with the local model (the server drops the random model's broken UTF-8 in completions,
        # so completed text is compared on the same backend only)
        prog = Program(
            [
                Text("Question: {q}\nAnswer:", name="ask"),
                Choose("answer", {" A": "check", " B": "check", " C": END}),
                Text("\nAre you sure?", name="check"),
                Choose("sure", {" yes": END, " no": "retry"}),
                Text(" Let me think again.", name="retry", max_visits=2, next="ask"),
            ]
        )
        remote, local = prog.run(lm, q=QUESTION, width=2), prog.run(tiny_tf, q=QUESTION, width=2)
        scores = {repr(p.values): p.score for p in local.paths}  # near-ties may swap places: compare by path
        assert sorted(scores) == sorted(repr(p.values) for p in remote.paths)
        for path in remote.paths:
            assert path.score == pytest.approx(scores[repr(path.values)], abs=1e-3, rel=1e-3)
        lm.close()
    finally:
        server.stop()


def test_backend_that_only_chooses(tiny_tf):
    prog = pruning_program()
    lm = TextOnlyLM(tiny_tf, scores=False)
    result = prog.run(lm, width=3)
    assert len(result.paths) == 1 and result.best.probability == 1.0
    assert result.best.values == prog.run(tiny_tf, width=1).best.values
    assert lm.calls["choose"] == 2


def test_completion_scores(tiny_tf):
    prog = Program([Text("Question: {q}\nAnswer:"), Complete("answer", stop="\n", max_tokens=6)])
    result = prog.run(tiny_tf, q=QUESTION, completion_scores=True)
    ids = tiny_tf.prompt_tokens(f"Question: {QUESTION}\nAnswer:")
    expected, generated = 0.0, []
    for _ in range(result.best.node("answer").n_tokens):  # by hand: greedy decoding over lm.greedy
        logprobs = tiny_tf.greedy(ids + generated)
        token = int(np.argmax(logprobs))
        expected += float(logprobs[token])
        generated.append(token)
    assert result.best.score == pytest.approx(expected, abs=1e-4)
    assert prog.run(tiny_tf, q=QUESTION).best.score == 0.0


def test_pattern_in_a_program(tiny_tf):
    from autocog import Lark, Regex

    prog = Program(
        [
            Text("Count: 1 10 100 "),
            Complete("n", stop=",", max_tokens=6, pattern=r"[0-9]{3}"),
            Text(", then"),
            Complete("word", stop=" ", max_tokens=4, pattern=Regex(r"[a-z]+")),
            Text(" and"),
            Complete("g", stop=None, max_tokens=4, pattern=Lark('start: "x" | "yz"')),
        ]
    )
    result = prog.run(tiny_tf)
    values = result.best.values
    assert re.fullmatch(r"[0-9]{3}", values["n"]) and re.fullmatch(r"[a-z]+", values["word"]), values
    # keep_stop: the stop string that ended a value stays in the prompt; a grammar without stop ends by itself
    before_g = f"Count: 1 10 100 {values['n']},, then{values['word']}  and"
    assert result.best.text == before_g + values["g"]
    # masked greedy decoding takes the most likely token that starts "x" or "yz" (the rest is then forced)
    logprobs = tiny_tf.greedy(before_g)
    texts = {t: tiny_tf.detokenize([t]) for t in range(len(logprobs))}
    starts = [t for t, s in texts.items() if s and ("x".startswith(s) or "yz".startswith(s))]
    first = texts[max(starts, key=lambda t: logprobs[t])]
    assert values["g"] == ("x" if first == "x" else "yz")
    lm = TextOnlyLM(tiny_tf)  # no masking there: the completion is repaired
    values = prog.run(lm).best.values
    assert re.fullmatch(r"[0-9]{3}", values["n"]) and re.fullmatch(r"[a-z]+", values["word"]), values
    before_g = f"Count: 1 10 100 {values['n']},, then{values['word']}  and"
    unmasked = tiny_tf.complete(before_g, stop=None, max_tokens=4)
    assert values["g"] == repair(prog.by_name["g"].grammar, unmasked)


# --- bad programs and bad inputs: typed errors naming the step, before any model call ------------------------


@pytest.mark.parametrize(
    "build, error, step",
    [
        (lambda: Program([Text("a", next="nowhere")]), UnknownStepError, "text0"),
        (lambda: Program([Choose("c", {" x": "gone", " y": END})]), UnknownStepError, "c"),
        (lambda: Program([Text("a")], entry="start"), UnknownStepError, "start"),
        (lambda: Program([Text("a"), Text("b")], edges={"ghost": END}), UnknownStepError, "ghost"),
        (lambda: Program([Text("a", next=END), Text("b", name="orphan")]), UnreachableStepError, "orphan"),
        (
            lambda: Program([Text("a", name="think"), Complete("r"), Choose("again", {" yes": "think", " no": END})]),
            UnboundedLoopError,
            "think",
        ),
        (lambda: Program([Choose("c", {" again": "c", " stop": END})]), UnboundedLoopError, "c"),
        (lambda: Program([Text("a", name="x"), Complete("x")]), DuplicateStepError, "x"),
        (lambda: Program([Text("Reasoning: {reasoning}"), Complete("reasoning")]), UndefinedValueError, "text0"),
        (
            lambda: Program([Choose("c", {" x": "late", " y": None}), Complete("r"), Text("{r}", name="late")]),
            UndefinedValueError,
            "late",
        ),
        (lambda: Program([Choose("pick", [" a", " a"])]), InvalidStepError, "pick"),
        (lambda: Program([Choose("pick", [])]), InvalidStepError, "pick"),
        (lambda: Program([Choose("pick", [" a", ""])]), InvalidStepError, "pick"),
        (lambda: Program([Choose("pick", [" a"], normalization="softmax")]), InvalidStepError, "pick"),
        (lambda: Program([Choose("pick", [" a", " b"])], edges={"pick": {" z": END}}), InvalidStepError, "pick"),
        (lambda: Program([Complete("gen", max_tokens=0)]), InvalidStepError, "gen"),
        (lambda: Program([Complete("gen", pattern="(ab")]), InvalidStepError, "gen"),
        (lambda: Program([Complete("gen", pattern="a(?=b)")]), InvalidStepError, "gen"),
        (lambda: Program([Complete("gen", pattern=3)]), InvalidStepError, "gen"),
        (lambda: Program([Text("Question: {0}")]), InvalidStepError, "text0"),
        (lambda: Program([Text("Question: {q")]), InvalidStepError, "text0"),
        (lambda: Program([Text("a", name=END)]), InvalidStepError, END),
        (lambda: Program([Text("a", next="a", max_visits=2)]), ProgramError, "text0"),  # END never reached
    ],
)
def test_bad_programs_fail_at_build_time(build, error, step):
    with pytest.raises(error) as info:
        build()
    assert info.value.step == step
    assert repr(step) in str(info.value)


def test_bad_inputs_fail_before_any_model_call():
    prog = branch_loop_program()
    spy = SpyLM()
    with pytest.raises(MissingInputError, match="'text0'.*q") as info:
        prog.run(spy)
    assert info.value.step == "text0"
    with pytest.raises(UnknownInputError, match="'question'"):
        prog.run(spy, q="x", question="typo")
    with pytest.raises(ValueError, match="width"):
        prog.run(spy, q="x", width=0)
    with pytest.raises(ValueError, match="threshold"):
        prog.run(spy, q="x", threshold=1.5)
    with pytest.raises(TypeError, match="LM"):
        prog.run(object(), q="x")
    assert spy.calls == 0
    # inputs whose names clash with run's settings go through `inputs=`
    clash = Program([Text("{width}"), Complete("w", max_tokens=1)])
    assert clash.inputs == ["width"]
    assert clash.run(spy, inputs={"width": "3"}).best.values == {"w": "x"}


def test_a_good_program_runs_on_the_spy():
    spy = SpyLM()
    result = branch_loop_program().run(spy, q="x")
    # the spy completes "x" and chooses the first option: " A" goes to the check, " yes" ends
    assert result.best.status == "end" and spy.calls > 0
    assert result.best.values == {"reasoning": "x", "answer": [" A"], "sure": [" yes"]}  # steps on the loop: lists


# --- pictures ------------------------------------------------------------------------------------------------


def test_pictures(tiny_tf, tmp_path):
    prog = branch_loop_program()
    result = prog.run(tiny_tf, q=QUESTION, width=2)
    automaton = prog.to_dot(result)
    assert automaton.startswith('digraph "program"') and "≤ 2 visits" in automaton
    assert '"s:answer" -> "s:check" [label=" A |  B' in automaton and "p̄=" in automaton
    tree = result.to_dot()
    edges = [line for line in tree.splitlines() if re.match(r"^  t\d+ -> t\d+", line)]
    assert tree.startswith("digraph ThoughtTree") and len(edges) == len(result.nodes()) - 1
    assert "p=" in tree and "color=red" in tree and "style=dashed" in tree
    choice_tree = result.best.choice("answer").tree.to_dot()
    assert choice_tree.startswith("digraph TokenChoiceTree")
    assert result.render(tmp_path / "tree.dot").read_text() == tree
    assert prog.render(tmp_path / "fta.dot").read_text() == prog.to_dot()
    if shutil.which("dot"):
        assert result.render(tmp_path / "tree.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
        assert prog.render(tmp_path / "fta.svg", result=result).stat().st_size > 0


# --- examples and notebook (SmolLM2: slow) ---------------------------------------------------------------------

# each example's own report lines (every one of them must be printed)
EXAMPLES = {
    "mcq_cot.py": ["Q: ", "  reasoning: ", "  best answer: ", "pictures: "],
    "classifier.py": [" best: ", "pictures: "],
    "extraction.py": ["  profile: ", "  best: ", "  topic distribution: ", "pictures: "],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_examples_run(name):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr[-3000:]
    missing = [line for line in EXAMPLES[name] if line not in out.stdout]
    assert not missing, (missing, out.stdout[-3000:])


@pytest.mark.slow
def test_notebook_runs(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(ROOT / "notebooks" / "programs.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}
    )
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not any(o.get("output_type") == "error" for o in outputs)
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    pictures = sum("image/svg+xml" in o.get("data", {}) for o in outputs)
    # four `show` calls: the program, the thought tree, the tree on the program, a choice's token tree
    if shutil.which("dot"):  # `show` draws SVG with GraphViz, else prints the DOT source
        assert pictures == 4
    else:
        assert pictures == 0 and sum(line.startswith("digraph ") for line in text.splitlines()) == 4
