"""`Scorer`: which strategy scores a request on this server, and the `ChoiceResult` it gives.

The strategies are objects on the session: `EchoByIds` (vLLM: token-id prompts, many per request),
`EchoByText` (echo with log-probs, read back where the probe found them) and `Descent` (next-token requests down
the choices' trie). ``auto`` takes echo by ids where the server takes them, else echo where the probe found it
exact, else descent; an echo that cannot score some choices falls back to a full descent.

>>> Scorer(session).distribution(checked, "auto", exhaustive=False, search="best-first").strategy  # doctest: +SKIP
'echo'
"""

from __future__ import annotations

from collections import Counter
from typing import Optional

from autocog.core.checks import split_boundary
from autocog.core.normalization import normalize_scores
from autocog.core.trie import TokenChoiceTree
from autocog.core.types import ChoiceResult
from autocog.errors import StrategyUnavailableError
from autocog.lm.openai.descent import Descent
from autocog.lm.openai.echo import EchoByText
from autocog.lm.openai.ids import EchoByIds
from autocog.lm.openai.plans import Plan
from autocog.lm.openai.session import Session
from autocog.lm.openai.transport import CALL_COUNTER
from autocog.lm.scoring import CheckedRequest

STRATEGIES = ("auto", "echo", "descent")
SEARCHES = ("best-first", "greedy", "full")


def check_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
    return strategy


class Scorer:
    """The three strategies of one `Session`, and the choice between them."""

    def __init__(self, session: Session):
        self.session = session
        self.by_ids = EchoByIds(session)
        self.echo = EchoByText(session)
        self.descent = Descent(session)

    def distribution(self, checked: CheckedRequest, strategy: str, exhaustive: bool, search: str) -> ChoiceResult:
        """The `ChoiceResult` of one checked request (see `OpenAI.choice_distribution`)."""
        return self.session.requests.run(self.distribution_plan(checked, strategy, exhaustive, search))

    def distribution_plan(
        self, checked: CheckedRequest, strategy: str, exhaustive: bool, search: str
    ) -> Plan[ChoiceResult]:
        """`distribution` as a request plan (`autocog.lm.openai.plans`): token-id rows and echoes yielded; the
        descent's requests sent by the sync transport from the plan's step."""
        session = self.session
        check_strategy(strategy)
        normalization, choices = checked.normalization, checked.choices
        prompt_text, continuations = split_boundary(checked.prompt, choices)
        if checked.end:
            continuations = [c + checked.end for c in continuations]
        why = self.by_ids.applies([checked], strategy, exhaustive, search)
        if why is not None:  # vLLM: echo by token ids; llama-server: rows by token ids (docs/openai.md)
            return (yield from self.by_ids.score_plan([checked], strategy, why))[0]
        if search not in SEARCHES:
            raise ValueError(f"unknown search {search!r}: expected one of {', '.join(SEARCHES)}")
        if exhaustive or normalization != "sum":
            search = "full"  # pruning and greedy decisions are sound for sums of log-probs only
        requested = strategy
        strategy = self.pick(strategy)  # probes the server on first use (not counted below)
        session.ambiguous_texts()  # reads a llama.cpp server's token names on first use (not counted below)
        if normalization == "pmi":
            _ = session.unconditional_prompt  # finds the model's BOS/EOS on first use (not counted below)
        spent: Counter = Counter()
        token = CALL_COUNTER.set(spent)  # this call's requests, whatever else runs at the same time
        try:
            run = yield from self.run(prompt_text, continuations, strategy, requested, search, normalization)
        finally:
            CALL_COUNTER.reset(token)
        token_logprobs, info, tree, uncond, strategy, fallback = run
        scores = normalize_scores(info.pop("bounded"), choices, normalization, uncond)
        if fallback:
            info["fallback"] = fallback
        info["reason"] = self.reason(requested, strategy, fallback)
        info.update(
            server=session.dialect.name,
            endpoint="chat" if session.chat else "completions",
            requests=spent["completions"] + spent["chat"],
            tokenize_requests=spent["tokenize"] + spent["detokenize"],
            attempts=spent["attempts"],
        )
        return ChoiceResult(
            list(choices),
            token_logprobs,
            scores,
            normalization,
            tree=tree,
            strategy=strategy,
            unconditional_logprobs=uncond,
            info=info,
        )

    def run(
        self, prompt_text: str, texts: list[str], strategy: str, requested: str, search: str, normalization: str
    ) -> Plan[
        tuple[list[list[float]], dict, Optional[TokenChoiceTree], Optional[list[list[float]]], str, Optional[str]]
    ]:
        """(token log-probs, info, tree, unconditional log-probs, strategy that ran, fallback reason), as a plan."""
        session = self.session
        uncond: Optional[list[list[float]]] = None
        tree: Optional[TokenChoiceTree] = None
        fallback: Optional[str] = None
        token_logprobs: list[list[float]] = []
        info: dict = {}
        if strategy == "echo":
            try:
                token_logprobs, info = yield from self.echo.score_plan(prompt_text, texts)
                if normalization == "pmi":
                    uncond, _ = yield from self.echo.score_plan(session.unconditional_prompt, texts)
            except StrategyUnavailableError as error:
                if requested != "auto" or session.probe()["bias"] is None:
                    raise
                fallback, strategy, search = str(error), "descent", "full"  # auto promises a distribution
        if strategy == "descent":
            try:
                token_logprobs, info, tree = yield from self.descent.score_plan(prompt_text, texts, search)
            except StrategyUnavailableError as error:
                if fallback is None:
                    raise
                raise StrategyUnavailableError(f"echo: {fallback}; descent: {error}") from None
            if normalization == "pmi":
                uncond, _, _ = yield from self.descent.score_plan(session.unconditional_prompt, texts, "full")
        return token_logprobs, info, tree, uncond, strategy, fallback

    def pick(self, strategy: str) -> str:
        """The strategy that runs for ``strategy`` here (probing the server once), or `StrategyUnavailableError`."""
        session = self.session
        if strategy == "echo" and session.chat:  # known without probing: said before anything is sent
            raise self.unavailable("echo", "the chat endpoint has no echo")
        caps = session.probe()
        if strategy == "echo":
            if not caps["echo"]:
                raise self.unavailable("echo", caps["echo_reason"])
            return "echo"
        if strategy == "descent" or not caps["echo"]:
            if caps["bias"] is None:
                raise self.unavailable("descent", caps["bias_reason"])
            return "descent"
        return "echo"

    def unavailable(self, strategy: str, why: str) -> StrategyUnavailableError:
        session = self.session
        return StrategyUnavailableError(
            f"strategy {strategy!r} cannot run on {session.base_url} (model {session.model!r}): {why}"
        )

    def reason(self, requested: str, strategy: str, fallback: Optional[str] = None) -> str:
        """Why ``strategy`` ran (``result.info["reason"]``) when token-id echo did not apply."""
        caps = self.session.probe()
        if requested != "auto":
            return f"{strategy}: requested"
        if fallback:
            return f"auto: descent: echo could not score these choices ({fallback})"
        if strategy == "echo":
            why = "one request per choice in parallel"
            if self.session.dialect.wide:
                why += ", the next-token row for one-token choices"
            return f"auto: echo (text): the probe found exact echo log-probs ({caps['echo_reason']}); {why}"
        return f"auto: descent: echo is not exact here ({caps['echo_reason']}); logit_bias {caps['bias_reason']}"
