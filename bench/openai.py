"""Requests and wall time per ``choose`` call of `autocog.lm.OpenAI` against a local llama_cpp.server.

Strategies compared at 2, 8 and 32 choices:

* ``echo``: one echo request per trie leaf of two or more tokens, in parallel (the server still runs them one
  at a time); one-token choices are read from the prompt's next-token row;
* ``descent``: best-first logit_bias descent (stops once the best choice beats every bound);
* ``descent-greedy``: the greedy descent (a decision, no distribution): one walk down the trie on llama.cpp;
* ``descent-full``: the descent scoring the whole trie (exact distribution);
* ``per-choice``: the naive way, one echo request per choice, one after the other.

Goals: echo <= 1 request per choice (column ``per choice``), descent <= 1 request per branching node
(column ``per branching node``). The result cache is cleared before each timed call.

Tokenization is warmed before timing (the server tokenizer caches), so the numbers are steady-state
choose calls; the tokenize column counts what a warm call still asks for.

    python bench/openai.py                 # SmolLM2-135M-Instruct (Q4_1), then the tiny random Llama
    python bench/openai.py --model tiny
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np

# Run as ``python bench/openai.py``, this file's folder leads sys.path and would shadow the ``openai`` package.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from autocog.lm.openai import OpenAI  # noqa: E402

WORDS = ("Paris London Berlin Madrid Rome Tokyo Cairo Lisbon Vienna Prague Dublin Oslo Athens Warsaw Brussels "
         "Amsterdam Stockholm Helsinki Budapest Bucharest Sofia Zagreb Belgrade Kyiv Moscow Ankara Beijing Seoul "
         "Delhi Bangkok Hanoi Manila Jakarta Sydney Ottawa Lima").split()
PROMPT = "Question: What is the capital of France?\nAnswer:"
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


def start_server(model_path: Path, n_ctx: int = 2048) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tempfile.TemporaryFile()
    process = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--host",
                                "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx)], stdout=log, stderr=log)
    base_url = f"http://127.0.0.1:{port}/v1"
    for _ in range(900):
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(log.read().decode(errors="replace")[-2000:])
        try:
            with DIRECT.open(base_url + "/models", timeout=2) as answer:
                if answer.status == 200:
                    return process, base_url
        except OSError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("llama_cpp.server did not start")


def measure(lm: OpenAI, fn) -> tuple[object, dict, float]:
    before = Counter(lm.requests)
    began = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - began
    spent = Counter(lm.requests)
    spent.subtract(before)
    return out, spent, wall


def bench(name: str, base_url: str, sizes=(2, 8, 32)) -> list[tuple]:
    lm = OpenAI(model=name, base_url=base_url)
    caps = lm.probe()
    print(f"# {name}: echo layout {caps['echo']!r}, logit_bias reported {caps['bias']!r}-bias, "
          f"top_logprobs {lm.top_logprobs}", flush=True)
    rows = []
    for n in sizes:
        choices = [" " + w for w in WORDS[:n]]
        lm.choice_distribution(PROMPT, choices, strategy="descent")  # warms the tokenizer cache (and pieces)
        reference = None
        runs = [
            ("echo", lambda: lm.choice_distribution(PROMPT, choices, strategy="echo")),
            ("descent", lambda: lm.choice_distribution(PROMPT, choices, strategy="descent")),
            ("descent-greedy", lambda: lm.choice_distribution(PROMPT, choices, strategy="descent", search="greedy")),
            ("descent-full", lambda: lm.choice_distribution(PROMPT, choices, strategy="descent", exhaustive=True)),
            ("per-choice", lambda: [lm.choice_distribution(PROMPT, [c], strategy="echo").logprobs[0]
                                    for c in choices]),
        ]
        for strategy, fn in runs:
            lm.clear_cache()
            out, spent, wall = measure(lm, fn)
            if strategy == "per-choice":
                best, exact = int(np.argmax(out)), True
                delta = float(np.max(np.abs(np.array(out) - reference.logprobs)))
            else:
                best, exact = out.index, all(out.info.get("exact", [True]))
                if reference is None:
                    reference = out
                delta = float(np.nanmax(np.abs(out.logprobs - reference.logprobs))) if exact else float("nan")
            branching = out.info.get("branching_nodes", "") if strategy.startswith("descent") else ""
            rows.append((name, n, strategy, spent["completions"], branching, spent["tokenize"] + spent["detokenize"],
                         wall, best == reference.index, exact, delta))
            print(f"  {n:>2} choices  {strategy:<14} {spent['completions']:>3} requests  {wall:7.2f} s", flush=True)
            if strategy == "per-choice":
                lm.clear_cache()  # its one-choice calls would otherwise fill the cache for the next size
    lm.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["smollm2", "tiny", "both"], default="both")
    args = parser.parse_args()
    from autocog.models import smollm2_gguf, tiny_llama_gguf

    models = {"smollm2": smollm2_gguf, "tiny": tiny_llama_gguf}
    names = list(models) if args.model == "both" else [args.model]
    rows = []
    for name in names:
        process, base_url = start_server(models[name]())
        try:
            rows += bench(name, base_url)
        finally:
            process.terminate()
            process.wait(10)
    print()
    print("| model | choices | strategy | completion requests | per choice | branching nodes | per branching node "
          "| tokenize requests | wall (s) | same choice as echo | scores | max abs Δ log-prob vs echo |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---|---|---:|")
    for name, n, strategy, requests, branching, tok, wall, same, exact, delta in rows:
        per_node = f"{requests / branching:.2f}" if branching else ""
        print(f"| {name} | {n} | {strategy} | {requests} | {requests / n:.2f} | {branching} | {per_node} | {tok} "
              f"| {wall:.2f} | {'yes' if same else 'NO'} | {'exact' if exact else 'partial'} "
              f"| {'' if np.isnan(delta) else f'{delta:.1e}'} |")


if __name__ == "__main__":
    main()
