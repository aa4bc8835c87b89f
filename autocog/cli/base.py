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
from typing import Any, NoReturn, Optional

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# The model options every command has, and the `autocog.lm.load` keyword each becomes: passed to a backend that
# takes that keyword by name (``--threads`` is ``n_threads`` on tf and llama, ``--base-url`` is openai's).
MODEL_OPTIONS = {"device": "device", "threads": "n_threads", "base_url": "base_url", "api_key": "api_key"}
# General settings that a backend without them ignores (the others are a usage error there).
IGNORABLE_OPTIONS = frozenset({"device", "threads"})
# Environment defaults read by third-party libraries when they are imported: no progress bars, no advisory
# logging on stderr, no tokenizers fork warning.
QUIET_ENVIRONMENT = {
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}


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


def backend_name(text: str) -> str:
    """An argparse type for ``--backend``: a name in the backend table (`autocog.lm.registry.BACKENDS`)."""
    from autocog.errors import UnknownBackendError
    from autocog.lm.registry import BACKENDS

    try:
        BACKENDS.backend(text)
    except UnknownBackendError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def backend_help() -> str:
    """The ``--backend`` help: every registered name, where it comes from."""
    from autocog.lm.registry import BACKENDS, BUILT_IN

    names = [name if BACKENDS[name].origin == BUILT_IN else f"{name} (plugin)" for name in BACKENDS]
    return (
        f"one of {', '.join(names)}; default tf. New ones: autocog.lm.register_backend or an "
        "'autocog.backends' entry point"
    )


def split_model_prefix(args: argparse.Namespace) -> None:
    """``--model llama:path.gguf`` (a registered backend's name, a colon, the model) sets ``args.backend``."""
    from autocog.lm.registry import BACKENDS

    prefix, rest = BACKENDS.split_prefix(args.model or "")
    if prefix is not None:
        args.backend, args.model = prefix, rest


def backend_options(args: argparse.Namespace, backend: Optional[str] = None, strict: bool = True) -> dict[str, Any]:
    """The `autocog.lm.load` keywords of the model options given (`MODEL_OPTIONS`) for ``backend`` (default
    ``args.backend``). An option the backend does not take is left out when it is one of `IGNORABLE_OPTIONS`
    or ``strict=False``, else a `UsageError` naming the backends that take it."""
    from autocog.lm.registry import backend_keywords

    backend = backend or args.backend
    known = backend_keywords(backend)
    options: dict[str, Any] = {}
    for option, key in MODEL_OPTIONS.items():
        value = getattr(args, option, None)
        if value is None:
            continue
        if key in known:
            options[key] = value
        elif strict and option not in IGNORABLE_OPTIONS:
            flag = "--" + option.replace("_", "-")
            takers = " or ".join(f"--backend {name}" for name in _backends_taking(key)) or "no backend"
            raise UsageError(f"{flag} is not an option of --backend {backend}: it is for {takers}")
    return options


def _backends_taking(key: str) -> list[str]:
    from autocog.lm.registry import BACKENDS

    names = []
    for name in BACKENDS:
        try:
            if key in BACKENDS.keywords(name):
                names.append(name)
        except ImportError:  # a plugin that cannot be imported takes nothing
            pass
    return names


def quiet_libraries() -> None:
    """Set the `QUIET_ENVIRONMENT` defaults (a value the user set is kept)."""
    for key, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(key, value)


def load_lm(args: argparse.Namespace):
    """The `LM` the model options describe, through `autocog.lm.load` (backends are imported when asked for)."""
    from autocog.lm import load

    split_model_prefix(args)
    options = backend_options(args)
    quiet_libraries()
    return load(args.backend, model=args.model, **options)


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
