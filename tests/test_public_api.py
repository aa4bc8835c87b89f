"""The public paths outside code calls (issue 19, part 1), and `autocog`'s own lazily imported API."""

import configparser
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from toy import ToyLM

import autocog

ROOT = Path(__file__).resolve().parents[1]

PUBLIC_PATHS = {
    "autocog.lm": ["LM", "GreedyLM", "ChoiceLM", "TfLM", "LLaMa", "OpenAI", "TokenChoiceTree", "load", "score"]
    + ["ScoreRequest"],
    "autocog.batch": ["predict_proba", "predict", "predict_proba_examples", "predict_examples"],
    "autocog.evaluate": ["evaluate", "load_items"],
    "autocog.models": ["smollm2_gguf", "smollm2_transformers", "tiny_llama", "tiny_llama_gguf"],
    "autocog.fta": ["Program", "Text", "Complete", "Choose"],
    "autocog": ["generate", "Regex", "Lark", "GBNF"],
}


@pytest.mark.parametrize("module, name", [(m, n) for m, names in PUBLIC_PATHS.items() for n in names])
def test_public_paths_import(module, name):
    value = getattr(importlib.import_module(module), name)
    assert callable(value), f"{module}.{name} is {value!r}"
    exec(f"from {module} import {name}", {})


def test_lm_errors_module():
    from autocog.lm import errors

    assert errors.InvalidChoicesError is autocog.errors.InvalidChoicesError
    assert issubclass(errors.InvalidChoicesError, errors.AutoCogError)


def test_top_level_api_is_the_defining_modules():
    """Every name in ``autocog.__all__`` resolves to the object its own module defines."""
    from autocog.core.sampling import SamplingParams
    from autocog.eval.batch import predict_proba
    from autocog.eval.items import load_items
    from autocog.fta import Choose, Program
    from autocog.lm import LLaMa, TfLM, load
    from autocog.structured import Regex, generate

    assert set(autocog.__all__) >= {"load", "LM", "GreedyLM", "ChoiceLM", "TfLM", "LLaMa", "OpenAI", "score"}
    for name in autocog.__all__:
        assert getattr(autocog, name) is not None, name
        assert name in dir(autocog)
    assert autocog.SamplingParams is SamplingParams and autocog.load is load
    assert autocog.TfLM is TfLM and autocog.LLaMa is LLaMa
    assert autocog.predict_proba is predict_proba and autocog.load_items is load_items
    assert autocog.generate is generate and autocog.Regex is Regex
    assert autocog.Program is Program and autocog.Choose is Choose
    assert autocog.errors is importlib.import_module("autocog.errors")
    with pytest.raises(AttributeError, match="no_such_name"):
        autocog.no_such_name  # noqa: B018


def _fresh_python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_import_autocog_loads_nothing_heavy():
    loaded = json.loads(_fresh_python("import sys, json, autocog; print(json.dumps(sorted(sys.modules)))"))
    heavy = {"torch", "transformers", "llama_cpp", "numpy", "pydantic", "llguidance", "lm_eval", "openai"}
    assert not heavy & set(loaded)
    assert [m for m in loaded if m.startswith("autocog.")] == []


def test_evaluate_is_callable_either_way():
    """``autocog.evaluate(lm, ...)`` gives the same report whether or not ``autocog.evaluate`` was imported as a
    module first, and ``from autocog.evaluate import evaluate, load_items`` is the function itself."""
    from autocog.eval.evaluate import evaluate as the_function
    from autocog.evaluate import evaluate, load_items

    assert evaluate is the_function and load_items is autocog.load_items
    lm = ToyLM()
    items = load_items(limit=4)
    assert len(items) == 4
    direct = json.dumps(evaluate(lm, limit=4).to_dict(), sort_keys=True)
    assert json.dumps(autocog.evaluate(lm, limit=4).to_dict(), sort_keys=True) == direct
    code = (  # `autocog.evaluate` before any `import autocog.evaluate`
        "import sys, json; sys.path.insert(0, 'tests/support'); import autocog; from toy import ToyLM; "
        "assert 'autocog.evaluate' not in sys.modules; "
        "print(json.dumps(autocog.evaluate(ToyLM(), limit=4).to_dict(), sort_keys=True))"
    )
    assert _fresh_python(code).strip() == direct


def test_lm_eval_registers_autocog():
    pytest.importorskip("lm_eval")
    from lm_eval.api.registry import get_model

    import autocog.lm_eval

    assert get_model("autocog") is autocog.lm_eval.AutocogLM


def test_cli_entry_point():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["options.entry_points"]["console_scripts"].strip().splitlines()
    scripts = {name.strip(): target.strip() for name, target in (line.split("=", 1) for line in lines)}
    module, function = scripts["autocog"].split(":")
    from autocog.cli.app import main

    assert getattr(importlib.import_module(module), function) is main
    out = subprocess.run([sys.executable, "-m", "autocog", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "choose" in out.stdout and "lm-eval" in out.stdout


def test_at_most_eight_top_level_modules():
    modules = sorted(p.name for p in (ROOT / "autocog").glob("*.py"))
    assert len(modules) <= 8, modules
