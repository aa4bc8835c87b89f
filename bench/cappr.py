"""The CAPPr drop-in against CAPPr 0.9.6 itself, on SmolLM2-135M-Instruct, one thread.

transformers: ``autocog.cappr.huggingface.classify.predict_proba`` against ``cappr.huggingface.classify.predict_proba``
(CAPPr's cached path: each prompt's KV cached, its completions batched over it), both with their defaults
(``batch_size=2``), on the transformers checkpoint of the embedded SmolLM2 (`autocog.lm.assets.smollm2_transformers`).
llama.cpp: ``autocog.cappr.llama_cpp.classify.predict_proba`` against ``cappr.llama_cpp.classify.predict_proba``
on the embedded Q4_1 GGUF (``n_threads=1, n_threads_batch=1``: llama-cpp-python's ``n_threads_batch``
defaults to every core, and both libraries decode in batches), without and with flash attention (llama.cpp's
non-flash attention gives other log-probs for other decode shapes on this model; flash attention does not).
20 prompts x 8 and x 32 completions; each call timed once, in CPU time of the process and in wall-clock time
(the machine may be shared: the ratios come from one run, the calls interleaved), after one warm-up call
each. CAPPr runs under tests/support/cappr_shim.py (transformers 5, numpy 2).

    .venv/bin/python bench/cappr.py                  # both backends
    .venv/bin/python bench/cappr.py --backend llama --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# this file is named cappr.py: its folder must not shadow the cappr package it measures against
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "support"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import cappr_shim  # noqa: E402
import numpy as np  # noqa: E402

cappr_shim.apply()

QUESTIONS = [
    "What is the capital of France?",
    "What color is the sky on a clear day?",
    "Which animal says moo?",
    "What do bees make?",
    "What is frozen water called?",
    "How many legs does a spider have?",
    "What is the largest planet?",
    "Which season comes after winter?",
    "What do you use to write on a blackboard?",
    "Where do fish live?",
    "What is the opposite of hot?",
    "Which fruit is yellow and long?",
    "What gas do plants take in?",
    "What is two plus three?",
    "Who wrote Romeo and Juliet?",
    "What is the capital of Japan?",
    "Which instrument has black and white keys?",
    "What do cows drink?",
    "Which metal is liquid at room temperature?",
    "What is the tallest animal?",
]
WORDS = [
    "Paris",
    "London",
    "Berlin",
    "blue",
    "green",
    "red",
    "cow",
    "dog",
    "cat",
    "honey",
    "milk",
    "silk",
    "ice",
    "steam",
    "sand",
    "eight",
    "six",
    "four",
    "Jupiter",
    "Mars",
    "spring",
    "summer",
    "autumn",
    "chalk",
    "pen",
    "water",
    "air",
    "cold",
    "warm",
    "banana",
    "apple",
    "carbon",
    "dioxide",
    "oxygen",
    "five",
    "seven",
    "Shakespeare",
    "Dickens",
    "Tokyo",
    "Madrid",
    "piano",
    "guitar",
    "mercury",
    "iron",
    "giraffe",
    "elephant",
]


def completions(n: int) -> list[str]:
    """``n`` distinct completions of one to three words (several tokens each, shared first tokens)."""
    out, k = [], 0
    while len(out) < n:
        words = WORDS[k % len(WORDS) : k % len(WORDS) + 1 + k % 3]
        text = " ".join(words) if k < len(WORDS) else f"the {' '.join(words)}"
        if text not in out:
            out.append(text)
        k += 1
    return out


def timed(fn):
    """(value, CPU seconds of this process, wall seconds): one thread each, so CPU time is the cost whatever
    else runs on the machine; wall time is what a user waits."""
    cpu, wall = time.process_time(), time.perf_counter()
    value = fn()
    return value, time.process_time() - cpu, time.perf_counter() - wall


def run_pair(name, ours, theirs, prompts, sizes) -> list[dict]:
    """Warm up both, then per size: ours, CAPPr, in that order; one timing each."""
    ours(prompts[:2], completions(2))
    theirs(prompts[:2], completions(2))
    rows = []
    for n in sizes:
        choices = completions(n)
        p_ours, t_ours, w_ours = timed(lambda: ours(prompts, choices))
        p_cappr, t_cappr, w_cappr = timed(lambda: theirs(prompts, choices))
        row = {
            "backend": name,
            "prompts": len(prompts),
            "completions": n,
            "cappr_cpu_s": round(t_cappr, 3),
            "autocog_cpu_s": round(t_ours, 3),
            "speedup": round(t_cappr / t_ours, 2),
            "cappr_wall_s": round(w_cappr, 3),
            "autocog_wall_s": round(w_ours, 3),
            "wall_speedup": round(w_cappr / w_ours, 2),
            "max_abs_diff": float(np.abs(p_ours - p_cappr).max()),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def bench_tf(sizes) -> list[dict]:
    import torch
    import transformers
    from cappr.huggingface import classify as cappr_classify

    from autocog.cappr.huggingface import classify as ours
    from autocog.lm.assets import smollm2_transformers

    torch.set_num_threads(1)
    path = smollm2_transformers()
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    before = tokenizer("a b")["input_ids"]
    pair = (model, tokenizer)
    prompts = [f"Question: {q}\nAnswer:" for q in QUESTIONS]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # CAPPr's past_key_values, deprecated in transformers 5
        rows = run_pair(
            "transformers",
            lambda p, c: ours.predict_proba(p, c, pair, show_progress_bar=False),
            lambda p, c: cappr_classify.predict_proba(p, c, pair, show_progress_bar=False),
            prompts,
            sizes,
        )
    assert tokenizer("a b")["input_ids"] == before, "CAPPr changed the tokenizer: the comparison is void"
    return rows


def bench_llama(sizes, flash_attn: bool = False) -> list[dict]:
    import llama_cpp
    from cappr.llama_cpp import classify as cappr_classify

    from autocog.cappr.llama_cpp import classify as ours
    from autocog.lm.assets import smollm2_gguf

    model = llama_cpp.Llama(
        str(smollm2_gguf()),
        n_ctx=1024,
        n_threads=1,
        n_threads_batch=1,
        logits_all=True,
        flash_attn=flash_attn,
        verbose=False,
    )
    prompts = [f"Question: {q}\nAnswer:" for q in QUESTIONS]
    return run_pair(
        "llama.cpp fa" if flash_attn else "llama.cpp",
        lambda p, c: ours.predict_proba(p, c, model, show_progress_bar=False),
        lambda p, c: cappr_classify.predict_proba(p, c, model, show_progress_bar=False),
        prompts,
        sizes,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["tf", "llama", "both"], default="both")
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument(
        "--flash-attn",
        choices=["off", "on", "both"],
        default="both",
        help="llama.cpp without / with flash attention (decode-shape invariant, docs/scoring.md)",
    )
    args = parser.parse_args()
    rows = []
    if args.backend in ("tf", "both"):
        rows += bench_tf(args.sizes)
    if args.backend in ("llama", "both"):
        for flash_attn in {"off": [False], "on": [True], "both": [False, True]}[args.flash_attn]:
            rows += bench_llama(args.sizes, flash_attn)
    print(
        f"{'backend':<13} {'completions':>11} {'CAPPr cpu s':>11} {'autocog cpu s':>13} {'speedup':>8} "
        f"{'CAPPr wall s':>12} {'autocog wall s':>14} {'speedup':>8} {'max |dp|':>9}"
    )
    for r in rows:
        print(
            f"{r['backend']:<13} {r['completions']:>11} {r['cappr_cpu_s']:>11.2f} {r['autocog_cpu_s']:>13.2f} "
            f"{r['speedup']:>7.2f}x {r['cappr_wall_s']:>12.2f} {r['autocog_wall_s']:>14.2f} "
            f"{r['wall_speedup']:>7.2f}x {r['max_abs_diff']:>9.1e}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
