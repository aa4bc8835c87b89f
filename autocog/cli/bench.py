"""``autocog bench``: a quick built-in timing of choose and of the batch API, or the scripts in ``bench/``
(from the current directory or the source checkout). ``add_bench(command)`` registers it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from autocog.cli.base import (
    EXIT_ERROR,
    EXIT_OK,
    Parser,
    UsageError,
    load_lm,
    positive_int,
)


def add_bench(command: Callable[..., Parser]) -> None:
    """``autocog bench [SCRIPT]``."""
    p = command(
        "bench",
        "timing",
        "Without SCRIPT: a quick built-in timing of choose and of the batch API on "
        "the chosen model. With SCRIPT: run bench/SCRIPT.py (from the current directory or the "
        "source checkout) with the remaining arguments; --list shows the scripts, --all runs each.",
    )
    p.add_argument("script", nargs="?", default=None, help="a script in bench/ (name without .py)")
    p.add_argument("script_args", nargs=argparse.REMAINDER, help="arguments for the script")
    p.add_argument("--list", action="store_true", help="list the scripts in bench/")
    p.add_argument("--all", action="store_true", help="run every script in bench/")
    p.add_argument("--prompts", type=positive_int, default=20, help="built-in: prompts (default 20)")
    p.add_argument("--choices", type=positive_int, default=4, help="built-in: choices per prompt (default 4)")
    p.set_defaults(func=cmd_bench)


def bench_dirs() -> list[Path]:
    here = Path(__file__).resolve().parents[2] / "bench"
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
                raise UsageError(
                    f"no bench script {name!r}"
                    + (f": available: {', '.join(scripts)}" if scripts else " (no bench/ folder found)")
                )
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

    from autocog.eval.batch import predict_proba

    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "lazy",
        "dog",
        "answer",
        "yes",
        "no",
        "capital",
        "city",
        "river",
        "one",
        "two",
        "three",
    ]
    rng = random.Random(0)
    prompts = [
        f"Question {i}: " + " ".join(rng.choice(words) for _ in range(12)) + "\nAnswer:" for i in range(args.prompts)
    ]
    choices = list(
        dict.fromkeys(
            " " + " ".join(rng.choice(words) for _ in range(rng.randint(1, 3))) for _ in range(args.choices * 4)
        )
    )[: args.choices]
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
