"""Shared pieces of the ``autocog`` command line (`autocog.cli.app`): exit codes, the one-line-error parser,
argument types, text arguments (``\\n`` escapes, ``-`` for standard input), the model options' loader
(`load_lm`) and JSON output. Every name here is also importable from `autocog.cli.app`.

>>> unescape("a\\nb")
'a\nb'
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

BACKENDS = ("tf", "llama", "openai")


class UsageError(Exception):
    """A bad argument found after parsing (exit code 2)."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``PROG: error: MESSAGE (see PROG --help)`` and exit code 2."""

    def error(self, message: str) -> NoReturn:
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


class ModelOption(argparse.Action):
    """``--model``: the last value is ``args.model``; ``args.models`` keeps every value (eval compares them)."""

    def __call__(self, parser, namespace, values, option_string=None):
        namespace.model = values
        namespace.models = list(getattr(namespace, "models", None) or []) + [values]


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
        from autocog.lm import TfLM

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
        from autocog.lm import LLaMa

        return LLaMa(**LLaMa.create(model_path=args.model, n_threads=args.threads))
    from autocog.lm import OpenAI

    return OpenAI(model=args.model, base_url=args.base_url, api_key=args.api_key)


# --- output --------------------------------------------------------------------------------------------


def write_json(data: Any, target: str) -> None:
    """Indented JSON to ``target``: standard output for ``-``, else the file (named on stderr)."""
    text = json.dumps(data, indent=2, default=float)
    if target == "-":
        print(text)
    else:
        Path(target).write_text(text + "\n")
        print(f"json: {target}", file=sys.stderr)


def one_line(error: BaseException) -> str:
    """The first line of an error's message, white space folded (the class name when it has none)."""
    text = " ".join(str(error).split("\n")[0].split()) or type(error).__name__
    return text
