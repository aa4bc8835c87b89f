"""`TokenChoiceTree` (a trie of the choices' tokens, scored by the model) and `ChoiceLM`, which chooses with it."""

from __future__ import annotations

from functools import cached_property
from typing import Any, Callable, Optional, Sequence

import numpy as np

from autocog.core.checks import check_choice_tokens, check_choices, check_context, split_boundary
from autocog.core.lru import LRU
from autocog.core.trie import TokenChoiceTree
from autocog.core.types import ChoiceResult, ScoreRequest
from autocog.lm.greedy import GreedyLM
from autocog.lm.scoring import TreeJob, score_trees

CHOICE_TOKENS_MEMO_SIZE = 64  # choice lists whose tokens a model remembers
UNCONDITIONAL_CACHE_SIZE = 256  # choice sets whose unconditional (pmi) log-probs a model keeps


class ChoiceLM(GreedyLM):
    """A `GreedyLM` that chooses among continuations with a `TokenChoiceTree`.

    `choice_distribution` tokenizes the choices (see `autocog.lm.base` for the boundary convention), builds
    the trie, has the backend fill in the log-probs of its nodes (`evaluate_tree`: a generic version makes
    one `greedy` call per inner node; backends override it with one batched pass) and normalizes.

    ``end``: an optional text that must follow the choice (e.g. ``"\\n"``); its tokens are scored after
    each choice, which separates a choice from a longer one it prefixes. Default: none, a choice's score is
    the sum over its own tokens.

    For ``pmi`` the same tree is scored a second time after an unconditional prompt: the BOS token when the
    model has one, else EOS (override `unconditional_tokens`).
    """

    def choose(self, prompt: str, choices: Sequence[str], normalization: Optional[str] = None, **kwargs: Any) -> int:
        """Index of the best choice; see `choice_distribution`."""
        return self.choice_distribution(prompt, choices, normalization=normalization, **kwargs).index

    def choice_distribution(
        self,
        prompt: str,
        choices: Sequence[str],
        normalization: Optional[str] = None,
        end: Optional[str] = None,
        **kwargs: Any,
    ) -> ChoiceResult:
        """Score every choice: a batch of one through the scoring layer (`score_batch`)."""
        if kwargs:
            raise TypeError(f"unexpected argument(s) to choose: {', '.join(kwargs)}")
        return self.score_batch([ScoreRequest(prompt, choices, normalization, end)])[0]

    def score_batch(
        self, requests: Sequence[ScoreRequest], max_batch_tokens: Optional[int] = None
    ) -> list[ChoiceResult]:
        """One `ChoiceResult` per request: every request checked and its trie built, then ONE
        `evaluate_trees` call over all of them (given ``max_batch_tokens``, this call's token budget per
        pass), then normalization (see `autocog.lm.scoring.score_trees`)."""
        return score_trees(self, requests, max_batch_tokens=max_batch_tokens)

    def evaluate_trees(self, jobs: Sequence[TreeJob], max_batch_tokens: Optional[int] = None) -> list[np.ndarray]:
        """The batch primitive: for each (prompt tokens, trie) job, the log-prob of every node of the trie.

        This generic version evaluates the jobs one after the other with `evaluate_tree` (retried on
        transient faults; ``max_batch_tokens`` has nothing to bound); `TfLM` and `LLaMa` override it with
        passes over many prompts at once, within ``max_batch_tokens`` tokens a pass when it is given.
        """
        return [self.with_retry(self.evaluate_tree, list(prompt_tokens), tree) for prompt_tokens, tree in jobs]

    def evaluate_split(
        self, jobs: Sequence[TreeJob], packed: Callable[[list[TreeJob]], list[np.ndarray]]
    ) -> list[np.ndarray]:
        """``packed(jobs)``; when it fails with a transient fault (out of memory, no KV slot) the jobs are split
        in halves, down to one job on the backend's own retried `evaluate_tree`."""
        jobs = list(jobs)
        if len(jobs) == 1:
            return [self.with_retry(self.evaluate_tree, list(jobs[0][0]), jobs[0][1])]
        try:
            return packed(jobs)
        except Exception as error:
            if not self.is_transient(error):
                raise
            self.recover(error)
            half = len(jobs) // 2
            return self.evaluate_split(jobs[:half], packed) + self.evaluate_split(jobs[half:], packed)

    def build_tree(
        self, prompt: str, choices: Sequence[str], end: Optional[str] = None
    ) -> tuple[list[int], TokenChoiceTree, list[str]]:
        """Checked prompt tokens, the trie of the choices' tokens, and the choices as given. A prompt given as
        chat messages is rendered first (`render_prompt`): the choices start the assistant's reply."""
        return self.checked_tree(self.render_prompt(prompt), check_choices(choices), end)

    def checked_tree(
        self, prompt: str, choices: list[str], end: Optional[str] = None
    ) -> tuple[list[int], TokenChoiceTree, list[str]]:
        """`build_tree` of a prompt and choices that passed the scoring layer's checks (a str prompt, a list of
        distinct non-empty str: `autocog.lm.scoring.check_request`), which are not run again."""
        prompt_text, continuations = split_boundary(prompt, choices)
        prompt_tokens = (
            self.prompt_tokens(prompt_text) if prompt_text else self.prompt_tokens(self.unconditional_tokens())
        )
        tree = self.choice_tree(continuations, end)
        check_context(len(prompt_tokens) + tree.max_depth, self.n_ctx, "prompt plus the longest choice")
        return prompt_tokens, tree, choices

    def choice_tokens(self, continuations: Sequence[str], end: Optional[str] = None) -> list[list[int]]:
        """The tokens of each continuation (then ``end``'s), checked: none empty, no two the same
        (`autocog.core.checks.check_choice_tokens`). Memoized per choice list in `choice_tokens_memo`."""
        key = (tuple(continuations), end)
        token_lists = self.choice_tokens_memo.get(key)
        if token_lists is None:
            tokens = self.tokenize_batch(continuations)
            check_choice_tokens(tokens, continuations)
            end_tokens = tuple(self.tokenize(end)) if end else ()
            token_lists = [tuple(t) + end_tokens for t in tokens]
            self.choice_tokens_memo[key] = token_lists
        return [list(tokens) for tokens in token_lists]

    def choice_tree(self, continuations: Sequence[str], end: Optional[str] = None) -> TokenChoiceTree:
        """A fresh (unscored) trie of `choice_tokens`: a copy of the one kept in `tree_cache` for the same
        continuations (the prompt's trailing whitespace already moved into them) and ``end``."""
        key = (tuple(continuations), end)
        tree = self.tree_cache.get(key)
        if tree is None:
            tree = self.tree_cache[key] = TokenChoiceTree(
                self.choice_tokens(continuations, end), decode=self._decode_one
            )
        return tree.copy()

    @cached_property
    def tree_cache(self) -> LRU[tuple, TokenChoiceTree]:
        """(continuations, end) -> the unscored trie of their tokens, never handed out itself (`choice_tree` gives
        copies). Per model, so per tokenizer; at most `CHOICE_TOKENS_MEMO_SIZE` choice lists; created on first use."""
        return LRU(CHOICE_TOKENS_MEMO_SIZE)

    @cached_property
    def choice_tokens_memo(self) -> LRU[tuple, list[tuple[int, ...]]]:
        """(continuations, end) -> the checked tokens of each choice: the same choices are scored after many
        prompts. At most `CHOICE_TOKENS_MEMO_SIZE` choice lists; created on first use."""
        return LRU(CHOICE_TOKENS_MEMO_SIZE)

    @cached_property
    def unconditional_cache(self) -> LRU[tuple, list[list[float]]]:
        """(unconditional context, choice token paths) -> the choices' token log-probs after that context, for
        ``pmi`` (see `autocog.lm.scoring`). At most `UNCONDITIONAL_CACHE_SIZE` choice sets; created on first use."""
        return LRU(UNCONDITIONAL_CACHE_SIZE)

    def _decode_one(self, token: int) -> str:
        return self.detokenize([token])

    def evaluate_tree(self, prompt_tokens: list[int], tree: TokenChoiceTree) -> np.ndarray:
        """Log-prob of every node of ``tree`` after ``prompt_tokens`` (generic: one `greedy_impl` per row,
        `TokenChoiceTree.read_each`)."""
        prompt_tokens = list(prompt_tokens)
        return tree.read_each(lambda path: self.greedy_impl(prompt_tokens + path))

    def unconditional_tokens(self) -> list[int]:
        """The context of an unconditional score (``pmi``): BOS if the model has one, else EOS."""
        bos = getattr(self, "bos_token_id", None)
        if bos is not None:
            return [int(bos)]
        eos = sorted(self.eos_token_ids)
        if not eos:
            raise NotImplementedError(f"{type(self).__name__} has neither BOS nor EOS: override unconditional_tokens")
        return [eos[0]]
