"""A real vLLM OpenAI-compatible server for the tests and benchmarks (CPU build, its own venv).

`scripts/setup_vllm.sh` builds ``.venv-vllm`` (``$AUTOCOG_VLLM_VENV``) once; `VllmServer` starts
``python -m vllm.entrypoints.openai.api_server`` from it on a free loopback port with a transformers
directory (vLLM does not load our GGUF files), waits for ``/health`` within a deadline, sends one warm-up
completion, and stops the process by its PID (the whole process group if it does not exit in time).

>>> with VllmServer(smollm2_transformers(), name="smollm2") as server:      # doctest: +SKIP
...     lm = OpenAI(base_url=server.base_url, api_key="none")

`require_vllm` is what a test calls first: without the venv it fails in CI (``CI=true``) and skips
elsewhere, both with a message that says to run the setup script; it never skips silently.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[2]
SETUP = "bash scripts/setup_vllm.sh"
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


def vllm_venv() -> Path:
    return Path(os.environ.get("AUTOCOG_VLLM_VENV", ROOT / ".venv-vllm"))


def vllm_python() -> Optional[Path]:
    """The vLLM venv's python, or None when `scripts/setup_vllm.sh` has not completed (no stamp file)."""
    venv = vllm_venv()
    python = venv / "bin" / "python"
    return python if python.exists() and (venv / ".autocog-vllm-setup").exists() else None


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing_message() -> str:
    return f"no vLLM venv at {vllm_venv()} (or its setup did not finish): run `{SETUP}` first"


def require_vllm() -> Path:
    """The vLLM venv's python; without it: `pytest.fail` in CI, `pytest.skip` elsewhere (with the reason)."""
    import pytest

    python = vllm_python()
    if python is None:
        if in_ci():
            pytest.fail(missing_message())
        pytest.skip(missing_message())
    return python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VllmServer:
    """One vLLM server process. ``model_dir``: a transformers directory; ``name``: the served model name.

    Memory: about 4 GiB resident (``VLLM_CPU_KVCACHE_SPACE=1`` GiB of it KV cache); stop it when done.
    """

    def __init__(
        self,
        model_dir: os.PathLike | str,
        name: str = "model",
        ready_timeout: float = 300.0,
        max_model_len: Optional[int] = None,
        python: Optional[Path] = None,
        extra_args: tuple = (),
    ):
        self.model_dir = Path(model_dir)
        self.name = name
        self.ready_timeout = ready_timeout
        self.max_model_len = max_model_len or _context_length(self.model_dir)
        self.python = python or vllm_python()
        if self.python is None:
            raise RuntimeError(missing_message())
        self.extra_args = tuple(extra_args)
        self.process: Optional[subprocess.Popen] = None
        self.port = 0
        self.log_path = Path(tempfile.mkstemp(prefix="vllm-server-", suffix=".log")[1])

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.root_url + "/v1"

    def __enter__(self) -> VllmServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> VllmServer:
        """Start, wait until ready, warm up; on any failure the process group is killed and the log shown."""
        for attempt in range(3):  # a free port can be taken between our check and the server's bind
            self.port = free_port()
            try:
                self._spawn()
                self._wait_ready()
                self._warm_up()
                return self
            except _PortTaken:
                self.stop()
            except BaseException:
                self.stop(keep_log=True)
                raise
        raise RuntimeError(f"vLLM could not bind a free port in 3 attempts:\n{self.tail()}")

    def _spawn(self) -> None:
        env = dict(
            os.environ,
            VLLM_CPU_KVCACHE_SPACE=os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            VLLM_NO_USAGE_STATS="1",
            DO_NOT_TRACK="1",
            TOKENIZERS_PARALLELISM="false",
        )
        env.pop("PYTHONPATH", None)  # the vLLM venv must not see autocog's venv or sources
        command = [
            str(self.python),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model_dir),
            "--served-model-name",
            self.name,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dtype",
            "float32",
            "--enforce-eager",
            "--max-model-len",
            str(self.max_model_len),
            *self.extra_args,
        ]
        with open(self.log_path, "ab") as log:
            # A session of its own: `stop` can kill the server's workers (its process group) and nothing else.
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                cwd=tempfile.gettempdir(),
            )
        _RUNNING.add(self)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if self.process.poll() is not None:
                if "address already in use" in self.tail().lower():
                    raise _PortTaken()
                raise RuntimeError(f"the vLLM server exited ({self.process.returncode}):\n{self.tail()}")
            try:
                with DIRECT.open(self.root_url + "/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the vLLM server was not ready after {self.ready_timeout:.0f} s:\n{self.tail()}")
            time.sleep(0.5)

    def _warm_up(self) -> None:
        """One completion, so that the first timed or counted request does not pay for lazy initialization."""
        try:
            self.post("/v1/completions", {"model": self.name, "prompt": "Hello", "max_tokens": 1, "temperature": 0})
        except OSError as error:  # HTTPError included: the engine may die on its first batch
            raise RuntimeError(f"the vLLM server's warm-up request failed ({error}):\n{self.tail()}") from None

    def post(self, path: str, body: dict, timeout: float = 120.0) -> dict:
        """POST JSON to the server (``path`` from the root, e.g. ``/tokenize``); the decoded answer."""
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
        """SIGTERM to the server's PID; if it has not exited within 30 s, SIGKILL to its process group."""
        process, self.process = self.process, None
        _RUNNING.discard(self)
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                pass
        if process is not None:
            try:  # workers left behind by a clean exit or a crash: the group is ours alone
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            process.wait(10)
        if not keep_log:
            self.log_path.unlink(missing_ok=True)


def smollm2_server() -> VllmServer:
    """SmolLM2's transformers directory on vLLM, started (the tests' server; ``/tokenizer_info`` on, for pmi)."""
    python = require_vllm()
    from autocog.lm.assets import smollm2_transformers

    return VllmServer(
        smollm2_transformers(), name="smollm2", python=python, extra_args=("--enable-tokenizer-info-endpoint",)
    ).start()


def _context_length(model_dir: Path, most: int = 2048) -> int:
    """``most``, or less when the model's config says it holds fewer positions (vLLM refuses more)."""
    try:
        config = json.loads((model_dir / "config.json").read_text())
        return min(most, int(config.get("max_position_embeddings") or most))
    except (OSError, ValueError, TypeError):
        return most


class _PortTaken(Exception):
    pass


_RUNNING: set = set()


@atexit.register
def _stop_all() -> None:  # an interrupted session must not leave a 4 GiB server behind
    for server in list(_RUNNING):
        server.stop()
