"""The ``autocog`` commands that measure a model on data: ``eval`` (`autocog.eval.evaluate`; several ``--model``
go to `autocog.cli.gguf.run_comparison`), ``search`` (`autocog.eval.search`) and ``lm-eval`` (the
lm-evaluation-harness adapter, `autocog.eval.lm_eval`). ``add_NAME(command)`` registers a subcommand,
``cmd_NAME(args)`` runs it.

>>> parse_grid(["max_tokens=4,8"])
{'max_tokens': [4, 8]}
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from autocog.cli.base import (
    EXIT_OK,
    Parser,
    UsageError,
    backend_options,
    load_lm,
    non_negative_int,
    open_interval,
    positive_int,
    split_model_prefix,
    unescape,
    write_json,
)
from autocog.lm.scoring import DEFAULT_BATCH_SIZE


def add_eval(command: Callable[..., Parser]) -> None:
    """``autocog eval [DATA]``."""
    p = command(
        "eval",
        "multiple-choice evaluation",
        "Accuracy on multiple-choice questions under sum, mean "
        "(per token) and char (per character: lm-eval's acc_norm) normalizations, with a Wilson "
        "confidence interval, a confusion table and a calibration plot.\n\nDATA: a JSONL file of "
        '{"question" or "prompt", "choices", "answer"} (default: the bundled easy_mc.jsonl), or '
        "hf:NAME for a Hugging Face dataset (needs the datasets package).\n\nSeveral --model "
        "([BACKEND:]PATH; a .gguf file goes to llama, a directory to tf): the same items scored on each, "
        "one table (accuracy and CI per normalization, |delta logp|, KL and agreement against the first "
        "model, size, time); --plot then draws the comparison, --json writes it (for autocog card).",
    )
    p.add_argument("data", nargs="?", default=None, help="JSONL file or hf:NAME (default: the bundled example)")
    p.add_argument("--split", default=None, help="hf: the split (default test)")
    p.add_argument("--hf-config", default=None, help="hf: the dataset's configuration")
    p.add_argument(
        "--fields",
        default=None,
        metavar="OURS=THEIRS,...",
        help="rename columns, e.g. question=ctx,choices=endings,answer=label",
    )
    p.add_argument("--limit", type=positive_int, default=None, help="only the first N questions")
    p.add_argument(
        "--normalization",
        action="append",
        choices=["sum", "mean", "char", "pmi"],
        default=None,
        help="repeatable; default sum, mean and char",
    )
    p.add_argument(
        "--template", default=None, help="prompt for 'question' records (default 'Question: {question}\\nAnswer:')"
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=DEFAULT_BATCH_SIZE,
        help=f"questions per forward pass (default {DEFAULT_BATCH_SIZE})",
    )
    p.add_argument(
        "--chat",
        action="store_true",
        help="apply the model's chat template: each prompt is a user "
        "message, the choices start the assistant's reply (their leading space dropped)",
    )
    p.add_argument("--confidence", type=open_interval, default=0.95, help="interval level (default 0.95)")
    p.add_argument(
        "--f32-cache",
        action="store_true",
        help="several --model: llama.cpp with an F32 KV cache, so the table measures the weights alone",
    )
    p.add_argument("--plot", metavar="FILE.png", help="write the calibration plot")
    p.add_argument("--json", metavar="FILE", help="write the full report, per question, as JSON ('-': stdout)")
    p.set_defaults(func=cmd_eval)


def add_search(command: Callable[..., Parser]) -> None:
    """``autocog search [DATA]``."""
    p = command(
        "search",
        "search completion settings",
        "Score completion settings on DATA with a metric and "
        "print the table, best first.\n\nDATA: JSONL of {prompt or question, reference/answer/target} "
        "(default: the bundled easy_mc.jsonl, whose reference is the right choice's text).\n"
        "--grid: JSON ('{\"temperature\": [0, 0.7]}') or NAME=V1,V2 (repeatable), e.g. "
        "--grid max_tokens=4,8 --grid 'stop=null,\\n' (null: no stop string; \\n: a newline).",
    )
    p.add_argument("data", nargs="?", default=None, help="JSONL file (default: the bundled example)")
    p.add_argument(
        "--grid",
        action="append",
        default=None,
        metavar="SPEC",
        help="settings to try (default temperature=0,0.7 and max_tokens=4,8)",
    )
    p.add_argument(
        "--random",
        type=positive_int,
        default=None,
        metavar="N",
        help="random search: N settings drawn from the grid instead of all of them",
    )
    p.add_argument(
        "--metric",
        choices=["exact", "contains", "startswith", "f1"],
        default="contains",
        help="how a completion is scored against the reference (default contains)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random draws and of sampled completions")
    p.add_argument("--base", default=None, metavar="JSON", help="settings shared by every run, as JSON")
    p.add_argument("--limit", type=positive_int, default=None, help="only the first N items")
    p.add_argument("--top", type=positive_int, default=None, help="print only the N best rows")
    p.add_argument("--json", metavar="FILE", help="write the full result as JSON ('-': stdout)")
    p.set_defaults(func=cmd_search)


def add_lm_eval(command: Callable[..., Parser]) -> None:
    """``autocog lm-eval --tasks T``."""
    p = command(
        "lm-eval",
        "lm-evaluation-harness tasks",
        "Run lm-evaluation-harness tasks "
        "(lm_eval.simple_evaluate) on the model through the autocog adapter (autocog.eval.lm_eval) and print "
        "lm-eval's table. Needs the lm-eval extra: pip install autocog[lm-eval]. Data parallel: start it with "
        "torchrun --nproc_per_node N -m autocog lm-eval ... (or accelerate launch): each process scores its share "
        "(--device cuda: one replica per GPU, cuda:LOCAL_RANK) and rank 0 prints and writes the results.",
    )
    p.add_argument("--tasks", required=True, metavar="T1,T2", help="task names, comma-separated (glob patterns too)")
    p.add_argument(
        "--include-path", action="append", default=None, metavar="DIR", help="a folder of task YAML files (repeatable)"
    )
    p.add_argument(
        "--model-args",
        default="",
        metavar="K=V,...",
        help="more model_args for the adapter, e.g. dtype=float32,n_ctx=4096,max_length=512",
    )
    p.add_argument("--num-fewshot", type=non_negative_int, default=None, help="examples in the context")
    p.add_argument("--limit", type=positive_int, default=None, help="only the first N documents of each task")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=DEFAULT_BATCH_SIZE,
        help=f"prompts per scoring call (default {DEFAULT_BATCH_SIZE})",
    )
    p.add_argument("--output", metavar="PATH", help="write the results (and the per-document samples) as JSON")
    p.set_defaults(func=cmd_lm_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from autocog.eval.evaluate import (
        DEFAULT_NORMALIZATIONS,
        DEFAULT_TEMPLATE,
        evaluate,
        load_items,
    )

    source = args.data
    fields = None
    if args.fields:
        pairs = [part.partition("=") for part in args.fields.split(",")]
        if any(not sep or not ours or not theirs for ours, sep, theirs in pairs):
            raise UsageError(f"--fields takes OURS=THEIRS pairs separated by commas, got {args.fields!r}")
        fields = {ours.strip(): theirs.strip() for ours, _, theirs in pairs}
        unknown = sorted(set(fields) - {"question", "prompt", "choices", "answer", "id"})
        if unknown:
            raise UsageError(
                f"--fields: unknown field(s) {', '.join(unknown)}: expected question, prompt, choices, answer, id"
            )
    items = load_items(
        source,
        template=unescape(args.template) if args.template else DEFAULT_TEMPLATE,
        limit=args.limit,
        split=args.split,
        config=args.hf_config,
        fields=fields,
    )
    normalizations = list(dict.fromkeys(args.normalization or DEFAULT_NORMALIZATIONS))
    name = Path(source).name if source and not source.startswith("hf:") else (source or "easy_mc.jsonl")
    if len(getattr(args, "models", None) or []) > 1:  # several --model: the comparison table (autocog.eval.compare)
        from autocog.cli.gguf import run_comparison

        return run_comparison(args, items, normalizations, name)
    lm = load_lm(args)
    start = time.perf_counter()
    report = evaluate(
        lm, items, normalizations=normalizations, batch_size=args.batch_size, confidence=args.confidence, chat=args.chat
    )
    report.name = name
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

        from autocog.eval.lm_eval import AutocogLM, parse_model_args
    except ImportError as error:
        raise UsageError(
            f"autocog lm-eval needs lm-evaluation-harness: pip install autocog[lm-eval] ({error})"
        ) from None
    split_model_prefix(args)
    options = backend_options(args)
    try:
        extra = parse_model_args(args.model_args)
    except ValueError as error:
        raise UsageError(str(error)) from None
    model_args: dict[str, Any] = {"backend": args.backend, "batch_size": args.batch_size}
    model_args.update({"model": args.model} if args.model is not None else {})
    model_args.update(options)
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
        raise UsageError(
            f"--tasks: unknown task(s) {', '.join(missing) or repr(args.tasks)} (add --include-path "
            "for your own YAML tasks)"
        )
    try:
        lm = AutocogLM.create_from_arg_obj(model_args)
    except TypeError as error:
        raise UsageError(str(error)) from None
    results = lm_eval.simple_evaluate(
        model=lm,
        tasks=tasks,
        task_manager=manager,
        num_fewshot=args.num_fewshot,
        limit=args.limit,
        log_samples=bool(args.output),
    )
    if results is None:  # data parallel: lm-eval gathers the metrics on rank 0, which prints and writes them
        print(f"rank {lm.rank} of {lm.world_size}: scored its share; rank 0 writes the results", file=sys.stderr)
        return EXIT_OK
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
    from autocog.eval.evaluate import EXAMPLE_DATASET
    from autocog.eval.search import load_pairs, search

    grid: dict[str, list] = parse_grid(args.grid) if args.grid else {"temperature": [0.0, 0.7], "max_tokens": [4, 8]}
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
