"""`generate(lm, output_type, prompt=None, **inputs)`: one call from an output type to a validated value.

On a `GreedyLM` (TfLM, LLaMa): one run of ``lm.complete_tokens`` (the one decoding loop) under a `GrammarConstraint`.
On `OpenAI`: the constraint goes to the server natively (`autocog.structured.server`), the reply is validated.
A list of choices goes to ``lm.choose`` on every backend (scored over whole choices; sampled under the choice
grammar when ``temperature`` > 0).

The prompt is a template: ``{name}`` fields are filled from ``inputs`` (only when inputs are given, so a
prompt with literal braces needs none); a list of ``{"role", "content"}`` messages goes through
``lm.apply_chat_template``. Sampling: greedy unless ``temperature`` > 0.

``max_tokens`` bounds the output; after ``close_after`` tokens (default: half of ``max_tokens``)
the constraint closes the value as soon as the grammar allows (EOS, then ``"``, ``}``, ``]``, ``,`` for JSON),
so a model that rambles (a random one, a long string) still ends in valid text. When even that does not
reach the end of the grammar, `IncompleteOutputError` (the text so far is its ``text``).

>>> class Client(BaseModel):                                            # doctest: +SKIP
...     name: str
...     zip_code: str = Field(pattern=r"^[0-9]{5}$")
>>> autocog.generate(lm, Client, "Create a client profile:\\n")          # doctest: +SKIP
Client(name='John Doe', zip_code='12345')
>>> autocog.generate(lm, autocog.Regex(r"[0-9]{3}-[0-9]{4}"), "Phone: ")  # doctest: +SKIP
'555-0100'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

from autocog.core.sampling import SamplingParams
from autocog.errors import InvalidPromptError
from autocog.lm.greedy import GreedyLM
from autocog.structured.engine import GrammarConstraint, IncompleteOutputError
from autocog.structured.types import Output, as_output
from autocog.structured.vocab import vocabulary

__all__ = ["Generation", "generate", "render_prompt", "run"]

DEFAULT_MAX_TOKENS = 512


@dataclass
class Generation:
    """What `run` produced: ``value`` (validated), ``text``, ``tokens`` (ids taken, EOS included when generation
    ended on it; empty on servers), ``logprobs`` (the model's log-prob of each of those tokens, not renormalized
    by the mask), ``output`` (the resolved `Output`)."""

    value: Any
    text: str
    output: Output
    tokens: list = field(default_factory=list)
    logprobs: list = field(default_factory=list)


def render_prompt(lm: Any, prompt: Union[str, Sequence[dict], None], inputs: dict) -> str:
    """The prompt text: a template filled from ``inputs``, messages through the chat template, or a default."""
    if prompt is None:
        prompt = ""
    if isinstance(prompt, (list, tuple)):
        if not hasattr(lm, "apply_chat_template"):
            raise InvalidPromptError(f"{type(lm).__name__} has no apply_chat_template: pass the prompt as text")
        messages = [dict(m, content=m["content"].format(**inputs)) if inputs else m for m in prompt]
        return lm.apply_chat_template(messages, add_generation_prompt=True)
    if not isinstance(prompt, str):
        raise InvalidPromptError(f"the prompt must be a str or a list of messages, not {type(prompt).__name__}")
    if inputs:
        try:
            return prompt.format(**inputs)
        except (KeyError, IndexError) as error:
            raise InvalidPromptError(f"the prompt template needs the input {error}") from None
    return prompt


def run(
    lm: Any,
    output_type: Any,
    prompt: Union[str, Sequence[dict], None] = None,
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: Optional[int] = None,
    close_after: Optional[int] = None,
    **inputs: Any,
) -> Generation:
    """`generate`, with the text, tokens and log-probs (a `Generation`)."""
    output = as_output(output_type)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"max_tokens must be an int >= 1, got {max_tokens!r}")
    params = SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed)
    text_prompt = render_prompt(lm, prompt, inputs)
    if output.choices is not None and params.is_greedy:
        index = lm.choose(text_prompt, output.choices)
        return Generation(output.choices[index], output.choices[index], output)
    if not isinstance(lm, GreedyLM):
        if not hasattr(lm, "server"):
            raise TypeError(
                f"{type(lm).__name__} can neither mask tokens (a GreedyLM) nor pass a constraint to a "
                "server (OpenAI): structured output needs one of them"
            )
        from autocog.structured.server import generate_on_server

        text = generate_on_server(lm, output, text_prompt, params)
        return Generation(output.parse(text), text, output)
    tokens = lm.prompt_tokens(text_prompt)
    close_after = max_tokens // 2 if close_after is None else int(close_after)
    constraint = GrammarConstraint(output.grammar, vocabulary(lm), finish_after=close_after, closers=output.closers)
    logprobs: list = []
    text = lm.complete_tokens(tokens, [], params, constraint=constraint, token_logprobs=logprobs)
    if not constraint.accepting():
        raise IncompleteOutputError(
            f"generation stopped after {len(constraint.tokens)} tokens before the "
            f"{output.kind} output was complete: raise max_tokens (now {max_tokens})",
            text,
        )
    return Generation(output.parse(text), text, output, list(constraint.tokens), logprobs)


def generate(lm: Any, output_type: Any, prompt: Union[str, Sequence[dict], None] = None, **kwargs: Any) -> Any:
    """A value of ``output_type`` generated by ``lm`` after ``prompt`` (see the module docstring).

    ``output_type``: a pydantic model or any type pydantic gives a JSON schema, a JSON schema dict,
    ``autocog.Regex`` / ``autocog.Lark`` / ``autocog.GBNF``, or a list of choices. Keyword arguments:
    ``max_tokens``, ``close_after``, ``temperature``, ``top_p``, ``top_k``, ``seed``; any other fills the prompt
    template.
    Returns the validated instance (models, types), the parsed JSON (schemas) or the text (regex, grammars,
    choices)."""
    return run(lm, output_type, prompt, **kwargs).value
