"""autocog inside lm-evaluation-harness: importing this module registers the model ``autocog``.

>>> import autocog.eval.lm_eval, lm_eval                                                        # doctest: +SKIP
>>> lm_eval.simple_evaluate(model="autocog", model_args="backend=tf,model=path/to/hf_dir",
...                         tasks=["my_task"], task_manager=lm_eval.tasks.TaskManager(include_path="tasks/"))  # doctest: +SKIP

``model_args``: ``backend=NAME``, any name in `autocog.lm.registry.BACKENDS` (``tf``, ``llama``, ``openai``
and the plugins; default ``tf``), ``model=PATH|NAME`` (``pretrained=`` is an
alias; default: the embedded SmolLM2 on ``tf`` and ``llama``), the backend's own keywords passed to
`autocog.lm.load` (``device``, ``dtype``, ``n_ctx``, ``n_threads``, ``base_url``, ``api_key``...), and the
adapter's ``batch_size`` (prompts per scoring call), ``max_length`` (tokens of a rolling window; default
the model's context) and ``max_gen_toks`` (default 256).

The three request types:

* ``loglikelihood`` (context, continuation): the requests are grouped by context and every group is
  scored as ONE choice set through the batch API (`autocog.eval.batch.choice_distributions`, on the scoring
  layer), ``batch_size`` contexts per call, so each context, the prefix the contexts share (few-shot
  examples) and the shared tokens of the continuations are evaluated once. The boundary is lm-eval's: trailing
  whitespace of the context moves to the front of the continuation (autocog's convention too); an empty
  context is conditioned on BOS (else EOS). Returns ``(log P(continuation | context), is_greedy)``;
  ``is_greedy`` is exact: every continuation token is the argmax of the model's next-token row (read from
  the rows the tree pass computes anyway, `ChoiceResult.is_greedy`; backends without rows decode greedily). A
  context plus continuation longer than the model's context is a ``ContextLengthError`` (lm-eval's
  ``hf`` cuts the context from the left instead). The log-likelihood is the ``sum`` score of
  `autocog.eval.scores` (the loop of `evaluate` and `compare`): lm-eval's ``acc`` and ``acc_norm`` over these
  numbers are `evaluate`'s ``sum`` and ``char`` accuracies.
* ``loglikelihood_rolling`` (text,): the text's tokens (no special token added) conditioned on BOS
  (else EOS), in windows of ``max_length`` tokens as lm-eval's ``get_rolling_token_windows`` cuts them;
  each token is predicted once. (lm-eval's ``hf`` model also scores a BOS that its tokenizer adds to
  the text; autocog does not.) Needs the token-level primitive of the ``tf`` and ``llama`` backends.
* ``generate_until`` (context, gen_kwargs): ``lm.complete`` with ``until`` as stop strings (cut off, as
  lm-eval does), ``max_gen_toks``, greedy unless ``do_sample`` with a ``temperature``.

Data parallel: under ``torchrun`` / ``accelerate launch`` (``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` set) the
adapter reports ``rank`` and ``world_size`` to lm-eval, which hands each process every ``world_size``-th
document, and gathers the per-document metrics on rank 0 with the adapter's ``all_gather`` / ``gather_object``
/ ``barrier`` (a gloo group, `autocog.eval.distributed.DataParallel`). ``device=cuda`` becomes
``cuda:LOCAL_RANK``: one model replica per GPU. ``simple_evaluate`` returns the results on rank 0, None elsewhere.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, Optional

import lm_eval.models  # noqa: F401 - registers lm-eval's own models (hf...) lazily; our import must not hide them
from lm_eval.api.model import LM as HarnessLM
from lm_eval.api.registry import register_model
from lm_eval.utils import (
    get_rolling_token_windows,
    handle_arg_string,
    make_disjoint_window,
)
from tqdm import tqdm

from autocog.core.trie import TokenChoiceTree
from autocog.eval.batch import choice_distributions
from autocog.eval.distributed import DataParallel
from autocog.eval.scores import choice_scores
from autocog.lm import load
from autocog.lm.base import LM
from autocog.lm.registry import BACKENDS, backend_keywords, check_keywords
from autocog.lm.scoring import DEFAULT_BATCH_SIZE

logger = logging.getLogger(__name__)

GROUPS_PER_BATCH = 4  # contexts scored per batch-API call, in units of batch_size

__all__ = ["AutocogLM", "parse_model_args"]


def parse_model_args(text: Optional[str]) -> dict[str, Any]:
    """``"k1=v1,k2=v2"`` -> ``{"k1": v1, ...}`` with lm-eval's value casting (ints, floats, booleans, None).

    >>> parse_model_args("backend=llama,n_ctx=512")
    {'backend': 'llama', 'n_ctx': 512}
    """
    out: dict[str, Any] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key or not value.strip():
            raise ValueError(f"model_args: expected KEY=VALUE pairs separated by commas, got {part!r} in {text!r}")
        if key in out:
            raise ValueError(f"model_args: {key!r} is given twice")
        out[key] = handle_arg_string(value)
    return out


@register_model("autocog")
class AutocogLM(HarnessLM):
    """An lm-eval model over any autocog backend (see the module docstring); ``lm=`` wraps an `LM` you hold.

    >>> AutocogLM(backend="llama", n_ctx=1024)                 # doctest: +SKIP
    """

    def __init__(
        self,
        backend: str = "tf",
        model: Optional[str] = None,
        batch_size: Any = DEFAULT_BATCH_SIZE,
        max_length: Optional[int] = None,
        max_gen_toks: int = 256,
        lm: Optional[LM] = None,
        pretrained: Optional[str] = None,
        **backend_kwargs: Any,
    ):
        super().__init__()
        BACKENDS.backend(backend)  # an UnknownBackendError (a ValueError) names the known ones
        if pretrained is not None:
            if model is not None:
                raise ValueError("model_args: give model= or its alias pretrained=, not both")
            model = pretrained
        if model is not None and not isinstance(model, str):
            model = str(model)
        self.batch_size = _batch_size(batch_size)
        self.max_gen_toks = _positive_int("max_gen_toks", max_gen_toks)
        self._max_length = None if max_length is None else _positive_int("max_length", max_length)
        self.ranks = DataParallel.from_env()  # one process unless a launcher set RANK / WORLD_SIZE
        self._rank, self._world_size = self.ranks.rank, self.ranks.world_size
        if lm is None:
            _check_backend_keys(backend, backend_kwargs)
            if "device" in backend_kwargs:
                backend_kwargs["device"] = self.ranks.device_for(backend_kwargs["device"])
            lm = load(backend, model=model, **backend_kwargs)
        elif backend_kwargs:
            raise TypeError(f"with lm= the backend keywords are not used: {', '.join(backend_kwargs)}")
        self.lm = lm
        self.backend, self.model_name = backend, model
        self._device = getattr(lm, "device", None) or "cpu"  # where lm-eval builds the tensor it all_gathers

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: Optional[dict] = None) -> AutocogLM:
        """lm-eval's entry point: ``model_args`` plus its own ``batch_size`` / ``device`` settings."""
        return cls.create_from_arg_obj(parse_model_args(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: Optional[dict] = None) -> AutocogLM:
        args = dict(arg_dict)
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
        if "batch_size" in extra:
            args.setdefault("batch_size", extra["batch_size"])
        if "device" in extra and "device" in backend_keywords(args.get("backend", "tf")):  # lm-eval's --device
            args.setdefault("device", extra["device"])
        return cls(**args)

    # --- lm-eval's model interface ---------------------------------------------------------------
    @property
    def max_length(self) -> int:
        return self._max_length or self.lm.n_ctx or 2048

    @property
    def tokenizer_name(self) -> str:
        return f"autocog-{self.backend}-{self.model_name or 'default'}"

    def all_gather(self, tensor):
        return self.ranks.all_gather(tensor)

    def gather_object(self, obj, dst=0):
        return self.ranks.gather_object(obj, dst=dst)

    def barrier(self) -> None:
        self.ranks.barrier()

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        if not hasattr(self.lm, "apply_chat_template"):
            raise NotImplementedError(f"{type(self.lm).__name__} has no chat template support")
        return self.lm.apply_chat_template(chat_history, add_generation_prompt=add_generation_prompt)

    def loglikelihood(self, requests: list, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """One ``(logprob, is_greedy)`` per request; requests sharing a context are scored as one choice set."""
        pairs = [tuple(req.args) for req in requests]
        groups: dict[str, list[str]] = {}
        for context, continuation in pairs:
            if not isinstance(context, str) or not isinstance(continuation, str):
                raise TypeError(f"loglikelihood requests are (str, str) pairs, got {(context, continuation)!r}")
            conts = groups.setdefault(context, [])
            if continuation and continuation not in conts:
                conts.append(continuation)
        answers: dict[tuple[str, str], tuple[float, bool]] = {}
        scored = [(context, conts) for context, conts in groups.items() if conts]
        bar = tqdm(total=len(scored), desc="autocog loglikelihood", disable=disable_tqdm)
        chunk = self.batch_size * GROUPS_PER_BATCH
        for start in range(0, len(scored), chunk):  # memory stays flat: trees live for one chunk
            part = scored[start : start + chunk]
            results = choice_distributions(
                self.lm,
                [c for c, _ in part],
                [conts for _, conts in part],
                normalization="sum",
                batch_size=self.batch_size,
                progress=False,
            )
            for (context, conts), result in zip(part, results):
                flags = result.is_greedy  # from the rows the tree pass computed anyway
                if flags is None:
                    flags = self._greedy_flags_by_text(context, conts)
                for continuation, logprob, flag in zip(conts, choice_scores(result, "sum"), flags):
                    answers[(context, continuation)] = (float(logprob), bool(flag))
                bar.update(1)
        bar.close()
        out = []
        for pair in pairs:
            answer = answers.get(pair, (0.0, True))  # an empty continuation: log P = 0, trivially greedy
            self.cache_hook.add_partial("loglikelihood", pair, answer)
            out.append(answer)
        return out

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list[float]:
        """The log-likelihood of each text (one per request), windowed to `max_length` tokens."""
        out = []
        for req in tqdm(requests, desc="autocog loglikelihood_rolling", disable=disable_tqdm):
            (text,) = req.args
            total = self._rolling(text)
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
            out.append(total)
        return out

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        """Greedy (or sampled) completions cut at the first ``until`` string."""
        out = []
        for req in tqdm(requests, desc="autocog generate_until", disable=disable_tqdm):
            context, gen_kwargs = req.args
            until, settings = self._generation_settings(gen_kwargs)
            text = self.lm.complete(context, stop=until or None, **settings)
            for term in until:
                text = text.split(term)[0]
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
            out.append(text)
        return out

    # --- helpers ---------------------------------------------------------------------------------
    def _greedy_flags_by_text(self, context: str, conts: Sequence[str]) -> list[bool]:
        """is_greedy where the scoring pass gave no rows (`ChoiceResult.is_greedy` None: servers, or a backend whose
        own `evaluate_tree` does not call `TokenChoiceTree.record_argmax`): decode greedily, compare tokens."""
        stripped = context.rstrip()
        token_lists = [self.lm.tokenize(context[len(stripped) :] + c) for c in conts]
        text = self.lm.complete(stripped, stop=None, max_tokens=max(map(len, token_lists)), temperature=0.0)
        decoded = self.lm.tokenize(text)  # compared as tokens: " Par" is not the greedy " Paris"
        return [decoded[: len(tokens)] == tokens for tokens in token_lists]

    def _rolling(self, text: str) -> float:
        if not text:
            return 0.0
        if not hasattr(self.lm, "evaluate_tree") or not hasattr(self.lm, "unconditional_tokens"):
            raise NotImplementedError(
                f"loglikelihood_rolling needs token-level log-probs after BOS/EOS, which "
                f"{type(self.lm).__name__} does not give: use the tf or llama backend"
            )
        lm: Any = self.lm  # a token backend, checked above by its methods (ChoiceLM's, or its own)
        tokens = lm.tokenize(text)
        prefix = int(lm.unconditional_tokens()[0])
        total = 0.0
        for context, predicted in map(
            make_disjoint_window, get_rolling_token_windows(tokens, prefix, self.max_length, context_len=1)
        ):
            tree = TokenChoiceTree([predicted])
            total += math.fsum(lm.with_retry(lm.evaluate_tree, list(context), tree))
        return total

    def _generation_settings(self, gen_kwargs: Any) -> tuple[list[str], dict]:
        kwargs = dict(gen_kwargs or {})
        until = kwargs.pop("until", None)
        until = [until] if isinstance(until, str) else list(until or [])
        if any(not isinstance(u, str) for u in until):
            raise ValueError(f"generate_until: 'until' must be strings, got {until!r}")
        until = [u for u in until if u]
        settings: dict[str, Any] = {
            "max_tokens": _positive_int("max_gen_toks", kwargs.pop("max_gen_toks", self.max_gen_toks))
        }
        do_sample = bool(kwargs.pop("do_sample", False))
        temperature = float(kwargs.pop("temperature", 0.0) or 0.0)
        settings["temperature"] = temperature if do_sample else 0.0
        for key in ("top_p", "top_k", "seed"):
            if kwargs.get(key) is not None:
                settings[key] = kwargs.pop(key)
        if kwargs:
            logger.warning("autocog generate_until ignores the generation settings %s", sorted(kwargs))
        return until, settings


def _check_backend_keys(backend: str, kwargs: dict) -> None:
    """transformers' ``from_pretrained`` and ``llama_cpp.Llama`` swallow unknown keywords silently: name them."""
    try:
        check_keywords(backend, kwargs)
    except TypeError as error:
        raise TypeError(f"model_args: {error}") from None


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"model_args: {name} must be a positive integer, got {value!r}")
    return value


def _batch_size(value: Any) -> int:
    """lm-eval passes ``batch_size`` as an int, a digit string or ``auto`` / ``auto:N`` (-> our default)."""
    if isinstance(value, str):
        if value.startswith("auto"):
            return DEFAULT_BATCH_SIZE
        if value.strip().isdigit():
            value = int(value)
    return _positive_int("batch_size", value)
