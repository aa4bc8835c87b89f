"""autocog's batch API against lm-evaluation-harness's own ``hf`` model on the same multiple-choice questions.

The questions are written in the style of ``autocog/data/easy_mc.jsonl`` (its items, padded to 4 choices,
then generated arithmetic and capital questions), ``Question: ...\\nAnswer:`` with choices " X".
Zero-shot, and 5-shot where the 5 shots (the same for every question, as lm-eval's fewshot sampler gives
with a fixed seed) are ``Question: ...\\nAnswer: X`` blocks joined by a blank line. Every (question,
choice) pair is one lm-eval loglikelihood request.

Methods, on the same transformers directory (float32, on ``--device``, default the CPU):
  hf@B      lm-eval's HFLM.loglikelihood at batch size B (several tried; the best is the baseline)
  autocog   autocog.eval.batch.choice_distributions (the scoring layer's batch path), batch_size prompts per call
  adapter   autocog.eval.lm_eval.AutocogLM.loglikelihood (lm-eval's interface on the scoring layer, with is_greedy)
The log-likelihoods of autocog and of the adapter are checked against hf's (max |difference| printed).
Each method runs ``--repeats`` times, interleaved; the best time counts. Ratios are hf's best / ours.

    .venv/bin/python bench/lm_eval_compare.py                       # SmolLM2 (its transformers conversion)
    .venv/bin/python bench/lm_eval_compare.py --model tiny --questions 40
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CAPITALS = [
    ("France", "Paris"),
    ("Japan", "Tokyo"),
    ("Italy", "Rome"),
    ("Germany", "Berlin"),
    ("Spain", "Madrid"),
    ("Egypt", "Cairo"),
    ("Russia", "Moscow"),
    ("Canada", "Ottawa"),
    ("Greece", "Athens"),
    ("Portugal", "Lisbon"),
    ("Austria", "Vienna"),
    ("Norway", "Oslo"),
    ("Kenya", "Nairobi"),
    ("Peru", "Lima"),
    ("Ireland", "Dublin"),
    ("Poland", "Warsaw"),
    ("China", "Beijing"),
    ("Thailand", "Bangkok"),
    ("Sweden", "Stockholm"),
    ("Argentina", "Buenos Aires"),
]


def make_questions(n: int, seed: int = 0) -> list[dict]:
    """``n`` questions of 4 choices: the bundled ones first (padded), then capitals and sums."""
    from autocog.eval.evaluate import EXAMPLE_DATASET

    rng = random.Random(seed)
    bundled = [json.loads(line) for line in EXAMPLE_DATASET.read_text().splitlines() if line.strip()]
    pool = sorted({c for r in bundled for c in r["choices"]})
    out = []
    for r in bundled:
        choices = list(r["choices"])
        while len(choices) < 4:
            extra = rng.choice(pool)
            if extra not in choices:
                choices.append(extra)
        out.append({"question": r["question"], "choices": choices, "answer": r["answer"]})
    while len(out) < n:
        if len(out) % 2:
            country, city = rng.choice(CAPITALS)
            others = rng.sample([c for _, c in CAPITALS if c != city], 3)
            q, right, wrong = f"What is the capital of {country}?", city, others
        else:
            a, b = rng.randint(2, 60), rng.randint(2, 40)
            wrong = rng.sample([a + b + d for d in (-10, -2, -1, 1, 2, 10) if a + b + d > 0], 3)
            q, right, wrong = f"What is {a} + {b}?", str(a + b), [str(w) for w in wrong]
        choices = [right] + wrong
        rng.shuffle(choices)
        out.append({"question": q, "choices": choices, "answer": choices.index(right)})
    return out[:n]


def build(questions: list[dict], shots: int) -> tuple[list[str], list[list[str]]]:
    """Contexts (the same ``shots`` examples in front of each) and the choices with lm-eval's delimiter space."""
    fmt = "Question: {}\nAnswer:".format
    examples = questions[:shots]
    prefix = "".join(fmt(e["question"]) + " " + e["choices"][e["answer"]] + "\n\n" for e in examples)
    rest = questions[shots:] if shots else questions
    return [prefix + fmt(q["question"]) for q in rest], [[" " + c for c in q["choices"]] for q in rest]


def model_dir(name: str) -> Path:
    from autocog.gguf.models import tiny_llama
    from autocog.lm.assets import smollm2_transformers

    return {"smollm2": smollm2_transformers, "tiny": tiny_llama}[name]() if name in ("smollm2", "tiny") else Path(name)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def run_setting(hf, ours, adapter, contexts, choices, batch_sizes, our_batch, repeats) -> dict:
    from lm_eval.api.instance import Instance

    from autocog.eval.batch import choice_distributions

    pairs = [(c, x) for c, xs in zip(contexts, choices) for x in xs]
    requests = [Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)]
    times: dict[str, list[float]] = {}
    results = {}

    def hf_run(b):
        hf.batch_size_per_gpu = b
        return [lp for lp, _ in hf.loglikelihood(requests, disable_tqdm=True)]

    def ours_run():
        res = choice_distributions(ours, contexts, choices, normalization="sum", batch_size=our_batch, progress=False)
        return [float(v) for r in res for v in r.logprobs]

    def adapter_run():
        return [lp for lp, _ in adapter.loglikelihood(requests, disable_tqdm=True)]

    methods = {f"hf@{b}": (lambda b=b: hf_run(b)) for b in batch_sizes}
    methods["autocog"] = ours_run
    methods["adapter"] = adapter_run
    for _ in range(repeats):
        for name, fn in methods.items():
            seconds, out = timed(fn)
            print(f"  {name}: {seconds:.2f}s", file=sys.stderr, flush=True)
            times.setdefault(name, []).append(seconds)
            results[name] = out
    reference = np.array(results[f"hf@{batch_sizes[0]}"])
    best_hf = min((min(times[f"hf@{b}"]), b) for b in batch_sizes)
    row = {
        "requests": len(pairs),
        "tokens_per_context": int(np.mean([len(hf.tok_encode(c)) for c in contexts])),
        "hf_best_batch": best_hf[1],
        "hf_seconds": best_hf[0],
        "hf_all": {k: round(min(v), 3) for k, v in times.items() if k.startswith("hf@")},
    }
    for name in ("autocog", "adapter"):
        row[f"{name}_seconds"] = min(times[name])
        row[f"{name}_speedup"] = best_hf[0] / min(times[name])
        row[f"{name}_max_diff"] = float(np.max(np.abs(np.array(results[name]) - reference)))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2", help="smollm2, tiny or a transformers directory")
    parser.add_argument("--questions", type=int, default=40, help="questions (40-200)")
    parser.add_argument("--shots", default="0,5", help="settings: shots, comma-separated")
    parser.add_argument("--hf-batch-sizes", default="4,8,16,32", help="lm-eval batch sizes to try")
    parser.add_argument("--batch-size", type=int, default=16, help="autocog's prompts per call")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="both models' device (default cpu; cuda on a GPU)")
    parser.add_argument("--json", help="write the rows as JSON")
    args = parser.parse_args()

    import torch
    import transformers

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    from lm_eval.api.registry import get_model

    from autocog.eval.lm_eval import AutocogLM
    from autocog.lm import load

    path = model_dir(args.model)
    hf = get_model("hf")(pretrained=str(path), dtype="float32", device=args.device, batch_size=1)
    ours = load("tf", model=str(path), device=args.device, dtype="float32")
    adapter = AutocogLM(lm=load("tf", model=str(path), device=args.device, dtype="float32"), batch_size=args.batch_size)
    batch_sizes = [int(b) for b in args.hf_batch_sizes.split(",")]
    questions = make_questions(args.questions + 5)
    print(
        f"model {path.name}, {args.questions} questions x 4 choices, {args.threads} threads, device {args.device}, "
        f"torch {torch.__version__}, hf batch sizes {batch_sizes}, autocog batch {args.batch_size}"
    )
    header = (
        f"{'shots':>5} {'requests':>8} {'ctx tok':>7} {'hf best':>10} {'autocog':>9} {'speedup':>7} "
        f"{'adapter':>9} {'speedup':>7} {'max |Δ|':>8}"
    )
    print(header)
    rows = []
    warm = build(questions[:8], 0)
    run_setting(hf, ours, adapter, warm[0][:2], warm[1][:2], batch_sizes[:1], args.batch_size, 1)
    for shots in [int(s) for s in args.shots.split(",")]:
        contexts, choices = build(questions if shots else questions[5:], shots)
        row = run_setting(
            hf,
            ours,
            adapter,
            contexts[: args.questions],
            choices[: args.questions],
            batch_sizes,
            args.batch_size,
            args.repeats,
        )
        row["shots"] = shots
        rows.append(row)
        print(
            f"{shots:>5} {row['requests']:>8} {row['tokens_per_context']:>7} "
            f"{row['hf_seconds']:>7.2f}s@{row['hf_best_batch']:<2} {row['autocog_seconds']:>8.2f}s "
            f"{row['autocog_speedup']:>6.2f}x {row['adapter_seconds']:>8.2f}s {row['adapter_speedup']:>6.2f}x "
            f"{max(row['autocog_max_diff'], row['adapter_max_diff']):>8.1e}   hf: {row['hf_all']}",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
