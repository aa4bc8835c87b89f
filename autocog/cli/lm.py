"""The ``autocog`` commands that use a model directly: ``complete``, ``choose`` and ``run`` (a program
file). Each ``add_NAME(command)`` registers its subcommand (`autocog.cli.app.build_parser` calls them);
``cmd_NAME(args)`` runs it and returns the exit code.
"""

from __future__ import annotations

import argparse
import json
import runpy
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from autocog.cli.base import (
    EXIT_OK,
    Parser,
    UsageError,
    load_lm,
    non_negative_float,
    non_negative_int,
    one_line,
    positive_int,
    probability,
    read_text_arg,
    unescape,
)


def add_complete(command: Callable[..., Parser]) -> None:
    """``autocog complete PROMPT``."""
    p = command(
        "complete",
        "continue a prompt",
        "Continue PROMPT and print the completion. The printed text "
        "ends with the stop string when generation stopped on it. \\n and \\t in arguments are decoded.",
    )
    p.add_argument("prompt", help="the prompt ('-' reads standard input)")
    p.add_argument("--stop", action="append", metavar="TEXT", help="stop string (repeatable; default a newline)")
    p.add_argument("--no-stop", action="store_true", help="no stop string: until EOS or --max-tokens")
    p.add_argument(
        "--chat",
        action="store_true",
        help="send PROMPT as a user message through the model's chat "
        "template (the completion is the assistant's reply)",
    )
    p.add_argument("--system", metavar="TEXT", default=None, help="a system message (implies --chat)")
    add_generation_options(p)
    p.set_defaults(func=cmd_complete)


def add_choose(command: Callable[..., Parser]) -> None:
    """``autocog choose PROMPT CHOICE...``."""
    p = command(
        "choose",
        "score choices after a prompt",
        "Print the distribution over CHOICEs after PROMPT, "
        "best first is marked with '*'. A choice continues the prompt exactly (write the leading space: "
        "' Paris'); \\n and \\t are decoded.",
    )
    p.add_argument("prompt", help="the prompt ('-' reads standard input)")
    p.add_argument("choices", nargs="+", metavar="CHOICE", help="the candidate continuations")
    p.add_argument(
        "--normalization",
        choices=["sum", "mean", "char", "pmi"],
        default=None,
        help="sum (default; total log-prob), mean (per token), char (per character), pmi",
    )
    p.add_argument("--end", metavar="TEXT", help="text scored after every choice (e.g. '\\n')")
    p.add_argument("--tree", metavar="FILE", help="write the token choice tree: .dot, or .svg/.png/.pdf with GraphViz")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_choose)


def add_run(command: Callable[..., Parser]) -> None:
    """``autocog run FILE``."""
    p = command(
        "run",
        "run a program file",
        "Execute FILE, a Python file that defines `program` (an "
        "autocog.fta.Program, or a function f(lm, **inputs)) and optionally `inputs` (a dict), run it "
        "and print the best path.",
    )
    p.add_argument("file", help="the program file (.py)")
    p.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a program input (repeatable; overrides the file's `inputs`)",
    )
    p.add_argument("--width", type=positive_int, default=None, help="options explored per Choose (default 1)")
    p.add_argument("--threshold", type=probability, default=None, help="prune options below this probability")
    p.add_argument("--paths", type=positive_int, default=1, help="print the N best paths (default 1)")
    p.add_argument("--tree", metavar="FILE", help="write the thought tree (.dot, or .svg/.png with GraphViz)")
    p.add_argument("--json", action="store_true", help="print the best path as JSON")
    p.set_defaults(func=cmd_run)


def add_generation_options(p: Parser) -> None:
    p.add_argument("--max-tokens", type=non_negative_int, default=None, help="token limit (default 64)")
    p.add_argument("--temperature", type=non_negative_float, default=None, help="0 = greedy (default)")
    p.add_argument("--top-p", type=probability, default=None, help="nucleus sampling mass")
    p.add_argument("--top-k", type=non_negative_int, default=None, help="sample among the k best tokens (0: all)")
    p.add_argument(
        "--min-p",
        type=probability,
        default=None,
        help="keep tokens at least this fraction as likely as the best one (0: off)",
    )
    p.add_argument("--seed", type=int, default=None, help="seed of the sampler")


def cmd_complete(args: argparse.Namespace) -> int:
    user_text = read_text_arg(args.prompt)
    if args.no_stop and args.stop:
        raise UsageError("--stop and --no-stop contradict each other")
    stop = None if args.no_stop else ([unescape(s) for s in args.stop] if args.stop else "\n")
    if isinstance(stop, list) and any(not s for s in stop):
        raise UsageError("a stop string cannot be empty")
    settings = {
        k: v
        for k, v in (
            ("max_tokens", args.max_tokens),
            ("temperature", args.temperature),
            ("top_p", args.top_p),
            ("top_k", args.top_k),
            ("min_p", args.min_p),
            ("seed", args.seed),
        )
        if v is not None
    }
    prompt: str | list[dict[str, str]] = user_text
    if args.chat or args.system is not None:
        prompt = ([{"role": "system", "content": unescape(args.system)}] if args.system is not None else []) + [
            {"role": "user", "content": user_text}
        ]
    lm = load_lm(args)
    text = ""
    for piece in lm.stream(prompt, stop=stop, **settings):  # printed as it comes
        sys.stdout.write(piece)
        sys.stdout.flush()
        text += piece
    sys.stdout.write("" if text.endswith("\n") else "\n")
    return EXIT_OK


def cmd_choose(args: argparse.Namespace) -> int:
    from autocog.core.checks import check_choices

    prompt = read_text_arg(args.prompt)
    choices = check_choices([unescape(c) for c in args.choices])  # before the (slow) model load
    kwargs: dict[str, Any] = {"normalization": args.normalization}
    if args.end:
        kwargs["end"] = unescape(args.end)
    lm = load_lm(args)
    result = lm.choice_distribution(prompt, choices, **kwargs)
    if args.tree:
        if result.tree is None:
            raise RuntimeError(
                f"the {args.backend} backend scored the choices without a token tree "
                f"(strategy {result.strategy!r}): no picture to draw"
            )
        path = result.tree.render(args.tree, choices=result.choices, probs=list(result.probs), title=prompt)
        print(f"tree: {path}", file=sys.stderr)
    if args.json:
        print(
            json.dumps(
                {
                    "prompt": prompt,
                    "choices": result.choices,
                    "normalization": result.normalization,
                    "index": result.index,
                    "choice": result.choice,
                    "probs": result.probs.tolist(),
                    "scores": result.scores.tolist(),
                    "token_logprobs": result.token_logprobs,
                    "strategy": result.strategy,
                },
                indent=2,
            )
        )
        return EXIT_OK
    print(f"  {'prob':>6}  {'score':>9}  {'tokens':>6}  choice   ({result.normalization})")
    for j in sorted(range(len(choices)), key=lambda j: -result.probs[j]):
        mark = "*" if j == result.index else " "
        print(
            f"{mark} {result.probs[j]:>6.3f}  {result.scores[j]:>9.4f}  {len(result.token_logprobs[j]):>6}  "
            f"{result.choices[j]!r}"
        )
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
            raise UsageError(one_line(error)) from error
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
    raise RuntimeError(
        f"`program` in {path} is a {type(program).__name__}: expected an autocog.fta.Program or a function"
    )


def print_program_result(result: Any, args: argparse.Namespace) -> int:
    if args.tree:
        written = result.render(args.tree)
        print(f"tree: {written}", file=sys.stderr)
    paths = list(result.paths)
    if args.json:
        best = paths[0]
        print(
            json.dumps(
                {
                    "values": best.values,
                    "score": best.score,
                    "probability": best.probability,
                    "status": best.status,
                    "text": best.text,
                    "paths": [
                        {"values": p.values, "score": p.score, "probability": p.probability}
                        for p in paths[: args.paths]
                    ],
                },
                indent=2,
                default=str,
            )
        )
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
