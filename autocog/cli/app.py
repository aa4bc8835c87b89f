"""The ``autocog`` command line (also ``python -m autocog``).

Commands::

    autocog complete PROMPT            continue a prompt (greedy by default)
    autocog choose PROMPT CHOICE...    the distribution over choices; --tree FILE draws the token choice tree
    autocog run FILE                   run a program file (defines `program`, optionally `inputs`)
    autocog eval [DATA]                multiple-choice accuracy (sum / mean / char), CI, confusion, calibration
    autocog search [DATA]              grid or random search over completion settings
    autocog bench [SCRIPT]             a quick built-in choose timing, or the scripts in bench/
    autocog lm-eval --tasks T          lm-evaluation-harness tasks on the model (autocog.eval.lm_eval adapter)
    autocog convert HF_DIR OUT.gguf    transformers checkpoint -> GGUF (--outtype f32|f16|bf16|q8_0)
    autocog quantize IN.gguf OUT.gguf  llama.cpp's quantizer (--type Q4_K_M, --list)
    autocog eval --model A --model B   compare models on the same items (table, --plot, --json)
    autocog perplexity FILE            llama.cpp's perplexity of a text
    autocog card FOLDER                a Hugging Face model card (--results, --plot, --push REPO_ID)

Model options, on every command: ``--backend NAME`` (any name in `autocog.lm.registry.BACKENDS`: the
built-in ``tf``, ``llama``, ``openai`` and the plugins; default ``tf``), ``--model PATH|NAME`` (default: the
embedded SmolLM2-135M-Instruct on ``tf`` and ``llama``), ``--base-url`` and ``--api-key`` (default
``$OPENAI_API_KEY``) for ``openai``, ``--device`` for ``tf``, ``--threads``. Each option goes to `autocog.lm.load`
as the keyword that the backend takes (`autocog.cli.base.MODEL_OPTIONS`).

Exit codes: 0 success; 1 runtime error (a model or file that cannot be found or loaded, a missing backend
package, a backend failure); 2 bad arguments (unknown option, missing or malformed value, invalid
choices); 130 interrupted. Errors are one line on stderr, ``autocog COMMAND: error: ...``; ``--debug``
(or ``AUTOCOG_DEBUG=1``) adds the traceback.

The commands live in `autocog.cli.lm` (complete, choose, run), `autocog.cli.eval` (eval, search, lm-eval),
`autocog.cli.bench` and `autocog.cli.gguf`; the shared pieces (parser, argument types, `load_lm`) in
`autocog.cli.base`. Every public name stays importable from here.

>>> main(["choose", "--model", "tiny-dir", "Q: 2+2?\\nA:", " 4", " 5"])     # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import traceback
from typing import Optional, Sequence

from autocog.cli.base import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    ModelOption,
    Parser,
    UsageError,
    backend_help,
    backend_name,
    load_lm,
    non_negative_float,
    non_negative_int,
    one_line,
    open_interval,
    positive_int,
    probability,
    read_text_arg,
    unescape,
    write_json,
)
from autocog.cli.bench import (
    add_bench,
    bench_dirs,
    bench_scripts,
    builtin_bench,
    cmd_bench,
)
from autocog.cli.eval import (
    add_eval,
    add_lm_eval,
    add_search,
    cmd_eval,
    cmd_lm_eval,
    cmd_search,
    parse_grid,
)
from autocog.cli.gguf import register as register_gguf
from autocog.cli.lm import (
    add_choose,
    add_complete,
    add_generation_options,
    add_run,
    cmd_choose,
    cmd_complete,
    cmd_run,
    parse_inputs,
    print_program_result,
)
from autocog.lm.registry import BACKENDS

_one_line = one_line

__all__ = [
    "BACKENDS",
    "COMMANDS",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "ModelOption",
    "Parser",
    "UsageError",
    "add_generation_options",
    "bench_dirs",
    "bench_scripts",
    "build_parser",
    "builtin_bench",
    "cmd_bench",
    "cmd_choose",
    "cmd_complete",
    "cmd_eval",
    "cmd_lm_eval",
    "cmd_run",
    "cmd_search",
    "console_main",
    "load_lm",
    "main",
    "model_options",
    "non_negative_float",
    "non_negative_int",
    "open_interval",
    "parse_grid",
    "parse_inputs",
    "positive_int",
    "print_program_result",
    "probability",
    "read_text_arg",
    "unescape",
    "write_json",
]

# every subcommand with model options, in the order of ``autocog --help``
COMMANDS = (add_complete, add_choose, add_run, add_eval, add_search, add_bench, add_lm_eval)


def model_options() -> Parser:
    """The parent parser of the model options (``--backend``, ``--model``, ... ``--debug``)."""
    model = Parser(add_help=False)
    group = model.add_argument_group("model")
    group.add_argument(
        "--backend",
        type=backend_name,
        default="tf",
        metavar="NAME",
        help=backend_help(),
    )
    group.add_argument(
        "--model",
        metavar="PATH|NAME",
        action=ModelOption,
        help="tf: a transformers directory or a .gguf file; llama: a .gguf file; openai: a model "
        "name; a BACKEND: prefix (e.g. llama:) picks the backend. Default: the embedded "
        "SmolLM2-135M-Instruct (tf, llama). eval and perplexity take several (a comparison)",
    )
    group.add_argument(
        "--base-url", metavar="URL", help="openai: the server's base URL (e.g. http://127.0.0.1:8000/v1)"
    )
    group.add_argument("--api-key", metavar="KEY", default=None, help="openai: the API key (default: $OPENAI_API_KEY)")
    group.add_argument("--device", default="cpu", help="tf: torch device (default cpu)")
    group.add_argument("--threads", type=positive_int, default=None, help="CPU threads (tf: torch; llama: n_threads)")
    group.add_argument("--debug", action="store_true", help="print the traceback of an error")
    return model


def build_parser() -> Parser:
    """The ``autocog`` parser: the commands of `COMMANDS`, then the GGUF ones (`autocog.cli.gguf.register`)."""
    model = model_options()
    parser = Parser(
        prog="autocog",
        description="autocog: language models behind one interface, from the shell.",
        epilog="Exit codes: 0 ok, 1 runtime error (model/file/backend), 2 bad arguments, 130 interrupted.",
    )
    from autocog import __version__

    parser.add_argument("--version", action="version", version=f"autocog {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    def command(name: str, help: str, description: str) -> Parser:
        text = "\n\n".join(textwrap.fill(" ".join(part.split()), 88) for part in description.split("\n\n"))
        return commands.add_parser(
            name, help=help, description=text, parents=[model], formatter_class=argparse.RawDescriptionHelpFormatter
        )

    for add in COMMANDS:
        add(command)
    register_gguf(commands, model, command)  # convert, quantize, perplexity, card
    return parser


# --- entry point ---------------------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit code (the ``autocog`` console script exits with it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    prog = f"autocog {args.command}"
    debug = args.debug or os.environ.get("AUTOCOG_DEBUG", "") not in ("", "0")
    from autocog.errors import InvalidChoicesError, InvalidPromptError

    try:
        return args.func(args)
    except (UsageError, InvalidChoicesError, InvalidPromptError) as error:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {one_line(error)} (see {prog} --help)", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `autocog ... | head`
        return EXIT_OK
    except Exception as error:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {type(error).__name__}: {one_line(error)}", file=sys.stderr)
        return EXIT_ERROR


def console_main() -> None:  # pragma: no cover - the setuptools entry point may point here too
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
