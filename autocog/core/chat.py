"""Chat prompts: message checks and chat-template rendering shared by every backend.

A chat prompt is a list of messages, each a dict with a ``role`` (``"system"``, ``"user"``, ``"assistant"``,
``"tool"``, ``"developer"``) and a str ``content``. ``lm.apply_chat_template(messages)`` turns it into the text
the model was trained on; every method that takes a prompt (``complete``, ``stream``, ``choose``,
``choice_distribution``, ``choice_logprobs``, ``greedy``, the batch API, ``evaluate``) also takes a list of
messages and renders it with the generation prompt, so a completion or a choice is the start of the
assistant's reply (see ``docs/chat.md`` for the boundary).

Templates are rendered like transformers' ``tokenizer.apply_chat_template(..., tokenize=False)``: a sandboxed
jinja2 environment with ``trim_blocks`` and ``lstrip_blocks``, ``raise_exception``, ``strftime_now``, a
``tojson`` that keeps non-ASCII characters, ``{% generation %}`` blocks, and the special tokens
(``bos_token``, ``eos_token``...) as variables.

>>> render_template("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
...                 "{% if add_generation_prompt %}<assistant>{% endif %}",
...                 [{"role": "user", "content": "Hi"}])
'<user>Hi<assistant>'
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence

from autocog.core.lru import LRU
from autocog.errors import ChatTemplateError, InvalidPromptError

if TYPE_CHECKING:
    import jinja2
    import jinja2.nodes
    import jinja2.parser

ROLES = ("system", "user", "assistant", "tool", "developer")

Messages = Sequence[Mapping[str, Any]]

RENDER_CACHE_SIZE = 256  # renderings a model keeps (`RenderCache`)


def is_messages(prompt: Any) -> bool:
    """True when ``prompt`` looks like a chat prompt (a non-str sequence whose first item is a mapping)."""
    if isinstance(prompt, (str, bytes)) or not isinstance(prompt, Sequence) or not prompt:
        return False
    return isinstance(prompt[0], Mapping)


def check_messages(messages: Any) -> list[dict]:
    """The messages as a list of plain dicts, or an `InvalidPromptError` naming the faulty message.

    >>> check_messages([{"role": "user", "content": "Hi"}])
    [{'role': 'user', 'content': 'Hi'}]
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise InvalidPromptError(f"a chat prompt must be a list of messages, not {type(messages).__name__}")
    if not messages:
        raise InvalidPromptError("the list of messages is empty")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InvalidPromptError(f"message {i} is a {type(message).__name__}, not a dict with 'role' and 'content'")
        for key in ("role", "content"):
            if key not in message:
                raise InvalidPromptError(f"message {i} has no {key!r}: {dict(message)!r}")
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise InvalidPromptError(f"message {i} has an unknown role {role!r}: expected one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise InvalidPromptError(f"message {i} ({role}): content must be a str, not {type(content).__name__}")
        out.append(dict(message))
    return out


def missing_template(model: str) -> ChatTemplateError:
    """The error for a model that has no chat template: it names the fix."""
    return ChatTemplateError(
        f"{model} has no chat template: pass one as chat_template= (a jinja2 string, as in transformers' "
        "tokenizer_config.json), or pass a plain text prompt instead of messages"
    )


def render_template(template: str, messages: Messages, add_generation_prompt: bool = True, **variables: Any) -> str:
    """``template`` rendered on checked ``messages``, the way transformers renders chat templates.

    ``variables`` are what the template may read besides ``messages`` and ``add_generation_prompt``
    (``bos_token``, ``eos_token``...). A template that calls ``raise_exception`` (e.g. a role it does not
    support) raises `ChatTemplateError` with the template's message."""
    import jinja2

    messages = check_messages(messages)
    try:
        compiled = _compile(template)
        return compiled.render(
            messages=messages,
            add_generation_prompt=bool(add_generation_prompt),
            tools=None,
            documents=None,
            **variables,
        )
    except jinja2.TemplateError as error:
        raise ChatTemplateError(f"the chat template failed: {error}") from error


def render_key(template: str, messages: Messages, add_generation_prompt: bool, variables: Mapping[str, Any]) -> Any:
    """What a rendering depends on, hashable: the template, ``add_generation_prompt``, each message's items (in
    order) and the variables; None when it cannot be cached (a template that reads the clock, ``strftime_now``,
    or a message value that is not hashable)."""
    if "strftime_now" in template:
        return None
    try:
        key = (template, bool(add_generation_prompt), tuple(tuple(m.items()) for m in messages), *variables.items())
        hash(key)
    except TypeError:
        return None
    return key


class RenderCache:
    """The texts of a model's recent chat renderings (an `LRU` of `RENDER_CACHE_SIZE`, keyed by `render_key`), so
    that messages a dataset repeats (one conversation scored against several choice lists, lm-eval's one
    request per continuation) render once. ``render(fn, template, messages, add_generation_prompt, **variables)``
    returns ``fn()``'s text, computed on a miss.

    >>> cache, calls = RenderCache(), []
    >>> fn = lambda: calls.append(1) or "<user>Hi"
    >>> [cache.render(fn, "T", [{"role": "user", "content": "Hi"}], True) for _ in range(2)], len(calls)
    (['<user>Hi', '<user>Hi'], 1)
    """

    def __init__(self, maxsize: int = RENDER_CACHE_SIZE) -> None:
        self.texts: LRU[Any, str] = LRU(maxsize)

    def render(
        self, fn: Callable[[], str], template: str, messages: Messages, add_generation_prompt: bool, **variables: Any
    ) -> str:
        key = render_key(template, messages, add_generation_prompt, variables)
        if key is None:
            return fn()
        text = self.texts.get(key)
        if text is None:
            text = self.texts[key] = fn()
        return text


def strip_prefix(text: str, prefix: Optional[str]) -> str:
    """``text`` without a leading ``prefix`` (e.g. a BOS that the tokenizer adds anyway)."""
    if prefix and text.startswith(prefix):
        return text[len(prefix) :]
    return text


# --- the jinja2 environment ----------------------------------------------------------------------------
def _raise_exception(message: str) -> None:
    import jinja2

    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: Optional[int] = None,
    separators: Any = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=16)
def _compile(template: str) -> jinja2.Template:
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(jinja2.ext.Extension):
        """``{% generation %}...{% endgeneration %}`` (transformers' assistant-mask marker): renders its body."""

        tags = {"generation"}

        def parse(self, parser: jinja2.parser.Parser) -> list[jinja2.nodes.Node]:
            next(parser.stream)
            return parser.parse_statements(("name:endgeneration",), drop_needle=True)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[Generation, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(template)
