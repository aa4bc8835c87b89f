"""Running ``python -m autocog`` in a subprocess, and the assertions on its output the CLI tests share."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def autocog(*args, timeout=600, stdin=None):
    env = dict(
        os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), TOKENIZERS_PARALLELISM="false"
    )
    return subprocess.run(
        [sys.executable, "-m", "autocog", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=timeout,
        input=stdin,
    )


def ok(proc):
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def one_line_error(proc, code, *words):
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0], proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
