"""Score many prompts at once: probabilities over choices and predictions, as numpy arrays.

The batch counterpart of `LM.choice_distribution` (CAPPr's ``predict_proba`` / ``predict`` /
``*_examples``, in this project's terms). The numbers are those of one ``lm.choice_distribution(prompt,
choices, normalization)`` call per prompt (equal up to float32 rounding on the packed path); only the cost differs.

How it is batched:

* `TfLM` (transformers): ``batch_size`` prompts go through ONE forward pass. The prefix all of them share
  (e.g. few-shot examples) is evaluated once, in the model's prefix KV cache (reused by the next batch
  when it shares it too), and repeated along the batch dimension; row ``a`` of the batch holds the rest of
  prompt ``a`` followed by the token trie of its choices, with a tree attention mask and depth-based
  position ids: each prompt token and each unique choice token is evaluated once, whatever the number of
  choices. Memory is bounded by ``batch_size`` prompts, ``max_batch_tokens`` (rows x padded row length)
  and `LOGITS_BUDGET_BYTES` of logits per pass; when a pass runs out of memory anyway the batch is split in
  halves (down to one prompt, the backend's own retried path) instead of failing.
* Any other backend (`LLaMa`, `OpenAI`, ...): one ``lm.choice_distribution`` call per prompt, which is
  that backend's fastest scoring path.

Conventions: ``choices`` is one list shared by every prompt, or one list per prompt. Probabilities come
back as a 2-D array ``[n_prompts, n_choices]`` when every prompt has as many choices, else as a list of
1-D arrays (ragged); a single ``str`` prompt gives a 1-D array. ``prior`` (optional) gives a weight per
choice: the posterior is ``probs * prior`` renormalized, computed in log space. Predictions are choice
indices (``np.int64``), like `LM.choose`.

>>> predict_proba(lm, ["2+2=", "3+3="], ["4", "6"])        # doctest: +SKIP
array([[0.91, 0.09],
       [0.12, 0.88]])
>>> predict(lm, ["2+2=", "3+3="], ["4", "6"], prior=[0.5, 0.5])   # doctest: +SKIP
array([0, 1])
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np

from .lm.choice import TokenChoiceTree
from .lm.chat import check_messages, is_messages
from .lm.errors import InvalidChoicesError, InvalidPromptError
from .lm.lm import LM, ChoiceResult, check_normalization, normalize_scores, softmax

Choices = Union[Sequence[str], Sequence[Sequence[str]]]
Prior = Union[None, Sequence[float], Sequence[Sequence[float]], np.ndarray]

DEFAULT_BATCH_SIZE = 16
DEFAULT_MAX_BATCH_TOKENS = 4096
LOGITS_BUDGET_BYTES = 512 * 2**20  # TfLM: at most this much float32 logits per forward pass (batches shrink)
PROGRESS_THRESHOLD = 50  # prompts: the bar is shown by default on runs at least this long (on a terminal)

__all__ = [
    "Example", "predict_proba", "predict", "predict_proba_examples", "predict_examples", "choice_distributions",
    "iter_choice_distributions", "apply_prior",
]


@dataclass
class Example:
    """One prompt with its own choices and, optionally, a prior over them.

    >>> Example("The sky is", [" blue", " green"], prior=[0.9, 0.1])
    Example(prompt='The sky is', choices=[' blue', ' green'], prior=[0.9, 0.1])
    """

    prompt: str
    choices: Sequence[str]
    prior: Optional[Sequence[float]] = None


# --- public API ----------------------------------------------------------------------------------------


def predict_proba(lm: LM, prompts: Union[str, Sequence[str]], choices: Choices, prior: Prior = None,
                  normalization: Optional[str] = None, batch_size: int = DEFAULT_BATCH_SIZE,
                  progress: Optional[bool] = None, end: Optional[str] = None,
                  max_batch_tokens: Optional[int] = DEFAULT_MAX_BATCH_TOKENS) -> Union[np.ndarray, list[np.ndarray]]:
    """Probability of each choice for each prompt.

    ``prompts``: a list of strings (or one string). ``choices``: one list shared by all prompts, or a list
    of lists, one per prompt. ``prior``: per-choice weights (one list shared, or one per prompt), multiplied
    into the probabilities, then renormalized. ``normalization``: ``sum`` / ``mean`` / ``char`` / ``pmi``
    (default: ``lm.default_normalization``, ``sum``). ``batch_size``: prompts per forward pass (bounds
    memory). ``progress``: a tqdm bar on stderr; ``None`` shows it on runs of 50+ prompts on a terminal.
    ``end``: an optional text scored after every choice (see `ChoiceLM`).

    Returns ``[n_prompts, n_choices]`` floats (rows sum to 1), a list of 1-D arrays if the choice lists
    differ in length, or one 1-D array for a single ``str`` prompt.

    >>> predict_proba(lm, ["The sky is", "Grass is"], [" blue", " green"]).round(2)   # doctest: +SKIP
    array([[0.8, 0.2],
           [0.3, 0.7]])
    """
    single, prompt_list, choice_lists, priors = _prepare(prompts, choices, prior)
    probs = []
    for result, weights in zip(iter_choice_distributions(lm, prompt_list, choice_lists, normalization, batch_size,
                                                         progress, end, max_batch_tokens), priors):
        probs.append(apply_prior(result.scores, weights))
    return _shape(probs, single)


def predict(lm: LM, prompts: Union[str, Sequence[str]], choices: Choices, prior: Prior = None,
            normalization: Optional[str] = None, batch_size: int = DEFAULT_BATCH_SIZE,
            progress: Optional[bool] = None, end: Optional[str] = None,
            max_batch_tokens: Optional[int] = DEFAULT_MAX_BATCH_TOKENS) -> Union[np.ndarray, int]:
    """Index of the most probable choice for each prompt (after the prior): ``np.int64`` array of
    ``n_prompts``, or an ``int`` for a single ``str`` prompt. Same arguments as `predict_proba`.

    >>> predict(lm, ["The sky is", "Grass is"], [" blue", " green"])     # doctest: +SKIP
    array([0, 1])
    """
    probs = predict_proba(lm, prompts, choices, prior, normalization, batch_size, progress, end, max_batch_tokens)
    if isinstance(prompts, str) or is_messages(prompts):
        return int(np.argmax(probs))
    return np.array([int(np.argmax(p)) for p in probs], dtype=np.int64)


def predict_proba_examples(lm: LM, examples: Iterable[Any], normalization: Optional[str] = None,
                           batch_size: int = DEFAULT_BATCH_SIZE, progress: Optional[bool] = None,
                           end: Optional[str] = None, max_batch_tokens: Optional[int] = DEFAULT_MAX_BATCH_TOKENS
                           ) -> Union[np.ndarray, list[np.ndarray]]:
    """`predict_proba` over examples: `Example` objects, or any objects / mappings with ``prompt``,
    ``choices`` and optional ``prior``. Returns a 2-D array, or a list of 1-D arrays when ragged.

    >>> predict_proba_examples(lm, [Example("1+1=", ["2", "3"]), Example("Sky:", [" blue", " red", " ?"])])  # doctest: +SKIP
    [array([0.97, 0.03]), array([0.7, 0.2, 0.1])]
    """
    prompts, choices, priors = _unpack_examples(examples)
    return predict_proba(lm, prompts, choices, priors, normalization, batch_size, progress, end, max_batch_tokens)


def predict_examples(lm: LM, examples: Iterable[Any], normalization: Optional[str] = None,
                     batch_size: int = DEFAULT_BATCH_SIZE, progress: Optional[bool] = None,
                     end: Optional[str] = None, max_batch_tokens: Optional[int] = DEFAULT_MAX_BATCH_TOKENS) -> np.ndarray:
    """Index of the most probable choice of each example (``np.int64`` array); see `predict_proba_examples`."""
    prompts, choices, priors = _unpack_examples(examples)
    return predict(lm, prompts, choices, priors, normalization, batch_size, progress, end, max_batch_tokens)


def choice_distributions(lm: LM, prompts: Sequence[str], choices: Choices, normalization: Optional[str] = None,
                         batch_size: int = DEFAULT_BATCH_SIZE, progress: Optional[bool] = None,
                         end: Optional[str] = None, max_batch_tokens: Optional[int] = DEFAULT_MAX_BATCH_TOKENS
                         ) -> list[ChoiceResult]:
    """The full `ChoiceResult` of every prompt (scores, per-token log-probs, tree), batched like `predict_proba`.

    >>> [r.choice for r in choice_distributions(lm, ["The sky is"], [" blue", " green"])]   # doctest: +SKIP
    [' blue']
    """
    _, prompt_list, choice_lists, _ = _prepare(prompts, choices, None)
    return list(iter_choice_distributions(lm, prompt_list, choice_lists, normalization, batch_size, progress, end,
                                          max_batch_tokens))


def iter_choice_distributions(lm: LM, prompts: Sequence[str], choice_lists: Sequence[Sequence[str]],
                              normalization: Optional[str] = None, batch_size: int = DEFAULT_BATCH_SIZE,
                              progress: Optional[bool] = None, end: Optional[str] = None,
                              max_batch_tokens: Optional[int] = DEFAULT_MAX_BATCH_TOKENS) -> Iterator[ChoiceResult]:
    """Yield one `ChoiceResult` per prompt, in order, building trees one batch at a time (memory stays flat
    however many prompts there are). ``choice_lists[i]`` are the choices of ``prompts[i]``."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if max_batch_tokens is not None and max_batch_tokens < 1:
        raise ValueError(f"max_batch_tokens must be a positive int or None, got {max_batch_tokens!r}")
    if len(prompts) != len(choice_lists):
        raise ValueError(f"{len(prompts)} prompts but {len(choice_lists)} lists of choices")
    normalization = check_normalization(normalization or lm.default_normalization)
    bar = _progress_bar(len(prompts), progress)
    try:
        if _packable(lm):
            yield from _iter_packed(lm, prompts, choice_lists, normalization, batch_size, end, max_batch_tokens, bar)
        else:
            kwargs = {"end": end} if end is not None else {}
            for prompt, choices in zip(prompts, choice_lists):
                yield lm.choice_distribution(prompt, choices, normalization=normalization, **kwargs)
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()


def apply_prior(scores: np.ndarray, prior: Optional[Sequence[float]]) -> np.ndarray:
    """``softmax(scores)`` times ``prior``, renormalized, computed as ``softmax(scores + log(prior))``.

    A zero prior weight gives the choice probability 0; weights need not sum to 1.

    >>> apply_prior(np.log([0.5, 0.5]), [3, 1])
    array([0.75, 0.25])
    """
    scores = np.asarray(scores, dtype=np.float64)
    if prior is None:
        return softmax(scores)
    weights = check_prior(prior, len(scores))
    with np.errstate(divide="ignore"):
        return softmax(scores + np.log(weights))


def check_prior(prior: Sequence[float], n_choices: int) -> np.ndarray:
    """The prior as a float array, or a ValueError: it needs one finite weight >= 0 per choice, not all 0."""
    try:
        weights = np.asarray(prior, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"a prior must be a list of numbers, got {prior!r}") from error
    if weights.ndim != 1 or len(weights) != n_choices:
        raise ValueError(f"the prior has shape {weights.shape} but there are {n_choices} choices")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError(f"prior weights must be finite, >= 0 and not all 0, got {list(weights)}")
    return weights


# --- input shapes --------------------------------------------------------------------------------------


def _is_choice_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str) and all(isinstance(c, str) for c in value)


def _prepare(prompts: Union[str, Sequence[str]], choices: Choices, prior: Prior
             ) -> tuple[bool, list[str], list[list[str]], list[Optional[Sequence[float]]]]:
    """(single prompt?, prompts, one choice list per prompt, one prior or None per prompt), checked. A prompt
    may be a list of chat messages (rendered by the backend, see `autocog.lm.chat`)."""
    single = isinstance(prompts, str) or is_messages(prompts)
    if single:
        prompt_list = [prompts]
    elif isinstance(prompts, Sequence) or isinstance(prompts, np.ndarray):
        prompt_list = list(prompts)
    else:
        raise InvalidPromptError(f"prompts must be a str or a list of str, not {type(prompts).__name__}")
    for i, p in enumerate(prompt_list):
        if is_messages(p):
            check_messages(p)
        elif not isinstance(p, str):
            raise InvalidPromptError(f"prompt {i} is a {type(p).__name__}, not a str or a list of chat messages")
    if isinstance(choices, str) or not isinstance(choices, Sequence) or len(choices) == 0:
        raise InvalidChoicesError("choices must be a non-empty list of strings, or one such list per prompt")
    if all(isinstance(c, str) for c in choices):
        shared = True
        choice_lists = [list(choices)] * len(prompt_list)
    elif all(_is_choice_list(c) for c in choices):
        shared = False
        if single:
            raise InvalidChoicesError("a single prompt takes one list of choices, not a list of lists")
        if len(choices) != len(prompt_list):
            raise InvalidChoicesError(f"{len(prompt_list)} prompts but {len(choices)} lists of choices")
        choice_lists = [list(c) for c in choices]
    else:
        raise InvalidChoicesError("choices must be a list of strings (shared by every prompt) or a list of such "
                                  "lists (one per prompt), not a mix")
    return single, prompt_list, choice_lists, _prepare_prior(prior, choice_lists, shared)


def _prepare_prior(prior: Prior, choice_lists: list[list[str]], shared: bool) -> list[Optional[Sequence[float]]]:
    n = len(choice_lists)
    if prior is None:
        return [None] * n
    array = None
    try:
        array = np.asarray(prior, dtype=np.float64)
    except (TypeError, ValueError):
        pass  # ragged: one list per prompt
    if array is not None and array.ndim == 1:
        # one prior for every prompt: each prompt must have as many choices
        for i, c in enumerate(choice_lists):
            check_prior(array, len(c))
        return [array] * n
    per_prompt = list(prior) if not isinstance(prior, np.ndarray) else list(prior)
    if len(per_prompt) != n:
        raise ValueError(f"{n} prompts but {len(per_prompt)} priors")
    out = []
    for i, (p, c) in enumerate(zip(per_prompt, choice_lists)):
        if p is None:
            out.append(None)
            continue
        try:
            out.append(check_prior(p, len(c)))
        except ValueError as error:
            raise ValueError(f"prior of prompt {i}: {error}") from None
    return out


def _unpack_examples(examples: Iterable[Any]) -> tuple[list[str], list[list[str]], Optional[list]]:
    prompts, choices, priors = [], [], []
    for i, example in enumerate(examples):
        if isinstance(example, Mapping):
            get = example.get
        else:
            def get(key, default=None, _e=example):
                return getattr(_e, key, default)
        prompt, example_choices = get("prompt"), get("choices")
        if prompt is None or example_choices is None:
            raise ValueError(f"example {i} needs a 'prompt' and 'choices' (got {type(example).__name__})")
        if not _is_choice_list(example_choices):
            raise InvalidChoicesError(f"example {i}: choices must be a list of strings")
        prompts.append(prompt)
        choices.append(list(example_choices))
        priors.append(get("prior"))
    if not prompts:
        raise ValueError("no examples")
    return prompts, choices, (priors if any(p is not None for p in priors) else None)


def _shape(probs: list[np.ndarray], single: bool) -> Union[np.ndarray, list[np.ndarray]]:
    if single:
        return probs[0]
    if len({len(p) for p in probs}) <= 1:
        return np.stack(probs) if probs else np.zeros((0, 0))
    return probs


def _progress_bar(total: int, progress: Optional[bool]):
    if progress is None:
        progress = total >= PROGRESS_THRESHOLD and sys.stderr.isatty()
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency, but the bar is optional
        return None
    return tqdm(total=total, unit="prompt", desc="scoring", file=sys.stderr)


# --- the packed transformers path ----------------------------------------------------------------------


def _packable(lm: LM) -> bool:
    """True for a `TfLM` whose tree evaluation is the stock one (a subclass that overrides it keeps its own)."""
    try:
        from .lm.tf import TfLM
    except ImportError:  # pragma: no cover
        return False
    return isinstance(lm, TfLM) and type(lm).evaluate_tree is TfLM.evaluate_tree


@dataclass
class _Job:
    index: int
    prompt_tokens: list[int]
    tree: TokenChoiceTree
    choices: list[str]

    @property
    def size(self) -> int:
        return len(self.prompt_tokens) + len(self.tree.nodes)


def _iter_packed(lm, prompts, choice_lists, normalization, batch_size, end, max_batch_tokens, bar):
    unconditional: dict[tuple, list[list[float]]] = {}  # pmi: per set of choice tokens, scored once

    def flush(jobs):
        for job, logprobs in zip(jobs, _evaluate_jobs(lm, jobs)):
            yield _result(lm, job, logprobs, normalization, unconditional, len(jobs))
        if bar is not None:
            bar.update(len(jobs))

    # A batch costs (number of prompts) x (its longest prompt + trie) tokens, padding included, and
    # (number of prompts) x (logit columns kept) x vocabulary floats of logits.
    vocab = int(getattr(lm.model.config, "vocab_size", 0) or 0)
    max_columns = max(1, LOGITS_BUDGET_BYTES // (4 * vocab)) if vocab else None
    jobs: list[_Job] = []
    longest = columns = 0
    for i, (prompt, choices) in enumerate(zip(prompts, choice_lists)):
        prompt_tokens, tree, choices = lm.build_tree(prompt, choices, end)
        job = _Job(i, prompt_tokens, tree, choices)
        job_columns = 1 + max((n + 1 for n in tree.internal_nodes()), default=0)
        if jobs and (len(jobs) >= batch_size
                     or (max_batch_tokens and (len(jobs) + 1) * max(longest, job.size) > max_batch_tokens)
                     or (max_columns and (len(jobs) + 1) * max(columns, job_columns) > max_columns)):
            yield from flush(jobs)
            jobs, longest, columns = [], 0, 0
        jobs.append(job)
        longest, columns = max(longest, job.size), max(columns, job_columns)
    if jobs:
        yield from flush(jobs)


def _result(lm, job: _Job, logprobs: np.ndarray, normalization: str, unconditional_cache: dict,
            batch: int) -> ChoiceResult:
    tree = job.tree
    tree.set_logprobs(logprobs)
    token_logprobs = tree.choice_logprobs()
    unconditional = None
    if normalization == "pmi":
        key = tuple(tuple(tree.nodes[n].token for n in path) for path in tree.paths)
        if key not in unconditional_cache:
            unconditional_cache[key] = tree.choice_logprobs(
                lm.with_retry(lm.evaluate_tree, lm.unconditional_tokens(), tree))
        unconditional = [list(lp) for lp in unconditional_cache[key]]
    scores = normalize_scores(token_logprobs, job.choices, normalization, unconditional)
    return ChoiceResult(list(job.choices), token_logprobs, scores, normalization, tree=tree, strategy="tree",
                        unconditional_logprobs=unconditional, info={"batch": batch})


def _evaluate_jobs(lm, jobs: list[_Job]) -> list[np.ndarray]:
    """Node log-probs of every job's tree; a batch that runs out of memory is split in halves."""
    if len(jobs) == 1:
        job = jobs[0]
        return [lm.with_retry(lm.evaluate_tree, job.prompt_tokens, job.tree)]
    try:
        return _packed_pass(lm, jobs)
    except Exception as error:
        if not lm.is_transient(error):
            raise
        lm.recover(error)
        half = len(jobs) // 2
        return _evaluate_jobs(lm, jobs[:half]) + _evaluate_jobs(lm, jobs[half:])


def _shared_prefix(jobs: list[_Job]) -> int:
    """Length of the token prefix every job's prompt shares, leaving each prompt at least its last token."""
    shared = min(len(j.prompt_tokens) for j in jobs) - 1
    first = jobs[0].prompt_tokens
    for job in jobs[1:]:
        k = 0
        while k < shared and job.prompt_tokens[k] == first[k]:
            k += 1
        shared = k
    return shared


def _packed_pass(lm, jobs: list[_Job]) -> list[np.ndarray]:
    """One forward pass for a batch of prompts: row ``a`` holds prompt a's tokens after the prefix all the
    prompts share, then the nodes of its choice trie, with a tree attention mask (a trie node sees the prompt
    and its own ancestors) and depth-based position ids. The shared prefix is evaluated once, in
    ``lm.cache`` (and reused by the next batch), then repeated along the batch dimension.

    Rows are left-padded so that every prompt ends in the same column: the columns whose logits are needed
    (the prompt's last token and the trie's inner nodes) then coincide across rows when the prompts share
    their choices, and ``logits_to_keep`` keeps only those.
    """
    import copy

    import torch

    shared = _shared_prefix(jobs)
    suffixes = [job.prompt_tokens[shared:] for job in jobs]
    last = max(len(x) for x in suffixes) - 1           # the column of every prompt's last token
    width = last + 1 + max(len(job.tree.nodes) for job in jobs)
    n_rows = len(jobs)
    ids = np.zeros((n_rows, width), dtype=np.int64)
    positions = np.zeros((n_rows, width), dtype=np.int64)
    allowed = np.zeros((n_rows, width, shared + width), dtype=bool)
    keep: set[int] = set()
    for a, (job, suffix) in enumerate(zip(jobs, suffixes)):
        tree, n_suffix, n_nodes = job.tree, len(suffix), len(job.tree.nodes)
        begin, nodes = last + 1 - n_suffix, last + 1           # first suffix column, first trie column
        ids[a, begin:nodes] = suffix
        ids[a, nodes:nodes + n_nodes] = tree.tokens
        positions[a, begin:nodes] = shared + np.arange(n_suffix)
        positions[a, nodes:nodes + n_nodes] = shared + n_suffix + tree.depths - 1
        rows = allowed[a]
        rows[begin:nodes + n_nodes, :shared] = True                                        # the shared prefix
        rows[begin:nodes, shared + begin:shared + nodes] = np.tril(np.ones((n_suffix, n_suffix), dtype=bool))
        rows[nodes:nodes + n_nodes, shared + begin:shared + nodes] = True                 # trie sees the prompt
        rows[nodes:nodes + n_nodes, shared + nodes:shared + nodes + n_nodes] = tree.ancestor_mask()
        for pad in list(range(begin)) + list(range(nodes + n_nodes, width)):
            rows[pad, shared + pad] = True                                                 # padding sees itself
        keep.add(last)
        keep.update(nodes + i for i in tree.internal_nodes())
    columns = sorted(keep)
    column_of = {c: k for k, c in enumerate(columns)}

    model, cache = lm.model, lm.cache
    device, dtype = model.device, model.dtype
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask[~torch.from_numpy(allowed)] = torch.finfo(dtype).min
    past = None
    if shared:
        cache.extend(jobs[0].prompt_tokens[:shared])
        cache.truncate(shared)
        past = copy.deepcopy(cache.kv)   # the cache keeps the prefix for the next batch; the copy is expanded
        past.batch_repeat_interleave(n_rows)
    try:
        with torch.inference_mode():
            out = model(input_ids=torch.from_numpy(ids).to(device), position_ids=torch.from_numpy(positions).to(device),
                        attention_mask=mask[:, None].to(device), **{cache.cache_key: past}, use_cache=past is not None,
                        logits_to_keep=torch.tensor(columns, device=device))
            logits = out.logits
            del out, past
            results = []
            for a, job in enumerate(jobs):
                tree = job.tree
                lp = torch.log_softmax(logits[a].float(), dim=-1)
                parent_rows = [column_of[last if n.parent < 0 else last + 1 + n.parent] for n in tree.nodes]
                results.append(lp[torch.tensor(parent_rows, device=lp.device),
                                  torch.tensor(tree.tokens, device=lp.device)].double().cpu().numpy())
    except BaseException:
        cache.reset()
        raise
    cache.evaluated += int(sum(len(x) + len(j.tree.nodes) for x, j in zip(suffixes, jobs)))
    return results
