"""lm-eval data parallel: ``autocog lm-eval`` in N processes (``torchrun --nproc_per_node N``) against one process.

Each setting is one whole command (start-up, model load, lm-eval's requests, the gather on rank 0), run as a user
runs it on a local multiple-choice task (the questions of ``bench/lm_eval_compare.py``, 4 choices each, written
by ``tests/support/lm_eval_task.py``). Measured per setting: the wall clock and the CPU time of all its processes
(``RUSAGE_CHILDREN``), then the ratios one / N; and the fixed cost of one command (one process on 2 documents), so
that ``wall-fixed 1/N`` compares the work past it and ``work CPU s`` is the CPU time past N fixed costs. The results must agree: the same metrics (a stderr up to float rounding) and per-document
predictions, log-likelihoods within 1e-5 (float32 packed passes over other batches round differently; in half
precision 0.05).

On a 2-core CPU, 2 processes of 1 thread each can at best halve the wall clock of 1 process of 1 thread, and each
process pays its own start-up and model load: expect less. On GPUs, ``--device cuda`` puts rank r on ``cuda:r``
(one replica per GPU); ``--device cuda:0`` puts every rank on one GPU (replicas sharing it).

    .venv/bin/python bench/lm_eval_parallel.py --model tiny --documents 200
    .venv/bin/python bench/lm_eval_parallel.py --model smollm2 --documents 400 --processes 1 2
    .venv/bin/python bench/lm_eval_parallel.py --model smollm2 --device cuda --dtype bfloat16 --processes 1 2 4
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "support"))  # lm_eval_task: the task writer the tests use

TASK = "autocog_parallel_mc"


def run(processes: int, task_dir: Path, model: Path, args: argparse.Namespace, out: Path) -> dict:
    """One ``autocog lm-eval`` command in ``processes`` processes: seconds (wall, CPU of all processes) and results."""
    command = ["-m", "autocog", "lm-eval", "--tasks", TASK, "--include-path", str(task_dir), "--model", str(model)]
    command += ["--threads", str(args.threads), "--batch-size", str(args.batch_size), "--output", str(out)]
    command += ["--device", args.device] + (["--model-args", f"dtype={args.dtype}"] if args.dtype else [])
    if processes == 1:
        launcher = [sys.executable]
    else:
        torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
        if not torchrun:
            raise SystemExit("torchrun (torch's launcher) not found beside this Python")
        launcher = [torchrun, "--standalone", "--nproc_per_node", str(processes)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["OMP_NUM_THREADS"] = str(args.threads)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(launcher + command, capture_output=True, text=True, cwd=ROOT, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{processes} process(es) failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"processes": processes, "wall_s": wall, "cpu_s": cpu, "results": json.loads(out.read_text())}


def same_metrics(a: dict, b: dict) -> bool:
    """Equal metrics; a stderr within 1e-12 relative: lm-eval sums the per-document values gathered rank by rank,
    another order than one process's (acc and acc_norm, means of 0/1 values, come out exactly equal)."""
    return a.keys() == b.keys() and all(
        math.isclose(a[k], b[k], rel_tol=1e-12) if "stderr" in k else a[k] == b[k] for k in a
    )


def agreement(one: dict, other: dict) -> tuple[bool, float]:
    """(same metrics and per-document predictions, largest |difference| of a log-likelihood)."""
    a, b = one["results"], other["results"]
    docs = [sorted(r["samples"][TASK], key=lambda s: s["doc_id"]) for r in (a, b)]
    same = same_metrics(a["results"][TASK], b["results"][TASK]) and len(docs[0]) == len(docs[1])
    same = same and all((x["acc"], x["acc_norm"]) == (y["acc"], y["acc_norm"]) for x, y in zip(*docs))
    diff = max(abs(p[0][0] - q[0][0]) for x, y in zip(*docs) for p, q in zip(x["resps"], y["resps"]))
    return same, diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny", help="tiny (default), smollm2 or a transformers directory")
    parser.add_argument("--documents", type=int, default=200, help="questions of the task (default 200)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="settings (default 1 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda (rank r on cuda:r) or cuda:0")
    parser.add_argument("--dtype", default=None, help="TfLM's dtype (default float32 on cpu)")
    parser.add_argument("--json", help="write the timings and checks as JSON")
    args = parser.parse_args()

    from lm_eval_compare import make_questions, model_dir
    from lm_eval_task import write_task

    model = model_dir(args.model)
    # float32: the adapter's tolerance against lm-eval's hf (packed passes over other batches: 5e-6 measured on the
    # tiny model, 4e-5 on SmolLM2); half precision: bf16's, tests/backends/test_backend_tf.py's TOLERANCES
    tolerance = 1e-4 if args.dtype in (None, "float32", "fp32") else 5e-2
    print(
        f"model {model.name}, {args.documents} documents x 4 choices, {args.threads} thread(s) per process, "
        f"device {args.device}, dtype {args.dtype or 'default'}, batch {args.batch_size}, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        task_dir = write_task(Path(tmp) / "task", make_questions(args.documents)[: args.documents], name=TASK)
        # the fixed cost of one command (start-up, imports, model load, task set-up): one process, 2 documents
        fixed = run(
            1, write_task(Path(tmp) / "fixed", make_questions(2)[:2], name=TASK), model, args, Path(tmp) / "f.json"
        )
        print(
            f"fixed cost of one command (1 process, 2 documents): wall {fixed['wall_s']:.2f} s, CPU {fixed['cpu_s']:.2f} s"
        )
        print(
            f"{'processes':>9} {'wall s':>8} {'CPU s':>8} {'wall 1/N':>8} {'CPU 1/N':>8} {'wall-fixed 1/N':>14} "
            f"{'work CPU s':>10} {'same':>5} {'max |Δ|':>8}"
        )
        for n in args.processes:
            row = run(n, task_dir, model, args, Path(tmp) / f"results-{n}.json")
            rows.append(row)
            base = rows[0]
            same, diff = agreement(base, row)
            row.update(same=same, max_diff=diff)
            row["wall_ratio"], row["cpu_ratio"] = base["wall_s"] / row["wall_s"], base["cpu_s"] / row["cpu_s"]
            # the work past the fixed cost (every process pays that cost at once, in parallel)
            row["work_wall_ratio"] = (base["wall_s"] - fixed["wall_s"]) / max(1e-9, row["wall_s"] - fixed["wall_s"])
            row["work_cpu_s"] = row["cpu_s"] - n * fixed["cpu_s"]  # every process pays the fixed CPU cost
            print(
                f"{n:>9} {row['wall_s']:>8.2f} {row['cpu_s']:>8.2f} {row['wall_ratio']:>8.2f} "
                f"{row['cpu_ratio']:>8.2f} {row['work_wall_ratio']:>14.2f} {row['work_cpu_s']:>10.2f} {same!s:>5} "
                f"{diff:>8.1e}",
                flush=True,
            )
    metrics = rows[0]["results"]["results"][TASK]
    print(f"acc {metrics['acc,none']:.4f}  acc_norm {metrics['acc_norm,none']:.4f} (every setting alike)")
    for row in rows:
        del row["results"]
    if args.json:
        del fixed["results"]
        Path(args.json).write_text(json.dumps({"settings": vars(args), "fixed": fixed, "rows": rows}, indent=2))
    bad = [r["processes"] for r in rows if not r["same"] or r["max_diff"] > tolerance]
    if bad:
        raise SystemExit(f"the results of {bad} process(es) differ from one process's")


if __name__ == "__main__":
    main()
