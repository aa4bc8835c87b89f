"""Quantize a GGUF file with llama.cpp's own quantizer (``llama_model_quantize``, as llama-cpp-python exposes it:
the same code as the ``llama-quantize`` tool).

Types: every ``LLAMA_FTYPE_*`` constant of the installed ``llama_cpp`` (`quantize_types`), named like
``llama-quantize`` names them: ``Q4_K_M``, ``Q8_0``, ``F16``, ``IQ4_XS``... (case-insensitive). The
``IQ1_*``/``IQ2_XXS``/``IQ2_XS`` types need an importance matrix, which this module does not compute:
llama.cpp refuses them and the error says so. Tensors whose rows do not fit a K-quant's 256-wide blocks
get llama.cpp's fallback type (e.g. SmolLM2's 576-wide rows), as ``llama-quantize`` does.

Progress: llama.cpp logs one line per tensor (``[ 12/ 272] blk.1.attn_q.weight ...``); `quantize` reads
them through a temporary log callback and shows a tqdm bar on stderr (``progress=True``; ``None``: only on
a terminal), or calls ``progress(done, total, tensor_name)`` when given a function.

>>> quantize("smollm2-f16.gguf", "smollm2-q4_k_m.gguf", "Q4_K_M")           # doctest: +SKIP
PosixPath('smollm2-q4_k_m.gguf')
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
from pathlib import Path
from typing import Callable, Optional, Union

from autocog.errors import AutoCogError, ModelNotFoundError, missing_backend

__all__ = ["QuantizationError", "quantize", "quantize_types"]

_TENSOR_LINE = re.compile(r"\[\s*(\d+)\s*/\s*(\d+)\]\s*(\S+)")
IMATRIX_TYPES = ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S")
Progress = Union[None, bool, Callable[[int, int, str], None]]


class QuantizationError(AutoCogError, RuntimeError):
    """llama.cpp's quantizer failed (the message carries its last error lines)."""


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError as error:
        raise missing_backend("llama_cpp", "llama") from error
    return llama_cpp


def quantize_types() -> dict[str, int]:
    """``{name: llama_ftype}`` for every type the installed llama.cpp offers, e.g. ``{"Q4_K_M": 15, ...}``."""
    llama_cpp = _llama_cpp()
    types = {}
    for attr in sorted(dir(llama_cpp)):
        if attr.startswith("LLAMA_FTYPE_") and attr != "LLAMA_FTYPE_GUESSED":
            name = attr.removeprefix("LLAMA_FTYPE_").removeprefix("MOSTLY_").removeprefix("ALL_")
            types[name] = int(getattr(llama_cpp, attr))
    return dict(sorted(types.items(), key=lambda kv: kv[1]))


def check_type(qtype: str) -> tuple[str, int]:
    """(canonical name, ftype) of ``qtype``; a ValueError listing the valid names otherwise."""
    types = quantize_types()
    name = str(qtype).upper().replace("-", "_")
    if name not in types:
        raise ValueError(f"unknown quantization type {qtype!r}: expected one of {', '.join(types)}")
    return name, types[name]


class _LogReader:
    """A llama.cpp log callback that turns per-tensor lines into progress and keeps the error lines."""

    def __init__(self, llama_cpp, progress: Callable[[int, int, str], None]):
        self.progress = progress
        self.errors: list[str] = []
        self.text = ""
        self.callback = llama_cpp.llama_log_callback(self._log)  # keep a reference while it is installed

    def _log(self, level: int, text: bytes, user_data) -> None:
        line = text.decode("utf-8", errors="replace")
        if re.search(r"error|failed|importance matrix|imatrix", line, re.IGNORECASE):
            self.errors.append(line.strip())
        match = _TENSOR_LINE.search(line)
        if match:
            self.progress(int(match.group(1)), int(match.group(2)), match.group(3))


def _progress_function(progress: Progress):
    """(callback, close) for ``progress``: a tqdm bar, a user function, or nothing."""
    if callable(progress):
        return progress, lambda: None
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return (lambda done, total, name: None), lambda: None
    from tqdm import tqdm

    bar = tqdm(total=0, unit="tensor", desc="quantize", file=sys.stderr)

    def update(done: int, total: int, name: str) -> None:
        bar.total = total
        bar.set_postfix_str(name, refresh=False)
        bar.update(done - bar.n)

    return update, bar.close


def quantize(
    source: Union[str, os.PathLike],
    out: Union[str, os.PathLike],
    qtype: str = "Q4_K_M",
    threads: Optional[int] = None,
    progress: Progress = None,
    allow_requantize: bool = False,
) -> Path:
    """Quantize the GGUF ``source`` to ``out`` with type ``qtype`` (see `quantize_types`).

    ``threads``: quantization threads (default: all cores). ``allow_requantize``: accept an input that is
    already quantized (quality suffers; llama.cpp refuses it otherwise). Returns ``Path(out)``.
    Errors: ``ValueError`` (unknown type, listing the valid ones; ``out`` is ``source``),
    `ModelNotFoundError` (missing or non-GGUF input) — both before llama.cpp runs — and
    `QuantizationError` (llama.cpp failed; the partial output is removed).
    """
    from autocog.lm.assets import check_gguf

    name, ftype = check_type(qtype)
    source, out = Path(source), Path(out)
    if not source.exists():
        raise ModelNotFoundError(f"input GGUF file not found: {source}")
    check_gguf(source)
    if out.resolve() == source.resolve():
        raise ValueError(f"the output {out} is the input file: write the quantized model elsewhere")
    llama_cpp = _llama_cpp()
    from llama_cpp import _logger

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads or 0
    params.allow_requantize = allow_requantize
    update, close = _progress_function(progress)
    reader = _LogReader(llama_cpp, update)
    llama_cpp.llama_log_set(reader.callback, ctypes.c_void_p(0))
    try:
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params))
    finally:
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
        close()
    if status != 0:
        out.unlink(missing_ok=True)
        detail = reader.errors[-1].strip("= ") if reader.errors else "no error message"
        if name in IMATRIX_TYPES:
            detail += f" ({name} needs an importance matrix, which autocog does not compute)"
        raise QuantizationError(f"llama.cpp could not quantize {source} to {name}: {detail}")
    return out
