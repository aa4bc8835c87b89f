"""The OpenAI API and OpenAI-compatible servers (llama_cpp.server, vLLM, SGLang...) as an `LM`: `OpenAI`.

Modules: `client` (the `OpenAI` class), `transport` (the client, retries, counters, redaction), `capabilities`
(server detection, the probe, the vocabulary), `requests` (the request bodies), `parsing` (the answers),
`stops`, `echo` and `descent` (the two scorers), `rows` (a trie node's next-token row), `vocabulary` (a llama.cpp
server's token names), `tokenizers`, `chat` (messages as prompts, chat templates) and `streaming` (`stream`).
User documentation: docs/openai.md and docs/chat.md.

>>> from autocog.lm import OpenAI
>>> lm = OpenAI(base_url="http://127.0.0.1:8000/v1", concurrency=8)     # doctest: +SKIP
"""

from autocog.lm.openai.client import OpenAI
from autocog.lm.openai.tokenizers import Tokenizer
from autocog.lm.openai.vocabulary import Vocabulary, scan_vocabulary

__all__ = ["OpenAI", "Tokenizer", "Vocabulary", "scan_vocabulary"]
