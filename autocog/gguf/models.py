"""The seeded tiny random Llama for exact tests: a transformers directory (`tiny_llama`) and an F32 GGUF with the
same weights (`tiny_llama_gguf`). The embedded SmolLM2 and the cache are in `autocog.lm.assets`, under the backends.

Everything built here is cached under ``$AUTOCOG_CACHE`` (default ``~/.cache/autocog``), keyed by what it was
built from, and written atomically so that concurrent processes never see half a model.

>>> tiny_llama().name                                              # doctest: +SKIP
'tiny-llama-s0-v1'
"""

from __future__ import annotations

import json
from pathlib import Path

from autocog.gguf.convert import convert
from autocog.lm.assets import cached_build

# Lines the tiny model's BPE tokenizer is trained on: enough merges for words used across the tests.
TINY_CORPUS = [
    "Question: What is the capital of France?\nAnswer: Paris",
    "Question: What is the capital of Germany?\nAnswer: Berlin",
    "The quick brown fox jumps over the lazy dog. 1 10 100 1000",
    "Yes or no? Yes. No. Maybe. A B C D. The answer is (A).",
    "Let's think step by step: first, second, third, then the result.",
    'name: Alice, phone: 555-0100, zip: 94110. {"key": "value", "n": 42}',
]


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
