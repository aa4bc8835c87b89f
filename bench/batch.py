"""Benchmark the batch API (`autocog.batch.predict_proba`) against CAPPr-style and per-choice scoring.

Methods, all computing the same log-probs (the bench checks they agree):
  batch      autocog.batch.predict_proba: batch_size prompts packed into one forward pass over the token
             trie of every prompt + choice (prompt KV shared by its choices, shared prefixes evaluated once)
  perprompt  CAPPr-style: for each prompt, one pass over the prompt (KV cached), then its choices right-padded
             into one batch over the prompt's cache expanded to the number of choices
  perchoice  one full forward pass over prompt + choice, for every prompt and choice
Throughput is prompts x choices per second at 100 prompts x 4 and x 32 choices (each choice 1-4 words).
Memory: the peak RSS of predict_proba (measured in a fresh process per size, above the RSS after loading
the model) and tracemalloc's peak of Python allocations, as the number of prompts grows. glibc's dynamic
mmap threshold lets freed large tensors fragment the heap, so RSS can creep over the first batches; set
MALLOC_MMAP_THRESHOLD_=1048576 to see the memory the batches actually hold.

    .venv/bin/python bench/batch.py                      # tiny model, 1 thread
    .venv/bin/python bench/batch.py --model smollm2 --prompts 20
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import resource
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = ("the quick brown fox jumps over lazy dog capital France Paris Berlin Germany answer yes no maybe "
         "first second third then result step think name phone key value 1 10 100 1000").split()


def make_data(n_prompts: int, n_choices: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    prompts = ["Question: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 16))) + "?\nAnswer:"
               for _ in range(n_prompts)]
    choices: list[str] = []
    while len(choices) < n_choices:
        c = " " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))
        if c not in choices:
            choices.append(c)
    return prompts, choices


def load(model: str, threads: int):
    import torch
    import transformers

    from autocog.lm import TfLM
    from autocog.models import tiny_llama

    torch.set_num_threads(threads)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    path = tiny_llama() if model == "tiny" else (None if model == "smollm2" else model)
    return TfLM(**TfLM.create(model_path=path, device="cpu"))


# --- the baselines ---------------------------------------------------------------------------------------


def perprompt_logprobs(lm, prompt: str, choices: list[str]) -> list[list[float]]:
    """CAPPr-style: the prompt once (KV cached), then every choice in one right-padded batch over the prompt's
    KV repeated once per choice."""
    import torch

    from autocog.lm.lm import split_boundary

    text, continuations = split_boundary(prompt, choices)
    prompt_ids = lm.tokenize(text, bos=True)
    choice_ids = [lm.tokenize(c) for c in continuations]
    n, p, width = len(choice_ids), len(prompt_ids), max(len(c) for c in choice_ids)
    with torch.inference_mode():
        out = lm.model(input_ids=torch.tensor([prompt_ids]), use_cache=True)
        first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        cache = copy.deepcopy(out.past_key_values)
        cache.batch_repeat_interleave(n)
        ids = torch.zeros((n, width), dtype=torch.long)
        mask = torch.zeros((n, p + width), dtype=torch.long)
        mask[:, :p] = 1
        for j, c in enumerate(choice_ids):
            ids[j, : len(c)] = torch.tensor(c)
            mask[j, p: p + len(c)] = 1
        positions = (p + torch.arange(width))[None].expand(n, width)
        logits = lm.model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                          use_cache=True).logits
        rest = torch.log_softmax(logits.float(), dim=-1)
    out_lp = []
    for j, c in enumerate(choice_ids):
        lp = [float(first[c[0]])] + [float(rest[j, k - 1, c[k]]) for k in range(1, len(c))]
        out_lp.append(lp)
    return out_lp


def perchoice_logprobs(lm, prompt: str, choices: list[str]) -> list[list[float]]:
    """One full forward pass over prompt + choice per choice, no cache."""
    import torch

    from autocog.lm.lm import split_boundary

    text, continuations = split_boundary(prompt, choices)
    prompt_ids = lm.tokenize(text, bos=True)
    out = []
    for c in continuations:
        ids = lm.tokenize(c)
        with torch.inference_mode():
            logits = lm.model(input_ids=torch.tensor([prompt_ids + ids]), use_cache=False).logits[0]
        lp = torch.log_softmax(logits[len(prompt_ids) - 1:-1].float(), dim=-1)
        out.append([float(lp[k, t]) for k, t in enumerate(ids)])
    return out


def max_difference(a: list[list[list[float]]], b: list[list[list[float]]]) -> float:
    return max(abs(x - y) for pa, pb in zip(a, b) for ca, cb in zip(pa, pb) for x, y in zip(ca, cb))


# --- throughput ------------------------------------------------------------------------------------------


def throughput(lm, n_prompts: int, n_choices: int, batch_size: int, repeats: int) -> list[dict]:
    from autocog.batch import choice_distributions

    prompts, choices = make_data(n_prompts, n_choices, seed=n_choices)
    results = {}

    def run_batch():
        lm.cache.reset()  # a cold start, like the baselines
        return [r.token_logprobs for r in choice_distributions(lm, prompts, choices, batch_size=batch_size,
                                                               progress=False)]

    methods = {
        "batch": run_batch,
        "perprompt": lambda: [perprompt_logprobs(lm, p, choices) for p in prompts],
        "perchoice": lambda: [perchoice_logprobs(lm, p, choices) for p in prompts],
    }
    rows = []
    for name, fn in methods.items():
        fn() if name != "perchoice" else None  # warm-up (per-choice is long enough to need none)
        best = float("inf")
        for _ in range(repeats if name != "perchoice" else 1):
            start = time.perf_counter()
            results[name] = fn()
            best = min(best, time.perf_counter() - start)
        rows.append({"method": name, "prompts": n_prompts, "choices": n_choices, "seconds": best,
                     "rate": n_prompts * n_choices / best})
    for row in rows:
        row["max_diff_vs_perchoice"] = max_difference(results[row["method"]], results["perchoice"])
        row["speedup_vs_perprompt"] = rows[1]["seconds"] / row["seconds"]
    return rows


# --- memory ----------------------------------------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_point(model: str, threads: int, n_prompts: int, n_choices: int, batch_size: int) -> dict:
    """Run in a fresh process: RSS after loading and warming up, then the peak during predict_proba."""
    from autocog.batch import predict_proba

    lm = load(model, threads)
    warm_prompts, choices = make_data(batch_size, n_choices, seed=99)
    predict_proba(lm, warm_prompts, choices, batch_size=batch_size, progress=False)
    prompts, _ = make_data(n_prompts, n_choices, seed=1)
    base = rss_bytes()
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    tracemalloc.start()
    probs = predict_proba(lm, prompts, choices, batch_size=batch_size, progress=False)
    _, python_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    done.set()
    sampler.join()
    peak[0] = max(peak[0], rss_bytes())
    assert probs.shape == (n_prompts, n_choices)
    return {"prompts": n_prompts, "choices": n_choices, "rss_before_mb": base / 2**20,
            "rss_peak_delta_mb": (peak[0] - base) / 2**20, "tracemalloc_peak_mb": python_peak / 2**20,
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="tiny (default), smollm2, or a transformers directory")
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--choices", type=int, nargs="+", default=[4, 32])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: stable timings)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-sizes", type=int, nargs="*", default=[50, 100, 200, 400, 800])
    parser.add_argument("--memory-choices", type=int, default=32)
    parser.add_argument("--memory-point", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="20 prompts, 1 repeat, 2 memory sizes")
    parser.add_argument("--memory-only", action="store_true", help="skip the throughput table")
    args = parser.parse_args()

    if args.memory_point is not None:
        print(json.dumps(memory_point(args.model, args.threads, args.memory_point, args.memory_choices,
                                      args.batch_size)))
        return
    if args.quick:
        args.prompts, args.repeats, args.memory_sizes = 20, 1, [20, 80]

    import torch

    lm = load(args.model, args.threads) if not args.memory_only else None
    print(f"model: {args.model}  torch {torch.__version__}  threads {args.threads}  batch_size {args.batch_size}")
    if not args.memory_only:
        print()
        print(f"{'method':<10} {'prompts':>7} {'choices':>7} {'seconds':>8} {'prompt x choice/s':>18} "
              f"{'vs perprompt':>12} {'max |dlogp|':>11}")
    for n_choices in ([] if args.memory_only else args.choices):
        for row in throughput(lm, args.prompts, n_choices, args.batch_size, args.repeats):
            print(f"{row['method']:<10} {row['prompts']:>7} {row['choices']:>7} {row['seconds']:>8.3f} "
                  f"{row['rate']:>18.1f} {row['speedup_vs_perprompt']:>11.2f}x {row['max_diff_vs_perchoice']:>11.2e}",
                  flush=True)
    print()
    print(f"memory of predict_proba ({args.memory_choices} choices, batch_size {args.batch_size}; "
          "fresh process per size)")
    print(f"{'prompts':>7} {'RSS before MB':>13} {'peak RSS delta MB':>17} {'tracemalloc peak MB':>19}")
    for n in args.memory_sizes:
        out = subprocess.run([sys.executable, __file__, "--model", args.model, "--threads", str(args.threads),
                              "--batch-size", str(args.batch_size), "--memory-choices", str(args.memory_choices),
                              "--memory-point", str(n)], capture_output=True, text=True, check=True)
        point = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{n:>7} {point['rss_before_mb']:>13.1f} {point['rss_peak_delta_mb']:>17.1f} "
              f"{point['tracemalloc_peak_mb']:>19.2f}", flush=True)


if __name__ == "__main__":
    main()
