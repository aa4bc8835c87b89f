"""lm-eval data parallel: the launcher's ranks (`autocog.eval.distributed.DataParallel`), the adapter reporting them,
and ``torchrun --nproc_per_node 2 -m autocog lm-eval`` on 2 CPU processes (gloo) against one process."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lm_eval", reason="the lm-eval extra is not installed")

from lm_eval_task import TASK, write_task

import autocog.eval.lm_eval as adapter_module
from autocog.eval.distributed import DataParallel
from autocog.eval.lm_eval import AutocogLM

ROOT = Path(__file__).resolve().parents[2]


def test_one_process_without_launcher_variables():
    ranks = DataParallel.from_env({})
    assert (ranks.rank, ranks.world_size, ranks.local_rank, ranks.group) == (0, 1, 0, None)
    assert ranks.device_for("cuda") == "cuda"  # one process: the device as given
    torch = pytest.importorskip("torch")
    count = torch.tensor(5)
    assert ranks.all_gather(count) is count and ranks.gather_object({"a": 1}) == [{"a": 1}]
    ranks.barrier()


def test_launcher_variables():
    ranks = DataParallel.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}, connect=False)
    assert (ranks.rank, ranks.world_size, ranks.local_rank) == (3, 4, 1)
    assert [ranks.device_for(d) for d in ("cuda", "cuda:0", "cpu", None)] == ["cuda:1", "cuda:0", "cpu", None]


@pytest.mark.parametrize(
    "env, words",
    [
        ({"RANK": "2", "WORLD_SIZE": "2"}, ["RANK=2", "WORLD_SIZE=2"]),
        ({"RANK": "x", "WORLD_SIZE": "2"}, ["RANK", "'x'"]),
        ({"WORLD_SIZE": "0"}, ["WORLD_SIZE=0"]),
    ],
)
def test_inconsistent_launcher_variables_are_clear_errors(env, words):
    with pytest.raises(ValueError) as error:
        DataParallel.from_env(env, connect=False)
    assert all(w in str(error.value) for w in words), error.value


def test_several_processes_without_a_rendezvous_address(monkeypatch):
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="MASTER_ADDR and MASTER_PORT unset.*torchrun"):
        DataParallel.from_env({"RANK": "0", "WORLD_SIZE": "2"})


def test_the_adapter_reports_the_launchers_ranks_and_places_the_replica(monkeypatch):
    """Under a launcher (rank 1 of 2 on its node's second GPU): lm-eval reads rank / world_size, and
    ``device=cuda`` loads the model on ``cuda:LOCAL_RANK``."""
    for name, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(DataParallel, "connect", lambda self: None)  # no second process to meet here
    loaded = {}

    class Loaded:
        device = "cuda:1"
        n_ctx = 128

    monkeypatch.setattr(adapter_module, "load", lambda backend, **kw: loaded.update(kw, backend=backend) or Loaded())
    lm = AutocogLM.create_from_arg_string("backend=tf,model=/m", {"device": "cuda"})
    assert (lm.rank, lm.world_size, lm.device) == (1, 2, "cuda:1")
    assert loaded == {"backend": "tf", "model": "/m", "device": "cuda:1"}


def test_cli_on_a_rank_without_results_exits_0(monkeypatch, tiny_path, tmp_path, capsys):
    """lm-eval returns None on every rank but 0: the command prints no table, writes no file, exits 0."""
    import lm_eval

    from autocog.cli.app import EXIT_OK, main

    folder = write_task(tmp_path / "task", n=3)
    monkeypatch.setattr(lm_eval, "simple_evaluate", lambda **kw: None)
    out = tmp_path / "results.json"
    argv = ["lm-eval", "--tasks", TASK, "--include-path", str(folder), "--model", str(tiny_path)]
    assert main(argv + ["--output", str(out)]) == EXIT_OK
    captured = capsys.readouterr()
    assert "acc" not in captured.out and not out.exists()
    assert "rank 0 of 1: scored its share" in captured.err


def run_cli(launcher: list[str], task_dir: Path, tiny_path: Path, out: Path) -> subprocess.CompletedProcess:
    argv = ["lm-eval", "--tasks", TASK, "--include-path", str(task_dir), "--model", str(tiny_path)]
    argv += ["--threads", "1", "--model-args", "dtype=float32", "--batch-size", "4", "--output", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        launcher + ["-m", "autocog"] + argv, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env
    )


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(tiny_path, tmp_path):
    """13 documents (7 on rank 0, 6 on rank 1: lm-eval pads rank 1's requests): the same metrics (a stderr up to
    float rounding: lm-eval sums the gathered values in rank order), documents, predictions and greedy flags as one
    process; log-likelihoods equal up to the float32 rounding of packed
    passes over different batches (the scoring contract's ``batch_atol``, 1e-5)."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    assert torchrun, "torch's torchrun is not installed beside this Python"
    folder = write_task(tmp_path / "task", n=13)
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    single = run_cli([sys.executable], folder, tiny_path, one)
    assert single.returncode == 0, single.stderr[-3000:]
    parallel = run_cli([torchrun, "--standalone", "--nproc_per_node", "2"], folder, tiny_path, two)
    assert parallel.returncode == 0, parallel.stderr[-3000:]  # torchrun fails if any rank does
    assert parallel.stdout.count("acc_norm") == 1  # the table once, from rank 0
    assert "rank 1 of 2: scored its share" in parallel.stderr
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    ours, theirs = a["results"][TASK], b["results"][TASK]
    assert ours.keys() == theirs.keys() and all(ours[k] == theirs[k] for k in ours if "stderr" not in k)
    for key in (k for k in ours if "stderr" in k):  # summed over the documents in another order (rank by rank)
        assert ours[key] == pytest.approx(theirs[key], rel=1e-12, abs=0)
    assert b["results"][TASK]["sample_len"] == 13
    docs = [sorted(d["samples"][TASK], key=lambda s: s["doc_id"]) for d in (a, b)]
    assert [s["doc_id"] for s in docs[1]] == list(range(13))
    for x, y in zip(*docs):
        assert (x["doc"], x["acc"], x["acc_norm"]) == (y["doc"], y["acc"], y["acc_norm"])
        assert [r[0][1] for r in x["resps"]] == [r[0][1] for r in y["resps"]]  # is_greedy
        np.testing.assert_allclose([r[0][0] for r in x["resps"]], [r[0][0] for r in y["resps"]], atol=1e-5, rtol=0)
