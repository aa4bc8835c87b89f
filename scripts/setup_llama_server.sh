#!/usr/bin/env bash
# Build llama.cpp's own C++ server, llama-server, from the llama.cpp source vendored in the pinned
# llama-cpp-python sdist, with the same ISA flags as the Python binding (scripts/llama_isa.sh). Kept in
# ~/.cache/autocog/llama-server-<version>-<flags>/ and reused: a second run with the same version and flags
# builds nothing. Prints nothing on success; the tests find the binary with `--print-path`.
#   bash scripts/setup_llama_server.sh               # ~4 min on 2 cores the first time
#   bash scripts/setup_llama_server.sh --print-path  # the binary's path (builds it first if needed)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/llama_isa.sh
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] && PYTHON=.venv/bin/python
home="${XDG_CACHE_HOME:-$HOME/.cache}/autocog/llama-server-$LLAMA_VERSION-$LLAMA_FLAGS_SHA"
binary="$home/llama-server"
if [ ! -x "$binary" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  "$PYTHON" -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: \
    "llama-cpp-python==$LLAMA_VERSION" -d "$work"
  tar -xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
  src=$(echo "$work"/llama_cpp_python-*/vendor/llama.cpp)
  # shellcheck disable=SC2086  # the flags are several words
  cmake -S "$src" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_SERVER=ON \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF \
    $LLAMA_CMAKE_ARGS >"$work/cmake.log" 2>&1 || { tail -30 "$work/cmake.log"; exit 1; }
  cmake --build "$work/build" --target llama-server -j"$(nproc)" >"$work/build.log" 2>&1 \
    || { tail -30 "$work/build.log"; exit 1; }
  mkdir -p "$home"
  cp "$work/build/bin/llama-server" "$binary.tmp"
  mv "$binary.tmp" "$binary"
  "$binary" --version >/dev/null 2>&1
fi
if [ "${1:-}" = "--print-path" ]; then
  echo "$binary"
fi
