"""``asyncio.gather`` of 20 ``achoose`` calls against 20 sequential ``choose`` calls of `autocog.lm.OpenAI` on a
local server, and the same for ``acomplete`` / ``complete``; prints the wall times and their ratio.

    python bench/async_choose.py                          # llama_cpp.server, SmolLM2-135M-Instruct Q4_1
    python bench/async_choose.py --server llama-server    # llama.cpp's C++ server with -np 2 (parallel slots)
    python bench/async_choose.py --model tiny --calls 40

``--server llama-server`` runs the binary that ``bash scripts/setup_llama_server.sh --print-path`` names (with
``-c 4096 -np 2``, the context shared by the slots), or ``--binary``. The result cache is off (``cache_size=0``), so
each call sends its requests; one warm-up round first (server detection, probe, tokenizer), and one untimed
async call first in the event loop (it makes the ``AsyncOpenAI`` client). The answers of the
two runs must agree (the same index for every call, the same completions). On a shared machine the times are
noisy: compare the ratios of one run.

What to expect: llama_cpp.server evaluates one request at a time (the backend sends them one at a time too), so
the async calls gain only the overlap of client work with the server's; llama-server with ``-np 2`` evaluates
two requests at once.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

# Run as ``python bench/async_choose.py``, this file's folder leads sys.path and would shadow ``openai``; the
# checkout's root goes first instead, so that its ``autocog`` is measured, not an installed one.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autocog.errors import AutoCogError  # noqa: E402
from autocog.lm.openai import OpenAI  # noqa: E402

DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = [
    ("Question: What is the capital of France?\nAnswer:", [" Paris", " London", " Berlin", " Rome"]),
    ("Question: What is the capital of Japan?\nAnswer:", [" Madrid", " Tokyo", " Cairo", " Oslo"]),
    ("Question: What is 2 + 2?\nAnswer:", [" 7", " 4", " 9", " 22"]),
    ("Question: What do bees make?\nAnswer:", [" honey", " milk", " silk", " bread"]),
    ("Question: What is frozen water called?\nAnswer:", [" steam", " ice", " sand", " glass"]),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def llama_server_binary() -> str:
    script = ROOT / "scripts" / "setup_llama_server.sh"
    return subprocess.run(
        ["bash", str(script), "--print-path"], check=True, capture_output=True, text=True
    ).stdout.strip()


def start(server: str, model_path: Path, binary: str | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    if server == "llama-server":
        command = [binary or llama_server_binary(), "-m", str(model_path), "-c", "4096", "-np", "2"]
        command += ["--host", "127.0.0.1", "--port", str(port)]
    else:
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--n_ctx", "4096"]
        command += ["--host", "127.0.0.1", "--port", str(port), "--verbose", "false"]
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(command, stdout=log, stderr=log)
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"{server} exited:\n" + log.read().decode(errors="replace")[-2000:])
        try:
            with DIRECT.open(base_url + "/models", timeout=2) as answer:
                if answer.status == 200:
                    return process, base_url
        except OSError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{server} did not start")


def model_path(name: str) -> Path:
    if name == "tiny":
        from autocog.gguf.models import tiny_llama_gguf

        return Path(tiny_llama_gguf())
    if name == "smollm2":
        from autocog.lm.assets import smollm2_gguf

        return Path(smollm2_gguf())
    return Path(name)


def timed(fn):
    began = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - began


def bench(lm: OpenAI, calls: int, repeats: int) -> list[tuple[str, object]]:
    """[(call, (sequential s, gathered s, requests per call) or the error that refused it)], the times the medians
    of ``repeats`` runs; asserts that both ways give the same answers."""
    work = [QUESTIONS[i % len(QUESTIONS)] for i in range(calls)]

    def gathered(call, args) -> tuple[list, float]:
        """(the answers of ``call`` gathered over ``args``, the seconds they took), in an event loop whose
        ``AsyncOpenAI`` client is made and warmed first (its first request is not timed)."""

        async def main():
            try:
                await call(*args[0])
                began = time.perf_counter()
                answers = await asyncio.gather(*(call(*a) for a in args))
                return answers, time.perf_counter() - began
            finally:
                await lm.aclose()

        return asyncio.run(main())

    def row(sync, call, args):
        for a in args[: len(QUESTIONS)]:  # warm-up: detection, probe, server tokenizer caches
            sync(*a)
        seq_times, async_times = [], []
        for _ in range(repeats):
            before = lm.requests["completions"] + lm.requests["chat"]
            sequential, t_seq = timed(lambda: [sync(*a) for a in args])
            per_call = (lm.requests["completions"] + lm.requests["chat"] - before) / calls
            together, t_async = gathered(call, args)
            assert together == sequential, (together, sequential)
            seq_times.append(t_seq)
            async_times.append(t_async)
        return statistics.median(seq_times), statistics.median(async_times), per_call

    def choose_row():
        return row(lm.choose, lm.achoose, work)

    def complete_row():
        settings = {"stop": "\n", "max_tokens": 16}
        return row(lambda p: lm.complete(p, **settings), lambda p: lm.acomplete(p, **settings), [(p,) for p, _ in work])

    rows: list[tuple[str, object]] = []
    for what, measure in (("choose", choose_row), ("complete", complete_row)):
        try:
            rows.append((what, measure()))
        except AutoCogError as error:  # e.g. a server this version cannot score choices on: say so, go on
            rows.append((what, error))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", choices=["llama-cpp-python", "llama-server"], default="llama-cpp-python")
    parser.add_argument("--model", default="smollm2", help="smollm2 (default), tiny, or a GGUF path")
    parser.add_argument("--binary", default=None, help="llama-server's path (default: setup_llama_server.sh's)")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each; the medians are printed")
    args = parser.parse_args()
    process, base_url = start(args.server, model_path(args.model), args.binary)
    try:
        lm = OpenAI(base_url=base_url, cache_size=0, concurrency=args.concurrency)
        rows = bench(lm, args.calls, args.repeats)
        print(
            f"{args.server} ({lm.server} dialect), model {args.model}, {args.calls} calls, concurrency {args.concurrency}"
        )
        print(f"{'call':<10} {'sequential s':>13} {'gathered s':>11} {'ratio':>6} {'requests/call':>14}")
        for what, row in rows:
            if isinstance(row, Exception):
                print(f"{what:<10} refused: {type(row).__name__}: {row}")
                continue
            t_seq, t_async, per_call = row
            print(f"{what:<10} {t_seq:>13.3f} {t_async:>11.3f} {t_seq / t_async:>5.2f}x {per_call:>14.1f}")
        lm.close()
    finally:
        process.terminate()
        process.wait(10)


if __name__ == "__main__":
    main()
