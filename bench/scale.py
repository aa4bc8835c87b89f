"""Benchmark autocog.ray: Ray Data with 1 and 2 actors (one thread each) against the in-process batch API
(`autocog.batch.predict_proba`), on SmolLM2-135M (Q4_1 GGUF, llama backend, ``n_threads=1, n_threads_batch=1``); memory per actor
at two dataset sizes.

What is timed (one run, printed as ratios; the machine may be shared, so CPU time is printed too):
  in-process   predict_proba over every prompt, batch_size prompts per backend batch, one thread
  ray xN       autocog.ray's ChoiceScorer on N actors (1 CPU each, a local Ray with --cpus CPUs):
               "total" is the driver's wall clock for the whole dataset, actor start and model load
               included; "scoring" is the span from the first batch's start to the last batch's end, in the
               actors; "cpu" is the actors' CPU seconds inside their batches (time.process_time)
  memory       each actor's RSS after its first and its last batch, and its peak RSS, with --prompts and
               --memory-prompts rows (2 actors; --memory-model tiny: the tiny random Llama, when SmolLM2 on
               --memory-prompts rows would take too long on a busy machine)

    .venv/bin/python bench/scale.py                                  # 200 prompts x 4 choices; memory at 2,000
    .venv/bin/python bench/scale.py --prompts 50 --memory-prompts 200 --batch-size 10
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# the actors import this checkout's autocog, whatever the driver's working directory
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "capital", "France", "Paris", "Berlin"]
WORDS += ["answer", "yes", "no", "step", "first", "then"]
CHOICES = [" yes", " no", " maybe", " the answer is unknown"]
# one thread per model: llama-cpp-python's n_threads_batch (prompt decoding) defaults to every core
THREADS = dict(n_threads=1, n_threads_batch=1)


def make_prompts(n: int, words: int, seed: int = 0) -> list[str]:
    """``n`` questions of ``words`` to ``2 * words`` random words, seeded."""
    rng = random.Random(seed)
    return [
        "Question: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(words, 2 * words))) + "?\nAnswer:"
        for _ in range(n)
    ]


def model_path(name: str) -> str:
    from autocog.gguf.models import tiny_llama_gguf
    from autocog.lm.assets import smollm2_gguf

    return str(smollm2_gguf() if name == "smollm2" else tiny_llama_gguf())


def rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process, in MiB (Linux)."""
    with open("/proc/self/statm") as f:
        resident = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return resident / 2**20, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


class Probe:
    """A `ChoiceScorer` (composed) that adds, per batch, the actor's pid, the batch's start and end time, the
    CPU seconds it took and the actor's RSS after it (pyarrow batches)."""

    def __init__(self, **kwargs):
        from autocog.ray import ChoiceScorer

        self.scorer = ChoiceScorer(**kwargs)
        self.pid = os.getpid()

    def __call__(self, batch: pa.Table) -> pa.Table:
        start, cpu = time.time(), time.process_time()
        out = self.scorer(batch)
        cpu, end = time.process_time() - cpu, time.time()
        rss, peak = rss_mb()
        extra = {"pid": self.pid, "start": start, "end": end, "cpu": cpu, "rss": rss, "peak": peak}
        for name, value in extra.items():
            out = out.append_column(name, pa.array([value] + [None] * (out.num_rows - 1)))
        return out


def run_ray(ray, prompts: list[str], actors: int, args, model: str = "smollm2") -> dict:
    n_blocks = -(-len(prompts) // args.batch_size)  # one block per batch: Ray hands each free actor the next one
    ds = ray.data.from_items([{"prompt": p, "id": i} for i, p in enumerate(prompts)], override_num_blocks=n_blocks)
    mapped = ds.map_batches(
        Probe,
        fn_constructor_kwargs=dict(
            backend="llama", model=model_path(model), choices=CHOICES, batch_size=args.batch_size, **THREADS
        ),
        batch_size=args.batch_size,
        batch_format="pyarrow",
        # one batch in flight per actor, so that the last batches go to whichever actor is free
        compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=1),
        num_cpus=1,
    )
    start = time.time()
    table = pa.concat_tables(list(mapped.iter_batches(batch_format="pyarrow", batch_size=None)))
    total = time.time() - start
    rows = table.sort_by("id").to_pylist()
    batches = [r for r in rows if r["pid"] is not None]
    per_actor: dict[int, dict] = {}
    for b in sorted(batches, key=lambda b: b["end"]):
        actor = per_actor.setdefault(b["pid"], {"first": b["rss"], "batches": 0, "cpu": 0.0, "busy": 0.0})
        actor.update(rss=b["rss"], peak=b["peak"], batches=actor["batches"] + 1)
        actor.update(cpu=actor["cpu"] + b["cpu"], busy=actor["busy"] + b["end"] - b["start"])
    assert all(r["error"] is None for r in rows), [r["error"] for r in rows if r["error"]][:3]
    return {
        "probs": np.array([r["probs"] for r in rows]),
        "total": total,
        "scoring": max(b["end"] for b in batches) - min(b["start"] for b in batches),
        "cpu": sum(b["cpu"] for b in batches),
        "critical_cpu": max(a["cpu"] for a in per_actor.values()),  # the busiest actor's CPU seconds
        "actors": per_actor,
    }


def run_in_process(prompts: list[str], args) -> dict:
    from autocog.batch import predict_proba
    from autocog.lm import load

    lm = load("llama", model=model_path("smollm2"), **THREADS)
    start, cpu = time.time(), time.process_time()
    probs = predict_proba(lm, prompts, CHOICES, batch_size=args.batch_size, progress=False)
    return {"probs": probs, "total": time.time() - start, "cpu": time.process_time() - cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--memory-prompts", type=int, default=2000, help="the larger dataset of the memory check")
    parser.add_argument("--words", type=int, default=10, help="words per prompt: WORDS to 2 x WORDS")
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument(
        "--memory-model", choices=["smollm2", "tiny"], default="smollm2", help="the model of the memory check"
    )
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    args = parser.parse_args()

    import warnings

    import ray

    prompts = make_prompts(args.prompts, args.words)
    print(
        f"SmolLM2-135M Q4_1 (llama.cpp, n_threads=n_threads_batch=1), {len(prompts)} prompts x {len(CHOICES)} choices, "
        f"batch_size {args.batch_size}, os.cpu_count() {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}"
    )
    local = run_in_process(prompts, args)
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    with warnings.catch_warnings():  # Ray Data's DataContext() warns about its own deprecated fields
        warnings.simplefilter("ignore", DeprecationWarning)
        ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        one = run_ray(ray, prompts, 1, args)
        two = run_ray(ray, prompts, 2, args)
        small = two if args.memory_model == "smollm2" else run_ray(ray, prompts, 2, args, "tiny")
        big = run_ray(ray, make_prompts(args.memory_prompts, args.words, seed=1), 2, args, args.memory_model)
    finally:
        ray.shutdown()

    diff = max(float(np.abs(r["probs"] - local["probs"]).max()) for r in (one, two))
    print(f"largest |probs(ray) - probs(in-process)|: {diff:.2e}")
    print(f"{'':14} {'total s':>8} {'scoring s':>10} {'cpu s':>7} {'ms/prompt':>10} {'cpu ms/prompt':>14}")
    n = len(prompts)
    print(
        f"{'in-process':14} {local['total']:8.2f} {local['total']:10.2f} {local['cpu']:7.2f} "
        f"{1e3 * local['total'] / n:10.1f} {1e3 * local['cpu'] / n:14.1f}"
    )
    for name, r in (("ray, 1 actor", one), ("ray, 2 actors", two)):
        print(
            f"{name:14} {r['total']:8.2f} {r['scoring']:10.2f} {r['cpu']:7.2f} "
            f"{1e3 * r['scoring'] / n:10.1f} {1e3 * r['cpu'] / n:14.1f}"
        )
    print(
        f"2 actors / 1 actor speed-up: total {one['total'] / two['total']:.2f}x, "
        f"scoring {one['scoring'] / two['scoring']:.2f}x; CPU time 2 actors / 1 actor {two['cpu'] / one['cpu']:.2f}"
    )
    print(
        f"2 actors / 1 actor by CPU time on the critical path (the busiest actor's CPU seconds; the wall-clock "
        f"speed-up on an idle machine): {one['cpu'] / two['critical_cpu']:.2f}x"
    )
    for name, r in (("1 actor", one), ("2 actors", two)):
        shares = ", ".join(
            f"{a['batches']} batches, {a['cpu']:.1f} CPU s in {a['busy']:.1f} s busy" for a in r["actors"].values()
        )
        print(f"  {name}: {shares}; CPU cores this run got: {r['cpu'] / r['scoring']:.2f}")
    print(
        f"1 actor / in-process: scoring time {one['scoring'] / local['total']:.2f}x, CPU {one['cpu'] / local['cpu']:.2f}x; "
        f"total (with actor start) {one['total'] / local['total']:.2f}x"
    )
    for r, rows in ((small, n), (big, args.memory_prompts)):
        for pid, a in sorted(r["actors"].items()):
            print(
                f"memory ({args.memory_model}), {rows:5d} prompts, actor {pid}: {a['batches']:3d} batches, "
                f"RSS after the first {a['first']:.0f} MiB, after the last {a['rss']:.0f} MiB, peak {a['peak']:.0f} MiB"
            )


if __name__ == "__main__":
    main()
