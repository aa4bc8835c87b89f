"""llama.cpp's own C++ ``llama-server`` for the tests and benchmarks (not ``llama_cpp.server``: see llama_server.py).

`scripts/setup_llama_server.sh` builds the binary once from the llama.cpp source in the pinned llama-cpp-python sdist
(``--print-path`` prints where). `LlamaCppServer` starts it on a free loopback port, waits for ``GET /health``
within a deadline, and stops the process by its PID.

>>> with LlamaCppServer(tiny_llama_gguf(), n_ctx=1024) as server:      # doctest: +SKIP
...     lm = OpenAI(base_url=server.base_url, api_key="none")

`require_llama_server` is what a test calls first: without the binary it fails in CI (``CI=true``) and skips
elsewhere, both with a message that says to run the setup script.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parents[2]
SETUP = "bash scripts/setup_llama_server.sh"
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
F32_KV = ("--cache-type-k", "f32", "--cache-type-v", "f32")  # the tiny F32 GGUF's comparisons with LLaMa


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def binary_path() -> Optional[Path]:
    """The built ``llama-server``: ``$AUTOCOG_LLAMA_SERVER``, else the path the setup script prints when the build
    exists (it never builds here: a build takes minutes), else None."""
    given = os.environ.get("AUTOCOG_LLAMA_SERVER")
    if given:
        return Path(given) if Path(given).is_file() else None
    isa = ROOT / "scripts" / "llama_isa.sh"
    if not isa.is_file():
        return None
    # The cache path is the script's own (version and ISA flags): asked of scripts/llama_isa.sh, not rebuilt.
    probe = (
        f'source "{isa}"; echo "${{XDG_CACHE_HOME:-$HOME/.cache}}/autocog/'
        'llama-server-$LLAMA_VERSION-$LLAMA_FLAGS_SHA/llama-server"'
    )
    try:
        out = subprocess.run(["bash", "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    path = Path(out.strip().splitlines()[-1]) if out.strip() else None
    return path if path is not None and path.is_file() and os.access(path, os.X_OK) else None


def missing_message() -> str:
    return f"no llama-server binary (llama.cpp's C++ server): run `{SETUP}` first (~4 min on 2 cores)"


def require_llama_server() -> Path:
    """The binary; without it: `pytest.fail` in CI, `pytest.skip` elsewhere (with the reason)."""
    import pytest

    path = binary_path()
    if path is None:
        if in_ci():
            pytest.fail(missing_message())
        pytest.skip(missing_message())
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaCppServer:
    """One ``llama-server`` process: ``model_path`` (a GGUF), ``n_ctx`` (the context of all slots together is
    ``n_ctx * parallel``: each slot holds ``n_ctx``), ``parallel`` slots (``-np``), ``alias`` (the model name it
    serves), ``threads``, ``extra_args`` (e.g. `F32_KV`); flash attention off, as llama-cpp-python's default.
    Started by the constructor; `stop` ends it."""

    def __init__(
        self,
        model_path: os.PathLike | str,
        n_ctx: int = 4096,
        parallel: int = 2,
        alias: str = "model",
        extra_args: Sequence[str] = (),
        ready_timeout: float = 180.0,
        binary: Optional[Path] = None,
        threads: int = 1,
    ):
        self.binary = binary or require_llama_server()
        self.model_path = Path(model_path)
        self.n_ctx, self.parallel, self.alias, self.threads = int(n_ctx), int(parallel), alias, int(threads)
        self.extra_args = tuple(extra_args)
        self.ready_timeout = ready_timeout
        self.process: Optional[subprocess.Popen] = None
        self.port = 0
        self.log_path = Path(tempfile.mkstemp(prefix="llama-cpp-server-", suffix=".log")[1])
        for _attempt in range(3):  # a free port can be taken between our check and the server's bind
            self.port = free_port()
            self._spawn()
            if self._wait_ready():
                return
        raise RuntimeError(f"llama-server could not bind a free port in 3 attempts:\n{self.tail()}")

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.root_url + "/v1"

    def __enter__(self) -> LlamaCppServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _spawn(self) -> None:
        command = [
            str(self.binary),
            "-m",
            str(self.model_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "-c",
            str(self.n_ctx * self.parallel),
            "-np",
            str(self.parallel),
            "--alias",
            self.alias,
            "--threads",  # one: ggml's spinning thread pool collapses on busy cores (60 ms vs 0.1-1.3 s a request)
            str(self.threads),
            "--no-webui",
            "--flash-attn",  # off, as llama-cpp-python's default (on CPU it rounds an F32 KV cache: ~3e-3 nats)
            "off",
            *self.extra_args,
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=tempfile.gettempdir(), start_new_session=True
            )
        _RUNNING.add(self)

    def _wait_ready(self) -> bool:
        """True once ``/health`` answers 200; False when the port was taken; RuntimeError otherwise."""
        deadline = time.monotonic() + self.ready_timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                tail = self.tail()
                self.stop(keep_log=True)
                if "bind" in tail.lower() and "port" in tail.lower():
                    return False
                raise RuntimeError(f"llama-server exited ({self.process and self.process.returncode}):\n{tail}")
            if self.alive():
                return True
            if time.monotonic() > deadline:
                self.stop(keep_log=True)
                raise RuntimeError(f"llama-server not ready after {self.ready_timeout:.0f} s:\n{self.tail()}")
            time.sleep(0.2)

    def alive(self) -> bool:
        """Whether ``GET /health`` answers 200 (the model loaded, the server up)."""
        try:
            with DIRECT.open(self.root_url + "/health", timeout=5) as answer:
                return answer.status == 200
        except OSError:
            return False

    def post(self, path: str, body: dict, timeout: float = 120.0) -> dict:
        """POST JSON to the server (``path`` from the root, e.g. ``/completion``); the decoded answer."""
        request = urllib.request.Request(
            self.root_url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with DIRECT.open(request, timeout=timeout) as answer:
            return json.loads(answer.read())

    def tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, keep_log: bool = False) -> None:
        """SIGTERM to the server's PID, SIGKILL if it has not exited within 10 s."""
        process, self.process = self.process, None
        _RUNNING.discard(self)
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        if not keep_log:
            self.log_path.unlink(missing_ok=True)


_RUNNING: set = set()


@atexit.register
def _stop_all() -> None:  # an interrupted session must not leave a server behind
    for server in list(_RUNNING):
        server.stop()
