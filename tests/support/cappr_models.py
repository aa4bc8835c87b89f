"""Tiny models for the CAPPr drop-in tests (tests/cappr), of two architectures and both tokenizer kinds:

* `tiny_llama_pair`: the seeded tiny Llama (`autocog.gguf.models.tiny_llama`), byte-level BPE with BOS (a
  tokenizer that needs the space CAPPr's ``end_of_prompt`` adds);
* `tiny_gpt2_pair`: a seeded random ``GPT2LMHeadModel`` with a SentencePiece-style (Metaspace) BPE tokenizer
  trained on the same lines, no BOS (CAPPr drops ``end_of_prompt`` for it).

The tokenizers are loaded with ``add_bos_token`` saying what their post-processor does: CAPPr 0.9.6 toggles that
flag and, under transformers 5, rebuilds the post-processor from it when it restores the flag, so a tokenizer
whose flag disagrees would lose its BOS after CAPPr's first call.
"""

import transformers

from autocog.gguf.models import TINY_CORPUS, tiny_llama


def tiny_llama_pair():
    path = tiny_llama()
    model = transformers.AutoModelForCausalLM.from_pretrained(path)
    return model, transformers.AutoTokenizer.from_pretrained(path, add_bos_token=True)


def tiny_gpt2_pair(seed: int = 0):
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "</s>"], show_progress=False)
    tok.train_from_iterator(TINY_CORPUS, trainer)
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="</s>"
    )
    config = transformers.GPT2Config(
        vocab_size=tok.get_vocab_size(),
        n_positions=256,
        n_embd=32,
        n_layer=2,
        n_head=2,
        initializer_range=0.2,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config.architectures = ["GPT2LMHeadModel"]  # CAPPr reads it to pick its KV cache type
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(config).eval()
    return model, tokenizer
