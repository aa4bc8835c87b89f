"""Benchmark the scoring layer's batches (`autocog.eval.batch` / `autocog.lm.score`) against the limit, a loop of
single calls, CAPPr-style per-prompt scoring and per-choice scoring; LLaMa's multi-prompt decode against one
by one; memory as the number of prompts grows. Every ratio is measured in one run, methods interleaved and
the best of ``--repeats`` kept (the machine may be shared: absolute times are noisy, ratios less so).

transformers (``--backend tf``), all computing the same log-probs (the bench prints the largest difference):
  batch      autocog.eval.batch.choice_distributions, batch_size prompts per packed forward pass
  loop       lm.choice_logprobs(prompt, choices) called once per prompt
  limit      the model alone on the batch's shapes: the shared prefix once, then one forward pass over rows of
             (longest prompt rest + every unique trie token, leaves included), random token ids, no tree mask,
             no tokenization; the batch path skips the leaves, so it can beat this limit
  perprompt  CAPPr-style: per prompt, one pass over the prompt (KV cached), then its choices right-padded in
             one batch over the prompt's KV repeated per choice
  perchoice  one full forward pass over prompt + choice, for every prompt and choice
llama.cpp (``--backend llama``): ``batch`` (32 prompts through LLaMa.evaluate_trees; ``--group-tokens N``: several
prompts per llama_decode, opt-in, see docs/scoring.md) against ``one by one`` (LLaMa.choice_distribution per
prompt, its own prefix cache).

    .venv/bin/python bench/batch.py                                   # tiny model, both backends
    .venv/bin/python bench/batch.py --model smollm2 --prompts 20 --repeats 2
    .venv/bin/python bench/batch.py --model smollm2 --backend tf --device cuda --dtype bfloat16 --memory-sizes

``--device`` / ``--dtype``: TfLM's (the baselines build their tensors there too; on a GPU each timed method ends
with ``torch.cuda.synchronize()``). The memory table measures host RSS: leave it out on a GPU (``--memory-sizes``).
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "capital",
    "France",
    "Paris",
    "Berlin",
    "Germany",
    "answer",
    "yes",
    "no",
    "maybe",
    "first",
    "second",
    "third",
    "then",
    "result",
    "step",
    "think",
    "name",
    "phone",
    "key",
    "value",
    "1",
    "10",
    "100",
    "1000",
]


def make_data(n_prompts: int, n_choices: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Short prompts (8-16 words) and ``n_choices`` distinct choices of 1-4 words."""
    rng = random.Random(seed)
    prompts = [
        "Question: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 16))) + "?\nAnswer:"
        for _ in range(n_prompts)
    ]
    choices: list[str] = []
    while len(choices) < n_choices:
        c = " " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))
        if c not in choices:
            choices.append(c)
    return prompts, choices


def model_path(model: str):
    from autocog.gguf.models import tiny_llama, tiny_llama_gguf
    from autocog.lm.assets import smollm2_gguf

    if model == "tiny":
        return tiny_llama(), tiny_llama_gguf()
    if model == "smollm2":
        return None, smollm2_gguf()
    return model, model


def load_tf(model: str, threads: int, device: str = "cpu", dtype: str | None = None):
    import torch
    import transformers

    from autocog.lm import TfLM

    torch.set_num_threads(threads)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    return TfLM(**TfLM.create(model_path=model_path(model)[0], device=device, dtype=dtype))


def synchronize(lm) -> None:
    """Wait for the GPU's queued work (a pass whose output stays on the device is asynchronous there)."""
    import torch

    if lm.device.type == "cuda":
        torch.cuda.synchronize(lm.device)


CLOCK = time.perf_counter  # --cpu-time: time.process_time (the work done, steadier on a shared machine)


def best_of(methods: dict, repeats: int) -> tuple[dict, dict]:
    """Run the methods interleaved ``repeats`` times: (best seconds, last result) per method."""
    best = {name: float("inf") for name in methods}
    results = {}
    for _ in range(repeats):
        for name, fn in methods.items():
            start = CLOCK()
            results[name] = fn()
            best[name] = min(best[name], CLOCK() - start)
    return best, results


def max_difference(a, b) -> float:
    return max(abs(x - y) for pa, pb in zip(a, b) for ca, cb in zip(pa, pb) for x, y in zip(ca, cb))


# --- transformers baselines --------------------------------------------------------------------------------


def perprompt_logprobs(lm, prompt: str, choices: list[str]) -> list[list[float]]:
    """CAPPr-style: the prompt once (KV cached), then every choice in one right-padded batch over the prompt's
    KV repeated once per choice."""
    import torch

    from autocog.core.checks import split_boundary
    from autocog.lm.tf.model import output_cache

    text, continuations = split_boundary(prompt, choices)
    prompt_ids = lm.tokenize(text, bos=True)
    choice_ids = [lm.tokenize(c) for c in continuations]
    n, p, width = len(choice_ids), len(prompt_ids), max(len(c) for c in choice_ids)
    device = lm.device
    with torch.inference_mode():
        out = lm.model(input_ids=torch.tensor([prompt_ids], device=device), use_cache=True)
        first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        cache = copy.deepcopy(output_cache(out))
        cache.batch_repeat_interleave(n)
        ids = torch.zeros((n, width), dtype=torch.long)
        mask = torch.zeros((n, p + width), dtype=torch.long)
        mask[:, :p] = 1
        for j, c in enumerate(choice_ids):
            ids[j, : len(c)] = torch.tensor(c)
            mask[j, p : p + len(c)] = 1
        positions = (p + torch.arange(width))[None].expand(n, width)
        logits = lm.model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            use_cache=True,
            **{lm.cache.cache_kwarg: cache},
        ).logits
        rest = torch.log_softmax(logits.float(), dim=-1)
        picks = [(j, k - 1, c[k]) for j, c in enumerate(choice_ids) for k in range(1, len(c))]
        later = rest[tuple(torch.tensor(picks, dtype=torch.long, device=device).T)].tolist() if picks else []
        firsts = first[[c[0] for c in choice_ids]].tolist()  # two copies to the host, not one per token
    out, used = [], 0
    for j, c in enumerate(choice_ids):
        out.append([firsts[j]] + later[used : used + len(c) - 1])
        used += len(c) - 1
    return out


def perchoice_logprobs(lm, prompt: str, choices: list[str]) -> list[list[float]]:
    """One full forward pass over prompt + choice per choice, no cache."""
    import torch

    from autocog.core.checks import split_boundary

    text, continuations = split_boundary(prompt, choices)
    prompt_ids = lm.tokenize(text, bos=True)
    out = []
    for c in continuations:
        ids = lm.tokenize(c)
        with torch.inference_mode():
            logits = lm.model(input_ids=torch.tensor([prompt_ids + ids], device=lm.device), use_cache=False).logits[0]
        lp = torch.log_softmax(logits[len(prompt_ids) - 1 : -1].float(), dim=-1)
        out.append(lp[torch.arange(len(ids)), torch.tensor(ids)].tolist())
    return out


class Limit:
    """The model alone on the shapes of the batch's packed passes (see the module docstring)."""

    def __init__(self, lm, prompts: list[str], choices: list[str], batch_size: int):
        import torch

        from autocog.lm.scoring import shared_prefix

        self.lm = lm
        built = [lm.build_tree(p, choices) for p in prompts]
        vocab = lm.model.config.vocab_size
        gen = torch.Generator().manual_seed(0)
        self.passes = []
        for start in range(0, len(built), batch_size):
            jobs = [(tokens, tree) for tokens, tree, _ in built[start : start + batch_size]]
            for group in lm.pack_groups(jobs, lm.max_batch_tokens):
                shared = shared_prefix(group)
                width = max(len(t) - shared for t, _ in group) + max(len(tree.nodes) for _, tree in group)
                columns = 1 + max(len(tree.internal_nodes()) for _, tree in group)
                ids = torch.randint(vocab, (len(group), width), generator=gen).to(lm.device)
                self.passes.append((group[0][0][:shared], ids, columns))

    def __call__(self) -> None:
        import torch

        from autocog.lm.tf.model import output_cache

        model, key = self.lm.model, self.lm.cache.cache_kwarg
        prefix, kv = None, None
        with torch.inference_mode():
            for shared, ids, columns in self.passes:
                past = None
                if shared:
                    if shared != prefix:
                        prefix = shared
                        shared_ids = torch.tensor([shared], device=ids.device)
                        kv = output_cache(model(input_ids=shared_ids, use_cache=True, logits_to_keep=1))
                    past = copy.deepcopy(kv)
                    past.batch_repeat_interleave(ids.shape[0])
                model(input_ids=ids, use_cache=past is not None, logits_to_keep=columns, **{key: past})
        synchronize(self.lm)


def bench_tf(lm, n_prompts: int, n_choices: int, batch_size: int, repeats: int) -> dict:
    from autocog.eval.batch import choice_distributions

    prompts, choices = make_data(n_prompts, n_choices, seed=n_choices)

    def batch():
        lm.cache.reset()  # a cold start, like the baselines
        return [
            r.token_logprobs for r in choice_distributions(lm, prompts, choices, batch_size=batch_size, progress=False)
        ]

    def loop():
        lm.cache.reset()
        return [lm.choice_logprobs(p, choices) for p in prompts]

    methods = {
        "batch": batch,
        "loop": loop,
        "limit": Limit(lm, prompts, choices, batch_size),
        "perprompt": lambda: [perprompt_logprobs(lm, p, choices) for p in prompts],
    }
    seconds, results = best_of(methods, repeats)
    seconds_pc, results_pc = best_of({"perchoice": lambda: [perchoice_logprobs(lm, p, choices) for p in prompts]}, 1)
    seconds.update(seconds_pc)
    results.update(results_pc)
    diff = max(max_difference(results[m], results["perchoice"]) for m in ("batch", "loop", "perprompt"))
    return {"prompts": n_prompts, "choices": n_choices, "seconds": seconds, "max_diff": diff}


# --- llama.cpp -------------------------------------------------------------------------------------------


def bench_llama(model: str, threads: int, n_prompts: int, n_choices: int, repeats: int, group_tokens: int = 0) -> dict:
    from autocog.eval.batch import choice_distributions
    from autocog.lm import LLaMa

    lm = LLaMa(
        **LLaMa.create(model_path(model)[1], n_ctx=4096, n_threads=threads, n_threads_batch=threads),
        group_tokens=group_tokens,
    )
    prompts, choices = make_data(n_prompts, n_choices, seed=100 + n_choices)
    decodes = []
    decode = lm.cache.decode

    def counted():
        decodes.append(1)
        decode()

    def batch():
        lm.cache.reset()
        decodes.clear()
        lm.cache.decode = counted
        try:
            return [
                r.token_logprobs
                for r in choice_distributions(lm, prompts, choices, batch_size=n_prompts, progress=False)
            ]
        finally:
            del lm.cache.decode

    def one_by_one():
        lm.cache.reset()
        return [lm.choice_distribution(p, choices).token_logprobs for p in prompts]

    seconds, results = best_of({"batch": batch, "one by one": one_by_one}, repeats)
    n_decodes = len(decodes)
    batch()
    lm.close()
    return {
        "prompts": n_prompts,
        "choices": n_choices,
        "seconds": seconds,
        "decodes": n_decodes,
        "max_diff": max_difference(results["batch"], results["one by one"]),
    }


# --- memory ----------------------------------------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_point(model: str, threads: int, n_prompts: int, n_choices: int, batch_size: int) -> dict:
    """Run in a fresh process: RSS after loading and warming up, then the peak during predict_proba."""
    from autocog.eval.batch import predict_proba

    lm = load_tf(model, threads)
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
    return {
        "prompts": n_prompts,
        "choices": n_choices,
        "rss_before_mb": base / 2**20,
        "rss_peak_delta_mb": (peak[0] - base) / 2**20,
        "tracemalloc_peak_mb": python_peak / 2**20,
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def print_tf(row: dict) -> None:
    s = row["seconds"]
    print(
        f"{row['prompts']:>7} {row['choices']:>7} {s['batch']:>8.3f} {s['loop']:>8.3f} {s['limit']:>8.3f} "
        f"{s['perprompt']:>9.3f} {s['perchoice']:>9.3f} {s['batch'] / s['limit']:>11.2f} "
        f"{s['loop'] / s['batch']:>10.2f} {s['perprompt'] / s['batch']:>14.2f} {s['perchoice'] / s['batch']:>14.2f} "
        f"{row['max_diff']:>11.1e}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="tiny (default), smollm2, or a model path")
    parser.add_argument("--backend", choices=["tf", "llama", "both"], default="both")
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--choices", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--llama-prompts", type=int, default=32)
    parser.add_argument("--llama-choices", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--group-tokens", type=int, default=0, help="LLaMa: tokens per multi-prompt decode")
    parser.add_argument("--threads", type=int, default=1, help="torch / llama.cpp threads (default 1)")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time with the process's CPU time instead of the wall clock (one thread, shared machine)",
    )
    parser.add_argument("--device", default="cpu", help="TfLM's device (cpu, cuda, cuda:1...; default cpu)")
    parser.add_argument(
        "--dtype", default=None, help="TfLM's dtype (float32, bfloat16, float16; default float32 on cpu)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-sizes", type=int, nargs="*", default=[50, 100, 200, 400])
    parser.add_argument("--memory-choices", type=int, default=32)
    parser.add_argument("--memory-point", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="1 repeat, 2 memory sizes")
    args = parser.parse_args()

    if args.memory_point is not None:
        print(
            json.dumps(memory_point(args.model, args.threads, args.memory_point, args.memory_choices, args.batch_size))
        )
        return
    if args.quick:
        args.repeats, args.memory_sizes = 1, [20, 80]
    global CLOCK
    if args.cpu_time:
        CLOCK = time.process_time
    print(f"clock: {'CPU time of this process' if args.cpu_time else 'wall'}")
    print(
        f"model: {args.model}  threads {args.threads}  batch_size {args.batch_size}  repeats {args.repeats}  "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    if args.backend in ("tf", "both"):
        lm = load_tf(args.model, args.threads, args.device, args.dtype)
        print(f"device {lm.device}  dtype {lm.model.dtype}")
        print("\ntransformers: seconds (best of repeats) and ratios")
        print(
            f"{'prompts':>7} {'choices':>7} {'batch':>8} {'loop':>8} {'limit':>8} {'perprompt':>9} "
            f"{'perchoice':>9} {'batch/limit':>11} {'loop/batch':>10} {'perprompt/batch':>14} "
            f"{'perchoice/batch':>14} {'max |dlogp|':>11}"
        )
        for n_choices in args.choices:
            print_tf(bench_tf(lm, args.prompts, n_choices, args.batch_size, args.repeats))
    if args.backend in ("llama", "both"):
        print(f"\nllama.cpp: {args.llama_prompts} prompts, batch vs one by one")
        print(
            f"{'prompts':>7} {'choices':>7} {'batch':>8} {'decodes':>7} {'one by one':>10} {'speedup':>7} "
            f"{'max |dlogp|':>11}"
        )
        for n_choices in args.llama_choices:
            row = bench_llama(args.model, args.threads, args.llama_prompts, n_choices, args.repeats, args.group_tokens)
            s = row["seconds"]
            print(
                f"{row['prompts']:>7} {row['choices']:>7} {s['batch']:>8.3f} {row['decodes']:>7} "
                f"{s['one by one']:>10.3f} {s['one by one'] / s['batch']:>7.2f} {row['max_diff']:>11.1e}",
                flush=True,
            )
    if args.backend in ("tf", "both") and args.memory_sizes:
        print(
            f"\nmemory of predict_proba, transformers ({args.memory_choices} choices, batch_size "
            f"{args.batch_size}; fresh process per size)"
        )
        print(f"{'prompts':>7} {'RSS before MB':>13} {'peak RSS delta MB':>17} {'tracemalloc peak MB':>19}")
        for n in args.memory_sizes:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--model",
                    args.model,
                    "--threads",
                    str(args.threads),
                    "--batch-size",
                    str(args.batch_size),
                    "--memory-choices",
                    str(args.memory_choices),
                    "--memory-point",
                    str(n),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            point = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"{n:>7} {point['rss_before_mb']:>13.1f} {point['rss_peak_delta_mb']:>17.1f} "
                f"{point['tracemalloc_peak_mb']:>19.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
