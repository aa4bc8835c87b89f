"""`ChoicePipeline`: a transformers pipeline (task ``"choice-classification"``) that picks among continuations of a
prompt by their probability under a causal LM, on `TfLM`'s scoring path (one pass over the shared-KV choice trie).

Importing this module registers the task with transformers' ``PIPELINE_REGISTRY`` (`register_pipeline` does it
again, under another name if wanted); ``import autocog`` does not import it.

>>> import autocog.lm.tf.pipeline                                           # doctest: +SKIP
>>> pipe = transformers.pipeline("choice-classification", model=path)      # doctest: +SKIP
>>> pipe("The capital of France is", choices=[" Paris", " London"])        # doctest: +SKIP
{'sequence': 'The capital of France is', 'labels': [' Paris', ' London'], 'scores': [0.97, 0.03]}

Inputs: a prompt (a str or a list of chat messages), a ``{"prompt": ..., "choices": [...]}`` dict (its own
choices), a list of them (a list of results back) or any other iterable (a lazy iterator back, as transformers
does for generators and datasets). ``choices`` (alias ``candidate_labels``, the zero-shot pipeline's name) is one
list for every prompt or, with a list of prompts, one list per prompt. Output per prompt, like
``ZeroShotClassificationPipeline``'s: ``{"sequence": prompt, "labels": choices best first, "scores": their
probabilities}``, ``top_k`` (like ``TextClassificationPipeline``'s) keeping the first k.

Batching: ``batch_size`` prompts make ONE scoring batch (`TfLM.score_batch`: one ``evaluate_trees`` call, packed
passes over many tries), not transformers' per-item preprocess/forward with a padding collate, which would score
each prompt's trie on its own. Every prompt of a list is checked before the first batch runs.
"""

from __future__ import annotations

from itertools import islice
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

from transformers import AutoModelForCausalLM, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from autocog.core.chat import is_messages
from autocog.core.checks import check_choices
from autocog.core.normalization import check_normalization
from autocog.core.types import ChoiceResult, ScoreRequest
from autocog.errors import InvalidChoicesError, InvalidPromptError
from autocog.lm.scoring import check_request, score
from autocog.lm.tf.model import TfLM

PIPELINE_TASK = "choice-classification"

__all__ = ["PIPELINE_TASK", "ChoicePipeline", "register_pipeline"]


class ChoicePipeline(Pipeline):
    """Choice classification on a causal LM: ``pipe(prompts, choices=[...], normalization=..., end=..., prior=...,
    top_k=..., batch_size=..., max_batch_tokens=...)``; see the module docstring for inputs and outputs.

    ``lm`` is the `TfLM` over the pipeline's own model and tokenizer (no reload, on the pipeline's ``device``):
    the numbers are `TfLM.choice_distribution`'s. ``normalization`` defaults to the model's (``"sum"``); every
    call parameter may also be given to ``transformers.pipeline(...)`` as the pipeline's default.
    """

    _load_tokenizer = True  # type: ignore[assignment]  # transformers declares None (optional)
    _load_processor = False  # type: ignore[assignment]
    _load_image_processor = False  # type: ignore[assignment]
    _load_feature_extractor = False  # type: ignore[assignment]
    _load_video_processor = False  # type: ignore[assignment]

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.tokenizer is None:
            raise TypeError("ChoicePipeline needs a tokenizer: pass tokenizer= to transformers.pipeline")
        self.lm = TfLM(self.model, self.tokenizer)  # the model is already on self.device

    def save_pretrained(self, save_directory: Any, **kwargs: Any) -> None:
        """The model and the tokenizer only. transformers' own would also copy this module into the directory and
        name it in the config's ``custom_pipelines``, after which loading the directory back under the task asks
        for ``trust_remote_code``; the task comes from importing this module instead."""
        self.model.save_pretrained(save_directory, **kwargs)
        self.lm.tokenizer.save_pretrained(save_directory, **kwargs)

    def _sanitize_parameters(  # type: ignore[override]
        self,
        choices: Any = None,
        candidate_labels: Any = None,
        normalization: Optional[str] = None,
        end: Optional[str] = None,
        prior: Any = None,
        top_k: Optional[int] = None,
        max_batch_tokens: Optional[int] = None,
    ) -> tuple[dict, dict, dict]:
        """Split the call parameters among preprocess / forward / postprocess (only those given, so that a call's
        parameters override the pipeline's defaults), checking those that can be checked alone."""
        if choices is not None and candidate_labels is not None:
            raise InvalidChoicesError("pass choices= or candidate_labels= (its alias), not both")
        choices = candidate_labels if choices is None else choices
        preprocess: dict[str, Any] = {}
        if choices is not None:
            preprocess["choices"] = choices if is_per_prompt(choices) else check_choices(choices)
        if normalization is not None:
            preprocess["normalization"] = check_normalization(normalization)
        if end is not None:
            preprocess["end"] = end
        if prior is not None:
            preprocess["prior"] = prior
        forward = {} if max_batch_tokens is None else {"max_batch_tokens": max_batch_tokens}
        postprocess: dict[str, Any] = {}
        if top_k is not None:
            if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
                raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
            postprocess["top_k"] = top_k
        return preprocess, forward, postprocess

    def __call__(self, inputs: Any, *args: Any, batch_size: Optional[int] = None, **kwargs: Any) -> Any:
        """One result dict for a single prompt, a list for a list (or tuple), a lazy iterator for any other
        iterable. ``batch_size`` (default: the pipeline's, else 1 as in transformers): prompts per scoring batch."""
        if args:
            raise TypeError(f"ChoicePipeline takes the prompts as its one positional argument, got {len(args) + 1}")
        kwargs.pop("num_workers", None)  # transformers' DataLoader workers: no DataLoader here
        size = batch_size if batch_size is not None else (self._batch_size or 1)
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"batch_size must be a positive int, got {size!r}")
        preprocess, forward, postprocess = self._sanitize_parameters(**kwargs)
        preprocess = {**self._preprocess_params, **preprocess}
        forward = {**self._forward_params, **forward}
        postprocess = {**self._postprocess_params, **postprocess}
        self.call_count += 1
        if is_single(inputs):
            if is_per_prompt(preprocess.get("choices")):
                raise InvalidChoicesError("one list of choices per prompt needs a list of prompts")
            return next(self.results([self.preprocess(inputs, **preprocess)], 1, forward, postprocess))
        if isinstance(inputs, (list, tuple)):
            prepared = list(self.prepare(inputs, preprocess, n_items=len(inputs)))  # all checked before the model
            return list(self.results(prepared, size, forward, postprocess))
        try:
            items = iter(inputs)  # also a torch Dataset (KeyDataset), iterable through __getitem__
        except TypeError:
            raise InvalidPromptError(
                f"expected a prompt, a list of prompts or an iterable, not {type(inputs).__name__}"
            ) from None
        return self.results(self.prepare(items, preprocess), size, forward, postprocess)

    def prepare(self, items: Iterable[Any], params: dict, n_items: Optional[int] = None) -> Iterator[dict]:
        """`preprocess` on each item, with its own list of choices when ``params["choices"]`` holds one per prompt
        (``n_items``: the number of prompts, when known, to check their count first)."""
        choices: Any = params.get("choices")
        if not is_per_prompt(choices):
            yield from (self.preprocess(item, **params) for item in items)
            return
        if n_items is not None and len(choices) != n_items:
            raise InvalidChoicesError(f"{len(choices)} lists of choices for {n_items} prompts")
        lists = iter(choices)
        for i, item in enumerate(items):
            own = next(lists, None)
            if own is None:
                raise InvalidChoicesError(f"{len(choices)} lists of choices for more prompts (prompt {i} has none)")
            yield self.preprocess(item, **{**params, "choices": own})

    def preprocess(  # type: ignore[override]
        self,
        item: Any,
        choices: Optional[Sequence[str]] = None,
        normalization: Optional[str] = None,
        end: Optional[str] = None,
        prior: Any = None,
    ) -> dict:
        """``{"sequence": the prompt as given, "request": its checked `ScoreRequest`}``; a dict item carries its own
        ``"prompt"`` and optionally ``"choices"``. No model call."""
        prompt = item
        if isinstance(item, Mapping):
            if "prompt" not in item:
                raise InvalidPromptError(f"a dict input needs a 'prompt' key, got keys {sorted(item)}")
            prompt, choices = item["prompt"], item.get("choices", choices)
        if choices is None:
            raise InvalidChoicesError("no choices to score: pass choices=[...] (or a 'choices' key in a dict input)")
        request = ScoreRequest(prompt, check_choices(choices), normalization, end, prior)
        check_request(self.lm, request)  # fails here, before any batch runs, naming the cause
        return {"sequence": prompt, "request": request}

    def results(self, prepared: Iterable[dict], batch_size: int, forward: dict, postprocess: dict) -> Iterator[dict]:
        """``batch_size`` prepared items per `forward` (one scoring batch), then `postprocess` on each."""
        items = iter(prepared)
        while batch := list(islice(items, batch_size)):
            for output in self.forward(batch, **forward):
                yield self.postprocess(output, **postprocess)

    def _forward(self, batch: list[dict], max_batch_tokens: Optional[int] = None) -> list[dict]:  # type: ignore[override]
        """The batch's requests as ONE scoring batch (`autocog.lm.scoring.score` with ``batch_size`` the batch's
        size: one `TfLM.score_batch` call): ``[{"sequence", "result": ChoiceResult}]``."""
        requests = [item["request"] for item in batch]
        results = score(self.lm, requests, batch_size=len(requests), progress=False, max_batch_tokens=max_batch_tokens)
        return [{"sequence": item["sequence"], "result": result} for item, result in zip(batch, results)]

    def postprocess(self, output: dict, top_k: Optional[int] = None) -> dict:  # type: ignore[override]
        """``{"sequence", "labels", "scores"}``: the choices by decreasing probability (ties in the given order)."""
        result: ChoiceResult = output["result"]
        probs = [float(p) for p in result.probs]
        order = sorted(range(len(probs)), key=lambda j: -probs[j])[:top_k]
        return {
            "sequence": output["sequence"],
            "labels": [result.choices[j] for j in order],
            "scores": [probs[j] for j in order],
        }


def is_single(inputs: Any) -> bool:
    """One prompt: a str, a list of chat messages or a ``{"prompt": ...}`` dict (a list of those is many)."""
    if isinstance(inputs, (str, Mapping)):
        return True
    return is_messages(inputs) and "prompt" not in inputs[0]


def is_per_prompt(choices: Any) -> bool:
    """``choices`` holds one list per prompt (a list whose first item is itself a list or tuple)."""
    return isinstance(choices, (list, tuple)) and bool(choices) and isinstance(choices[0], (list, tuple))


def register_pipeline(task: str = PIPELINE_TASK) -> str:
    """Register `ChoicePipeline` with transformers' ``PIPELINE_REGISTRY`` under ``task`` (for causal LMs), so that
    ``transformers.pipeline(task, model=...)`` builds one; done on import for `PIPELINE_TASK`. Returns ``task``."""
    if PIPELINE_REGISTRY.supported_tasks.get(task, {}).get("impl") is not ChoicePipeline:
        PIPELINE_REGISTRY.register_pipeline(
            task, pipeline_class=ChoicePipeline, pt_model=AutoModelForCausalLM, type="text"
        )
    return task


register_pipeline()
