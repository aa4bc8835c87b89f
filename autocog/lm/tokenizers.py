"""Moved to `autocog.lm.openai.tokenizers`; this name keeps working."""

from .openai.tokenizers import *  # noqa: F401,F403
from .openai.tokenizers import (  # noqa: F401
    TIKTOKEN_SHA256,
    TIKTOKEN_URL,
    LlamaCppServerTokenizer,
    ObjectTokenizer,
    TiktokenTokenizer,
    Tokenizer,
    VllmServerTokenizer,
    as_tokenizer,
    install_tiktoken_encodings,
    tiktoken_tokenizer,
)
