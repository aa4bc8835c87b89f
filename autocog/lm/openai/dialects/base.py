"""`Dialect`: what one kind of OpenAI-compatible server does differently, behind one small interface.

A dialect owns the request extras its server takes (`sampling_extras`, `server_stops`), the endpoints outside
the OpenAI schema (its tokenizer, chat template, special tokens, vocabulary) and flags that the scorers read
(``wide``, ``grammar``...). One subclass per server kind, one module each in `autocog.lm.openai.dialects`;
`detect` picks one by asking each registered dialect, in ``order``, whether the server is its kind.

A new server is one new module in this package: subclass `Dialect`, set ``name`` (what ``server=`` takes) and
``order`` (where detection asks it; None: only by name), override `matches` and the hooks that differ.

>>> Dialect.named("generic").sampling_extras({"min_p": 0.1})
{'min_p': 0.1}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Optional, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from autocog.core.constraint import NativeConstraint
    from autocog.lm.openai.session import Session
    from autocog.lm.openai.tokenizers import Tokenizer
    from autocog.lm.openai.vocabulary import Vocabulary


class Dialect:
    """The OpenAI-compatible defaults; subclasses override what their server does otherwise.

    Flags: ``wide`` (answers any number of top log-probs: a whole next-token row in one request), ``serial``
    (evaluates one request at a time: every request goes under one lock), ``grammar`` (takes a GBNF
    ``grammar``: descent walks), ``prompt_cache`` (keeps the last prompt's KV and evaluates only the new
    tokens), ``echo_by_ids`` (echoed entries are matched by token id; the echo leaves BOS out),
    ``token_id_prompts`` (takes lists of token-id prompts and reports ``prompt_logprobs``: echo by ids),
    ``id_rows`` (takes lists of token-id prompts on ``/completion`` and reports next-token log-probs by id:
    `autocog.lm.openai.id_rows`), ``stop_tokens`` (a completion with stops asks for its tokens, to tell a stop
    string from EOS),
    ``stream_stops`` (the server is told the stop strings when streaming).
    """

    name: ClassVar[str] = ""
    order: ClassVar[Optional[int]] = None
    registry: ClassVar[dict[str, type[Dialect]]] = {}

    wide: ClassVar[bool] = False
    serial: ClassVar[bool] = False
    grammar: ClassVar[bool] = False
    prompt_cache: ClassVar[bool] = False
    echo_by_ids: ClassVar[bool] = False
    token_id_prompts: ClassVar[bool] = False
    id_rows: ClassVar[bool] = False
    stop_tokens: ClassVar[bool] = False
    stream_stops: ClassVar[bool] = True
    constraint_kinds: ClassVar[tuple[str, ...]] = ()  # output kinds the server constrains natively
    unconditional_hint: ClassVar[str] = ""  # said when neither BOS nor EOS is found (how to expose them)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            Dialect.registry[cls.name] = cls

    @classmethod
    def named(cls, name: str) -> Dialect:
        """A new dialect object of the server kind ``name`` (a KeyError for an unknown one)."""
        return cls.registry[name]()

    @classmethod
    def matches(cls, session: Session) -> bool:
        """Whether the server behind ``session`` is of this kind (a cheap request at most; never retried)."""
        return False

    # --- requests --------------------------------------------------------------------------------------
    def default_chat(self, model: str) -> bool:
        """The endpoint of ``chat=None``: completions, unless the server is known to serve chat models."""
        return False

    def default_top_logprobs(self, chat: bool) -> int:
        return 1000 if self.wide else 20

    def sampling_extras(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """Sampler settings outside the OpenAI schema (``extra_body``) for ``settings`` (a completion's)."""
        min_p = float(settings.get("min_p") or 0.0)
        return {"min_p": min_p} if min_p > 0 else {}

    def constraint_fields(self, constraint: NativeConstraint, chat: bool) -> tuple[str, dict[str, Any]]:
        """The endpoint (``"completions"`` or ``"chat"``) and the request fields that carry ``constraint``, one of
        `constraint_kinds` (the caller checks)."""
        raise NotImplementedError(f"the {self.name} dialect constrains no output")

    def server_stops(self, stops: Sequence[str], stream: bool) -> list[str]:
        """The stop strings the server is told (it cuts them off; the rest are matched here)."""
        return list(stops)

    def token_ids_reason(self) -> str:
        """Why this server scores token-id prompts (``token_id_prompts``) or not (said in ``result.info``)."""
        return (
            f"the server ({self.name}) is not known to take token-id prompts and lists of prompts "
            "(llama_cpp.server refuses them)"
        )

    def echo_refusal(self, session: Session) -> Optional[str]:
        """Why text echo cannot be exact on this server, found by one probe request, or None: probe as usual
        (`autocog.lm.openai.capabilities`)."""
        return None

    # --- endpoints outside the OpenAI schema -----------------------------------------------------------
    def server_tokenizer(self, session: Session) -> Optional[Tokenizer]:
        """The server's own tokenizer endpoints as a `Tokenizer`, or None when it has none."""
        return None

    def chat_template(self, session: Session, messages: list[dict], add_generation_prompt: bool) -> Optional[str]:
        """``messages`` rendered with the template the server exposes, or None when it exposes none."""
        return None

    def server_props(self, session: Session) -> dict:
        """llama.cpp's ``GET /props`` where the server has it ({} here)."""
        return {}

    def bos_text(self, session: Session) -> Optional[str]:
        """The text of the BOS token as the server says it, or None when it does not say."""
        return None

    def specials(self, session: Session) -> tuple[Optional[str], Optional[str]]:
        """(BOS text, EOS text) of the model, None where not known: here the tokenizer's EOS."""
        tokenizer = session.tokenizer
        eos = tokenizer.eos_token_id
        return None, (tokenizer.decode([eos]) if eos is not None else None)

    def dropped_bos(self, session: Session) -> Optional[int]:
        """The id the server leaves out of its echoes (llama_cpp.server: the model's BOS), or None."""
        return None

    def vocabulary(self, session: Session) -> Optional[Vocabulary]:
        """Every token's name in ``top_logprobs`` where several tokens can share one (None: names are unique)."""
        return None


def detect(session: Session) -> Dialect:
    """The dialect of the server behind ``session``: the first registered one (by ``order``) that `matches`,
    else ``"generic"``."""
    for cls in sorted(
        (c for c in Dialect.registry.values() if c.order is not None), key=lambda c: (c.order or 0, c.name)
    ):
        if cls.matches(session):
            return cls()
    return Dialect.named("generic")
