"""The OpenAI API and OpenAI-compatible servers (llama_cpp.server, vLLM, SGLang...) as an `LM`: `OpenAI`.

By composition, dependencies pointing down:

* `client`: `OpenAI`, a thin facade over a `Session` and a `Scorer`;
* `scorer`: which strategy scores a request; the strategies take a session: `echo` (`EchoByText`), `ids`
  (`EchoByIds`, vLLM's token-id prompts) and `descent` (`Descent`), with `rows` (a trie node's next-token row);
* `stops`, `streaming`: `complete` and `stream`, on one request builder, written as request plans (`plans`)
  that the sync transport and `aio` (the async API: `AsyncOpenAI`, `AsyncTransport`) both execute;
* `session`: `Session`, what the parts share (transport, dialect, tokenizer, scored-text LRU, token pieces);
* `capabilities` (the probe, the tokenizer check), `chat` (`ChatRenderer`, `ChatPrompt`), `special` (pmi's
  unconditional context);
* `requests`: every request body and its answer parsed (`parsing`);
* `dialects/`: one `Dialect` per server kind (`openai`, `llama_cpp`, `vllm`, `generic`): request extras, the
  endpoints outside the OpenAI schema, capability flags, special tokens; a new server is one new module there;
* `transport` (the client, `autocog.core.retry.Retry`, counters, redaction), `tokenizers`, `vocabulary` (a
  llama.cpp server's token names).

User documentation: docs/openai.md and docs/chat.md.

>>> from autocog.lm import OpenAI
>>> lm = OpenAI(base_url="http://127.0.0.1:8000/v1", concurrency=8)     # doctest: +SKIP
"""

from autocog.lm.openai.client import OpenAI
from autocog.lm.openai.tokenizers import Tokenizer
from autocog.lm.openai.vocabulary import Vocabulary, scan_vocabulary

__all__ = ["OpenAI", "Tokenizer", "Vocabulary", "scan_vocabulary"]
