#!/usr/bin/env bash
# llama.cpp's llama-server as hearth's peer, built from source once and started on the default GGUF.
#
#   benchmarks/peers/llama_server.sh build          # once: ~10 min on 2 cores; prints the binary's path
#   benchmarks/peers/llama_server.sh serve PORT     # 2 threads, 32 slots, on the default model's Q4_1 GGUF
#   benchmarks/peers/llama_server.sh command PORT   # the serve command line, one word per line
#
# At hearth's avx2 level (this CPU's, or capped by HEARTH_CPU_ISA=avx2) it builds, in a folder of its own, and
# serves llama.cpp's AVX2 + FMA + F16C build; at avx512 and amx the AVX-512 build below.
# The build also makes llama-quantize and llama-perplexity, beside llama-server in the same bin folder.
#
# The source is the one vendored in llama-cpp-python's sdist (PyPI is the only registry reached here):
# `pip download --no-deps --no-binary :all: llama-cpp-python`, then cmake -DLLAMA_CURL=OFF, target
# llama-server. Everything lives under ${HEARTH_CACHE:-~/.cache/hearth}/peers.
set -euo pipefail
HEARTH_CACHE=${HEARTH_CACHE:-$HOME/.cache/hearth}
PEERS=$HEARTH_CACHE/peers
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
SRC=$PEERS/llama_cpp_python-$VERSION/vendor/llama.cpp
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
GGUF=${LLAMA_SERVER_GGUF:-$HEARTH_CACHE/models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf}
# The level hearth's probe gives here (HEARTH_CPU_ISA caps it), so the peer runs at hearth's level on any CPU:
# avx512 and amx get the AVX-512 build, avx2 (and below) the AVX2 one.
LEVEL=$(cd "$ROOT" && "$PY" -c "from hearth.kernels import cpu_isa; print(cpu_isa.level())")
case "$LEVEL" in avx512|amx) BUILD=$SRC/build ;; *) BUILD=$SRC/build-avx2 ;; esac
BIN=$BUILD/bin/llama-server

# Not GGML_NATIVE: on this project's KVM guest (Sapphire Rapids) a -march=native build died with SIGILL at
# its first matmul (AMX tiles are not enabled for guests here). AVX-512 with VNNI and BF16, as llama.cpp's
# portable builds use, and no AMX.
CPU_FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON \
  -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF \
  -DGGML_AMX_BF16=OFF"
if [ "$BUILD" = "$SRC/build-avx2" ]; then
  CPU_FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF \
    -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AVX_VNNI=OFF -DGGML_AMX_TILE=OFF \
    -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
fi
STAMP=$BUILD/hearth-cpu-flags

build() {
  if [ -x "$BIN" ] && [ -x "$BUILD/bin/llama-perplexity" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$CPU_FLAGS" ]; then echo "$BIN"; return; fi
  mkdir -p "$PEERS"
  if [ ! -d "$SRC" ]; then
    "$PY" -m pip download --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$PEERS" >&2
    tar -xzf "$PEERS/llama_cpp_python-$VERSION.tar.gz" -C "$PEERS"
  fi
  # shellcheck disable=SC2086
  cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF $CPU_FLAGS \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >&2
  cmake --build "$BUILD" --target llama-server llama-quantize llama-perplexity -j "$(nproc)" >&2
  echo "$CPU_FLAGS" > "$STAMP"
  echo "$BIN"
}

server_command() {
  [ -f "$GGUF" ] || { echo "no GGUF at $GGUF: run make setup" >&2; exit 2; }
  SERVER_COMMAND=("$(build)" -m "$GGUF" --host 127.0.0.1 --port "$1" -t 2 -tb 2 -np 32 -c $((32 * 2048)) \
    --alias smollm2-135m-instruct --no-webui)
}

case "${1:-}" in
  build) build ;;
  serve) server_command "${2:?usage: $0 serve PORT}"; exec "${SERVER_COMMAND[@]}" ;;
  # The serve command, one word per line: a cold start times the binary alone, not this script's level probe
  # (which imports torch).
  command) server_command "${2:?usage: $0 command PORT}"; printf '%s\n' "${SERVER_COMMAND[@]}" ;;
  *) echo "usage: $0 build | serve PORT | command PORT" >&2; exit 2 ;;
esac
