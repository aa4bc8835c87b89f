"""Per-call overhead of the scoring layer on the tiny model (issue 21, item 4), in one run:

  choose/fwd   ``lm.choose(prompt, 32 choices)`` from a cold prefix cache, over the time the model's own forward
               (TfLM: ``model.forward``; LLaMa: ``llama_decode``) takes inside those same calls: everything else
               is our Python (tokenizing, the trie, the mask, the read-out, the result). Goal <= 1.3. ``warm``: the
               same choice list every call (what a dataset repeats: tokens and trie cached); ``cold``: the choice
               caches cleared before every call. ``/plain``: the call over one plain causal forward of the same
               tokens (prompt + the trie's inner nodes, no tree mask, as many logits rows; `plain_forward`),
               timed the same way, interleaved with the calls.
  fixed/prompt the batch API (`autocog.batch.predict_proba`, ``--prompts`` prompts x ``--batch-choices`` shared
               choices) minus the time inside the model, per prompt, in ms, at each of ``--batch-sizes`` (default:
               16, the API's default before round 5, and the API's default, `DEFAULT_BATCH_SIZE`). Goal <= 0.1 ms.

Times are medians of ``--repeats`` runs (the choose rows) or the best of them (the batch rows); the model's time is
measured inside the very calls that are timed, so each ratio comes from one run. ``--cpu-time``: this thread's
CPU time instead of the wall clock (with one torch / llama.cpp thread the work runs in it: stable under load). ``--profile`` prints a cProfile
summary (our functions by own time) of each measured loop.

    .venv/bin/python bench/overhead.py                       # both backends
    .venv/bin/python bench/overhead.py --backend tf --profile
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from choose import make_choices, make_prompt  # noqa: E402  (bench/choose.py: the same prompts and choices)

from autocog.lm.scoring import DEFAULT_BATCH_SIZE  # noqa: E402


class ModelClock:
    """Seconds spent inside the model's own forward calls, accumulated: ``install`` wraps them."""

    def __init__(self, now: Callable[[], float] = time.perf_counter) -> None:
        self.seconds = 0.0
        self.now = now  # time.perf_counter (wall clock) or time.thread_time (this thread's CPU time)

    def timed(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = self.now()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += self.now() - start

        return wrapper

    def install(self, lm: Any) -> None:
        if hasattr(lm, "tokenizer"):  # TfLM: the module's forward (an instance attribute shadows the method)
            lm.model.forward = self.timed(lm.model.forward)
        else:  # LLaMa: llama.cpp's decode, reached through the module the cache holds
            module = lm.cache.llama_cpp
            if not getattr(module.llama_decode, "_timed", False):
                module.llama_decode = self.timed(module.llama_decode)
                module.llama_decode._timed = True

    def measure(self, fn: Callable[[], Any]) -> tuple[float, float]:
        """(wall seconds, model seconds) of one ``fn()``."""
        self.seconds = 0.0
        start = self.now()
        fn()
        return self.now() - start, self.seconds


def load(backend: str, threads: int):
    import torch

    from autocog import models
    from autocog.lm import LLaMa, TfLM

    torch.set_num_threads(threads)
    if backend == "tf":
        return TfLM(**TfLM.create(model_path=models.tiny_llama()))
    return LLaMa(**LLaMa.create(model_path=models.tiny_llama_gguf(), n_threads=threads, n_threads_batch=threads))


def clear_choice_caches(lm: Any) -> None:
    for name in ("choice_tokens_memo", "tree_cache"):
        cache = lm.__dict__.get(name)
        if cache is not None:
            cache.clear()


def profiled(label: str, fn: Callable[[], Any], top: int) -> None:
    profile = cProfile.Profile()
    profile.enable()
    fn()
    profile.disable()
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out).sort_stats("tottime")
    stats.print_stats(top)
    print(f"\n--- profile: {label} (by own time) ---")
    print("\n".join(line for line in out.getvalue().splitlines()[4:] if line.strip()))


def plain_forward(lm: Any, prompt: str, choices: list[str]) -> Callable[[], None]:
    """One plain causal forward over the tokens ``choose`` runs (the prompt, then the trie's inner nodes, in one
    sequence) from an empty cache, keeping the same number of logits rows: TfLM ``model(input_ids=...)``,
    LLaMa one ``llama_decode`` of sequence 0. No tree mask, no tree positions: what running the model over
    those tokens costs by itself."""
    prompt_tokens, tree, _ = lm.build_tree(prompt, choices)
    tokens = prompt_tokens + tree.inner_tokens()
    n_rows = len(tree.internal_nodes()) + 1
    if hasattr(lm, "tokenizer"):
        import torch

        ids = torch.tensor([tokens])

        def run() -> None:
            with torch.inference_mode():
                lm.model(input_ids=ids, use_cache=True, logits_to_keep=n_rows)

        return run
    cache = lm.cache

    def decode() -> None:
        cache.reset()
        n = len(tokens)
        cache.batch.fill(tokens, range(n), [[0]] * n, [k >= n - n_rows for k in range(n)])
        cache.decode()

    return decode


def bench_choose(lm: Any, clock: ModelClock, n_choices: int, repeats: int, cold: bool) -> tuple[float, float, float]:
    """Medians of (the call, the model's forward inside it, a `plain_forward` over the same tokens), in ms."""
    rng = random.Random(32_000 + n_choices)
    prompt = make_prompt(lm, 32, rng)
    choices = make_choices(lm, n_choices, rng)
    plain = plain_forward(lm, prompt, choices)

    def once() -> None:
        lm.cache.reset()
        if cold:
            clear_choice_caches(lm)
        lm.choose(prompt, choices)

    once()
    plain()
    walls, models, plains = [], [], []
    for _ in range(repeats):  # interleaved, so that the three see the same load
        wall, model = clock.measure(once)
        walls.append(wall)
        models.append(model)
        plains.append(clock.measure(plain)[0])
    lm.cache.reset()  # the plain LLaMa decode leaves cells the prefix cache does not know of
    return tuple(statistics.median(x) * 1000 for x in (walls, models, plains))  # type: ignore[return-value]


def batch_inputs(lm: Any, n_prompts: int, n_choices: int) -> tuple[list[str], list[str]]:
    rng = random.Random(7)
    prompts = [make_prompt(lm, rng.randint(12, 24), rng) for _ in range(n_prompts)]
    return prompts, make_choices(lm, n_choices, rng)


def bench_batch(
    lm: Any, clock: ModelClock, prompts: list[str], choices: list[str], repeats: int, batch_size: int
) -> tuple[float, float]:
    from autocog.batch import predict_proba

    def once() -> None:
        lm.cache.reset()
        predict_proba(lm, prompts, choices, batch_size=batch_size)

    once()
    best = min((clock.measure(once) for _ in range(repeats)), key=lambda t: t[0])
    return best[0], best[1]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["tf", "llama", "all"], default="all")
    parser.add_argument("--choices", type=int, default=32, help="choices of the choose rows (default 32)")
    parser.add_argument("--prompts", type=int, default=256, help="prompts of the batch rows (default 256)")
    parser.add_argument("--batch-choices", type=int, default=4, help="choices per prompt of the batch rows")
    parser.add_argument(
        "--batch-sizes",
        type=lambda text: [int(x) for x in text.split(",")],
        default=sorted({16, DEFAULT_BATCH_SIZE}),
        help=f"batch_size of the batch rows, comma-separated (default 16,{DEFAULT_BATCH_SIZE}: the API's default)",
    )
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="torch / llama.cpp threads (default 1)")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time this thread's CPU time instead of the wall clock (one thread: stable on a loaded machine)",
    )
    parser.add_argument("--profile", action="store_true", help="print a cProfile summary of each loop")
    parser.add_argument("--top", type=int, default=25, help="rows of each profile summary")
    args = parser.parse_args(argv)
    backends = ["tf", "llama"] if args.backend == "all" else [args.backend]
    print(
        f"{'backend':<7} {'measure':<28} {'total':>10} {'model':>10} {'ratio':>6} {'fixed/prompt':>13} "
        f"{'plain fwd':>10} {'/plain':>7}",
        flush=True,
    )
    for backend in backends:
        lm = load(backend, args.threads)
        clock = ModelClock(time.thread_time if args.cpu_time else time.perf_counter)
        clock.install(lm)
        for cold in (False, True):
            wall, model, plain = bench_choose(lm, clock, args.choices, args.repeats, cold)
            label = f"choose {args.choices} ({'cold' if cold else 'warm'})"
            print(
                f"{backend:<7} {label:<28} {wall:>8.2f}ms {model:>8.2f}ms {wall / model:>6.2f} {'':>13} "
                f"{plain:>8.2f}ms {wall / plain:>7.2f}",
                flush=True,
            )
        prompts, choices = batch_inputs(lm, args.prompts, args.batch_choices)
        for batch_size in args.batch_sizes:
            wall, model = bench_batch(lm, clock, prompts, choices, max(1, args.repeats // 5), batch_size)
            fixed = (wall - model) / len(prompts) * 1000
            label = f"batch {len(prompts)} x {len(choices)}, {batch_size}"
            print(
                f"{backend:<7} {label:<28} {wall * 1000:>8.1f}ms {model * 1000:>8.1f}ms {wall / model:>6.2f} "
                f"{fixed:>10.3f}ms",
                flush=True,
            )
        if args.profile:
            rng = random.Random(32_000 + args.choices)
            prompt, choice_list = make_prompt(lm, 32, rng), make_choices(lm, args.choices, rng)

            def chooses() -> None:
                for _ in range(args.repeats):
                    lm.cache.reset()
                    lm.choose(prompt, choice_list)

            profiled(f"{backend} choose x{args.repeats}", chooses, args.top)
            from autocog.batch import predict_proba

            profiled(f"{backend} batch", lambda: predict_proba(lm, prompts, choices), args.top)


if __name__ == "__main__":
    main()
