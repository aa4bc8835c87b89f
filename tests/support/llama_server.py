"""``python -m llama_cpp.server`` for the tests: `LlamaServer` starts it on a free loopback port and waits until it
answers; the session fixture ``smol_server`` (tests/conftest.py) shares one SmolLM2 server between modules.

>>> server = LlamaServer(tiny_llama_gguf(), n_ctx=1024)      # doctest: +SKIP
>>> OpenAI(model="tiny", base_url=server.base_url); server.stop()      # doctest: +SKIP
"""

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """``python -m llama_cpp.server`` on a free loopback port, ready once ``GET /v1/models`` answers."""

    def __init__(self, model_path, n_ctx=2048, ready_timeout=180.0):
        pytest.importorskip("llama_cpp.server")
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log = tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(model_path),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--n_ctx",
                str(n_ctx),
                "--verbose",
                "false",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + ready_timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited ({self.process.returncode}):\n{self.tail()}")
            try:
                with DIRECT.open(self.base_url + "/models", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"llama_cpp.server not ready after {ready_timeout} s:\n{self.tail()}")
            time.sleep(0.2)

    def tail(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.log.close()
        os.unlink(self.log.name)


# The reasons a hostile case cannot be exact through llama_cpp.server (docs/openai.md); any other refusal fails.
CANNOT_BE_EXACT = (
    "across their boundary",
    "UTF-8 character",
    "no text of its own",
    "leaves out of every log-prob",
    "empty prompt",
    "tokenize to the same tokens",
    "tokenizes to nothing",
)
