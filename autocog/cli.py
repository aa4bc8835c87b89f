"""The ``autocog`` command line (also ``python -m autocog``).

Commands::

    autocog complete PROMPT            continue a prompt (greedy by default)
    autocog choose PROMPT CHOICE...    the distribution over choices; --tree FILE draws the token choice tree
    autocog run FILE                   run a program file (defines `program`, optionally `inputs`)
    autocog eval [DATA]                multiple-choice accuracy (sum / mean / char), CI, confusion, calibration
    autocog search [DATA]              grid or random search over completion settings
    autocog bench [SCRIPT]             a quick built-in choose timing, or the scripts in bench/
    autocog lm-eval --tasks T          lm-evaluation-harness tasks on the model (autocog.lm_eval adapter)
    autocog convert HF_DIR OUT.gguf    transformers checkpoint -> GGUF (--outtype f32|f16|bf16|q8_0)
    autocog quantize IN.gguf OUT.gguf  llama.cpp's quantizer (--type Q4_K_M, --list)
    autocog eval --model A --model B   compare models on the same items (table, --plot, --json)
    autocog perplexity FILE            llama.cpp's perplexity of a text
    autocog card FOLDER                a Hugging Face model card (--results, --plot, --push REPO_ID)

Model options, on every command: ``--backend tf|llama|openai`` (default ``tf``), ``--model PATH|NAME``
(default: the embedded SmolLM2-135M-Instruct on ``tf`` and ``llama``), ``--base-url`` and ``--api-key``
(default ``$OPENAI_API_KEY``) for ``openai``, ``--device`` for ``tf``.

Exit codes: 0 success; 1 runtime error (a model or file that cannot be found or loaded, a missing backend
package, a backend failure); 2 bad arguments (unknown option, missing or malformed value, invalid
choices); 130 interrupted. Errors are one line on stderr, ``autocog COMMAND: error: ...``; ``--debug``
(or ``AUTOCOG_DEBUG=1``) adds the traceback.

>>> main(["choose", "--model", "tiny-dir", "Q: 2+2?\\nA:", " 4", " 5"])     # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Optional, Sequence

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

BACKENDS = ("tf", "llama", "openai")


class UsageError(Exception):
    """A bad argument found after parsing (exit code 2)."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``PROG: error: MESSAGE (see PROG --help)`` and exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --- argument types ------------------------------------------------------------------------------------


def _number(cast, accept, expected: str):
    """An argparse type: ``cast(text)`` when ``accept(value)``, else an error saying what was ``expected``."""

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


positive_int = _number(int, lambda v: v >= 1, "a positive integer")
non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
non_negative_float = _number(float, lambda v: v >= 0, "a number >= 0")
probability = _number(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")


def open_interval(text: str) -> float:
    value = probability(text)
    if value in (0.0, 1.0):
        raise argparse.ArgumentTypeError(f"expected a number strictly between 0 and 1, got {text!r}")
    return value


def unescape(text: str) -> str:
    """Command-line strings may spell a newline or a tab as ``\\n`` / ``\\t`` (and a backslash as ``\\\\``)."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in "nt\\":
            out.append({"n": "\n", "t": "\t", "\\": "\\"}[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def read_text_arg(text: str) -> str:
    """``-`` reads standard input; otherwise the text with ``\\n`` / ``\\t`` escapes decoded."""
    if text == "-":
        return sys.stdin.read()
    return unescape(text)


# --- parser --------------------------------------------------------------------------------------------


def build_parser() -> Parser:
    model = Parser(add_help=False)
    group = model.add_argument_group("model")
    group.add_argument("--backend", choices=BACKENDS, default="tf",
                       help="tf (transformers), llama (llama.cpp) or openai (API / compatible server); default tf")
    group.add_argument("--model", metavar="PATH|NAME", action=ModelOption,
                       help="tf: a transformers directory or a .gguf file; llama: a .gguf file; openai: a model "
                            "name; a tf:/llama:/openai: prefix picks the backend. Default: the embedded "
                            "SmolLM2-135M-Instruct (tf, llama). eval and perplexity take several (a comparison)")
    group.add_argument("--base-url", metavar="URL", help="openai: the server's base URL (e.g. http://127.0.0.1:8000/v1)")
    group.add_argument("--api-key", metavar="KEY", default=None, help="openai: the API key (default: $OPENAI_API_KEY)")
    group.add_argument("--device", default="cpu", help="tf: torch device (default cpu)")
    group.add_argument("--threads", type=positive_int, default=None, help="CPU threads (tf: torch; llama: n_threads)")
    group.add_argument("--debug", action="store_true", help="print the traceback of an error")

    parser = Parser(prog="autocog", description="autocog: language models behind one interface, from the shell.",
                    epilog="Exit codes: 0 ok, 1 runtime error (model/file/backend), 2 bad arguments, 130 interrupted.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"autocog {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    def command(name: str, help: str, description: str) -> Parser:
        import textwrap

        text = "\n\n".join(textwrap.fill(" ".join(part.split()), 88) for part in description.split("\n\n"))
        return commands.add_parser(name, help=help, description=text, parents=[model],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)

    p = command("complete", "continue a prompt", "Continue PROMPT and print the completion. The printed text "
                "ends with the stop string when generation stopped on it. \\n and \\t in arguments are decoded.")
    p.add_argument("prompt", help="the prompt ('-' reads standard input)")
    p.add_argument("--stop", action="append", metavar="TEXT",
                   help="stop string (repeatable; default a newline)")
    p.add_argument("--no-stop", action="store_true", help="no stop string: until EOS or --max-tokens")
    p.add_argument("--chat", action="store_true", help="send PROMPT as a user message through the model's chat "
                   "template (the completion is the assistant's reply)")
    p.add_argument("--system", metavar="TEXT", default=None, help="a system message (implies --chat)")
    add_generation_options(p)
    p.set_defaults(func=cmd_complete)

    p = command("choose", "score choices after a prompt", "Print the distribution over CHOICEs after PROMPT, "
                "best first is marked with '*'. A choice continues the prompt exactly (write the leading space: "
                "' Paris'); \\n and \\t are decoded.")
    p.add_argument("prompt", help="the prompt ('-' reads standard input)")
    p.add_argument("choices", nargs="+", metavar="CHOICE", help="the candidate continuations")
    p.add_argument("--normalization", choices=["sum", "mean", "char", "pmi"], default=None,
                   help="sum (default; total log-prob), mean (per token), char (per character), pmi")
    p.add_argument("--end", metavar="TEXT", help="text scored after every choice (e.g. '\\n')")
    p.add_argument("--tree", metavar="FILE", help="write the token choice tree: .dot, or .svg/.png/.pdf with GraphViz")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_choose)

    p = command("run", "run a program file", "Execute FILE, a Python file that defines `program` (an "
                "autocog.fta.Program, or a function f(lm, **inputs)) and optionally `inputs` (a dict), run it "
                "and print the best path.")
    p.add_argument("file", help="the program file (.py)")
    p.add_argument("--input", action="append", default=[], metavar="NAME=VALUE",
                   help="a program input (repeatable; overrides the file's `inputs`)")
    p.add_argument("--width", type=positive_int, default=None, help="options explored per Choose (default 1)")
    p.add_argument("--threshold", type=probability, default=None, help="prune options below this probability")
    p.add_argument("--paths", type=positive_int, default=1, help="print the N best paths (default 1)")
    p.add_argument("--tree", metavar="FILE", help="write the thought tree (.dot, or .svg/.png with GraphViz)")
    p.add_argument("--json", action="store_true", help="print the best path as JSON")
    p.set_defaults(func=cmd_run)

    p = command("eval", "multiple-choice evaluation", "Accuracy on multiple-choice questions under sum, mean "
                "(per token) and char (per character: lm-eval's acc_norm) normalizations, with a Wilson "
                "confidence interval, a confusion table and a calibration plot.\n\nDATA: a JSONL file of "
                '{"question" or "prompt", "choices", "answer"} (default: the bundled easy_mc.jsonl), or '
                "hf:NAME for a Hugging Face dataset (needs the datasets package).\n\nSeveral --model "
                "([BACKEND:]PATH; a .gguf file goes to llama, a directory to tf): the same items scored on each, "
                "one table (accuracy and CI per normalization, |delta logp|, KL and agreement against the first "
                "model, size, time); --plot then draws the comparison, --json writes it (for autocog card).")
    p.add_argument("data", nargs="?", default=None, help="JSONL file or hf:NAME (default: the bundled example)")
    p.add_argument("--split", default=None, help="hf: the split (default test)")
    p.add_argument("--hf-config", default=None, help="hf: the dataset's configuration")
    p.add_argument("--fields", default=None, metavar="OURS=THEIRS,...",
                   help="rename columns, e.g. question=ctx,choices=endings,answer=label")
    p.add_argument("--limit", type=positive_int, default=None, help="only the first N questions")
    p.add_argument("--normalization", action="append", choices=["sum", "mean", "char", "pmi"], default=None,
                   help="repeatable; default sum, mean and char")
    p.add_argument("--template", default=None, help="prompt for 'question' records (default "
                   "'Question: {question}\\nAnswer:')")
    p.add_argument("--batch-size", type=positive_int, default=16, help="questions per forward pass (default 16)")
    p.add_argument("--chat", action="store_true", help="apply the model's chat template: each prompt is a user "
                   "message, the choices start the assistant's reply (their leading space dropped)")
    p.add_argument("--confidence", type=open_interval, default=0.95, help="interval level (default 0.95)")
    p.add_argument("--plot", metavar="FILE.png", help="write the calibration plot")
    p.add_argument("--json", metavar="FILE", help="write the full report, per question, as JSON ('-': stdout)")
    p.set_defaults(func=cmd_eval)

    p = command("search", "search completion settings", "Score completion settings on DATA with a metric and "
                "print the table, best first.\n\nDATA: JSONL of {prompt or question, reference/answer/target} "
                "(default: the bundled easy_mc.jsonl, whose reference is the right choice's text).\n"
                "--grid: JSON ('{\"temperature\": [0, 0.7]}') or NAME=V1,V2 (repeatable), e.g. "
                "--grid max_tokens=4,8 --grid 'stop=null,\\n' (null: no stop string; \\n: a newline).")
    p.add_argument("data", nargs="?", default=None, help="JSONL file (default: the bundled example)")
    p.add_argument("--grid", action="append", default=None, metavar="SPEC",
                   help="settings to try (default temperature=0,0.7 and max_tokens=4,8)")
    p.add_argument("--random", type=positive_int, default=None, metavar="N",
                   help="random search: N settings drawn from the grid instead of all of them")
    p.add_argument("--metric", choices=["exact", "contains", "startswith", "f1"], default="contains",
                   help="how a completion is scored against the reference (default contains)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random draws and of sampled completions")
    p.add_argument("--base", default=None, metavar="JSON", help="settings shared by every run, as JSON")
    p.add_argument("--limit", type=positive_int, default=None, help="only the first N items")
    p.add_argument("--top", type=positive_int, default=None, help="print only the N best rows")
    p.add_argument("--json", metavar="FILE", help="write the full result as JSON ('-': stdout)")
    p.set_defaults(func=cmd_search)

    p = command("bench", "timing", "Without SCRIPT: a quick built-in timing of choose and of the batch API on "
                "the chosen model. With SCRIPT: run bench/SCRIPT.py (from the current directory or the "
                "source checkout) with the remaining arguments; --list shows the scripts, --all runs each.")
    p.add_argument("script", nargs="?", default=None, help="a script in bench/ (name without .py)")
    p.add_argument("script_args", nargs=argparse.REMAINDER, help="arguments for the script")
    p.add_argument("--list", action="store_true", help="list the scripts in bench/")
    p.add_argument("--all", action="store_true", help="run every script in bench/")
    p.add_argument("--prompts", type=positive_int, default=20, help="built-in: prompts (default 20)")
    p.add_argument("--choices", type=positive_int, default=4, help="built-in: choices per prompt (default 4)")
    p.set_defaults(func=cmd_bench)

    p = command("lm-eval", "lm-evaluation-harness tasks", "Run lm-evaluation-harness tasks "
                "(lm_eval.simple_evaluate) on the model through the autocog adapter (autocog.lm_eval) and print "
                "lm-eval's table. Needs the lm-eval extra: pip install autocog[lm-eval].")
    p.add_argument("--tasks", required=True, metavar="T1,T2", help="task names, comma-separated (glob patterns too)")
    p.add_argument("--include-path", action="append", default=None, metavar="DIR",
                   help="a folder of task YAML files (repeatable)")
    p.add_argument("--model-args", default="", metavar="K=V,...",
                   help="more model_args for the adapter, e.g. dtype=float32,n_ctx=4096,max_length=512")
    p.add_argument("--num-fewshot", type=non_negative_int, default=None, help="examples in the context")
    p.add_argument("--limit", type=positive_int, default=None, help="only the first N documents of each task")
    p.add_argument("--batch-size", type=positive_int, default=16, help="prompts per scoring call (default 16)")
    p.add_argument("--output", metavar="PATH", help="write the results (and the per-document samples) as JSON")
    p.set_defaults(func=cmd_lm_eval)

    from .cli_gguf import register

    register(commands, model, command)  # convert, quantize, perplexity, card
    return parser


class ModelOption(argparse.Action):
    """``--model``: the last value is ``args.model``; ``args.models`` keeps every value (eval compares them)."""

    def __call__(self, parser, namespace, values, option_string=None):
        namespace.model = values
        namespace.models = list(getattr(namespace, "models", None) or []) + [values]


def add_generation_options(p: Parser) -> None:
    p.add_argument("--max-tokens", type=non_negative_int, default=None, help="token limit (default 64)")
    p.add_argument("--temperature", type=non_negative_float, default=None, help="0 = greedy (default)")
    p.add_argument("--top-p", type=probability, default=None, help="nucleus sampling mass")
    p.add_argument("--top-k", type=non_negative_int, default=None, help="sample among the k best tokens (0: all)")
    p.add_argument("--min-p", type=probability, default=None,
                   help="keep tokens at least this fraction as likely as the best one (0: off)")
    p.add_argument("--seed", type=int, default=None, help="seed of the sampler")


# --- models --------------------------------------------------------------------------------------------


def load_lm(args: argparse.Namespace):
    """The `LM` the model options describe (backends are imported only when asked for)."""
    prefix, sep, rest = (args.model or "").partition(":")
    if sep and rest and prefix in BACKENDS:  # --model llama:path.gguf
        args.backend, args.model = prefix, rest
    if args.backend != "openai" and (args.base_url or args.api_key):
        raise UsageError("--base-url and --api-key are for --backend openai")
    if args.backend == "tf":
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from .lm import TfLM

        try:
            import transformers

            transformers.logging.set_verbosity_error()
            transformers.logging.disable_progress_bar()
        except (ImportError, AttributeError):  # TfLM.create names the missing package
            pass
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        return TfLM(**TfLM.create(model_path=args.model, device=args.device))
    if args.backend == "llama":
        from .lm import LLaMa

        return LLaMa(**LLaMa.create(model_path=args.model, n_threads=args.threads))
    from .lm import OpenAI

    return OpenAI(model=args.model, base_url=args.base_url, api_key=args.api_key)


# --- commands ------------------------------------------------------------------------------------------


def cmd_complete(args: argparse.Namespace) -> int:
    prompt = read_text_arg(args.prompt)
    if args.no_stop and args.stop:
        raise UsageError("--stop and --no-stop contradict each other")
    stop = None if args.no_stop else ([unescape(s) for s in args.stop] if args.stop else "\n")
    if isinstance(stop, list) and any(not s for s in stop):
        raise UsageError("a stop string cannot be empty")
    settings = {k: v for k, v in (("max_tokens", args.max_tokens), ("temperature", args.temperature),
                                  ("top_p", args.top_p), ("top_k", args.top_k), ("min_p", args.min_p),
                                  ("seed", args.seed)) if v is not None}
    if args.chat or args.system is not None:
        prompt = ([{"role": "system", "content": unescape(args.system)}] if args.system is not None else []) + [
            {"role": "user", "content": prompt}]
    lm = load_lm(args)
    text = ""
    for piece in lm.stream(prompt, stop=stop, **settings):  # printed as it comes
        sys.stdout.write(piece)
        sys.stdout.flush()
        text += piece
    sys.stdout.write("" if text.endswith("\n") else "\n")
    return EXIT_OK


def cmd_choose(args: argparse.Namespace) -> int:
    from .lm.lm import check_choices

    prompt = read_text_arg(args.prompt)
    choices = check_choices([unescape(c) for c in args.choices])  # before the (slow) model load
    kwargs: dict[str, Any] = {"normalization": args.normalization}
    if args.end:
        kwargs["end"] = unescape(args.end)
    lm = load_lm(args)
    result = lm.choice_distribution(prompt, choices, **kwargs)
    if args.tree:
        if result.tree is None:
            raise RuntimeError(f"the {args.backend} backend scored the choices without a token tree "
                               f"(strategy {result.strategy!r}): no picture to draw")
        path = result.tree.render(args.tree, choices=result.choices, probs=list(result.probs), title=prompt)
        print(f"tree: {path}", file=sys.stderr)
    if args.json:
        print(json.dumps({"prompt": prompt, "choices": result.choices, "normalization": result.normalization,
                          "index": result.index, "choice": result.choice, "probs": result.probs.tolist(),
                          "scores": result.scores.tolist(), "token_logprobs": result.token_logprobs,
                          "strategy": result.strategy}, indent=2))
        return EXIT_OK
    print(f"  {'prob':>6}  {'score':>9}  {'tokens':>6}  choice   ({result.normalization})")
    for j in sorted(range(len(choices)), key=lambda j: -result.probs[j]):
        mark = "*" if j == result.index else " "
        print(f"{mark} {result.probs[j]:>6.3f}  {result.scores[j]:>9.4f}  {len(result.token_logprobs[j]):>6}  "
              f"{result.choices[j]!r}")
    return EXIT_OK


def parse_inputs(pairs: Sequence[str]) -> dict[str, str]:
    inputs = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--input takes NAME=VALUE, got {pair!r}")
        inputs[name.strip()] = unescape(value)
    return inputs


def cmd_run(args: argparse.Namespace) -> int:
    overrides = parse_inputs(args.input)
    path = Path(args.file)
    if not path.is_file():
        raise FileNotFoundError(f"program file not found: {path}")
    namespace = runpy.run_path(str(path), run_name="__autocog_program__")
    if "program" not in namespace:
        raise RuntimeError(f"{path} defines no `program` (an autocog.fta.Program or a function f(lm, **inputs))")
    program = namespace["program"]
    inputs = dict(namespace.get("inputs") or {})
    inputs.update(overrides)
    if hasattr(program, "check_inputs"):  # an autocog.fta.Program: bad inputs are bad arguments, found before loading
        try:
            program.check_inputs(inputs)
        except ValueError as error:
            raise UsageError(_one_line(error)) from error
    lm = load_lm(args)
    if hasattr(program, "run") and callable(program.run):  # an autocog.fta.Program
        settings = {k: v for k, v in (("width", args.width), ("threshold", args.threshold)) if v is not None}
        result = program.run(lm, inputs=inputs, **settings)
        return print_program_result(result, args)
    if callable(program):
        if args.width is not None or args.threshold is not None or args.tree:
            raise UsageError("--width, --threshold and --tree need `program` to be an autocog.fta.Program")
        value = program(lm, **inputs)
        print(json.dumps(value, default=str) if args.json else value)
        return EXIT_OK
    raise RuntimeError(f"`program` in {path} is a {type(program).__name__}: expected an autocog.fta.Program or a function")


def print_program_result(result: Any, args: argparse.Namespace) -> int:
    if args.tree:
        written = result.render(args.tree)
        print(f"tree: {written}", file=sys.stderr)
    paths = list(result.paths)
    if args.json:
        best = paths[0]
        print(json.dumps({"values": best.values, "score": best.score, "probability": best.probability,
                          "status": best.status, "text": best.text,
                          "paths": [{"values": p.values, "score": p.score, "probability": p.probability}
                                    for p in paths[: args.paths]]}, indent=2, default=str))
        return EXIT_OK
    for rank, p in enumerate(paths[: args.paths], start=1):
        title = "best path" if rank == 1 else f"path {rank}"
        print(f"{title}: p={p.probability:.4g} (score {p.score:.4f}, {p.status})")
        for name, value in p.values.items():
            print(f"  {name}: {value!r}")
    tokens = getattr(result, "tokens", None)
    if tokens is not None and getattr(tokens, "evaluated", None) is not None:
        print(f"tokens: {tokens.evaluated} evaluated, {tokens.unique} unique", file=sys.stderr)
    return EXIT_OK


def write_json(data: Any, target: str) -> None:
    text = json.dumps(data, indent=2, default=float)
    if target == "-":
        print(text)
    else:
        Path(target).write_text(text + "\n")
        print(f"json: {target}", file=sys.stderr)


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate import DEFAULT_NORMALIZATIONS, DEFAULT_TEMPLATE, evaluate, load_items

    source = args.data
    fields = None
    if args.fields:
        pairs = [part.partition("=") for part in args.fields.split(",")]
        if any(not sep or not ours or not theirs for ours, sep, theirs in pairs):
            raise UsageError(f"--fields takes OURS=THEIRS pairs separated by commas, got {args.fields!r}")
        fields = {ours.strip(): theirs.strip() for ours, _, theirs in pairs}
        unknown = sorted(set(fields) - {"question", "prompt", "choices", "answer", "id"})
        if unknown:
            raise UsageError(f"--fields: unknown field(s) {', '.join(unknown)}: expected question, prompt, "
                             "choices, answer, id")
    items = load_items(source, template=unescape(args.template) if args.template else DEFAULT_TEMPLATE,
                       limit=args.limit, split=args.split, config=args.hf_config, fields=fields)
    normalizations = list(dict.fromkeys(args.normalization or DEFAULT_NORMALIZATIONS))
    name = Path(source).name if source and not source.startswith("hf:") else (source or "easy_mc.jsonl")
    if len(getattr(args, "models", None) or []) > 1:  # several --model: the comparison table (autocog.compare)
        from .cli_gguf import run_comparison

        return run_comparison(args, items, normalizations, name)
    lm = load_lm(args)
    start = time.perf_counter()
    report = evaluate(lm, items, normalizations=normalizations, batch_size=args.batch_size,
                      confidence=args.confidence, chat=args.chat)
    report.name = Path(source).name if source and not source.startswith("hf:") else (source or "easy_mc.jsonl")
    report.info["seconds"] = time.perf_counter() - start
    if args.json == "-":
        write_json(report.to_dict(per_item=True), "-")
    else:
        print(report.format())
        if args.json:
            write_json(report.to_dict(per_item=True), args.json)
    if args.plot:
        print(f"plot: {report.plot(args.plot)}", file=sys.stderr)
    return EXIT_OK


def cmd_lm_eval(args: argparse.Namespace) -> int:
    """``autocog lm-eval``: the model options and --model-args become the adapter's model_args."""
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager

        from .lm_eval import AutocogLM, parse_model_args
    except ImportError as error:
        raise UsageError(f"autocog lm-eval needs lm-evaluation-harness: pip install autocog[lm-eval] ({error})") from None
    if args.backend != "openai" and (args.base_url or args.api_key):
        raise UsageError("--base-url and --api-key are for --backend openai")
    try:
        extra = parse_model_args(args.model_args)
    except ValueError as error:
        raise UsageError(str(error)) from None
    model_args: dict[str, Any] = {"backend": args.backend, "batch_size": args.batch_size}
    options = {"model": args.model, "device": args.device if args.backend == "tf" else None,
               "base_url": args.base_url, "api_key": args.api_key,
               "n_threads": args.threads if args.backend == "llama" else None}
    model_args.update({k: v for k, v in options.items() if v is not None})
    clash = sorted(set(extra) & set(model_args) - {"device"})
    if clash:
        raise UsageError(f"--model-args repeats {', '.join(clash)}: give each setting once")
    model_args.update(extra)
    for d in args.include_path or []:
        if not Path(d).is_dir():
            raise UsageError(f"--include-path: not a folder: {d}")
    manager = TaskManager(include_path=args.include_path or None)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    missing = [t for t in tasks if not manager.match_tasks([t])]
    if not tasks or missing:
        raise UsageError(f"--tasks: unknown task(s) {', '.join(missing) or repr(args.tasks)} (add --include-path "
                         "for your own YAML tasks)")
    if args.backend == "tf" and args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        lm = AutocogLM.create_from_arg_obj(model_args)
    except TypeError as error:
        raise UsageError(str(error)) from None
    results = lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=manager, num_fewshot=args.num_fewshot,
                                      limit=args.limit, log_samples=bool(args.output))
    print(lm_eval.utils.make_table(results))
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2, default=lm_eval.utils.handle_non_serializable))
        print(f"results: {out}", file=sys.stderr)
    return EXIT_OK


def parse_grid(specs: Sequence[str]) -> dict[str, list]:
    """``--grid`` values: JSON objects, or ``NAME=V1,V2`` with each value read as JSON when it parses
    (``0.7``, ``null``, ``"\\n"``) and as a plain string otherwise."""
    grid: dict[str, list] = {}
    for spec in specs:
        spec = spec.strip()
        if spec.startswith("{"):
            try:
                value = json.loads(spec)
            except json.JSONDecodeError as error:
                raise UsageError(f"--grid {spec!r} is not valid JSON: {error.msg}") from None
            for key, values in value.items():
                grid[key] = values if isinstance(values, list) else [values]
            continue
        name, sep, values = spec.partition("=")
        if not sep or not name.strip() or not values:
            raise UsageError(f"--grid takes JSON or NAME=V1,V2, got {spec!r}")
        parsed = []
        for text in values.split(","):
            try:
                parsed.append(json.loads(text))
            except json.JSONDecodeError:
                parsed.append(unescape(text))
        grid[name.strip()] = parsed
    allowed = {"temperature", "top_p", "top_k", "max_tokens", "max_new_tokens", "stop", "seed"}
    unknown = sorted(set(grid) - allowed)
    if unknown:
        raise UsageError(f"unknown setting(s) {', '.join(unknown)} in --grid: expected {', '.join(sorted(allowed))}")
    return grid


def cmd_search(args: argparse.Namespace) -> int:
    from .evaluate import EXAMPLE_DATASET
    from .search import load_pairs, search

    grid = parse_grid(args.grid) if args.grid else {"temperature": [0.0, 0.7], "max_tokens": [4, 8]}
    base = None
    if args.base:
        try:
            base = json.loads(args.base)
        except json.JSONDecodeError as error:
            raise UsageError(f"--base is not valid JSON: {error.msg}") from None
        if not isinstance(base, dict):
            raise UsageError("--base must be a JSON object of settings")
    pairs = load_pairs(args.data or EXAMPLE_DATASET, limit=args.limit)
    lm = load_lm(args)
    if args.random:
        result = search(lm, pairs, args.metric, distributions=grid, n_iter=args.random, seed=args.seed, base=base)
    else:
        result = search(lm, pairs, args.metric, grid=grid, seed=args.seed, base=base)
    if args.json == "-":
        write_json(result.to_dict(), "-")
    else:
        print(result.format(args.top))
        if args.json:
            write_json(result.to_dict(), args.json)
    return EXIT_OK


def bench_dirs() -> list[Path]:
    here = Path(__file__).resolve().parent.parent / "bench"
    return [d for d in dict.fromkeys([Path.cwd() / "bench", here]) if d.is_dir()]


def bench_scripts() -> dict[str, Path]:
    scripts: dict[str, Path] = {}
    for d in bench_dirs():
        for path in sorted(d.glob("*.py")):
            if not path.name.startswith("_"):
                scripts.setdefault(path.stem, path)
    return scripts


def cmd_bench(args: argparse.Namespace) -> int:
    scripts = bench_scripts()
    if args.list:
        if not scripts:
            print("no bench/ folder here (run from a source checkout); `autocog bench` runs the built-in timing")
        for name, path in scripts.items():
            doc = _first_doc_line(path)
            print(f"{name:<12} {path}" + (f"  {doc}" if doc else ""))
        return EXIT_OK
    if args.all or args.script:
        names = list(scripts) if args.all else [args.script.removesuffix(".py")]
        if args.all and not names:
            raise RuntimeError("no bench/ folder with scripts found (run from a source checkout)")
        for name in names:
            if name not in scripts:
                raise UsageError(f"no bench script {name!r}" + (f": available: {', '.join(scripts)}" if scripts
                                                                 else " (no bench/ folder found)"))
        status = EXIT_OK
        for name in names:
            print(f"== bench/{name}.py", flush=True)
            code = subprocess.call([sys.executable, str(scripts[name]), *args.script_args])
            status = status or (EXIT_ERROR if code else EXIT_OK)
        return status
    return builtin_bench(args)


def _first_doc_line(path: Path) -> str:
    import ast

    try:
        doc = ast.get_docstring(ast.parse(path.read_text()))
    except (SyntaxError, OSError, ValueError):
        return ""
    return doc.splitlines()[0] if doc else ""


def builtin_bench(args: argparse.Namespace) -> int:
    """Choose calls per second one by one, and prompts x choices per second through `predict_proba`."""
    import random

    from .batch import predict_proba

    words = "the quick brown fox jumps over lazy dog answer yes no capital city river one two three".split()
    rng = random.Random(0)
    prompts = [f"Question {i}: " + " ".join(rng.choice(words) for _ in range(12)) + "\nAnswer:"
               for i in range(args.prompts)]
    choices = list(dict.fromkeys(" " + " ".join(rng.choice(words) for _ in range(rng.randint(1, 3)))
                                 for _ in range(args.choices * 4)))[: args.choices]
    if len(choices) < args.choices:
        choices += [f" option {k}" for k in range(args.choices - len(choices))]
    start = time.perf_counter()
    lm = load_lm(args)
    load = time.perf_counter() - start
    lm.choice_distribution(prompts[0], choices)  # warm-up
    start = time.perf_counter()
    for prompt in prompts:
        lm.choice_distribution(prompt, choices)
    one = time.perf_counter() - start
    start = time.perf_counter()
    predict_proba(lm, prompts, choices, progress=False)
    batched = time.perf_counter() - start
    n = len(prompts) * len(choices)
    print(f"model: {args.backend} {args.model or '(embedded default)'} loaded in {load:.2f} s")
    print(f"{'method':<22} {'seconds':>8} {'prompts/s':>10} {'prompt x choices/s':>19}")
    for name, seconds in (("choose, one by one", one), ("predict_proba (batch)", batched)):
        print(f"{name:<22} {seconds:>8.3f} {len(prompts) / seconds:>10.1f} {n / seconds:>19.1f}")
    return EXIT_OK


# --- entry point ---------------------------------------------------------------------------------------


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split("\n")[0].split()) or type(error).__name__
    return text


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit code (the ``autocog`` console script exits with it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    prog = f"autocog {args.command}"
    debug = args.debug or os.environ.get("AUTOCOG_DEBUG", "") not in ("", "0")
    from .lm.errors import InvalidChoicesError, InvalidPromptError

    try:
        return args.func(args)
    except (UsageError, InvalidChoicesError, InvalidPromptError) as error:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {_one_line(error)} (see {prog} --help)", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `autocog ... | head`
        return EXIT_OK
    except Exception as error:  # noqa: BLE001 - the command line reports every failure in one line
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {type(error).__name__}: {_one_line(error)}", file=sys.stderr)
        return EXIT_ERROR


def console_main() -> None:  # pragma: no cover - the setuptools entry point may point here too
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
