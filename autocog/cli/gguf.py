"""The GGUF commands of the ``autocog`` command line: ``convert``, ``quantize``, ``perplexity``, ``card``,
and ``eval`` with several ``--model`` (the comparison). Registered by `autocog.cli.app.build_parser`.

Model specs in ``eval`` and ``perplexity``: ``[BACKEND:]PATH`` (``tf:DIR``, ``llama:FILE.gguf``,
``openai:NAME``); without a prefix a ``.gguf`` file is read by ``llama`` and a directory by ``tf`` when
several models are given (a single ``--model`` keeps ``--backend``, default ``tf``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from autocog.cli.base import UsageError, backend_options, positive_int, read_text_arg, write_json


def register(commands: Any, model_parent: argparse.ArgumentParser, command) -> None:
    """Add the GGUF subcommands to ``commands`` (``command(name, help, description)`` makes one with the
    model options; convert, quantize and card take no model options)."""

    def plain(name: str, help: str, description: str):
        p = commands.add_parser(name, help=help, description=description)
        p.add_argument("--debug", action="store_true", help="print the traceback of an error")
        return p

    p = plain(
        "convert",
        "transformers checkpoint -> GGUF",
        "Convert a transformers checkpoint directory (Llama, SmolLM2, Mistral, Qwen2) to GGUF: weights, "
        "tokenizer, special tokens, chat template. q8_0 is quantized by the gguf package; for other "
        "types convert to f16 and run `autocog quantize`.",
    )
    p.add_argument("hf_dir", help="the transformers checkpoint directory")
    p.add_argument("out", help="the GGUF file to write")
    p.add_argument("--outtype", choices=["f32", "f16", "bf16", "q8_0"], default="f16", help="default f16")
    p.add_argument("--name", default=None, help="general.name (default: from config.json or the directory)")
    p.set_defaults(func=cmd_convert)

    p = plain(
        "quantize",
        "quantize a GGUF with llama.cpp",
        "Quantize a GGUF file with llama.cpp's quantizer (llama_model_quantize). --list shows the types.",
    )
    p.add_argument("source", nargs="?", help="the input GGUF (F32/F16/BF16 for the best result)")
    p.add_argument("out", nargs="?", help="the GGUF file to write")
    p.add_argument("--type", default="Q4_K_M", help="quantization type (default Q4_K_M; see --list)")
    p.add_argument("--threads", type=positive_int, default=None, help="threads (default: all cores)")
    p.add_argument("--allow-requantize", action="store_true", help="accept an already quantized input")
    p.add_argument("--list", action="store_true", help="list the quantization types and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_quantize)

    p = command(
        "perplexity",
        "perplexity of a text",
        "llama.cpp's perplexity of FILE: non-overlapping windows of --ctx tokens, the second half of "
        "each scored. Several --model print one line each ([BACKEND:]PATH specs).",
    )
    p.add_argument("file", help="the text file ('-' reads standard input)")
    p.add_argument("--ctx", type=positive_int, default=512, help="window in tokens (default 512)")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON ('-': stdout)")
    p.set_defaults(func=cmd_perplexity)

    p = plain(
        "card",
        "write (and push) a model card",
        "Write FOLDER/README.md, a Hugging Face model card for the GGUF files in FOLDER, with the "
        "comparison of `autocog eval --model A --model B ... --json FILE` and its plot. --push uploads "
        "the folder (needs a token and a network).",
    )
    p.add_argument("folder", help="the folder of the GGUF files (the card is written there)")
    p.add_argument("--results", required=True, metavar="FILE.json", help="the comparison JSON of autocog eval")
    p.add_argument("--plot", metavar="FILE.png", help="the comparison plot (copied into FOLDER)")
    p.add_argument("--base-model", required=True, metavar="OWNER/NAME", help="the hub id of the base model")
    p.add_argument("--model-name", default=None, help="the model-index name (default BASE-GGUF)")
    p.add_argument("--quantized-by", default="autocog", help="quantized_by (default autocog)")
    p.add_argument("--license", default="apache-2.0", help="license id (default apache-2.0)")
    p.add_argument("--tag", action="append", default=[], help="an extra tag (repeatable)")
    p.add_argument("--push", metavar="REPO_ID", help="upload FOLDER to this hub model repository")
    p.add_argument("--token", default=None, help="hub token (default: $HF_TOKEN or the saved login)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.set_defaults(func=cmd_card)


def cmd_convert(args: argparse.Namespace) -> int:
    from autocog.gguf.convert import convert

    start = time.perf_counter()
    out = convert(args.hf_dir, args.out, outtype=args.outtype, name=args.name)
    print(f"{out} ({args.outtype}, {out.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - start:.1f} s")
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from autocog.gguf.quantize import check_type, quantize, quantize_types

    if args.list:
        for name, ftype in quantize_types().items():
            print(f"{name:<10} {ftype}")
        return 0
    if not args.source or not args.out:
        raise UsageError("quantize needs SOURCE and OUT (or --list)")
    try:
        name, _ = check_type(args.type)
    except ValueError as error:
        raise UsageError(str(error)) from None
    start = time.perf_counter()
    out = quantize(
        args.source,
        args.out,
        name,
        threads=args.threads,
        allow_requantize=args.allow_requantize,
        progress=False if args.no_progress else None,
    )
    before, after = Path(args.source).stat().st_size, out.stat().st_size
    print(
        f"{out} ({name}, {after / 1e6:.1f} MB, {after / before:.2f} of the input) in "
        f"{time.perf_counter() - start:.1f} s"
    )
    return 0


def model_specs(args: argparse.Namespace) -> list:
    """The `ModelSpec` of every --model (``--backend`` for those without a prefix when there is one model)."""
    from autocog.eval.compare import ModelSpec, parse_model_spec

    models = getattr(args, "models", None) or []
    if len(models) <= 1:
        return [ModelSpec(args.backend, args.model)]
    return [parse_model_spec(m, args.backend) for m in models]


# ``--f32-cache``: a backend that takes llama.cpp's KV-cache types gets an F32 cache (GGML_TYPE_F32 = 0), so that a
# comparison measures the weights' drift, not the cache's (perplexity always uses it). Off by default, so that a
# comparison's rows equal ``autocog eval`` on each model alone.
F32_CACHE = {"type_k": 0, "type_v": 0}


def load_kwargs(args: argparse.Namespace, specs: list, f32_cache: bool = True) -> dict:
    """Per-backend load arguments of the backends in ``specs``: the model options each takes
    (`autocog.cli.base.backend_options`), and with ``f32_cache`` `F32_CACHE` where it applies."""
    from autocog.lm.registry import backend_keywords

    out = {}
    for backend in dict.fromkeys(spec.backend for spec in specs):
        options = backend_options(args, backend, strict=len(specs) == 1)
        if f32_cache and set(F32_CACHE) <= backend_keywords(backend):
            options.update(F32_CACHE)
        out[backend] = options
    return out


def load_spec(spec, args: argparse.Namespace):
    return spec.load(**load_kwargs(args, [spec])[spec.backend])


def run_comparison(args: argparse.Namespace, items: list, normalizations: list, name: str) -> int:
    """``autocog eval`` with several --model: the comparison table, --plot (comparison plot), --json."""
    from autocog.eval.compare import compare

    specs = model_specs(args)
    kwargs = load_kwargs(args, specs, f32_cache=bool(getattr(args, "f32_cache", False)))
    result = compare(
        specs,
        items,
        normalizations=normalizations,
        batch_size=args.batch_size,
        confidence=args.confidence,
        load_kwargs=kwargs,
        dataset_name=name,
    )
    if args.json == "-":
        write_json(result.to_dict(), "-")
    else:
        print(result.format())
        if args.json:
            write_json(result.to_dict(), args.json)
    if args.plot:
        print(f"plot: {result.plot(args.plot)}", file=sys.stderr)
    return 0


def cmd_perplexity(args: argparse.Namespace) -> int:
    from autocog.gguf.perplexity import perplexity

    if args.file == "-":
        text = read_text_arg("-")
    else:
        path = Path(args.file)
        if not path.is_file():
            raise FileNotFoundError(f"text file not found: {path}")
        text = path.read_text(encoding="utf-8")
    rows = []
    for spec in model_specs(args):
        start = time.perf_counter()
        lm = load_spec(spec, args)
        result = perplexity(lm, text, context=args.ctx)
        rows.append({"model": spec.label, **result.to_dict(), "seconds": time.perf_counter() - start})
        if hasattr(lm, "close"):
            lm.close()
    if args.json == "-":
        write_json(rows, "-")
        return 0
    width = max(len(r["model"]) for r in rows)
    print(f"{'model':<{width}}  {'perplexity':>10}  {'nll':>8}  {'tokens':>7}  {'windows':>7}  {'seconds':>7}")
    for r in rows:
        print(
            f"{r['model']:<{width}}  {r['perplexity']:>10.4f}  {r['nll']:>8.5f}  {r['tokens_scored']:>7}  "
            f"{r['windows']:>7}  {r['seconds']:>7.1f}"
        )
    if args.json:
        write_json(rows, args.json)
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    from autocog.gguf.card import push, write_card

    results = Path(args.results)
    if not results.is_file():
        raise FileNotFoundError(
            f"results file not found: {results} (write it with autocog eval --model A --model B --json FILE)"
        )
    try:
        data = json.loads(results.read_text())
        data["models"], data["normalizations"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(f"{results} is not the JSON of a comparison (autocog eval with several --model)") from None
    path = write_card(
        args.folder,
        data,
        args.base_model,
        plot=args.plot,
        model_name=args.model_name,
        quantized_by=args.quantized_by,
        license=args.license,
        tags=args.tag,
    )
    print(f"card: {path}")
    if args.push:
        print(f"pushed: {push(args.folder, args.push, token=args.token, private=args.private)}")
    return 0
