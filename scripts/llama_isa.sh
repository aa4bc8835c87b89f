# Sourced by setup.sh and setup_llama_server.sh: the llama.cpp version and CMake ISA flags, so that the
# Python binding and llama-server are the same code built the same way (their numbers are compared).
# Explicit ISA flags (AVX2, plus AVX-512 where the CPU has it), not -march=native: a native build on a CPU
# with AMX runs llama.cpp's AMX kernels for Q8_0/Q4 weights, and they crash (SIGSEGV) in VMs that do not
# grant AMX tile state.
LLAMA_VERSION=0.3.36
isa="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
if grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
  isa="$isa -DGGML_AVX512=ON"
  for f in VBMI VNNI BF16; do
    grep -qw "avx512_$(echo $f | tr A-Z a-z)\|avx512$(echo $f | tr A-Z a-z)" /proc/cpuinfo && isa="$isa -DGGML_AVX512_$f=ON"
  done
fi
grep -qw avx_vnni /proc/cpuinfo 2>/dev/null && isa="$isa -DGGML_AVX_VNNI=ON"
LLAMA_CMAKE_ARGS=${LLAMA_CMAKE_ARGS:-$isa}
LLAMA_FLAGS_SHA=$(echo "$LLAMA_CMAKE_ARGS" | sha1sum | cut -c1-12)
