"""Convert a Hugging Face (transformers) checkpoint directory to a GGUF file for llama.cpp.

Supported: Llama-family causal LMs (``LlamaForCausalLM`` — Llama 1/2/3, SmolLM/SmolLM2 —,
``MistralForCausalLM``, and ``Qwen2ForCausalLM`` with its q/k/v biases). Anything else raises
`UnsupportedModelError`, which names what is supported.

What is written (the layout of llama.cpp's ``convert_hf_to_gguf.py``):

* weights: ``token_embd``, per block ``attn_norm / attn_q / attn_k / attn_v / attn_output / ffn_norm /
  ffn_gate / ffn_up / ffn_down`` (and ``attn_{q,k,v}.bias`` when present), ``output_norm``, ``output``
  (omitted when the embeddings are tied: llama.cpp then reuses ``token_embd``). For the ``llama``
  architecture the rows of q and k (and their biases) are permuted: transformers rotates the two halves
  of each head, llama.cpp's LLAMA rope rotates adjacent pairs. Qwen2 uses NEOX rope: no permutation.
* tokenizer: byte-level BPE from ``tokenizer.json`` (tokens, token types, merges, the pre-tokenizer
  recognised from its regex: ``gpt-2``, ``smollm``, ``llama-bpe``, ``qwen2``), or SentencePiece
  (``tokenizer.model``, or a byte-fallback BPE ``tokenizer.json``: Llama 2 / Mistral) with scores; special
  token ids, ``add_bos`` / ``add_eos`` and the chat template (``tokenizer_config.json`` /
  ``chat_template.jinja``) through ``gguf.SpecialVocab``.
* ``outtype``: ``f32``; ``f16`` or ``bf16`` (matrices; norms and biases stay F32, as in llama.cpp);
  ``q8_0``: matrices quantized to Q8_0 by the ``gguf`` package's ``quants`` module (a numpy port of
  llama.cpp's reference ``quantize_row_q8_0``), rows whose length is not a multiple of 32 fall back to F16.
  For K-quants and the other types, convert to ``f16``/``f32`` and use `autocog.gguf.quantize.quantize`.

>>> convert("SmolLM2-135M-Instruct/", "smollm2-f16.gguf", outtype="f16")      # doctest: +SKIP
PosixPath('smollm2-f16.gguf')
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import numpy as np

from autocog.errors import AutoCogError, ModelNotFoundError, missing_backend

OUTTYPES = ("f32", "f16", "bf16", "q8_0")
ARCHITECTURES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
# The pre-tokenizer regexes of tokenizer.json "Split" steps that llama.cpp knows, by its name for them.
SPLIT_PATTERNS = {
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+": "llama-bpe",
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+": "qwen2",
}
# transformers names -> GGUF names, per block (".weight" / ".bias" appended)
BLOCK_TENSORS = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}

__all__ = ["ARCHITECTURES", "OUTTYPES", "UnsupportedModelError", "convert", "pre_tokenizer_name"]


class UnsupportedModelError(AutoCogError, ValueError):
    """The checkpoint's architecture, tokenizer or options are not among those `convert` supports."""


@dataclass
class HfConfig:
    """The parts of ``config.json`` the converter reads."""

    arch: str
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ctx: int
    n_vocab: int
    eps: float
    rope_theta: float
    rope_scaling: Optional[dict]
    tied: bool
    name: str

    @classmethod
    def read(cls, path: Path) -> HfConfig:
        file = path / "config.json"
        if not file.is_file():
            raise ModelNotFoundError(f"{path} is not a transformers checkpoint directory (no config.json)")
        config = json.loads(file.read_text())
        names = config.get("architectures") or [config.get("model_type", "?")]
        arch = ARCHITECTURES.get(names[0])
        if arch is None:
            raise UnsupportedModelError(
                f"cannot convert architecture {names[0]!r}: supported are {', '.join(sorted(ARCHITECTURES))}"
            )
        if config.get("mlp_bias"):
            raise UnsupportedModelError(
                "cannot convert a Llama with mlp_bias=true (llama.cpp's llama has no MLP biases)"
            )
        rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in ("default", "linear"):
            raise UnsupportedModelError(f"cannot convert rope scaling {rope_type!r}: supported are default and linear")
        n_head = config["num_attention_heads"]
        return cls(
            arch=arch,
            n_layer=config["num_hidden_layers"],
            n_embd=config["hidden_size"],
            n_ff=config["intermediate_size"],
            n_head=n_head,
            n_head_kv=config.get("num_key_value_heads") or n_head,
            head_dim=config.get("head_dim") or config["hidden_size"] // n_head,
            n_ctx=config.get("max_position_embeddings", 2048),
            n_vocab=config["vocab_size"],
            eps=float(config.get("rms_norm_eps", 1e-6)),
            rope_theta=float(rope.get("rope_theta", config.get("rope_theta", 10000.0))),
            rope_scaling=rope if rope_type == "linear" else None,
            tied=bool(config.get("tie_word_embeddings", False)),
            name=config.get("_name_or_path") or path.name,
        )


# --- weights -------------------------------------------------------------------------------------------


def weight_files(path: Path) -> list[Path]:
    """The checkpoint's weight files: safetensors (single or sharded) or PyTorch ``.bin``."""
    for pattern in ("*.safetensors", "pytorch_model*.bin"):
        files = sorted(path.glob(pattern))
        if files:
            return files
    raise ModelNotFoundError(f"no weights in {path} (expected model*.safetensors or pytorch_model*.bin)")


def iter_weights(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    """(name, float32 array) of every tensor, one at a time (bf16 is read through torch)."""
    for file in weight_files(path):
        if file.suffix == ".bin":
            import torch

            for name, tensor in torch.load(file, map_location="cpu", weights_only=True).items():
                yield name, tensor.float().numpy()
            continue
        from safetensors import safe_open

        try:
            import torch

            framework = "pt"
        except ImportError:
            framework = "numpy"
        with safe_open(str(file), framework=framework) as f:
            for name in f.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                value = f.get_tensor(name)
                yield name, value.float().numpy() if framework == "pt" else value.astype(np.float32)


def rope_permute(w: np.ndarray, heads: int) -> np.ndarray:
    """transformers rotates the two halves of each head; llama.cpp's LLAMA rope rotates adjacent pairs:
    interleave the halves of each head's rows (a weight [rows, cols] or a bias [rows])."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_name(name: str, cfg: HfConfig) -> Optional[str]:
    """The GGUF tensor name of a transformers tensor (None: not written, e.g. rotary caches)."""
    name = name.removeprefix("model.")
    if name == "embed_tokens.weight":
        return "token_embd.weight"
    if name == "norm.weight":
        return "output_norm.weight"
    if name == "lm_head.weight":
        return None if cfg.tied else "output.weight"
    if name.startswith("layers."):
        _, index, rest = name.split(".", 2)
        base, _, kind = rest.rpartition(".")
        if base in BLOCK_TENSORS and kind in ("weight", "bias"):
            return f"blk.{index}.{BLOCK_TENSORS[base]}.{kind}"
    if name.endswith("rotary_emb.inv_freq"):
        return None
    raise UnsupportedModelError(f"unexpected tensor {name!r} for a {cfg.arch} checkpoint")


class TensorWriter:
    """Turns float32 arrays into the tensors of one ``outtype`` and hands them to a ``gguf.GGUFWriter``."""

    def __init__(self, writer: Any, outtype: str):
        import gguf

        self.gguf, self.writer, self.outtype = gguf, writer, outtype

    def add(self, name: str, w: np.ndarray) -> None:
        gguf, outtype = self.gguf, self.outtype
        if outtype == "f32" or w.ndim == 1:
            self.writer.add_tensor(name, np.ascontiguousarray(w, dtype=np.float32))
        elif outtype == "f16" or (outtype == "q8_0" and w.shape[-1] % 32):
            self.writer.add_tensor(name, np.ascontiguousarray(w, dtype=np.float16))
        else:
            qtype = gguf.GGMLQuantizationType.BF16 if outtype == "bf16" else gguf.GGMLQuantizationType.Q8_0
            data = gguf.quants.quantize(np.ascontiguousarray(w, dtype=np.float32), qtype)
            self.writer.add_tensor(name, data, raw_dtype=qtype)


# --- tokenizer -----------------------------------------------------------------------------------------


def pre_tokenizer_name(tokenizer: dict) -> str:
    """llama.cpp's name for the pre-tokenizer of a byte-level BPE ``tokenizer.json`` (an
    `UnsupportedModelError` when it is not one llama.cpp implements)."""
    pre = tokenizer.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"
    if kinds and kinds[0] == "Split" and kinds[1:] in ([], ["ByteLevel"]):
        name = SPLIT_PATTERNS.get((steps[0].get("pattern") or {}).get("Regex", ""))
        if name and (len(steps) == 1 or not steps[1].get("use_regex", True)):
            return name
    raise UnsupportedModelError(
        f"unknown BPE pre-tokenizer {kinds}: supported are GPT-2 byte-level, "
        "digits + byte-level (SmolLM), and the Llama 3 and Qwen2 split regexes"
    )


def bpe_vocab(tokenizer: dict, n_vocab: int) -> tuple[list[str], list[int]]:
    """Tokens and GGUF token types of a byte-level BPE ``tokenizer.json``, padded to ``n_vocab``."""
    import gguf

    tokens: dict[int, str] = {i: t for t, i in tokenizer["model"]["vocab"].items()}
    types: dict[int, int] = {}
    for added in tokenizer.get("added_tokens", []):
        tokens[added["id"]] = added["content"]
        types[added["id"]] = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
    if max(tokens) >= n_vocab:
        raise UnsupportedModelError(
            f"the tokenizer has {max(tokens) + 1} tokens but the model's embeddings only "
            f"{n_vocab} rows (config.json vocab_size)"
        )
    size = n_vocab
    out_tokens = [tokens.get(i, f"[PAD{i}]") for i in range(size)]
    out_types = [types.get(i, gguf.TokenType.NORMAL if i in tokens else gguf.TokenType.UNUSED) for i in range(size)]
    return out_tokens, out_types


def spm_vocab_from_json(tokenizer: dict) -> tuple[list[bytes], list[float], list[int]]:
    """Tokens, scores and types of a SentencePiece-style (byte-fallback) BPE ``tokenizer.json``. llama.cpp's
    SPM tokenizer merges the adjacent pair whose union has the highest score: a token made by merge number
    r gets the score -r, so merges apply in the order of the BPE merge list; byte tokens ``<0xNN>`` are BYTE."""
    import re

    import gguf

    vocab = tokenizer["model"]["vocab"]
    rank: dict[str, int] = {}
    for r, merge in enumerate(tokenizer["model"].get("merges", [])):
        pair = merge.split(" ", 1) if isinstance(merge, str) else merge
        rank.setdefault("".join(pair), r)
    added = {t["id"]: t for t in tokenizer.get("added_tokens", [])}
    unk = tokenizer["model"].get("unk_token")
    size = max(list(vocab.values()) + list(added) + [-1]) + 1
    tokens, scores = [b""] * size, [0.0] * size
    types: list[int] = [gguf.TokenType.UNUSED] * size
    for text, i in vocab.items():
        tokens[i], scores[i] = text.encode("utf-8"), -float(rank[text] + 1) if text in rank else 0.0
        types[i] = (
            gguf.TokenType.BYTE
            if re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", text)
            else gguf.TokenType.UNKNOWN
            if text == unk
            else gguf.TokenType.NORMAL
        )
    for i, t in added.items():
        tokens[i], scores[i] = t["content"].encode("utf-8"), 0.0
        types[i] = (
            gguf.TokenType.UNKNOWN
            if t["content"] == unk
            else gguf.TokenType.CONTROL
            if t.get("special")
            else gguf.TokenType.USER_DEFINED
        )
    return tokens, scores, types


def quiet_special_vocab(path: Path, **kwargs: Any) -> Any:
    """``gguf.SpecialVocab`` without its logging warnings (it guesses at post-processor templates aloud)."""
    import logging

    import gguf

    log = logging.getLogger("gguf.vocab")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        return gguf.SpecialVocab(path, **kwargs)
    finally:
        log.setLevel(level)


def add_tokenizer(writer: Any, path: Path, n_vocab: int) -> None:
    """Write the tokenizer of checkpoint ``path`` (see the module docstring)."""
    import gguf

    file = path / "tokenizer.json"
    tokenizer: dict = (json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None) or {}
    model = tokenizer.get("model", {})
    if (path / "tokenizer.model").is_file() or model.get("byte_fallback"):
        if (path / "tokenizer.model").is_file():
            tokens: list[bytes] = []
            scores: list[float] = []
            types: list[int] = []
            for text, score, kind in gguf.vocab.SentencePieceVocab(path).all_tokens():
                tokens.append(text)
                scores.append(score)
                types.append(kind)
        else:
            tokens, scores, types = spm_vocab_from_json(tokenizer)
        for i in range(len(tokens), n_vocab):
            tokens.append(f"[PAD{i}]".encode())
            scores.append(-1000.0)
            types.append(gguf.TokenType.UNUSED)
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        special = quiet_special_vocab(path, load_merges=False, n_vocab=len(tokens))
    elif model.get("type") == "BPE":
        bpe_tokens, bpe_types = bpe_vocab(tokenizer, n_vocab)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre_tokenizer_name(tokenizer))
        writer.add_token_list(bpe_tokens)
        writer.add_token_types(bpe_types)
        special = quiet_special_vocab(path, load_merges=True, n_vocab=len(bpe_tokens))
    else:
        raise UnsupportedModelError(
            f"cannot convert the tokenizer in {path}: supported are a byte-level BPE "
            "tokenizer.json and SentencePiece (tokenizer.model or byte-fallback BPE)"
        )
    # Say explicitly what the transformers tokenizer does (llama.cpp's defaults differ per tokenizer model).
    special.add_special_token.setdefault("bos", False)
    special.add_special_token.setdefault("eos", False)
    special.add_to_gguf(writer, quiet=True)


# --- the converter -------------------------------------------------------------------------------------


def convert(
    hf_dir: Union[str, os.PathLike], out: Union[str, os.PathLike], outtype: str = "f16", name: Optional[str] = None
) -> Path:
    """Write the transformers checkpoint in ``hf_dir`` as the GGUF file ``out`` (see the module docstring).

    ``outtype``: ``f32``, ``f16`` (default), ``bf16`` or ``q8_0``. ``name``: ``general.name`` (default: the
    config's ``_name_or_path`` or the directory name). Returns ``Path(out)``. Raises `ModelNotFoundError`
    (no checkpoint there), `UnsupportedModelError` (architecture, tokenizer or options), ``ValueError``
    (unknown outtype) — all before anything is written.

    >>> convert(tiny_llama(), "tiny.gguf", outtype="f32")              # doctest: +SKIP
    """
    outtype = str(outtype).lower()
    if outtype not in OUTTYPES:
        raise ValueError(f"unknown outtype {outtype!r}: expected one of {', '.join(OUTTYPES)}")
    hf_dir, out = Path(hf_dir), Path(out)
    if not hf_dir.is_dir():
        raise ModelNotFoundError(f"transformers checkpoint directory not found: {hf_dir}")
    cfg = HfConfig.read(hf_dir)
    weight_files(hf_dir)
    try:
        import gguf
    except ImportError as error:
        raise missing_backend("gguf", "llama") from error

    writer = gguf.GGUFWriter(str(out), cfg.arch)
    file_types = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "bf16": gguf.LlamaFileType.MOSTLY_BF16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }
    try:
        writer.add_name(name or cfg.name)
        writer.add_context_length(cfg.n_ctx)
        writer.add_embedding_length(cfg.n_embd)
        writer.add_block_count(cfg.n_layer)
        writer.add_feed_forward_length(cfg.n_ff)
        writer.add_head_count(cfg.n_head)
        writer.add_head_count_kv(cfg.n_head_kv)
        if cfg.head_dim != cfg.n_embd // cfg.n_head:
            writer.add_key_length(cfg.head_dim)
            writer.add_value_length(cfg.head_dim)
        writer.add_layer_norm_rms_eps(cfg.eps)
        writer.add_rope_freq_base(cfg.rope_theta)
        writer.add_rope_dimension_count(cfg.head_dim)
        if cfg.rope_scaling:
            writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            writer.add_rope_scaling_factor(float(cfg.rope_scaling["factor"]))
        writer.add_vocab_size(cfg.n_vocab)
        writer.add_file_type(file_types[outtype])
        if outtype == "q8_0":
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        add_tokenizer(writer, hf_dir, cfg.n_vocab)
        tensors = TensorWriter(writer, outtype)
        for hf_name, w in iter_weights(hf_dir):
            target = gguf_name(hf_name, cfg)
            if target is None:
                continue
            if cfg.arch == "llama" and (".attn_q." in target or ".attn_k." in target):
                w = rope_permute(w, cfg.n_head if ".attn_q." in target else cfg.n_head_kv)
            tensors.add(target, w)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    except BaseException:
        writer.close()
        out.unlink(missing_ok=True)
        raise
    writer.close()
    return out
