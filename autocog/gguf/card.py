"""A model card for a folder of GGUF quantizations (``autocog card``), and its upload to the Hugging Face hub.

The card is a ``README.md`` built with ``huggingface_hub.ModelCard`` / ``ModelCardData`` / ``EvalResult``:
the YAML block the hub reads (``base_model``, ``base_model_relation: quantized``, ``quantized_by``,
``license``, ``tags`` (``gguf``, ``llama.cpp``, ``quantized``, ``autocog``), ``library_name: gguf`` and the
evaluation in ``model-index`` form: one ``EvalResult`` per model and normalization, metric ``accuracy``,
``metric_config`` naming the file and the normalization), then the method (conversion, quantizer, types),
the files with their sizes, the comparison table (`autocog.eval.compare.Comparison.to_markdown`), the plot,
and how to run the files.

`validate_card` checks the metadata locally (the hub's own validation endpoint needs the network): it
parses back, names a known license, a ``base_model`` of the form ``owner/name``, and a ``model-index``
that ``huggingface_hub`` turns back into the same results.

>>> card = write_card("out/", comparison, base_model="HuggingFaceTB/SmolLM2-135M-Instruct")   # doctest: +SKIP
>>> push("out/", "me/SmolLM2-135M-Instruct-GGUF")                                            # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Optional, Sequence, Union

from autocog.errors import AutoCogError
from autocog.eval.compare import Comparison

LICENSES = (
    "apache-2.0",
    "mit",
    "llama2",
    "llama3",
    "llama3.1",
    "llama3.2",
    "llama3.3",
    "gemma",
    "cc-by-4.0",
    "cc-by-sa-4.0",
    "cc-by-nc-4.0",
    "bsd-3-clause",
    "openrail",
    "other",
)
DATASET_TYPE = "autocog/easy_mc"

__all__ = ["PushError", "model_card", "push", "validate_card", "write_card"]


class PushError(AutoCogError, RuntimeError):
    """The upload to the hub cannot happen (no token, offline, network or permission failure)."""


def _hub():
    try:
        import huggingface_hub
    except ImportError:
        raise ImportError("model cards need huggingface_hub: pip install autocog[hub]") from None
    return huggingface_hub


def eval_results(comparison: Comparison) -> list:
    """One ``EvalResult`` per (model, normalization) of ``comparison``."""
    hub = _hub()
    out = []
    for row in comparison.rows:
        for norm in comparison.normalizations:
            acc = row.accuracy[norm]
            out.append(
                hub.EvalResult(
                    task_type="multiple-choice",
                    task_name="Multiple choice",
                    dataset_type=DATASET_TYPE,
                    dataset_name=comparison.dataset or "easy_mc",
                    dataset_split="test",
                    metric_type="accuracy",
                    metric_value=round(float(acc["accuracy"]), 4),
                    metric_name=f"accuracy ({norm}) {row.label}",
                    metric_config=f"{Path(row.path).name if row.path else row.label}/{norm}",
                )
            )
    return out


def _files_table(folder: Optional[Path]) -> str:
    files = sorted(folder.glob("*.gguf")) if folder else []
    if not files:
        return ""
    lines = ["| file | size |", "|---|---:|"]
    lines += [f"| `{f.name}` | {f.stat().st_size / 1e6:.1f} MB |" for f in files]
    return "\n".join(lines)


def model_card(
    comparison: Comparison,
    base_model: str,
    model_name: Optional[str] = None,
    quantized_by: str = "autocog",
    license: str = "apache-2.0",
    plot: Optional[str] = None,
    method: Optional[str] = None,
    folder: Union[str, Path, None] = None,
    tags: Sequence[str] = (),
):
    """A ``huggingface_hub.ModelCard`` for the quantizations compared in ``comparison`` (see module doc).

    ``base_model``: the hub id the files derive from; ``model_name``: the ``model-index`` name (default
    ``<base name>-GGUF``); ``plot``: the comparison plot's file name, relative to the card; ``method``:
    text on how the files were made (default: autocog's convert + llama.cpp quantizer); ``folder``: where
    the GGUF files are (listed with their sizes).
    """
    hub = _hub()
    name = model_name or f"{base_model.split('/')[-1]}-GGUF"
    data = hub.ModelCardData(
        base_model=base_model,
        base_model_relation="quantized",
        quantized_by=quantized_by,
        license=license,
        library_name="gguf",
        tags=list(dict.fromkeys(["gguf", "llama.cpp", "quantized", "autocog", *tags])),
        model_name=name,
        eval_results=eval_results(comparison),
    )
    method = method or (
        "Converted from the transformers checkpoint with `autocog convert` (the `gguf` package; q/k rope "
        "permutation as in llama.cpp's `convert_hf_to_gguf.py`), then quantized with llama.cpp's own quantizer "
        "(`llama_model_quantize`, the code of `llama-quantize`) through llama-cpp-python: `autocog quantize`. "
        "No importance matrix."
    )
    reference = comparison.rows[0].label if comparison.rows else "the first model"
    sections = [
        "---",
        data.to_yaml(),
        "---",
        "",
        f"# {name}",
        "",
        f"GGUF files of [{base_model}](https://huggingface.co/{base_model}) for llama.cpp.",
        "",
        "## Quantization method",
        "",
        method,
        "",
    ]
    files = _files_table(Path(folder) if folder else None)
    if files:
        sections += ["## Files", "", files, ""]
    sections += [
        "## Evaluation",
        "",
        f"Every model scored the same {comparison.n_items} questions of `{comparison.dataset}` through "
        f"`autocog eval` (the batch scoring API). Accuracy under each normalization with its "
        f"{comparison.confidence:.0%} Wilson interval; `|Δ logp|`: mean absolute difference of "
        f"log P(choice | prompt) against {reference}; `KL`: mean KL divergence (nats) of the choice "
        f"distribution ({comparison.normalizations[0]}) from {reference}'s; `agree`: the fraction of questions "
        "answered like the reference.",
        "",
        comparison.to_markdown(),
        "",
    ]
    if plot:
        sections += [f"![comparison]({plot})", ""]
    sections += [
        "## Usage",
        "",
        "```bash",
        "llama-cli -m FILE.gguf -p 'Hello'",
        "```",
        "",
        "```python",
        "from autocog.lm import LLaMa",
        "lm = LLaMa(**LLaMa.create(model_path='FILE.gguf'))",
        "lm.choose('Question: What is the capital of France?\\nAnswer:', [' Paris', ' London'])",
        "```",
        "",
    ]
    return hub.ModelCard("\n".join(sections))


def write_card(
    folder: Union[str, Path],
    comparison: Union[Comparison, dict],
    base_model: str,
    plot: Union[str, Path, None] = None,
    **kwargs,
) -> Path:
    """Write ``folder/README.md`` (the card of `model_card`); ``plot`` is copied into ``folder`` when it lies
    elsewhere. ``comparison`` may be a `Comparison` or its ``to_dict()``. Returns the README's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(comparison, dict):
        comparison = Comparison.from_dict(comparison)
    plot_name = None
    if plot is not None:
        plot = Path(plot)
        if not plot.is_file():
            raise FileNotFoundError(f"plot not found: {plot}")
        if plot.resolve().parent != folder.resolve():
            shutil.copy(plot, folder / plot.name)
        plot_name = plot.name
    card = model_card(comparison, base_model, plot=plot_name, folder=folder, **kwargs)
    validate_card(card)
    path = folder / "README.md"
    card.save(path)
    return path


def validate_card(card) -> None:
    """A ValueError unless the card's metadata parses back and holds what the hub expects (see module doc)."""
    hub = _hub()
    card = hub.ModelCard(str(card))  # parse back from the text, as the hub does
    data = card.data.to_dict()
    problems = []
    if data.get("license") not in LICENSES:
        problems.append(f"license {data.get('license')!r} is not one of {', '.join(LICENSES)}")
    bases = data.get("base_model")
    for base in [bases] if isinstance(bases, str) else bases or [None]:
        if not isinstance(base, str) or not re.fullmatch(r"[\w.-]+/[\w.-]+", base):
            problems.append(f"base_model {base!r} is not a hub id (owner/name)")
    if not isinstance(data.get("tags"), list) or not all(isinstance(t, str) for t in data["tags"]):
        problems.append("tags must be a list of strings")
    if "model-index" not in data:
        problems.append("no model-index (evaluation results)")
    else:
        try:
            _, results = hub.repocard_data.model_index_to_eval_results(data["model-index"])
        except (KeyError, TypeError, ValueError) as error:
            problems.append(f"model-index does not parse: {error}")
        else:
            if not results or any(r.metric_value is None for r in results):
                problems.append("model-index holds no metric values")
    if problems:
        raise ValueError("invalid model card metadata: " + "; ".join(problems))


def push(folder: Union[str, Path], repo_id: str, token: Optional[str] = None, private: bool = False) -> str:
    """Upload ``folder`` (card, plot, GGUF files) to the hub model repository ``repo_id`` (created if
    missing). Returns the commit URL. A `PushError` when there is no token (``token``, ``$HF_TOKEN`` or
    ``huggingface-cli login``), when ``HF_HUB_OFFLINE`` is set, or when the hub cannot be reached."""
    hub = _hub()
    folder = Path(folder)
    if not (folder / "README.md").is_file():
        raise FileNotFoundError(f"{folder} has no README.md: write the card first (autocog card)")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
        raise ValueError(f"repo id {repo_id!r} is not of the form owner/name")
    token = token or hub.get_token()
    if not token:
        raise PushError("no Hugging Face token: pass --token, set HF_TOKEN, or run `huggingface-cli login`")
    if hub.constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        raise PushError("HF_HUB_OFFLINE is set: cannot upload to the hub (unset it to push)")
    api = hub.HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="model",
            commit_message="Upload GGUF files and model card (autocog)",
        )
    except Exception as error:
        raise PushError(f"upload to {repo_id} failed: {type(error).__name__}: {error}") from error
    return str(getattr(info, "commit_url", info))
