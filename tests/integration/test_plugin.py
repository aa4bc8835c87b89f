"""A backend written outside the package, declared by an entry point (a ``*.dist-info`` on PYTHONPATH, no pip),
used by name everywhere a user names a backend: ``autocog choose --backend mine``, lm-eval's
``model_args="backend=mine"``, and `autocog.lm.load("mine")` under `autocog.generate`, a `Program` and
`evaluate`. Each run happens in a fresh process (the entry points are read there) and gives the same numbers
as the same class used in this process without the registry."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from plugin import NAME, build_plugin, plugin_class, plugin_program

import autocog
from autocog.eval.evaluate import EXAMPLE_DATASET, evaluate

pytestmark = pytest.mark.slow  # subprocesses and an lm-eval run (~45 s)

ROOT = Path(__file__).resolve().parents[2]
TASK = "autocog_plugin_mc"
PROMPT, CHOICES = "Question: What is 2 + 2?\nAnswer:", [" 4", " 5", " 22"]
REGEX = r"[0-9]{3}-[a-z]{2}"

# What the child process runs with the backend found by name; it prints one JSON object.
SCRIPT = """
import json, sys
import lm_eval
from lm_eval.tasks import TaskManager

import autocog
import autocog.lm_eval  # registers the lm-eval model "autocog"
from autocog.eval.evaluate import evaluate
from plugin import plugin_program

weights, folder, task, regex = sys.argv[1:]
lm = autocog.lm.load("mine", model=weights)
results = lm_eval.simple_evaluate(
    model="autocog", model_args=f"backend=mine,model={weights}", tasks=[task], log_samples=True,
    task_manager=TaskManager(include_path=folder),
)
samples = sorted(results["samples"][task], key=lambda s: s["doc_id"])
best = plugin_program().run(lm, width=None, q="What is 2 + 2?").best
report = evaluate(lm, f"{folder}/data.jsonl")
print(json.dumps({
    "class": type(lm).__module__ + ":" + type(lm).__name__,
    "lm_eval": {"resps": [[r[0] for r in s["resps"]] for s in samples], "acc": results["results"][task]["acc,none"],
                "acc_norm": results["results"][task]["acc_norm,none"]},
    "generate": autocog.generate(lm, autocog.Regex(regex), "Number:"),
    "program": {"values": best.values, "score": best.score},
    "evaluate": {"sum": report["sum"].correct.tolist(), "char": report["char"].correct.tolist()},
}))
"""


def write_task(folder: Path, n: int = 8) -> Path:
    """A local lm-eval multiple-choice task (acc, acc_norm) over the first ``n`` bundled questions."""
    records = [json.loads(line) for line in EXAMPLE_DATASET.read_text().splitlines() if line.strip()][:n]
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    metrics = "".join(
        f"  - metric: {m}\n    aggregation: mean\n    higher_is_better: true\n" for m in ("acc", "acc_norm")
    )
    (folder / f"{TASK}.yaml").write_text(
        f"task: {TASK}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {folder / 'data.jsonl'}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\ndoc_to_target: answer\ndoc_to_choice: "{{choices}}"\n'
        f"metric_list:\n{metrics}"
    )
    return folder


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    """(folder on the path, weights file, the class imported without the registry, its in-process model)."""
    root = build_plugin(tmp_path_factory.mktemp("plugin"))
    weights = root / "weights.txt"
    weights.write_text("3")
    cls = plugin_class(root)
    return root, weights, cls(model_path=str(weights))


def child(root: Path, *argv: str) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            [str(root), str(ROOT), str(ROOT / "tests" / "support"), os.environ.get("PYTHONPATH", "")]
        ),
        HF_DATASETS_OFFLINE="1",
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_the_cli_takes_the_plugin_by_name(plugin):
    root, weights, reference = plugin
    proc = child(
        root, "-m", "autocog", "choose", "--backend", NAME, "--model", str(weights), PROMPT, *CHOICES, "--json"
    )
    out = json.loads(proc.stdout)
    expected = reference.choice_distribution(PROMPT, CHOICES)
    np.testing.assert_allclose(out["probs"], expected.probs, rtol=0, atol=1e-12)
    assert out["token_logprobs"] == expected.token_logprobs  # the same computation: exact through JSON
    assert out["index"] == expected.index and out["strategy"] == expected.strategy
    prefixed = child(root, "-m", "autocog", "choose", "--model", f"{NAME}:{weights}", PROMPT, *CHOICES, "--json")
    assert json.loads(prefixed.stdout)["probs"] == out["probs"]
    help_text = child(root, "-m", "autocog", "choose", "--help").stdout
    assert f"{NAME} (plugin)" in help_text


def test_lm_eval_generate_program_and_evaluate_take_the_plugin_by_name(plugin, tmp_path):
    pytest.importorskip("lm_eval", reason="the lm-eval extra is not installed")
    import lm_eval
    from lm_eval.tasks import TaskManager

    from autocog.eval.lm_eval import AutocogLM

    root, weights, reference = plugin
    folder = write_task(tmp_path)
    out = json.loads(child(root, "-c", SCRIPT, str(weights), str(folder), TASK, REGEX).stdout.splitlines()[-1])
    assert out["class"] == "mine_pkg:MineLM"

    # lm-eval: the same log-likelihoods and accuracies as the adapter over the in-process model
    results = lm_eval.simple_evaluate(
        model=AutocogLM(lm=reference),
        tasks=[TASK],
        log_samples=True,
        task_manager=TaskManager(include_path=str(folder)),
    )
    samples = sorted(results["samples"][TASK], key=lambda s: s["doc_id"])
    expected = [[r[0] for r in s["resps"]] for s in samples]
    assert len(expected) == 8 and out["lm_eval"]["resps"] == [[list(r) for r in doc] for doc in expected]
    assert out["lm_eval"]["acc"] == results["results"][TASK]["acc,none"]
    assert out["lm_eval"]["acc_norm"] == results["results"][TASK]["acc_norm,none"]

    # generate, a program, evaluate: the values of the in-process model
    generated = autocog.generate(reference, autocog.Regex(REGEX), "Number:")
    assert out["generate"] == generated and len(generated) == 6
    best = plugin_program().run(reference, width=None, q="What is 2 + 2?").best
    assert out["program"]["values"] == best.values and out["program"]["score"] == pytest.approx(best.score, abs=1e-12)
    report = evaluate(reference, folder / "data.jsonl")
    assert out["evaluate"] == {"sum": report["sum"].correct.tolist(), "char": report["char"].correct.tolist()}
    # and lm-eval's acc is evaluate's sum accuracy on the same items
    assert out["lm_eval"]["acc"] == pytest.approx(float(np.mean(report["sum"].correct)))
