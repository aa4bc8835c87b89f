"""Benchmark `choose` against the physical limit and the naive strategies, on TfLM and LLaMa.

For each model, prompt length (32, 256 tokens) and number of choices (2, 8, 32, 64; each 1 to 8 tokens):
  choose    lm.choice_distribution from a cold prefix cache (prompt pass + one pass over the trie)
  limit     one forward pass over prompt + the trie's unique tokens, nothing else (the physical limit)
  naive     the naive tree: a full prompt+path pass for the prompt and for every inner node of the trie
  percho    per-choice scoring: a full pass over prompt + choice, for every choice
and the ratios choose/limit (goal <= 1.3), naive/choose (goal >= 10 at 32 choices) and percho/choose
(goal >= 3 at 32 choices). Times are medians of several runs, in milliseconds. ``maxdiff`` is the largest
difference between the fast tree log-probs and the generic one-greedy-per-node evaluation.

    .venv/bin/python bench/choose.py                  # all backends and models
    .venv/bin/python bench/choose.py --backend tf --model tiny --quick
    .venv/bin/python bench/choose.py --backend tf --model smollm2 --device cuda --dtype bfloat16   # a GPU

On a GPU (``--device cuda``) every timed call ends with ``torch.cuda.synchronize()``, so the limit is the pass itself.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import numpy as np

WORDS = [
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "is",
    "was",
    "for",
    "on",
    "are",
    "with",
    "as",
    "by",
    "at",
    "from",
    "this",
    "have",
    "or",
    "be",
    "one",
    "had",
    "not",
    "but",
    "what",
    "all",
    "were",
    "when",
    "we",
    "there",
    "can",
    "an",
    "your",
    "which",
    "their",
    "said",
    "if",
    "do",
    "will",
    "each",
    "about",
    "how",
    "up",
    "out",
    "them",
    "then",
    "she",
    "many",
    "some",
    "so",
    "these",
    "would",
    "other",
    "into",
    "has",
    "more",
    "her",
    "two",
    "like",
    "him",
    "see",
    "time",
    "could",
    "no",
    "make",
    "than",
    "first",
    "been",
    "its",
    "who",
    "now",
    "people",
    "my",
    "made",
    "over",
    "did",
    "down",
    "only",
    "way",
    "find",
    "use",
    "may",
    "water",
    "long",
    "little",
    "very",
    "after",
    "words",
    "called",
    "just",
    "where",
    "most",
    "know",
    "get",
    "through",
    "back",
    "much",
    "before",
    "go",
    "good",
    "new",
    "write",
    "our",
    "used",
    "me",
    "man",
    "too",
    "any",
    "day",
    "same",
    "right",
    "look",
    "think",
    "also",
    "around",
    "another",
    "came",
    "come",
    "work",
    "three",
    "word",
    "must",
    "because",
    "does",
    "part",
    "even",
    "place",
    "well",
    "such",
]


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def make_prompt(lm, n_tokens: int, rng: random.Random) -> str:
    words = []
    while len(lm.tokenize(" ".join(words), bos=True)) < n_tokens:
        words.append(rng.choice(WORDS))
    return " ".join(words)


def make_choices(lm, n: int, rng: random.Random) -> list[str]:
    """``n`` distinct choices of 1 to 8 tokens, sharing first words often (as real choice sets do)."""
    choices: set[str] = set()
    while len(choices) < n:
        text = ""
        target = rng.randint(1, 8)
        for _ in range(50):
            candidate = text + " " + rng.choice(WORDS)
            if len(lm.tokenize(candidate)) > target:
                break
            text = candidate
        if text:
            choices.add(text)
    return sorted(choices)


class TfAdapter:
    name = "tf"

    def __init__(self, lm):
        import torch

        self.lm, self.torch = lm, torch

    def reset(self):
        self.lm.cache.reset()

    def forward(self, ids: list[int]):
        with self.torch.inference_mode():
            self.lm.model(input_ids=self.torch.tensor([ids], device=self.lm.device), use_cache=False, logits_to_keep=1)
        if self.lm.device.type == "cuda":  # the pass is asynchronous there: time it to its end
            self.torch.cuda.synchronize()


class LlamaAdapter:
    name = "llama"

    def __init__(self, lm):
        self.lm = lm

    def reset(self):
        self.lm.cache.reset()

    def forward(self, ids: list[int]):
        self.lm.model.reset()
        self.lm.model.eval(ids)


def bench_model(label, adapter, prompt_lengths, choice_counts, repeats, seed=0):
    from autocog.lm.choice import ChoiceLM

    lm = adapter.lm
    rows = []
    for n_prompt in prompt_lengths:
        for n_choices in choice_counts:
            rng = random.Random(seed + n_prompt * 1000 + n_choices)
            prompt = make_prompt(lm, n_prompt, rng)
            choices = make_choices(lm, n_choices, rng)
            prompt_ids, tree, _ = lm.build_tree(prompt, choices)

            def choose():
                adapter.reset()
                lm.choice_distribution(prompt, choices)

            def naive():
                adapter.forward(prompt_ids)
                for node in tree.internal_nodes():
                    adapter.forward(prompt_ids + tree.path_tokens(node))

            def per_choice():
                for path in tree.paths:
                    adapter.forward(prompt_ids + [tree.nodes[i].token for i in path])

            t_choose = median_time(choose, repeats)
            t_limit = median_time(lambda: adapter.forward(prompt_ids + tree.tokens), repeats)
            t_naive = median_time(naive, max(1, repeats // 3))
            t_per = median_time(per_choice, max(1, repeats // 3))
            # The generic ChoiceLM path must agree with the fast one (a benchmark of wrong numbers is worthless).
            adapter.reset()
            fast = lm.evaluate_tree(prompt_ids, tree)
            adapter.reset()
            generic = ChoiceLM.evaluate_tree(lm, prompt_ids, tree)
            # (quantized GGUF weights in llama.cpp round differently with the batch shape: up to ~0.5 nats)
            diff = float(np.max(np.abs(fast - generic)))
            # (in bf16 / fp16 a different computation order rounds to ~1e-2: see tests/backends/test_backend_tf.py)
            bound = 2e-3 if adapter.name != "tf" or lm.model.dtype == adapter.torch.float32 else 0.1
            assert adapter.name != "tf" or diff < bound, f"fast and generic tree evaluation disagree by {diff}"
            rows.append(
                (
                    label,
                    adapter.name,
                    len(prompt_ids),
                    n_choices,
                    len(tree.nodes),
                    t_choose,
                    t_limit,
                    t_naive,
                    t_per,
                    diff,
                )
            )
            print_row(rows[-1], flush=True)
    return rows


HEADER = (
    f"{'model':<8} {'backend':<7} {'prompt':>6} {'choices':>7} {'trie':>5} {'choose':>9} {'limit':>9} "
    f"{'naive':>9} {'percho':>9} {'ch/lim':>7} {'naive/ch':>8} {'perch/ch':>8} {'maxdiff':>8}"
)


def print_row(row, flush=False):
    label, backend, n_prompt, n_choices, n_nodes, t_choose, t_limit, t_naive, t_per, diff = row
    print(
        f"{label:<8} {backend:<7} {n_prompt:>6} {n_choices:>7} {n_nodes:>5} {t_choose:>8.1f}m {t_limit:>8.1f}m "
        f"{t_naive:>8.1f}m {t_per:>8.1f}m {t_choose / t_limit:>7.2f} {t_naive / t_choose:>8.1f} "
        f"{t_per / t_choose:>8.1f} {diff:>8.1e}",
        flush=flush,
    )


def load(backend: str, model: str, threads: int, device: str = "cpu", dtype: str | None = None):
    import torch

    from autocog import models

    torch.set_num_threads(threads)
    if backend == "tf":
        from autocog.lm import TfLM

        path = models.tiny_llama() if model == "tiny" else None
        return TfAdapter(TfLM(**TfLM.create(model_path=path, device=device, dtype=dtype)))
    from autocog.lm import LLaMa

    path = models.tiny_llama_gguf() if model == "tiny" else None
    return LlamaAdapter(LLaMa(**LLaMa.create(model_path=path, n_threads=threads, n_threads_batch=threads)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["tf", "llama", "all"], default="all")
    parser.add_argument("--model", choices=["tiny", "smollm2", "all"], default="all")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and sizes (a smoke run)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for torch and llama.cpp (default 1: stable timings on a shared machine)",
    )
    parser.add_argument("--device", default="cpu", help="TfLM's device (cpu, cuda, cuda:1...; default cpu)")
    parser.add_argument(
        "--dtype", default=None, help="TfLM's dtype (float32, bfloat16, float16; default float32 on cpu)"
    )
    args = parser.parse_args(argv)
    backends = ["tf", "llama"] if args.backend == "all" else [args.backend]
    model_names = ["tiny", "smollm2"] if args.model == "all" else [args.model]
    repeats = 3 if args.quick else 7
    prompt_lengths = [32] if args.quick else [32, 256]
    choice_counts = [2, 32] if args.quick else [2, 8, 32, 64]
    print(HEADER)
    for model in model_names:
        for backend in backends:
            adapter = load(backend, model, args.threads, args.device, args.dtype)
            bench_model(model, adapter, prompt_lengths, choice_counts, repeats)


if __name__ == "__main__":
    main()
