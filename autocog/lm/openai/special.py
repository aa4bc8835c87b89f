"""The model's BOS and EOS as an OpenAI-compatible server shows them, and ``pmi``'s unconditional context.

The local backends score ``pmi``'s unconditional pass after ``[BOS]`` when the model has a BOS token (even one
it does not put in front of prompts: SmolLM2's ``<|im_start|>``), else after its first EOS
(`autocog.lm.choice.ChoiceLM.unconditional_tokens`). `unconditional_text` gives the same context as text:
``""`` when the server puts BOS in front of every prompt (its tokenization of ``""``), else the dialect's
`~autocog.lm.openai.dialects.base.Dialect.specials` (llama_cpp.server: a forced one-token request per
candidate of `BOS_TEXTS` and `EOS_TEXTS`; vLLM: ``GET /tokenizer_info``; others: the tokenizer's EOS).
Otherwise `StrategyUnavailableError` asks for ``unconditional_prompt=``.

>>> unconditional_text(session)       # SmolLM2 on llama_cpp.server or vLLM         # doctest: +SKIP
'<|im_start|>'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autocog.errors import StrategyUnavailableError

if TYPE_CHECKING:  # pragma: no cover
    from autocog.lm.openai.session import Session

BOS_TEXTS = ("<s>", "<|begin_of_text|>", "<|endoftext|>", "<|im_start|>", "<bos>", "[BOS]", "<|startoftext|>")
EOS_TEXTS = ("</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>", "<|im_end|>", "<|eot_id|>", "[EOS]", "<|end|>")


def unconditional_text(session: Session) -> str:
    """The text prompt of the unconditional context (see the module docstring)."""
    tokenizer = session.tokenizer
    tokenizer.special_prefix()
    if tokenizer.bos_token_id is not None:
        return ""  # the server adds BOS: the empty prompt is [BOS]
    dialect = session.dialect
    bos, eos = dialect.specials(session)
    text = bos if bos is not None else eos
    if text is None:
        raise StrategyUnavailableError(
            f"the server at {session.base_url} says neither the model's BOS nor its EOS token, the context of "
            "'pmi''s unconditional scores: pass unconditional_prompt=" + dialect.unconditional_hint
        )
    return text
