"""Chat prompts on OpenAI-compatible servers, as a mixin of `OpenAI` (user documentation: docs/chat.md).

A list of messages given as a prompt goes through `Chat.render_prompt`:

* on the chat endpoint (``chat=True``) it becomes a `ChatPrompt`, a ``str`` that keeps the checked messages;
  the chat request (`Requests._chat_request`, `stream`) sends them as they are (``system=`` is then not added:
  the messages are the whole conversation);
* on a completions endpoint it is rendered with `Chat.apply_chat_template` (``chat_template=``, else a
  tokenizer object's own template, else llama.cpp's ``/props``, else vLLM's ``/tokenize`` with messages),
  without a leading BOS text, which the server adds itself.

>>> lm = OpenAI(base_url="http://127.0.0.1:8000/v1", chat=True)                         # doctest: +SKIP
>>> lm.choose([{"role": "user", "content": "Capital of France?"}], ["Paris", "London"])   # doctest: +SKIP
0
"""

from __future__ import annotations

import functools
import json
from typing import Any, Iterator, Optional, Sequence

from autocog.core.chat import check_messages, is_messages, render_template, strip_prefix
from autocog.core.types import Stop
from autocog.errors import (
    ChatTemplateError,
    MalformedResponseError,
    RequestFailedError,
    RetryExhaustedError,
    StrategyUnavailableError,
)
from autocog.lm.base import LM

BOS_TEXTS = ("<s>", "<|begin_of_text|>", "<|endoftext|>", "<|im_start|>", "<bos>", "[BOS]", "<|startoftext|>")


class ChatPrompt(str):
    """A conversation on its way to the chat endpoint: a ``str`` whose text is the messages as JSON (what token
    accounting and the score cache see), with the checked ``messages`` kept as a tuple of dicts. It is equal
    only to a `ChatPrompt` of the same messages (never to a plain prompt with the same text). String operations
    give plain ``str``; ``rstrip()`` keeps it whole (the JSON ends with ``]``: the boundary of a reply is the
    server's assistant header, not trailing whitespace).

    >>> p = ChatPrompt([{"role": "user", "content": "Hi"}])
    >>> p.messages, p == '[{"role": "user", "content": "Hi"}]'
    (({'role': 'user', 'content': 'Hi'},), False)
    """

    messages: tuple

    def __new__(cls, messages: Sequence[dict]) -> ChatPrompt:
        checked = check_messages(messages)
        self = super().__new__(cls, json.dumps(checked, ensure_ascii=False))
        self.messages = tuple(checked)
        return self

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChatPrompt) and str.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((ChatPrompt, str(self)))

    def rstrip(self, chars: Optional[str] = None) -> str:
        return self if chars is None else str.rstrip(self, chars)


def renders_prompt(method: Any) -> Any:
    """``method(self, prompt, ...)`` given ``self.render_prompt(prompt)``: the hook that lets `OpenAI.complete`
    and `OpenAI.choice_distribution` take messages (their own checks then see a str)."""

    @functools.wraps(method)
    def rendered(self: Any, prompt: Any, *args: Any, **kwargs: Any) -> Any:
        return method(self, self.render_prompt(prompt), *args, **kwargs)

    return rendered


class Chat:
    """`render_prompt`, `apply_chat_template` and `stream` of `OpenAI` (they read its ``chat``, ``server``,
    ``tokenizer``, ``chat_template``...)."""

    chat_template: Optional[str] = None

    def render_prompt(self, prompt: Any) -> str:
        """`LM.render_prompt` for servers: a str as is; messages as a `ChatPrompt` on the chat endpoint, else
        rendered with `apply_chat_template` (generation prompt included) less a leading BOS text."""
        if isinstance(prompt, ChatPrompt):
            return prompt
        if isinstance(prompt, str) or not is_messages(prompt):
            prompt = LM.render_prompt(self, prompt)
            if self.chat or prompt[:1] not in ("<", "["):  # every BOS text we know starts so (BOS_TEXTS)
                return prompt
            try:
                bos = self._leading_bos()
            except StrategyUnavailableError:  # no tokenizer to tell: the text goes as it is
                return prompt
            return strip_prefix(prompt, bos)  # BOS once: the server adds its own, as LLaMa and TfLM do
        if self.chat:
            return ChatPrompt(prompt)
        text = self.apply_chat_template(prompt, add_generation_prompt=True)
        return strip_prefix(text, self._bos_text())

    def apply_chat_template(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        """The text of ``messages`` under the model's chat template (for a completions endpoint):
        ``chat_template=`` when given, else a tokenizer object's own ``apply_chat_template``, else the template
        the server exposes (llama.cpp's ``/props``, vLLM's ``/tokenize`` with messages). A server that exposes
        none raises `ChatTemplateError` naming the fixes (``chat_template=``, or ``chat=True``)."""
        messages = check_messages(messages)
        if self.chat_template:
            return render_template(self.chat_template, messages, add_generation_prompt)
        own = getattr(self._tokenizer_spec, "apply_chat_template", None)
        if callable(own):
            return own(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        if self.server == "llama.cpp":
            props = self.server_props()
            if isinstance(props.get("chat_template"), str) and props["chat_template"]:
                return render_template(
                    props["chat_template"],
                    messages,
                    add_generation_prompt,
                    bos_token=props.get("bos_token") or "",
                    eos_token=props.get("eos_token") or "",
                )
        if self.server == "vllm":
            data = self._post(
                self.root_url + "/tokenize",
                {"model": self.model, "messages": messages, "add_generation_prompt": add_generation_prompt},
            )
            tokens = data.get("tokens") if isinstance(data, dict) else None
            if isinstance(tokens, list):
                return self.tokenizer.decode(tokens)
        raise ChatTemplateError(
            f"the server at {self.base_url} (model {self.model!r}) exposes no chat template, so messages cannot be "
            "rendered for its completions endpoint: pass chat_template= (the model's jinja2 template) or "
            "chat=True (the server applies its own template)"
        )

    def server_props(self) -> dict:
        """llama.cpp's ``GET /props`` (its C++ server; llama_cpp.server has none), read once: {} when absent."""
        props = getattr(self, "_props", None)
        if props is None:
            try:
                data = self._call(
                    "GET /props",
                    "probe",
                    lambda t: self.client.get(
                        self.root_url + "/props", cast_to=self.transport.response_type, options={"timeout": t}
                    ),
                    retry=False,
                )
            except (RequestFailedError, MalformedResponseError, RetryExhaustedError):
                data = {}
            props = self._props = data if isinstance(data, dict) else {}
        return props

    def chat_messages(self, prompt: str) -> list[dict]:
        """What the chat endpoint is sent for ``prompt``: a `ChatPrompt`'s messages, else the ``system``
        message (if any) and ``prompt`` as the user's."""
        if isinstance(prompt, ChatPrompt):
            return [dict(m) for m in prompt.messages]
        return ([{"role": "system", "content": self.system}] if self.system else []) + [
            {"role": "user", "content": prompt}
        ]

    def stream(self, prompt: Any, stop: Stop = "\n", **kwargs: Any) -> Iterator[str]:
        """`complete`'s text in pieces as the server streams them (``stream=True``):
        ``"".join(lm.stream(...)) == lm.complete(...)``, with the same stop contract (`autocog.lm.openai.streaming`).
        Inputs are checked and the stream is opened now; one that breaks later raises `RequestFailedError`.

        >>> "".join(lm.stream("1, 2, 3,", stop=",", max_tokens=8))     # doctest: +SKIP
        ' 4,'
        """
        from autocog.lm.openai.streaming import open_stream

        return open_stream(self, self.render_prompt(prompt), stop, kwargs)

    def _leading_bos(self) -> str:
        """`_bos_text`, asked once."""
        if getattr(self, "_bos_text_cached", None) is None:
            self._bos_text_cached = self._bos_text()
        return self._bos_text_cached

    def _bos_text(self) -> str:
        """The text of the BOS token the server puts in front of every prompt ("" when it adds none): a
        tokenizer object's ``bos_token``, else llama.cpp's ``/props``, else the server tokenizer's piece."""
        prefix = getattr(self.tokenizer, "special_prefix", None)
        if prefix is not None:
            prefix()
        bos = self.tokenizer.bos_token_id
        if bos is None:
            return ""
        own = getattr(self._tokenizer_spec, "bos_token", None)
        if isinstance(own, str):
            return own
        if self.server == "llama.cpp" and isinstance(self.server_props().get("bos_token"), str):
            return self.server_props()["bos_token"]
        piece = self._piece(bos)
        if piece:
            return piece
        # llama_cpp.server detokenizes special tokens to "": find the text that tokenizes to BOS alone
        return next((text for text in BOS_TEXTS if self.tokenize(text) == [bos]), "")
