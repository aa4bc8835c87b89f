"""Chat prompts on OpenAI-compatible servers: `ChatRenderer` (user documentation: docs/chat.md).

A list of messages given as a prompt goes through `ChatRenderer.render`:

* on the chat endpoint (``chat=True``) it becomes a `ChatPrompt`, a ``str`` that keeps the checked messages;
  the chat request (`ChatRenderer.messages`, for every request and `stream`) sends them as they are
  (``system=`` is then not added: the messages are the whole conversation);
* on a completions endpoint it is rendered with `ChatRenderer.apply_chat_template` (``chat_template=``, else a
  tokenizer object's own template, else llama.cpp's ``/props``, else vLLM's ``/tokenize`` with messages),
  without a leading BOS text, which the server adds itself.

>>> lm = OpenAI(base_url="http://127.0.0.1:8000/v1", chat=True)                         # doctest: +SKIP
>>> lm.choose([{"role": "user", "content": "Capital of France?"}], ["Paris", "London"])   # doctest: +SKIP
0
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any, Optional, Sequence

from autocog.core.chat import check_messages, render_template, strip_prefix
from autocog.errors import ChatTemplateError, StrategyUnavailableError
from autocog.lm.openai.special import BOS_TEXTS

if TYPE_CHECKING:  # pragma: no cover
    from autocog.lm.openai.session import Session


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


class ChatRenderer:
    """How one `Session` turns prompts into what its endpoint takes (``chat``, the dialect, the tokenizer)."""

    def __init__(self, session: Session):
        self.session = session
        self.leading_bos: Optional[str] = None  # `bos_text`, asked once

    def render(self, prompt: Any) -> str:
        """A str (`LM.render_prompt` checked it) less a leading BOS text on a completions endpoint; messages as
        a `ChatPrompt` on the chat endpoint, else rendered with `apply_chat_template` (generation prompt
        included) less a leading BOS text."""
        session = self.session
        if isinstance(prompt, ChatPrompt):
            return prompt
        if isinstance(prompt, str):
            if session.chat or prompt[:1] not in ("<", "["):  # every BOS text we know starts so (BOS_TEXTS)
                return prompt
            try:
                if self.leading_bos is None:
                    self.leading_bos = self.bos_text()
            except StrategyUnavailableError:  # no tokenizer to tell: the text goes as it is
                return prompt
            return strip_prefix(prompt, self.leading_bos)  # BOS once: the server adds its own, as LLaMa and TfLM do
        if session.chat:
            return ChatPrompt(prompt)
        return strip_prefix(self.apply_chat_template(prompt, add_generation_prompt=True), self.bos_text())

    def apply_chat_template(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        """The text of ``messages`` under the model's chat template (for a completions endpoint):
        ``chat_template=`` when given, else a tokenizer object's own ``apply_chat_template``, else the template
        the server exposes (the dialect's: llama.cpp's ``/props``, vLLM's ``/tokenize`` with messages). A server
        that exposes none raises `ChatTemplateError` naming the fixes (``chat_template=``, or ``chat=True``)."""
        session = self.session
        messages = check_messages(messages)
        if session.settings.chat_template:
            return render_template(session.settings.chat_template, messages, add_generation_prompt)
        own = getattr(session.settings.tokenizer, "apply_chat_template", None)
        if callable(own):
            return own(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        text = session.dialect.chat_template(session, messages, add_generation_prompt)
        if text is not None:
            return text
        raise ChatTemplateError(
            f"the server at {session.base_url} (model {session.model!r}) exposes no chat template, so messages "
            "cannot be rendered for its completions endpoint: pass chat_template= (the model's jinja2 template) or "
            "chat=True (the server applies its own template)"
        )

    def messages(self, prompt: str) -> list[dict]:
        """What the chat endpoint is sent for ``prompt``: a `ChatPrompt`'s messages, else the ``system``
        message (if any) and ``prompt`` as the user's."""
        if isinstance(prompt, ChatPrompt):
            return [dict(m) for m in prompt.messages]
        system = self.session.settings.system
        return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]

    def bos_text(self) -> str:
        """The text of the BOS token the server puts in front of every prompt ("" when it adds none): a
        tokenizer object's ``bos_token``, else what the dialect says (llama.cpp's ``/props``), else the
        token's piece, else the text of `BOS_TEXTS` that tokenizes to it alone."""
        session = self.session
        tokenizer = session.tokenizer
        tokenizer.special_prefix()
        bos = tokenizer.bos_token_id
        if bos is None:
            return ""
        own = getattr(session.settings.tokenizer, "bos_token", None)
        if isinstance(own, str):
            return own
        said = session.dialect.bos_text(session)
        if said is not None:
            return said
        piece = session.piece(bos)
        if piece:
            return piece
        # llama_cpp.server detokenizes special tokens to "": find the text that tokenizes to BOS alone
        return next((text for text in BOS_TEXTS if tokenizer.encode(text) == [bos]), "")
