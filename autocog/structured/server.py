"""Structured output on OpenAI-compatible servers: the constraint goes to the server natively.

==================  ===========================================================================================
server              request
==================  ===========================================================================================
llama.cpp           ``/completions`` with ``grammar`` (GBNF): a JSON schema is converted by llama-cpp-python's
                    ``json_schema_to_gbnf`` (installed with the ``llama`` extra) -- or, when the `OpenAI` backend
                    talks chat, ``/chat/completions`` with ``response_format: {"type": "json_object", "schema"}``;
                    a GBNF grammar as is; choices as a GBNF alternation. Regex and Lark: no native form.
vLLM                ``/completions`` with ``structured_outputs``: ``{"json"}``, ``{"regex"}``, ``{"grammar"}`` (Lark
                    or GBNF), ``{"choice"}``
OpenAI              ``/chat/completions`` with ``response_format: {"type": "json_schema", ...}``; JSON only
generic             none
==================  ===========================================================================================

Where the server has no native form for the output type, `ServerConstraintError` says which server and which
types it takes; nothing is sent. The reply is always validated (`OutputValidationError` when it is not valid:
a server may cut at ``max_tokens``).
"""

from __future__ import annotations

import json
from typing import Any

from autocog.core.constraint import NativeConstraint
from autocog.core.sampling import SamplingParams
from autocog.errors import MalformedResponseError, StrategyUnavailableError
from autocog.structured.types import Output

__all__ = ["ServerConstraintError", "generate_on_server", "server_request"]


class ServerConstraintError(StrategyUnavailableError):
    """The server has no native constraint for this output type (the message names both)."""


def _gbnf_literal(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


_CLASSES = {"d": "0-9", "w": "A-Za-z0-9_", "s": " \\t\\n\\r"}


def _plain_classes(pattern: str) -> str:
    """``\\d``, ``\\w``, ``\\s`` spelled as character ranges (llama-cpp-python's converter copies them verbatim
    into GBNF, whose parser then fails -- and llama_cpp.server dies on that)."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            rep = _CLASSES.get(pattern[i + 1])
            out.append((rep if in_class else f"[{rep}]") if rep else pattern[i : i + 2])
            i += 2
            continue
        in_class = (c == "[") if not in_class else (c != "]")
        out.append(c)
        i += 1
    return "".join(out)


def _patterns_spelled_out(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {
            k: (_plain_classes(v) if k == "pattern" and isinstance(v, str) else _patterns_spelled_out(v))
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [_patterns_spelled_out(v) for v in schema]
    return schema


def _schema_to_gbnf(schema: dict) -> str:
    """GBNF for a llama.cpp server, checked here first (a grammar it cannot parse kills llama_cpp.server)."""
    from autocog.structured.engine import GrammarError, gbnf

    try:
        from llama_cpp.llama_grammar import json_schema_to_gbnf
    except ImportError:
        raise ServerConstraintError(
            "a JSON schema on a llama.cpp server's completions endpoint needs "
            "llama-cpp-python's json_schema_to_gbnf: pip install 'autocog[llama]', or "
            "use the chat endpoint (OpenAI(..., chat=True))"
        ) from None
    try:
        text = json_schema_to_gbnf(json.dumps(_patterns_spelled_out(schema)))
        gbnf(text)
    except (GrammarError, ValueError, KeyError, NotImplementedError) as error:
        raise ServerConstraintError(
            f"llama-cpp-python cannot convert this JSON schema to a GBNF grammar the server parses: {error}"
        ) from None
    return text


def server_request(lm: Any, chat: bool, output: Output) -> tuple[str, dict]:
    """The endpoint (``"completions"`` or ``"chat"``) and the request fields that carry the constraint, from the
    server's dialect (``lm.dialect``); `ServerConstraintError` where it has no native form for this output."""
    dialect = lm.dialect
    if output.kind not in dialect.constraint_kinds:
        takes = ", ".join(dialect.constraint_kinds) or "no constrained output"
        raise ServerConstraintError(
            f"the {dialect.name} server has no native {output.kind} constraint (it takes: "
            f"{takes}); use a local backend (TfLM, LLaMa) for this output type"
        )
    return dialect.constraint_fields(native_constraint(output), chat)


def native_constraint(output: Output) -> NativeConstraint:
    """``output`` as plain data for a server dialect, with its GBNF form computed on demand."""
    source = output.grammar.source if output.grammar is not None else None
    choices = tuple(output.choices) if output.choices is not None else None

    def to_gbnf() -> str:
        if output.kind == "json":
            return _schema_to_gbnf(output.schema or {})
        if output.kind == "choice":
            return "root ::= " + " | ".join(_gbnf_literal(c) for c in choices or ())
        if output.kind == "gbnf" and source is not None:
            return source
        raise ServerConstraintError(f"a {output.kind} constraint has no GBNF form")

    name = getattr(output.source, "__name__", "output")
    return NativeConstraint(output.kind, output.schema, source, choices, str(name), to_gbnf)


def generate_on_server(lm: Any, output: Output, prompt: str, params: SamplingParams) -> str:
    """The reply's text for ``prompt`` under the output's constraint, on the `OpenAI` backend ``lm``
    (``params``: ``max_tokens``, ``temperature``, ``top_p``, ``seed``)."""
    server = lm.server
    chat = bool(getattr(lm, "chat", False))
    endpoint, fields = server_request(lm, chat, output)
    body: dict = {
        "model": lm.model,
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        **fields,
    }
    if params.seed is not None:
        body["seed"] = params.seed
    body.update(lm.dialect.sampling_extras(params.as_dict()))  # e.g. llama.cpp's sampler defaults reset
    if endpoint == "chat":
        system = getattr(lm, "system", None)
        body["messages"] = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}
        ]
        data = lm.post_json("/chat/completions", body)
        text = _first(data).get("message", {}).get("content")
    else:
        body["prompt"] = prompt
        data = lm.post_json("/completions", body)
        text = _first(data).get("text")
    if not isinstance(text, str):
        raise MalformedResponseError(f"the {server} server's reply has no text: {str(data)[:300]}")
    return text


def _first(data: Any) -> dict:
    try:
        choice = data["choices"][0]
    except (KeyError, IndexError, TypeError):
        raise MalformedResponseError(f"the server's reply has no choices: {str(data)[:300]}") from None
    if not isinstance(choice, dict):
        raise MalformedResponseError(f"the server's reply has a malformed choice: {str(choice)[:300]}")
    return choice
