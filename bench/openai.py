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
    python bench/openai.py --server vllm   # the batch API against vLLM (needs scripts/setup_vllm.sh)
    python bench/openai.py --server llama-server   # llama.cpp's C++ server (scripts/setup_llama_server.sh)

**vLLM** (`--server vllm`, the transformers directories of the same models): 100 prompts x 4 and x 32 choices
through the batch API (`score_batch`: echo by token ids, several prompts and choices per request,
``concurrency=8`` requests in flight) against a sequential loop of ``choice_distribution`` (one request per
prompt) and against one request per choice; requests per prompt and wall-time ratios.

**llama-server** (`--server llama-server`, the same GGUF files, ``-np 2``): ``choose`` at 2, 8 and 32 choices
by token-id rows (every trie node in one ``/completion`` request) against the per-choice baseline (one call per
choice, one after the other), with the trie's branching nodes; then the batch API over 40 prompts x 4 choices
(``concurrency=2``) against a sequential loop of ``choice_distribution``.
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

WORDS = [
    "Paris",
    "London",
    "Berlin",
    "Madrid",
    "Rome",
    "Tokyo",
    "Cairo",
    "Lisbon",
    "Vienna",
    "Prague",
    "Dublin",
    "Oslo",
    "Athens",
    "Warsaw",
    "Brussels",
    "Amsterdam",
    "Stockholm",
    "Helsinki",
    "Budapest",
    "Bucharest",
    "Sofia",
    "Zagreb",
    "Belgrade",
    "Kyiv",
    "Moscow",
    "Ankara",
    "Beijing",
    "Seoul",
    "Delhi",
    "Bangkok",
    "Hanoi",
    "Manila",
    "Jakarta",
    "Sydney",
    "Ottawa",
    "Lima",
]
PROMPT = "Question: What is the capital of France?\nAnswer:"
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


def start_server(model_path: Path, n_ctx: int = 2048) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            str(n_ctx),
        ],
        stdout=log,
        stderr=log,
    )
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
    print(
        f"# {name}: echo layout {caps['echo']!r}, logit_bias reported {caps['bias']!r}-bias, "
        f"top_logprobs {lm.top_logprobs}",
        flush=True,
    )
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
            ("per-choice", lambda: [lm.choice_distribution(PROMPT, [c], strategy="echo").logprobs[0] for c in choices]),
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
            rows.append(
                (
                    name,
                    n,
                    strategy,
                    spent["completions"],
                    branching,
                    spent["tokenize"] + spent["detokenize"],
                    wall,
                    best == reference.index,
                    exact,
                    delta,
                )
            )
            print(f"  {n:>2} choices  {strategy:<14} {spent['completions']:>3} requests  {wall:7.2f} s", flush=True)
            if strategy == "per-choice":
                lm.clear_cache()  # its one-choice calls would otherwise fill the cache for the next size
    lm.close()
    return rows


# --- vLLM: the batch API ----------------------------------------------------------------------------------
COUNTRIES = [
    "France",
    "Japan",
    "Italy",
    "Spain",
    "Egypt",
    "Peru",
    "Kenya",
    "Chile",
    "Norway",
    "Greece",
    "Canada",
    "Brazil",
    "India",
    "Mexico",
    "Chad",
    "Cuba",
    "Fiji",
    "Iran",
    "Iraq",
    "Laos",
    "Mali",
    "Oman",
    "Togo",
    "Nepal",
]


def vllm_requests(n_prompts: int, n_choices: int) -> list:
    from autocog.core.types import ScoreRequest

    choices = [" " + w for w in WORDS[:n_choices]]
    return [
        ScoreRequest(f"Question {k}: What is the capital of {COUNTRIES[k % len(COUNTRIES)]}?\nAnswer:", choices)
        for k in range(n_prompts)
    ]


def bench_vllm(name: str, base_url: str, n_prompts: int, n_baseline: int, sizes=(4, 32)) -> list[tuple]:
    """Rows (model, choices, method, prompts timed, completion requests, requests per prompt, seconds per
    prompt, speed-up of the batch API, max abs difference of the log-probs with the batch API's)."""
    rows = []
    for n in sizes:
        requests = vllm_requests(n_prompts, n)
        # A CPU server takes minutes for a batch of 100 x 32 sequences: no timeout, no retry within 15 min.
        budget = dict(timeout=900, max_retry_time=900, max_retries=0)
        fast = OpenAI(model=name, base_url=base_url, api_key="none", concurrency=8, **budget)
        fast.score_batch(requests[:1])  # probe
        fast.tokenizer.encode_many([r.prompt for r in requests] + list(requests[0].choices))  # warm tokenizer
        out, spent, wall = measure(fast, lambda: fast.score_batch(requests))
        batch = [r.logprobs for r in out]
        per_prompt = wall / n_prompts
        rows.append(
            (
                name,
                n,
                "batch API, concurrency=8",
                n_prompts,
                spent["completions"],
                spent["completions"] / n_prompts,
                per_prompt,
                1.0,
                0.0,
            )
        )
        print(f"  {n:>2} choices  batch: {spent['completions']} requests {wall:.2f} s", flush=True)
        serial = OpenAI(model=name, base_url=base_url, api_key="none", concurrency=1, **budget)
        serial.score_batch(requests[:1])
        subset = requests[:n_baseline]
        baselines = [
            (
                "loop of choice_distribution",
                lambda: [serial.choice_distribution(r.prompt, r.choices).logprobs for r in subset],
            ),
            (
                "one request per choice",
                lambda: [[serial.choice_distribution(r.prompt, [c]).logprobs[0] for c in r.choices] for r in subset],
            ),
        ]
        for method, fn in baselines:
            serial.clear_cache()
            got, spent, wall = measure(serial, fn)
            delta = float(np.max(np.abs(np.array(got) - np.array(batch[:n_baseline]))))
            rows.append(
                (
                    name,
                    n,
                    method,
                    n_baseline,
                    spent["completions"],
                    spent["completions"] / n_baseline,
                    wall / n_baseline,
                    wall / n_baseline / per_prompt,
                    delta,
                )
            )
            print(f"  {n:>2} choices  {method}: {spent['completions']} requests {wall:.2f} s", flush=True)
        fast.close()
        serial.close()
    return rows


def run_vllm(model: str, n_prompts: int, n_baseline: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from vllm_server import VllmServer, missing_message, vllm_python

    from autocog.gguf.models import tiny_llama
    from autocog.lm.assets import smollm2_transformers

    if vllm_python() is None:
        raise SystemExit(missing_message())
    # The tiny random Llama (head_dim 16) is refused by vLLM's CPU attention kernels: SmolLM2 only.
    models = {"smollm2": smollm2_transformers, "tiny": tiny_llama}
    rows = []
    for name in ["smollm2"] if model == "both" else [model]:
        with VllmServer(models[name](), name=name) as server:
            print(f"# vLLM {name}: {n_prompts} prompts", flush=True)
            rows += bench_vllm(name, server.base_url, n_prompts, min(n_baseline, n_prompts))
    print()
    print(
        "| model | choices | method | prompts timed | completion requests | per prompt | ms per prompt "
        "| batch API speed-up | max abs Δ log-prob |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for name, n, method, timed, requests, per, seconds, speedup, delta in rows:
        print(
            f"| {name} | {n} | {method} | {timed} | {requests} | {per:.2f} | {seconds * 1000:.0f} "
            f"| {speedup:.2f}x | {delta:.1e} |"
        )
    print()


# --- llama-server: rows by token ids ---------------------------------------------------------------------
def branching(lm: OpenAI, choices: list[str]) -> int:
    from autocog.core.trie import TokenChoiceTree

    return TokenChoiceTree(lm.tokenizer.encode_many(choices), str).branching_nodes()


def bench_llama_server(name: str, base_url: str, n_prompts: int = 40, sizes=(2, 8, 32)) -> tuple[list, list]:
    """(choose rows, batch rows): see the module docstring."""
    lm = OpenAI(model=name, base_url=base_url, api_key="none", concurrency=2)
    choose_rows = []
    for n in sizes:
        choices = [" " + w for w in WORDS[:n]]
        reference = lm.choice_distribution(PROMPT, choices)  # warms the tokenizer cache
        nodes = branching(lm, choices)
        runs = [
            ("rows (auto)", lambda: lm.choice_distribution(PROMPT, choices)),
            ("per-choice", lambda: [lm.choice_distribution(PROMPT, [c]).logprobs[0] for c in choices]),
        ]
        for method, fn in runs:
            out, spent, wall = measure(lm, fn)
            got = np.array(out) if method == "per-choice" else out.logprobs
            delta = float(np.max(np.abs(got - reference.logprobs)))
            choose_rows.append((name, n, method, spent["completions"], nodes, wall, delta))
            print(f"  {n:>2} choices  {method:<12} {spent['completions']:>3} requests  {wall:7.2f} s", flush=True)
    lm.close()
    requests = vllm_requests(2 * n_prompts, 4)  # the loop and the batch score different prompts (no shared cache)
    looped, requests = requests[:n_prompts], requests[n_prompts:]
    batch_rows = []
    fast = OpenAI(model=name, base_url=base_url, api_key="none", concurrency=2)
    fast.tokenizer.encode_many([r.prompt for r in requests] + list(requests[0].choices))  # warm tokenizer
    fast.score_batch(requests[:1])
    out, spent, batch_wall = measure(fast, lambda: fast.score_batch(requests))
    batch = np.array([r.logprobs for r in out])
    batch_rows.append((name, "batch API, concurrency=2", spent["completions"], batch_wall, 1.0, 0.0))
    serial = OpenAI(model=name, base_url=base_url, api_key="none", concurrency=1)
    serial.tokenizer.encode_many([r.prompt for r in requests] + list(requests[0].choices))
    serial.score_batch(requests[:1])
    _, spent, wall = measure(serial, lambda: [serial.choice_distribution(r.prompt, r.choices) for r in looped])
    again = np.array([serial.choice_distribution(r.prompt, r.choices).logprobs for r in requests])
    delta = float(np.max(np.abs(again - batch)))  # the batch's prompts one by one: batch shapes differ
    batch_rows.append((name, "loop of choice_distribution", spent["completions"], wall, wall / batch_wall, delta))
    print(f"  batch {batch_wall:.2f} s vs loop {wall:.2f} s", flush=True)
    fast.close()
    serial.close()
    return choose_rows, batch_rows


def run_llama_server(model: str, n_prompts: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))
    from llama_cpp_server import LlamaCppServer, binary_path, missing_message

    from autocog.gguf.models import tiny_llama_gguf
    from autocog.lm.assets import smollm2_gguf

    if binary_path() is None:
        raise SystemExit(missing_message())
    models = {"smollm2": smollm2_gguf, "tiny": tiny_llama_gguf}
    choose_rows, batch_rows = [], []
    for name in list(models) if model == "both" else [model]:
        n_ctx = 4096 if name == "smollm2" else 1024
        # the server's defaults, --cache-ram included (slot states kept in RAM: the batch's second round reuses them)
        with LlamaCppServer(models[name](), n_ctx, parallel=2, alias=name) as server:
            print(f"# llama-server {name} (-np 2)", flush=True)
            c, b = bench_llama_server(name, server.base_url, n_prompts)
            choose_rows += c
            batch_rows += b
    print()
    print(
        "| model | choices | method | completion requests | branching nodes | per branching node | wall (s) | max abs Δ |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for name, n, method, requests, nodes, wall, delta in choose_rows:
        print(f"| {name} | {n} | {method} | {requests} | {nodes} | {requests / nodes:.2f} | {wall:.2f} | {delta:.1e} |")
    print()
    print(
        f"| model | {n_prompts} prompts x 4 choices | completion requests | per prompt | wall (s) | batch speed-up | max abs Δ |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, method, requests, wall, speedup, delta in batch_rows:
        print(
            f"| {name} | {method} | {requests} | {requests / n_prompts:.2f} | {wall:.2f} | {speedup:.2f}x | {delta:.1e} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["smollm2", "tiny", "both"], default="both")
    parser.add_argument("--server", choices=["llama.cpp", "vllm", "llama-server", "both"], default="llama.cpp")
    parser.add_argument("--prompts", type=int, default=100, help="vLLM: prompts per batch")
    parser.add_argument(
        "--baseline-prompts",
        type=int,
        default=20,
        help="vLLM: prompts timed for the slow baselines (reported per prompt)",
    )
    args = parser.parse_args()
    if args.server == "llama-server":
        return run_llama_server(args.model, 40)
    if args.server in ("vllm", "both"):
        run_vllm(args.model, args.prompts, args.baseline_prompts)
        if args.server == "vllm":
            return
    from autocog.gguf.models import tiny_llama_gguf
    from autocog.lm.assets import smollm2_gguf

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
    print(
        "| model | choices | strategy | completion requests | per choice | branching nodes | per branching node "
        "| tokenize requests | wall (s) | same choice as echo | scores | max abs Δ log-prob vs echo |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---|---|---:|")
    for name, n, strategy, requests, branching, tok, wall, same, exact, delta in rows:
        per_node = f"{requests / branching:.2f}" if branching else ""
        print(
            f"| {name} | {n} | {strategy} | {requests} | {requests / n:.2f} | {branching} | {per_node} | {tok} "
            f"| {wall:.2f} | {'yes' if same else 'NO'} | {'exact' if exact else 'partial'} "
            f"| {'' if np.isnan(delta) else f'{delta:.1e}'} |"
        )


if __name__ == "__main__":
    main()
