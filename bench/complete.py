"""Benchmark `complete`: tokens per second against the backend library's own generation, same settings.

  tf     TfLM.complete (greedy, no stop)     vs  model.generate(do_sample=False, same number of new tokens)
  llama  LLaMa.complete (greedy, no stop)    vs  llama_cpp.Llama.create_completion(temperature=0, top_k=1)

Both sides generate the same number of tokens from the same prompt (EOS disabled by asking for a fixed
count: transformers' min_new_tokens; for llama.cpp the count actually produced is read from usage and our
side is asked for that many). Goal: ratio (ours / theirs) >= 0.95.

    .venv/bin/python bench/complete.py [--backend tf|llama|all] [--model tiny|smollm2|all] [--tokens 64]
"""

from __future__ import annotations

import argparse
import statistics
import time

PROMPT = "Question: Write a short story about a fox who learns to read.\nStory: Once upon a time"


def timed(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_tf(model_name, n_tokens, repeats, threads):
    import torch

    torch.set_num_threads(threads)
    from autocog import models
    from autocog.lm import TfLM

    lm = TfLM(**TfLM.create(model_path=models.tiny_llama() if model_name == "tiny" else None))
    ids = torch.tensor([lm.tokenize(PROMPT, bos=True)])

    def theirs():
        with torch.inference_mode():
            out = lm.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=n_tokens,
                min_new_tokens=n_tokens,
                pad_token_id=0,
            )
        assert out.shape[1] - ids.shape[1] == n_tokens

    produced = {}

    def ours():
        lm.cache.reset()
        before = lm.tokens_evaluated
        lm.complete(PROMPT, stop=None, max_tokens=n_tokens)
        produced["n"] = lm.tokens_evaluated - before - ids.shape[1] + 1

    t_theirs, t_ours = timed(theirs, repeats), timed(ours, repeats)
    return produced["n"] / t_ours, n_tokens / t_theirs


def bench_llama(model_name, n_tokens, repeats, threads):
    from autocog import models
    from autocog.lm import LLaMa

    lm = LLaMa(
        **LLaMa.create(
            model_path=models.tiny_llama_gguf() if model_name == "tiny" else None,
            n_threads=threads,
            n_threads_batch=threads,
        )
    )
    produced = {}

    def theirs():
        lm.model.reset()
        out = lm.model.create_completion(PROMPT, max_tokens=n_tokens, temperature=0.0, top_k=1)
        produced["n"] = out["usage"]["completion_tokens"]

    t_theirs = timed(theirs, repeats)
    n = produced["n"]
    counted = {}

    def ours():
        lm.cache.reset()
        before = lm.tokens_evaluated
        lm.complete(PROMPT, stop=None, max_tokens=n)
        counted["n"] = lm.tokens_evaluated - before - len(lm.tokenize(PROMPT, bos=True)) + 1

    t_ours = timed(ours, repeats)
    return counted["n"] / t_ours, n / t_theirs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["tf", "llama", "all"], default="all")
    parser.add_argument("--model", choices=["tiny", "smollm2", "all"], default="all")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch and llama.cpp")
    args = parser.parse_args(argv)
    print(f"{'model':<8} {'backend':<7} {'tokens':>6} {'ours tok/s':>11} {'theirs tok/s':>13} {'ratio':>6}")
    for model in ["tiny", "smollm2"] if args.model == "all" else [args.model]:
        for backend in ["tf", "llama"] if args.backend == "all" else [args.backend]:
            run = bench_tf if backend == "tf" else bench_llama
            ours, theirs = run(model, args.tokens, args.repeats, args.threads)
            print(
                f"{model:<8} {backend:<7} {args.tokens:>6} {ours:>11.1f} {theirs:>13.1f} {ours / theirs:>6.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
